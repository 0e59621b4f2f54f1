"""snakebridge.stream over real workers: credit, cancel, errors, crashes, timeouts, queueing."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import snakebridge
from snakebridge.runtime.streams import astream, invoke_stream, stream

GENS = """
import itertools
import os
import signal
import threading
import time

import numpy as np

CLOSED = []


def counting(n):
    try:
        yield from range(n)
    finally:
        CLOSED.append(n)


def endless(size):
    block = "x" * size
    try:
        for _ in itertools.count():
            yield block
    finally:
        CLOSED.append("endless")


def failing():
    yield 1
    yield 2
    raise ValueError("third item")


def crashing():
    yield 1
    time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    yield 2


def stalling():
    yield 1
    time.sleep(60)
    yield 2


def arrays(n, size):
    for i in range(n):
        yield np.full(size, i, dtype=np.float64)


def closed():
    return CLOSED


_BARRIERS = {}
_LOCK = threading.Lock()


def meeting(key, parties, n):
    # yields 0, then waits until `parties` streams of `key` are all past their first item
    # (they must run at once), then yields the rest up to n
    with _LOCK:
        barrier = _BARRIERS.setdefault(key, threading.Barrier(parties, timeout=60))
    try:
        yield 0
        barrier.wait()
        yield from range(1, n)
    finally:
        CLOSED.append(key)
"""

CONFIG = """
helpers = ["gens"]
[libraries]
builtins = "stdlib"
math = "stdlib"
scipy = "stdlib"
[pools.default]
size = 1
"""


@pytest.fixture
def project(tmp_path: Path, configured: Callable[[str], Path]) -> Path:
    (tmp_path / "gens.py").write_text(GENS)
    configured(CONFIG)
    return tmp_path


def worker_state() -> str:
    return str(snakebridge.status()[0]["workers"][0]["state"])


def test_a_stream_yields_every_item_in_order(project: Path) -> None:
    assert list(snakebridge.stream("gens", "counting", [10_000])) == list(range(10_000))
    assert list(stream("builtins", "range", [3])) == [0, 1, 2]  # any iterable
    assert list(invoke_stream("gens", "counting", (("n", 5, True),))) == list(range(5))


def test_break_runs_the_generators_finally_before_the_next_call(project: Path) -> None:
    for item in stream("gens", "counting", [10**9]):
        if item == 3:
            break
    assert snakebridge.call("gens", "closed") == [10**9]


def test_dropping_or_closing_a_stream_cancels_it(project: Path) -> None:
    items = stream("gens", "counting", [10**8])
    assert next(items) == 0
    del items
    gc.collect()
    with stream("gens", "endless", [10]) as blocks:
        assert next(blocks) == "x" * 10
    assert snakebridge.call("gens", "closed") == [10**8, "endless"]
    assert worker_state() == "idle"


def test_an_exception_arrives_at_the_item_where_it_happened(project: Path) -> None:
    items = stream("gens", "failing")
    assert next(items) == 1
    assert next(items) == 2
    with pytest.raises(ValueError, match="third item"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)
    assert snakebridge.call("math", "sqrt", [9.0]) == 3.0  # the worker went back healthy


def test_a_worker_crash_raises_worker_crashed_at_the_next_item(project: Path) -> None:
    items = stream("gens", "crashing")
    assert next(items) == 1
    with pytest.raises(snakebridge.WorkerCrashed):
        next(items)
    assert snakebridge.call("math", "sqrt", [4.0]) == 2.0  # replaced


def test_item_timeout_and_stream_timeout(project: Path) -> None:
    items = stream("gens", "stalling", item_timeout=0.3)
    assert next(items) == 1
    with pytest.raises(snakebridge.CallTimeout):
        next(items)
    endless = stream("gens", "endless", [10], timeout=0.3)
    with pytest.raises(snakebridge.CallTimeout):
        for _ in endless:
            pass
    assert snakebridge.call("math", "sqrt", [4.0]) == 2.0


def test_a_stream_holds_its_worker_and_calls_queue_behind_it(project: Path) -> None:
    items = stream("gens", "endless", [10])
    next(items)
    assert worker_state() == "streaming"
    answers: list[float] = []
    caller = threading.Thread(
        target=lambda: answers.append(snakebridge.call("math", "sqrt", [1.0]))
    )
    caller.start()
    deadline = time.monotonic() + 30
    while snakebridge.status()[0]["queued"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert snakebridge.status()[0]["queued"] == 1 and not answers
    items.close()
    caller.join(30)
    assert answers == [1.0]


def test_an_endless_generator_keeps_memory_bounded(project: Path) -> None:
    items = stream("gens", "endless", [4096])
    next(items)
    pid = snakebridge.status()[0]["workers"][0]["pid"]
    for _ in range(20_000):
        next(items)
    worker_before, host_before = rss(pid), rss(os.getpid())
    for _ in range(200_000):  # 800 MB if nothing applied back-pressure
        next(items)
    assert rss(pid) - worker_before < 32 * 2**20
    assert rss(os.getpid()) - host_before < 32 * 2**20
    items.close()


def test_large_arrays_stream_intact(project: Path) -> None:
    received = list(stream("gens", "arrays", [6, 500_000]))
    assert [float(a[0]) for a in received] == [float(i) for i in range(6)]
    assert all(isinstance(a, np.ndarray) and a.shape == (500_000,) for a in received)


def test_async_for_over_the_async_twin(project: Path) -> None:
    async def main() -> list[int]:
        seen = [item async for item in astream("gens", "counting", [50])]
        async with astream("gens", "counting", [10**9]) as items:
            async for item in items:
                if item == 2:
                    break
        return seen

    assert asyncio.run(main()) == list(range(50))
    assert snakebridge.call("gens", "closed")[-1] == 10**9


def test_minimize_in_the_worker_with_a_host_objective_matches_in_process(project: Path) -> None:
    import scipy.optimize

    def rosen(x: np.ndarray) -> float:
        return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2.0) ** 2.0 + (1 - x[:-1]) ** 2.0))

    x0 = [1.3, 0.7, 0.8, 1.9, 1.2]
    settings = {"method": "Nelder-Mead", "options": {"xatol": 1e-8}}
    remote = snakebridge.call("scipy.optimize", "minimize", [rosen, x0], settings)
    local = scipy.optimize.minimize(rosen, x0, **settings)
    np.testing.assert_array_equal(snakebridge.attr(remote, "x"), local.x)
    assert snakebridge.attr(remote, "nfev") == local.nfev


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("call_id", [1, 200, 70_000, 2**33])
@pytest.mark.parametrize("session", [0, 300, 2**40])
def test_the_stream_flag_is_set_in_any_call_frame(call_id: int, session: int) -> None:
    import msgpack

    from snakebridge.runtime.streams import with_stream_flag
    from snakebridge_worker import protocol as p

    message = [p.CALL, call_id, session, p.FLAG_PATH_VALUES, "m", "f", None, "call", [1], None]
    patched = with_stream_flag(p.frame(msgpack.packb(message)))
    decoded = msgpack.unpackb(patched[4:])
    assert decoded[3] == p.FLAG_PATH_VALUES | p.FLAG_STREAM
    assert decoded[:3] == message[:3] and decoded[4:] == message[4:]


def test_an_async_stream_cancelled_while_queued_frees_the_worker(project: Path) -> None:
    holder = stream("gens", "endless", [10])
    next(holder)  # the pool's one worker is held

    async def main() -> None:
        waiting = astream("gens", "counting", [10])
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting.__anext__(), 0.2)

    asyncio.run(main())
    holder.close()  # the queued open now gets the worker, and lets it go at once
    assert snakebridge.call("math", "sqrt", [16.0]) == 4.0
    deadline = time.monotonic() + 30
    while worker_state() == "streaming" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker_state() != "streaming"


THREADED = CONFIG.replace("size = 1", 'size = 1\nprofile = "thread"\nthreads = 4')


@pytest.fixture
def threaded(tmp_path: Path, configured: Callable[[str], Path]) -> Path:
    (tmp_path / "gens.py").write_text(GENS)
    configured(THREADED)
    return tmp_path


def test_streams_run_at_once_on_one_thread_worker(threaded: Path) -> None:
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def consume(n: int) -> None:
        try:
            results[n] = list(stream("gens", "meeting", ["all", 3, 500 + n]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []  # a BrokenBarrierError here: the three did not run at once
    assert results == {n: list(range(500 + n)) for n in range(3)}
    assert len(snakebridge.status()[0]["workers"]) == 1
    assert sorted(snakebridge.call("gens", "closed")) == ["all"] * 3


def test_break_on_a_thread_worker_runs_finally_while_other_streams_go_on(threaded: Path) -> None:
    other = stream("gens", "counting", [10**9])
    assert next(other) == 0
    for item in stream("gens", "counting", [10**8]):
        if item == 3:
            break
    assert snakebridge.call("gens", "closed") == [10**8]  # its finally ran before the break
    assert [next(other) for _ in range(5)] == [1, 2, 3, 4, 5]  # the other stream is untouched
    with stream("gens", "endless", [10]) as blocks:
        assert next(blocks) == "x" * 10
    assert snakebridge.call("math", "sqrt", [9.0]) == 3.0  # a call beside the open stream
    other.close()
    assert snakebridge.call("gens", "closed") == [10**8, "endless", 10**9]


def test_async_streams_at_once_on_a_thread_worker(threaded: Path) -> None:
    async def main() -> list[list[int]]:
        async def collect(n: int) -> list[int]:
            return [item async for item in astream("gens", "meeting", ["async", 2, 50 + n])]

        return list(await asyncio.gather(collect(0), collect(1)))

    assert asyncio.run(main()) == [list(range(50)), list(range(51))]
