"""Keeping a pool at strength: replacement with backoff, recycling, health and memory checks.

Housekeeping survives anything one worker does: each worker's duties run on their own, and a
worker whose duties fail unexpectedly is retired and replaced rather than stopping the loop.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from snakebridge.errors import WorkerStartError
from snakebridge.runtime.lease import State, Worker
from snakebridge.runtime.lifecycle import recycle_reason, resident_bytes
from snakebridge.runtime.telemetry import emit

if TYPE_CHECKING:
    from snakebridge.runtime.pool import Pool

__all__ = ["Supervisor"]

_MAX_BACKOFF_S = 5.0
_HEALTH_INTERVAL_S = 5.0
_HEALTH_TIMEOUT_S = 5.0
_FAIL_WAITERS_AFTER = 3


class Supervisor:
    """Starts replacements, recycles, pings and enforces ``max_memory`` for one pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.start_failures = 0
        self._last_health = time.monotonic()
        self._max_memory = pool.spec.max_memory_bytes
        self.starting = 0  # workers being started (replacements and scale-ups)
        self._scale_lock = threading.Lock()
        self.min_size = pool.spec.min_workers
        self.max_size = pool.spec.max_workers
        self.idle_timeout = pool.spec.idle_timeout_s
        if self.max_size > self.min_size:
            pool.leaser.on_queued = self.grow

    # -- autoscaling (#15) ----------------------------------------------------------------------
    def grow(self) -> None:
        """Calls queue: start workers for them, up to ``max_size`` (counting those starting)."""
        leaser = self.pool.leaser
        with self._scale_lock:
            room = self.max_size - len(leaser.workers) - self.starting
            wanted = min(room, leaser.queued)
            if wanted <= 0 or leaser.closed:
                return
            self.starting += wanted  # counted under the lock: a grow beside it sees them
        emit("runtime.pool", "grow", pool=self.pool.name, workers=wanted)
        for _ in range(wanted):
            self._start_later(None)

    def shrink(self) -> None:
        """Stop the worker idle the longest once it has been idle ``idle_timeout``, down to
        ``min_size``; only an idle worker holding no Refs is taken."""
        leaser = self.pool.leaser
        if len(leaser.workers) <= self.min_size or leaser.queued:
            return
        worker = leaser.idle_longest()
        if worker is None or time.monotonic() - worker.idle_since < self.idle_timeout:
            return
        if leaser.drain(worker):
            emit("runtime.pool", "shrink", pool=self.pool.name, pid=worker.pid)
            self.pool.retire(worker, reason="idle", replace=False)
            worker.transport.stop(1.0)

    # -- replacement ----------------------------------------------------------------------------
    def replace_later(self, old: Worker | None = None) -> None:
        """Start one worker in the background (retrying with backoff); ``old`` stops after."""
        with self._scale_lock:
            self.starting += 1
        self._start_later(old)

    def _start_later(self, old: Worker | None) -> None:
        """The thread that starts one worker already counted in ``starting``."""
        threading.Thread(
            target=self._replace,
            args=(old,),
            name=f"snakebridge-replace-{self.pool.name}",
            daemon=True,
        ).start()

    def _replace(self, old: Worker | None) -> None:
        try:
            self._start_one(old)
        finally:
            with self._scale_lock:
                self.starting -= 1

    def _start_one(self, old: Worker | None) -> None:
        pool = self.pool
        while not pool.leaser.closed:
            try:
                worker = pool.launch()
            except WorkerStartError as exc:
                self._start_failed(exc)
                continue
            except Exception as exc:  # never let the replacement loop die silently
                self._start_failed(WorkerStartError(f"cannot start a worker: {exc!r}"))
                continue
            self.start_failures = 0
            pool.leaser.start_error = None
            if pool.leaser.closed:
                worker.transport.stop(0.5)
                return
            pool.leaser.add(worker)
            startup = worker.info.get("startup", {})  # streams (#14): preload/init seconds
            emit("runtime.worker", "start", pool=pool.name, pid=worker.pid, startup=startup)
            if old is not None:
                pool.retire(old, reason="recycle", replace=False)
                old.transport.stop(1.0)
            return

    def _start_failed(self, exc: WorkerStartError) -> None:
        self.start_failures += 1
        emit("runtime.worker", "start_failed", pool=self.pool.name, error=str(exc))
        if self.start_failures >= _FAIL_WAITERS_AFTER:
            self.pool.leaser.fail_waiters(
                WorkerStartError(
                    f"pool {self.pool.name!r} cannot start workers "
                    f"({self.start_failures} failures in a row): {exc}"
                )
            )
        time.sleep(min(0.05 * 2**self.start_failures, _MAX_BACKOFF_S))

    # -- recycling ------------------------------------------------------------------------------
    def maybe_recycle(self, worker: Worker) -> None:
        """Recycle a worker that is due (idle, holding no Refs): it drains, then stops."""
        if worker.live_refs > 0 or worker.state is not State.IDLE:
            return
        spec = self.pool.spec
        reason = recycle_reason(spec, worker.calls, worker.started_at, worker.pid, self._max_memory)
        if reason is not None and self.pool.leaser.drain(worker):
            emit("runtime.worker", "recycle", pool=self.pool.name, pid=worker.pid, reason=reason)
            self.replace_later(old=worker)

    # -- housekeeping ---------------------------------------------------------------------------
    def housekeep(self) -> None:
        """Periodic duties; each worker's are isolated from the others'."""
        for worker in list(self.pool.leaser.workers):
            try:
                self._duties(worker)
            except Exception as exc:  # whatever the worker did, the loop goes on
                emit("runtime.worker", "housekeeping_error", pool=self.pool.name, error=repr(exc))
                worker.transport.kill()
                self.pool.retire(worker, reason="unhealthy")
        if self.max_size > self.min_size:
            if self.pool.leaser.queued:
                self.grow()
            self.shrink()
        if time.monotonic() - self._last_health >= _HEALTH_INTERVAL_S:
            self._last_health = time.monotonic()
            self.check_health()

    def _duties(self, worker: Worker) -> None:
        worker.line.send(worker.flush_releases())
        if worker.state is State.BUSY and self._max_memory is not None:
            rss = resident_bytes(worker.pid)
            if rss is not None and rss > self._max_memory:
                worker.line.kill_reason = (
                    f"killed: it used {rss // 2**20} MiB, over max_memory "
                    f"({self._max_memory // 2**20} MiB)"
                )
                worker.transport.kill()
        if worker.state is State.IDLE and worker.transport.exited():
            if self.pool.leaser.take_idle(worker):  # nobody else may lease it meanwhile
                worker.death = worker.transport.death("no call (it died while idle)")
                self.pool.retire(worker, reason="crash")
                self.pool.leaser.release(worker)
        elif worker.state is State.IDLE:
            self.maybe_recycle(worker)

    def check_health(self, timeout: float = _HEALTH_TIMEOUT_S) -> None:
        """Ping idle workers; one that does not answer in time is killed and replaced."""
        for worker in list(self.pool.leaser.workers):
            if not self.pool.leaser.take_idle(worker):
                continue
            try:
                self.pool.ping_leased(worker, timeout)
            except Exception as exc:  # no answer, or a malformed one: the worker is not healthy
                if worker.alive:  # (a timeout has already replaced it)
                    emit("runtime.worker", "unhealthy", pool=self.pool.name, error=repr(exc))
                    worker.transport.kill()
                    self.pool.retire(worker, reason="unhealthy")
            finally:
                self.pool.leaser.release(worker)
