"""Runtime tests run real workers from a directory with no pyproject (the embedded default)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import snakebridge
from snakebridge.runtime.client import runtime
from snakebridge.runtime.pool import Pool


@pytest.fixture(autouse=True)
def _default_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SNAKEBRIDGE_CONFIG", raising=False)
    yield


@pytest.fixture(scope="module", autouse=True)
def _fresh_runtime() -> Iterator[None]:
    """A fresh runtime per module, with no facade proxy classes left by earlier imports."""
    from snakebridge.runtime import refs

    snakebridge.shutdown()
    refs._PROXIES.clear()
    refs._CLASS_FOR.clear()
    yield
    snakebridge.shutdown()


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Path]]:
    """Point the runtime at a config file written from TOML text; restores the default after."""

    def write(text: str) -> Path:
        snakebridge.shutdown()
        path = tmp_path / "snakebridge.toml"
        path.write_text(text)
        monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(path))
        return path

    yield write
    snakebridge.shutdown()


def default_pool() -> Pool:
    snakebridge.call("operator", "pos", [1])
    return runtime().pools["default"]


def registry_size(pool: Pool) -> int:
    """Objects held for the host by all workers of ``pool`` (after flushing dropped Refs)."""
    gc.collect()
    return sum(int(pool.ping(worker)["refs"]) for worker in pool.workers)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True
