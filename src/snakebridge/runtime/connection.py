"""Host end of one worker's socket: length-prefixed frames, size limits, deadlines."""

from __future__ import annotations

import contextlib
import select
import socket
import time

from snakebridge.runtime.errors import ProtocolError
from snakebridge_worker.protocol import DEFAULT_MAX_FRAME, HEADER, frame

__all__ = ["Connection", "PeerClosed"]

_RECV_SIZE = 1 << 16
_LARGE = 1 << 16
_POLL_MISSES = 4  # polls in a row that found nothing before polling pauses
_POLL_SKIP = 64  # calls to skip polling for, then try again


class PeerClosed(Exception):
    """The worker closed its end (it exited or crashed)."""


class Connection:
    """Frames over a connected stream socket; reads are done by one thread at a time."""

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.fd = sock.fileno()
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._scratch = bytearray(_RECV_SIZE)
        self._view = memoryview(self._scratch)
        self._poll_misses = 0
        self._poll_skip = 0
        self._poller = select.poll()
        self._poller.register(self.fd, select.POLLIN)

    def send(self, data: bytes) -> None:
        """Send bytes that are already framed (one or several frames)."""
        self.sock.sendall(data)

    def send_body(self, body: bytes) -> None:
        self.sock.sendall(frame(body))

    def _size(self) -> int:
        size: int = HEADER.unpack_from(self._buffer)[0]
        if size > self.max_frame:
            raise ProtocolError(
                f"worker sent a frame of {size} bytes, over the {self.max_frame}-byte limit; "
                "the connection was closed"
            )
        return size

    def parse(self) -> bytes | bytearray | None:
        """The next complete frame body already buffered, or None."""
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        size = self._size()
        end = 4 + size
        if len(buffer) < end:
            return None
        body = bytes(buffer[4:end])
        del buffer[:end]
        return body

    def _wait(self, deadline: float | None) -> None:
        if deadline is None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self._poller.poll(remaining * 1000.0):
            raise TimeoutError

    def read(self, deadline: float | None = None, poll_s: float = 0.0) -> bytes | bytearray:
        """Block until a whole frame arrives; TimeoutError past ``deadline``, PeerClosed at EOF.

        ``poll_s`` > 0 first polls without blocking for that long: an answer that comes back
        within it costs no sleep and wake-up of this thread.
        """
        if poll_s and not self._buffer:
            self.poll_briefly(poll_s)
        while True:
            body = self.parse()
            if body is not None:
                return body
            if len(self._buffer) >= 4 and self._size() > _LARGE:
                return self._read_large(deadline)
            self._wait(deadline)
            got = self.sock.recv_into(self._scratch)
            if not got:
                raise PeerClosed
            if not self._buffer and got >= 4:
                size: int = HEADER.unpack_from(self._scratch)[0]
                if size + 4 == got:  # exactly one whole frame: the common small reply
                    return bytes(self._view[4:got])
            self._buffer += self._view[:got]

    def _read_large(self, deadline: float | None) -> bytearray:
        size = self._size()
        body = bytearray(size)
        have = len(self._buffer) - 4
        body[:have] = self._buffer[4:]
        self._buffer.clear()
        view = memoryview(body)
        while have < size:
            self._wait(deadline)
            got = self.sock.recv_into(view[have:], min(size - have, 1 << 22))
            if not got:
                raise PeerClosed
            have += got
        return body

    def feed_nonblocking(self) -> None:
        """Read whatever is available now (for the asyncio path); PeerClosed at EOF."""
        try:
            chunk = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not chunk:
            raise PeerClosed
        self._buffer += chunk

    def poll_briefly(self, seconds: float) -> None:
        """Read without blocking for up to ``seconds`` or until a whole frame is buffered.

        Adaptive: after a few polls in a row that found nothing (the peer shares this CPU, or
        its calls are slow) polling is skipped for a while, so it never costs a lone CPU.
        """
        if self._poll_skip:
            self._poll_skip -= 1
            return
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if self._poller.poll(0):  # cheaper than a recv that raises when nothing is there
                self.feed_nonblocking()
                if self.frame_ready():
                    self._poll_misses = 0
                    return
        self._poll_misses += 1
        if self._poll_misses >= _POLL_MISSES:
            self._poll_misses, self._poll_skip = 0, _POLL_SKIP

    def frame_ready(self) -> bool:
        buffer = self._buffer
        return len(buffer) >= 4 and len(buffer) >= 4 + int(HEADER.unpack_from(buffer)[0])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
