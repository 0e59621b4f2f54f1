"""Length-prefixed frames: the one frame reader both ends use (see docs/protocol.md).

Stdlib only and Python 3.9 compatible: it runs in the host and in every library env.
"""

from __future__ import annotations

from typing import Optional, Union

from snakebridge_worker.protocol import HEADER

Body = Union[bytes, bytearray]


class FrameTooLarge(ValueError):
    """A peer announced a frame over the agreed ``max_frame``."""


class FrameBuffer:
    """Bytes received so far, cut into frame bodies.

    ``received`` is a scratch buffer for ``recv_into``; :meth:`take` turns ``n`` bytes of it
    into frames. A frame of over ``large`` bytes can be read straight into its own buffer
    (:meth:`large_pending`), so big bodies are not copied through the scratch buffer.
    """

    def __init__(self, max_frame: int, scratch: int = 1 << 16) -> None:
        self.max_frame = max_frame
        self.received = bytearray(scratch)
        self._view = memoryview(self.received)
        self._buffer = bytearray()

    def _size(self) -> int:
        size: int = HEADER.unpack_from(self._buffer)[0]
        if size > self.max_frame:
            raise FrameTooLarge(
                f"peer sent a frame of {size} bytes, over the {self.max_frame}-byte limit"
            )
        return size

    def take(self, n: int) -> Optional[bytes]:
        """Account ``n`` bytes just received into ``received``; a body when that completed
        exactly one frame and nothing else is buffered (the common small reply), else None."""
        if not self._buffer and n >= 4:
            size: int = HEADER.unpack_from(self.received)[0]
            if size + 4 == n and size <= self.max_frame:
                return bytes(self._view[4:n])
        self._buffer += self._view[:n]
        return None

    def feed(self, data: bytes) -> None:
        """Append bytes received elsewhere."""
        self._buffer += data

    def next_body(self) -> Optional[bytes]:
        """The next whole frame body buffered, or None."""
        buffer = self._buffer
        if len(buffer) < 4:
            return None
        end = 4 + self._size()
        if len(buffer) < end:
            return None
        body = bytes(buffer[4:end])
        del buffer[:end]
        return body

    def has_frame(self) -> bool:
        buffer = self._buffer
        return len(buffer) >= 4 and len(buffer) >= 4 + self._size()

    def large_pending(self, large: int) -> Optional[bytearray]:
        """When the buffered header announces a body over ``large`` bytes: a buffer of that
        size holding what arrived so far (the caller fills the rest), else None."""
        if len(self._buffer) < 4:
            return None
        size = self._size()
        if size <= large or len(self._buffer) >= 4 + size:
            return None
        body = bytearray(size)
        have = len(self._buffer) - 4
        body[:have] = self._buffer[4:]
        self._buffer.clear()
        self.large_filled = have
        return body

    large_filled = 0
    """How many bytes of the last :meth:`large_pending` body are already filled."""

    def empty(self) -> bool:
        return not self._buffer
