"""The README's first command on a fresh clone: setup, check and main.py from a copy.

The copy's lock is first made to look locked on another machine (another interpreter binary,
and another patch release of the same Python), as a clone's committed lock is: setup must build
both numpy environments from it and the committed facades must still pass ``check``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.envs.conftest import cli

pytestmark = pytest.mark.envs  # builds real uv environments from PyPI

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def locked_elsewhere(lock: Path, patch: bool) -> None:
    data = json.loads(lock.read_text())
    for entry in data["envs"].values():
        entry["python"]["sha256"] = "0" * 64
        if patch:
            major, minor, _ = entry["python"]["version"].split(".")
            entry["python"]["version"] = f"{major}.{minor}.0"
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.parametrize("patch", [False, True], ids=["same-python", "other-patch"])
def test_quickstart_from_a_fresh_clone(tmp_path: Path, patch: bool) -> None:
    root = tmp_path / "quickstart"
    ignore = shutil.ignore_patterns("__pycache__", "cache", "envs", "ledger.json")
    shutil.copytree(QUICKSTART, root, ignore=ignore)
    generated = {p: p.read_bytes() for p in (root / "snakebridge_generated").rglob("*.py")}
    locked_elsewhere(root / "snakebridge.lock", patch)

    manifest = json.loads((root / ".snakebridge" / "manifest.json").read_text())
    made_with = {entry.get("interpreter") for entry in manifest["libraries"].values()}
    assert made_with == {"cpython 3.11"}  # nothing of one machine's binary

    setup = cli(root, "setup")
    assert setup.returncode == 0, setup.stderr
    assert "built default" in setup.stdout and "built numpy126" in setup.stdout
    kept = "locked default: same packages on cpython"
    assert (kept not in setup.stdout) if patch else (kept in setup.stdout)  # else re-resolved
    assert "numpy==1.26.4" in setup.stdout if patch else True
    assert cli(root, "setup", "--check").returncode == 0
    check = cli(root, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [sys.executable, "main.py"], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("numpy 2.1.3: int8(100) + 200 -> raises builtins.OverflowError")
    assert lines[1] == "numpy 1.26.4: int8(100) + 200 -> 300 (int64)"
    assert any(line.startswith("survived: worker ") and "SIGSEGV" in line for line in lines)
    before, after = lines[-1].split(": [")[-1].split("] -> [")
    assert lines[-1].startswith("math.sqrt(16): 4.0") and before != after.rstrip("]")
    assert {p: p.read_bytes() for p in generated} == generated  # nothing regenerated
    assert not (root / ".snakebridge" / "ledger.json").exists()  # every call had a facade
