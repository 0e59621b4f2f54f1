"""Pool logic over the in-thread fake transport: leasing, pipelining, queueing, loss, recycling.

These run in milliseconds; what needs real processes is in test_pool.py and test_chaos.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from snakebridge import PoolSaturated, QueueTimeout, WorkerCrashed, WorkerStartError
from snakebridge.config import PoolSpec
from snakebridge.runtime import telemetry
from snakebridge.runtime.calls import Call, prepare
from snakebridge.runtime.lease import State
from snakebridge.runtime.pool import Pool
from snakebridge_worker import protocol as p

from .fakes import FakeTransport


@pytest.fixture
def events() -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def handler(name: str, phase: str, metadata: dict[str, Any]) -> None:
        seen.append((name, phase, metadata))

    telemetry.attach(handler)
    yield seen
    telemetry.detach(handler)


def fake_pool(**spec: Any) -> Pool:
    pool = Pool("fake", PoolSpec(**{"size": 2, **spec}), "fake", {}, None, FakeTransport)
    pool.start()
    return pool


def fake_call(symbol: str, *args: Any, timeout: float | None = 5.0, idem: bool = False) -> Call:
    return prepare(None, "fake", symbol, None, p.OP_CALL, list(args), None, timeout, idem, None)


@pytest.fixture
def pool() -> Iterator[Pool]:
    FakeTransport.bad_pong = FakeTransport.fail_start = False
    made = fake_pool()
    yield made
    made.close(0.5)
    FakeTransport.bad_pong = FakeTransport.fail_start = False


def test_many_threads_are_pipelined_and_every_answer_matches(pool: Pool) -> None:
    seen_in_flight: list[int] = []
    errors: list[BaseException] = []

    def caller(offset: int) -> None:
        try:
            for i in range(200):
                n = offset * 1000 + i
                assert pool.run(fake_call("echo", n)) == n
                seen_in_flight.append(max(w.leases for w in pool.workers))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(w.transport.served for w in pool.workers) == 1600  # type: ignore[attr-defined]
    assert all(w.state is State.IDLE and w.leases == 0 for w in pool.workers)


def test_asyncio_tasks_share_workers_and_answers_match(pool: Pool) -> None:
    async def scenario() -> list[int]:
        return list(await asyncio.gather(*(pool.arun(fake_call("echo", i)) for i in range(300))))

    assert asyncio.run(scenario()) == list(range(300))
    assert all(w.leases == 0 for w in pool.workers)


def test_a_long_call_is_not_joined_by_short_ones(pool: Pool) -> None:
    # one worker runs a long call; short calls go to the other worker, never behind it
    slow = threading.Thread(target=pool.run, args=(fake_call("sleep", 0.5, "slow"),))
    slow.start()
    time.sleep(0.05)
    busy = next(w for w in pool.workers if w.leases)
    started = time.monotonic()
    for i in range(20):
        assert pool.run(fake_call("echo", i)) == i
    assert time.monotonic() - started < 0.45
    assert busy.transport.served == 1  # type: ignore[attr-defined]
    slow.join()


def test_a_lost_worker_fails_only_its_running_call_the_rest_are_sent_again(pool: Pool) -> None:
    (first, second) = pool.workers
    assert pool.leaser.take_idle(second)  # keep every call on `first`
    results: dict[int, Any] = {}

    def caller(i: int, symbol: str, *args: Any) -> None:
        try:
            results[i] = pool.run(fake_call(symbol, *args))
        except BaseException as exc:
            results[i] = exc

    crash = threading.Thread(target=caller, args=(0, "sleep", 0.2, "x"))
    crash.start()
    time.sleep(0.02)
    # these are pipelined behind the sleeping call (it is young only briefly, so queue them now)
    pending = [threading.Thread(target=caller, args=(i, "echo", i)) for i in range(1, 4)]
    for thread in pending:
        thread.start()
    time.sleep(0.02)
    first.transport.kill()  # the sleeping call is running: it is the one that fails
    crash.join()
    pool.leaser.release(second)
    for thread in pending:
        thread.join()
    assert isinstance(results[0], WorkerCrashed)
    assert [results[i] for i in range(1, 4)] == [1, 2, 3]


def test_a_timeout_counts_from_when_the_call_starts_running(pool: Pool) -> None:
    (_, other) = pool.workers
    assert pool.leaser.take_idle(other)
    outcome: list[Any] = []
    first = threading.Thread(
        target=lambda: outcome.append(pool.run(fake_call("sleep", 0.3, "a", timeout=1.0)))
    )
    first.start()
    time.sleep(0.001)
    # queued behind a 0.3 s call with its own 0.4 s timeout: fine, its clock starts later
    assert pool.run(fake_call("sleep", 0.2, "b", timeout=0.4)) == "b"
    first.join()
    assert outcome == ["a"]
    pool.leaser.release(other)


def test_queue_timeout_and_saturation() -> None:
    pool = fake_pool(size=1, queue_timeout=0.2, max_queue=1)
    try:
        slow = threading.Thread(target=pool.run, args=(fake_call("sleep", 0.6, "x"),))
        slow.start()
        time.sleep(0.05)
        outcome: list[BaseException] = []

        def wait() -> None:
            try:
                pool.run(fake_call("echo", 1))
            except BaseException as exc:
                outcome.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.05)
        with pytest.raises(PoolSaturated, match="max_queue=1"):
            pool.run(fake_call("echo", 2))
        waiter.join()
        slow.join()
        assert len(outcome) == 1 and isinstance(outcome[0], QueueTimeout)
    finally:
        pool.close(0.5)


def test_sync_and_async_retry_the_same_way(pool: Pool, events: list[Any]) -> None:
    with pytest.raises(WorkerCrashed):
        pool.run(fake_call("crash", idem=True))
    sync_retries = [e for e in events if e[:2] == ("runtime.call", "retry")]

    async def scenario() -> None:
        with pytest.raises(WorkerCrashed):
            await pool.arun(fake_call("crash", idem=True))

    asyncio.run(scenario())
    async_retries = [e for e in events if e[:2] == ("runtime.call", "retry")]
    assert len(sync_retries) == 1 and len(async_retries) == 2


def test_recycling_after_max_requests(events: list[Any]) -> None:
    pool = fake_pool(size=1, max_requests=10)
    try:
        first = pool.workers[0].pid
        for i in range(30):
            assert pool.run(fake_call("echo", i)) == i
        recycled = [e for e in events if e[:2] == ("runtime.worker", "recycle")]
        assert recycled and recycled[0][2]["pid"] == first
        assert all(w.calls <= 10 for w in pool.workers)
    finally:
        pool.close(0.5)


def test_start_failures_reach_sync_and_async_waiters_alike() -> None:
    pool = fake_pool(size=1, queue_timeout=30)
    try:
        FakeTransport.fail_start = True
        with pytest.raises(WorkerCrashed):
            pool.run(fake_call("crash"))
        with pytest.raises(WorkerStartError, match="fail_start"):
            pool.run(fake_call("echo", 1))

        async def scenario() -> None:
            with pytest.raises(WorkerStartError, match="fail_start"):
                await pool.arun(fake_call("echo", 2))

        asyncio.run(scenario())
    finally:
        FakeTransport.fail_start = False
        pool.close(0.5)


def test_housekeeping_survives_a_malformed_pong(pool: Pool, events: list[Any]) -> None:
    FakeTransport.bad_pong = True
    pool.supervisor.check_health(timeout=1.0)
    retired = [e for e in events if e[:2] == ("runtime.worker", "stop")]
    assert len(retired) == 2  # both answered garbage; both replaced
    FakeTransport.bad_pong = False
    deadline = time.monotonic() + 5
    while len(pool.workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.supervisor.housekeep()
    assert pool.run(fake_call("echo", 7)) == 7


def test_cancelled_queued_calls_leave_the_running_ones_and_the_workers_alone(pool: Pool) -> None:
    # calls pipelined behind running ones never started: cancelling them fails nothing else
    # (their late answers are dropped, not taken for a protocol error) and kills no worker
    pids = {w.pid for w in pool.workers}

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(pool.arun(fake_call("sleep", 0.05, i))) for i in range(8)]
        await asyncio.sleep(0.01)
        for task in tasks[2:]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        results.append(await pool.arun(fake_call("echo", "after")))
        return results

    results = asyncio.run(scenario())
    assert results[:2] == [0, 1]
    assert all(isinstance(r, asyncio.CancelledError) for r in results[2:8])
    assert results[8] == "after"
    assert {w.pid for w in pool.workers} == pids
    assert all(w.leases == 0 for w in pool.workers)
