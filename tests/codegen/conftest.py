"""Codegen tests build small real projects in temp dirs and run the real pipeline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import snakebridge
from snakebridge.codegen.pipeline import Project
from snakebridge.config import load_settings

PYPROJECT = """
[tool.snakebridge]
scan = ["app"]
[tool.snakebridge.libraries]
json = "stdlib"
math = "stdlib"
statistics = "stdlib"
pathlib = "stdlib"
collections = "stdlib"
os = "stdlib"
"""


@pytest.fixture
def make_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[dict[str, str]], Project]]:
    """A project in tmp_path with the given app files; the runtime uses its config."""
    monkeypatch.delenv("SNAKEBRIDGE_CONFIG", raising=False)
    monkeypatch.delenv("SNAKEBRIDGE_STRICT", raising=False)
    monkeypatch.chdir(tmp_path)
    snakebridge.shutdown()

    def make(files: dict[str, str], pyproject: str = PYPROJECT) -> Project:
        (tmp_path / "pyproject.toml").write_text(pyproject)
        for name, text in files.items():
            path = tmp_path / "app" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return Project(load_settings(tmp_path))

    yield make
    snakebridge.shutdown()
    for name in [m for m in sys.modules if m.split(".")[0] == "snakebridge_generated"]:
        del sys.modules[name]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["snakebridge", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
