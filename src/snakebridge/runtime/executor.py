"""``snakebridge.executor``: the pool as a :class:`concurrent.futures.Executor`.

Work is pipelined: a dispatcher thread takes everything queued and sends it to every free
worker of the pool at once (up to 32 calls in flight per worker, answers matched by id); a
batch of a few calls runs call by call instead, so a short call is never held up by a long
one beside it. Work that must run on one particular worker (its arguments hold Refs) and
arbitrary host callables run on a few helper threads.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from snakebridge.errors import SnakeBridgeError
from snakebridge.runtime.calls import Call, prepare
from snakebridge.runtime.client import runtime
from snakebridge.runtime.pool import Pool
from snakebridge.runtime.refs import current_session
from snakebridge_worker import protocol as p

__all__ = ["Executor", "ExecutorShutdown", "executor"]

_MAX_BATCH = 4096
_SOLO_MAX = 4  # a batch this small runs call by call, each future done as its answer comes


class ExecutorShutdown(SnakeBridgeError, RuntimeError):
    """Work was submitted to an executor after ``shutdown()``."""


@dataclass
class _Item:
    """Queued work: one future and the calls that complete it (several for a map chunk)."""

    future: cf.Future[Any]
    pool: Pool
    calls: list[Call]
    many: bool  # the future's result is the list of answers (a map chunk), else the one answer


class Executor(cf.Executor):
    """Runs library symbols, facade functions and helpers of one library on one pool."""

    def __init__(
        self,
        lib: str | None = None,
        pool: str | None = None,
        *,
        timeout: float | None = None,
        max_threads: int | None = None,
    ) -> None:
        if lib is None and pool is None:
            pool = "default"
        self.lib = lib
        self._timeout = timeout
        self._pool_name = pool
        self._pool: Pool | None = runtime().pool(pool) if pool is not None else None
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = threading.Condition()
        self._shutdown = False
        self._threads: cf.ThreadPoolExecutor | None = None
        self._max_threads = max_threads
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="snakebridge-executor", daemon=True
        )
        self._dispatcher.start()

    # -- resolving what to run --------------------------------------------------------------
    def _target(self, fn: Any) -> tuple[str, str] | None:
        """(library, symbol) for a symbol name or a generated facade function, else None."""
        if isinstance(fn, str):
            if ":" in fn:
                module, _, symbol = fn.partition(":")
                return module, symbol
            if self.lib is None:
                raise TypeError(
                    f"submit({fn!r}): this executor has no library; create it with "
                    f"snakebridge.executor(lib=...) or write 'module:{fn}'"
                )
            return self.lib, fn
        remote = getattr(fn, "__sb_symbol__", None)
        if remote is None and isinstance(fn, type | types.FunctionType):
            remote = getattr(fn, "__sb_remote__", None)  # a facade function or class
        if isinstance(remote, tuple) and len(remote) == 2:
            return str(remote[0]), str(remote[1])
        namespace = getattr(fn, "__globals__", None)
        if (
            isinstance(namespace, dict)
            and isinstance(namespace.get("_LIB"), str)
            and getattr(namespace.get("_sb"), "__name__", "") == "snakebridge.facade"
            and getattr(fn, "__qualname__", "") == getattr(fn, "__name__", None)
        ):
            return namespace["_LIB"], fn.__name__  # a generated module-level facade function
        return None

    def _prepared(
        self, lib: str, symbol: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Pool, Call]:
        pool, module, configured = runtime().route(lib)
        idempotent = configured is True or (isinstance(configured, list) and symbol in configured)
        if self._pool is not None:
            pool = self._pool
        call = prepare(
            pool.spec.call_timeout,
            module,
            symbol,
            None,
            p.OP_CALL,
            list(args),
            kwargs or None,
            self._timeout,
            idempotent,
            current_session(),
            pool=pool,
        )
        return pool, call

    def _check_open(self) -> None:
        if self._shutdown:
            raise ExecutorShutdown("cannot submit work after shutdown(); create a new executor")

    # -- the Executor interface -------------------------------------------------------------
    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; a Future of its result (or of its error)."""
        self._check_open()
        target = self._target(fn)
        if target is None:
            if not callable(fn):
                raise TypeError(f"cannot submit {fn!r}: give a symbol name or a callable")
            return self._thread_pool().submit(fn, *args, **kwargs)
        pool, call = self._prepared(*target, args, kwargs)
        if call.want is not None:  # Refs in the arguments: that worker, through the plain path
            return self._thread_pool().submit(pool.run, call)
        future: cf.Future[Any] = cf.Future()
        self._put([_Item(future, pool, [call], many=False)])
        return future

    def map(
        self,
        fn: Any,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Results of ``fn`` over the zipped iterables, in order (like ``Executor.map``).

        ``chunksize`` items share one future; ``timeout`` bounds the whole iteration.
        """
        futures = self._submit_chunks(fn, iterables, chunksize)
        end = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            try:
                for future in futures:
                    remaining = None if end is None else end - time.monotonic()
                    yield from _values(future.result(remaining))
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def imap_unordered(self, fn: Any, iterable: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Results of ``fn`` over ``iterable`` as they complete (raises at a failed item)."""
        futures = self._submit_chunks(fn, (iterable,), chunksize)
        try:
            for future in cf.as_completed(futures):
                yield from _values(future.result())
        finally:
            for future in futures:
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more work; cancel what is queued if asked; wait for the rest if asked."""
        with self._wakeup:
            self._shutdown = True
            if cancel_futures:
                for item in self._queue:
                    item.future.cancel()
                self._queue.clear()
            self._wakeup.notify_all()
        if self._threads is not None:
            self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if wait:
            self._dispatcher.join()

    # -- plumbing -------------------------------------------------------------------------------
    def _submit_chunks(
        self, fn: Any, iterables: tuple[Iterable[Any], ...], chunksize: int
    ) -> list[cf.Future[Any]]:
        if chunksize < 1:
            raise ValueError(f"chunksize must be at least 1, got {chunksize}")
        self._check_open()
        target = self._target(fn)
        rows = list(zip(*iterables, strict=False))
        if target is None:
            return [self.submit(fn, *row) for row in rows]
        futures: list[cf.Future[Any]] = []
        items: list[_Item] = []
        for start in range(0, len(rows), chunksize):
            prepared = [self._prepared(*target, row, {}) for row in rows[start : start + chunksize]]
            pool, calls = prepared[0][0], [call for _, call in prepared]
            future: cf.Future[Any] = cf.Future()
            if any(call.want is not None for call in calls):
                future = self._thread_pool().submit(_run_each, pool, calls)
            else:
                items.append(_Item(future, pool, calls, many=True))
            futures.append(future)
        self._put(items)
        return futures

    def _thread_pool(self) -> cf.ThreadPoolExecutor:
        with self._wakeup:
            if self._threads is None:
                size = self._max_threads or (self._pool.size if self._pool else 2)
                self._threads = cf.ThreadPoolExecutor(size, thread_name_prefix="snakebridge-ex")
            return self._threads

    def _put(self, items: list[_Item]) -> None:
        if not items:
            return
        with self._wakeup:
            self._check_open()
            self._queue.extend(items)
            self._wakeup.notify()

    def _dispatch(self) -> None:
        """Take everything queued and run it: pipelined per pool, or call by call when little.

        A big batch goes through ``run_many`` (its futures complete when it is done); a small
        one runs on the solo threads, so a long call never holds up a short one beside it.
        """
        solo = cf.ThreadPoolExecutor(_SOLO_MAX, thread_name_prefix="snakebridge-ex-solo")
        try:
            while True:
                with self._wakeup:
                    while not self._queue and not self._shutdown:
                        self._wakeup.wait()
                    if not self._queue:
                        return
                    count = min(len(self._queue), _MAX_BATCH)
                    batch = [self._queue.popleft() for _ in range(count)]
                batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
                for pool, items in _by_pool(batch).items():
                    if sum(len(item.calls) for item in items) <= _SOLO_MAX:
                        for item in items:
                            solo.submit(self._run_batch, pool, [item])
                    else:
                        self._run_batch(pool, items)
        finally:
            solo.shutdown(wait=True)

    def _run_batch(self, pool: Pool, items: list[_Item]) -> None:
        calls = [call for item in items for call in item.calls]
        try:
            answers = pool.run_many(calls)
        except BaseException as exc:  # the pool is closed, no worker could start, ...
            for item in items:
                item.future.set_exception(exc)
            return
        position = 0
        for item in items:
            values = answers[position : position + len(item.calls)]
            position += len(item.calls)
            if item.many:
                item.future.set_result(values)
            elif isinstance(values[0], Exception):
                item.future.set_exception(values[0])
            else:
                item.future.set_result(values[0])


def _by_pool(items: list[_Item]) -> dict[Pool, list[_Item]]:
    groups: dict[Pool, list[_Item]] = {}
    for item in items:
        groups.setdefault(item.pool, []).append(item)
    return groups


def _values(chunk: Any) -> Iterator[Any]:
    for value in chunk:
        if isinstance(value, Exception):
            raise value
        yield value


def _run_each(pool: Pool, calls: list[Call]) -> list[Any]:
    answers: list[Any] = []
    for call in calls:
        try:
            answers.append(pool.run(call))
        except Exception as exc:
            answers.append(exc)
    return answers


def executor(
    lib: str | None = None,
    pool: str | None = None,
    *,
    timeout: float | None = None,
) -> Executor:
    """A :class:`concurrent.futures.Executor` over a pool.

    ``lib`` is the library (or helper module) whose symbols ``submit("name", ...)`` names;
    ``pool`` overrides the pool its library routes to; ``timeout`` applies to every call.
    """
    return Executor(lib, pool, timeout=timeout)
