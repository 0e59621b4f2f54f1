"""Real uv environments from PyPI: numpy 1.26.4 and numpy 2.x side by side, drift, repair."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import snakebridge
from snakebridge.config import load_settings
from snakebridge.envs.builder import setup
from snakebridge.envs.lock import Lock
from snakebridge.envs.plan import plan_envs
from snakebridge.envs.verify import drifts
from tests.envs.conftest import CONFIG, cli, numpy_version

pytestmark = pytest.mark.envs  # builds real uv environments from PyPI


def test_two_numpys_in_one_host_process(in_project: Path) -> None:
    assert snakebridge.get("numpy", "__version__") == "2.1.3"
    assert snakebridge.get("legacy_np", "__version__") == "1.26.4"
    assert snakebridge.call("legacy_np", "mean", [[1, 2, 3]]) == 2.0
    pools = {pool["name"] for pool in snakebridge.status()}
    assert pools == {"default", "legacy"}


def test_facades_are_introspected_in_each_env(in_project: Path) -> None:
    result = cli(in_project, "sync")
    assert result.returncode == 0, result.stderr
    generated = in_project / "snakebridge_generated"
    assert "from numpy 2.1.3. Do not edit." in (generated / "numpy" / "__init__.py").read_text()
    assert (
        "from legacy_np 1.26.4. Do not edit."
        in (generated / "legacy_np" / "__init__.py").read_text()
    )
    sys.path.insert(0, str(in_project))
    try:
        from snakebridge_generated import legacy_np, numpy

        assert legacy_np.mean([1, 2, 3, 4]) == 2.5 and numpy.mean([2, 4]) == 3.0
    finally:
        sys.path.remove(str(in_project))
        for name in [m for m in sys.modules if m.startswith("snakebridge_generated")]:
            del sys.modules[name]
    assert cli(in_project, "check").returncode == 0


def test_setup_is_a_fast_no_op_and_the_lock_is_stable(project: Path) -> None:
    lock_before = (project / "snakebridge.lock").read_bytes()
    settings = load_settings(project)
    assert setup(settings) == []
    assert setup(settings, check=True) == []
    assert (project / "snakebridge.lock").read_bytes() == lock_before
    lock = json.loads(lock_before)
    legacy = lock["envs"]["legacy"]
    assert legacy["packages"]["numpy"]["version"] == "1.26.4"
    assert legacy["packages"]["numpy"]["requested"] == "numpy==1.26.4"
    assert all(h.startswith("sha256:") for h in legacy["packages"]["numpy"]["hashes"])
    assert legacy["python"]["implementation"] == "cpython" and legacy["python"]["sha256"]
    assert lock["generator"] and lock["snakebridge"]
    assert b"time" not in lock_before.lower().replace(b"timeout", b"")


def test_deleted_package_is_named_and_repaired(project: Path) -> None:
    site = next((project / ".snakebridge" / "envs" / "legacy").glob("lib/python*/site-packages"))
    import shutil

    shutil.rmtree(site / "numpy")
    check = cli(project, "setup", "--check")
    assert check.returncode == 1 and "env legacy: package numpy is damaged" in check.stdout
    doctor = cli(project, "doctor")
    assert doctor.returncode == 1
    assert "FAIL env legacy: package numpy is damaged" in doctor.stdout
    assert "fix: snakebridge setup" in doctor.stdout
    repair = cli(project, "setup")
    assert repair.returncode == 0 and "built legacy" in repair.stdout
    assert "locked" not in repair.stdout  # rebuilt from the lock as it is, not re-resolved
    assert numpy_version(project, "legacy") == "1.26.4"
    assert cli(project, "setup", "--check").returncode == 0


def test_bad_version_leaves_the_previous_env_intact(project: Path) -> None:
    original = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(original.replace("==1.26.4", "==1.26.999"))
    try:
        result = cli(project, "setup")
        assert result.returncode == 1
        assert "cannot resolve environment 'legacy'" in result.stderr
        assert "Nothing was changed" in result.stderr and "Traceback" not in result.stderr
        assert numpy_version(project, "legacy") == "1.26.4"
    finally:
        (project / "pyproject.toml").write_text(original)
    assert cli(project, "setup", "--check").returncode == 0


def running_commands() -> list[str]:
    """Command lines of this machine's processes (Linux /proc; elsewhere none)."""
    found: list[str] = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        try:
            found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, UnicodeDecodeError):
            continue
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_setup_leaves_the_old_env_usable(project: Path, signum: int) -> None:
    """Whenever the signal lands, setup leaves either the old env and lock untouched (it was
    interrupted) or the new ones complete (it had already finished): never a half-built env,
    a leftover staging tree or a running uv. Which of the two is up to the scheduler."""
    original = (project / "pyproject.toml").read_text()
    lock_before = (project / "snakebridge.lock").read_bytes()
    (project / "pyproject.toml").write_text(
        original + 'requirements = ["six==1.16.0", "packaging==24.1"]\n'
    )
    envs = project / ".snakebridge" / "envs"
    finished = False
    try:
        run = subprocess.Popen(
            ["snakebridge", "setup"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        installing = ".legacy.building-*/lib/python*/site-packages/numpy"
        while run.poll() is None and not list(envs.glob(installing)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        if run.poll() is None:
            run.send_signal(signum)  # most often uv is installing into the staging venv now
        _, stderr = run.communicate(timeout=120)
        finished = run.returncode == 0
        assert not list(envs.glob(".legacy.building-*"))
        assert not [pid for pid in running_commands() if ".legacy.building-" in pid]  # no uv
        assert numpy_version(project, "legacy") == "1.26.4"  # the env works either way
        if finished:  # the signal came after the switch: the new env and lock are whole
            assert cli(project, "setup", "--check").returncode == 0
        else:
            assert run.returncode in (130, -signum), stderr
            if run.returncode == 130:
                assert "previous environments are unchanged" in stderr
            assert (project / "snakebridge.lock").read_bytes() == lock_before
    finally:
        (project / "pyproject.toml").write_text(original)
    if finished:  # put the project back as the other tests expect it
        assert cli(project, "setup").returncode == 0
    assert cli(project, "setup", "--check").returncode == 0


def test_missing_env_is_an_error_naming_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    snakebridge.shutdown()
    try:
        with pytest.raises(snakebridge.EnvironmentMissing, match="run `snakebridge setup`"):
            snakebridge.get("legacy_np", "__version__")
    finally:
        snakebridge.shutdown()
    settings = load_settings(tmp_path)
    assert any(
        "does not exist" in d for d in drifts(settings, Lock.load(tmp_path), plan_envs(settings))
    )


def test_config_change_makes_the_env_stale_until_setup(in_project: Path) -> None:
    original = (in_project / "pyproject.toml").read_text()
    (in_project / "pyproject.toml").write_text(original.replace("==1.26.4", "==1.26.3"))
    try:
        with pytest.raises(snakebridge.EnvironmentMissing, match=r"stale.*snakebridge setup"):
            snakebridge.get("legacy_np", "__version__")
        assert snakebridge.get("numpy", "__version__") == "2.1.3"  # other envs unaffected
        check = cli(in_project, "setup", "--check")
        assert check.returncode == 1
        assert "env legacy: requirements changed" in check.stdout
        assert "+numpy==1.26.3" in check.stdout and "-numpy==1.26.4" in check.stdout
    finally:
        (in_project / "pyproject.toml").write_text(original)


def test_console_scripts_survive_the_swap(project: Path) -> None:
    f2py = project / ".snakebridge" / "envs" / "legacy" / "bin" / "f2py"
    assert ".building-" not in f2py.read_text(errors="replace")
    done = subprocess.run([str(f2py), "-v"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "1.26.4"


def test_resolving_fails_before_anything_is_built(project: Path) -> None:
    original = (project / "pyproject.toml").read_text()
    lock_before = (project / "snakebridge.lock").read_bytes()
    changed = original.replace("==2.1.3", "==2.1.2").replace("==1.26.4", "==1.26.999")
    (project / "pyproject.toml").write_text(changed)
    try:
        result = cli(project, "setup")
        assert result.returncode == 1 and "cannot resolve environment 'legacy'" in result.stderr
        assert numpy_version(project, "default") == "2.1.3"  # resolved fine, yet not rebuilt
        assert (project / "snakebridge.lock").read_bytes() == lock_before
    finally:
        (project / "pyproject.toml").write_text(original)
