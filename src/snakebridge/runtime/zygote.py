"""``start = "zygote"`` (#15): workers forked from a template process instead of started fresh.

One zygote per (interpreter, environment, preload) has imported the worker and the pool's
``preload`` modules; :meth:`Zygote.fork` hands it a worker socket (SCM_RIGHTS) and gets the new
worker's pid back. The zygote is the host's child (started from the spawner thread, so the
parent-death signal holds), reaps the workers and reports how each ended, which
:class:`ForkedProcess` turns into the ``Popen``-like view ProcessTransport needs.
"""

from __future__ import annotations

import array
import contextlib
import os
import queue
import signal
import socket
import subprocess
import threading

from snakebridge.errors import WorkerStartError
from snakebridge_worker.zygote import RECORD

__all__ = ["ForkedProcess", "Zygote", "zygote_for"]

_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); from snakebridge_worker.zygote import main; "
    "main()"
)


class Zygote:
    """A running template process and the workers it forked."""

    def __init__(
        self, interpreter: str, env: dict[str, str], worker_path: str, preload: list[str]
    ) -> None:
        from snakebridge.runtime.transport import spawn

        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [interpreter, "-I", "-u", "-c", _BOOT, worker_path, str(theirs.fileno())]
        argv += [str(os.getpid()), ",".join(preload)]

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=env,
                close_fds=True,
                cwd="/",
                start_new_session=True,
            )

        try:
            self.proc = spawn(popen)
        finally:
            theirs.close()
        self._lock = threading.Lock()
        self._pids: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._ended = threading.Condition()
        self.exits: dict[int, int] = {}  # pid -> wait status
        self._control.settimeout(20.0)
        try:
            ready = self._control.recv(1)
        except OSError:
            ready = b""
        if ready != b"R":
            self.proc.kill()
            code = self.proc.wait()
            raise WorkerStartError(
                f"the zygote ({interpreter}) ended before it was ready (exit code {code}); "
                'see its output above, or use start = "fresh"'
            )
        self._control.settimeout(None)
        threading.Thread(target=self._read, name="snakebridge-zygote", daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._control.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                with self._ended:
                    self._ended.notify_all()
                self._pids.put(-1)
                return
            buffer += chunk
            while len(buffer) >= RECORD.size:
                tag, pid, status = RECORD.unpack_from(buffer)
                buffer = buffer[RECORD.size :]
                if tag == b"P":
                    self._pids.put(pid)
                else:
                    with self._ended:
                        self.exits[pid] = status
                        self._ended.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, *socks: socket.socket) -> ForkedProcess:
        """A worker forked on ``socks`` (its connection, its lane channel); WorkerStartError
        if the zygote is gone."""
        with self._lock:
            try:
                fds = array.array("i", [sock.fileno() for sock in socks])
                self._control.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                pid = self._pids.get(timeout=20.0)
            except (OSError, queue.Empty):
                pid = -1
        if pid < 0:
            raise WorkerStartError("the zygote is gone; the next start makes a new one")
        return ForkedProcess(self, pid)

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        """The worker's return code in Popen's convention (minus the signal), None while it runs."""
        with self._ended:
            self._ended.wait_for(lambda: pid in self.exits or not self.alive(), timeout)
            status = self.exits.get(pid)
        if status is None:
            return None
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._control.close()
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(2.0)


class ForkedProcess:
    """The ``Popen`` surface ProcessTransport uses, for a worker the zygote forked."""

    stdout = None  # its output goes where the zygote's goes (the host's stderr)

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid

    def poll(self) -> int | None:
        return self.zygote.wait_exit(self.pid, 0)

    def wait(self, timeout: float | None = None) -> int:
        code = self.zygote.wait_exit(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return code

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)


_ZYGOTES: dict[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]], Zygote] = {}
_LOCK = threading.Lock()


def zygote_for(
    interpreter: str, env: dict[str, str], worker_path: str, preload: list[str]
) -> Zygote:
    """The zygote of this interpreter, environment and preload list (started if needed)."""
    key = (interpreter, tuple(sorted(env.items())), tuple(preload))
    with _LOCK:
        zygote = _ZYGOTES.get(key)
        if zygote is None or not zygote.alive():
            zygote = _ZYGOTES[key] = Zygote(interpreter, env, worker_path, preload)
        return zygote


def reset_after_fork() -> None:
    """A forked host starts its own zygotes (the parent's are not its children)."""
    _ZYGOTES.clear()


def stop_all() -> None:
    with _LOCK:
        zygotes = list(_ZYGOTES.values())
        _ZYGOTES.clear()
    for zygote in zygotes:
        zygote.stop()
