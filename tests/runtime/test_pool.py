"""The pool under concurrency, forks, host death and shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import snakebridge
from snakebridge import SymbolNotFound

from .conftest import alive, default_pool


def test_eight_threads_and_a_hundred_tasks_at_once() -> None:
    results: dict[int, float] = {}
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(50):
                n = offset * 1000 + i
                results[n] = snakebridge.call("math", "sqrt", [n * n])
        except BaseException as exc:
            errors.append(exc)

    async def tasks() -> list[int]:
        return list(
            await asyncio.gather(
                *(snakebridge.acall("operator", "mul", [i, 2]) for i in range(100))
            )
        )

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    doubled = asyncio.run(tasks())
    for thread in threads:
        thread.join()
    assert not errors
    assert doubled == [i * 2 for i in range(100)]
    assert len(results) == 400 and all(results[n] == float(n) for n in results)


def test_async_twins_and_async_timeout() -> None:
    async def scenario() -> None:
        assert await snakebridge.aget("math", "tau") == 6.283185307179586
        with pytest.raises(snakebridge.CallTimeout):
            await snakebridge.acall("time", "sleep", [30], timeout=0.2)
        task = asyncio.ensure_future(snakebridge.acall("time", "sleep", [30]))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await snakebridge.acall("math", "factorial", [20]) == 2432902008176640000

    asyncio.run(scenario())


def test_worker_is_isolated_from_host_cwd_and_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "host_only_module.py").write_text("VALUE = 1\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    snakebridge.shutdown()
    with pytest.raises(SymbolNotFound, match="host_only_module"):
        snakebridge.get("host_only_module", "VALUE")
    assert snakebridge.call("os", "getcwd") == "/"


def test_shutdown_stops_every_worker_and_next_call_starts_fresh() -> None:
    pids = [w.pid for w in default_pool().workers]
    snakebridge.shutdown()
    assert not any(alive(pid) for pid in pids)
    assert snakebridge.call("math", "sqrt", [4]) == 2.0
    assert not {w.pid for w in default_pool().workers} & set(pids)


def test_forked_child_gets_its_own_pool() -> None:
    parent = {w.pid for w in default_pool().workers}
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            snakebridge.call("math", "sqrt", [4])
            mine = {w["pid"] for w in snakebridge.status()[0]["workers"]}
            os.write(write, b"ok" if not mine & parent else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 16) == b"ok"
    assert snakebridge.call("math", "sqrt", [9]) == 3.0
    assert {w.pid for w in default_pool().workers} == parent


HOST = textwrap.dedent(
    """
    import sys, threading, snakebridge
    snakebridge.call("math", "sqrt", [1])
    pids = [w["pid"] for w in snakebridge.status()[0]["workers"]]
    print(" ".join(map(str, pids)), flush=True)
    threading.Thread(target=snakebridge.call, args=("time", "sleep", [60])).start()
    snakebridge.call("time", "sleep", [60])
    """
)


def test_sigkilled_host_leaves_no_worker(tmp_path: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST], stdout=subprocess.PIPE, cwd=tmp_path)
    assert host.stdout is not None
    pids = [int(pid) for pid in host.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    time.sleep(0.3)  # both workers are now busy in time.sleep
    host.send_signal(signal.SIGKILL)
    host.wait()
    deadline = time.monotonic() + 2
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_status_file_lists_a_live_host(tmp_path: Path) -> None:
    host = subprocess.Popen([sys.executable, "-c", HOST], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert host.stdout is not None
        pids = host.stdout.readline().split()
        deadline = time.monotonic() + 5
        output = ""
        while time.monotonic() < deadline:
            output = subprocess.run(
                ["snakebridge", "status"], capture_output=True, text=True, check=True
            ).stdout
            if f"host pid {host.pid}" in output:
                break
            time.sleep(0.2)
        assert f"host pid {host.pid}" in output
        assert all(pid.decode() in output for pid in pids)
    finally:
        host.kill()
        host.wait()


def test_library_output_reaches_host_stderr_prefixed(tmp_path: Path) -> None:
    code = "import snakebridge; snakebridge.call('builtins', 'print', ['hello from a worker'])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 0 and done.stdout == ""
    line = next(ln for ln in done.stderr.splitlines() if "hello from a worker" in ln)
    assert line.startswith("[snakebridge default worker ")
    assert line.endswith("] hello from a worker")


def test_map_pipelines_calls_in_order_and_raises_the_first_error() -> None:
    assert snakebridge.map("math", "sqrt", [1, 4, 9, 16]) == [1.0, 2.0, 3.0, 4.0]
    assert snakebridge.map("operator", "neg", range(5000)) == [-i for i in range(5000)]
    assert snakebridge.map("math", "sqrt", []) == []
    with pytest.raises(ValueError, match="math domain error"):
        snakebridge.map("math", "sqrt", [4, -1, 9])
    assert snakebridge.map("math", "factorial", [3]) == [6]


def test_map_items_with_host_callables_take_the_general_path_in_place() -> None:
    def double(x: int) -> int:
        return 2 * x

    assert snakebridge.map("builtins", "callable", [1, double, "a", double]) == [
        False,
        True,
        False,
        True,
    ]


def test_map_over_refs_held_by_different_workers_sends_each_to_its_holder() -> None:
    snakebridge.call("math", "sqrt", [4])
    deadline = time.monotonic() + 30  # both workers up and idle
    while [w["state"] for w in snakebridge.status()[0]["workers"]] != ["idle", "idle"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    texts = [str(i) for i in range(200)]
    refs = snakebridge.map("io", "StringIO", texts)  # a map fills every idle worker's window
    assert len({ref._sb_worker for ref in refs}) == 2  # (the precondition)
    assert snakebridge.map("io", "StringIO.getvalue", refs[::-1]) == texts[::-1]


def test_map_survives_crashes_and_timeouts() -> None:
    with pytest.raises(snakebridge.WorkerCrashed):
        snakebridge.map("os", "_exit", [1, 1, 1])
    with pytest.raises(snakebridge.CallTimeout):
        snakebridge.map("time", "sleep", [0, 30, 0], timeout=0.5)
    assert snakebridge.map("operator", "pos", range(100)) == list(range(100))
    deadline = time.monotonic() + 60  # replacements start (a Ray actor takes seconds under load)
    while time.monotonic() < deadline:
        states = [w["state"] for w in snakebridge.status()[0]["workers"]]
        if len(states) == 2 and set(states) == {"idle"}:
            break
        time.sleep(0.02)
    assert [w["state"] for w in snakebridge.status()[0]["workers"]] == ["idle", "idle"]
