"""Helpers shipped as source, preload and init per worker: real workers, real config files."""

from __future__ import annotations

import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge.runtime import telemetry
from snakebridge.runtime.client import runtime
from snakebridge.runtime.helpers import NotInWorker, worker_state

HELPERS = '''
import math
import sys
import time

import snakebridge


def setup():
    return {"model": "loaded", "pid_at_init": __import__("os").getpid()}


def total_sqrt(n: int) -> float:
    """A loop of many small library calls: one round trip from the host."""
    return sum(math.sqrt(i) for i in range(n))


def state():
    return snakebridge.worker_state()


def preloaded_before_call():
    slow = sys.modules.get("myproj.slow")
    return slow is not None and slow.IMPORTED_AT < time.monotonic()


def fail():
    raise KeyError("missing")


def countdown(n: int, *, step: int = 1):
    while n > 0:
        yield n
        n -= step
'''

SLOW = """
import time

time.sleep(0.5)
IMPORTED_AT = time.monotonic()
"""

CONFIG = """
helpers = ["myproj.sb_helpers", "myproj.slow"]
[libraries]
math = "stdlib"
signal = "stdlib"
[pools.default]
size = 2
preload = ["myproj.slow"]
init = "myproj.sb_helpers:setup"
"""


def write_project(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def events() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def handler(name: str, phase: str, meta: dict[str, Any]) -> None:
        seen.append((name, phase, meta))

    telemetry.attach(handler)
    yield seen
    telemetry.detach(handler)


@pytest.fixture
def project(tmp_path: Path, configured: Callable[[str], Path]) -> Path:
    write_project(
        tmp_path,
        {"myproj/__init__.py": "", "myproj/sb_helpers.py": HELPERS, "myproj/slow.py": SLOW},
    )
    configured(CONFIG)
    return tmp_path


def worker_starts(events: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [meta for name, phase, meta in events if (name, phase) == ("runtime.worker", "start")]


def calls_served() -> int:
    return sum(w["calls"] for pool in snakebridge.status() for w in pool["workers"])


def test_a_helper_runs_a_loop_of_library_calls_in_one_round_trip(project: Path) -> None:
    assert snakebridge.call("math", "sqrt", [4.0]) == 2.0
    before = calls_served()
    assert snakebridge.call("myproj.sb_helpers", "total_sqrt", [1000]) == pytest.approx(
        sum(i**0.5 for i in range(1000))
    )
    assert calls_served() - before == 1


def test_init_state_reaches_helpers_and_not_the_host(project: Path) -> None:
    state = snakebridge.call("myproj.sb_helpers", "state")
    assert state["model"] == "loaded"
    assert state["pid_at_init"] in {w.pid for w in runtime().pools["default"].workers}
    with pytest.raises(NotInWorker, match="only inside a helper"):
        worker_state()


def test_remote_errors_of_helpers_keep_their_builtin(project: Path) -> None:
    with pytest.raises(KeyError, match="missing"):
        snakebridge.call("myproj.sb_helpers", "fail")


def test_preload_runs_once_per_worker_start_never_on_a_call(
    project: Path, events: list[tuple[str, str, dict[str, Any]]]
) -> None:
    assert snakebridge.call("myproj.sb_helpers", "preloaded_before_call") is True
    starts = worker_starts(events)
    assert len(starts) == 2
    assert all(meta["startup"]["preload"]["myproj.slow"] >= 0.5 for meta in starts)
    assert all("init" in meta["startup"] for meta in starts)
    status = snakebridge.status()[0]["workers"]
    assert all("myproj.slow" in worker["startup"]["preload"] for worker in status)

    # a replaced worker preloads again, before it takes a call
    with pytest.raises(snakebridge.WorkerCrashed):
        snakebridge.call("signal", "raise_signal", [9])
    assert snakebridge.call("myproj.sb_helpers", "preloaded_before_call") is True
    deadline = time.monotonic() + 60  # the replacement starts in the background
    while len(worker_starts(events)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    starts = worker_starts(events)
    assert len(starts) == 3
    assert starts[-1]["startup"]["preload"]["myproj.slow"] >= 0.5
    for _ in range(4):
        assert snakebridge.call("myproj.sb_helpers", "preloaded_before_call") is True


def test_a_helper_that_fails_to_import_names_its_file_and_line(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    write_project(
        tmp_path,
        {
            "myproj/__init__.py": "",
            "myproj/good.py": "def ping():\n    return 'pong'\n",
            "myproj/bad.py": "import math\n\nVALUE = math.sqrt(-1)\n",
        },
    )
    configured('helpers = ["myproj.good", "myproj.bad"]\n[libraries]\nmath = "stdlib"\n')
    assert snakebridge.call("myproj.good", "ping") == "pong"
    with pytest.raises(ImportError) as caught:
        snakebridge.call("myproj.bad", "anything")
    message = str(caught.value)
    assert f"{tmp_path / 'myproj' / 'bad.py'}, line 3" in message
    assert "ValueError: math domain error" in message
    startup = snakebridge.status()[0]["workers"][0]["startup"]
    assert "myproj.bad" in startup["helper_errors"]


def test_a_syntax_error_in_a_helper_names_its_line(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    write_project(tmp_path, {"broken_helper.py": "def f(:\n    pass\n"})
    configured('helpers = ["broken_helper"]\n[libraries]\nmath = "stdlib"\n')
    with pytest.raises(ImportError, match=r"broken_helper\.py, line 1: SyntaxError"):
        snakebridge.call("broken_helper", "f")


def test_a_failing_init_hook_is_a_start_error_naming_it(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    write_project(tmp_path, {"hooks.py": "def setup():\n    raise RuntimeError('no GPU')\n"})
    configured(
        'helpers = ["hooks"]\n[libraries]\nmath = "stdlib"\n'
        '[pools.default]\nsize = 1\ninit = "hooks:setup"\n'
    )
    with pytest.raises(snakebridge.WorkerStartError, match=r"init hook 'hooks:setup' failed"):
        snakebridge.call("math", "sqrt", [1.0])


def test_missing_helpers_and_bad_init_are_config_errors(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    configured('helpers = ["nowhere.to_be_found"]\n[libraries]\nmath = "stdlib"\n')
    with pytest.raises(snakebridge.ConfigError, match=r"helper module 'nowhere\.to_be_found'"):
        snakebridge.call("math", "sqrt", [1.0])
    configured('[libraries]\nmath = "stdlib"\n[pools.default]\ninit = "no colon"\n')
    with pytest.raises(snakebridge.ConfigError, match="module:function"):
        snakebridge.call("math", "sqrt", [1.0])
    configured('helpers = ["not a module"]\n')
    with pytest.raises(snakebridge.ConfigError, match="helpers"):
        snakebridge.call("math", "sqrt", [1.0])


def test_helper_calls_go_to_the_pool_whose_init_they_provide(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    write_project(
        tmp_path, {"gpu_helpers.py": "import os\n\ndef setup():\n    return os.getpid()\n"}
    )
    configured(
        'helpers = ["gpu_helpers"]\n[libraries]\nmath = "stdlib"\n'
        '[pools.gpu]\nsize = 1\ninit = "gpu_helpers:setup"\n'
    )
    pid = snakebridge.call("gpu_helpers", "setup")
    assert [w.pid for w in runtime().pools["gpu"].workers] == [pid]


def test_sync_writes_typed_helper_facades_and_check_flags_edits(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakebridge.codegen.helper_facades import stale_helpers, write_helper_facades
    from snakebridge.config import load_settings

    settings = load_settings()
    assert "no facade for helper myproj.sb_helpers" in " ".join(stale_helpers(settings))
    written = write_helper_facades(settings)
    assert "snakebridge_generated/myproj/sb_helpers/__init__.py" in written
    assert write_helper_facades(settings) == []  # unchanged: nothing rewritten
    assert stale_helpers(settings) == []
    facade = (project / "snakebridge_generated/myproj/sb_helpers/__init__.py").read_text()
    assert "def total_sqrt(n: int) -> float:" in facade
    assert "A loop of many small library calls" in facade
    assert "def countdown_stream(n: int, *, step: int = 1) -> _sb_streams.Stream:" in facade

    monkeypatch.syspath_prepend(str(project))
    import importlib

    module = importlib.import_module("snakebridge_generated.myproj.sb_helpers")
    try:
        assert module.total_sqrt(4) == pytest.approx(1 + 2**0.5 + 3**0.5)
        assert list(module.countdown_stream(6, step=2)) == [6, 4, 2]  # the generator's twin
    finally:
        for name in [n for n in sys.modules if n.startswith("snakebridge_generated")]:
            del sys.modules[name]

    helper = project / "myproj" / "sb_helpers.py"
    helper.write_text(helper.read_text() + "\n\ndef added() -> int:\n    return 1\n")
    (problem,) = stale_helpers(settings)
    assert "changed since its facade was generated" in problem
    write_helper_facades(settings)
    assert stale_helpers(settings) == []


def test_the_sync_and_check_commands_cover_helpers(project: Path) -> None:
    import subprocess

    (project / "app.py").write_text(
        "from snakebridge_generated.myproj import sb_helpers\n\nsb_helpers.total_sqrt(3)\n"
    )

    def run(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["snakebridge", command], cwd=project, capture_output=True, text=True, timeout=120
        )

    synced = run("sync")
    assert synced.returncode == 0, synced.stderr
    assert "snakebridge_generated/myproj/sb_helpers/__init__.py" in synced.stdout
    assert run("check").returncode == 0
    helper = project / "myproj" / "sb_helpers.py"
    helper.write_text(helper.read_text() + "\n# edited\n")
    checked = run("check")
    assert checked.returncode == 1
    assert "helper myproj.sb_helpers" in checked.stdout
    assert "changed since its facade was generated" in checked.stdout


def test_status_command_shows_the_preload_time(project: Path) -> None:
    import json
    import os
    import subprocess

    assert snakebridge.call("myproj.sb_helpers", "preloaded_before_call") is True

    def ours() -> dict[str, Any] | None:
        done = subprocess.run(
            ["snakebridge", "status", "--json"], capture_output=True, text=True, timeout=60
        )
        hosts = [h for h in json.loads(done.stdout or "[]") if h["pid"] == os.getpid()]
        return hosts[0] if hosts else None

    deadline = time.monotonic() + 60  # the host publishes its status about once a second
    while ours() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    host = ours()
    assert host is not None
    (worker, *_) = host["pools"][0]["workers"]
    assert worker["startup"]["preload"]["myproj.slow"] >= 0.5
    text = subprocess.run(["snakebridge", "status"], capture_output=True, text=True, timeout=60)
    assert f"worker {worker['pid']}: " in text.stdout
    assert "started in" in text.stdout
