"""Answer lanes (worker side): extra connections on which the answers of tagged calls go.

The host opens a lane by passing one end of a socketpair over the *lane channel* (a socket
given at start) and then sending ``[LANE, number]`` on the main connection, so the lane exists
before any call tagged with it arrives. With the first lane comes the *running-call slot*: 24
shared bytes in which the worker keeps the id of the top-level call it is running (0 for
none), so that when the worker dies the host knows which call had started even though the
answers of earlier calls may still sit unread in their lanes; and how many calls it ran and
how many of those were *short* (under ``SHORT_NS``), from which the host's leasing learns
whether its calls are tiny.
"""

from __future__ import annotations

import array
import contextlib
import mmap
import os
import socket
import struct
import time
from typing import Dict, Optional

from snakebridge_worker import protocol as p

_RUNNING = struct.Struct("<qq")  # the slot's first two fields
_HEADER_PACK = p.HEADER.pack


class Lanes:
    """The lanes of this worker, by number, and the running-call slot."""

    def __init__(self, channel_fd: Optional[int]) -> None:
        self.channel = socket.socket(fileno=channel_fd) if channel_fd is not None else None
        self.by_number: Dict[int, socket.socket] = {}
        self.slot: Optional[mmap.mmap] = None
        self.calls = 0
        self.short = 0

    def open(self, number: int, running: int) -> None:
        """Take lane ``number`` (and the slot, with the first lane) from the channel."""
        if self.channel is None:
            raise ValueError("a LANE frame, but this worker has no lane channel")
        fds = array.array("i")
        _, ancillary, _, _ = self.channel.recvmsg(
            1, socket.CMSG_SPACE(2 * fds.itemsize), socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        if not fds:
            raise ValueError(f"lane {number} came without its descriptor")
        self.by_number[number] = socket.socket(fileno=fds[0])
        if len(fds) > 1:
            self.slot = mmap.mmap(fds[1], p.SLOT.size)
            os.close(fds[1])
            self.started(running)

    def started(self, call_id: int) -> int:
        """Record that top-level call ``call_id`` runs (0: none) from now; now (ns), or 0
        while there is no slot (nothing is timed then)."""
        if self.slot is None:
            return 0
        now = time.monotonic_ns()
        _RUNNING.pack_into(self.slot, 0, call_id, now)
        return now

    def finished(self, began_ns: int) -> None:
        """The top-level call that began at ``began_ns`` has ended: none runs now."""
        if self.slot is None:
            return
        self.calls += 1
        if time.monotonic_ns() - began_ns < p.SHORT_NS:
            self.short += 1
        p.SLOT.pack_into(self.slot, 0, 0, 0, self.calls, self.short)


def write(lane: socket.socket, body: bytes) -> None:
    """Send one frame on a lane; a lane the host has closed (its caller gave up) drops it."""
    with contextlib.suppress(OSError):
        lane.sendall(_HEADER_PACK(len(body)) + body)
