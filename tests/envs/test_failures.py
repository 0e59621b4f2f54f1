"""Bad input with real uv: a package typo, no network. Each leaves what was built intact."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from snakebridge.config import load_settings
from snakebridge.envs.builder import setup
from snakebridge.envs.uvtool import EnvSetupError
from snakebridge.runtime.interpreters import MARKER, env_digest
from tests.envs.conftest import cli

pytestmark = pytest.mark.envs  # builds real uv environments from PyPI


def offline(cache: Path) -> dict[str, str]:
    """The environment of a machine without network: uv may not fetch, its cache is empty."""
    return {**os.environ, "UV_OFFLINE": "1", "UV_CACHE_DIR": str(cache)}


def six_version(root: Path) -> str:
    python = root / ".snakebridge" / "envs" / "tiny" / "bin" / "python"
    return subprocess.run(
        [str(python), "-c", "import six; print(six.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_package_typo_is_named_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.snakebridge.libraries]\nsnakebridge-no-such-package-zq = "==1.0"\n'
    )
    result = cli(tmp_path, "setup")
    assert result.returncode == 1
    assert "cannot resolve environment 'default'" in result.stderr
    assert "snakebridge-no-such-package-zq" in result.stderr
    assert "rerun `snakebridge setup`" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "snakebridge.lock").exists()
    assert not list((tmp_path / ".snakebridge" / "envs").glob("*/bin"))


def test_no_network_while_resolving_keeps_the_env(small: Path, tmp_path: Path) -> None:
    original = (small / "pyproject.toml").read_text()
    lock_before = (small / "snakebridge.lock").read_bytes()
    (small / "pyproject.toml").write_text(original.replace("==1.16.0", "==1.15.0"))
    try:
        result = cli(small, "setup", env=offline(tmp_path / "cache"))
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "cannot resolve environment 'tiny'" in result.stderr
        assert "network" in result.stderr and "rerun `snakebridge setup`" in result.stderr
        assert six_version(small) == "1.16.0"
        assert (small / "snakebridge.lock").read_bytes() == lock_before
    finally:
        (small / "pyproject.toml").write_text(original)


def test_no_network_while_building_says_how_to_retry(small: Path, tmp_path: Path) -> None:
    envs = small / ".snakebridge" / "envs"
    site = next((envs / "tiny").glob("lib/python*/site-packages"))
    (site / "six.py").unlink()
    result = cli(small, "setup", env=offline(tmp_path / "cache"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "building environment 'tiny' failed" in result.stderr
    assert "previous environment is unchanged" in result.stderr
    assert "rerun `snakebridge setup`" in result.stderr
    assert not list(envs.glob(".tiny.*"))  # no staging tree left behind
    assert cli(small, "setup", "--check").returncode == 1  # still damaged, still named
    repair = cli(small, "setup")
    assert repair.returncode == 0, repair.stderr
    assert six_version(small) == "1.16.0"
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


def test_another_interpreter_binary_is_a_drift_and_setup_rebuilds(small: Path) -> None:
    path = small / "snakebridge.lock"
    lock = json.loads(path.read_text())
    real = lock["envs"]["tiny"]["python"]["sha256"]
    pins = lock["envs"]["tiny"]["packages"]
    lock["envs"]["tiny"]["python"]["sha256"] = "0" * 64  # as if locked and built on another
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")  # build of this Python
    marker = {"digest": env_digest(lock["envs"]["tiny"]), "python_sha256": "0" * 64}
    (small / ".snakebridge" / "envs" / "tiny" / MARKER).write_text(json.dumps(marker))
    check = cli(small, "setup", "--check")
    assert check.returncode == 1
    assert "env tiny: interpreter differs" in check.stdout and "binary hash" in check.stdout
    repair = cli(small, "setup")
    assert repair.returncode == 0, repair.stderr
    assert (
        "locked tiny: same packages on cpython" in repair.stdout and "built tiny" in repair.stdout
    )
    after = json.loads(path.read_text())["envs"]["tiny"]
    assert after["python"]["sha256"] == real and after["packages"] == pins
    assert cli(small, "setup", "--check").returncode == 0


def test_full_disk_while_building_keeps_the_env(
    small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs = small / ".snakebridge" / "envs"
    site = next((envs / "tiny").glob("lib/python*/site-packages"))
    (site / "six.py").unlink()  # never write in place: a hardlink would reach uv's cache
    (site / "six.py").write_text("# damaged\n")
    assert "env tiny: package six was changed after install (hash differs" in "\n".join(
        setup(load_settings(small), check=True)
    )
    write_text = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == MARKER:  # the last write of a build
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(EnvSetupError, match="No space left on device") as failure:
        setup(load_settings(small))
    assert "previous environment is unchanged" in str(failure.value)
    assert not list(envs.glob(".tiny.*"))
    assert (site / "six.py").read_text() == "# damaged\n"  # the old tree, untouched
    monkeypatch.undo()
    assert setup(load_settings(small))
    assert six_version(small) == "1.16.0"
