"""Real projects with real uv environments from PyPI, built once per session.

``project`` holds numpy 2.1.3 in the default env and numpy 1.26.4 in ``legacy``; tests that edit
its pyproject restore it. uv's own cache keeps reruns from downloading again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import snakebridge

CONFIG = """
[tool.snakebridge]
scan = ["app"]
[tool.snakebridge.libraries]
numpy = "==2.1.3"
legacy_np = { package = "numpy", version = "==1.26.4", env = "legacy", module = "numpy" }
[tool.snakebridge.envs.legacy]
python = "3.11"
"""


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``snakebridge`` command in ``root``."""
    return subprocess.run(
        ["snakebridge", *args], cwd=root, capture_output=True, text=True, timeout=900, env=env
    )


def python_of(root: Path, env: str) -> str:
    return str(root / ".snakebridge" / "envs" / env / "bin" / "python")


def numpy_version(root: Path, env: str) -> str:
    """numpy.__version__ as the env's own interpreter reports it."""
    return subprocess.run(
        [python_of(root, env), "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("envs")
    (root / "pyproject.toml").write_text(CONFIG)
    (root / "app").mkdir()
    (root / "app" / "main.py").write_text(
        "from snakebridge_generated import legacy_np, numpy\nnumpy.mean\nlegacy_np.mean\n"
    )
    result = cli(root, "setup")
    assert result.returncode == 0, result.stderr
    yield root


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(project)
    monkeypatch.delenv("SNAKEBRIDGE_CONFIG", raising=False)
    snakebridge.shutdown()
    yield project
    snakebridge.shutdown()


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose ``tiny`` env holds only six (quick to rebuild)."""
    root = tmp_path_factory.mktemp("small")
    (root / "pyproject.toml").write_text(
        '[tool.snakebridge.libraries]\nsix = { version = "==1.16.0", env = "tiny" }\n'
        "[tool.snakebridge.envs.tiny]\n"
    )
    result = cli(root, "setup")
    assert result.returncode == 0, result.stderr
    return root
