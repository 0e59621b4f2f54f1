"""The universal call API over lazily started pools: call/get and their asyncio twins.

One :class:`_Runtime` per host process owns the settings, the pools and a housekeeping
thread (releases dropped Refs in batches, replaces idle workers that died, publishes status).
A process that forks gets a fresh runtime in the child; it never shares its parent's workers.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from snakebridge.config import Settings, load_settings
from snakebridge.runtime import status_files
from snakebridge.runtime.codec import codec_for_thread
from snakebridge.runtime.errors import EncodeError, LibraryNotAllowed, RefInvalid
from snakebridge.runtime.interpreters import interpreter_for
from snakebridge.runtime.pool import Call, Pool
from snakebridge.runtime.process import reset_after_fork
from snakebridge.runtime.refs import (
    Ref,
    Session,
    check_valid,
    current_session,
    reset_default_session,
)
from snakebridge_worker import protocol as p

__all__ = [
    "Options",
    "acall",
    "aget",
    "attr",
    "call",
    "get",
    "map_",
    "method",
    "options",
    "ref_operation",
    "runtime",
    "shutdown",
    "status",
]

_HOUSEKEEPING_S = 0.2
_STATUS_EVERY = 5
_call_ids = itertools.count(1)


@dataclass(frozen=True)
class Options:
    """Per-call options set by ``with snakebridge.options(...)``."""

    timeout: float | None = None
    idempotent: bool | None = None
    path_values: bool = False


_NO_OPTIONS = Options()
_options: contextvars.ContextVar[Options] = contextvars.ContextVar("snakebridge_options")


@contextlib.contextmanager
def options(
    *, timeout: float | None = None, idempotent: bool | None = None, path_values: bool | None = None
) -> Iterator[Options]:
    """Defaults for every call in the block (facade calls included); explicit arguments win."""
    current = _options.get(_NO_OPTIONS)
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("timeout", timeout),
            ("idempotent", idempotent),
            ("path_values", path_values),
        )
        if value is not None
    }
    token = _options.set(replace(current, **changes))
    try:
        yield _options.get(_NO_OPTIONS)
    finally:
        _options.reset(token)


class _Runtime:
    """Settings, pools and housekeeping of this host process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._settings: Settings | None = None
        self.pools: dict[str, Pool] = {}
        self._routes: dict[str, tuple[Pool, str, bool | list[str]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        return self._settings

    def pool(self, name: str) -> Pool:
        pool = self.pools.get(name)
        if pool is not None:
            return pool
        with self._lock:
            pool = self.pools.get(name)
            if pool is None:
                settings = self.settings
                spec = settings.pool_spec(name)
                env = dict(os.environ)
                env.update(settings.envs.get(spec.env, settings.envs["default"]).env_vars)
                env.update(spec.env_vars)
                pool = Pool(name, spec, interpreter_for(settings, spec.env), env)
                self.pools[name] = pool
                self._start_housekeeping()
        return pool

    def route(self, lib: str) -> tuple[Pool, str, bool | list[str]]:
        """(pool, module to import, idempotent setting) for library or module ``lib``."""
        cached = self._routes.get(lib)
        if cached is not None:
            return cached
        settings = self.settings
        if settings.allow_all:
            route: tuple[Pool, str, bool | list[str]] = (self.pool("default"), lib, False)
        else:
            found = settings.library_for(lib)
            if found is None:
                raise LibraryNotAllowed(
                    f"library {lib.split('.')[0]!r} is not listed in [tool.snakebridge.libraries] "
                    f'of {settings.path}; add it there (e.g. {lib.split(".")[0]} = "stdlib" '
                    "or a version) to call it"
                )
            key, spec = found
            module = (spec.module or key) + lib[len(key) :]
            route = (self.pool(settings.pool_for(key)), module, spec.idempotent)
        self._routes[lib] = route
        return route

    def _start_housekeeping(self) -> None:
        if self._housekeeper is None:
            self._housekeeper = threading.Thread(
                target=self._housekeep, daemon=True, name="snakebridge-housekeeping"
            )
            self._housekeeper.start()

    def _housekeep(self) -> None:
        tick = 0
        while not self._stop.wait(_HOUSEKEEPING_S):
            tick += 1
            for pool in list(self.pools.values()):
                pool.housekeep()
            if tick % _STATUS_EVERY == 0:
                with contextlib.suppress(OSError):
                    status_files.publish(status())

    def shutdown(self, grace_s: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            pools, self.pools, self._routes = list(self.pools.values()), {}, {}
        for pool in pools:
            pool.close(grace_s)
        if pools:
            status_files.remove()

    def forget(self) -> None:
        """Drop the parent's pools in a forked child without touching the parent's workers."""
        for pool in self.pools.values():
            for worker in pool.workers:
                worker.conn.close()
        self.pools, self._routes = {}, {}


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> _Runtime:
    """This process's runtime (a fresh one after fork)."""
    global _runtime
    current = _runtime
    if current is not None and current.pid == os.getpid():
        return current
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = _Runtime()
        return _runtime


def _after_fork_in_child() -> None:
    global _runtime
    if _runtime is not None:
        _runtime.forget()
    _runtime = None
    reset_after_fork()
    reset_default_session()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.shutdown(grace_s=1.0)


atexit.register(_at_exit)


# -- building calls ---------------------------------------------------------------------------
def _prepare(
    pool: Pool,
    module: str | None,
    qualname: str,
    subject: Ref | None,
    op: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
) -> Call:
    if not isinstance(args, list | tuple):
        raise TypeError(
            f"args must be a list or tuple of positional arguments, not "
            f"{type(args).__name__} (write [{args!r}])"
        )
    current = _options.get(_NO_OPTIONS)
    owner = session or (subject._sb_session if subject is not None else current_session())
    if owner.closed:
        raise RefInvalid(f"{owner!r} is closed; open a new snakebridge.session()")
    flags = p.FLAG_PATH_VALUES if current.path_values else 0
    codec = codec_for_thread()
    call_id = next(_call_ids)
    ref_id = subject._sb_id if subject is not None else None
    frame = codec.encode(
        [p.CALL, call_id, owner.id, flags, module, qualname, ref_id, op, list(args), kwargs]
    )
    owner.callback_ids.extend(codec.callbacks)
    want = subject._sb_worker if subject is not None else None
    for ref in codec.refs_seen:
        if want is None:
            want = ref._sb_worker
        elif ref._sb_worker is not want:
            raise EncodeError(
                f"the arguments hold Refs from two workers ({want.pid} and {ref._sb_worker.pid}); "
                "a call runs in one worker, so create these objects in one session call chain"
            )
    if timeout is None:
        timeout = current.timeout if current.timeout is not None else pool.spec.call_timeout
    if subject is not None:
        description = f"{subject._sb_type}.{qualname or op}"
    else:
        description = f"{module}.{qualname}" if qualname else str(module)
    return Call(
        frame=frame,
        call_id=call_id,
        description=description,
        session=owner,
        timeout=timeout,
        want=want,
        idempotent=idempotent or bool(current.idempotent),
    )


def _library_call(
    lib: str,
    symbol: str,
    op: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
) -> tuple[Pool, Call]:
    pool, module, configured = runtime().route(lib)
    if configured is True or (isinstance(configured, list) and symbol in configured):
        idempotent = True
    return pool, _prepare(
        pool, module, symbol, None, op, args, kwargs, timeout, idempotent, session
    )


def call(
    lib: str,
    symbol: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    idempotent: bool = False,
    session: Session | None = None,
) -> Any:
    """Call ``lib.symbol(*args, **kwargs)`` in a worker; a value, or a Ref for other objects."""
    pool, prepared = _library_call(
        lib, symbol, p.OP_CALL, args, kwargs, timeout, idempotent, session
    )
    return pool.run(prepared, codec_for_thread())


def get(
    lib: str, symbol: str, *, timeout: float | None = None, session: Session | None = None
) -> Any:
    """The value of attribute ``lib.symbol`` (a Ref when it is not a value)."""
    pool, prepared = _library_call(lib, symbol, p.OP_GET, (), None, timeout, True, session)
    return pool.run(prepared, codec_for_thread())


async def acall(
    lib: str,
    symbol: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    idempotent: bool = False,
    session: Session | None = None,
) -> Any:
    """Async twin of :func:`call`."""
    pool, prepared = _library_call(
        lib, symbol, p.OP_CALL, args, kwargs, timeout, idempotent, session
    )
    return await pool.arun(prepared, codec_for_thread())


async def aget(
    lib: str, symbol: str, *, timeout: float | None = None, session: Session | None = None
) -> Any:
    """Async twin of :func:`get`."""
    pool, prepared = _library_call(lib, symbol, p.OP_GET, (), None, timeout, True, session)
    return await pool.arun(prepared, codec_for_thread())


def map_(
    lib: str,
    symbol: str,
    items: Iterable[Any],
    *,
    timeout: float | None = None,
    session: Session | None = None,
) -> list[Any]:
    """``[lib.symbol(item) for item in items]`` in the pool, pipelined across its workers.

    Many calls travel at once on each worker's connection, so small calls run at transport
    speed. Results come back in order; the first failed item's error is raised after all ran.
    """
    pool, module, configured = runtime().route(lib)
    idempotent = configured is True or (isinstance(configured, list) and symbol in configured)
    calls = [
        _prepare(pool, module, symbol, None, p.OP_CALL, [item], None, timeout, idempotent, session)
        for item in items
    ]
    if not calls:
        return []
    results = pool.run_many(calls, codec_for_thread())
    for value in results:
        if isinstance(value, Exception):
            raise value
    return results


def ref_operation(
    ref: Ref, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
) -> Any:
    """Run one operation on the object behind ``ref``, in the worker that holds it."""
    check_valid(ref)
    pool: Pool = ref._sb_worker.owner
    prepared = _prepare(pool, None, name, ref, op, args, kwargs, None, False, None)
    return pool.run(prepared, codec_for_thread())


def method(ref: Ref, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """``ref.name(*args, **kwargs)`` in one round trip, even where the name is a Ref attribute."""
    return ref._sb_method(name, list(args), kwargs or None)


def attr(ref: Ref, name: str, /) -> Any:
    """The attribute ``name`` of the remote object (``getattr`` for names a Ref class shadows)."""
    return ref._sb_op(p.OP_GETATTR, args=[name])


def status() -> list[dict[str, Any]]:
    """Per pool: ``{"name", "size", "queued", "workers": [{"pid", "state", "calls"}]}``."""
    return [pool.status() for pool in list(runtime().pools.values())]


def shutdown(grace_s: float = 2.0) -> None:
    """Stop every worker of this process; the next call starts fresh pools."""
    global _runtime
    with _runtime_lock:
        current, _runtime = _runtime, None
    if current is not None and current.pid == os.getpid():
        current.shutdown(grace_s)
