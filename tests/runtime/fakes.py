"""An in-thread fake worker behind the real WorkerTransport interface, for pool-logic tests.

It speaks the real wire protocol over a socketpair (so the exchange, leasing and supervision
run unchanged) but answers from a thread of the test process, in microseconds. Symbols of the
fake library ``fake``: ``echo(x)``, ``sleep(s, x)``, ``crash()`` (the worker dies mid-call),
``bad_pong`` mode for pings (set ``FakeTransport.bad_pong``).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from typing import Any

import msgpack

from snakebridge.errors import WorkerCrashed, WorkerStartError
from snakebridge.runtime.transport import PeerClosed, WorkerTransport
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer

_pids = itertools.count(10_000_001)


class FakeTransport(WorkerTransport):
    bad_pong = False
    fail_start = False

    def __init__(self, init: dict[str, Any]) -> None:
        if FakeTransport.fail_start:
            raise WorkerStartError("the fake environment is broken (fail_start)")
        self.pid = next(_pids)
        self.served = 0
        self.max_running = 0
        self._host, self._worker = socket.socketpair()
        self._frames = FrameBuffer(p.DEFAULT_MAX_FRAME)
        self._dead = threading.Event()
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="fake-worker")
        self._thread.start()

    # -- the fake worker ------------------------------------------------------------------------
    def _reply(self, message: list[Any]) -> None:
        if not self._dead.is_set():
            try:
                self._worker.sendall(p.frame(msgpack.packb(message)))
            except OSError:
                self._dead.set()

    def _serve(self) -> None:
        self._reply([p.HELLO, 0, {"protocol": p.PROTOCOL_VERSION, "python": "3.11", "pid": 0}])
        frames = FrameBuffer(p.DEFAULT_MAX_FRAME)
        while not self._dead.is_set():
            try:
                chunk = self._worker.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            frames.feed(chunk)
            while (body := frames.next_body()) is not None:
                self._handle(msgpack.unpackb(body, raw=False, strict_map_key=False))
        self._dead.set()

    def _handle(self, message: list[Any]) -> None:
        kind = message[0]
        if kind == p.PING:
            healthy = {"rss": 0, "refs": 0, "calls": 0}
            stats: Any = "not a map" if FakeTransport.bad_pong else healthy
            self._reply([p.PONG, message[1], stats])
        elif kind == p.SHUTDOWN:
            self._die()
        elif kind == p.CALL:
            call_id, qualname, args = message[1], message[5], message[8]
            self.served += 1
            if qualname == "crash":
                self._die()
            elif qualname == "sleep":
                time.sleep(args[0])
                self._reply([p.RESULT, call_id, args[1]])
            else:
                self._reply([p.RESULT, call_id, args[0] if args else None])

    def _die(self) -> None:
        self._dead.set()
        with contextlib.suppress(OSError):
            self._worker.shutdown(socket.SHUT_RDWR)
        self._worker.close()

    # -- WorkerTransport ------------------------------------------------------------------------
    def handshake(self, deadline: float) -> dict[str, Any]:
        body = self.recv(deadline)
        return dict(msgpack.unpackb(body, raw=False)[2])

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._host.sendall(data)

    def recv(self, deadline: float | None, poll_s: float = 0.0) -> bytes | bytearray:
        while True:
            body = self._frames.next_body()
            if body is not None:
                return body
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._host.settimeout(remaining)
            else:
                self._host.settimeout(None)
            try:
                chunk = self._host.recv(1 << 16)
            except TimeoutError:
                raise
            except OSError as exc:
                raise PeerClosed(str(exc)) from None
            if not chunk:
                raise PeerClosed
            self._frames.feed(chunk)

    def recv_now(self) -> bytes | bytearray | None:
        body = self._frames.next_body()
        if body is not None:
            return body
        self._host.settimeout(None)  # with a timeout set, Python polls before any recv
        try:
            chunk = self._host.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        if not chunk:
            raise PeerClosed
        self._frames.feed(chunk)
        return self._frames.next_body()

    def recv_buffered(self) -> bytes | bytearray | None:
        return self._frames.next_body()

    def wait_handles(self) -> tuple[int, ...]:
        return (self._host.fileno(),)

    def exited(self) -> bool:
        return self._dead.is_set()

    def kill(self) -> None:
        self._die()

    def stop(self, grace_s: float) -> None:
        self._die()
        self._thread.join(grace_s)
        self._host.close()

    def death(self, during: str, kill_reason: str = "") -> WorkerCrashed:
        cause = kill_reason or "closed its connection"
        return WorkerCrashed(
            f"fake worker {self.pid} {cause} during {during}",
            pid=self.pid,
            exit_code=None,
            signal=None,
            cause=cause,
            call=during,
            stderr_tail="",
        )
