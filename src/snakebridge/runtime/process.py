"""One worker process: spawn, ready handshake, output forwarding, death diagnosis."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from snakebridge.runtime import dataplane
from snakebridge.runtime.connection import Connection, PeerClosed
from snakebridge.runtime.errors import ProtocolError, WorkerCrashed, WorkerStartError
from snakebridge_worker import protocol as p

__all__ = ["WorkerProcess", "describe_exit"]

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from snakebridge_worker.main import main; main()"
)
_STDERR_TAIL_LINES = 40
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


def _worker_path_dir() -> str:
    """A private directory holding only ``snakebridge_worker``, for the worker's sys.path."""
    source = Path(__file__).resolve().parents[2] / "snakebridge_worker"
    base = Path(tempfile.gettempdir()) / f"snakebridge-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    target = base / f"worker-path-{hashlib.sha256(str(source).encode()).hexdigest()[:16]}"
    link = target / "snakebridge_worker"
    if not link.exists():
        target.mkdir(mode=0o700, exist_ok=True)
        tmp = target / f".link-{os.getpid()}-{threading.get_ident()}"
        tmp.symlink_to(source, target_is_directory=True)
        os.replace(tmp, link)
    return str(target)


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


def reset_after_fork() -> None:
    global _SPAWNER
    _SPAWNER = _Spawner()


class WorkerProcess:
    """A started worker: its process, connection, output tail and call counters."""

    def __init__(
        self,
        *,
        pool_name: str,
        interpreter: str,
        env: dict[str, str],
        max_frame: int,
        host_numpy: bool,
    ) -> None:
        self.pool_name = pool_name
        self.state = "starting"
        self.calls = 0
        self.started_at = time.monotonic()
        self.alive = True
        self.death: WorkerCrashed | None = None
        self.pending_release: list[tuple[int, int]] = []
        self.live_refs = 0
        self.refs_lock = threading.RLock()
        self.send_lock = threading.Lock()
        self.info: dict[str, Any] = {}
        self.owner: Any = None
        self.recycling = False  # withheld from calls while its replacement starts
        self.idle_since = 0.0  # monotonic time it last went idle
        self.kill_reason = ""  # why the host killed it, for the crash report
        self._tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        host_sock, worker_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            interpreter,
            "-I",
            "-u",
            "-c",
            _BOOT,
            _worker_path_dir(),
            str(worker_sock.fileno()),
            str(os.getpid()),
        ]

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
            )

        try:
            self.proc = _SPAWNER.submit(popen).result()
        except OSError as exc:
            host_sock.close()
            raise WorkerStartError(f"cannot start a worker with {interpreter}: {exc}") from None
        finally:
            worker_sock.close()
        self.pid = self.proc.pid
        self.conn = Connection(host_sock, max_frame)
        options = {"host_numpy": host_numpy, "max_frame": max_frame, **dataplane.init_options()}
        init = [p.INIT, 0, options]
        with contextlib.suppress(OSError):  # it died already: the handshake reports why
            self.conn.send_body(msgpack.packb(init))
        self._output = threading.Thread(
            target=self._forward_output, daemon=True, name=f"snakebridge-output-{self.pid}"
        )
        self._output.start()

    def _forward_output(self) -> None:
        assert self.proc.stdout is not None
        prefix = f"[snakebridge {self.pool_name} worker {self.pid}] "
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._tail.append(line)
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.write(prefix + line + "\n")

    def handshake(self, deadline: float) -> None:
        """Wait for HELLO; WorkerStartError with the worker's output if it does not come."""
        try:
            body = self.conn.read(deadline)
            kind, _, hello = msgpack.unpackb(body, raw=False)
        except TimeoutError:
            self.kill()
            raise WorkerStartError(
                f"worker {self.pid} did not become ready in time{self._tail_text()}"
            ) from None
        except (PeerClosed, OSError, ValueError, ProtocolError):
            try:
                code: int | None = self.proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            cause = describe_exit(code)[2] if code is not None else "broke the handshake"
            raise WorkerStartError(
                f"worker {self.pid} {cause} before it was ready{self._tail_text()}"
            ) from None
        if kind != p.HELLO or hello.get("protocol") != p.PROTOCOL_VERSION:
            self.kill()
            raise WorkerStartError(
                f"worker {self.pid} speaks protocol {hello.get('protocol')!r}, host speaks "
                f"{p.PROTOCOL_VERSION}; reinstall snakebridge so both sides match"
            )
        self.info = hello
        self.state = "idle"

    def _tail_text(self) -> str:
        self._output.join(timeout=0.5)
        tail = self.stderr_tail()
        return f"; its output ends with:\n{tail}" if tail else ""

    def stderr_tail(self) -> str:
        return "\n".join(self._tail)

    def flush_releases(self) -> bytes:
        """Framed RELEASE messages for Refs the host dropped since the last flush."""
        if not self.pending_release:
            return b""
        pending, self.pending_release = self.pending_release, []
        by_session: dict[int, list[int]] = {}
        for session_id, ref_id in pending:
            by_session.setdefault(session_id, []).append(ref_id)
        return b"".join(
            p.frame(msgpack.packb([p.RELEASE, 0, session_id, ref_ids]))
            for session_id, ref_ids in by_session.items()
        )

    def send_quietly(self, data: bytes) -> None:
        """Send frames that need no answer; a dead worker is ignored."""
        if not data or not self.alive:
            return
        with self.send_lock, contextlib.suppress(OSError):
            self.conn.send(data)

    def crashed(self, call: str) -> WorkerCrashed:
        """Mark dead and describe why (waits briefly for the exit status and last output)."""
        self.alive = False
        self.state = "dead"
        try:
            code: int | None = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._output.join(timeout=0.2)
        dataplane.peer_gone(self.pid)  # the host owns the cleanup of the worker's segments
        exit_code, sig, cause = describe_exit(code)
        if self.kill_reason:
            cause = self.kill_reason
        tail = self.stderr_tail()
        message = f"worker {self.pid} of pool {self.pool_name!r} {cause} during {call}"
        if tail:
            message += "\nlast worker output:\n" + "\n".join(tail.splitlines()[-10:])
        self.death = WorkerCrashed(
            message,
            pid=self.pid,
            exit_code=exit_code,
            signal=sig,
            cause=cause,
            call=call,
            stderr_tail=tail,
        )
        self.conn.close()
        return self.death

    def kill(self) -> None:
        """Kill at once and reap."""
        self.alive = False
        self.state = "dead"
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        dataplane.peer_gone(self.pid)

    def stop(self, grace_s: float) -> None:
        """Ask the worker to exit; kill it if it is still there after ``grace_s``."""
        self.send_quietly(p.frame(msgpack.packb([p.SHUTDOWN, 0])))
        self.alive = False
        self.state = "dead"
        self.conn.close()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        dataplane.peer_gone(self.pid)
