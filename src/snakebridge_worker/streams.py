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

import os
import select
import sys
import time
from typing import Any, Callable, List, Optional

import msgpack

from snakebridge_worker import protocol as p

MAX_ITEMS = 1024  # items per CHUNK at most
MAX_BYTES = 1 << 20  # flush a chunk once its items hold about this many bytes
FLUSH_S = 2e-3  # flush a chunk whose oldest item waited this long
_CONTROL_PREFIXES = (b"\x93\x0a", b"\x92\x07")  # [CREDIT, id, n] and [CANCEL, id]


def _size(item: Any) -> int:
    """A cheap estimate of an item's encoded size (buffers and strings; others are small)."""
    nbytes = getattr(item, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(item, (bytes, bytearray, str)):
        return len(item)
    return 16


class _Stream:
    """Credit and cancellation of the one stream a worker is pushing."""

    def __init__(self, call_id: int) -> None:
        self.call_id = call_id
        self.credit = 0
        self.cancelled = False

    def take(self, body: bytes) -> bool:
        """Consume ``body`` if it is CREDIT or CANCEL for this stream (else leave it)."""
        if body[:2] not in _CONTROL_PREFIXES:
            return False
        message = msgpack.unpackb(body)
        if message[1] != self.call_id:
            return True  # for a stream that already ended: harmless, dropped
        if message[0] == p.CREDIT:
            self.credit += int(message[2])
        else:
            self.cancelled = True
        return True


def _readable(sock: Any, buffered: bytearray) -> bool:
    if len(buffered) >= 4:
        return True
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


class _Pusher:
    """Drives one iterator on the worker's main thread and sends its items."""

    def __init__(self, worker: Any, call_id: int, error_payload: Callable[..., Any]) -> None:
        self.worker = worker
        self.connection = worker.connection
        self.stream = _Stream(call_id)
        self.error_payload = error_payload
        self._read = self.connection.read

    def read_filtered(self) -> Optional[bytes]:
        """The connection's read with this stream's CREDIT/CANCEL taken out.

        Installed on the connection while the stream runs, so frames that arrive while the
        iterator calls back into the host (whose loop reads the socket) are never lost.
        """
        while True:
            body: Optional[bytes] = self._read()
            if body is None or not self.stream.take(body):
                return body

    def control(self, block: bool) -> None:
        """Handle frames that arrived; with ``block``, wait until there is credit or a cancel."""
        connection, stream = self.connection, self.stream
        while True:
            if block and (stream.credit > 0 or stream.cancelled):
                return
            if not block and not _readable(connection.sock, connection.buffer):
                return
            body = self._read()
            if body is None:  # the host is gone
                os._exit(0)
            if not stream.take(body):
                self.other(body)

    def other(self, body: bytes) -> None:
        """A frame that is not this stream's control: releases, pings, a stray call."""
        worker = self.worker
        message = worker.codec.unpack(body)
        kind = message[0]
        if kind == p.RELEASE:
            worker.registry.release(message[2], message[3])
        elif kind == p.RELEASE_SESSION:
            worker.registry.release_session(message[2])
        elif kind == p.SHUTDOWN:
            os._exit(0)
        elif kind in (p.CALL, p.PING):
            problem = RuntimeError(f"the worker is busy streaming call {self.stream.call_id}")
            worker.send([p.ERROR, message[1], self.error_payload(p.ERR_PROTOCOL, problem, False)])

    def send_chunk(self, items: List[Any]) -> bool:
        """Send one CHUNK (waiting for credit first); False when the stream was cancelled."""
        while self.stream.credit <= 0 and not self.stream.cancelled:
            self.control(block=True)
        if self.stream.cancelled:
            return False
        worker = self.worker
        try:
            body = worker.packer.pack([p.CHUNK, self.stream.call_id, items])
        except Exception:
            worker.packer.reset()
            raise
        worker.connection.send(body)
        self.stream.credit -= 1
        return True

    def run(self, iterator: Any) -> None:
        connection = self.connection
        connection.read = self.read_filtered
        try:
            self._pump(iterator)
        finally:
            del connection.read  # back to the class's own method

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
            self.control(block=False)
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
