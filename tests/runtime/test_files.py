"""Files snakebridge writes respect the umask; broken files it reads are one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from snakebridge import paths
from snakebridge.codegen.manifest import CodegenError, Manifest
from snakebridge.errors import UnwritablePath


@pytest.fixture
def umask_002() -> Iterator[None]:
    old = os.umask(0o002)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_002")
def test_project_files_get_the_umask_not_0600(tmp_path: Path) -> None:
    manifest = Manifest(paths.manifest_path(tmp_path))
    assert manifest.save()
    assert stat.S_IMODE(os.stat(manifest.path).st_mode) == 0o664
    assert not manifest.save()  # unchanged: nothing written
    private = tmp_path / "private.json"
    paths.atomic_write(private, "{}", private=True)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_atomic_write_replaces_a_symlink_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    paths.atomic_write(link, "new")
    assert victim.read_text() == "precious" and link.read_text() == "new"
    assert not link.is_symlink() and not list(tmp_path.glob(".out.json.*"))


@pytest.mark.parametrize(
    "libraries",
    [{"json": 5}, {"json": {"symbols": []}}, {"json": {"symbols": {}, "aliases": "x"}}],
)
def test_manifest_with_a_wrongly_typed_entry_is_a_clear_error(
    tmp_path: Path, libraries: object
) -> None:
    path = paths.manifest_path(tmp_path)
    path.parent.mkdir()
    path.write_text(json.dumps({"format": 1, "libraries": libraries, "files": {}}))
    with pytest.raises(CodegenError, match=r"manifest.json is corrupt .*library 'json'"):
        Manifest.load(path)


def test_malformed_status_files_are_skipped_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    directory = paths.status_dir()
    (directory / "1.json").write_text('{"pid": 1, "pools": 5}')
    (directory / "2.json").write_text("{not json")
    (directory / "3.json").write_text('{"pid": 1, "pools": [{"name": "x"}]}')
    result = subprocess.run(["snakebridge", "status"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout == "no running snakebridge pools\n"
    warnings = result.stderr.splitlines()
    assert len(warnings) == 3 and all("ignoring status file" in line for line in warnings)


def test_an_unwritable_generated_dir_is_one_line_from_sync(tmp_path: Path) -> None:
    """(Root ignores a read-only mode, so the directory is blocked by a file of its name.)"""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.snakebridge]\ngenerated_path = "blocked"\n'
        '[tool.snakebridge.libraries]\njson = "stdlib"\n'
    )
    (tmp_path / "app.py").write_text("from snakebridge_generated import json\njson.dumps(1)\n")
    (tmp_path / "blocked").write_text("a file, not a directory")
    result = subprocess.run(
        ["snakebridge", "sync"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot write ") and "blocked/snakebridge_generated" in line
    with pytest.raises(UnwritablePath, match=r"cannot write .*x\.json"):
        paths.atomic_write(tmp_path / "blocked" / "x.json", "{}")
