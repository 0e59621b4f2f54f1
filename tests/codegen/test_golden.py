"""Golden tree: the quickstart's committed facades are exactly what its manifest generates."""

from __future__ import annotations

import shutil
from pathlib import Path

from snakebridge.codegen.pipeline import Project
from snakebridge.config import load_settings

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
    shutil.copytree(QUICKSTART, target, ignore=shutil.ignore_patterns("__pycache__", "cache"))
    assert Project(load_settings(target)).check() == []
