"""Reading whole frames from one socket to a worker, and answer lanes.

:class:`SocketReader` is the read side shared by a worker's main connection and its lanes: a
blocking read is one ``recv`` (a receive timeout wakes it every ``_SLICE_S`` to see whether the
process ended), non-blocking and polled reads, and large frames read in place.

A :class:`Lane` is a second connection to one worker on which it sends the answer (and the
host callbacks) of each call tagged with the lane's number. One calling thread at a time
waits on a lane alone, so the kernel wakes exactly that thread when its answer comes: no
other thread reads for it and hands it over, which under many threads costs a GIL handoff and
a context switch per call. Requests still go on the main connection, in order.
"""

from __future__ import annotations

import abc
import contextlib
import select
import socket
import struct
import time
from typing import TYPE_CHECKING

from snakebridge.errors import ProtocolError
from snakebridge_worker.framing import FrameBuffer, FrameTooLarge

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Lane", "PeerClosed", "SocketReader"]

_LARGE = 1 << 16
_POLL_MISSES = 4  # polls in a row that found nothing before polling pauses
_POLL_SKIP = 64  # reads to skip polling for, then try again
_PREEMPTED_S = 15e-6  # a gap this long between two polls: this process was not running
_SLICE_S = 0.05  # a blocking read wakes this often to see whether the worker process ended


class PeerClosed(Exception):
    """The worker's end is gone (it exited, crashed or was killed)."""


class SocketReader(abc.ABC):
    """Whole frames from ``sock`` (one reader at a time); ``exited`` says whether the worker
    process ended, so that a grandchild holding the socket open cannot hide its end."""

    pid: int
    sock: socket.socket
    _frames: FrameBuffer
    _early: list[bytes]  # whole frames read ahead of the buffer, in order
    _fd: int
    _pidfd: int | None
    _poller: select.poll
    _poll_misses: int
    _poll_skip: int
    _slice = 0.0  # the receive timeout set on the socket (SO_RCVTIMEO), 0 for none yet

    @abc.abstractmethod
    def exited(self) -> bool:
        """Whether the worker has ended (never blocks)."""

    def _read_from(self, sock: socket.socket, pidfd: int | None) -> None:
        """Read frames from ``sock``; ``pidfd`` (if any) also wakes a wait when the worker
        process ends."""
        self.sock = sock
        self._fd = sock.fileno()
        self._pidfd = pidfd
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        if pidfd is not None:
            self._poller.register(pidfd, select.POLLIN)

    def _recv_now(self) -> bool:
        """Read what is there without blocking (into the scratch buffer: no allocation).

        True if bytes arrived; PeerClosed at EOF."""
        try:
            got = self.sock.recv_into(self._frames.received, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        if not got:
            raise PeerClosed
        whole = self._frames.take(got)
        if whole is not None:
            self._early.append(whole)
        return True

    def _next(self) -> bytes | None:
        if self._early:
            return self._early.pop(0)
        try:
            return self._frames.next_body()
        except FrameTooLarge as exc:
            raise ProtocolError(f"worker {self.pid}: {exc}; the connection was closed") from None

    def _wait(self, deadline: float | None) -> None:
        """Until the socket is readable (or the process ended); TimeoutError past deadline."""
        while True:
            timeout = -1.0 if deadline is None else (deadline - time.monotonic()) * 1000.0
            if deadline is not None and timeout <= 0:
                raise TimeoutError
            ready = self._poller.poll(timeout)
            if not ready:
                continue
            if any(fd == self._fd for fd, _ in ready):
                return
            if self._pidfd is not None:  # exited, but a grandchild may still hold the socket
                self._drain_after_exit()
                return

    def _drain_after_exit(self) -> None:
        """Buffer what the dead worker wrote before it ended; PeerClosed if nothing is left."""
        while True:
            try:
                if not self._recv_now():
                    break
            except (PeerClosed, OSError):
                break
        if not self._early and not self._frames.has_frame():
            raise PeerClosed

    def recv(self, deadline: float | None, poll_s: float = 0.0) -> bytes | bytearray:
        if poll_s and self._frames.empty() and not self._early:
            self._poll(poll_s)
        while True:
            body = self._next()
            if body is not None:
                return body
            large = self._frames.large_pending(_LARGE)
            if large is not None:
                return self._read_large(large, deadline)
            got = self._recv_blocking(deadline)
            if got < 0:  # the process ended; what it wrote before is buffered
                continue
            if not got:
                raise PeerClosed
            whole = self._frames.take(got)
            if whole is not None:
                return whole

    def _recv_blocking(self, deadline: float | None) -> int:
        """Read into the scratch buffer, blocking until bytes arrive; -1 once the process
        ended (a grandchild may hold its socket open: what it wrote is buffered).

        One system call when the bytes come, so one release of the GIL: polling first and
        then reading would hand the GIL to another thread twice, and with many callers
        each handoff is a context switch. A receive timeout on the socket wakes it every
        ``_SLICE_S`` to look at the process, and at ``deadline``.
        """
        while True:
            wait = _SLICE_S
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                wait = min(wait, max(remaining, 1e-6))
            if wait != self._slice:
                self._set_slice(wait)
            try:
                return self.sock.recv_into(self._frames.received)
            except (BlockingIOError, TimeoutError):
                pass
            if self.exited():
                self._drain_after_exit()
                return -1

    def _set_slice(self, seconds: float) -> None:
        whole = int(seconds)
        micros = int((seconds - whole) * 1e6)
        if not whole and not micros:
            micros = 1  # a zero timeout would mean none at all
        timeval = struct.pack("ll", whole, micros)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        self._slice = seconds

    def _read_large(self, body: bytearray, deadline: float | None) -> bytearray:
        have, size = self._frames.large_filled, len(body)
        view = memoryview(body)
        while have < size:
            self._wait(deadline)
            got = self.sock.recv_into(view[have:], min(size - have, 1 << 22))
            if not got:
                raise PeerClosed
            have += got
        return body

    def recv_buffered(self) -> bytes | bytearray | None:
        return self._next()

    def recv_soon(self, seconds: float) -> bytes | bytearray | None:
        if self._frames.empty() and not self._early:
            self._poll(seconds)
        return self.recv_now()

    def recv_now(self) -> bytes | bytearray | None:
        while True:
            body = self._next()
            if body is not None:
                return body
            if not self._recv_now():
                if self._pidfd is not None and self.exited():
                    self._drain_after_exit()
                    return self._next()
                return None

    def _poll(self, seconds: float) -> None:
        """Read without blocking for up to ``seconds`` or until a whole frame is buffered.

        Adaptive: after a few polls in a row that found nothing (the worker shares this CPU,
        or its calls are slow) polling is skipped for a while, so it never costs a lone CPU.
        A poll that was preempted counts as a miss even when the answer is there afterwards:
        the worker ran on this CPU, and polling only delayed it.
        """
        if self._poll_skip:
            self._poll_skip -= 1
            return
        clock = time.perf_counter
        last = clock()
        deadline = last + seconds
        poller = self._poller
        while True:
            now = clock()
            if now >= deadline or now - last > _PREEMPTED_S:
                break
            last = now
            if poller.poll(0):
                try:
                    if not self._recv_now():
                        continue
                except PeerClosed:
                    return  # the blocking read reports it
                if self._early or self._frames.has_frame():
                    if clock() - last <= _PREEMPTED_S:
                        self._poll_misses = 0
                        return
                    break
        self._poll_misses += 1
        if self._poll_misses >= _POLL_MISSES:
            self._poll_misses, self._poll_skip = 0, _POLL_SKIP


class Lane(SocketReader):
    """An answer lane to one worker (see the module docstring); its number tags the calls
    whose answers come on it. Read by the one thread whose call holds it."""

    def __init__(
        self,
        number: int,
        sock: socket.socket,
        pid: int,
        max_frame: int,
        pidfd: int | None,
        exited: Callable[[], bool],
    ) -> None:
        self.number = number
        self.pid = pid
        self._read_from(sock, pidfd)
        self._exited = exited
        self._frames = FrameBuffer(max_frame)
        self._early = []
        self._poll_misses = self._poll_skip = 0

    def exited(self) -> bool:
        return self._exited()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
