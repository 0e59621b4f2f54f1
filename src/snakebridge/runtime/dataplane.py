"""Host side of the data plane: settings, segment cleanup, and resident data (``share``).

Buffers at or above ``shm_threshold`` bytes cross through shared memory (see
docs/dataplane.md). The host owns cleanup: it removes the name of every segment a worker sends
as soon as it has opened it, sweeps a worker's segments when that worker dies or stops, and at
its first worker start removes segments left by hosts that died.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from snakebridge.errors import ConfigError, EncodeError, RefInvalid
from snakebridge_worker import oob, shm

__all__ = [
    "Shared",
    "init_options",
    "peer_gone",
    "peer_of",
    "sending_to",
    "share",
    "sweep_dead_hosts",
    "trim",
]

_ENV_THRESHOLD = "SNAKEBRIDGE_SHM_THRESHOLD"
_ENV_REUSE = "SNAKEBRIDGE_SHM_REUSE"  # "0": a fresh segment per transfer (for measurement)
_swept = False
_sweep_lock = threading.Lock()


_cached: tuple[Any, int] = (None, 0)


def _unconfigured() -> tuple[object | None, int | None]:
    return None, None


configured_threshold: Callable[[], tuple[object | None, int | None]] = _unconfigured
"""(runtime, its ``shm_threshold`` setting): the client installs the reader of its settings."""


def _threshold() -> int:
    """``SNAKEBRIDGE_SHM_THRESHOLD`` (bytes, or "off"), else the ``shm_threshold`` setting.

    Asked for every array the host sends, so it is read once per runtime (a new one starts
    after ``snakebridge.shutdown()``).
    """
    global _cached
    key, configured = configured_threshold()
    if _cached[0] is key and key is not None:
        return _cached[1]
    raw = os.environ.get(_ENV_THRESHOLD)
    if raw:
        from snakebridge.config import parse_bytes

        try:
            value = -1 if raw.strip().lower() == "off" else parse_bytes(raw) or 0
        except ValueError as exc:
            raise ConfigError(str(exc), key=_ENV_THRESHOLD, path=None) from None
    else:
        value = shm.DEFAULT_THRESHOLD if configured is None else configured
    _cached = (key, value)
    return value


def _configure() -> None:
    """Set this process up as a host (again after a fork: a child is a new host)."""
    config = shm.CONFIG
    config.host = True
    if not shm.OPENED.unlink:
        shm.OPENED = shm.OpenCache(unlink=True)
    config.run = f"{os.getpid()}x{shm.process_start(os.getpid())}"
    config.enabled = shm.available()
    config.threshold_source = _threshold
    own = oob.capabilities()  # sent in INIT: what a worker may send this host
    config.peer_arrow, config.peer_pandas = own["arrow"], own["pandas"]
    config.peer_source = _peer_of_target


_target = threading.local()
"""``pool``: where the call this thread encodes goes (set by ``calls.prepare``, and kept: a
host callback this thread serves answers a worker of that pool)."""


def sending_to(pool: Any) -> None:
    """The next values this thread encodes go to a worker of ``pool`` (None: unknown)."""
    _target.pool = pool


def _peer_of_target() -> tuple[bool, bool] | None:
    """(pyarrow, pandas) of the workers of the pool this thread sends to; None if unknown."""
    pool = getattr(_target, "pool", None)
    return None if pool is None else peer_of(pool)


def peer_of(pool: Any) -> tuple[bool, bool] | None:
    """What a pool's workers said they have in HELLO (``data``); None before one has started."""
    for worker in pool.workers:
        data = worker.info.get("data") if isinstance(worker.info, dict) else None
        if isinstance(data, dict):
            return data.get("arrow") is True, data.get("pandas") is True
    return None


def _after_fork() -> None:
    global _swept
    shm.POOL = shm.Pool()  # the parent's segments stay the parent's: never retire them here
    shm.OPENED = shm.OpenCache(unlink=True)
    _swept = False
    _configure()


_configure()
os.register_at_fork(after_in_child=_after_fork)


def sweep_dead_hosts() -> list[str]:
    """Remove this user's segments whose host process is gone; the names removed."""
    return shm.sweep(shm.CONFIG.run)


def init_options() -> dict[str, Any]:
    """The ``shm`` entry of a worker's INIT options (the first call also sweeps dead hosts)."""
    global _swept
    config = shm.CONFIG
    if not _swept:
        with _sweep_lock:
            if not _swept:
                sweep_dead_hosts()
                _swept = True
    if not config.enabled:
        return {}
    threshold = config.limit()
    if threshold < 0:  # "off" for this runtime; a later one may turn it back on
        return {}
    config.reuse = os.environ.get(_ENV_REUSE, "1") != "0"
    return {
        "shm": {
            "run": config.run,
            "threshold": threshold,
            "arrow": config.peer_arrow,
            "pandas": config.peer_pandas,
            "reuse": config.reuse,
        }
    }


def peer_gone(pid: int) -> None:
    """A worker exited or was killed: remove its segments, take back what it held of ours."""
    shm.sweep(shm.CONFIG.run, creator=pid)
    shm.POOL.reader_gone(pid)
    shm.OPENED.creator_gone(pid)


def trim() -> None:
    """Give back every pooled segment no value uses (they are reused otherwise)."""
    shm.POOL.trim()


atexit.register(lambda: shm.POOL.close())


class Shared:
    """Resident data from :func:`share`: pass it in any call, to any worker of this host.

    The worker maps it read-only, with no copy. Like a Ref, it lives until :meth:`release`, the
    end of a ``with`` block, the close of the session it was made in, or until the handle is
    garbage collected; views already mapped stay valid.
    """

    _sb_shared = True
    __slots__ = ("__weakref__", "_finalizer", "_kind", "_meta", "_nbytes", "_segment")

    _kind: str
    _meta: Any
    _nbytes: int
    _segment: shm.Segment

    def __init__(self, obj: Any) -> None:
        kind = oob.kind(obj)
        if kind == "array":
            self._kind, self._meta = "nd", [oob.descr(obj.dtype), list(obj.shape), None]
            self._nbytes = obj.nbytes
            self._segment = segment = shm.Segment(max(obj.nbytes, 1))
            view = segment.data(obj.nbytes)
            oob.copy_into(view, obj)
            view.release()
        elif kind == "arrow":
            arrow_kind, data = oob._arrow_table(obj)
            if arrow_kind not in ("table", "array", "chunked"):
                data = _table_of_batch(data)
                arrow_kind = "table"
            self._kind = "arrow"
            self._meta = "table" if arrow_kind == "table" else "array"
            segment, self._nbytes = _write_ipc(data)
            self._segment = segment
        else:
            raise EncodeError(
                f"snakebridge.share takes a numpy array or Arrow data, not "
                f"{type(obj).__module__}.{type(obj).__qualname__}"
            )
        segment.claim()
        self._finalizer = weakref.finalize(self, segment.retire)
        _in_session(self)

    def _sb_descriptor(self) -> list[Any]:
        if not self._finalizer.alive:
            raise RefInvalid("this shared data was released; share it again to pass it")
        return [self._kind, self._meta, self._segment.name, self._nbytes]

    @property
    def value(self) -> Any:
        """A read-only view of the data in this process (no copy)."""
        import ctypes

        self._sb_descriptor()
        exporter = (ctypes.c_char * max(self._nbytes, 1)).from_buffer(
            self._segment.mm, shm.HEADER_SIZE
        )
        view = memoryview(exporter).toreadonly()[: self._nbytes]
        return oob.resident(self._kind, self._meta, view)

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def release(self) -> None:
        """Free the shared memory now (workers' views already mapped stay valid)."""
        self._finalizer()

    def __enter__(self) -> Shared:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "" if self._finalizer.alive else " released"
        return f"<snakebridge.Shared {self._kind} of {self._nbytes} bytes{state}>"


_BY_SESSION: dict[int, list[weakref.ref[Shared]]] = {}
"""Handles made inside a ``with snakebridge.session()`` block, by the id of that session's
callback-id list (what the session-close hooks are given): released when it closes."""


def _in_session(handle: Shared) -> None:
    from snakebridge.runtime import refs

    session = refs.current_session()
    if session.id != 0:
        _BY_SESSION.setdefault(id(session.callback_ids), []).append(weakref.ref(handle))


def _session_closed(callback_ids: list[int]) -> None:
    for ref in _BY_SESSION.pop(id(callback_ids), []):
        handle = ref()
        if handle is not None:
            handle.release()


def _register_session_hook() -> None:
    from snakebridge.runtime import refs

    if _session_closed not in refs._SESSION_CLOSE_HOOKS:
        refs._SESSION_CLOSE_HOOKS.append(_session_closed)


def _table_of_batch(batch: Any) -> Any:
    import pyarrow as pa

    return pa.Table.from_batches([batch])


def _write_ipc(data: Any) -> tuple[shm.Segment, int]:
    import pyarrow as pa

    def write(sink: Any) -> None:
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write(data)

    mock = pa.MockOutputStream()
    write(mock)
    nbytes: int = mock.size()
    segment = shm.Segment(nbytes)
    view = segment.data(nbytes)
    buffer = pa.py_buffer(view)
    sink = pa.FixedSizeBufferWriter(buffer)
    write(sink)
    sink.close()
    del sink, buffer
    view.release()
    return segment, nbytes


def share(obj: Any) -> Shared:
    """Place a numpy array or Arrow data in shared memory once; a handle any call can take.

    >>> data = snakebridge.share(numpy.arange(10**8))
    >>> snakebridge.call("numpy", "sum", [data])   # each worker maps it, nothing is copied
    """
    if not shm.available():
        raise EncodeError("snakebridge.share needs shared memory (/dev/shm), absent here")
    _register_session_hook()
    return Shared(obj)
