"""Streamed answers: a call with ``FLAG_STREAM`` is answered by CHUNK frames under credit.

The host grants credit in chunks (``CREDIT``); with none left the worker stops pulling the
iterator until more arrives, so an endless generator keeps memory flat on both sides. Items
are batched while the iterator produces them fast (the first item always goes alone, so the
first result is never delayed) and sent alone when it is slow. ``CANCEL`` closes the iterator
(its ``finally`` runs) and is answered with ``STREAM_END`` ``{"cancelled": true}`` before the
worker reads its next call. An exception from the iterator is sent as ``ERROR`` right after
the items that preceded it.
"""

from __future__ import annotations

import select
import sys
import time
from typing import Any, Callable, Dict, List

from snakebridge_worker import protocol as p

MAX_ITEMS = 1024  # items per CHUNK at most
MAX_BYTES = 1 << 20  # flush a chunk once its items hold about this many bytes
FLUSH_S = 2e-3  # flush a chunk whose oldest item waited this long


def _size(item: Any) -> int:
    """A cheap estimate of an item's encoded size (buffers and strings; others are small)."""
    nbytes = getattr(item, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(item, (bytes, bytearray, str)):
        return len(item)
    return 16


class _Stream:
    """Credit and cancellation of one stream the worker is pushing."""

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        self.credit = 0
        self.cancelled = False


ACTIVE: Dict[int, _Stream] = {}


def expect(call_id: int) -> None:
    """A streamed call was read and will run on another thread (#15): count the CREDIT and
    CANCEL that arrive for it before its thread starts, instead of dropping them."""
    ACTIVE.setdefault(call_id, _Stream(call_id))


def forget(call_id: int) -> None:
    """Streamed call ``call_id`` is over, whether it streamed or failed first."""
    ACTIVE.pop(call_id, None)


def control(message: List[Any]) -> None:
    """A CREDIT or CANCEL frame from the host (one for a stream that ended is dropped)."""
    stream = ACTIVE.get(message[1])
    if stream is None:
        return
    if message[0] == p.CREDIT:
        stream.credit += int(message[2])
    else:
        stream.cancelled = True


def _frame_waiting(connection: Any) -> bool:
    if len(connection.buffer) >= 4:
        return True
    ready, _, _ = select.select([connection.sock], [], [], 0)
    return bool(ready)


class _Pusher:
    """Drives one iterator on the calling thread and sends its items.

    Frames that arrive meanwhile go through the worker's own ``route`` (as inside a host
    callback: a call that is not nested waits until the stream is over), so CREDIT and CANCEL
    reach :func:`control` wherever they are read, even by a callback's loop.
    """

    def __init__(self, worker: Any, call_id: int, error_payload: Callable[..., Any]) -> None:
        self.worker = worker
        self.stream = ACTIVE.get(call_id) or _Stream(call_id)
        self.error_payload = error_payload

    def _read_one(self) -> None:
        self.worker.read_and_act(in_callback=True)

    def wait_for_credit(self) -> None:
        stream, worker = self.stream, self.worker

        def ready() -> bool:
            return stream.credit > 0 or stream.cancelled

        while True:
            with worker.cv:
                if not worker._lead_or_wait(ready):
                    return
            self._read_one()

    def poll(self) -> None:
        """Handle frames that already arrived, without waiting."""
        worker = self.worker
        while _frame_waiting(worker.connection):
            with worker.cv:
                if worker.reading:
                    return
                worker.reading = True
            self._read_one()

    def send_chunk(self, items: List[Any]) -> bool:
        """Send one CHUNK (waiting for credit first); False when the stream was cancelled."""
        if self.stream.credit <= 0 and not self.stream.cancelled:
            self.wait_for_credit()
        if self.stream.cancelled:
            return False
        self._send_items(items)
        self.stream.credit -= 1
        return True

    def _send_items(self, items: List[Any]) -> None:
        """One CHUNK, its Refs registered in this stream's session (#15: with the thread
        profile, the codec's session is whichever call set it last; this thread's is its own).
        An item that cannot be encoded raises, and leaves no Refs registered."""
        worker = self.worker
        codec = worker.codec
        with worker.send_lock:
            outer = codec.session, codec.path_values
            state = getattr(worker._local, "call", None)
            if state is not None:
                codec.session, codec.path_values = state
            try:
                body = codec.pack_reply(worker.packer, [p.CHUNK, self.stream.call_id, items])
            finally:
                codec.session, codec.path_values = outer
            worker.connection.send(body)

    def run(self, iterator: Any) -> None:
        ACTIVE[self.stream.call_id] = self.stream
        try:
            self._pump(iterator)
        finally:
            ACTIVE.pop(self.stream.call_id, None)

    def _pump(self, iterator: Any) -> None:
        call_id, stream, worker = self.stream.call_id, self.stream, self.worker
        items: List[Any] = []
        target, size, oldest = 1, 0, 0.0
        while not stream.cancelled:
            try:
                item = next(iterator)
            except StopIteration:
                if not items or self.send_chunk(items):
                    worker.send([p.STREAM_END, call_id, None])
                    return
                break
            except BaseException as exc:  # at the item where it happened
                if not items or self.send_chunk(items):
                    worker.reply(p.ERROR, call_id, self.error_payload(p.ERR_REMOTE, exc))
                    return
                break
            now = time.perf_counter()
            if not items:
                oldest = now
            items.append(item)
            size += _size(item)
            full = len(items) >= target
            if not (full or size >= MAX_BYTES or now - oldest >= FLUSH_S):
                continue
            try:
                sent = self.send_chunk(items)
            except Exception as exc:  # an item that cannot be encoded
                worker.reply(p.ERROR, call_id, self.error_payload(p.ERR_REMOTE, exc))
                _close(iterator)
                return
            if not sent:
                break
            target = min(target * 2, MAX_ITEMS) if full else max(1, len(items))
            items, size = [], 0
            self.poll()
        _close(iterator)
        worker.send([p.STREAM_END, call_id, {"cancelled": True}])


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is None:
        return
    try:
        close()  # a generator's finally runs here
    except Exception as exc:
        sys.stderr.write(f"snakebridge worker: closing a cancelled stream raised {exc!r}\n")


def push(worker: Any, call_id: int, result: Any, error_payload: Callable[..., Any]) -> None:
    """Answer call ``call_id`` by streaming the items of ``result``."""
    try:
        iterator = iter(result)
    except TypeError:
        problem = TypeError(
            f"a streamed call must return an iterable, not {type(result).__name__}; "
            "use snakebridge.call for it"
        )
        worker.reply(p.ERROR, call_id, error_payload(p.ERR_REMOTE, problem, False))
        return
    _Pusher(worker, call_id, error_payload).run(iterator)
