"""Answer lanes (real workers): a thread's call that finds others in flight is answered on a
socket of its own; the worker's running-call slot decides what a lost worker's calls mean.

The leasing rule that packs tiny calls onto one worker is tested over the fake transport
(no slot there, so the judgement is set by hand).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import snakebridge
from snakebridge import WorkerCrashed
from snakebridge.config import PoolSpec
from snakebridge.runtime.calls import Call, prepare
from snakebridge.runtime.lease import State, Worker
from snakebridge.runtime.pending import Lost, Pending
from snakebridge.runtime.pool import Pool
from snakebridge_worker import protocol as p

from .conftest import default_pool
from .fakes import FakeTransport


def _call(module: str, name: str, *args: Any) -> Call:
    return prepare(None, module, name, None, p.OP_CALL, list(args), None, None, False, None)


def _threads(count: int, body: Any) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(offset: int) -> None:
        try:
            body(offset)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_many_threads_get_their_answers_on_lanes_and_every_answer_matches() -> None:
    pool = default_pool()

    def body(offset: int) -> None:
        for i in range(150):
            n = offset * 1000 + i
            assert snakebridge.call("operator", "neg", [n]) == -n

    assert _threads(8, body) == []
    lanes = sum(w.transport._lanes for w in pool.workers)  # type: ignore[attr-defined]
    assert lanes >= 1  # 8 threads on 2 workers: calls overlapped, so lanes were opened
    slots = [w.transport.slot() for w in pool.workers]
    assert any(slot is not None and slot[2] > 0 for slot in slots)  # the worker counts calls
    assert all(w.state is State.IDLE and w.leases == 0 for w in pool.workers)
    assert snakebridge.call("operator", "neg", [5]) == -5  # a lone call after them: as before


def test_host_callbacks_and_calls_nested_in_them_work_for_lane_calls() -> None:
    pool = default_pool()

    def body(offset: int) -> None:
        for i in range(10):
            items = [offset, i, offset + i + 1]
            expected = sorted(items, reverse=True)
            # a host callback the worker asks for mid-call (it comes on the call's lane)
            assert snakebridge.call("builtins", "sorted", [items], {"key": lambda v: -v}) == (
                expected
            )
            # a callback that calls back into the same worker: a nested call, on the main
            # connection, while the outer call waits on its lane
            part = snakebridge.call("functools", "partial", [sorted, items])
            seen: list[Any] = []

            def key(value: int, part: Any = part, seen: list[Any] = seen) -> int:
                seen.append(part.args)
                return -value

            assert part(key=key) == expected
            assert len(seen) == 3

    assert _threads(6, body) == []
    assert all(w.leases == 0 for w in pool.workers)


def test_zygote_workers_take_lanes_too(configured: Any) -> None:
    configured(
        """
[tool.snakebridge.libraries]
operator = "stdlib"

[tool.snakebridge.pools.default]
size = 1
start = "zygote"
"""
    )

    def body(offset: int) -> None:
        for i in range(100):
            assert snakebridge.call("operator", "add", [offset, i]) == offset + i

    assert _threads(6, body) == []
    (worker,) = default_pool().workers
    assert worker.transport._lanes >= 1  # type: ignore[attr-defined]
    assert worker.transport.slot() is not None


def _pool_with_a_slot() -> tuple[Pool, Worker]:
    """One real worker whose running-call slot is in use (a lane was opened and taken)."""
    pool = Pool("lanes", PoolSpec(size=1), sys.executable, dict(os.environ))
    pool.start()
    (worker,) = pool.workers
    first = _send(pool, worker, _call("operator", "pos", 1))
    second = _send(pool, worker, _call("operator", "pos", 2))  # in flight with first: a lane
    assert second.lane is not None
    for pending in (first, second):
        worker.line.wait(pending)
    assert (first.value, second.value) == (1, 2)
    assert worker.transport.slot() is not None  # the worker took the slot with the lane
    return pool, worker


def _send(pool: Pool, worker: Worker, call: Call) -> Pending:
    _, pending = pool._send(call, worker)
    return pending


def _wait_running(worker: Worker, pending: Pending) -> None:
    deadline = time.monotonic() + 10
    while True:
        slot = worker.transport.slot()
        if slot is not None and slot[0] == pending.call_id:
            return
        assert time.monotonic() < deadline, f"the worker never reported call {pending.call_id}"
        time.sleep(0.005)


def test_a_lost_worker_fails_the_call_it_ran_answers_what_it_finished_and_resends_the_rest() -> (
    None
):
    pool, worker = _pool_with_a_slot()
    try:
        lead = _send(pool, worker, _call("operator", "pos", 6))  # alone: the main connection
        done = _send(pool, worker, _call("operator", "pos", 7))  # the rest on lanes
        running = _send(pool, worker, _call("time", "sleep", 30))
        queued = _send(pool, worker, _call("operator", "pos", 9))
        assert lead.lane is None
        assert done.lane is not None and running.lane is not None and queued.lane is not None
        _wait_running(worker, running)  # lead and done were answered before; nobody read them
        os.kill(worker.pid, signal.SIGKILL)
        for pending in (queued, running, done, lead):  # the waiting order does not matter
            worker.line.wait(pending)
        assert lead.error is None and lead.value == 6  # their answers were there: they count
        assert done.error is None and done.value == 7
        assert isinstance(running.error, WorkerCrashed)
        assert "time.sleep" in str(running.error)
        assert isinstance(queued.error, Lost)  # never started: Pool.run sends it again
    finally:
        pool.close(0.5)


def test_a_caller_that_gives_up_on_a_queued_lane_call_leaves_the_worker_serving() -> None:
    pool, worker = _pool_with_a_slot()
    try:
        running = _send(pool, worker, _call("time", "sleep", 0.3))
        queued = _send(pool, worker, _call("operator", "pos", 3))
        assert queued.lane is not None
        _wait_running(worker, running)
        worker.line._interrupted(queued)  # as Ctrl-C in its waiter: not started, so forgotten
        assert isinstance(queued.error, Lost)
        worker.line.drop_lane(queued)
        worker.line.wait(running)
        assert running.error is None
        # the worker answered the forgotten call on a closed lane and goes on serving
        assert pool.run(_call("operator", "pos", 4)) == 4
        assert worker.state is not State.DEAD and worker.transport.exited() is False
    finally:
        pool.close(0.5)


# -- packing (fake transport) -----------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[Pool]:
    FakeTransport.bad_pong = FakeTransport.fail_start = False
    pool = Pool("fake", PoolSpec(size=2), "fake", {}, None, FakeTransport)
    pool.start()
    yield pool
    pool.close(0.5)


def test_tiny_calls_go_where_the_last_went_although_another_worker_is_idle(fake: Pool) -> None:
    for worker in fake.workers:
        worker.line.tiny = True  # what a worker's slot reports for tiny calls
    first = fake.leaser.acquire()
    assert fake.leaser.acquire() is first  # packed: the idle worker is not woken
    first.line.tiny = False
    other = fake.leaser.acquire()
    assert other is not first  # calls that are not tiny spread as before
    for worker in (first, first, other):
        fake.leaser.release(worker)
    assert all(w.leases == 0 and w.state is State.IDLE for w in fake.workers)


def test_a_pipelined_map_takes_only_idle_workers_while_one_is_packed(fake: Pool) -> None:
    for worker in fake.workers:
        worker.line.tiny = True
    first = fake.leaser.acquire()
    taken = fake.leaser.take_all_idle()
    assert taken == [w for w in fake.workers if w is not first]  # not the packed one, again
    assert first.leases == 1
    for worker in (*taken, first):
        fake.leaser.release(worker)
    assert all(w.leases == 0 for w in fake.workers)


# -- a hostile worker writing on its lanes ----------------------------------------------------
_WRITE_ON_MY_LANE = (
    "import snakebridge_worker.main as m\n"
    "w = m._CURRENT\n"
    "w.call_lanes[w.running[-1]].sendall({frame!r})\n"
)


@pytest.mark.parametrize(
    "frame",
    [
        p.HEADER.pack(3) + b"\xc1\xc1\xc1",  # not msgpack at all
        p.frame(__import__("msgpack").packb([p.RESULT, 999_999_999, 1])),  # another call's answer
        p.frame(__import__("msgpack").packb([p.PONG, 0, {}])),  # a kind lanes never carry
        p.HEADER.pack(0x7FFFFFFF),  # a length over the frame limit
    ],
    ids=["garbage", "foreign-answer", "wrong-kind", "huge"],
)
def test_garbage_on_a_lane_is_a_protocol_error_and_the_pool_goes_on(frame: bytes) -> None:
    from snakebridge import ProtocolError

    pool, worker = _pool_with_a_slot()
    try:
        lead = _send(pool, worker, _call("time", "sleep", 0.05))
        hostile = _send(
            pool, worker, _call("builtins", "exec", _WRITE_ON_MY_LANE.format(frame=frame))
        )
        assert hostile.lane is not None
        worker.line.wait(hostile)
        worker.line.wait(lead)
        assert isinstance(hostile.error, ProtocolError)
        assert pool.run(_call("operator", "pos", 5)) == 5  # a replacement serves
    finally:
        pool.close(0.5)


def test_without_descriptors_for_a_lane_calls_are_answered_on_the_main_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import socket

    pool = Pool("nolanes", PoolSpec(size=1), sys.executable, dict(os.environ))
    pool.start()
    try:

        def out_of_descriptors(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(socket, "socketpair", out_of_descriptors)

        def body(offset: int) -> None:
            for i in range(50):
                assert pool.run(_call("operator", "add", offset, i)) == offset + i

        assert _threads(6, body) == []
        assert pool.workers[0].transport._lanes == 0  # type: ignore[attr-defined]
    finally:
        monkeypatch.undo()
        pool.close(0.5)
