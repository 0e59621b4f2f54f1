"""snakebridge: call Python libraries out of process, through typed facades or ``call``.

Architecture: ``snakebridge.runtime`` is the self-contained core (pools, wire, values, Refs);
``snakebridge.codegen`` and ``snakebridge.envs`` build facades and environments on top of it;
``snakebridge.cli`` is the command line. This module re-exports the public surface.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from snakebridge.runtime.client import acall, aget, call, get, options, shutdown, status
from snakebridge.runtime.errors import (
    CallTimeout,
    ConfigError,
    DecodeError,
    EncodeError,
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
from snakebridge.runtime.refs import Ref, Session

try:
    __version__ = _metadata.version("snakebridge")
except _metadata.PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"


def session() -> Session:
    """A new session; ``with snakebridge.session() as s:`` scopes the Refs made inside it."""
    return Session()


__all__ = [
    "CallTimeout",
    "ConfigError",
    "DecodeError",
    "EncodeError",
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
    "acall",
    "aget",
    "call",
    "get",
    "options",
    "session",
    "shutdown",
    "status",
]
