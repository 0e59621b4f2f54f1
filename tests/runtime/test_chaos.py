"""Chaos: the pool survives anything a library does, and never hangs or mixes up answers."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge import CallTimeout, WorkerCrashed
from snakebridge.runtime import telemetry
from snakebridge.runtime.client import runtime

from .conftest import alive


@pytest.fixture
def events() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def handler(name: str, phase: str, metadata: dict[str, Any]) -> None:
        seen.append((name, phase, metadata))

    telemetry.attach(handler)
    yield seen
    telemetry.detach(handler)


def live_workers() -> set[int]:
    """Pids of this process's live (non-zombie) worker children."""
    me = str(os.getpid())
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z" and b"snakebridge_worker" in cmdline:
            found.add(int(entry.name))
    return found


def wait_full(size: int = 2) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (pool,) = snakebridge.status()
        states = [w["state"] for w in pool["workers"]]
        if len(states) == size and "dead" not in states and len(live_workers()) == size:
            return
        time.sleep(0.02)
    raise AssertionError(f"pool not back to full size: {snakebridge.status()}, {live_workers()}")


def test_each_kind_of_failure_gets_its_own_error(configured: Callable[[str], Path]) -> None:
    configured(
        '[tool.snakebridge.libraries]\nctypes = "stdlib"\nos = "stdlib"\noperator = "stdlib"\n'
        'time = "stdlib"\nmath = "stdlib"\n'
        '[tool.snakebridge.pools.default]\nmax_memory = "300MB"\n'
    )
    with pytest.raises(WorkerCrashed, match="segfault"):
        snakebridge.call("ctypes", "string_at", [0])
    assert snakebridge.call("math", "sqrt", [4]) == 2.0
    with pytest.raises(WorkerCrashed, match="abort"):
        snakebridge.call("os", "abort")
    assert snakebridge.call("math", "sqrt", [9]) == 3.0
    with pytest.raises(WorkerCrashed, match="over max_memory"):
        snakebridge.call("operator", "mul", [b"x", 4 * 10**9])
    assert snakebridge.call("math", "sqrt", [16]) == 4.0
    with pytest.raises(CallTimeout):
        snakebridge.call("time", "sleep", [10**6], timeout=0.5)
    assert snakebridge.call("math", "sqrt", [25]) == 5.0
    wait_full()


_CRASHED = object()


def _hammer(
    calls: int, threads: int, idempotent: bool, kills: int = 3
) -> tuple[int, int, list[BaseException], int]:
    """(correct results, WorkerCrashed count, anything else, calls made): ``threads`` callers
    keep calling until ``calls`` are made *and* ``kills`` busy workers were SIGKILLed (one
    every 50 ms), so the chaos happens however fast the calls are."""
    stop = threading.Event()
    enough_kills = threading.Event()
    pool = runtime().pools["default"]

    def chaos() -> None:
        done = 0
        while not stop.wait(0.05):
            busy = [w for w in pool.workers if w.alive and w.line.in_flight]
            if busy:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(random.choice(busy).pid, signal.SIGKILL)
                    done += 1
            if done >= kills:
                enough_kills.set()

    ok, crashed, made, wrong = 0, 0, 0, []
    lock = threading.Lock()

    def client(offset: int) -> None:
        nonlocal ok, crashed, made
        i = offset
        while (i < calls or not enough_kills.is_set()) and not stop.is_set():
            try:
                value: Any = snakebridge.call(
                    "operator", "mul", [i, 3], timeout=10, idempotent=idempotent
                )
            except WorkerCrashed:
                value = _CRASHED
            except BaseException as exc:
                value = exc
            with lock:
                made += 1
                if value is _CRASHED:
                    crashed += 1
                elif value == i * 3:
                    ok += 1
                else:
                    wrong.append(
                        value
                        if isinstance(value, BaseException)
                        else AssertionError(f"call {i} got {value!r}")
                    )
            i += threads

    killer = threading.Thread(target=chaos)
    killer.start()
    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    hung = any(t.is_alive() for t in workers)
    stop.set()
    killer.join()
    assert not hung, "a call hung (or no worker was busy to kill within 120 s)"
    return ok, crashed, wrong, made


def test_random_sigkills_never_hang_or_mix_up_answers() -> None:
    # every call comes back right or as WorkerCrashed (the ones a kill hit), none hangs
    snakebridge.call("operator", "pos", [1])
    ok, crashed, wrong, made = _hammer(2000, 8, idempotent=False)
    assert not wrong
    assert ok + crashed == made >= 2000
    wait_full()


def test_idempotent_calls_survive_the_same_chaos(events: list[Any]) -> None:
    snakebridge.call("operator", "pos", [1])
    ok, crashed, wrong, made = _hammer(2000, 8, idempotent=True)
    retries = [e for e in events if e[:2] == ("runtime.call", "retry")]
    # the contract is "retried once on a fresh worker": a call only fails if its retry was
    # killed too, so every failure had a retry before it
    assert not wrong and ok + crashed == made >= 2000
    assert crashed <= len(retries)
    wait_full()


def test_idempotent_is_retried_once_never_more(events: list[Any]) -> None:
    with pytest.raises(WorkerCrashed):
        snakebridge.call("os", "_exit", [1], idempotent=True)
    retries = [e for e in events if e[:2] == ("runtime.call", "retry")]
    crashes = [e for e in events if e[1] == "stop" and e[2]["reason"] == "crash"]
    assert len(retries) == 1 and len(crashes) == 2
    events.clear()
    with pytest.raises(WorkerCrashed):
        snakebridge.call("os", "_exit", [1])
    assert not [e for e in events if e[:2] == ("runtime.call", "retry")]
    wait_full()


def test_idempotent_from_config(configured: Callable[[str], Path], events: list[Any]) -> None:
    configured(
        "[tool.snakebridge.libraries]\n"
        'os = { version = "stdlib", idempotent = ["_exit"], allow_private = true }\n'
    )
    with pytest.raises(WorkerCrashed):
        snakebridge.call("os", "_exit", [1])
    assert [e for e in events if e[:2] == ("runtime.call", "retry")]


def test_max_requests_recycles_without_failing_a_call(
    configured: Callable[[str], Path], events: list[Any]
) -> None:
    configured(
        '[tool.snakebridge.libraries]\noperator = "stdlib"\n'
        "[tool.snakebridge.pools.default]\nmax_requests = 10\n"
    )
    results = [snakebridge.call("operator", "mul", [i, 2]) for i in range(30)]
    assert results == [i * 2 for i in range(30)]
    recycles = [e for e in events if e[:2] == ("runtime.worker", "recycle")]
    assert len(recycles) >= 2
    assert all("max_requests (10)" in e[2]["reason"] for e in recycles)
    wait_full()
    assert all(w["calls"] <= 10 for w in snakebridge.status()[0]["workers"])


def test_ttl_recycles_old_workers(configured: Callable[[str], Path], events: list[Any]) -> None:
    configured(
        '[tool.snakebridge.libraries]\nmath = "stdlib"\n'
        '[tool.snakebridge.pools.default]\nttl = "300ms"\n'
    )
    first = {
        w["pid"]
        for w in (snakebridge.call("math", "sqrt", [1]), snakebridge.status())[1][0]["workers"]
    }
    time.sleep(0.4)
    for _ in range(4):
        assert snakebridge.call("math", "sqrt", [4]) == 2.0
    time.sleep(0.3)
    assert [e for e in events if e[:2] == ("runtime.worker", "recycle") and "ttl" in e[2]["reason"]]
    assert {w["pid"] for w in snakebridge.status()[0]["workers"]} != first


def test_hung_idle_worker_is_found_by_the_health_ping(events: list[Any]) -> None:
    snakebridge.call("operator", "pos", [1])
    pool = runtime().pools["default"]
    victim = pool.workers[0]
    os.kill(victim.pid, signal.SIGSTOP)  # alive but unresponsive
    pool.supervisor.check_health(timeout=0.5)
    assert not victim.alive and not alive(victim.pid)
    assert [
        e
        for e in events
        if e[1] == "stop"
        and e[2] == {"pool": "default", "pid": victim.pid, "reason": "unresponsive"}
    ]
    wait_full()


def test_graceful_shutdown_lets_running_calls_finish() -> None:
    snakebridge.call("operator", "pos", [1])
    pids = {w.pid for w in runtime().pools["default"].workers}
    results: list[Any] = []
    caller = threading.Thread(
        target=lambda: results.append(snakebridge.call("time", "sleep", [0.5]) or "done")
    )
    caller.start()
    time.sleep(0.1)
    snakebridge.shutdown(grace_s=3)
    caller.join()
    assert results == ["done"]
    assert not any(alive(pid) for pid in pids)


def test_worker_lifecycle_events(events: list[Any]) -> None:
    snakebridge.shutdown()
    snakebridge.call("operator", "pos", [1])
    starts = [e for e in events if e[:2] == ("runtime.worker", "start")]
    assert len(starts) == 2 and all(e[2]["pool"] == "default" for e in starts)
    snakebridge.shutdown()
    stops = [e for e in events if e[:2] == ("runtime.worker", "stop")]
    assert {e[2]["reason"] for e in stops} == {"shutdown"}


def test_crash_storm_backs_off_and_tells_callers(tmp_path: Path, events: list[Any]) -> None:
    import sys

    from snakebridge import WorkerStartError
    from snakebridge.config import PoolSpec
    from snakebridge.runtime.pool import Pool

    # the first start succeeds; every later start dies at once (a broken environment)
    launcher = tmp_path / "python-once"
    marker = tmp_path / "started"
    launcher.write_text(
        f'#!/bin/sh\nif [ -e {marker} ]; then echo "cannot import msgpack" >&2; exit 1; fi\n'
        f'touch {marker}\nexec {sys.executable} "$@"\n'
    )
    launcher.chmod(0o755)
    pool = Pool("storm", PoolSpec(size=1, queue_timeout=30), str(launcher), dict(os.environ))
    try:
        pool.start()
        prepared = client_call(pool, "os", "_exit", [1])
        with pytest.raises(WorkerCrashed):
            pool.run(prepared)
        started = time.monotonic()
        with pytest.raises(WorkerStartError, match=r"cannot start workers(.|\n)*msgpack"):
            pool.run(client_call(pool, "math", "sqrt", [4]))
        assert time.monotonic() - started < 10
        attempts = [e for e in events if e[:2] == ("runtime.worker", "start_failed")]
        time.sleep(0.5)
        later = [e for e in events if e[:2] == ("runtime.worker", "start_failed")]
        assert len(attempts) >= 3 and len(later) - len(attempts) <= 2  # backing off, not spinning
    finally:
        pool.close(0.5)
    assert not live_workers()


def client_call(pool: Any, lib: str, symbol: str, args: list[Any]) -> Any:
    from snakebridge.runtime.calls import prepare
    from snakebridge_worker import protocol as p

    return prepare(
        pool.spec.call_timeout, lib, symbol, None, p.OP_CALL, args, None, 5.0, False, None
    )
