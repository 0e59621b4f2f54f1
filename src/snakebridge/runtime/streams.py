"""``snakebridge.stream``: iterate a worker's generator as it produces, under a credit window.

A stream leases a worker through the pool's queue (like a call), sends the call with
``FLAG_STREAM`` and ``window`` chunks of credit, and holds the worker until the stream ends:
each chunk the host takes is credited back, so the worker never runs more than ``window``
chunks ahead. Closing early sends ``CANCEL`` and waits for the worker's acknowledgement, so
the generator's ``finally`` has run before the worker takes another call.

(Over 350 lines on purpose: the sync and async streams, their cancellation and the facade twins'
entry points share the credit bookkeeping kept here.)
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, TypedDict, TypeVar, Unpack

import msgpack

from snakebridge.errors import CallTimeout, ProtocolError, SnakeBridgeError, WorkerCrashed
from snakebridge.runtime.calls import Call, prepare
from snakebridge.runtime.client import runtime
from snakebridge.runtime.pool import Pool
from snakebridge.runtime.refs import Session
from snakebridge_worker import protocol as p

__all__ = ["AsyncStream", "Stream", "astream", "invoke_astream", "invoke_stream", "stream"]

DEFAULT_WINDOW = 8
CANCEL_GRACE_S = 5.0


def _control(kind: int, call_id: int, *rest: Any) -> bytes:
    return p.frame(msgpack.packb([kind, call_id, *rest]))


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` leaves the worker unusable (else it answered and can go back)."""
    return not isinstance(exc, Exception) or isinstance(
        exc, WorkerCrashed | CallTimeout | ProtocolError | TimeoutError | OSError
    )


class _Base:
    """What the sync and async streams share: the call, the buffer, credit and deadlines."""

    def __init__(
        self, pool: Pool, call: Call, window: int, item_timeout: float | None, timeout: float | None
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1 chunk, got {window}")
        self.pool, self.call, self.window = pool, call, window
        self.item_timeout = item_timeout
        self.timeout = timeout
        self.channel: Any = None
        self.items: collections.deque[Any] = collections.deque()
        self.ended = False  # the worker finished, failed or acknowledged a cancel
        self.closed = False
        self._taken = 0  # chunks received since credit was last granted
        self._until: float | None = None

    def _opened(self, channel: Any) -> None:
        self.channel = channel
        channel.send(_control(p.CREDIT, self.call.call_id, self.window))
        if self.timeout is not None:
            self._until = time.monotonic() + self.timeout

    def _close_channel(self, error: BaseException | None) -> None:
        """Give the worker back (``error`` None) or have it replaced."""
        self.channel.close(error)

    def _deadline(self) -> float | None:
        item = None if self.item_timeout is None else time.monotonic() + self.item_timeout
        if self._until is None:
            return item
        return self._until if item is None else min(item, self._until)

    def _check_overall(self) -> None:
        """CallTimeout once the whole stream's ``timeout`` has passed (even while items flow)."""
        if self._until is not None and time.monotonic() >= self._until:
            raise CallTimeout(
                f"stream of {self.call.description} ran past its timeout ({self.timeout}s); "
                "the worker was replaced"
            )

    def _take(self, message: list[Any]) -> None:
        """Buffer a CHUNK (granting credit back) or note the end."""
        kind = message[0]
        if kind == p.CHUNK:
            self.items.extend(message[2])
            self._taken += 1
            if self._taken >= max(1, self.window // 2):
                self.channel.send(_control(p.CREDIT, self.call.call_id, self._taken))
                self._taken = 0
        elif kind == p.STREAM_END:
            self.ended = True
            self._close_channel(None)
        else:
            raise SnakeBridgeError(f"unexpected frame kind {kind} in a stream")

    def _failed(self, exc: BaseException) -> None:
        """The stream cannot go on: a remote error (worker healthy) or a lost/overrun worker."""
        self.ended = self.closed = True
        if self.channel is not None:
            self._close_channel(exc if _lost(exc) else None)

    def _send_cancel(self) -> float | None:
        """Close this stream and send CANCEL: the deadline for the worker's acknowledgement,
        or None when there is none to wait for (closed already, never opened, or ended)."""
        if self.closed:
            return None
        self.closed = True
        self.items.clear()
        if self.channel is None or self.ended:
            return None
        self.channel.send(_control(p.CANCEL, self.call.call_id))
        return time.monotonic() + (self.item_timeout or CANCEL_GRACE_S)

    def _cancel(self) -> None:
        """Send CANCEL and read until the worker acknowledges (blocking), then let it go."""
        grace = self._send_cancel()
        if grace is None or self.channel is None:
            return
        try:
            while not self.ended:
                if self.channel.next_message(grace)[0] == p.STREAM_END:
                    self.ended = True
        except BaseException as exc:
            self.ended = True
            self._close_channel(exc)  # no acknowledgement in time: the worker is replaced
            if not isinstance(exc, Exception):
                raise
        else:
            self._close_channel(None)


class Stream(_Base, Iterator[Any]):
    """Items of a remote iterable, as they arrive; ``close()`` (or ``break``) cancels it."""

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        while not self.items:
            if self.ended or self.closed:
                raise StopIteration
            if self.channel is None:
                self._opened(self.pool.open_channel(self.call))
            try:
                self._check_overall()
                message = self.channel.next_message(self._deadline())
            except BaseException as exc:
                self._failed(exc)
                raise
            self._take(message)
        return self.items.popleft()

    def close(self) -> None:
        """Cancel the remote generator (its ``finally`` runs) and give the worker back."""
        self._cancel()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown, or the pool is gone
            self._cancel()


class AsyncStream(_Base, AsyncIterator[Any]):
    """Async twin of :class:`Stream`: ``async for item in snakebridge.astream(...)``."""

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Any:

        while not self.items:
            if self.ended or self.closed:
                raise StopAsyncIteration
            if self.channel is None:
                self._opened(await self._open())
            try:
                self._check_overall()
                message = await self.channel.anext_message(self._deadline())
            except BaseException as exc:
                self._failed(exc)
                raise
            self._take(message)
        return self.items.popleft()

    async def _open(self) -> Any:
        """Lease and send on a thread of its own (the queue may block); a wait that is
        cancelled, or an event loop that closes meanwhile, frees the worker once it comes."""
        import asyncio

        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            try:
                channel = self.pool.open_channel(self.call)
            except BaseException as exc:
                error = exc

                def fail() -> None:
                    if not opened.done():
                        opened.set_exception(error)

                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits
                    loop.call_soon_threadsafe(fail)
                return

            decided = threading.Event()
            owner: list[str] = []  # "loop" once the waiter has it, "thread" once given up
            lock = threading.Lock()

            def hand() -> None:
                with lock:
                    if not owner:
                        owner.append("thread" if opened.done() else "loop")
                if owner[0] == "loop":
                    opened.set_result(channel)
                elif not opened.done():
                    opened.set_exception(CallTimeout("the event loop took too long to start it"))
                decided.set()

            with contextlib.suppress(RuntimeError):  # a closed loop never decides
                loop.call_soon_threadsafe(hand)
            decided.wait(CANCEL_GRACE_S)
            with lock:
                if not owner:
                    owner.append("thread")
            if owner[0] == "thread":  # nobody takes it: cancel it properly, the worker goes back
                ghost = Stream(self.pool, self.call, self.window, self.item_timeout, None)
                ghost.channel = channel
                ghost._cancel()

        threading.Thread(target=work, name="snakebridge-stream-open", daemon=True).start()
        try:
            return await opened
        except asyncio.CancelledError:
            self.closed = self.ended = True
            raise

    async def aclose(self) -> None:
        """Cancel the remote generator and give the worker back."""
        grace = self._send_cancel()
        if grace is None or self.channel is None:
            return
        try:
            while not self.ended:
                message = await self.channel.anext_message(grace)
                if message[0] == p.STREAM_END:
                    self.ended = True
            self._close_channel(None)
        except Exception as exc:
            self.ended = True
            self._close_channel(exc)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # dropped without aclose(): cancel, blocking
            self._cancel()


_INT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def _skip_uint(frame: bytearray, at: int) -> int:
    lead = frame[at]
    return at + 1 + (0 if lead < 0x80 else _INT_WIDTH[lead])


def with_stream_flag(frame: bytes) -> bytes:
    """A CALL frame with ``FLAG_STREAM`` set (``[2, id, session, flags, ...]``, flags < 128)."""
    patched = bytearray(frame)
    at = 4 + 1 + 1  # length prefix, fixarray header, kind
    at = _skip_uint(patched, _skip_uint(patched, at))  # call id, session
    if patched[at] >= 0x80:
        raise ValueError("unexpected CALL layout")
    patched[at] |= p.FLAG_STREAM
    return bytes(patched)


def _prepared(
    lib: str,
    symbol: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    session: Session | None,
) -> tuple[Pool, Call]:
    pool, module, _ = runtime().route(lib)
    call = prepare(
        pool.spec.call_timeout,
        module,
        symbol,
        None,
        p.OP_CALL,
        args,
        kwargs,
        None,
        False,
        session,
        pool=pool,
    )
    call.frame = with_stream_flag(call.frame)
    return pool, call


class StreamOptions(TypedDict, total=False):
    """The keyword options of :func:`stream` and :func:`astream`.

    ``item_timeout`` bounds the wait for each item (default: the pool's ``call_timeout``),
    ``timeout`` the whole stream; ``window`` is how many chunks the worker may run ahead
    (default :data:`DEFAULT_WINDOW`); ``session`` owns the Refs among its items.
    """

    timeout: float | None
    item_timeout: float | None
    window: int
    session: Session | None


_S = TypeVar("_S", "Stream", "AsyncStream")


def _open(
    cls: type[_S],
    lib: str,
    symbol: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    options: StreamOptions,
) -> _S:
    unknown = sorted(set(options) - StreamOptions.__optional_keys__)
    if unknown:
        name = "astream" if cls is AsyncStream else "stream"
        raise TypeError(f"{name}() got unexpected keyword arguments {unknown}")
    pool, call = _prepared(lib, symbol, args, kwargs, options.get("session"))
    item_timeout = options.get("item_timeout") or pool.spec.call_timeout
    return cls(
        pool, call, options.get("window", DEFAULT_WINDOW), item_timeout, options.get("timeout")
    )


def stream(
    lib: str,
    symbol: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Unpack[StreamOptions],
) -> Stream:
    """Iterate ``lib.symbol(*args, **kwargs)`` in a worker as it produces items.

    Options (:class:`StreamOptions`): ``timeout``, ``item_timeout``, ``window``, ``session``.
    The stream holds its worker until it ends or is closed (``break`` closes it); on a
    thread-profile worker it holds one of the worker's threads.
    """
    return _open(Stream, lib, symbol, args, kwargs, options)


def astream(
    lib: str,
    symbol: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    **options: Unpack[StreamOptions],
) -> AsyncStream:
    """Async twin of :func:`stream`: ``async for item in snakebridge.astream(...)``."""
    return _open(AsyncStream, lib, symbol, args, kwargs, options)


def invoke_stream(
    library: str,
    qualname: str,
    params: Any = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Stream:
    """What a facade's ``name_stream`` twin calls (arguments as ``facade.invoke`` takes them)."""
    from snakebridge.facade import _arguments

    args, kwargs = _arguments(params, var_args, var_kwargs)
    return stream(library, qualname, args, kwargs or None)


def invoke_astream(
    library: str,
    qualname: str,
    params: Any = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> AsyncStream:
    """What an async facade's ``name_stream`` twin calls (``async for`` over it)."""
    from snakebridge.facade import _arguments

    args, kwargs = _arguments(params, var_args, var_kwargs)
    return astream(library, qualname, args, kwargs or None)
