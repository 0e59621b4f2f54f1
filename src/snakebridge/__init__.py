"""snakebridge: call Python libraries out of process, through typed facades or ``call``.

Architecture: ``snakebridge.runtime`` is the self-contained core (pools, wire, values, Refs);
``snakebridge.codegen`` and ``snakebridge.envs`` build facades and environments on top of it;
``snakebridge.cli`` is the command line. This module re-exports the public surface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from snakebridge.errors import (
    CallTimeout,
    ConfigError,
    DecodeError,
    EncodeError,
    EnvironmentMissing,
    EnvSetupError,
    LibraryNotAllowed,
    PoolClosed,
    PoolSaturated,
    ProtocolError,
    QueueTimeout,
    RefInvalid,
    RemoteError,
    SnakeBridgeError,
    SymbolNotFound,
    UnsafePath,
    UnwritablePath,
    WorkerBusy,
    WorkerCrashed,
    WorkerStartError,
)
from snakebridge.runtime.client import ClientSession as Session
from snakebridge.runtime.client import (
    aattr,
    acall,
    aget,
    amap,
    amethod,
    attr,
    call,
    get,
    method,
    options,
    shutdown,
    status,
)
from snakebridge.runtime.client import map_ as map
from snakebridge.runtime.codec import inout
from snakebridge.runtime.dataplane import share
from snakebridge.runtime.helpers import worker_state
from snakebridge.runtime.refs import Ref

if _TYPE_CHECKING:  # streams (#14): imported on first use (about 9 ms), typed for checkers
    from snakebridge.runtime.executor import executor
    from snakebridge.runtime.streams import astream, stream

_LAZY = {
    "executor": "snakebridge.runtime.executor",
    "stream": "snakebridge.runtime.streams",
    "astream": "snakebridge.runtime.streams",
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "__version__":  # read lazily: importlib.metadata costs ~15 ms at import
        import importlib.metadata

        try:
            return importlib.metadata.version("snakebridge")
        except importlib.metadata.PackageNotFoundError:  # a source tree that was not installed
            return "0.0.0"
    raise AttributeError(f"module 'snakebridge' has no attribute {name!r}")


def session(*, pin: bool = False) -> Session:
    """A new session; ``with snakebridge.session() as s:`` scopes the Refs made inside it.

    ``pin=True`` (#15): its calls go to one worker per pool (the one its first call ran on).
    """
    return Session(pin=pin)


__all__ = [
    "CallTimeout",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "EnvSetupError",
    "EnvironmentMissing",
    "LibraryNotAllowed",
    "PoolClosed",
    "PoolSaturated",
    "ProtocolError",
    "QueueTimeout",
    "Ref",
    "RefInvalid",
    "RemoteError",
    "Session",
    "SnakeBridgeError",
    "SymbolNotFound",
    "UnsafePath",
    "UnwritablePath",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerStartError",
    "__version__",
    "aattr",
    "acall",
    "aget",
    "amap",
    "amethod",
    "astream",
    "attr",
    "call",
    "executor",
    "get",
    "inout",
    "map",
    "method",
    "options",
    "session",
    "share",
    "shutdown",
    "status",
    "stream",
    "worker_state",
]
