"""The command line and the curated public surface."""

from __future__ import annotations

import subprocess

import snakebridge


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["snakebridge", *args], capture_output=True, text=True, timeout=60)


def test_call_prints_json_or_repr() -> None:
    assert run("call", "math", "sqrt", "16").stdout == "4.0\n"
    assert run("call", "json", "dumps", '{"a": [1, 2]}', "--kw", "sort_keys=true").stdout == (
        '"{\\"a\\": [1, 2]}"\n'
    )
    assert run("call", "os.path", "join", "a", "b").stdout == '"a/b"\n'
    assert run("call", "fractions", "Fraction", "1", "3").stdout == "Fraction(1, 3)\n"


def test_call_errors_are_one_clear_line() -> None:
    result = run("call", "math", "sqrtt", "4")
    assert result.returncode == 1
    assert result.stderr.startswith("error: SymbolNotFound: math has no attribute 'sqrtt'")
    assert "Traceback" not in result.stderr


def test_public_names_are_sorted_and_complete() -> None:
    public = {name for name in dir(snakebridge) if not name.startswith("_")}
    public -= {"runtime", "config", "annotations"}  # submodules and the __future__ import
    assert snakebridge.__all__ == sorted(snakebridge.__all__)
    assert public <= set(snakebridge.__all__) | {
        "codegen",
        "envs",
        "errors",
        "facade",
        "cli",
        "paths",
    }
    assert all(hasattr(snakebridge, name) for name in snakebridge.__all__)
