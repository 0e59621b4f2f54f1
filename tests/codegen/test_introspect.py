"""Signature tiers and symbol kinds from the standalone introspector."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import typeshed_client

from snakebridge.codegen import introspect
from snakebridge.codegen.pipeline import INTROSPECT, INTROSPECT_ENV, _typeshed


def run(module: str, symbols: list[str]) -> dict[str, Any]:
    request = {
        "library": module,
        "module": module,
        "symbols": symbols,
        "typeshed": str(_typeshed()),
    }
    done = subprocess.run(
        [sys.executable, "-s", str(INTROSPECT)],
        env=INTROSPECT_ENV,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_tiers_and_kinds_from_real_modules() -> None:
    result = run("json", ["dumps", "JSONDecoder", "decoder.JSONDecodeError", "decoder"])
    symbols = result["symbols"]
    assert symbols["dumps"]["kind"] == "function" and symbols["dumps"]["tier"] == "runtime"
    decoder = symbols["JSONDecoder"]
    assert decoder["kind"] == "class" and decoder["remote_type"] == "json.decoder.JSONDecoder"
    assert {m["name"]: m["kind"] for m in decoder["members"]}["decode"] == "method"
    assert symbols["decoder.JSONDecodeError"]["kind"] == "exception"
    assert symbols["decoder"]["kind"] == "module"
    assert result["version"].startswith("stdlib 3.")
    math = run("math", ["sqrt", "log", "pi"])["symbols"]
    assert math["sqrt"]["tier"] == "text_signature"
    assert math["log"]["tier"] == "stub"  # no runtime signature: typeshed's stub
    assert math["pi"]["kind"] == "constant" and math["pi"]["value_type"] == "float"
    kinds = {m["name"]: m["kind"] for m in run("pathlib", ["Path"])["symbols"]["Path"]["members"]}
    assert kinds["cwd"] == "classmethod" and kinds["name"] == "property"
    assert kinds["exists"] == "method"
    overloads = run("builtins", ["max"])["symbols"]["max"]["overloads"]
    assert len(overloads) > 1


def test_missing_symbol_and_import_failure() -> None:
    result = run("json", ["dumpz"])
    assert result["errors"]["dumpz"] == "json has no attribute 'dumpz'; did you mean dump, dumps?"
    broken = run("no_such_library_xyz", ["thing"])
    assert broken["import_error"].startswith("cannot import 'no_such_library_xyz'")
    assert "ModuleNotFoundError" in broken["import_error"]


class _NoSignature:
    """f(a, b=1, *rest, key=None) -> int

    A callable that hides its signature from inspect.
    """

    @property
    def __signature__(self) -> Any:
        raise ValueError("no signature")

    def __call__(self, *args: Any) -> int:
        return 0


def test_docstring_and_variadic_tiers() -> None:
    signature, tier, _ = introspect.signature_of(_NoSignature(), "nowhere", "f", "f")
    assert tier == "docstring"
    assert [(p["name"], p["kind"], p["default"]) for p in signature["params"]] == [
        ("a", "POSITIONAL_OR_KEYWORD", None),
        ("b", "POSITIONAL_OR_KEYWORD", "1"),
        ("rest", "VAR_POSITIONAL", None),
        ("key", "KEYWORD_ONLY", "None"),
    ]
    assert signature["returns"] == "int"
    bare = _NoSignature()
    type(bare).__doc__ = "no signature line here"
    try:
        _, tier, _ = introspect.signature_of(bare, "nowhere", "g", "g")
    finally:
        type(bare).__doc__ = _NoSignature.__doc__
    assert tier == "variadic"


def test_literal_defaults() -> None:
    assert introspect.literal_default(3) == "3" and introspect.literal_default("x") == '"x"'
    assert (
        introspect.literal_default("it's") == '"it\'s"'
        and introspect.literal_default('"') == "'\"'"
    )
    assert introspect.literal_default((1, None)) == "(1, None)"
    assert introspect.literal_default(float("nan")) is None
    assert introspect.literal_default(object()) is None


def test_stub_branches_follow_the_interpreter_and_typeshed_ships_with_snakebridge() -> None:
    overloads = run("functools", ["reduce"])["symbols"]["reduce"]["overloads"]
    initial = [p for o in overloads for p in o["params"] if p["name"] == "initial"]
    expected = "POSITIONAL_OR_KEYWORD" if sys.version_info >= (3, 14) else "POSITIONAL_ONLY"
    assert initial and all(p["kind"] == expected for p in initial)  # this interpreter's branch
    assert str(_typeshed()).startswith(str(Path(typeshed_client.__file__).parent))


def test_annotations_are_qualified_and_result_classes_pulled() -> None:
    result = run("configparser", ["ConfigParser"])
    members = {m["name"]: m for m in result["symbols"]["ConfigParser"]["members"]}
    assert members["__getitem__"]["signature"]["returns"] == "configparser.SectionProxy"
    assert "configparser.SectionProxy" in result["types"]  # a type results have
    assert result["types"]["configparser.SectionProxy"]["kind"] == "class"


def test_a_class_built_by_its_own_new_takes_its_stub_constructor() -> None:
    # date and timedelta have no __init__ of their own: object's "()" is no evidence
    symbols = run("datetime", ["date", "timedelta"])["symbols"]
    date = [p["name"] for p in symbols["date"]["signature"]["params"]]
    assert date == ["year", "month", "day"] and symbols["date"]["tier"] == "stub"
    assert [p["name"] for p in symbols["timedelta"]["signature"]["params"]][:2] == [
        "days",
        "seconds",
    ]


def test_stub_class_aliases_are_followed(tmp_path: Path, monkeypatch: Any) -> None:
    # numpy's stubs: ``int8 = signedinteger[_8Bit]``, the constructor on signedinteger
    package = tmp_path / "fakenp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__init__.pyi").write_text(
        "class signedinteger:\n    def __init__(self, value: int = ..., /) -> None: ...\n"
        "int8 = signedinteger[_8Bit]\nint16: TypeAlias = signedinteger\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for alias in ("int8", "int16"):
        (found,) = introspect.stub_signatures("fakenp", f"{alias}.__init__")
        assert [p["name"] for p in found["params"]] == ["self", "value"]
    assert introspect.stub_signatures("fakenp", "int32.__init__") == []
