"""One message in flight (:class:`Pending`), how its waiter is woken, and reading a frame's
kind and id without decoding it: the pieces the exchange (:mod:`exchange`) and leasing share."""

from __future__ import annotations

import collections
import contextlib
import threading
from typing import TYPE_CHECKING, Any

from snakebridge.errors import ProtocolError
from snakebridge.runtime.answers import error_from_payload
from snakebridge_worker import protocol as p

if TYPE_CHECKING:
    import asyncio

    from snakebridge.runtime.refs import Session
    from snakebridge.runtime.socketreader import Lane

__all__ = [
    "FINISHING",
    "FOR_CALLS",
    "ON_LANES",
    "Lost",
    "Pending",
    "Signal",
    "answer_value",
    "peek",
    "resolve",
    "wake_future",
]


class Lost(Exception):
    """The worker was lost before this call started: send it again elsewhere."""


class Signal:
    """A one-waiter wake-up: ``set`` from any thread, ``wait`` consumes it (a binary semaphore).

    Cheaper than ``threading.Event`` (one lock, no condition variable): a set that comes before
    the wait is kept, a second set is absorbed, and a stale one only makes the waiter look again.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        if self._lock.locked():  # a second set is absorbed (a racing one too, below)
            with contextlib.suppress(RuntimeError):
                self._lock.release()

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(True, -1 if timeout is None else timeout)


def wake_future(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Resolve ``future`` of ``loop``: at once on the loop's own thread, else through the loop."""
    from asyncio import _get_running_loop

    if _get_running_loop() is loop:
        if not future.done():
            future.set_result(None)
        return
    loop.call_soon_threadsafe(resolve, future)  # RuntimeError when the loop is closed


class Pending:
    """One message in flight: its id, who waits for it, and (once done) its outcome."""

    __slots__ = (
        "batch",
        "call_id",
        "clock",
        "description",
        "done",
        "error",
        "event",
        "future",
        "inbox",
        "lane",
        "loop",
        "nested",
        "session",
        "timeout",
        "value",
    )

    def __init__(
        self,
        call_id: int,
        session: Session | None,
        timeout: float | None,
        nested: bool = False,
        description: str = "a call",
    ) -> None:
        self.call_id = call_id
        self.batch = False  # one of a map's calls: waited for only when it is that map's next
        self.description = description
        self.session = session
        self.timeout = timeout
        self.nested = nested
        self.clock: float | None = None  # when its timeout started (it reached the head)
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.inbox: collections.deque[list[Any]] | None = None  # callbacks and stream frames
        self.event: Signal | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None
        self.lane: Lane | None = None  # the answer lane its answer comes on (a thread's call)

    def deadline(self) -> float | None:
        if self.timeout is None or self.clock is None:
            return None
        return self.clock + self.timeout

    def _wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                wake_future(self.loop, self.future)

    def _post(self, message: list[Any]) -> None:
        if self.inbox is None:
            self.inbox = collections.deque()
        self.inbox.append(message)
        self._wake()


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


FINISHING = frozenset((p.RESULT, p.ERROR, p.PONG, p.STREAM_END))
ON_LANES = frozenset((p.RESULT, p.ERROR, p.CALLBACK, p.CALLBACK_RELEASE))
FOR_CALLS = frozenset((p.RESULT, p.ERROR, p.PONG, p.CHUNK, p.STREAM_END, p.CALLBACK))


def answer_value(kind: int, payload: Any) -> Any:
    """The value an answer carries (an exception instance for ERROR)."""
    if kind == p.ERROR:
        if not isinstance(payload, dict):
            raise ProtocolError(f"an ERROR frame's payload is not a map: {payload!r:.60}")
        return error_from_payload(payload)
    return payload


_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack uint8..uint64 markers


def peek(body: bytes | bytearray) -> tuple[int, int]:
    """(kind, id) of a frame without decoding it (msgpack: fixarray, then two small ints)."""
    try:
        first = body[0]
        offset = 1 if 0x90 <= first <= 0x9F else 3 if first == 0xDC else 5
        kind = body[offset]
        if kind > 0x7F:
            return -1, -1
        marker = body[offset + 1]
        if marker <= 0x7F:
            return kind, marker
        width = _UINT_WIDTH.get(marker)
        if width is None:
            return kind, -1
        start = offset + 2
        return kind, int.from_bytes(body[start : start + width], "big")
    except IndexError:
        return -1, -1
