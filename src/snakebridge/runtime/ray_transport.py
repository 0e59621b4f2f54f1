"""Workers as Ray actors (ray #15): a WorkerTransport over a TCP connection from the actor.

(Over 350 lines on purpose: the actor's start, its connect-back handshake, its death watch and
the object store its calls use make one transport.)

The host listens on a fresh port, creates one actor per worker (with the pool's ``num_cpus``,
``num_gpus``, ``resources`` and runtime_env), and the actor connects back, proves a one-time
token and runs the ordinary worker loop (:mod:`snakebridge_worker.ray_actor`). Frames are read
exactly as from a local worker, so nothing above the transport knows it is Ray. The actor's
task result is watched on a thread: when the actor dies (killed, out of memory, node lost) the
connection is shut, the reader sees EOF, and the pool fails its calls with WorkerCrashed and
starts a replacement actor. Ray is imported only when a pool has ``backend = "ray"``.

Large arrays, buffers and Arrow/pandas data of a Ray pool go through Ray's object store, not
the connection (:class:`HostStore` here, :mod:`snakebridge_worker.ray_store` in the actor):
calls encoded inside :func:`storing`, and host callbacks answering a Ray worker, put them
there, and the frame carries only a reference.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hmac
import importlib
import os
import secrets
import select
import socket
import threading
import time
from pathlib import Path
from typing import Any

import msgpack

from snakebridge.config import PoolSpec, Settings
from snakebridge.errors import ConfigError, WorkerCrashed, WorkerStartError
from snakebridge.runtime import dataplane
from snakebridge.runtime.exchange import in_callback_of
from snakebridge.runtime.interpreters import locked_entry
from snakebridge.runtime.transport import ProcessTransport, crashed, worker_path_dir
from snakebridge_worker import oob, ray_actor, ray_store, shm
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer

__all__ = ["RayTransport", "cluster_status", "storing", "transport_factory"]

_LOCAL = (None, "", "local")
_AUTH_TIMEOUT_S = 5.0
_DEATH_WAIT_S = 1.0
_connect_lock = threading.Lock()


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            'backend = "ray" needs Ray on the host: pip install snakebridge[ray]',
            key="backend",
            path=None,
        ) from None
    return ray


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address``, or a private local cluster when None.

    A cluster the program already joined (``ray.init`` before the first call) is used as is.
    """
    ray = _ray()
    with _connect_lock:
        if not ray.is_initialized():
            target = None if address in _LOCAL else address
            ray.init(address=target, include_dashboard=False, log_to_driver=True)
    return ray


# -- the object store as the data plane (docs/ray.md, "Large arrays") --------------------------
_ENV_STORE = "SNAKEBRIDGE_RAY_STORE"  # "0": Ray pools use shared memory / the socket instead


def store_threshold() -> int:
    """Bytes from which arrays and buffers go through the object store; -1: never.

    The data plane's ``shm_threshold``, or its default where shared memory is off (a remote
    cluster needs it off: the object store is then the only way large data avoids the socket).
    """
    if os.environ.get(_ENV_STORE, "1") == "0":
        return -1
    limit = shm.CONFIG.limit()
    return max(1, limit) if limit >= 0 else shm.DEFAULT_THRESHOLD


class HostStore:
    """The host's side: puts values' bytes for the worker (reading is :func:`decode_from_store`)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def encode(self, tag: str, meta: Any, data: Any) -> Any:
        from snakebridge.runtime.codec import codec_for_thread

        ref = ray_store.put_bytes(data)  # one copy, by Ray, into the object store
        keeper = codec_for_thread().register(ref)  # held as a host object of this call
        return ray_store.descriptor(tag, meta, ref, keeper)


def decode_from_store(codec: Any, data: bytes) -> Any:
    """Extension 35 from a worker: map its bytes (zero-copy, nothing unpickled), then let the
    worker drop its hold (the Ref ``keeper`` describes dies here; the mapping keeps the bytes
    alive)."""
    tag, meta, ref, keeper = ray_store.parse(data)
    try:
        view = ray_store.raw_view(ref)
    finally:
        if isinstance(keeper, list):
            codec._decode_ref(msgpack.packb(keeper))  # made and dropped: released to the worker
    return ray_store.rebuild(tag, meta, view)


_STORE: contextvars.ContextVar[HostStore | bool | None] = contextvars.ContextVar(
    "snakebridge_ray_store", default=None
)
"""The store a call being encoded uses: None, not inside :func:`storing`; False, none."""


def current_store() -> HostStore | None:
    """The object store for what the host encodes now: the call's pool's (inside
    :func:`storing`), else, answering a host callback, that of the worker waiting for it."""
    chosen = _STORE.get()
    if chosen is not None:
        return chosen if isinstance(chosen, HostStore) else None
    line = in_callback_of()
    if line is None or not isinstance(line.transport, RayTransport):
        return None
    threshold = store_threshold()
    return HostStore(threshold) if threshold >= 0 else None


oob.STORE = current_store
oob.STORE_DECODE = decode_from_store


@contextlib.contextmanager
def _storing(on: bool) -> Any:
    threshold = store_threshold() if on else -1
    token = _STORE.set(HostStore(threshold) if threshold >= 0 else False)
    try:
        yield
    finally:
        _STORE.reset(token)


def storing(spec: PoolSpec) -> contextlib.AbstractContextManager[Any]:
    """Encode a call for a pool of ``spec`` inside this: for a Ray pool, large arrays and
    buffers go through the object store; for any other pool they do not (even inside a host
    callback that answers a Ray worker)."""
    return _storing(spec.backend == "ray")


def _is_local(address: str | None) -> bool:
    return address in _LOCAL


def actor_class() -> Any:
    """RayWorker as a Ray actor class, pickled by value (no install needed on the cluster)."""
    ray = _ray()
    ray.cloudpickle.register_pickle_by_value(ray_actor)
    return ray.remote(ray_actor.RayWorker)


def runtime_env(settings: Settings | None, spec: PoolSpec, interpreter: str) -> dict[str, Any]:
    """The actor's runtime_env: the env's locked pins (``pins``) or its built interpreter
    (``py_executable``, a cluster that shares this filesystem), plus the pool's env vars; on a
    remote cluster ``snakebridge_worker`` travels as a py_module."""
    env: dict[str, Any] = {}
    if spec.runtime_env == "pins" and settings is not None:
        entry = locked_entry(settings, spec.env)
        packages = entry.get("packages", {}) if entry else {}
        pins = [f"{name}=={pkg['version']}" for name, pkg in sorted(packages.items())]
        if pins:
            env["pip"] = pins
    elif spec.runtime_env == "py_executable":
        env["py_executable"] = interpreter
    variables = (
        dict(settings.envs[spec.env].env_vars) if settings and spec.env in settings.envs else {}
    )
    variables.update(spec.env_vars)
    if variables:
        env["env_vars"] = variables
    if not _is_local(spec.ray_address):
        env["py_modules"] = [str(Path(ray_actor.__file__).parent)]
    return env


def transport_factory(
    pool_name: str, spec: PoolSpec, settings: Settings | None, interpreter: str
) -> Any:
    """A Pool ``transport_factory`` that starts each worker as a Ray actor."""
    environment = runtime_env(settings, spec, interpreter)

    def start(init: dict[str, Any]) -> RayTransport:
        return RayTransport(pool_name=pool_name, spec=spec, runtime_env=environment, init=init)

    return start


class RayTransport(ProcessTransport):
    """One Ray actor running the worker loop, connected back over TCP.

    Frame reading is the process transport's; what differs is how the worker starts (an
    actor, then an authenticated connection), how it is killed (``ray.kill``) and how its end
    is known (the actor's task result rather than an exit status).
    """

    def __init__(
        self, *, pool_name: str, spec: PoolSpec, runtime_env: dict[str, Any], init: dict[str, Any]
    ) -> None:
        ray = connect(spec.ray_address)
        self.pool_name = pool_name
        self.max_frame = int(init.get("max_frame", p.DEFAULT_MAX_FRAME))
        self._send_lock = threading.Lock()
        self._closed = False
        self._tail = collections.deque(maxlen=1)
        self._frames = FrameBuffer(self.max_frame)
        self._early: list[bytes] = []
        self._poll_misses = self._poll_skip = 0
        self._pidfd = None
        self.pid = 0  # the actor's process id once it said HELLO
        self.node = ""
        local = _is_local(spec.ray_address)
        if not local and "shm" in init:
            raise ConfigError(
                "shared memory does not reach a remote Ray cluster; set shm_threshold = "
                '"off" in [tool.snakebridge] (large arrays then travel through the socket)',
                key="shm_threshold",
                path=None,
            )
        threshold = store_threshold()
        self._init = {**init, "ray_store": {"threshold": threshold}} if threshold >= 0 else init
        self._token = secrets.token_hex(32)
        address = "127.0.0.1" if local else ray.util.get_node_ip_address()
        self._listener = socket.create_server((address, 0))
        port = self._listener.getsockname()[1]
        options: dict[str, Any] = {
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "max_restarts": 0,
            "max_task_retries": 0,
        }
        if spec.resources:
            options["resources"] = dict(spec.resources)
        if runtime_env:
            options["runtime_env"] = runtime_env
        self.actor = actor_class().options(**options).remote()
        self.actor_id = self.actor._actor_id.hex()
        path = worker_path_dir() if local else None
        self._served = self.actor.serve.remote(address, port, self._token, path)
        self._ended = threading.Event()
        self._outcome = ""
        self.sock: socket.socket | None = None  # type: ignore[assignment]
        self._watcher = threading.Thread(
            target=self._watch, daemon=True, name=f"snakebridge-ray-{self.actor_id[:8]}"
        )
        self._watcher.start()

    # -- the actor's end ------------------------------------------------------------------------
    def _watch(self) -> None:
        """Wait for the actor's serve task; when it ends, shut the connection (reader: EOF)."""
        ray = _ray()
        try:
            self._outcome = f"its worker loop returned ({ray.get(self._served)})"
        except Exception as exc:  # RayActorError and friends: the actor is gone
            first = str(exc).strip().splitlines()
            self._outcome = f"died ({type(exc).__name__}: {first[0] if first else ''})"[:400]
        self._ended.set()
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self.pid:  # gone for certain now: sweep what it made after an earlier sweep
            dataplane.peer_gone(self.pid)

    def _tail_text(self) -> str:
        self._ended.wait(_DEATH_WAIT_S)
        return f"; Ray says the actor {self._outcome}" if self._outcome else ""

    def _wait_exit(self, timeout: float) -> int | None:
        self._ended.wait(timeout)
        return None

    # -- handshake ------------------------------------------------------------------------------
    def handshake(self, deadline: float) -> dict[str, Any]:
        try:
            conn = self._accept(deadline)
        finally:
            self._listener.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._read_from(conn, None)
        if self._ended.is_set():  # it ended between connecting and now
            self._watch_ended_socket()
        with contextlib.suppress(OSError):
            self.send(p.frame(msgpack.packb([p.INIT, 0, self._init])))
        info = super().handshake(deadline)
        self.pid = int(info.get("pid", 0))
        self.node = str(info.get("node", ""))
        return info

    def _watch_ended_socket(self) -> None:
        assert self.sock is not None
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, deadline: float) -> socket.socket:
        """The actor's connection, once it proved the token; WorkerStartError otherwise."""
        while True:
            left = deadline - time.monotonic()
            if self._ended.is_set() or left <= 0:
                self.kill()
                why = "did not connect in time" if left <= 0 else "ended before it connected"
                raise WorkerStartError(
                    f"Ray actor {self.actor_id[:12]} of pool {self.pool_name!r} {why}"
                    f"{self._tail_text()}"
                )
            ready, _, _ = select.select([self._listener], [], [], min(left, 0.1))
            if not ready:
                continue
            conn, _ = self._listener.accept()
            if self._authenticated(conn):
                return conn
            conn.close()  # someone else: not our actor

    def _authenticated(self, conn: socket.socket) -> bool:
        conn.settimeout(_AUTH_TIMEOUT_S)
        frames = FrameBuffer(1 << 12)
        try:
            while (body := frames.next_body()) is None:
                got = conn.recv_into(frames.received)
                if not got:
                    return False
                whole = frames.take(got)
                if whole is not None:
                    body = whole
                    break
            kind, token = msgpack.unpackb(body, raw=False)
        except Exception:  # a timeout, garbage, an oversized frame: not our actor
            return False
        conn.settimeout(None)
        return kind == ray_actor.AUTH and hmac.compare_digest(str(token), self._token)

    def describe(self) -> dict[str, Any]:
        """What ``status`` shows of this worker: its actor and node."""
        return {"actor": self.actor_id[:12], "node": self.node}

    # -- life -----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise OSError("the Ray actor has not connected yet")
        super().send(data)

    def wait_handles(self) -> tuple[int, ...]:
        return (self._fd,)

    def exited(self) -> bool:
        return self._ended.is_set()

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            _ray().kill(self.actor, no_restart=True)
        if self.sock is not None:
            self._watch_ended_socket()

    def stop(self, grace_s: float) -> None:
        with contextlib.suppress(OSError):
            self.send(p.frame(msgpack.packb([p.SHUTDOWN, 0])))
        self._ended.wait(grace_s)
        self.kill()
        if self.pid:
            dataplane.peer_gone(self.pid)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()
        if self.sock is None:  # it never connected
            self._closed = True
        else:
            super().close()

    def death(self, during: str, kill_reason: str = "") -> WorkerCrashed:
        if not self._ended.wait(_DEATH_WAIT_S):
            self.kill()
        if self.pid:
            dataplane.peer_gone(self.pid)
        cause = kill_reason or (f"Ray actor {self._outcome}" if self._outcome else "lost")
        self.close()
        label = f"{self.pid} (Ray actor {self.actor_id[:12]})"
        return crashed(label, self.pool_name, cause, during, pid=self.pid)


def cluster_status() -> dict[str, Any] | None:
    """The Ray cluster this host joined (nodes, resources), or None when it joined none."""
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {
        "address": ray.get_runtime_context().gcs_address,
        "nodes": len(nodes),
        "resources": {k: v for k, v in sorted(ray.cluster_resources().items()) if "node:" not in k},
        "available": {
            k: v for k, v in sorted(ray.available_resources().items()) if "node:" not in k
        },
    }
