"""A worker held for one streamed call, over the pool as it is until ``Pool.open_channel``.

Bridges to the lead's ``pool.open_channel(call)`` (the same interface: ``next_message``,
``anext_message``, ``send``, ``close``) where the pool has it.
"""

from __future__ import annotations

import time
from typing import Any

from snakebridge.runtime.answers import callback_reply, error_from_payload
from snakebridge.runtime.codec import CALLBACKS, codec_for_thread
from snakebridge.runtime.connection import PeerClosed
from snakebridge.runtime.errors import ProtocolError
from snakebridge.runtime.pool import Call, Pool
from snakebridge_worker import protocol as p

__all__ = ["open_channel"]


class _Channel:
    def __init__(self, pool: Pool, call: Call) -> None:
        self.pool, self.call = pool, call
        self.worker = pool.acquire(call.want)
        self.done = False
        self.closed = False
        self.codec = codec_for_thread()
        try:
            pool._send(self.worker, call)
        except BaseException as exc:
            self.closed = True
            raise pool._abandon(self.worker, call, exc) from None

    def next_message(self, deadline: float | None = None) -> list[Any]:
        worker = self.worker
        try:
            while True:
                body = worker.conn.read(deadline)
                message = self.codec.decode(body, worker, self.call.session)
                kind = message[0]
                if kind == p.CALLBACK:
                    worker.send_quietly(callback_reply(message, self.codec))
                    continue
                if kind == p.CALLBACK_RELEASE:
                    for callback_id in message[2]:
                        CALLBACKS.pop(callback_id, None)
                    continue
                if message[1] != self.call.call_id:
                    raise ProtocolError(f"frame for call {message[1]} during a stream")
                if kind == p.ERROR:
                    self.done = True
                    raise error_from_payload(message[2])
                if kind == p.STREAM_END:
                    self.done = True
                return message
        except (TimeoutError, PeerClosed, OSError, ProtocolError) as exc:
            self.closed = True
            raise self.pool._fail(worker, self.call, exc) from None

    async def anext_message(self, deadline: float | None = None) -> list[Any]:
        import asyncio

        from snakebridge.runtime.pool import _readable

        loop = asyncio.get_running_loop()
        conn = self.worker.conn
        while not conn.frame_ready():
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                await _readable(
                    loop, conn.fd, None if remaining is None else loop.time() + remaining
                )
                conn.feed_nonblocking()
            except (TimeoutError, PeerClosed, OSError) as exc:
                self.closed = True
                raise self.pool._fail(self.worker, self.call, exc) from None
        return self.next_message(deadline)

    def send(self, frame: bytes) -> None:
        with self.worker.send_lock:
            self.worker.conn.send(frame)

    def close(self, error: BaseException | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if error is None:
            self.pool._release(self.worker)
        else:
            self.worker.kill()
            self.pool._retire(self.worker, reason="interrupted")


def open_channel(pool: Pool, call: Call) -> Any:
    opener = getattr(pool, "open_channel", None)
    if opener is not None:
        return opener(call)
    return _Channel(pool, call)
