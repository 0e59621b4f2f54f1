"""A pool of workers of one environment: composition of transport, exchange, leasing, supervision.

(Over 350 lines on purpose: it is the composition point; run, arun, run_many and the stream
channel share one failure rule, kept next to them.)

``run``/``arun`` lease a worker (:mod:`lease`), send the call and wait on that worker's line
(:mod:`exchange`); ``run_many`` pipelines a whole batch; ``open_channel`` holds a worker for a
stream. What a lost worker means for its calls is decided in one place (:meth:`Pool._lost`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from snakebridge.config import PoolSpec
from snakebridge.errors import (
    CallTimeout,
    PoolClosed,
    ProtocolError,
    RefInvalid,
    WorkerBusy,
    WorkerCrashed,
)
from snakebridge.runtime import dataplane
from snakebridge.runtime.calls import Call, next_call_id, prepare
from snakebridge.runtime.codec import CALLBACKS, HOST_HAS_NUMPY
from snakebridge.runtime.exchange import Line
from snakebridge.runtime.lease import Leaser, State, Worker
from snakebridge.runtime.pending import Lost, Pending
from snakebridge.runtime.supervisor import Supervisor
from snakebridge.runtime.telemetry import emit
from snakebridge.runtime.transport import (
    PeerClosed,
    ProcessTransport,
    WorkerTransport,
    worker_path_dir,
)
from snakebridge_worker import protocol as p

__all__ = ["Call", "Channel", "Pool"]


def _running_loop() -> Any:
    from asyncio import get_running_loop

    return get_running_loop()


TransportFactory = Callable[[dict[str, Any]], WorkerTransport]
_MAP_WINDOW = 64  # a map's calls in flight per worker (topped up after every read)
_PING = "a health ping"


class Pool:
    """N workers running one interpreter; thread-safe; async twins for every entry point."""

    def __init__(
        self,
        name: str,
        spec: PoolSpec,
        interpreter: str,
        env: dict[str, str],
        init_options: dict[str, Any] | None = None,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self.name, self.spec, self.interpreter, self.env = name, spec, interpreter, env
        self.size = spec.start_workers  # scale (#15): between min_size and max_size
        self.init_options = dict(init_options or {})
        self._factory = transport_factory or self._process_transport
        self.leaser = Leaser(name, spec.max_queue, spec.queue_timeout)
        self.supervisor = Supervisor(self)
        self._recycles = (
            spec.max_requests is not None
            or spec.ttl_s is not None
            or spec.max_memory_bytes is not None
        )
        self._started = False
        import threading

        self._start_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------
    def _process_transport(self, init: dict[str, Any]) -> WorkerTransport:
        start = None
        if self.spec.start == "zygote":  # scale (#15): forked from the env's template
            from snakebridge.runtime.zygote import zygote_for

            zygote = zygote_for(self.interpreter, self.env, worker_path_dir(), self.spec.preload)
            start = zygote.fork
        return ProcessTransport(
            pool_name=self.name,
            interpreter=self.interpreter,
            env=self.env,
            worker_path=worker_path_dir(),
            init=init,
            start=start,
        )

    def _init(self) -> dict[str, Any]:
        init = {**self.init_options, "host_numpy": HOST_HAS_NUMPY, "max_frame": p.DEFAULT_MAX_FRAME}
        if self.spec.capacity > 1:  # thread profile (#15)
            init["threads"] = self.spec.capacity
        return {**init, **dataplane.init_options()}  # dataplane: shared-memory settings

    def launch(self, deadline: float | None = None) -> Worker:
        """Start one worker and complete its handshake (not yet in service)."""
        transport = self._factory(self._init())
        return self._handshake(transport, deadline or time.monotonic() + self.spec.startup_timeout)

    def _handshake(self, transport: WorkerTransport, deadline: float) -> Worker:
        worker: Worker | None = None

        def lost(cause: BaseException, head: Pending | None) -> BaseException:
            assert worker is not None
            return self._lost(worker, cause, head)

        capacity = self.spec.capacity
        line = Line(transport, None, lost, concurrent=capacity > 1)
        worker = Worker(self, transport, line)
        worker.capacity = capacity
        line.holder = worker
        worker.info = transport.handshake(deadline)
        worker.pid = transport.pid  # a Ray actor's pid is known only once it said HELLO
        return worker

    def start(self) -> None:
        """Start all workers in parallel and wait for their handshakes (idempotent)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            if self.leaser.closed:
                raise PoolClosed(f"pool {self.name!r} was shut down")
            deadline = time.monotonic() + self.spec.startup_timeout
            transports: list[WorkerTransport] = []
            try:
                for _ in range(self.size):
                    transports.append(self._factory(self._init()))
            except BaseException:
                for transport in transports:
                    transport.kill()
                raise
            errors: list[BaseException] = []
            for transport in transports:
                try:
                    worker = self._handshake(transport, deadline)
                except Exception as exc:  # WorkerStartError, or anything a broken worker causes
                    transport.kill()
                    errors.append(exc)
                    continue
                self.leaser.add(worker)
                startup = worker.info.get("startup", {})  # streams (#14): preload/init seconds
                emit("runtime.worker", "start", pool=self.name, pid=worker.pid, startup=startup)
            if not self.leaser.workers:
                raise errors[0]
            self._started = True
        for _ in errors:
            self.supervisor.replace_later()

    def close(self, grace_s: float = 2.0) -> None:
        """Drain and stop every worker; later calls raise PoolClosed.

        Calls already running get until ``grace_s`` to finish; then workers are asked to exit,
        and killed. Nothing is left running or unreaped.
        """
        deadline = time.monotonic() + grace_s
        workers = self.leaser.close()
        while any(w.state is State.BUSY for w in workers) and time.monotonic() < deadline:
            time.sleep(0.01)
        for worker in workers:
            worker.line.send(worker.flush_releases())
            self.leaser.retire(worker)
            worker.transport.stop(max(0.1, deadline - time.monotonic()))
            emit("runtime.worker", "stop", pool=self.name, pid=worker.pid, reason="shutdown")

    @property
    def workers(self) -> list[Worker]:
        return list(self.leaser.workers)

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": len(self.leaser.workers),
            "min": self.supervisor.min_size,  # scale (#15)
            "max": self.supervisor.max_size,
            "backend": self.spec.backend,  # ray (#15)
            "queued": self.leaser.queued,
            "workers": [
                {
                    "pid": w.pid,
                    "state": "streaming" if w.streaming else w.state.value,
                    "calls": w.calls,
                    **({"startup": w.info["startup"]} if w.info.get("startup") else {}),  # 14
                    **getattr(w.transport, "describe", dict)(),  # ray (#15): actor, node
                }
                for w in self.workers
            ],
        }

    def housekeep(self) -> None:
        self.supervisor.housekeep()

    def retire(self, worker: Worker, reason: str, replace: bool = True) -> None:
        """Take a worker out of the pool and (unless told not to) start its replacement."""
        if worker.state is State.DEAD:
            return
        was_draining = worker.state is State.DRAINING
        self.leaser.retire(worker)
        emit("runtime.worker", "stop", pool=self.name, pid=worker.pid, reason=reason)
        if replace and not self.leaser.closed and not was_draining:
            self.supervisor.replace_later()

    def _lost(self, worker: Worker, cause: BaseException, head: Pending | None) -> BaseException:
        """The one place that decides what a lost worker means: the error its running call
        raises (CallTimeout, ProtocolError or WorkerCrashed); the worker is replaced."""
        during = head.description if head is not None else "no call"
        if isinstance(cause, TimeoutError):
            error: BaseException = CallTimeout(
                f"{during} did not finish within {head.timeout if head else '?'}s; worker "
                f"{worker.pid} was killed and replaced"
            )
            reason = "unresponsive" if during == _PING else "timeout"
        elif isinstance(cause, ProtocolError) or not isinstance(cause, PeerClosed | OSError):
            worker.transport.kill()
            error = (
                cause
                if isinstance(cause, ProtocolError)
                else ProtocolError(
                    f"worker {worker.pid} broke the protocol ({cause!r}); it was replaced"
                )
            )
            reason = "protocol_error"
        else:
            kill_reason = worker.line.kill_reason
            if kill_reason in ("timeout", "interrupted"):
                kill_reason = f"was killed ({kill_reason})"
            error = worker.transport.death(during, kill_reason)
            reason = "crash"
        if worker.death is None:
            worker.death = error if isinstance(error, WorkerCrashed) else None
        if isinstance(error, CallTimeout | ProtocolError):
            worker.transport.death(during, reason)  # reap it
        self.retire(worker, reason=reason)
        return error

    # -- calls ----------------------------------------------------------------------------------
    def _lease(self, call: Call) -> Worker | None:
        """The worker for ``call`` (None for a nested call, which needs no lease)."""
        if call.nested:
            return None
        if not self._started:
            self.start()
        if call.want is None and not call.pin:  # the common case: any worker will do
            return self.leaser.acquire(None, call.avoid)
        want, now = self._affine(call)
        return self._pinned(call, now or self.leaser.acquire(want, call.avoid))

    async def _alease(self, call: Call) -> Worker | None:
        """Async twin of :meth:`_lease`."""
        if call.nested:
            return None
        if not self._started:
            import asyncio

            await asyncio.get_running_loop().run_in_executor(None, self.start)
        if call.want is None and not call.pin:
            return await self.leaser.aacquire(None, call.avoid)
        want, now = self._affine(call)
        return self._pinned(call, now or await self.leaser.aacquire(want, call.avoid))

    def _affine(self, call: Call) -> tuple[Worker | None, Worker | None]:
        """(worker to wait for, worker leased already) under the call's affinity (#15).

        A call with Refs runs where they live (``hint`` cannot move it); ``hint`` prefers a
        pinned session's worker and takes any other when it is busy; ``strict_fail_fast``
        raises WorkerBusy at once where ``strict_queue`` would wait.
        """
        want = call.want
        pinned = call.pin and want is None
        if pinned:
            want = call.session.pins.get(self.name)  # type: ignore[attr-defined]
            if want is not None and not want.alive:  # its worker is gone: pin a new one
                want = None
        if want is None or call.affinity == "strict_queue":
            return want, None
        leased = self.leaser.try_acquire(want)
        if leased is not None:
            return want, leased
        if call.affinity == "strict_fail_fast":
            raise WorkerBusy(
                f"worker {want.pid} of pool {self.name!r}, which {call.description} must run "
                "on, is busy (affinity='strict_fail_fast'); retry, or use 'strict_queue' to wait"
            )
        return (None, None) if pinned else (want, None)  # hint with Refs: they cannot move

    def _pinned(self, call: Call, worker: Worker) -> Worker:
        if call.pin and call.want is None:
            pins = call.session.pins  # type: ignore[attr-defined]
            current = pins.get(self.name)
            if current is None or not current.alive:
                pins[self.name] = worker
        return worker

    def _pending(self, call: Call) -> Pending:
        return Pending(call.call_id, call.session, call.timeout, call.nested, call.description)

    def _send(self, call: Call, leased: Worker | None, loop: Any = None) -> tuple[Worker, Pending]:
        """Put ``call`` on its worker's line; it comes back done (error Lost) when that worker
        was lost before the call left. ``loop``: an asyncio caller's (its sends combine)."""
        worker = leased or call.want
        assert worker is not None
        pending = self._pending(call)
        frame = call.frame
        if loop is None and call.timeout is None and not call.nested:
            frame = worker.line.lane_for(pending, frame)  # a thread's call: maybe on a lane
        data = worker.flush_releases() + frame if worker.pending_release else frame
        try:
            worker.line.submit_many((pending,), data, loop)
        except Lost:
            pending.done, pending.error = True, Lost()
            if pending.lane is not None:
                worker.line.drop_lane(pending)
        else:
            worker.calls += 1
        return worker, pending

    def _after(self, call: Call, pending: Pending, retried: bool) -> tuple[bool, Any, bool]:
        """(done, value, retried) once ``pending`` finished: done False means send it again."""
        error = pending.error
        if error is None:
            if isinstance(pending.value, Exception):
                raise pending.value
            return True, pending.value, retried
        if isinstance(error, Lost):
            return False, None, retried
        if (
            isinstance(error, WorkerCrashed)
            and call.idempotent
            and call.want is None
            and not retried
        ):
            emit("runtime.call", "retry", pool=self.name, call=call.description)
            return False, None, True
        for callback_id in call.callbacks:  # the worker that held them is gone
            CALLBACKS.pop(callback_id, None)
        raise error

    def run(self, call: Call) -> Any:
        """Send ``call`` to a worker and return its result (or raise its error)."""
        retried = False
        while True:
            leased = self._lease(call)
            try:
                worker, pending = self._send(call, leased)
                if not pending.done:
                    worker.line.wait(pending)
            finally:
                self._finished(leased)
            done, value, retried = self._after(call, pending, retried)
            if done:
                return value

    async def arun(self, call: Call) -> Any:
        """Async twin of :meth:`run`: waits on the event loop, no thread."""
        retried = False
        while True:
            leased = await self._alease(call)
            try:
                worker, pending = self._send(call, leased, _running_loop())
                if not pending.done:
                    await worker.line.await_(pending)
            finally:
                self._finished(leased)
            done, value, retried = self._after(call, pending, retried)
            if done:
                return value

    def _finished(self, worker: Worker | None, streamed: bool = False) -> None:
        if worker is None:
            return
        self.leaser.release(worker, streamed)
        if self._recycles and worker.state is State.IDLE:
            self.supervisor.maybe_recycle(worker)

    def _run_each(self, calls: list[Call], results: list[Any]) -> list[Any]:
        """:meth:`run_many` for calls some of which hold Refs: each goes to the worker its
        Refs live in (:meth:`run`), one after the other, errors in place as there."""
        for index, call in enumerate(calls):
            try:
                results[index] = self.run(call)
            except Exception as exc:
                results[index] = exc
        return results

    def run_many(self, calls: list[Call]) -> list[Any]:
        """Answers to ``calls`` in order, pipelined up to 64 deep on every free worker.

        A remote error is returned in place of that call's value. A lost worker fails only the
        call it was running (retried once when idempotent); the calls queued behind it are sent
        again elsewhere. Workers go back healthy or are replaced, never returned half-read.
        """
        results: list[Any] = [None] * len(calls)
        if any(call.want is not None for call in calls):
            return self._run_each(calls, results)
        todo = collections.deque(enumerate(calls))
        retried: set[int] = set()
        flights: dict[Worker, collections.deque[tuple[int, Pending]]] = {}

        def lease_more() -> None:
            if not flights:
                if not self._started:
                    self.start()
                flights[self.leaser.acquire()] = collections.deque()
            for extra in self.leaser.take_all_idle():
                flights[extra] = collections.deque()

        def feed(worker: Worker, held: collections.deque[tuple[int, Pending]]) -> None:
            """Top ``worker``'s window up in one write (at once, so it never runs dry)."""
            room = _MAP_WINDOW - len(held)
            if not todo or room <= 0 or not worker.alive:
                return
            batch: list[tuple[int, Pending]] = []
            pendings: list[Pending] = []
            frames: list[bytes] = []
            while todo and room:
                index, call = todo.popleft()
                pending = Pending(
                    call.call_id, call.session, call.timeout, call.nested, call.description
                )
                pending.batch = True
                batch.append((index, pending))
                pendings.append(pending)
                frames.append(call.frame)
                room -= 1
            data = b"".join(frames)
            if worker.pending_release:
                data = worker.flush_releases() + data
            try:
                worker.line.submit_many(pendings, data)
            except Lost:
                todo.extendleft((index, calls[index]) for index, _ in reversed(batch))
                return
            worker.calls += len(batch)
            held.extend(batch)

        def collect(held: collections.deque[tuple[int, Pending]]) -> None:
            """Take the answers at the front of ``held`` (a lost call goes back to ``todo``)."""
            while held and held[0][1].done:
                index, pending = held.popleft()
                if pending.error is None and not isinstance(pending.value, Exception):
                    results[index] = pending.value  # the common case, in short
                    continue
                call = calls[index]
                try:
                    done, value, again = self._after(call, pending, index in retried)
                except Exception as exc:
                    results[index] = exc
                    continue
                if done:
                    results[index] = value
                else:
                    if again:
                        retried.add(index)
                    todo.appendleft((index, call))

        try:
            lease_more()
            while todo or any(flights.values()):
                for worker, held in flights.items():
                    feed(worker, held)
                busy = [(w, held) for w, held in flights.items() if held]
                if not busy:
                    for worker in [w for w in flights if not w.alive]:
                        del flights[worker]
                        self._finished(worker)
                    if todo:
                        lease_more()
                    continue
                worker, held = (
                    busy[0] if len(busy) == 1 else min(busy, key=lambda item: item[1][0][1].call_id)
                )
                worker.line.wait(held[0][1])
                collect(held)
                feed(worker, held)  # before reading the others: it works while we do
                for other, others in flights.items():  # and every answer already there
                    if other is not worker and others:
                        other.line.pump()
                        collect(others)
                        feed(other, others)
                if not worker.alive and not held:  # a lost worker's calls are all marked first
                    del flights[worker]
                    self._finished(worker)
                    if todo and not flights:
                        lease_more()
        finally:
            for worker in flights:
                self._finished(worker)
        return results

    def open_channel(self, call: Call) -> Channel:
        """Lease a worker for ``call`` (like :meth:`run`), send it, and hold it for a stream."""
        if call.nested:
            leased = None
        else:  # streams (#14): an idle worker, marked streaming under the leaser's lock
            if not self._started:
                self.start()
            leased = self.leaser.acquire(call.want, call.avoid, hold=True)
        worker = leased or call.want
        assert worker is not None
        pending = self._pending(call)
        try:
            worker.line.submit(pending, worker.flush_releases() + call.frame)
        except Lost:
            if leased is not None:
                self._finished(leased, streamed=True)
            raise WorkerCrashed(f"worker {worker.pid} was lost before {call.description}") from None
        worker.calls += 1
        return Channel(self, worker, leased, pending)

    # -- Ref operations and pings ---------------------------------------------------------------
    def ref_operation(
        self, ref: Any, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any:
        """Run one operation on the object behind ``ref``, in the worker that holds it."""
        call = prepare(self.spec.call_timeout, None, name, ref, op, args, kwargs, None, False, None)
        return self.run(call)

    async def aref_operation(
        self, ref: Any, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any:
        call = prepare(self.spec.call_timeout, None, name, ref, op, args, kwargs, None, False, None)
        return await self.arun(call)

    def ping(self, worker: Worker, timeout: float = 5.0) -> dict[str, Any]:
        """Round-trip a PING on ``worker`` (leased for the duration); its stats."""
        leased = self.leaser.acquire(worker)
        try:
            return self.ping_leased(leased, timeout)
        finally:
            self._finished(leased)

    def ping_leased(self, worker: Worker, timeout: float) -> dict[str, Any]:
        import msgpack

        call_id = next_call_id()
        pending = Pending(call_id, None, timeout, False, _PING)
        try:
            worker.line.submit(
                pending, worker.flush_releases() + p.frame(msgpack.packb([p.PING, call_id]))
            )
            worker.line.wait(pending)
        except Lost:
            raise RefInvalid(f"worker {worker.pid} is gone") from None
        if pending.error is not None:
            if isinstance(pending.error, Lost):
                raise RefInvalid(f"worker {worker.pid} is gone") from None
            raise pending.error
        stats = pending.value
        if not isinstance(stats, dict):
            raise ProtocolError(f"worker {worker.pid} answered a ping with {stats!r:.60}")
        return stats


class Channel:
    """A worker held for one streamed call: read its frames, send it frames, then close."""

    def __init__(self, pool: Pool, worker: Worker, leased: Worker | None, pending: Pending) -> None:
        self.pool, self.worker, self._leased, self.pending = pool, worker, leased, pending
        self.closed = False

    def next_message(self, deadline: float | None = None) -> list[Any]:
        """The next stream frame (``CHUNK``; ``STREAM_END`` last); host callbacks are served.

        A remote error ends the stream by raising; a lost worker raises WorkerCrashed.
        """
        pending = self.pending
        if deadline is not None:
            pending.clock, pending.timeout = time.monotonic(), max(0.0, deadline - time.monotonic())
        message = self.worker.line.wait(pending, stream=True)
        return self._outcome(message)

    async def anext_message(self, deadline: float | None = None) -> list[Any]:
        pending = self.pending
        if deadline is not None:
            pending.clock, pending.timeout = time.monotonic(), max(0.0, deadline - time.monotonic())
        message = await self.worker.line.await_(pending, stream=True)
        return self._outcome(message)

    def _outcome(self, message: list[Any] | None) -> list[Any]:
        if message is not None:
            return message
        pending = self.pending
        if pending.error is not None:
            if isinstance(pending.error, Lost):
                raise WorkerCrashed(f"worker {self.worker.pid} was lost during a stream")
            raise pending.error
        if isinstance(pending.value, Exception):
            raise pending.value
        return [p.STREAM_END, pending.call_id, pending.value]

    def send(self, frame: bytes) -> None:
        self.worker.line.send(frame)

    def close(self, error: BaseException | None = None) -> None:
        """Give the worker back (``error`` None) or fail it (killed and replaced)."""
        if self.closed:
            return
        self.closed = True
        if error is not None and not self.pending.done:
            self.worker.line.kill_reason = "interrupted"
            self.worker.transport.kill()
            self.worker.line.lose(PeerClosed(str(error)))
        if self._leased is not None:
            self.pool._finished(self._leased, streamed=True)
