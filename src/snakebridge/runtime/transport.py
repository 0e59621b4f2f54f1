"""How the host talks to one worker: the WorkerTransport interface and its process implementation.

(Over 350 lines on purpose: the interface and its process implementation, whose framing,
polling and death diagnosis belong together.)

Nothing above this module touches sockets, processes or frame parsing. A transport moves whole
frames: ``send`` is thread-safe, ``recv``/``recv_now`` are used by one reader at a time (the
exchange's reader role guarantees it). Local processes are the first implementation; the thread
profile and Ray actors are others.
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures
import contextlib
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from snakebridge import paths
from snakebridge.errors import ProtocolError, WorkerCrashed, WorkerStartError
from snakebridge.runtime import dataplane
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer, FrameTooLarge

__all__ = [
    "PeerClosed",
    "ProcessTransport",
    "WorkerTransport",
    "crashed",
    "describe_exit",
    "worker_path_dir",
]

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from snakebridge_worker.main import main; main()"
)
_LARGE = 1 << 16
_POLL_MISSES = 4  # polls in a row that found nothing before polling pauses
_POLL_SKIP = 64  # reads to skip polling for, then try again
_PREEMPTED_S = 15e-6  # a gap this long between two polls: this process was not running
_STDERR_TAIL_LINES = 40
_SLICE_S = 0.05  # a blocking read wakes this often to see whether the worker process ended
_SIGNAL_CAUSES: dict[int, str] = {
    signal.SIGSEGV: "segfault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "abort",
    signal.SIGKILL: "killed (likely out of memory, or killed from outside)",
    signal.SIGTERM: "terminated",
    signal.SIGFPE: "floating-point exception",
    signal.SIGILL: "illegal instruction",
}


class PeerClosed(Exception):
    """The worker's end is gone (it exited, crashed or was killed)."""


def describe_exit(returncode: int | None) -> tuple[int | None, int | None, str]:
    """(exit code, signal, plain-words cause) for a worker's return code."""
    if returncode is None:
        return None, None, "closed its connection"
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return None, sig, f"{_SIGNAL_CAUSES.get(sig, 'killed by signal')} ({name})"
    return returncode, None, f"exited with code {returncode}"


class WorkerTransport(abc.ABC):
    """Whole frames to and from one worker, and the worker's life."""

    pid: int
    """The worker's identity in messages and status (a process id for local workers)."""

    @abc.abstractmethod
    def handshake(self, deadline: float) -> dict[str, Any]:
        """Wait for the worker's HELLO; WorkerStartError (with its output) otherwise."""

    @abc.abstractmethod
    def send(self, data: bytes) -> None:
        """Send framed bytes; thread-safe. OSError when the worker is gone."""

    @abc.abstractmethod
    def recv(self, deadline: float | None, poll_s: float = 0.0) -> bytes | bytearray:
        """The next frame body; TimeoutError past ``deadline``, PeerClosed when it is gone."""

    @abc.abstractmethod
    def recv_now(self) -> bytes | bytearray | None:
        """A frame body if one can be had without blocking, else None; PeerClosed when gone."""

    def recv_buffered(self) -> bytes | bytearray | None:
        """A whole frame already read ahead (no system call), else None."""
        return None

    def recv_soon(self, seconds: float) -> bytes | bytearray | None:
        """A frame body if one comes within ``seconds`` (polled, never sleeping), else None."""
        return self.recv_now()

    @abc.abstractmethod
    def wait_handles(self) -> tuple[int, ...]:
        """File descriptors that become readable when :meth:`recv_now` may return a frame."""

    @abc.abstractmethod
    def exited(self) -> bool:
        """Whether the worker has ended (never blocks)."""

    @abc.abstractmethod
    def kill(self) -> None:
        """End the worker at once (with anything it started); the reader then sees PeerClosed."""

    @abc.abstractmethod
    def stop(self, grace_s: float) -> None:
        """Ask the worker to exit; kill it after ``grace_s``; release every resource."""

    @abc.abstractmethod
    def death(self, during: str, kill_reason: str = "") -> WorkerCrashed:
        """Describe the worker's end (exit status, last output) for the calls it failed."""


class _Spawner:
    """Starts every worker from one long-lived thread.

    Linux delivers the parent-death signal when the *thread* that forked the child exits, so
    workers must not be started from short-lived caller threads.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            try:
                future.set_result(job())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, job: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="snakebridge-spawner", daemon=True
                )
                self._thread.start()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future


_SPAWNER = _Spawner()


def spawn(popen: Callable[[], Any]) -> Any:
    """Run ``popen`` on the long-lived spawner thread (the zygote starts this way too)."""
    return _SPAWNER.submit(popen).result()


def reset_after_fork() -> None:
    global _SPAWNER
    _SPAWNER = _Spawner()


def worker_path_dir() -> str:
    """The private directory workers put on ``sys.path`` (only ``snakebridge_worker`` in it)."""
    return paths.worker_path_dir(Path(__file__).resolve().parents[2] / "snakebridge_worker")


def _pidfd(pid: int) -> int | None:
    """A descriptor readable when process ``pid`` exits (Linux ≥ 5.3), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


class ProcessTransport(WorkerTransport):
    """A worker process started with ``interpreter -I -u -c BOOT``, over a socketpair.

    The worker leads its own process group, so a kill ends what the library forked too; its
    exit is watched (a pidfd; a blocking read looks every ``_SLICE_S``) as well as socket EOF,
    so a grandchild that inherited the socket cannot hide a crash.
    """

    _slice = 0.0  # the receive timeout set on the socket (SO_RCVTIMEO), 0 for none yet

    def __init__(
        self,
        *,
        pool_name: str,
        interpreter: str,
        env: dict[str, str],
        worker_path: str,
        init: dict[str, Any],
        start: Callable[[socket.socket], Any] | None = None,
    ) -> None:
        """``start`` (#15, zygote): gets the worker's socket and returns a Popen-like process
        instead of starting a fresh interpreter."""
        self.pool_name = pool_name
        self.max_frame = int(init.get("max_frame", p.DEFAULT_MAX_FRAME))
        self._send_lock = threading.Lock()
        self._closed = False
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._frames = FrameBuffer(self.max_frame)
        self._early: list[bytes] = []  # whole frames read ahead of the buffer, in order
        self._poll_misses = 0
        self._poll_skip = 0
        host_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [interpreter, "-I", "-u", "-c", _BOOT, worker_path]
        argv += [str(worker_sock.fileno()), str(os.getpid())]

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(worker_sock.fileno(),),
                env=env,
                close_fds=True,
                cwd="/",
                start_new_session=True,  # its own process group: kill() ends its children too
            )

        try:
            self.proc = _SPAWNER.submit(popen).result() if start is None else start(worker_sock)
        except OSError as exc:
            host_sock.close()
            raise WorkerStartError(f"cannot start a worker with {interpreter}: {exc}") from None
        finally:
            worker_sock.close()
        self.pid = self.proc.pid
        self.sock = host_sock
        self._fd = host_sock.fileno()
        self._pidfd = _pidfd(self.pid)
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        if self._pidfd is not None:
            self._poller.register(self._pidfd, select.POLLIN)
        with contextlib.suppress(OSError):  # it died already: the handshake reports why
            self.send(p.frame(msgpack.packb([p.INIT, 0, init])))
        self._output = threading.Thread(
            target=self._forward_output, daemon=True, name=f"snakebridge-output-{self.pid}"
        )
        self._output.start()

    # -- output ---------------------------------------------------------------------------------
    def _forward_output(self) -> None:
        if self.proc.stdout is None:  # forked by the zygote: its output is the zygote's
            return
        prefix = f"[snakebridge {self.pool_name} worker {self.pid}] "
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.write(prefix + line + "\n")

    def _tail_text(self) -> str:
        self._output.join(timeout=0.5)
        tail = "\n".join(self._tail)
        return f"; its output ends with:\n{tail}" if tail else ""

    # -- handshake ------------------------------------------------------------------------------
    def handshake(self, deadline: float) -> dict[str, Any]:
        try:
            body = self.recv(deadline)
            hello = msgpack.unpackb(body, raw=False)
            kind, info = hello[0], hello[2]
            if kind != p.HELLO or not isinstance(info, dict):
                raise ValueError(f"its first frame was {hello!r:.60} rather than HELLO")
        except TimeoutError:
            self.kill()
            raise WorkerStartError(
                f"worker {self.pid} did not become ready in time{self._tail_text()}"
            ) from None
        except (PeerClosed, OSError, ProtocolError):
            code = self._wait_exit(1.0)
            self.kill()
            cause = describe_exit(code)[2] if code is not None else "broke the handshake"
            raise WorkerStartError(
                f"worker {self.pid} {cause} before it was ready{self._tail_text()}"
            ) from None
        except Exception as exc:  # a malformed HELLO: whatever it was, the worker is unusable
            self.kill()
            raise WorkerStartError(
                f"worker {self.pid} sent a malformed HELLO ({exc}); reinstall snakebridge in "
                f"the environment so both sides match{self._tail_text()}"
            ) from None
        if info.get("protocol") != p.PROTOCOL_VERSION:
            self.kill()
            raise WorkerStartError(
                f"worker {self.pid} speaks protocol {info.get('protocol')!r}, host speaks "
                f"{p.PROTOCOL_VERSION}; reinstall snakebridge so both sides match"
            )
        return info

    # -- frames ---------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

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

    def wait_handles(self) -> tuple[int, ...]:
        return (self._fd,) if self._pidfd is None else (self._fd, self._pidfd)

    # -- life -----------------------------------------------------------------------------------
    def exited(self) -> bool:
        return self.proc.poll() is not None

    def _wait_exit(self, timeout: float) -> int | None:
        try:
            code: int = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return code

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.proc.kill()

    def stop(self, grace_s: float) -> None:
        with contextlib.suppress(OSError):
            self.send(p.frame(msgpack.packb([p.SHUTDOWN, 0])))
        if self._wait_exit(grace_s) is None:
            self.kill()
            self._wait_exit(5.0)
        with contextlib.suppress(OSError):  # anything the library left in its group goes too
            os.killpg(self.pid, signal.SIGKILL)
        dataplane.peer_gone(self.pid)  # the host owns the cleanup of the worker's segments
        self.close()

    def close(self) -> None:
        """Release the socket and the pidfd (after the worker ended)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)

    def death(self, during: str, kill_reason: str = "") -> WorkerCrashed:
        code = self._wait_exit(1.0)
        if code is None:
            self.kill()
            code = self._wait_exit(5.0)
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        self._output.join(timeout=0.2)
        dataplane.peer_gone(self.pid)  # the host owns the cleanup of the worker's segments
        exit_code, sig, cause = describe_exit(code)
        tail = "\n".join(self._tail)
        self.close()
        return crashed(
            str(self.pid),
            self.pool_name,
            kill_reason or cause,
            during,
            pid=self.pid,
            exit_code=exit_code,
            sig=sig,
            tail=tail,
        )


def crashed(
    worker: str,
    pool_name: str,
    cause: str,
    during: str,
    *,
    pid: int,
    exit_code: int | None = None,
    sig: int | None = None,
    tail: str = "",
) -> WorkerCrashed:
    """The WorkerCrashed a worker's end gives its calls, worded alike for every transport:
    ``worker <worker> of pool <name> <cause> during <call>`` and its last output."""
    message = f"worker {worker} of pool {pool_name!r} {cause} during {during}"
    if tail:
        message += "\nlast worker output:\n" + "\n".join(tail.splitlines()[-10:])
    return WorkerCrashed(
        message,
        pid=pid,
        exit_code=exit_code,
        signal=sig,
        cause=cause,
        call=during,
        stderr_tail=tail,
    )
