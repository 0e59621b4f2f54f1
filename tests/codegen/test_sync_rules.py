"""What sync generates and what check refuses: star imports, config changes, key spelling,
uses a facade would serve differently, and `plan` as a sync that writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from snakebridge.codegen.manifest import content_hash
from snakebridge.codegen.pipeline import Project
from snakebridge.envs.lock import generator_hash

from .conftest import cli

Make = Callable[..., Project]
STATISTICS = """
[tool.snakebridge]
scan = ["app"]
[tool.snakebridge.libraries]
statistics = {spec}
"""


def test_star_imports_are_scanned_and_synced(make_project: Make, tmp_path: Path) -> None:
    project = make_project(
        {"main.py": "from snakebridge_generated.statistics import *\n\nmedian([1, 2])\n"},
        pyproject=STATISTICS.format(spec='"stdlib"'),
    )
    assert any("star" in p or "not generated" in p for p in project.check())
    report = project.sync()
    assert not report.errors and "statistics.median" in report.added
    assert "statistics.NormalDist" in report.added  # every public name, as `import *` gives
    assert project.check() == []


def test_config_changes_take_effect_on_the_next_sync(make_project: Make, tmp_path: Path) -> None:
    app = {"main.py": "from snakebridge_generated import statistics\nstatistics.median\n"}
    project = make_project(app, pyproject=STATISTICS.format(spec='"stdlib"'))
    assert project.sync().added == ["statistics.median"]
    changed = make_project(
        app, pyproject=STATISTICS.format(spec='{ version = "stdlib", generate = "all" }')
    )
    assert any("options changed" in p for p in changed.check())
    report = changed.sync()
    assert "statistics.mean" in report.added and "statistics.NormalDist" in report.added
    assert changed.check() == []
    excluded = make_project(
        app,
        pyproject=STATISTICS.format(
            spec='{ version = "stdlib", generate = "all", exclude = ["mean"] }'
        ),
    )
    excluded.sync()
    symbols = json.loads((tmp_path / ".snakebridge" / "manifest.json").read_text())
    assert "mean" not in symbols["libraries"]["statistics"]["symbols"]
    source = (tmp_path / "snakebridge_generated/statistics/__init__.py").read_text()
    assert "\ndef mean(" not in source and "\ndef median(" in source


def test_a_key_spelled_as_the_distribution_name_is_a_clear_error(
    make_project: Make, tmp_path: Path
) -> None:
    make_project(
        {"main.py": "from snakebridge_generated import more_itertools\nmore_itertools.take\n"},
        pyproject='[tool.snakebridge]\nscan = ["app"]\n'
        '[tool.snakebridge.libraries]\nmore-itertools = "10.5.0"\n',
    )
    result = cli(tmp_path, "sync")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "key 'more-itertools' must be the import name" in result.stderr
    assert "more_itertools = { package = 'more-itertools'" in result.stderr


def test_check_fails_when_a_facade_would_differ_from_the_dynamic_path(
    make_project: Make, tmp_path: Path
) -> None:
    project = make_project(
        {"main.py": "from snakebridge_generated import json\njson.dumps\n"},
        pyproject=STATISTICS.replace("statistics = {spec}", 'json = "stdlib"'),
    )
    project.sync()
    manifest_path = tmp_path / ".snakebridge" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["libraries"]["json"]["aliases"]["dumps.cache_info"] = "dumps"  # as an old sync did
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "app" / "main.py").write_text(
        "from snakebridge_generated import json\njson.dumps.cache_info()\n"
    )
    problems = project.check()
    assert any(
        "json.dumps.cache_info: the facade generates json.dumps as a function" in p
        for p in problems
    ), problems


def test_plan_shows_what_sync_would_do_and_writes_nothing(
    make_project: Make, tmp_path: Path
) -> None:
    project = make_project(
        {"main.py": "from snakebridge_generated import statistics\nstatistics.median\n"},
        pyproject=STATISTICS.format(spec='"stdlib"'),
    )
    project.sync()
    before = (tmp_path / ".snakebridge" / "manifest.json").read_bytes()
    (tmp_path / "app" / "main.py").write_text(
        "from snakebridge_generated import statistics\nstatistics.median\nstatistics.mode\n"
    )
    result = cli(tmp_path, "plan")
    assert result.returncode == 0, result.stderr
    assert "would add statistics.mode" in result.stdout
    assert "would write snakebridge_generated/statistics/__init__.py" in result.stdout
    assert (tmp_path / ".snakebridge" / "manifest.json").read_bytes() == before
    assert (
        "def mode(" not in (tmp_path / "snakebridge_generated/statistics/__init__.py").read_text()
    )
    project.sync()
    assert "nothing to do" in cli(tmp_path, "plan").stdout


def test_sync_rerenders_facades_of_another_generator_without_importing_the_library(
    make_project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(
        {"main.py": "from snakebridge_generated import statistics\nstatistics.median\n"},
        pyproject=STATISTICS.format(spec='"stdlib"'),
    )
    project.sync()
    facade = tmp_path / "snakebridge_generated" / "statistics" / "__init__.py"
    current = facade.read_text()
    # what an older generator wrote: other text, recorded as such in the manifest
    older = current.replace("def median(", "def median_as_it_was(")
    facade.write_text(older)
    path = tmp_path / ".snakebridge" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["libraries"]["statistics"]["generator"] = "an older generator"
    manifest["files"]["snakebridge_generated/statistics/__init__.py"] = content_hash(older)
    path.write_text(json.dumps(manifest))
    result = cli(tmp_path, "check")
    assert result.returncode == 1
    assert "problem(s); run `snakebridge sync`\n" in result.stderr
    assert "would re-render statistics" in cli(tmp_path, "plan").stdout
    assert facade.read_text() == older  # plan writes nothing

    def no_import(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("re-rendering must not introspect")

    monkeypatch.setattr(Project, "introspect", no_import)
    report = Project(project.settings).sync()
    assert report.rerendered == ["statistics"] and not report.added
    assert report.written == ["snakebridge_generated/statistics/__init__.py"]
    assert facade.read_text() == current
    assert json.loads(path.read_text())["libraries"]["statistics"]["generator"] == (
        generator_hash()
    )
    assert cli(tmp_path, "check").returncode == 0
    assert "facades are up to date" in cli(tmp_path, "sync").stdout
