"""Golden tree: the quickstart's committed facades are exactly what its manifest generates."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from snakebridge.codegen.pipeline import Project
from snakebridge.config import load_settings
from snakebridge.envs.lock import Lock, generator_hash

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart"


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_quickstart_facades_regenerate_byte_for_byte(tmp_path: Path) -> None:
    shutil.copy(QUICKSTART / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".snakebridge").mkdir()
    shutil.copy(
        QUICKSTART / ".snakebridge" / "manifest.json", tmp_path / ".snakebridge" / "manifest.json"
    )
    project = Project(load_settings(tmp_path))
    manifest = project.manifest()
    project.generate(manifest, manifest.libraries)
    expected = files(QUICKSTART / "snakebridge_generated")
    assert files(tmp_path / "snakebridge_generated") == expected
    assert manifest.dump() == (QUICKSTART / ".snakebridge" / "manifest.json").read_text()


def test_quickstart_check_passes_from_a_fresh_copy(tmp_path: Path) -> None:
    target = tmp_path / "quickstart"
    ignore = shutil.ignore_patterns("__pycache__", "cache", "envs")  # check needs no library
    shutil.copytree(QUICKSTART, target, ignore=ignore)
    assert Project(load_settings(target)).check() == []


def test_quickstart_numpy126_builds_its_classes_in_its_own_environment() -> None:
    legacy = (QUICKSTART / "snakebridge_generated" / "numpy126" / "__init__.py").read_text()
    assert "from numpy126 1.26.4. Do not edit." in legacy and '_LIB = "numpy126"' in legacy
    assert "from snakebridge_generated.numpy import" not in legacy  # no numpy 2 class
    assert "class int8(" in legacy and re.search(r"def __new__\(\s*cls, value: ", legacy)


def test_quickstart_lock_is_current_so_setup_on_a_clone_leaves_it_as_committed() -> None:
    lock = Lock.load(QUICKSTART)
    assert lock is not None and lock.generator == generator_hash()
    assert set(lock.envs) == {"default", "numpy126"}


def test_quickstart_is_clean_under_mypy_strict() -> None:
    src = str(Path(__file__).parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir=/dev/null", "main.py"],
        cwd=QUICKSTART,
        env={**os.environ, "MYPYPATH": src},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout  # numpy126.int8 is not numpy.int8 to mypy either
