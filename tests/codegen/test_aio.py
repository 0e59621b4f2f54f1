"""Async facades (``snakebridge_generated.aio``), ``name_stream`` twins of library symbols and
``__sb_remote__`` on facade functions: real projects, real workers, mypy --strict and pyright
strict over the generated tree."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge.codegen.manifest import CodegenError
from snakebridge.codegen.pipeline import Project
from snakebridge.codegen.scanner import scan_source

Make = Callable[..., Project]

PYPROJECT = """
[tool.snakebridge]
scan = ["app"]
helpers = ["myhelpers"]
[tool.snakebridge.libraries]
math = "stdlib"
json = "stdlib"
collections = "stdlib"
logging = "stdlib"
configparser = { version = "stdlib", generate = "all" }  # long exception re-exports
operator = "stdlib"
functools = "stdlib"
itertools = { version = "stdlib", streaming = ["count"] }
glob = { version = "stdlib", streaming = ["iglob"] }
"""
HELPERS = '''
def total(n: int) -> int:
    """Sum of range(n), in the worker."""
    return sum(range(n))


def countdown(n: int):
    while n > 0:
        yield n
        n -= 1
'''
APP = """
from snakebridge_generated import functools, glob, itertools, json, math, operator
from snakebridge_generated.aio import configparser, logging

json.loads, json.JSONDecodeError, math.sqrt, math.pi, operator.add, functools.reduce
configparser.ConfigParser, configparser.SectionProxy, logging.getLogger, logging.Logger
itertools.count, glob.iglob
from snakebridge_generated.aio.collections import Counter
from snakebridge_generated.aio.functools import partial
"""
REVEAL = """
from __future__ import annotations

from typing import reveal_type

from snakebridge_generated import logging as sync_logging
from snakebridge_generated.aio import configparser, itertools, logging, math, myhelpers


async def main() -> None:
    reveal_type(await math.sqrt(2.0))  # float
    logger = await logging.getLogger("x")
    reveal_type(logger)  # Logger (the async proxy class)
    reveal_type(await logger.getChild("y"))  # Logger
    reveal_type(await logger.isEnabledFor(10))  # bool
    parser = await configparser.ConfigParser.new()
    reveal_type(parser)  # ConfigParser
    raw = await configparser.RawConfigParser.new()
    section = await configparser.SectionProxy.new(raw, "main")
    reveal_type(await section.parser)  # RawConfigParser
    reveal_type(itertools.count_stream(1))  # AsyncStream
    reveal_type(await myhelpers.total(3))  # int
    async for item in myhelpers.countdown_stream(3):
        print(item)
    alogger = logging.Logger.of(sync_logging.getLogger("z"))
    reveal_type(alogger)  # Logger (the async proxy class)
    reveal_type(sync_logging.Logger.of(alogger))  # Logger (the sync facade class)
"""
MYPY_REVEALED = [
    "float",
    "snakebridge_generated.aio.logging.Logger",
    "snakebridge_generated.aio.logging.Logger",
    "bool",
    "snakebridge_generated.aio.configparser.ConfigParser",
    "snakebridge_generated.aio.configparser.RawConfigParser",
    "snakebridge.runtime.streams.AsyncStream",
    "int",
    "snakebridge_generated.aio.logging.Logger",
    "snakebridge_generated.logging.Logger",
]
PYRIGHT_REVEALED = [
    "float",
    "Logger",
    "Logger",
    "bool",
    "ConfigParser",
    "RawConfigParser",
    "AsyncStream",
    "int",
    "Logger",
    "Logger",
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), *sys.path])}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture
def project(
    make_project: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    import snakebridge.errors
    import snakebridge.facade

    for module, registry in [
        (snakebridge.errors, "_REGISTERED"),  # this project's exception classes stay its own
        (snakebridge.facade, "_ASYNC_CLASSES"),
        (snakebridge.facade, "_ASYNC_HOMES"),
    ]:
        monkeypatch.setattr(module, registry, dict(getattr(module, registry)))
    (tmp_path / "myhelpers.py").write_text(HELPERS)
    project = make_project({"main.py": APP}, pyproject=PYPROJECT)
    report = project.sync()
    assert not report.errors
    from snakebridge.codegen.helper_facades import write_helper_facades

    write_helper_facades(project.settings)
    sys.path.insert(0, str(tmp_path))
    yield project
    sys.path.remove(str(tmp_path))


def test_every_module_has_an_async_twin_with_the_same_signatures(project: Project) -> None:
    from snakebridge_generated import json as sync_json
    from snakebridge_generated import math as sync_math
    from snakebridge_generated.aio import json, math

    for sync_function, async_function in [
        (sync_math.sqrt, math.sqrt),
        (sync_json.loads, json.loads),
    ]:
        assert inspect.iscoroutinefunction(async_function)
        assert not inspect.iscoroutinefunction(sync_function)
        assert inspect.signature(async_function) == inspect.signature(sync_function)
        assert async_function.__doc__ == sync_function.__doc__
    assert json.JSONDecodeError is sync_json.JSONDecodeError  # one exception class for both
    assert set(math.__all__) == set(sync_math.__all__)


def test_async_functions_await_the_async_call_path(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakebridge_generated.aio import json, math

    import snakebridge.facade as facade

    seen: list[tuple[str, str]] = []
    real = facade.acall_function

    async def spy(lib: str, symbol: str, *rest: Any, **options: Any) -> Any:
        seen.append((lib, symbol))
        return await real(lib, symbol, *rest, **options)

    monkeypatch.setattr(facade, "acall_function", spy)

    async def main() -> None:
        assert await math.sqrt(16.0) == 4.0
        roots = await asyncio.gather(*(math.sqrt(float(i * i)) for i in range(20)))
        assert roots == [float(i) for i in range(20)]
        with pytest.raises(json.JSONDecodeError):
            await json.loads("{")
        assert await json.loads('{"a": [1]}') == {"a": [1]}

    asyncio.run(main())
    assert seen[0] == ("math", "sqrt") and len(seen) == 23


def test_of_turns_a_sync_instance_into_its_async_proxy_and_back(project: Project) -> None:
    from snakebridge_generated import logging as sync_logging
    from snakebridge_generated.aio import logging

    import snakebridge.facade

    logger = sync_logging.getLogger("sb.of")
    assert type(logger) is sync_logging.Logger

    async def main() -> sync_logging.Logger:
        alogger = logging.Logger.of(logger)  # no round trip
        assert type(alogger) is logging.Logger and alogger is not logger
        assert await alogger.getEffectiveLevel() == logger.getEffectiveLevel()
        await alogger.setLevel(17)  # one remote object behind both handles
        assert logger.getEffectiveLevel() == 17
        assert type(logger) is sync_logging.Logger  # the sync handle stays sync
        back = sync_logging.Logger.of(alogger)
        assert type(back) is sync_logging.Logger and back.level == 17
        del alogger
        owned = sync_logging.getLogger("sb.of.owned")
        view = logging.Logger.of(owned)
        del owned  # the view keeps the owning handle, so the remote object, alive
        gc.collect()
        assert await view.getEffectiveLevel() == 17  # its parent sb.of's level, remotely
        return back

    back = asyncio.run(main())
    assert back.getEffectiveLevel() == 17 and logger.name == "sb.of"
    del back
    gc.collect()
    assert snakebridge.facade._BORROWED == {}  # views gone: only owners release
    with pytest.raises(TypeError, match=r"Logger.of\(\) takes a Ref to a remote logging.Logger"):
        sync_logging.Logger.of(42)  # type: ignore[arg-type]


def test_async_proxies_have_awaited_methods_and_properties(project: Project) -> None:
    from collections import Counter as CollectionsCounter

    from snakebridge_generated import logging as sync_logging
    from snakebridge_generated.aio import collections, configparser, logging

    async def main() -> None:
        logger = await logging.getLogger("sb.aio")
        assert type(logger) is logging.Logger
        assert isinstance(logger, sync_logging.Logger) and isinstance(logger, snakebridge.Ref)
        child = await logger.getChild("x")  # a result typed Logger arrives as the async proxy
        assert type(child) is logging.Logger
        assert await snakebridge.aattr(child, "name") == "sb.aio.x"
        assert await child.isEnabledFor(50) is True
        parser = await configparser.ConfigParser.new()
        assert type(parser) is configparser.ConfigParser
        await parser.read_string("[main]\nkey = 1\n")
        assert await parser.sections() == ["main"]
        assert await parser.get("main", "key") == "1"
        section = await configparser.SectionProxy.new(parser, "main")
        assert await section.name == "main"  # a property is an awaitable
        assert type(await section.parser) is configparser.ConfigParser  # by its remote class
        words = await collections.Counter.new(["a", "b", "a"])  # travels by value
        assert type(words) is CollectionsCounter and words.most_common(1) == [("a", 2)]
        assert isinstance(words, collections.Counter) and not hasattr(
            collections.Counter, "most_common"
        )
        with pytest.raises(TypeError, match=r"await Logger\.new\(\.\.\.\)"):
            logging.Logger("direct")  # type: ignore[arg-type]

    asyncio.run(main())


def test_refs_inside_results_become_async_proxies_in_place(project: Project) -> None:
    from snakebridge_generated import logging as sync_logging
    from snakebridge_generated.aio import logging

    import snakebridge.facade as facade

    first, second = sync_logging.getLogger("a"), sync_logging.getLogger("b")
    third = sync_logging.getLogger("c")
    value = [first, (second, 1.5), {"k": third}, "text"]
    assert facade.as_async(value) is value
    assert [type(first), type(second), type(third)] == [logging.Logger] * 3
    assert value[3] == "text"
    assert isinstance(sync_logging.getLogger("d"), logging.Logger)  # both ways


def test_callable_objects_are_awaited_when_called(project: Project) -> None:
    from snakebridge_generated import operator
    from snakebridge_generated.aio import functools

    import snakebridge.facade as facade

    async def main() -> tuple[Any, Any, Any]:
        add_one = facade.as_async(
            await snakebridge.acall("functools", "partial", [operator.add, 1])
        )
        return type(add_one), await add_one(2), await add_one.args

    assert asyncio.run(main()) == (functools.partial, 3, (1,))


def test_the_factory_steps_aside_for_a_member_named_new() -> None:
    from snakebridge.codegen.aio import render_async_class
    from snakebridge.codegen.hints import HintContext

    member = {"name": "new", "kind": "method", "signature": {"params": [], "returns": "int"}}
    info = {"qualname": "Thing", "remote_type": "lib.Thing", "members": [member]}
    text = "\n".join(render_async_class("Thing", info, HintContext(module="g.aio.lib", index={})))
    assert "    async def new_(cls) -> _t.Self:" in text
    assert "    async def new(self) -> int:" in text


def test_facade_functions_carry_sb_remote_and_travel_by_name(project: Project) -> None:
    from snakebridge_generated import functools, math, operator
    from snakebridge_generated.aio import math as async_math

    from snakebridge.runtime.hostobjects import importable_name

    assert math.sqrt.__sb_remote__ == ("math", "sqrt")  # type: ignore[attr-defined]
    assert async_math.sqrt.__sb_remote__ == ("math", "sqrt")  # type: ignore[attr-defined]
    assert importable_name(operator.add) == ("operator", "add")
    assert functools.reduce(operator.add, [1, 2, 3]) == 6  # the worker's own operator.add
    with snakebridge.executor() as ex:
        assert ex._target(async_math.sqrt) == ("math", "sqrt")
        assert ex.submit(math.sqrt, 9.0).result() == 3.0


def test_stream_twins_of_symbols_listed_in_streaming(project: Project, tmp_path: Path) -> None:
    from snakebridge_generated import glob, itertools
    from snakebridge_generated.aio import glob as async_glob
    from snakebridge_generated.aio import itertools as async_itertools

    for name in ("a.txt", "b.txt", "c.log"):
        (tmp_path / name).write_text("")
    pattern = str(tmp_path / "*.txt")
    taken = []
    with itertools.count_stream(5, 2) as items:  # endless: leaving the block cancels it
        for item in items:
            taken.append(item)
            if len(taken) == 3:
                break
    assert taken == [5, 7, 9]
    assert sorted(glob.iglob_stream(pattern)) == [str(tmp_path / n) for n in ("a.txt", "b.txt")]
    assert "count_stream" in itertools.__all__ and "iglob_stream" in glob.__all__

    async def main() -> tuple[list[Any], list[Any]]:
        counted = []
        async for item in async_itertools.count_stream(1):
            counted.append(item)
            if len(counted) == 4:
                break
        found = [path async for path in async_glob.iglob_stream(pattern)]
        return counted, found

    counted, found = asyncio.run(main())
    assert counted == [1, 2, 3, 4]
    assert sorted(found) == [str(tmp_path / n) for n in ("a.txt", "b.txt")]


def test_helpers_get_async_facades_with_stream_twins(project: Project) -> None:
    from snakebridge_generated.aio import myhelpers

    from snakebridge.codegen.helper_facades import stale_helpers

    assert stale_helpers(project.settings) == []

    async def main() -> tuple[int, list[int]]:
        return await myhelpers.total(5), [n async for n in myhelpers.countdown_stream(3)]

    assert asyncio.run(main()) == (10, [3, 2, 1])
    path = project.settings.root / "snakebridge_generated" / "aio" / "myhelpers" / "__init__.py"
    path.unlink()
    (problem,) = stale_helpers(project.settings)
    assert "no async facade for helper myhelpers" in problem


def test_check_flags_a_missing_or_edited_async_facade(project: Project) -> None:
    assert project.check() == []
    path = project.settings.root / "snakebridge_generated" / "aio" / "math" / "__init__.py"
    text = path.read_text()
    path.write_text(text.replace("await", "await  "))
    assert any(
        p.startswith("snakebridge_generated/aio/math/__init__.py: differs") for p in project.check()
    )
    path.unlink()
    assert "snakebridge_generated/aio/math/__init__.py: generated file is missing; run " in (
        " ".join(project.check())
    )
    project.regen(clean=False)
    assert path.read_text() == text and project.check() == []


def test_generated_tree_is_deterministic_and_ruff_clean(project: Project) -> None:
    root = project.settings.root / "snakebridge_generated"

    def tree() -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.py"))}

    before = tree()
    assert "aio/__init__.py" in before and "aio/configparser/__init__.py" in before
    project.regen(clean=True)
    after = tree()
    after.pop("aio/myhelpers/__init__.py", None)  # helper facades: written by sync, not regen
    after.pop("myhelpers/__init__.py", None)
    before.pop("aio/myhelpers/__init__.py")
    before.pop("myhelpers/__init__.py")
    assert after == before
    formatted = run(
        sys.executable,
        "-m",
        "ruff",
        "format",
        "--isolated",
        "--check",
        str(root),
        cwd=project.settings.root,
    )
    assert formatted.returncode == 0, formatted.stdout
    checked = run(
        sys.executable,
        "-m",
        "ruff",
        "check",
        "--isolated",
        "--select",
        "E,F,W,I,B,UP,RUF",
        str(root),
        cwd=project.settings.root,
    )
    assert checked.returncode == 0, checked.stdout


def test_async_facades_pass_mypy_strict_and_pyright_strict(project: Project) -> None:
    root = project.settings.root
    (root / "app" / "reveal_aio.py").write_text(REVEAL)
    mypy = run(sys.executable, "-m", "mypy", "--strict", "snakebridge_generated", "app", cwd=root)
    assert "error" not in mypy.stdout, mypy.stdout[-4000:]
    revealed = re.findall(r'Revealed type is "([\w.]+)"', mypy.stdout)
    assert revealed == MYPY_REVEALED, mypy.stdout[-2000:]
    config = {
        "typeCheckingMode": "strict",
        "include": ["app/reveal_aio.py", "snakebridge_generated"],
        "extraPaths": [str(Path(snakebridge.__file__).parents[1])],
    }
    (root / "pyrightconfig.json").write_text(json.dumps(config))
    report = json.loads(run(sys.executable, "-m", "pyright", "--outputjson", cwd=root).stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors[:10]
    revealed = [
        re.sub(r'.* is "(\w+)"$', r"\1", d["message"])
        for d in report["generalDiagnostics"]
        if d["severity"] == "information" and "reveal_aio" in d["file"]
    ]
    assert revealed == PYRIGHT_REVEALED


def test_uses_of_the_async_facades_are_uses_of_the_library() -> None:
    source = """
import snakebridge_generated.aio
import snakebridge_generated.aio.os as aos
from snakebridge_generated import aio
from snakebridge_generated.aio import math
from snakebridge_generated.aio.json import loads
from snakebridge_generated.aio.statistics import *

math.sqrt
aio.pathlib.Path
aos.path.join
snakebridge_generated.aio.glob.iglob
loads
"""
    uses = {(u.library, u.symbol) for u in scan_source(source, "app.py", "snakebridge_generated")}
    assert uses == {
        ("math", "sqrt"),
        ("pathlib", "Path"),
        ("os", "path.join"),
        ("glob", "iglob"),
        ("json", "loads"),
        ("statistics", "*"),
    }


def test_a_library_may_not_be_named_aio(make_project: Make) -> None:
    project = make_project(
        {}, pyproject='[tool.snakebridge]\n[tool.snakebridge.libraries]\naio = "stdlib"\n'
    )
    with pytest.raises(CodegenError, match="cannot be named 'aio'"):
        project.library("aio")
