"""What a library's stubs say survives into facades: overloads that a class no facade can spell
would otherwise shadow (``df["a"]``), stub type aliases, the stub's own overlap ignores, and
functions a stub declares as callable-protocol variables (``np.zeros``). Checked with mypy
--strict and pyright strict on facades rendered from a small stubbed package."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge.codegen.hints import HintContext, hint, narrowed
from snakebridge.codegen.members import param_spec, render_class, render_function
from snakebridge.codegen.pipeline import INTROSPECT, INTROSPECT_ENV

RUNTIME = """
class Expression:
    pass


class Column:
    def __init__(self, name):
        self.name = name


class Frame:
    def __getitem__(self, key):
        return Frame() if isinstance(key, list) else Column(key)


def make(*args, **kwargs):
    return Frame()
"""
STUB = """
from typing import ClassVar, Final, Literal, Protocol, TypeAlias, overload

_Order: TypeAlias = Literal["C", "F"] | None

class Expression: ...
class Column:
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def __init__(self, name: str) -> None: ...

class Frame:
    @overload
    def __getitem__(self, key: Expression, /) -> Frame: ...
    @overload
    def __getitem__(self, key: str | Expression | tuple[int, ...], /) -> Column: ...  # type: ignore[overload-overlap] # pyright: ignore[reportOverlappingOverload]
    @overload
    def __getitem__(self, key: list[str], /) -> Frame: ...

class _Maker(Protocol):
    @overload
    def __call__(self, /, n: int, order: _Order = "C") -> Frame: ...
    @overload
    def __call__(self, /, n: str, order: _Order = "C") -> Column: ...

make: Final[_Maker]
"""  # noqa: E501
REVEAL = """
from typing import reveal_type

from facades import make

frame = make(1, order="F")
reveal_type(frame)
reveal_type(make("a"))
reveal_type(frame["a"])
reveal_type(frame[["a", "b"]])
reveal_type(frame[object()])
"""
REVEALED = ["Frame", "Column", "Column", "Frame", "Any"]
INDEX = {"pkgx.Frame": ("facades", "Frame"), "pkgx.Column": ("facades", "Column")}


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("stubbed")
    (root / "pkgx").mkdir()
    (root / "pkgx" / "__init__.py").write_text(RUNTIME)
    (root / "pkgx" / "__init__.pyi").write_text(STUB)
    request = {"library": "pkgx", "module": "pkgx", "symbols": ["Column", "Frame", "make"]}
    done = subprocess.run(
        [sys.executable, "-s", str(INTROSPECT)],
        env={**INTROSPECT_ENV, "PYTHONPATH": str(root)},
        input=json.dumps({**request, "pull": False}),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["errors"] == {}
    symbols: dict[str, Any] = result["symbols"]
    return symbols


def test_stubs_of_callable_protocol_variables_aliases_and_ignores(
    described: dict[str, Any],
) -> None:
    make = described["make"]["overloads"]
    assert [o["returns"] for o in make] == ["pkgx.Frame", "pkgx.Column"]
    assert [p["name"] for p in make[0]["params"]] == ["n", "order"]  # the protocol's self gone
    assert make[0]["params"][1]["annotation"] == "(typing.Literal['C', 'F'] | None)"
    getitem = next(m for m in described["Frame"]["members"] if m["name"] == "__getitem__")
    ignores = [o.get("ignore") for o in getitem["overloads"]]
    assert ignores == [None, ["overload-overlap", "reportOverlappingOverload"], None]
    assert described["Column"].get("unhashable") and not described["Frame"].get("unhashable")


def test_overload_parameters_drop_what_no_facade_spells() -> None:
    ctx = HintContext(module="facades", index=INDEX)
    assert narrowed("str | pkgx.Expression | tuple[int, ...]", ctx) == (
        "str | tuple[int, ...]",
        True,
    )
    assert narrowed("pkgx.Expression", ctx) == (None, True)
    assert narrowed("pkgx.Frame | typing.Any | _T", ctx) == ("pkgx.Frame | typing.Any | _T", False)
    assert narrowed("P.args", ctx) == ("P.args", False)  # a ParamSpec's, not a class
    spec = param_spec(
        [
            {
                "name": "f",
                "kind": "POSITIONAL_OR_KEYWORD",
                "annotation": "collections.abc.Callable"
                "[typing.Concatenate[pkgx.Frame, m.P], typing.Any]",
            },
            {"name": "args", "kind": "VAR_POSITIONAL", "annotation": "m.P.args"},
            {"name": "kwargs", "kind": "VAR_KEYWORD", "annotation": "m.P.kwargs"},
        ]
    )
    assert [hint(p["annotation"], ctx) for p in spec] == [
        "_t.Callable[_t.Concatenate[Frame, _sb.P], _t.Any]",
        "_sb.P.args",
        "_sb.P.kwargs",
    ]


def test_rendered_facades_type_check_and_infer_the_stub_types(
    described: dict[str, Any], tmp_path: Path
) -> None:
    ctx = HintContext(module="facades", index=INDEX)
    lines = [
        "from __future__ import annotations",
        "",
        "import typing as _t",
        "",
        "import snakebridge.facade as _sb",
        "",
        '_LIB = "pkgx"',
    ]
    for name in ("Column", "Frame"):
        lines += ["", "", *render_class(name, described[name], ctx)]
    lines += ["", "", *render_function("make", described["make"], ctx)]
    source = "\n".join(lines) + "\n"
    assert "# type: ignore[overload-overlap, unused-ignore]" in source
    assert source.count("__hash__: _t.ClassVar[None]") == 1  # Column's, as its stub says
    assert "def __getitem__(self, key: str | tuple[int, ...]) -> Column: ..." in source
    assert "Expression" not in source.split("def __getitem__")[1]  # its overload is gone
    (tmp_path / "facades.py").write_text(source)
    (tmp_path / "reveal.py").write_text(REVEAL)
    env = {"PYTHONPATH": str(Path(snakebridge.__file__).parents[1]), "PATH": "/usr/bin:/bin"}
    mypy = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "facades.py", "reveal.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert "error" not in mypy.stdout, mypy.stdout
    revealed = re.findall(r'Revealed type is "(?:facades\.)?(\w+)"', mypy.stdout)
    assert revealed == REVEALED, mypy.stdout
    pyright_config = {
        "typeCheckingMode": "strict",
        "extraPaths": [str(Path(snakebridge.__file__).parents[1])],
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(pyright_config))
    pyright = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "facades.py", "reveal.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    report = json.loads(pyright.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors
    types = [
        re.sub(r'.* is "(\w+)"$', r"\1", d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "information"
    ]
    assert types == REVEALED
