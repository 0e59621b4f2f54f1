"""snakebridge: call Python libraries out of process, through typed facades or ``call``.

Architecture: ``snakebridge.runtime`` is the self-contained core (pools, wire, values, Refs);
``snakebridge.codegen`` and ``snakebridge.envs`` build facades and environments on top of it;
``snakebridge.cli`` is the command line. This module re-exports the public surface.
"""

from __future__ import annotations

from typing import Any as _Any

from snakebridge.errors import (
    CallTimeout,
    ConfigError,
    DecodeError,
    EncodeError,
    EnvironmentMissing,
    LibraryNotAllowed,
    PoolClosed,
    PoolSaturated,
    ProtocolError,
    QueueTimeout,
    RefInvalid,
    RemoteError,
    SnakeBridgeError,
    SymbolNotFound,
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
from snakebridge.runtime.refs import Ref


def __getattr__(name: str) -> _Any:
    if name == "__version__":  # read lazily: importlib.metadata costs ~15 ms at import
        import importlib.metadata

        try:
            return importlib.metadata.version("snakebridge")
        except importlib.metadata.PackageNotFoundError:  # a source tree that was not installed
            return "0.0.0"
    raise AttributeError(f"module 'snakebridge' has no attribute {name!r}")


def session() -> Session:
    """A new session; ``with snakebridge.session() as s:`` scopes the Refs made inside it."""
    return Session()


__all__ = [
    "CallTimeout",
    "ConfigError",
    "DecodeError",
    "EncodeError",
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
    "WorkerCrashed",
    "WorkerStartError",
    "__version__",
    "aattr",
    "acall",
    "aget",
    "amap",
    "amethod",
    "attr",
    "call",
    "get",
    "inout",
    "map",
    "method",
    "options",
    "session",
    "shutdown",
    "status",
]
