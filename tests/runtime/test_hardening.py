"""Issue 10's runtime items: map is failure-safe, forking libraries, a malformed HELLO, leaks."""

from __future__ import annotations

import os
import signal
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import snakebridge
from snakebridge import EncodeError, SnakeBridgeError, WorkerCrashed, WorkerStartError
from snakebridge.config import PoolSpec
from snakebridge.runtime.codec import CALLBACKS
from snakebridge.runtime.pool import Pool

from .conftest import alive, default_pool


def _dead(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_map_over_a_worker_that_died_while_idle_sends_its_items_elsewhere() -> None:
    pool = default_pool()
    victim = pool.workers[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert _dead(victim.pid)
    # the dead worker may still be listed as idle: its items must go to a live one
    assert snakebridge.map("operator", "neg", range(200)) == [-i for i in range(200)]


def test_a_crash_inside_map_fails_only_that_item_and_leaves_the_pool_healthy() -> None:
    items = ["1 + 1"] * 40 + ["__import__('os')._exit(3)"] + ["2 + 2"] * 40
    with pytest.raises(WorkerCrashed):
        snakebridge.map("builtins", "eval", items)
    for _ in range(6):  # the next, unrelated calls never see the dead worker
        assert snakebridge.call("math", "sqrt", [4]) == 2.0
    results = snakebridge.map("operator", "neg", range(100))
    assert results == [-i for i in range(100)]


def test_a_forked_grandchild_holding_the_socket_neither_hides_the_crash_nor_survives(
    tmp_path: Path, configured: Callable[[str], Path]
) -> None:
    configured(
        '[tool.snakebridge.libraries]\nos = "stdlib"\ntime = "stdlib"\n'
        "[tool.snakebridge.pools.default]\nsize = 1\n"
    )
    pidfile = tmp_path / "grandchild.pid"
    # `sh` and `sleep` inherit the worker's socket and run in the worker's process group
    snakebridge.call("os", "system", [f"sleep 120 & echo $! > {pidfile}"])
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    pool = default_pool_named("default")
    (worker,) = pool.workers
    outcome: list[BaseException] = []

    def long_call() -> None:
        try:
            snakebridge.call("time", "sleep", [60])
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=long_call)
    caller.start()
    while worker.line.in_flight == 0:  # sent: it is the running call from here on
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    caller.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], WorkerCrashed)
    assert _dead(grandchild)  # the worker's process group went with it


def default_pool_named(name: str) -> Pool:
    from snakebridge.runtime.client import runtime

    return runtime().pool(name)


HELLO_GARBAGE = textwrap.dedent(
    """
    import socket, struct, sys, time, msgpack
    sock = socket.socket(fileno=int(sys.argv[1].split(",")[0]))
    body = msgpack.packb([0, 0, "not a map"])
    sock.sendall(struct.pack(">I", len(body)) + body)
    time.sleep(60)
    """
)


def test_a_malformed_hello_is_a_start_error_and_leaks_no_process(tmp_path: Path) -> None:
    script = tmp_path / "bad_hello.py"
    script.write_text(HELLO_GARBAGE)
    launcher = tmp_path / "badpython"
    # the pool runs: INTERPRETER -I -u -c BOOT DIR FD HOST_PID; pass FD on
    launcher.write_text(
        f'#!/bin/sh\necho $$ > {tmp_path}/pid\nexec {sys.executable} {script} "$6"\n'
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    pool = Pool("bad", PoolSpec(size=1, startup_timeout=5), str(launcher), dict(os.environ))
    with pytest.raises(WorkerStartError, match="malformed HELLO"):
        pool.start()
    assert _dead(int((tmp_path / "pid").read_text()))


def test_a_ref_of_another_pool_fails_at_once_with_a_clear_error(
    configured: Callable[[str], Path],
) -> None:
    configured(
        "[tool.snakebridge.libraries]\n"
        'json = "stdlib"\n'
        'io = { version = "stdlib", pool = "other" }\n'
        "[tool.snakebridge.pools.other]\nsize = 1\n"
    )
    buffer = snakebridge.call("io", "StringIO", ["x"])
    with pytest.raises(EncodeError, match=r"held by pool 'other'.*'json' runs in pool 'default'"):
        snakebridge.call("json", "dumps", [buffer])  # at once: not a QueueTimeout


def test_host_callables_of_a_call_whose_worker_crashed_are_dropped() -> None:
    default_pool()
    before = len(CALLBACKS)
    for _ in range(3):
        with pytest.raises(SnakeBridgeError):
            snakebridge.call("builtins", "eval", ["__import__('os')._exit(1)", {"f": lambda: 1}])
    assert len(CALLBACKS) == before


def test_a_callback_from_a_worker_thread_may_call_back_into_that_worker() -> None:
    # the host callback runs while its call holds the worker; the worker object it is handed
    # (a bound method) is called from inside the callback: a nested call, served at once
    seen: list[int] = []

    def produce(sink: Callable[[int], object]) -> str:
        for i in range(3):
            sink(i)
            seen.append(i)
        return "done"

    executor = snakebridge.call("concurrent.futures", "ThreadPoolExecutor", [1])
    store = snakebridge.call("collections", "UserList", [[]])
    future = executor.submit(produce, store.append)
    assert future.result(timeout=30) == "done"
    assert seen == [0, 1, 2] and list(store) == [0, 1, 2]
