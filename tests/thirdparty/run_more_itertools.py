"""The transparency measure: more-itertools 10.5.0's own test suite, run through the facades.

Usage: ``python tests/thirdparty/run_more_itertools.py [--cache DIR] [--report FILE]``

1. downloads the more-itertools 10.5.0 sdist from PyPI (``pip download``, hash-checked, cached);
2. writes a project whose ``[tool.snakebridge]`` table pins ``more-itertools==10.5.0`` and whose
   tests are the sdist's, with ``import more_itertools`` rewritten to the generated facade;
3. runs ``snakebridge setup`` (a uv env) and ``snakebridge sync`` (fresh facades every run);
4. runs the suite through the facades, and in process from the sdist for the baseline;
5. prints passed/failed of both and each failure's root cause, and writes a JSON report.

It needs PyPI access the first time; later runs reuse the cached sdist and environment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from classify import classify, summarize

VERSION = "10.5.0"
SDIST = f"more-itertools-{VERSION}.tar.gz"
SHA256 = "5482bfef7849c25dc3c6dd53a6173ae4795da2a41a80faea6700d9f5846c5da6"
HERE = Path(__file__).resolve().parent
# (file, original line, facade line): every rewrite must match exactly once.
REWRITES = [
    (
        "test_more.py",
        "import more_itertools as mi",
        "from snakebridge_generated import more_itertools as mi",
    ),
    (
        "test_recipes.py",
        "import more_itertools as mi",
        "from snakebridge_generated import more_itertools as mi",
    ),
    (
        "test_recipes.py",
        "        from more_itertools import recipes",
        "        from snakebridge_generated.more_itertools import recipes",
    ),
]
PROJECT_TOML = f"""\
# Written by tests/thirdparty/run_more_itertools.py; rewritten on every run.
[tool.snakebridge]
generated = "snakebridge_generated"
scan = ["tests"]

[tool.snakebridge.libraries]
# the library's own tests reach its private helpers (peekable._cache, recipes._pairwise): a
# project testing its own internals opts out of the private-name rule, as documented
more_itertools = {{ package = "more-itertools", version = "=={VERSION}", allow_private = true }}

[tool.snakebridge.pools.default]
call_timeout = 20   # bounds a stuck call (a callback deadlock) so the run stays short
queue_timeout = 20

[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"
"""
PER_TEST_TIMEOUT = "30"


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _snakebridge(project: Path, *args: str) -> None:
    argv = [sys.executable, "-c", "from snakebridge.cli import main; main()", *args]
    done = _run(argv, project, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"snakebridge {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def fetch_sdist(cache: Path) -> Path:
    """The sdist, unpacked under ``cache`` (downloaded once, checked against its sha256)."""
    archive = cache / SDIST
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = _run(
            [
                sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:",
                "--no-deps", f"more-itertools=={VERSION}", "-d", str(cache),
            ],
            cache,
            timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"pip download failed (PyPI needed the first time):\n{done.stderr}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SHA256:
        archive.unlink()
        raise SystemExit(f"{archive} has sha256 {digest}, expected {SHA256}; removed, rerun")
    source = cache / f"more-itertools-{VERSION}"
    if not (source / "tests" / "test_more.py").exists():
        shutil.rmtree(source, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    # Its own pytest config, so pytest never climbs to a pyproject.toml above the cache.
    (source / "pytest.ini").write_text("[pytest]\n")
    return source


def write_project(source: Path, project: Path) -> None:
    """The facade project: rewritten tests, the config, no facades or manifest yet."""
    project.mkdir(parents=True, exist_ok=True)
    for stale in ("tests", "snakebridge_generated", ".snakebridge/manifest.json", "report.xml"):
        path = project / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    shutil.rmtree(project / ".snakebridge" / "cache", ignore_errors=True)
    (project / ".snakebridge" / "ledger.json").unlink(missing_ok=True)
    shutil.copytree(source / "tests", project / "tests")
    for name, old, new in REWRITES:
        path = project / "tests" / name
        lines = path.read_text().split("\n")
        hits = [i for i, line in enumerate(lines) if line == old]
        if len(hits) != 1:
            raise SystemExit(f"{name}: expected one line {old!r}, found {len(hits)}")
        lines[hits[0]] = new
        path.write_text("\n".join(lines))
    (project / "pyproject.toml").write_text(PROJECT_TOML)


def run_pytest(cwd: Path, config: str, junit: Path, extra: list[str]) -> dict[str, Any]:
    """Run the suite in ``cwd``; per-test outcomes read back from its JUnit XML.

    ``--tb=line`` because formatting hundreds of deep tracebacks costs more than the tests.
    """
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", config,
        "--rootdir", str(cwd), "--tb=line", f"--junitxml={junit}", *extra, "tests",
    ]  # fmt: skip
    _run(argv, cwd, timeout=1800)
    if not junit.exists():
        raise SystemExit(f"pytest wrote no report in {cwd}")
    tests: dict[str, dict[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        problems = [child for child in case if child.tag in ("failure", "error")]
        if problems:
            message = problems[0].get("message") or ""
            tests[test_id] = {
                "outcome": "failed",
                "message": message,
                "text": problems[0].text or "",
            }
        elif any(child.tag == "skipped" for child in case):
            tests[test_id] = {"outcome": "skipped"}
        else:
            tests[test_id] = {"outcome": "passed"}
    return tests


def _counts(tests: dict[str, dict[str, str]]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for result in tests.values():
        counts[result["outcome"]] += 1
    return counts


def measure(cache: Path) -> dict[str, Any]:
    source = fetch_sdist(cache)
    project = cache / "project"
    write_project(source, project)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    _snakebridge(project, "setup")
    seconds["setup"] = time.monotonic() - started
    _snakebridge(project, "sync")
    seconds["sync"] = time.monotonic() - started - seconds["setup"]
    started = time.monotonic()
    baseline = run_pytest(source, "pytest.ini", cache / "baseline.xml", [])
    seconds["in_process"] = time.monotonic() - started
    started = time.monotonic()
    facades = run_pytest(
        project, "pyproject.toml", project / "report.xml", [f"--timeout={PER_TEST_TIMEOUT}"]
    )
    seconds["facades"] = time.monotonic() - started
    failures = []
    for test_id, result in sorted(facades.items()):
        if result["outcome"] == "failed" and baseline.get(test_id, {}).get("outcome") == "passed":
            category, reason = classify(test_id, result["message"], result["text"])
            first = result["message"].strip().split("\n")[0][:240]
            failures.append(
                {"id": test_id, "category": category, "reason": reason, "message": first}
            )
    base, through = _counts(baseline), _counts(facades)
    return {
        "library": f"more-itertools {VERSION}",
        "baseline": base,
        "facades": through,
        "ratio": round(through["passed"] / base["passed"], 4) if base["passed"] else 0.0,
        "categories": summarize(failures),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_cache = os.environ.get("SNAKEBRIDGE_THIRDPARTY_CACHE", str(HERE / ".cache"))
    parser.add_argument("--cache", type=Path, default=Path(default_cache))
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    options = parser.parse_args()
    report = measure(options.cache.resolve())
    if options.report:
        options.report.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    base, through = report["baseline"], report["facades"]
    print(f"in process: {base['passed']} passed, {base['failed']} failed")
    print(
        f"facades:    {through['passed']} passed, {through['failed']} failed "
        f"({100 * report['ratio']:.1f} % of the in-process passes)"
    )
    for category, count in report["categories"].items():
        print(f"  {count:4d}  {category}")
    print("seconds:", ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))


if __name__ == "__main__":
    main()
