"""Which worker takes a call: worker states, the one wait queue, pipelining.

(Over 350 lines on purpose: states, the wait queue and the worker record change together,
under one lock.)

:class:`Leaser` is the only code that changes a worker's :class:`State`; counts per state are
kept as states change, so status and the polling decision cost O(1). A call takes an idle
worker if there is one; when every worker is busy it is *pipelined* onto the busy worker with
the fewest calls whose current call is young (so a short call never queues behind a long one
it could have avoided), 4 in flight at most, 32 while its calls are tiny; otherwise it waits in
one FIFO queue, served as workers free up. Calls the worker reports as tiny are packed onto the
worker that took the last one, even when another is idle (:meth:`Leaser._packs`). Threads wait
on a Signal, asyncio tasks on a future: one waiter type, one queue.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from snakebridge.errors import PoolClosed, PoolSaturated, QueueTimeout, RefInvalid
from snakebridge.runtime.pending import Signal, wake_future

if TYPE_CHECKING:
    import asyncio

    from snakebridge.runtime.exchange import Line
    from snakebridge.runtime.transport import WorkerTransport

__all__ = ["Leaser", "State", "Worker"]

_DEPTH = 4  # calls in flight per worker at most, from separate callers
_DEPTH_QUICK = 32  # the same while its calls are tiny (the last one took under 0.5 ms)
_YOUNG_S = 0.002  # pipeline behind a call only while it has run for less than this


class State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "recycling"  # takes no new call; stops when its replacement is ready
    DEAD = "dead"

    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs Python code


class Worker:
    """The host's record of one worker: its transport and line, state, counters and Refs."""

    def __init__(self, pool: Any, transport: WorkerTransport, line: Line) -> None:
        self.pool = pool
        self.transport = transport
        self.pid = transport.pid
        self.line = line
        self.state = State.STARTING
        self.leases = 0
        self.calls = 0
        self.started_at = time.monotonic()
        self.idle_since = 0.0
        self.info: dict[str, Any] = {}
        self.streaming = 0  # streams (#14): open Channels holding it (thread profile: several)
        self.death: BaseException | None = None
        self.pending_release: list[tuple[int, int]] = []
        self.live_refs = 0
        self.refs_lock = threading.Lock()
        self.capacity = 1  # thread profile (#15): calls it runs at once

    @property
    def alive(self) -> bool:
        return self.state is not State.DEAD

    def lone(self) -> bool:
        """Whether this is the pool's one busy worker (a lone caller may poll for its answer)."""
        return bool(self.pool.leaser.counts[State.BUSY] <= 1)

    # -- the RefHost interface that Refs use ----------------------------------------------------
    def operate(
        self, ref: Any, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any:
        return self.pool.ref_operation(ref, op, name, args, kwargs)

    async def aoperate(
        self, ref: Any, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any:
        return await self.pool.aref_operation(ref, op, name, args, kwargs)

    def drop_ref(self, session_id: int, ref_id: int, session_closed: bool) -> None:
        with self.refs_lock:
            self.live_refs -= 1
        if self.alive and not session_closed:
            self.pending_release.append((session_id, ref_id))

    def release_session(self, session_id: int) -> None:
        import msgpack

        from snakebridge_worker import protocol as p

        self.line.send(p.frame(msgpack.packb([p.RELEASE_SESSION, 0, session_id])))

    def add_ref(self) -> None:
        with self.refs_lock:
            self.live_refs += 1

    def flush_releases(self) -> bytes:
        """Framed RELEASE messages for Refs the host dropped since the last flush."""
        if not self.pending_release:
            return b""
        import msgpack

        from snakebridge_worker import protocol as p

        pending, self.pending_release = self.pending_release, []
        by_session: dict[int, list[int]] = {}
        for session_id, ref_id in pending:
            by_session.setdefault(session_id, []).append(ref_id)
        return b"".join(
            p.frame(msgpack.packb([p.RELEASE, 0, session_id, ref_ids]))
            for session_id, ref_ids in by_session.items()
        )


class _Waiter:
    __slots__ = ("avoid", "error", "event", "future", "hold", "loop", "want", "worker")

    def __init__(self, want: Worker | None, avoid: Worker | None, hold: bool = False) -> None:
        self.want, self.avoid, self.hold = want, avoid, hold
        self.worker: Worker | None = None
        self.error: BaseException | None = None
        self.event: Signal | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> bool:
        """Tell the waiter its worker or error is there; False if nobody can hear it."""
        if self.event is not None:
            self.event.set()
            return True
        assert self.loop is not None and self.future is not None
        try:
            wake_future(self.loop, self.future)
        except RuntimeError:  # its event loop is closed
            return False
        return True


class Leaser:
    """Workers of one pool, their states, and the queue of calls waiting for one."""

    def __init__(self, pool_name: str, max_queue: int, queue_timeout: float) -> None:
        self.pool_name = pool_name
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self._lock = threading.Lock()
        self.workers: list[Worker] = []
        self._idle: list[Worker] = []
        self._packed: Worker | None = None  # where the last tiny call went (see _pick)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self.counts: collections.Counter[State] = collections.Counter()
        self.closed = False
        self.start_error: BaseException | None = None  # set while no worker can be started
        self.on_queued: Callable[[], None] | None = None  # scale (#15): the autoscaler's hook

    def _set(self, worker: Worker, state: State) -> None:
        """The one place a worker's state changes (lock held)."""
        self.counts[worker.state] -= 1
        self.counts[state] += 1
        worker.state = state

    @property
    def queued(self) -> int:
        return len(self._waiters)

    # -- membership -----------------------------------------------------------------------------
    def add(self, worker: Worker) -> None:
        """A worker that completed its handshake goes into service."""
        with self._lock:
            self.counts[worker.state] += 1
            self.workers.append(worker)
            self._to_idle(worker)
            woken = self._serve()
        _wake_all(woken, self)

    def retire(self, worker: Worker) -> None:
        """Out of service for good; calls waiting for this very worker get RefInvalid."""
        orphans: list[_Waiter] = []
        with self._lock:
            if worker.state is State.DEAD:
                return
            self._set(worker, State.DEAD)
            if worker in self.workers:
                self.workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            for waiter in list(self._waiters):
                if waiter.want is worker:
                    self._waiters.remove(waiter)
                    waiter.error = RefInvalid(
                        f"the worker {worker.pid} holding this Ref is gone"
                        + (f" ({worker.death})" if worker.death else "")
                    )
                    orphans.append(waiter)
        for waiter in orphans:
            waiter.wake()

    def drain(self, worker: Worker) -> bool:
        """Withhold an idle worker from new calls (it is due for recycling)."""
        with self._lock:
            if worker.state is not State.IDLE:
                return False
            self._idle.remove(worker)
            self._set(worker, State.DRAINING)
            return True

    def close(self) -> list[Worker]:
        """No more leases; every waiter gets PoolClosed. The workers, to stop."""
        with self._lock:
            self.closed = True
            waiters, self._waiters = list(self._waiters), collections.deque()
            workers = list(self.workers)
        for waiter in waiters:
            waiter.error = PoolClosed(f"pool {self.pool_name!r} was shut down")
            waiter.wake()
        return workers

    def fail_waiters(self, error: BaseException) -> None:
        """While no worker can start: every call waiting for any worker gets ``error``."""
        with self._lock:
            self.start_error = error
            if self.workers:
                return
            stranded = [w for w in self._waiters if w.want is None]
            for waiter in stranded:
                self._waiters.remove(waiter)
                waiter.error = error
        for waiter in stranded:
            waiter.wake()

    # -- leasing --------------------------------------------------------------------------------
    def _to_idle(self, worker: Worker) -> None:
        self._set(worker, State.IDLE)
        worker.idle_since = time.monotonic()
        self._idle.append(worker)

    def _pipelinable(self, worker: Worker, avoid: Worker | None) -> bool:
        if worker.capacity > 1:  # thread profile (#15): up to capacity calls run at once
            return (  # a stream takes one of its threads like a call (#15)
                worker.state is State.BUSY
                and worker is not avoid
                and worker.leases < worker.capacity
            )
        return (
            worker.state is State.BUSY
            and worker is not avoid
            and worker.leases < (_DEPTH_QUICK if worker.line.quick or worker.line.tiny else _DEPTH)
            and worker.line.callbacks_running == 0
            and worker.line.head_age() < _YOUNG_S
            and not worker.streaming  # streams (#14): held by an open stream
        )

    def _packs(self, worker: Worker, avoid: Worker | None) -> bool:
        """Whether a call goes to ``worker``, which took the last one, although another worker
        may be idle: its calls are tiny (they cost it less than a host spends sending one), so
        it alone keeps up with every caller here, and waking a second worker per call would
        only add context switches and, where CPUs are few, take one from the callers."""
        return worker.line.tiny and worker.capacity == 1 and self._pipelinable(worker, avoid)

    def _take_idle(self, avoid: Worker | None) -> Worker | None:
        """An idle worker (the one that went idle last), unless it is ``avoid`` (lock held)."""
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index] is not avoid:
                return self._idle.pop(index)
        return None

    def _pick(self, want: Worker | None, avoid: Worker | None, hold: bool = False) -> Worker | None:
        """A worker for one call (lock held), or None when it must wait.

        ``hold`` (streams, #14): an idle worker only, marked streaming while still locked, so
        no other call is pipelined onto it for as long as the stream holds it; a thread worker
        (#15) takes streams and calls up to its capacity.
        """
        if self.closed:
            raise PoolClosed(f"pool {self.pool_name!r} was shut down")
        if want is not None:
            if want.state is State.DEAD:
                raise RefInvalid(f"the worker {want.pid} holding this Ref is gone")
            if want.state is State.IDLE:
                self._idle.remove(want)
                chosen: Worker | None = want
            elif (not hold or want.capacity > 1) and self._pipelinable(want, None):
                chosen = want
            else:
                return None
        else:
            packed = self._packed
            if packed is not None and not hold and self._packs(packed, avoid):
                chosen = packed  # tiny calls go where tiny calls went (see _packs)
            else:
                chosen = self._take_idle(avoid)
            if chosen is None:
                candidates = [
                    w
                    for w in self.workers
                    if (not hold or w.capacity > 1) and self._pipelinable(w, avoid)
                ]
                if not candidates:
                    return None
                chosen = min(candidates, key=lambda w: w.leases / w.capacity)
        assert chosen is not None
        return self._leased(chosen, hold)

    def _leased(self, worker: Worker, hold: bool = False) -> Worker:
        """``worker`` takes one more call (lock held)."""
        self._packed = worker if worker.line.tiny else None
        if worker.state is not State.BUSY:
            self._set(worker, State.BUSY)
        worker.leases += 1
        if hold:
            worker.streaming += 1
        return worker

    def _serve(self) -> list[_Waiter]:
        """Hand free capacity to waiters in order (lock held); the waiters to wake."""
        woken: list[_Waiter] = []
        for waiter in list(self._waiters):
            worker = self._pick(waiter.want, waiter.avoid, waiter.hold)
            if worker is None:
                if waiter.want is None:  # nothing free for anyone: later waiters wait too
                    break
                continue
            self._waiters.remove(waiter)
            waiter.worker = worker
            woken.append(waiter)
        return woken

    def _enqueue(self, want: Worker | None, avoid: Worker | None) -> _Waiter:
        if len(self._waiters) >= self.max_queue:
            raise PoolSaturated(
                f"pool {self.pool_name!r} has {len(self._waiters)} calls waiting (max_queue="
                f"{self.max_queue}); retry later or raise max_queue"
            )
        if want is None and not self.workers and self.start_error is not None:
            raise self.start_error
        waiter = _Waiter(want, avoid)
        self._waiters.append(waiter)
        return waiter

    def _timed_out(self) -> QueueTimeout:
        return QueueTimeout(
            f"no worker of pool {self.pool_name!r} became free within {self.queue_timeout}s "
            "(queue_timeout); raise size or queue_timeout"
        )

    def acquire(
        self, want: Worker | None = None, avoid: Worker | None = None, hold: bool = False
    ) -> Worker:
        """Lease a worker for one call, waiting in the queue if none can take it now."""
        with self._lock:
            worker = self._pick(want, avoid, hold)
            if worker is not None:
                return worker
            waiter = self._enqueue(want, avoid)
            waiter.hold = hold
            waiter.event = Signal()
        if self.on_queued is not None and want is None:
            self.on_queued()
        if not waiter.event.wait(self.queue_timeout):
            with self._lock:
                if waiter.worker is None and waiter.error is None:
                    self._waiters.remove(waiter)
                    raise self._timed_out()
        return _outcome(waiter)

    async def aacquire(self, want: Worker | None = None, avoid: Worker | None = None) -> Worker:
        """Async twin of :meth:`acquire`."""
        import asyncio

        with self._lock:
            worker = self._pick(want, avoid)
            if worker is not None:
                return worker
            waiter = self._enqueue(want, avoid)
            loop = waiter.loop = asyncio.get_running_loop()
            future = waiter.future = loop.create_future()
        if self.on_queued is not None and want is None:
            self.on_queued()
        timer = loop.call_later(self.queue_timeout, _resolve, future)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                if waiter.worker is None and waiter.error is None:
                    self._waiters.remove(waiter)
                    raise
            if waiter.worker is not None:
                self.release(waiter.worker)
            raise
        finally:
            timer.cancel()
        with self._lock:
            if waiter.worker is None and waiter.error is None:  # the timer went off
                self._waiters.remove(waiter)
                raise self._timed_out()
        return _outcome(waiter)

    def try_acquire(self, want: Worker) -> Worker | None:
        """Lease ``want`` only if it can take a call now (affinity hint, strict_fail_fast)."""
        with self._lock:
            return self._pick(want, None)

    def take_idle(self, worker: Worker) -> bool:
        """Lease ``worker`` only if it is idle now (health checks)."""
        with self._lock:
            if worker.state is not State.IDLE or self.closed:
                return False
            self._pick(worker, None)
            return True

    def idle_longest(self) -> Worker | None:
        """The worker idle the longest (holding no Refs), for scaling down."""
        with self._lock:
            free = [w for w in self._idle if w.live_refs == 0]
            return min(free, key=lambda w: w.idle_since) if free else None

    def take_all_idle(self) -> list[Worker]:
        """Lease every idle worker (for a pipelined map)."""
        with self._lock:
            taken: list[Worker] = []
            while not self.closed and (worker := self._take_idle(None)) is not None:
                taken.append(self._leased(worker))
            return taken

    def release(self, worker: Worker, streamed: bool = False) -> None:
        """A call leased on ``worker`` is over; its capacity goes to waiters or back to idle.
        ``streamed``: it was a stream's (the worker holds one stream fewer)."""
        with self._lock:
            worker.leases -= 1
            if streamed:
                worker.streaming -= 1
            if worker.leases == 0 and worker.state is State.BUSY and not self.closed:
                self._to_idle(worker)
            woken = self._serve() if self._waiters else []
        _wake_all(woken, self)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(waiter: _Waiter) -> Worker:
    if waiter.error is not None:
        raise waiter.error
    assert waiter.worker is not None
    return waiter.worker


def _wake_all(woken: list[_Waiter], leaser: Leaser) -> None:
    for waiter in woken:
        if not waiter.wake() and waiter.worker is not None:
            leaser.release(waiter.worker)
