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
import array
import collections
import concurrent.futures
import contextlib
import mmap
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from snakebridge import paths
from snakebridge.errors import ProtocolError, WorkerCrashed, WorkerStartError
from snakebridge.runtime import dataplane
from snakebridge.runtime.socketreader import Lane, PeerClosed, SocketReader
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer

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
_STDERR_TAIL_LINES = 40
_MAX_LANES = 32  # answer lanes per worker at most (as many as calls pipelined onto it)
_SIGNAL_CAUSES: dict[int, str] = {
    signal.SIGSEGV: "segfault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "abort",
    signal.SIGKILL: "killed (likely out of memory, or killed from outside)",
    signal.SIGTERM: "terminated",
    signal.SIGFPE: "floating-point exception",
    signal.SIGILL: "illegal instruction",
}


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

    def open_lane(self) -> Lane | None:
        """A new answer lane to the worker (:mod:`socketreader`), or None where this transport
        has none (then calls are answered on the main connection)."""
        return None

    def slot(self) -> tuple[int, int, int, int] | None:
        """What the worker reports in its running-call slot (``protocol.SLOT``: the call
        running, since when, calls run, short calls), once a lane was opened; else None."""
        return None

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


class ProcessTransport(SocketReader, WorkerTransport):
    """A worker process started with ``interpreter -I -u -c BOOT``, over a socketpair.

    The worker leads its own process group, so a kill ends what the library forked too; its
    exit is watched (a pidfd; a blocking read looks every ``_SLICE_S``) as well as socket EOF,
    so a grandchild that inherited the socket cannot hide a crash.
    """

    _channel: socket.socket | None = None  # passes answer lanes to the worker (open_lane)
    _lanes = 0  # lanes opened so far (numbered from 1)
    _slot: mmap.mmap | None = None  # the running-call slot, once a lane exists
    _lane_socks: tuple[socket.socket, ...] = ()  # every lane opened (closed by stop)

    def __init__(
        self,
        *,
        pool_name: str,
        interpreter: str,
        env: dict[str, str],
        worker_path: str,
        init: dict[str, Any],
        start: Callable[..., Any] | None = None,
    ) -> None:
        """``start`` (#15, zygote): gets the worker's sockets (its connection, its lane
        channel) and returns a Popen-like process instead of starting a fresh interpreter."""
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
        channel, worker_channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._channel = channel
        self._lane_lock = threading.Lock()
        argv = [interpreter, "-I", "-u", "-c", _BOOT, worker_path]
        argv += [f"{worker_sock.fileno()},{worker_channel.fileno()}", str(os.getpid())]

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(worker_sock.fileno(), worker_channel.fileno()),
                env=env,
                close_fds=True,
                cwd="/",
                start_new_session=True,  # its own process group: kill() ends its children too
            )

        try:
            if start is None:
                self.proc = _SPAWNER.submit(popen).result()
            else:
                self.proc = start(worker_sock, worker_channel)
        except OSError as exc:
            host_sock.close()
            channel.close()
            raise WorkerStartError(f"cannot start a worker with {interpreter}: {exc}") from None
        finally:
            worker_sock.close()
            worker_channel.close()
        self.pid = self.proc.pid
        self._read_from(host_sock, _pidfd(self.pid))
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

    # -- answer lanes ---------------------------------------------------------------------------
    def open_lane(self) -> Lane | None:
        if self._channel is None or not hasattr(os, "memfd_create"):
            return None
        with self._lane_lock:
            if self._closed or self._lanes >= _MAX_LANES:
                return None
            try:
                lane_sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError:  # out of descriptors: its calls are answered on the main connection
                return None
            slot: mmap.mmap | None = None
            slot_fd = -1
            try:
                fds = [theirs.fileno()]
                if self._slot is None:  # the first lane brings the running-call slot
                    slot_fd = os.memfd_create("snakebridge-running", os.MFD_CLOEXEC)
                    os.ftruncate(slot_fd, p.SLOT.size)
                    slot = mmap.mmap(slot_fd, p.SLOT.size)
                    p.SLOT.pack_into(slot, 0, -1, 0, 0, 0)  # unknown until the worker takes it
                    fds.append(slot_fd)
                self._channel.sendmsg(
                    [b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                )
                number = self._lanes + 1
                self.send(p.frame(msgpack.packb([p.LANE, number])))
            except OSError:
                lane_sock.close()
                return None
            finally:
                theirs.close()
                if slot_fd >= 0:
                    os.close(slot_fd)
            if slot is not None:
                self._slot = slot
            self._lanes = number
            self._lane_socks += (lane_sock,)
        return Lane(number, lane_sock, self.pid, self.max_frame, self._pidfd, self.exited)

    def slot(self) -> tuple[int, int, int, int] | None:
        slot = self._slot
        if slot is None:
            return None
        fields: tuple[int, int, int, int] = p.SLOT.unpack_from(slot, 0)
        return None if fields[0] < 0 else fields

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
        for lane in self._lane_socks:  # a lost worker's lanes are read to their end instead
            with contextlib.suppress(OSError):
                lane.close()
        self.close()

    def close(self) -> None:
        """Release the socket and the pidfd (after the worker ended)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.close()
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
