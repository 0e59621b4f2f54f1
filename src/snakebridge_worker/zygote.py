"""The zygote (#15, ``start = "zygote"``): a template process that forks ready workers.

Started by the host as ``python -I -u -c BOOT <worker-dir> <control-fd> <host-pid> <preload>``.
It imports the worker and the pool's fork-safe ``preload`` modules once, then for each request
on the control socket (one worker socket passed with SCM_RIGHTS) forks a worker that runs the
ordinary worker loop on that socket, and answers with its pid. It reaps its children and tells
the host how each ended (``pid status`` lines), since only the zygote can wait for them.

Life: the zygote is the host's child and dies with it (parent-death signal). A forked worker's
parent is the zygote, so its parent-death signal ties it to the zygote, and it also watches the
host pid itself (a worker must never outlive the host, even if the zygote is stopped).
"""

from __future__ import annotations

import array
import importlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import List, Optional

RECORD = struct.Struct("!cii")  # b"P" pid 0 (a fork's answer) or b"X" pid wait-status (it ended)


def _pdeathsig() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def watch_host(host_pid: int) -> None:
    """In a forked worker: exit when the zygote or the host is gone."""
    _pdeathsig()
    parent = os.getppid()

    def poll() -> None:
        while True:
            try:
                os.kill(host_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(0.25)

    threading.Thread(target=poll, name="snakebridge-host-watch", daemon=True).start()


def _receive(control: socket.socket) -> Optional[List[int]]:
    """A worker's socket fds from the host (its connection, its lane channel); None at EOF
    (the host is gone)."""
    fds = array.array("i")
    data, ancillary, _, _ = control.recvmsg(1, socket.CMSG_SPACE(2 * fds.itemsize))
    if not data:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def main() -> None:
    worker_dir, control_fd, host_pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    preload: List[str] = [name for name in sys.argv[4].split(",") if name]
    _pdeathsig()
    if os.getppid() != host_pid:
        os._exit(0)
    control = socket.socket(fileno=control_fd)
    from snakebridge_worker import main as worker_main

    for name in preload:
        importlib.import_module(name)
    if threading.active_count() > 1:  # forking now would copy locks held by other threads
        sys.stderr.write(
            "snakebridge zygote: a preload module started threads, so forking is unsafe; "
            'remove it from preload or use start = "fresh"\n'
        )
        os._exit(4)
    send_lock = threading.Lock()
    children: List[int] = []

    def reap() -> None:
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                time.sleep(0.05)
                continue
            with send_lock:
                try:
                    control.sendall(RECORD.pack(b"X", pid, status))
                except OSError:
                    os._exit(0)

    control.sendall(b"R")
    reaper_started = False
    while True:
        fds = _receive(control)
        if fds is None:
            os._exit(0)
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:  # the worker
            os.setsid()  # its own process group: the host's kill ends what it forks too
            control.close()
            named = ",".join(map(str, fds))
            sys.argv = ["snakebridge-worker", worker_dir, named, str(host_pid), "zygote"]
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            worker_main.main()
            os._exit(0)
        for fd in fds:
            os.close(fd)
        children.append(pid)
        with send_lock:
            control.sendall(RECORD.pack(b"P", pid, 0))
        if not reaper_started:  # started after the first fork: the zygote forks with one thread
            reaper_started = True
            threading.Thread(target=reap, name="snakebridge-reaper", daemon=True).start()


if __name__ == "__main__":
    main()
