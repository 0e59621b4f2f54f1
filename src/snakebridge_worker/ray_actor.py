"""The ordinary worker loop inside a Ray actor (ray #15, docs/ray.md).

The host pickles :class:`RayWorker` by value, so this module needs no install on the cluster;
``serve`` finds ``snakebridge_worker`` on the path the host names (a shared filesystem) or in the
``py_modules`` of the actor's runtime_env. The actor connects back to the host's listening
socket, proves the host's one-time token, and from then on speaks the protocol every local
worker speaks: calls, callbacks, Refs, sessions and streams are unchanged.
Nothing here imports Ray (the object store, :mod:`snakebridge_worker.ray_store`, does when a
large value crosses).
"""

import os
import socket
import sys
from typing import Optional

AUTH = "snakebridge-ray-auth"
"""First item of the one frame a connecting actor sends before anything else."""


class RayWorker:
    """A Ray actor that serves one host connection, then ends with the call."""

    def serve(self, host: str, port: int, token: str, worker_path: Optional[str]) -> str:
        """Connect to ``host:port`` and run the worker loop until the host stops it."""
        if worker_path and worker_path not in sys.path:
            sys.path.insert(0, worker_path)
        return serve(host, port, token)


def serve(host: str, port: int, token: str) -> str:
    """The worker loop over a TCP connection to the host (as ``main.main`` over a socketpair)."""
    import msgpack

    from snakebridge_worker import main as m
    from snakebridge_worker import protocol as p
    from snakebridge_worker import ray_store, startup

    sock = socket.create_connection((host, port), timeout=60.0)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    connection = m.Connection(sock, p.DEFAULT_MAX_FRAME)
    connection.send(msgpack.packb([AUTH, token]))
    options = m._read_init(connection)
    hello = {
        "protocol": p.PROTOCOL_VERSION,
        "python": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        "pid": os.getpid(),
        "executable": sys.executable,
        "node": socket.gethostname(),
    }
    try:
        hello["startup"] = startup.prepare(options)
    except startup.StartupError as exc:
        sock.close()
        return f"startup failed: {exc}"
    connection.send(msgpack.packb([p.HELLO, 0, hello]))
    connection.max_frame = int(options.get("max_frame", p.DEFAULT_MAX_FRAME))
    worker = m.Worker(connection, bool(options.get("host_numpy")))
    worker.options = options
    worker.policy = m._policy_from(options)
    ray_store.install_worker(worker.codec, options.get("ray_store"))  # large values: Ray's store
    m._CURRENT = worker
    try:
        worker.run()
    except (ConnectionError, ValueError) as exc:
        return f"connection closed: {exc}"
    finally:
        sock.close()
    return "stopped"
