"""``generate = "all"`` for a set of stdlib modules: the generated package (sync and async
facades) is clean under ruff check, ruff format --check, mypy --strict and pyright strict.

The modules are chosen for what broke before: difflib's ``Match`` beside ``re.Match`` (a hint
import under an alias), ``b''`` and tuple defaults (base64, difflib, functools), names ruff
calls ambiguous (``re.I``, colorsys' ``l``), an enum class's ``__getitem__`` (``re.RegexFlag``),
a class whose member ``int`` shadows the builtin (``uuid.UUID``) and ``functools.partial``.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import snakebridge
from snakebridge.codegen.pipeline import Project

Make = Callable[..., Project]
MODULES = [
    "base64",
    "colorsys",
    "datetime",
    "decimal",
    "difflib",
    "fractions",
    "functools",
    "heapq",
    "ipaddress",
    "json",
    "re",
    "shlex",
    "statistics",
    "string",
    "textwrap",
    "uuid",
]
PYPROJECT = '[tool.snakebridge]\nscan = ["app"]\n[tool.snakebridge.libraries]\n' + "".join(
    f'{m} = {{ version = "stdlib", generate = "all" }}\n' for m in MODULES
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_generate_all_for_stdlib_modules_is_clean_under_every_checker(
    make_project: Make, tmp_path: Path
) -> None:
    report = make_project({"main.py": ""}, pyproject=PYPROJECT).sync()
    assert not report.errors, report.errors[:5]
    root = tmp_path / "snakebridge_generated"
    assert {p.name for p in root.iterdir() if p.is_dir()} >= {*MODULES, "aio"}
    rules = ("--isolated", "--select", "E,F,W,I,B,UP,RUF")
    checked = run("ruff", "check", *rules, "--output-format", "concise", str(root), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout[-3000:]
    formatted = run("ruff", "format", "--isolated", "--check", str(root), cwd=tmp_path)
    assert formatted.returncode == 0, formatted.stdout[-3000:]
    mypy = run("mypy", "--strict", "--no-incremental", "snakebridge_generated", cwd=tmp_path)
    assert mypy.returncode == 0, mypy.stdout[-3000:]
    config = {
        "typeCheckingMode": "strict",
        "include": ["snakebridge_generated"],
        "extraPaths": [str(Path(snakebridge.__file__).parents[1])],
    }
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    report_json = json.loads(run("pyright", "--outputjson", cwd=tmp_path).stdout)
    errors = [d for d in report_json["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors[:5]

    difflib = (root / "difflib" / "__init__.py").read_text()
    assert "from snakebridge_generated.re import Match as _re_Match" in difflib
    assert "_t.Callable[[str], _re_Match | None]" in difflib  # re's Match, not difflib's
    assert 'fromfile: bytes | bytearray = b"",' in difflib
    sys.path.insert(0, str(tmp_path))
    try:
        from snakebridge_generated import functools, re

        assert "func" in inspect.signature(functools.partial).parameters
        assert "__getitem__" not in vars(re.RegexFlag)  # the enum metaclass's: RegexFlag["I"]
    finally:
        sys.path.remove(str(tmp_path))
