"""Facades of pandas, scipy and scikit-learn (built from PyPI): a data scientist's script gives
the in-process results, and the generated package is clean under mypy --strict and pyright
strict with common calls revealed as facade classes. Slow: it builds a real environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import snakebridge

from .conftest import cli

pytestmark = [pytest.mark.slow, pytest.mark.envs]

CASES = Path(__file__).with_name("cases")
PYPROJECT = """
[tool.snakebridge]
scan = ["app"]

[tool.snakebridge.libraries]
pandas = ">=2.2"
numpy = ">=1.26"
scipy = ">=1.13"
sklearn = { package = "scikit-learn", version = ">=1.5" }

[tool.snakebridge.envs.default]
requirements = ["pandas-stubs"]
"""
CSV = "a,b,c\n1,2.0,x\n2,4.5,y\n3,5.5,x\n4,8.0,y\n"
ALL_PANDAS = 'pandas = { version = ">=2.2", generate = "all" }'
ALL_SCIPY = 'scipy = { version = ">=1.13", generate = "all", depth = 2 }'
REVEALED = [*["DataFrame"] * 4, "LinearRegression", "Series", "DataFrame"]


def run(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), *sys.path])}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datascience")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "app").mkdir()
    for case in CASES.glob("*.py"):
        shutil.copy(case, root / "app" / case.name)
    (root / "data.csv").write_text(CSV)
    pyright = {
        "typeCheckingMode": "strict",
        "include": ["app", "snakebridge_generated"],
        "extraPaths": [str(Path(snakebridge.__file__).parents[1])],
    }
    (root / "pyrightconfig.json").write_text(json.dumps(pyright))
    built = cli(root, "setup")
    assert built.returncode == 0, built.stderr
    started = time.perf_counter()
    synced = cli(root, "sync")
    print(f"cold sync {time.perf_counter() - started:.1f} s")  # a figure, not a bar
    assert synced.returncode == 0, synced.stderr
    return root


def test_the_script_gives_the_in_process_results(project: Path) -> None:
    csv = str(project / "data.csv")
    through = run(sys.executable, "app/datascience.py", csv, cwd=project)
    assert through.returncode == 0, through.stderr
    source = (project / "app" / "datascience.py").read_text()
    source = re.sub(r"from snakebridge_generated import (\w+) as", r"import \1 as", source)
    (project / "inprocess.py").write_text(source.replace("from snakebridge_generated.", "from "))
    python = project / ".snakebridge" / "envs" / "default" / "bin" / "python"
    direct = run(str(python), "inprocess.py", csv, cwd=project)
    assert direct.returncode == 0, direct.stderr
    assert through.stdout == direct.stdout
    snakebridge.shutdown()


def test_mypy_strict_is_clean_and_reveals_facade_classes(project: Path) -> None:
    done = run(
        sys.executable, "-m", "mypy", "--strict", "snakebridge_generated", "app", cwd=project
    )
    assert "error" not in done.stdout, done.stdout[-4000:]
    revealed = re.findall(r'Revealed type is "snakebridge_generated\.[\w.]*\.(\w+)"', done.stdout)
    assert revealed == REVEALED, done.stdout[-2000:]


def test_pyright_strict_is_clean_and_reveals_facade_classes(project: Path) -> None:
    done = run(sys.executable, "-m", "pyright", "--outputjson", cwd=project)
    report = json.loads(done.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors[:10]
    revealed = [
        re.sub(r'.* is "(\w+)"$', r"\1", d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "information" and "reveal_datascience" in d["file"]
    ]
    assert revealed == REVEALED


def test_facades_are_ruff_format_clean_and_in_sync(project: Path) -> None:
    formatted = run(
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--isolated",
        "--check",
        "snakebridge_generated",
        cwd=project,
    )
    assert formatted.returncode == 0, formatted.stdout[-2000:]
    assert cli(project, "check").returncode == 0
    assert "facades are up to date" in cli(project, "sync").stdout


def assert_both_checkers_clean(project: Path) -> None:
    done = run(
        sys.executable, "-m", "mypy", "--strict", "snakebridge_generated", "app", cwd=project
    )
    assert "error" not in done.stdout, done.stdout[-4000:]
    report = json.loads(run(sys.executable, "-m", "pyright", "--outputjson", cwd=project).stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors[:10]


def switch(project: Path, old: str, new: str) -> str:
    """Change a library's config line; check must see it, sync must apply it (its output)."""
    config = project / "pyproject.toml"
    config.write_text(config.read_text().replace(old, new))
    assert "options changed" in cli(project, "check").stdout
    synced = cli(project, "sync")
    assert synced.returncode == 0, synced.stderr
    return synced.stdout


def test_generate_all_for_pandas_takes_effect_and_stays_clean(project: Path) -> None:
    """Late: it switches pandas to its whole surface."""
    synced = switch(project, 'pandas = ">=2.2"', ALL_PANDAS)
    assert "added pandas.concat" in synced and "added pandas.merge" in synced
    assert_both_checkers_clean(project)


def test_generate_all_for_scipy_with_depth_2_takes_effect_and_stays_clean(project: Path) -> None:
    """Last: scipy's whole surface two levels down (its functions live in submodules)."""
    synced = switch(project, 'scipy = ">=1.13"', ALL_SCIPY)
    assert "added scipy.linalg.solve" in synced and "added scipy.optimize.curve_fit" in synced
    assert_both_checkers_clean(project)
