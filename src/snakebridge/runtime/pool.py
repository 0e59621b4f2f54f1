"""A pool of worker processes of one environment: leasing, queueing, dispatch, replacement.

In the process profile a worker serves one call at a time, so the thread that leases a worker
also reads its reply: no dispatcher thread and no hand-off on the hot path. Crashes surface as
EOF on the socket the caller is already reading; timeouts kill the worker.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snakebridge.config import PoolSpec
from snakebridge.runtime.answers import callback_reply, error_from_payload
from snakebridge.runtime.codec import CALLBACKS, HOST_HAS_NUMPY, HostCodec
from snakebridge.runtime.connection import PeerClosed
from snakebridge.runtime.errors import (
    CallTimeout,
    PoolClosed,
    PoolSaturated,
    ProtocolError,
    QueueTimeout,
    RefInvalid,
    SnakeBridgeError,
    WorkerCrashed,
    WorkerStartError,
)
from snakebridge.runtime.lifecycle import recycle_reason, resident_bytes
from snakebridge.runtime.process import WorkerProcess
from snakebridge.runtime.refs import Session
from snakebridge.runtime.telemetry import emit
from snakebridge_worker import protocol as p

if TYPE_CHECKING:  # asyncio costs ~30 ms to import; async paths find it already loaded
    import asyncio

__all__ = ["Call", "Pool"]

_MAX_BACKOFF_S = 5.0
_HEALTH_INTERVAL_S = 5.0
_TRUST_RECENT_S = 0.005
_POLL_S = 40e-6  # how long a caller polls for a fast answer before sleeping on the socket
_HEALTH_TIMEOUT_S = 5.0
_FAIL_WAITERS_AFTER = 3


@dataclass
class Call:
    """One encoded request and what is needed to answer it."""

    frame: bytes
    call_id: int
    description: str
    session: Session
    timeout: float | None
    want: WorkerProcess | None = None
    idempotent: bool = False


class _Waiter:
    __slots__ = ("error", "event", "future", "loop", "want", "worker")

    def __init__(self, want: WorkerProcess | None) -> None:
        self.want = want
        self.worker: WorkerProcess | None = None
        self.error: BaseException | None = None
        self.event: threading.Event | None = None
        self.future: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class Pool:
    """N workers running one interpreter; thread-safe; async twins for every entry point."""

    def __init__(
        self,
        name: str,
        spec: PoolSpec,
        interpreter: str,
        env: dict[str, str],
        init_options: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.spec, self.interpreter, self.env = name, spec, interpreter, env
        self.init_options = dict(init_options or {})
        self.size = spec.size
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._idle: list[WorkerProcess] = []
        self._workers: list[WorkerProcess] = []
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._start_failures = 0
        self._last_start_error: WorkerStartError | None = None
        self._last_health_check = time.monotonic()
        self._started = False
        self._closed = False
        self._max_memory = spec.max_memory_bytes

    # -- lifecycle ----------------------------------------------------------------------------
    def _new_worker(self) -> WorkerProcess:
        worker = WorkerProcess(
            pool_name=self.name,
            interpreter=self.interpreter,
            env=self.env,
            max_frame=p.DEFAULT_MAX_FRAME,
            host_numpy=HOST_HAS_NUMPY,
            init_options=self.init_options,
        )
        worker.owner = self
        return worker

    def start(self) -> None:
        """Start all workers in parallel and wait for their handshakes (idempotent)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} was shut down")
            deadline = time.monotonic() + self.spec.startup_timeout
            launched: list[WorkerProcess] = []
            try:
                for _ in range(self.size):
                    launched.append(self._new_worker())
            except BaseException:
                for worker in launched:
                    worker.kill()
                raise
            errors: list[WorkerStartError] = []
            for worker in launched:
                try:
                    worker.handshake(deadline)
                except WorkerStartError as exc:
                    errors.append(exc)
                    continue
                emit("runtime.worker", "start", pool=self.name, pid=worker.pid)
                with self._lock:
                    self._workers.append(worker)
                self._release(worker)
            if not self._workers:
                raise errors[0]
            self._started = True
        for _ in errors:
            self._replace_later()

    def close(self, grace_s: float = 2.0) -> None:
        """Drain and stop every worker; later calls raise PoolClosed.

        Calls already running get until ``grace_s`` to finish; then workers are asked to exit,
        terminated, and killed, in that order. Nothing is left running or unreaped.
        """
        deadline = time.monotonic() + grace_s
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            waiters, self._waiters = list(self._waiters), collections.deque()
        for waiter in waiters:
            self._wake(waiter, error=PoolClosed(f"pool {self.name!r} was shut down"))
        while any(w.state == "busy" and w.alive for w in workers):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        with self._lock:
            self._workers, self._idle = [], []
        for worker in workers:
            worker.send_quietly(worker.flush_releases())
            worker.stop(max(0.1, deadline - time.monotonic()))
            emit("runtime.worker", "stop", pool=self.name, pid=worker.pid, reason="shutdown")

    @property
    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return list(self._workers)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "size": self.size,
                "queued": len(self._waiters),
                "workers": [
                    {"pid": w.pid, "state": w.state, "calls": w.calls} for w in self._workers
                ],
            }

    # -- leasing ------------------------------------------------------------------------------
    def _take(self, want: WorkerProcess | None) -> WorkerProcess | None:
        """An idle worker (the wanted one if given); caller holds the lock."""
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} was shut down")
        if want is not None:
            if not want.alive:
                raise RefInvalid(f"the worker {want.pid} holding this Ref is gone")
            if want in self._idle:
                self._idle.remove(want)
                want.state = "busy"
                return want
            return None
        if self._idle:
            worker = self._idle.pop()
            worker.state = "busy"
            return worker
        return None

    def _enqueue(self, waiter: _Waiter) -> None:
        if len(self._waiters) >= self.spec.max_queue:
            raise PoolSaturated(
                f"pool {self.name!r} has {len(self._waiters)} calls waiting (max_queue="
                f"{self.spec.max_queue}); retry later or raise max_queue"
            )
        self._waiters.append(waiter)

    def _queue_timeout(self) -> QueueTimeout:
        return QueueTimeout(
            f"no worker of pool {self.name!r} became free within {self.spec.queue_timeout}s "
            "(queue_timeout); raise size or queue_timeout"
        )

    def acquire(self, want: WorkerProcess | None) -> WorkerProcess:
        """Lease a live worker (``want`` when given), waiting in the queue if none is free."""
        while True:
            worker = self._acquire_any(want)
            if self._still_alive(worker, want):
                return worker

    async def aacquire(self, want: WorkerProcess | None) -> WorkerProcess:
        """Async twin of :meth:`acquire`."""
        while True:
            worker = await self._aacquire_any(want)
            if self._still_alive(worker, want):
                return worker

    def _still_alive(self, worker: WorkerProcess, want: WorkerProcess | None) -> bool:
        """False (and the worker replaced) when it died while idle.

        A worker released moments ago is trusted without a waitpid: a crash since then still
        surfaces as EOF on its socket.
        """
        if time.monotonic() - worker.idle_since < _TRUST_RECENT_S or worker.proc.poll() is None:
            return True
        death = worker.crashed("no call (it died while idle)")
        self._retire(worker, reason="crash")
        if want is not None:
            raise RefInvalid(f"the worker {worker.pid} holding this Ref crashed ({death.cause})")
        return False

    def _acquire_any(self, want: WorkerProcess | None) -> WorkerProcess:
        if self._start_failures >= _FAIL_WAITERS_AFTER and not self._workers:
            raise WorkerStartError(
                f"pool {self.name!r} cannot start workers ({self._start_failures} failures in "
                f"a row); the last: {self._last_start_error}"
            )
        self.start()
        with self._lock:
            worker = self._take(want)
            if worker is not None:
                return worker
            waiter = _Waiter(want)
            waiter.event = threading.Event()
            self._enqueue(waiter)
        if not waiter.event.wait(self.spec.queue_timeout):
            with self._lock:
                if waiter.worker is None and waiter.error is None:
                    self._waiters.remove(waiter)
                    raise self._queue_timeout()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.worker is not None
        return waiter.worker

    async def _aacquire_any(self, want: WorkerProcess | None) -> WorkerProcess:
        import asyncio

        if not self._started:
            await asyncio.get_running_loop().run_in_executor(None, self.start)
        with self._lock:
            worker = self._take(want)
            if worker is not None:
                return worker
            waiter = _Waiter(want)
            waiter.loop = asyncio.get_running_loop()
            waiter.future = waiter.loop.create_future()
            self._enqueue(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.spec.queue_timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                if waiter.worker is None and waiter.error is None:
                    self._waiters.remove(waiter)
                    if isinstance(exc, TimeoutError):
                        raise self._queue_timeout() from None
                    raise
            if waiter.worker is not None and isinstance(exc, asyncio.CancelledError):
                self._release(waiter.worker)
                raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.worker is not None
        return waiter.worker

    def _wake(
        self,
        waiter: _Waiter,
        worker: WorkerProcess | None = None,
        error: BaseException | None = None,
    ) -> None:
        waiter.worker, waiter.error = worker, error
        if waiter.event is not None:
            waiter.event.set()
        elif waiter.loop is not None and waiter.future is not None:
            future = waiter.future
            try:
                waiter.loop.call_soon_threadsafe(
                    lambda: None if future.done() else future.set_result(None)
                )
            except RuntimeError:  # its event loop is closed: nobody will take the worker
                if worker is not None:
                    self._release(worker)

    def _release(self, worker: WorkerProcess) -> None:
        """Give a worker back: to the first waiter that can take it, else to the idle list.

        A worker due for recycling takes no new call: it waits, idle, until its replacement is
        ready and then stops, so queued calls go to the other workers or to the replacement.
        """
        if not worker.recycling and worker.alive and worker.live_refs <= 0:
            reason = recycle_reason(
                self.spec, worker.calls, worker.started_at, worker.pid, self._max_memory
            )
            if reason is not None:
                worker.recycling = True
                worker.state = "recycling"
                emit("runtime.worker", "recycle", pool=self.name, pid=worker.pid, reason=reason)
                self._replace_later(old=worker)
                return
        with self._lock:
            if not worker.alive or self._closed:
                worker.state = "idle" if worker.alive else "dead"
                return
            for waiter in self._waiters:
                if waiter.want is None or waiter.want is worker:
                    self._waiters.remove(waiter)
                    worker.state = "busy"
                    break
            else:
                worker.state = "idle"
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
                return
        self._wake(waiter, worker=worker)

    # -- replacement --------------------------------------------------------------------------
    def _retire(self, worker: WorkerProcess, reason: str, replace: bool = True) -> None:
        """Take a worker out of the pool and (unless told not to) start its replacement."""
        orphans: list[_Waiter] = []
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            for waiter in list(self._waiters):
                if waiter.want is worker:
                    self._waiters.remove(waiter)
                    orphans.append(waiter)
            closed = self._closed
        emit("runtime.worker", "stop", pool=self.name, pid=worker.pid, reason=reason)
        for waiter in orphans:
            self._wake(
                waiter,
                error=RefInvalid(f"the worker {worker.pid} holding this Ref is gone ({reason})"),
            )
        if replace and not closed and not worker.recycling:
            self._replace_later()

    def _replace_later(self, old: WorkerProcess | None = None) -> None:
        threading.Thread(
            target=self._replace,
            args=(old,),
            name=f"snakebridge-replace-{self.name}",
            daemon=True,
        ).start()

    def _replace(self, old: WorkerProcess | None = None) -> None:
        """Start one worker (retrying with backoff) and put it in service."""
        while not self._closed:
            try:
                worker = self._new_worker()
                worker.handshake(time.monotonic() + self.spec.startup_timeout)
            except WorkerStartError as exc:
                self._start_failed(exc)
                continue
            except Exception as exc:  # never let the replacement loop die silently
                self._start_failed(WorkerStartError(f"cannot start a worker: {exc!r}"))
                continue
            self._start_failures = 0
            with self._lock:
                if self._closed:
                    worker.stop(0.5)
                    return
                self._workers.append(worker)
            emit("runtime.worker", "start", pool=self.name, pid=worker.pid)
            if old is not None:
                self._retire(old, reason="recycle", replace=False)
                old.stop(1.0)
            self._release(worker)
            return

    def _start_failed(self, exc: WorkerStartError) -> None:
        self._start_failures += 1
        self._last_start_error = exc
        emit("runtime.worker", "start_failed", pool=self.name, error=str(exc))
        if self._start_failures >= _FAIL_WAITERS_AFTER:
            with self._lock:
                stranded = [w for w in self._waiters if not self._workers]
                for waiter in stranded:
                    self._waiters.remove(waiter)
            for waiter in stranded:
                self._wake(
                    waiter,
                    error=WorkerStartError(
                        f"pool {self.name!r} cannot start workers "
                        f"({self._start_failures} failures in a row): {exc}"
                    ),
                )
        time.sleep(min(0.05 * 2**self._start_failures, _MAX_BACKOFF_S))

    def housekeep(self) -> None:
        """Periodic duties: flush dropped Refs, enforce max_memory, replace dead or hung workers."""
        for worker in self.workers:
            worker.send_quietly(worker.flush_releases())
            if self._max_memory is not None and worker.state == "busy":
                rss = resident_bytes(worker.pid)
                if rss is not None and rss > self._max_memory:
                    worker.kill_reason = (
                        f"killed: it used {rss // 2**20} MiB, over max_memory "
                        f"({self._max_memory // 2**20} MiB)"
                    )
                    worker.proc.kill()
        self.check_idle_workers()
        if time.monotonic() - self._last_health_check >= _HEALTH_INTERVAL_S:
            self._last_health_check = time.monotonic()
            self.check_health()

    def check_health(self, timeout: float = _HEALTH_TIMEOUT_S) -> None:
        """Ping idle workers; one that does not answer in time is killed and replaced."""
        for worker in self.workers:
            with self._lock:
                if worker not in self._idle:
                    continue
                self._idle.remove(worker)
                worker.state = "busy"
            try:
                self._ping_leased(worker, timeout)
            except SnakeBridgeError:
                continue
            self._release(worker)

    def check_idle_workers(self) -> None:
        """Replace idle workers that died between calls."""
        for worker in self.workers:
            if worker.state == "idle" and worker.proc.poll() is not None:
                with self._lock:
                    if worker not in self._idle:
                        continue
                    self._idle.remove(worker)
                worker.crashed("no call (it was idle)")
                self._retire(worker, reason="crash")

    # -- calls --------------------------------------------------------------------------------
    def _fail(
        self, worker: WorkerProcess, call: Call, exc: BaseException, overrun: str = "timeout"
    ) -> BaseException:
        """Turn a transport failure into the caller's error and replace the worker."""
        if isinstance(exc, TimeoutError):
            worker.kill()
            self._retire(worker, reason=overrun)
            return CallTimeout(
                f"{call.description} did not finish within {call.timeout}s; worker "
                f"{worker.pid} was killed and replaced"
            )
        if isinstance(exc, ProtocolError):
            worker.kill()
            self._retire(worker, reason="protocol_error")
            return exc
        death = worker.crashed(call.description)
        self._retire(worker, reason="crash")
        return death

    def _poll_s(self) -> float:
        """Poll for a fast answer only while this is the pool's one call in flight.

        With several callers, polling threads compete with the workers for the CPUs and cost
        throughput; a lone caller gains a whole scheduler wake-up.
        """
        busy = sum(1 for worker in self._workers if worker.state == "busy")
        return _POLL_S if busy <= 1 else 0.0

    def _send(self, worker: WorkerProcess, call: Call) -> None:
        data = worker.flush_releases() + call.frame
        with worker.send_lock:
            worker.conn.send(data)
        worker.calls += 1

    def _answer(
        self, worker: WorkerProcess, call: Call, body: bytes | bytearray, codec: HostCodec
    ) -> tuple[bool, Any]:
        """(done, value) for one frame; runs host callbacks the worker asks for."""
        message = codec.decode(body, worker, call.session)
        kind, call_id = message[0], message[1]
        if kind == p.CALLBACK:
            worker.send_quietly(callback_reply(message, codec))
            return False, None
        if kind == p.CALLBACK_RELEASE:
            for callback_id in message[2]:
                CALLBACKS.pop(callback_id, None)
            return False, None
        if call_id != call.call_id or kind not in (p.RESULT, p.ERROR):
            raise ProtocolError(
                f"worker {worker.pid} answered call {call_id} with frame kind {kind} while "
                f"call {call.call_id} was running"
            )
        if kind == p.ERROR:
            return True, error_from_payload(message[2])
        return True, message[2]

    def run(self, call: Call, codec: HostCodec) -> Any:
        """Send ``call`` to a worker and return its result (or raise its error)."""
        try:
            return self._run_once(call, codec)
        except WorkerCrashed:
            if not call.idempotent or call.want is not None:
                raise
            emit("runtime.call", "retry", pool=self.name, call=call.description)
            return self._run_once(call, codec)

    def _abandon(self, worker: WorkerProcess, call: Call, exc: BaseException) -> BaseException:
        """The error to raise for a call that failed with ``exc``; its worker is dealt with."""
        if isinstance(exc, TimeoutError | PeerClosed | OSError | ProtocolError):
            return self._fail(worker, call, exc)
        if isinstance(exc, Exception):  # the answer arrived whole (e.g. it did not decode)
            self._release(worker)
            return exc
        worker.kill()  # interrupted or cancelled mid-call: the worker is still busy with it
        self._retire(worker, reason="interrupted")
        return exc

    def _deliver(self, worker: WorkerProcess, value: Any) -> Any:
        """Give the worker back and return the answer (raising it when it is an error)."""
        self._release(worker)
        if isinstance(value, Exception):
            raise value
        return value

    def _run_once(self, call: Call, codec: HostCodec) -> Any:
        worker = self.acquire(call.want)
        deadline = time.monotonic() + call.timeout if call.timeout is not None else None
        try:
            self._send(worker, call)
            while True:
                body = worker.conn.read(deadline, self._poll_s())
                done, value = self._answer(worker, call, body, codec)
                if done:
                    break
        except BaseException as exc:
            raise self._abandon(worker, call, exc) from None
        return self._deliver(worker, value)

    async def arun(self, call: Call, codec: HostCodec) -> Any:
        """Async twin of :meth:`run`: waits on the socket with the event loop, no thread."""
        try:
            return await self._arun_once(call, codec)
        except WorkerCrashed:
            if not call.idempotent or call.want is not None:
                raise
            return await self._arun_once(call, codec)

    async def _arun_once(self, call: Call, codec: HostCodec) -> Any:
        import asyncio

        worker = await self.aacquire(call.want)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout if call.timeout is not None else None
        try:
            self._send(worker, call)
            worker.conn.poll_briefly(self._poll_s())  # a fast answer skips the event-loop trip
            while True:
                body = worker.conn.parse()
                if body is None:
                    await _readable(loop, worker.conn.fd, deadline)
                    worker.conn.feed_nonblocking()
                    continue
                done, value = self._answer(worker, call, body, codec)
                if done:
                    break
        except BaseException as exc:
            raise self._abandon(worker, call, exc) from None
        return self._deliver(worker, value)

    def run_many(self, calls: list[Call], codec: HostCodec, window: int = 32) -> list[Any]:
        """Answers to ``calls`` in order, pipelined: up to ``window`` calls in flight per worker.

        Uses every worker that is free (at least one). A remote error is returned in place of
        that call's value; a crashed or overrunning worker fails only the calls it held.
        """
        import selectors

        workers = [self.acquire(None)]
        with self._lock:
            while self._idle and not self._closed:
                worker = self._idle.pop()
                worker.state = "busy"
                workers.append(worker)
        results: list[Any] = [None] * len(calls)
        queue = collections.deque(enumerate(calls))
        in_flight: dict[WorkerProcess, collections.deque[tuple[int, Call]]] = {
            w: collections.deque() for w in workers
        }
        deadline = None
        timeouts = [c.timeout for c in calls if c.timeout is not None]
        if timeouts:
            deadline = time.monotonic() + max(timeouts)

        def feed(worker: WorkerProcess) -> None:
            while queue and len(in_flight[worker]) < window:
                index, call = queue.popleft()
                self._send(worker, call)
                in_flight[worker].append((index, call))

        def lose(worker: WorkerProcess, exc: BaseException) -> None:
            held = in_flight.pop(worker)
            selector.unregister(worker.conn.sock)
            error = self._fail(worker, held[0][1] if held else calls[0], exc)
            for index, _ in held:
                results[index] = error

        selector = selectors.DefaultSelector()
        try:
            for worker in workers:
                selector.register(worker.conn.sock, selectors.EVENT_READ, worker)
                feed(worker)
            while any(in_flight.values()):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    for worker in [w for w, held in in_flight.items() if held]:
                        lose(worker, TimeoutError())
                    break
                for key, _ in selector.select(remaining):
                    worker = key.data
                    try:
                        worker.conn.feed_nonblocking()
                        while in_flight[worker] and (body := worker.conn.parse()) is not None:
                            index, call = in_flight[worker][0]
                            done, value = self._answer(worker, call, body, codec)
                            if done:
                                in_flight[worker].popleft()
                                results[index] = value
                        feed(worker)
                    except (PeerClosed, OSError, ProtocolError) as exc:
                        lose(worker, exc)
                        if queue and not in_flight:
                            workers.append(self.acquire(None))
                            in_flight[workers[-1]] = collections.deque()
                            selector.register(
                                workers[-1].conn.sock, selectors.EVENT_READ, workers[-1]
                            )
                            feed(workers[-1])
        finally:
            selector.close()
            for worker in in_flight:
                self._release(worker)
        return results

    def ping(self, worker: WorkerProcess, timeout: float = 5.0) -> dict[str, Any]:
        """Round-trip a PING on ``worker`` (leased for the duration); its stats."""
        leased = self.acquire(worker)
        stats = self._ping_leased(leased, timeout)
        self._release(leased)
        return stats

    def _ping_leased(self, worker: WorkerProcess, timeout: float) -> dict[str, Any]:
        import msgpack

        ping = Call(p.frame(msgpack.packb([p.PING, 0])), 0, "a health ping", Session(0), timeout)
        try:
            self._send(worker, ping)
            worker.calls -= 1  # a ping is not a call served
            body = worker.conn.read(time.monotonic() + timeout)
            stats: dict[str, Any] = msgpack.unpackb(body, raw=False)[2]
        except (TimeoutError, PeerClosed, OSError, ProtocolError) as exc:
            raise self._fail(worker, ping, exc, overrun="unresponsive") from None
        return stats


async def _readable(loop: asyncio.AbstractEventLoop, fd: int, deadline: float | None) -> None:
    import asyncio

    future: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, ready)
    try:
        if deadline is None:
            await future
        else:
            await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
    finally:
        loop.remove_reader(fd)
