"""Every error snakebridge raises, in one place.

::

    SnakeBridgeError                     base of everything below
    ├── ConfigError                      [tool.snakebridge] is invalid (names file and key)
    ├── LibraryNotAllowed                the library is not in the configured allowlist
    ├── SymbolNotFound (AttributeError)  the module or attribute does not exist in the worker
    ├── EncodeError (TypeError)          an argument cannot be sent (names its path)
    ├── DecodeError (ValueError)         a reply cannot be decoded (names its path)
    ├── RefInvalid                       a Ref was released, its session closed or its worker died
    ├── ProtocolError                    a peer sent a malformed, oversized or unexpected frame
    ├── WorkerCrashed                    the worker died mid-call (exit code or signal, stderr tail)
    ├── WorkerStartError                 a worker could not start or failed its handshake
    ├── EnvironmentMissing               a library's environment is not built or is stale
    ├── EnvSetupError                    `snakebridge setup` could not resolve or build an env
    ├── CodegenError                     code generation cannot go on (the message says what to fix)
    ├── CallTimeout (TimeoutError)       the call overran ``timeout=``; its worker was replaced
    ├── PoolSaturated                    the pool's queue is full
    │   ├── QueueTimeout (TimeoutError)  no worker became free within ``queue_timeout``
    │   └── WorkerBusy                   ``strict_fail_fast``: the Ref's worker is busy
    ├── PoolClosed                       the pool was shut down
    ├── UnsafePath (PermissionError)     a private directory is someone else's or open to others
    ├── UnwritablePath (OSError)         a file snakebridge generates cannot be written there
    └── RemoteError                      the library raised; subclasses also derive from the
        ├── RemoteKeyError (KeyError)    matching builtin, so ``except KeyError`` keeps working
        └── …                            (one class per builtin, made on first use)
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

__all__ = [
    "CallTimeout",
    "CodegenError",
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
    "RefInvalid",
    "RemoteError",
    "SnakeBridgeError",
    "SymbolNotFound",
    "UnsafePath",
    "UnwritablePath",
    "WorkerBusy",
    "WorkerCrashed",
    "WorkerStartError",
    "remote_error",
    "remote_error_class",
]


class SnakeBridgeError(Exception):
    """Base class of every snakebridge error."""


class ConfigError(SnakeBridgeError):
    """The configuration is invalid; ``key`` and ``path`` say where."""

    def __init__(self, problem: str, *, key: str, path: Path | None) -> None:
        self.problem, self.key, self.path = problem, key, path
        where = f"{path}: " if path else ""
        at = f"[{key}] " if key else ""
        super().__init__(f"{where}{at}{problem}")


class LibraryNotAllowed(SnakeBridgeError):
    """The library is not listed in ``[tool.snakebridge.libraries]``."""


class SymbolNotFound(SnakeBridgeError, AttributeError):
    """The named module or attribute does not exist in the worker's environment."""


class EncodeError(SnakeBridgeError, TypeError):
    """A value could not be sent to the worker; ``path`` locates it inside the arguments."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class DecodeError(SnakeBridgeError, ValueError):
    """A value from the worker could not be decoded; ``path`` locates it."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(message)


class RefInvalid(SnakeBridgeError):
    """The Ref's object is gone: released, its session closed, or its worker died."""


class ProtocolError(SnakeBridgeError):
    """A peer broke the wire protocol; its connection was closed."""


class WorkerCrashed(SnakeBridgeError):
    """The worker died while serving the call."""

    def __init__(
        self,
        message: str,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        cause: str = "",
        call: str = "",
        stderr_tail: str = "",
    ) -> None:
        self.pid, self.exit_code, self.signal = pid, exit_code, signal
        self.cause, self.call, self.stderr_tail = cause, call, stderr_tail
        super().__init__(message)


class WorkerStartError(SnakeBridgeError):
    """A worker did not start or failed its ready handshake."""


class EnvironmentMissing(SnakeBridgeError):
    """The library's environment is missing or differs from ``snakebridge.lock``."""


class EnvSetupError(SnakeBridgeError):
    """Resolving or building an environment failed; nothing was changed; the message says why."""


class CodegenError(SnakeBridgeError):
    """Code generation cannot go on; the message says what to fix."""


class CallTimeout(SnakeBridgeError, TimeoutError):
    """The call overran its timeout; the worker running it was killed and replaced."""


class PoolSaturated(SnakeBridgeError):
    """The pool's wait queue is full; retry later or raise ``max_queue``."""


class QueueTimeout(PoolSaturated, TimeoutError):
    """No worker became free within the pool's ``queue_timeout``."""


class WorkerBusy(PoolSaturated):
    """``affinity="strict_fail_fast"``: the worker a call must run on is busy (scale, #15)."""


class PoolClosed(SnakeBridgeError):
    """The pool was shut down (``snakebridge.shutdown()`` or interpreter exit)."""


class UnsafePath(SnakeBridgeError, PermissionError):
    """A directory snakebridge keeps private files in is a symlink, another user's, or open to
    group or others; it is refused (as ssh refuses such a ``~/.ssh``)."""


class UnwritablePath(SnakeBridgeError, OSError):
    """A file snakebridge writes (facades, manifest, lock, caches) cannot be written: a
    read-only directory, a full disk; the message names the path and the cause."""


class RemoteError(SnakeBridgeError):
    """The library raised an exception in the worker.

    ``remote_type`` is the qualified name of the remote class, ``remote_message`` its
    ``str()``, ``remote_traceback`` the formatted traceback from the worker.
    """

    remote_type: str = ""
    remote_message: str = ""
    remote_traceback: str = ""

    def __str__(self) -> str:
        return (
            f"{self.remote_type}: {self.remote_message}" if self.remote_type else super().__str__()
        )


_REMOTE_CLASSES: dict[str, type[RemoteError]] = {}


def remote_error_class(builtin_name: str | None) -> type[RemoteError]:
    """The RemoteError subclass that also derives from builtin exception ``builtin_name``."""
    key = builtin_name or ""
    if key == "BaseExceptionGroup":  # its members arrive as RemoteErrors, which are Exceptions
        key = "ExceptionGroup"
    cls = _REMOTE_CLASSES.get(key)
    if cls is not None:
        return cls
    base: Any = getattr(builtins, key, None) if key else None
    if not (isinstance(base, type) and issubclass(base, Exception)) or base is Exception:
        cls = RemoteError
    else:
        name = f"Remote{base.__name__}"
        try:
            cls = type(name, (RemoteError, base), {"__module__": __name__})
        except TypeError:
            cls = RemoteError
    _REMOTE_CLASSES[key] = cls
    return cls


def remote_error(
    builtin_name: str | None,
    message: str,
    members: list[RemoteError] | None = None,
    cls: type[RemoteError] | None = None,
) -> RemoteError:
    """A RemoteError for builtin ``builtin_name``, made without running the builtin's __init__.

    Builtins differ in what their constructors take (``UnicodeDecodeError`` needs five
    arguments, ``MemoryError``'s ``__new__`` refuses subclasses, an exception group needs its
    members), so ``__init__`` is skipped; a group gets ``members`` (the worker's
    sub-exceptions) and is a plain RemoteError when there are none. ``cls`` (a facade's
    exception class registered for the remote type) replaces the builtin-derived class.
    """
    cls = cls or remote_error_class(builtin_name)
    if issubclass(cls, BaseExceptionGroup):
        if not members:
            cls = RemoteError
        else:
            group: RemoteError = cls.__new__(cls, message, members)
            return group
    try:
        error: RemoteError = cls.__new__(cls, message)
    except TypeError:  # MemoryError's __new__ serves MemoryError only
        error = BaseException.__new__(cls, message)
    return error


# Exception classes of generated facades (codegen): a remote exception whose type, or a class in
# its MRO, has a registered type key is raised as that class, so ``except JSONDecodeError``
# through a facade works.
_REGISTERED: dict[str, type[RemoteError]] = {}


def register_remote_exception(type_key: str, cls: type[RemoteError]) -> None:
    """Raise remote exceptions of ``type_key`` (``module.qualname``) as ``cls``."""
    if not (isinstance(cls, type) and issubclass(cls, RemoteError)):
        raise TypeError(f"{cls!r} must be a RemoteError subclass")
    _REGISTERED[type_key] = cls


def registered_exception(type_key: str, mro: list[str] | None = None) -> type[RemoteError] | None:
    """The class registered for ``type_key``, else for the nearest class in ``mro``."""
    for key in [type_key, *(mro or [])]:
        cls = _REGISTERED.get(key)
        if cls is not None:
            return cls
    return None
