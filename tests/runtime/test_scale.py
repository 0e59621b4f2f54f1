"""Scaling (#15): routing by pool, affinity modes, pinned sessions, autoscaling.

Pool logic runs over the in-thread fake transport; routing and scaling once with real workers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge import ConfigError, WorkerBusy, WorkerCrashed
from snakebridge.config import PoolSpec
from snakebridge.runtime.calls import Call, prepare
from snakebridge.runtime.client import ClientSession, runtime
from snakebridge.runtime.lease import Worker
from snakebridge.runtime.pool import Pool
from snakebridge_worker import protocol as p

from .fakes import FakeTransport


def fake_pool(**spec: Any) -> Pool:
    pool = Pool("fake", PoolSpec(**{"size": 2, **spec}), "fake", {}, None, FakeTransport)
    pool.start()
    return pool


def fake_call(symbol: str, *args: Any, session: Any = None, affinity: str | None = None) -> Call:
    return prepare(
        None, "fake", symbol, None, p.OP_CALL, list(args), None, 5.0, False, session, affinity
    )


@pytest.fixture
def pool() -> Iterator[Pool]:
    FakeTransport.bad_pong = FakeTransport.fail_start = False
    made = fake_pool()
    yield made
    made.close(0.5)


def served(worker: Worker) -> int:
    transport = worker.transport
    assert isinstance(transport, FakeTransport)
    return transport.served


def hold(pool: Pool, worker: Worker) -> Worker:
    """Lease ``worker`` so that no call can take it or be pipelined onto it."""
    held = pool.leaser.acquire(worker, hold=True)
    assert held is worker
    return held


def unhold(pool: Pool, worker: Worker) -> None:
    worker.streaming = False
    pool.leaser.release(worker)


# -- pinned sessions and affinity (fake transport) -----------------------------------------------
def test_a_pinned_session_sends_every_call_to_one_worker(pool: Pool) -> None:
    session = ClientSession(pin=True)
    for n in range(6):
        assert pool.run(fake_call("echo", n, session=session)) == n
    pinned = session.pins["fake"]
    assert served(pinned) == 6
    assert [served(w) for w in pool.workers if w is not pinned] == [0]


def test_strict_fail_fast_raises_at_once_when_the_worker_is_busy(pool: Pool) -> None:
    session = ClientSession(pin=True)
    pool.run(fake_call("echo", 0, session=session))
    pinned = session.pins["fake"]
    hold(pool, pinned)
    try:
        with pytest.raises(WorkerBusy, match="strict_fail_fast"):
            pool.run(fake_call("echo", 1, session=session, affinity="strict_fail_fast"))
    finally:
        unhold(pool, pinned)
    assert pool.run(fake_call("echo", 2, session=session, affinity="strict_fail_fast")) == 2
    assert served(pinned) == 2


def test_hint_takes_another_worker_while_the_pinned_one_is_busy(pool: Pool) -> None:
    session = ClientSession(pin=True)
    pool.run(fake_call("echo", 0, session=session))
    pinned = session.pins["fake"]
    hold(pool, pinned)
    try:
        assert pool.run(fake_call("echo", 1, session=session, affinity="hint")) == 1
    finally:
        unhold(pool, pinned)
    other = next(w for w in pool.workers if w is not pinned)
    assert served(other) == 1
    assert session.pins["fake"] is pinned  # the pin stays where it was


def test_strict_queue_waits_for_the_pinned_worker(pool: Pool) -> None:
    session = ClientSession(pin=True)
    pool.run(fake_call("echo", 0, session=session))
    pinned = session.pins["fake"]
    hold(pool, pinned)
    answers: list[Any] = []
    waiter = threading.Thread(
        target=lambda: answers.append(pool.run(fake_call("echo", 7, session=session)))
    )
    waiter.start()
    while pool.leaser.queued == 0:  # it queues for the pinned worker, not for the idle one
        threading.Event().wait(0.005)
    assert answers == []
    unhold(pool, pinned)
    waiter.join(10)
    assert answers == [7]
    assert served(pinned) == 2


def test_a_pinned_session_whose_worker_died_pins_a_new_one(pool: Pool) -> None:
    session = ClientSession(pin=True)
    pool.run(fake_call("echo", 0, session=session))
    first = session.pins["fake"]
    first.transport.kill()
    pool.retire(first, reason="crash")
    assert pool.run(fake_call("echo", 1, session=session)) == 1
    assert session.pins["fake"] is not first and session.pins["fake"].alive


def test_unknown_affinity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="strict_fail_fast"):
        fake_call("echo", 1, affinity="sticky")
    with pytest.raises(ConfigError, match="affinity"), snakebridge.options(affinity="loose"):
        pass


# -- routing with real workers ---------------------------------------------------------------------
ROUTED = """
[tool.snakebridge.libraries]
operator = "stdlib"
os = "stdlib"

[tool.snakebridge.pools.gpu]
size = 1
"""


def test_pool_per_call_and_per_block(configured: Callable[[str], Path]) -> None:
    configured(ROUTED)
    assert snakebridge.call("operator", "add", [1, 2]) == 3
    assert snakebridge.call("operator", "add", [2, 2], pool="gpu") == 4
    gpu = runtime().pools["gpu"]
    assert sum(w.calls for w in gpu.workers) == 1
    with snakebridge.options(pool="gpu"):
        assert snakebridge.call("operator", "mul", [3, 3]) == 9
    assert sum(w.calls for w in gpu.workers) == 2
    names = {entry["name"] for entry in snakebridge.status()}
    assert names == {"default", "gpu"}


def test_pool_that_is_not_configured_is_a_config_error(configured: Callable[[str], Path]) -> None:
    configured(ROUTED)
    with pytest.raises(ConfigError, match=r"pool='cpu' is not a configured pool"):
        snakebridge.call("operator", "add", [1, 2], pool="cpu")


def test_a_real_pinned_session_keeps_its_worker(configured: Callable[[str], Path]) -> None:
    configured(ROUTED.replace("size = 1", "size = 2"))
    with snakebridge.session(pin=True) as session:
        pids = {session.call("os", "getpid", pool="gpu") for _ in range(4)}
    assert len(pids) == 1


# -- autoscaling ---------------------------------------------------------------------------------
def until(condition: Callable[[], bool], pool: Pool | None = None) -> None:
    """Wait (running housekeeping when given a pool) until ``condition``; a 30 s safety bound."""
    done = threading.Event()
    for _ in range(3000):
        if condition():
            return
        if pool is not None:
            pool.housekeep()
        done.wait(0.01)
    raise AssertionError("the condition never held")


def test_a_pool_grows_while_calls_queue_and_shrinks_when_idle() -> None:
    FakeTransport.fail_start = False
    pool = fake_pool(size=1, min_size=1, max_size=3, idle_timeout=0.05)
    try:
        assert pool.status()["size"] == 1
        assert (pool.status()["min"], pool.status()["max"]) == (1, 3)
        first = pool.workers[0]
        hold(pool, first)
        answers: list[Any] = []
        threads = [
            threading.Thread(target=lambda n=n: answers.append(pool.run(fake_call("echo", n))))
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(answers) == [0, 1, 2, 3]  # served by workers started for them
        assert 2 <= len(pool.workers) <= 3
        unhold(pool, first)
        until(lambda: len(pool.workers) == 1, pool)
        assert pool.status()["size"] == 1
        assert pool.run(fake_call("echo", 9)) == 9
    finally:
        pool.close(0.5)


def test_growth_from_many_threads_at_once_never_passes_max_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FakeTransport.fail_start = False
    pool = fake_pool(size=1, min_size=1, max_size=3)
    gate = threading.Event()
    try:
        monkeypatch.setattr(type(pool.leaser), "queued", property(lambda self: 8))
        launch = pool.launch
        monkeypatch.setattr(pool, "launch", lambda: (gate.wait(30), launch())[1])
        barrier = threading.Barrier(8)

        def grow() -> None:
            barrier.wait()
            pool.supervisor.grow()

        threads = [threading.Thread(target=grow) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(pool.workers) + pool.supervisor.starting == 3  # 8 calls queued, max 3
        gate.set()
        until(lambda: pool.supervisor.starting == 0)
        assert len(pool.workers) == 3
    finally:
        gate.set()
        pool.close(0.5)


def test_a_pool_never_shrinks_below_min_size_nor_a_worker_holding_refs() -> None:
    pool = fake_pool(size=2, min_size=2, max_size=4, idle_timeout=0.01)
    try:
        for _ in range(5):
            pool.housekeep()
        assert len(pool.workers) == 2
    finally:
        pool.close(0.5)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("min_size = 3\nmax_size = 2", "max_size \\(2\\) is below min_size \\(3\\)"),
        ("max_size = 0", "max_size must be at least 1"),
        ("idle_timeout = -1", "idle_timeout must be above 0"),
        ('idle_timeout = "soon"', "not a duration"),
    ],
)
def test_scaling_keys_are_validated(
    configured: Callable[[str], Path], text: str, problem: str
) -> None:
    from snakebridge.config import load_settings

    path = configured(f"[tool.snakebridge.pools.default]\n{text}\n")
    with pytest.raises(ConfigError, match=problem):
        load_settings(path.parent)


def test_real_workers_scale_up_under_queued_calls_and_back(
    configured: Callable[[str], Path],
) -> None:
    configured(
        '[tool.snakebridge.libraries]\noperator = "stdlib"\n'
        "[tool.snakebridge.pools.default]\nsize = 1\nmin_size = 1\nmax_size = 2\n"
        "idle_timeout = 0.2\n"
    )
    snakebridge.call("operator", "pos", [0])
    pool = runtime().pools["default"]
    first = pool.workers[0]
    hold(pool, first)
    try:
        assert snakebridge.call("operator", "add", [1, 2]) == 3  # queued, then a new worker
        assert len(pool.workers) == 2
    finally:
        unhold(pool, first)
    until(lambda: snakebridge.status()[0]["size"] == 1)
    assert snakebridge.status()[0]["min"] == 1 and snakebridge.status()[0]["max"] == 2


# -- thread profile ------------------------------------------------------------------------------
class HangingFake(FakeTransport):
    """``hang(x)`` never answers on the first worker (a call still running); later ones do."""

    hung = 0

    def _handle(self, message: list[Any]) -> None:
        if message[0] == p.CALL and message[5] == "hang":
            self.served += 1
            if HangingFake.hung < 2:
                HangingFake.hung += 1
                return
            message = [*message[:5], "echo", *message[6:]]
        super()._handle(message)


def test_a_thread_worker_crash_fails_every_started_call_and_idempotent_ones_retry() -> None:
    HangingFake.hung = 0
    spec = PoolSpec(size=1, profile="thread", threads=4)
    pool = Pool("fake", spec, "fake", {}, None, HangingFake)
    pool.start()
    try:
        worker = pool.workers[0]
        assert worker.capacity == 4 and worker.line.concurrent
        outcomes: dict[str, Any] = {}

        def run(name: str, idempotent: bool) -> None:
            call = prepare(
                None, "fake", "hang", None, p.OP_CALL, [name], None, 30, idempotent, None
            )
            try:
                outcomes[name] = pool.run(call)
            except Exception as exc:
                outcomes[name] = exc

        threads = [
            threading.Thread(target=run, args=("idem", True)),
            threading.Thread(target=run, args=("plain", False)),
        ]
        for thread in threads:
            thread.start()
        until(lambda: served(worker) == 2)  # both running at once on the one worker
        assert worker.leases == 2
        with pytest.raises(WorkerCrashed):
            pool.run(fake_call("crash"))
        for thread in threads:
            thread.join(30)
        assert outcomes["idem"] == "idem"  # retried on the replacement
        assert isinstance(outcomes["plain"], WorkerCrashed)
    finally:
        pool.close(0.5)


THREADED = """
[tool.snakebridge.libraries]
threading = "stdlib"
os = { version = "stdlib", allow_private = true }

[tool.snakebridge.pools.default]
size = 1
profile = "thread"
threads = 4
"""


def test_a_thread_worker_runs_calls_at_once(configured: Callable[[str], Path]) -> None:
    configured(THREADED)
    barrier = snakebridge.call("threading", "Barrier", [4], {"timeout": 60})
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            snakebridge.method(barrier, "wait")  # returns only when all four wait at once
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert errors == []
    assert snakebridge.attr(barrier, "broken") is False
    assert len(runtime().pools["default"].workers) == 1


def test_refs_stay_consistent_under_contention(configured: Callable[[str], Path]) -> None:
    configured(THREADED)
    made: list[Any] = []
    lock = threading.Lock()

    def make(n: int) -> None:
        with snakebridge.session() as session:
            for i in range(20):
                event = session.call("threading", "Event")
                assert snakebridge.method(event, "is_set") is False
                with lock:
                    made.append((n, i))

    threads = [threading.Thread(target=make, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert len(made) == 80
    pool = runtime().pools["default"]
    import gc

    gc.collect()
    assert all(pool.ping(w)["refs"] == 0 for w in pool.workers)


def test_threads_need_the_thread_profile(configured: Callable[[str], Path]) -> None:
    from snakebridge.config import load_settings

    path = configured("[tool.snakebridge.pools.default]\nthreads = 4\n")
    with pytest.raises(ConfigError, match='threads needs profile = "thread"'):
        load_settings(path.parent)


def test_doctor_warns_about_a_thread_pool_under_a_gil(configured: Callable[[str], Path]) -> None:
    from snakebridge.config import load_settings
    from snakebridge.envs.doctor import diagnose

    path = configured('[tool.snakebridge.pools.default]\nprofile = "thread"\nthreads = 2\n')
    lines = diagnose(load_settings(path.parent))
    warned = [line for line in lines if 'profile = "thread"' in line.text]
    gil = getattr(__import__("sys"), "_is_gil_enabled", lambda: True)()
    assert [line.status for line in warned] == (["WARN"] if gil else ["OK"])


PURITY = """
[tool.snakebridge.libraries]
hashlib = { version = "stdlib", pool = "hash" }
zlib = { version = "stdlib", pool = "hash" }
textwrap = { version = "stdlib", pool = "text" }
json = { version = "stdlib", pool = "text" }

[tool.snakebridge.pools.hash]
profile = "thread"

[tool.snakebridge.pools.text]
profile = "thread"
"""


def test_doctor_names_the_pure_python_libraries_of_a_thread_pool(
    configured: Callable[[str], Path],
) -> None:
    import sys

    from snakebridge.config import load_settings
    from snakebridge.envs.doctor import diagnose

    path = configured(PURITY)
    lines = {line.text.split(":")[0]: line for line in diagnose(load_settings(path.parent))}
    hashing, text = lines["pool hash"], lines["pool text"]
    if getattr(sys, "_is_gil_enabled", lambda: True)():
        assert hashing.status == "OK" and "hashlib, zlib native code" in hashing.text
        assert text.status == "WARN" and "pure-Python textwrap (" in text.text  # json is C
        assert 'profile = "process" for textwrap' in text.fix
    else:
        assert hashing.status == text.status == "OK" and "no GIL" in text.text


def test_library_code_tells_extension_modules_from_pure_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.machinery
    import sys

    from snakebridge.envs.doctor import library_code

    pure = tmp_path / "sb_pure_pkg"
    (pure / "sub").mkdir(parents=True)
    (pure / "__init__.py").write_text("")
    (pure / "sub" / "mod.py").write_text("")
    native = tmp_path / "sb_native_pkg"
    (native / "deep").mkdir(parents=True)
    (native / "__init__.py").write_text("")
    (native / "deep" / f"fast{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    (tmp_path / "sb_accelerated.py").write_text("")  # a .py module with a C twin _<name>
    (tmp_path / f"_sb_accelerated{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["sb_pure_pkg.sub", "sb_native_pkg", "sb_accelerated", "sb_absent", "zlib"]
    expected = {
        "sb_pure_pkg": "pure",
        "sb_native_pkg": "native",
        "sb_accelerated": "native",
        "sb_absent": "missing",
        "zlib": "native",
    }
    assert library_code(None, names) == expected
    assert library_code(sys.executable, ["zlib", "textwrap"]) == {
        "textwrap": "pure",
        "zlib": "native",
    }
    assert not any(name.startswith("sb_") for name in sys.modules)  # found, never imported


# -- start = "zygote" ----------------------------------------------------------------------------
ZYGOTE = """
[tool.snakebridge.libraries]
os = { version = "stdlib", allow_private = true }
operator = "stdlib"

[tool.snakebridge.pools.default]
size = 2
start = "zygote"
preload = ["json"]
"""


def test_zygote_workers_serve_calls_and_are_replaced_after_sigkill(
    configured: Callable[[str], Path],
) -> None:
    import os
    import signal

    from snakebridge.runtime.zygote import ForkedProcess

    from .conftest import alive

    configured(ZYGOTE)
    assert snakebridge.call("operator", "add", [1, 2]) == 3
    pool = runtime().pools["default"]
    victim = pool.workers[0]
    assert isinstance(victim.transport.proc, ForkedProcess)  # type: ignore[attr-defined]
    parent = snakebridge.call("os", "getppid")
    assert parent != os.getpid()  # its parent is the zygote
    os.kill(victim.pid, signal.SIGKILL)
    until(lambda: not alive(victim.pid) and victim not in pool.workers, pool)
    until(lambda: len(pool.workers) == 2, pool)
    assert all(w.alive for w in pool.workers)
    assert snakebridge.call("operator", "mul", [3, 4]) == 12


HOST = """
import os, sys
import snakebridge
pid = snakebridge.call("os", "getpid")
parent = snakebridge.call("os", "getppid")
print(pid, parent, flush=True)
sys.stdin.read()
"""


def test_zygote_and_its_workers_die_with_the_host(configured: Callable[[str], Path]) -> None:
    import os
    import signal
    import subprocess
    import sys

    from .conftest import alive

    path = configured(ZYGOTE)
    env = {**os.environ, "SNAKEBRIDGE_CONFIG": str(path)}
    host = subprocess.Popen(
        [sys.executable, "-c", HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert host.stdout is not None
    worker, zygote = map(int, host.stdout.readline().split())
    assert alive(worker) and alive(zygote) and zygote != host.pid
    os.kill(host.pid, signal.SIGKILL)
    host.wait()
    until(lambda: not alive(worker) and not alive(zygote))


def test_zygote_needs_a_known_start_mode(configured: Callable[[str], Path]) -> None:
    from snakebridge.config import load_settings

    path = configured('[tool.snakebridge.pools.default]\nstart = "clone"\n')
    with pytest.raises(ConfigError, match="start"):
        load_settings(path.parent)


def test_a_call_with_refs_never_moves(configured: Callable[[str], Path]) -> None:
    configured(
        '[tool.snakebridge.libraries]\noperator = "stdlib"\nio = "stdlib"\n'
        "[tool.snakebridge.pools.default]\nsize = 2\n"
    )
    buffer = snakebridge.call("io", "StringIO", ["abc"])
    pool = runtime().pools["default"]
    holder = buffer._sb_worker
    hold(pool, holder)
    answers: list[Any] = []
    try:
        with pytest.raises(WorkerBusy, match="strict_fail_fast"):
            snakebridge.call("operator", "length_hint", [buffer], affinity="strict_fail_fast")
        waiter = threading.Thread(
            target=lambda: answers.append(
                snakebridge.call("operator", "length_hint", [buffer, 7], affinity="hint")
            )
        )
        waiter.start()
        until(lambda: pool.leaser.queued == 1)  # hint cannot move it: it waits for its worker
        assert answers == []
    finally:
        unhold(pool, holder)
    waiter.join(30)
    assert answers == [7]
