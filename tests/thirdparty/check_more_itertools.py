"""The issue-11 measure as a test: more-itertools' suite through the facades must not regress.

Not named ``test_*.py`` on purpose: the default ``python -m pytest -q`` skips it (it needs PyPI
the first time and runs for minutes); CI runs it as its own step,
``python -m pytest -q tests/thirdparty/check_more_itertools.py`` (see .ci/run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run_more_itertools.py")
# Facade passes as a share of the in-process passes, as measured on main (raise it as fixes
# land; the bar is 0.97). 2026-12-01 21:40: 395 of 663; 23:02: 644 of 663 (97.1 %);
# 2026-12-02 01:09: 648 of 663 (97.7 %; 2 of the 15 are timeouts a loaded box can add to).
THRESHOLD = 0.96


@pytest.mark.timeout(2400)
def test_more_itertools_suite_through_facades(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(report_file)],
        capture_output=True,
        text=True,
        timeout=2300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_file.read_text())
    print(done.stdout)
    baseline, facades = report["baseline"], report["facades"]
    assert baseline["failed"] == 0 and baseline["passed"] >= 660, baseline  # the real suite ran
    assert facades["passed"] + facades["failed"] + facades["skipped"] == sum(baseline.values())
    assert report["ratio"] >= THRESHOLD, done.stdout
