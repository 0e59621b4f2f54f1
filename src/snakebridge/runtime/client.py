"""The universal call API over lazily started pools: call/get and their asyncio twins.

(Over 350 lines on purpose: one short public function per entry point, each with its async
twin.)

One :class:`_Runtime` per host process owns the settings, the pools and a housekeeping
thread (releases dropped Refs in batches, replaces idle workers that died, publishes status).
A process that forks gets a fresh runtime in the child; it never shares its parent's workers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from snakebridge.config import Settings, load_settings
from snakebridge.errors import ConfigError, EncodeError, LibraryNotAllowed
from snakebridge.runtime import dataplane, hostobjects, status_files, zygote
from snakebridge.runtime.calls import Call, Options, current_options, options, prepare, prepare_many
from snakebridge.runtime.helpers import init_options
from snakebridge.runtime.interpreters import interpreter_for
from snakebridge.runtime.pool import Pool
from snakebridge.runtime.refs import Ref, Session, reset_default_session
from snakebridge.runtime.transport import reset_after_fork
from snakebridge_worker import protocol as p

__all__ = [
    "ClientSession",
    "Options",
    "aattr",
    "acall",
    "aget",
    "amap",
    "amethod",
    "attr",
    "call",
    "get",
    "map_",
    "method",
    "options",
    "runtime",
    "shutdown",
    "status",
]


def _module_of_library(library: str) -> str:
    return runtime().route(library)[1]


hostobjects.module_of_library = _module_of_library


def _shm_threshold() -> tuple[object | None, int | None]:
    current = runtime()
    return current, current.settings.shm_threshold


dataplane.configured_threshold = _shm_threshold

_HOUSEKEEPING_S = 0.2
_STATUS_EVERY = 5


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
                interpreter = interpreter_for(settings, spec.env)
                options = {  # the allowlist, enforced by the workers; helpers, preload, init (#14)
                    "allowlist": settings.allowlist(),
                    **init_options(settings, name),
                }
                factory = None
                if spec.backend == "ray":  # ray (#15): workers as Ray actors
                    from snakebridge.runtime import ray_transport

                    factory = ray_transport.transport_factory(name, spec, settings, interpreter)
                pool = Pool(
                    name, spec, interpreter, env, init_options=options, transport_factory=factory
                )
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
                with contextlib.suppress(Exception):
                    pool.housekeep()
            if tick % _STATUS_EVERY == 0:
                with contextlib.suppress(Exception):
                    status_files.publish(status())

    def shutdown(self, grace_s: float = 2.0) -> None:
        self._stop.set()
        with self._lock:
            pools, self.pools, self._routes = list(self.pools.values()), {}, {}
        for pool in pools:
            pool.close(grace_s)
        if pools:
            status_files.remove()
        zygote.stop_all()  # scale (#15): the templates go with their pools

    def forget(self) -> None:
        """Drop the parent's pools in a forked child without touching the parent's workers."""
        for pool in self.pools.values():
            for worker in pool.workers:
                close = getattr(worker.transport, "close", None)
                if close is not None:
                    close()
        self.pools, self._routes = {}, {}


_runtime: _Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> _Runtime:
    """This process's runtime (a fresh one after fork: the fork hook below drops it, so the
    common case needs no getpid, a system call on every call)."""
    global _runtime
    current = _runtime
    if current is not None:
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
    zygote.reset_after_fork()
    reset_default_session()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.shutdown(grace_s=1.0)


atexit.register(_at_exit)


# -- calls ------------------------------------------------------------------------------------
class ClientSession(Session):
    """A session whose ``call``/``get`` (and async twins) make their Refs in it.

    With ``pin`` (#15) every call of the session without Refs goes to the worker its first call
    ran on (one per pool), so state a library keeps per process stays in reach.
    """

    def __init__(self, session_id: int | None = None, *, pin: bool = False) -> None:
        super().__init__(session_id)
        self.pin = pin
        self.pins: dict[str, Any] = {}  # pool name -> the worker this session is pinned to

    def call(
        self,
        lib: str,
        symbol: str,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """``snakebridge.call`` within this session."""
        return call(lib, symbol, args, kwargs, session=self, **options)

    def get(self, lib: str, symbol: str, **options: Any) -> Any:
        """``snakebridge.get`` within this session."""
        return get(lib, symbol, session=self, **options)

    async def acall(
        self,
        lib: str,
        symbol: str,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """``snakebridge.acall`` within this session."""
        return await acall(lib, symbol, args, kwargs, session=self, **options)

    async def aget(self, lib: str, symbol: str, **options: Any) -> Any:
        """``snakebridge.aget`` within this session."""
        return await aget(lib, symbol, session=self, **options)


def _library_call(
    lib: str,
    symbol: str,
    op: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
    pool_name: str | None = None,
    affinity: str | None = None,
) -> tuple[Pool, Call]:
    pool, module, configured = _routed(lib, pool_name)
    if configured is True or (isinstance(configured, list) and symbol in configured):
        idempotent = True
    prepared = prepare(
        pool.spec.call_timeout,
        module,
        symbol,
        None,
        op,
        args,
        kwargs,
        timeout,
        idempotent,
        session,
        affinity,
        pool=pool,
    )
    _check_pool(prepared, pool, lib)
    return pool, prepared


def _routed(lib: str, pool_name: str | None) -> tuple[Pool, str, bool | list[str]]:
    """The library's route, sent to ``pool_name`` (a call's or a block's ``pool=``) if given."""
    current = runtime()
    routed = current.route(lib)
    name = pool_name or current_options().pool
    if name is None or name == routed[0].name:
        return routed
    settings = current.settings
    known = {"default", *settings.pools}
    if name not in known:
        raise ConfigError(
            f"pool={name!r} is not a configured pool (known: {sorted(known)}); add "
            f"[tool.snakebridge.pools.{name}] or pass one of those",
            key="pool",
            path=None,
        )
    return current.pool(name), routed[1], routed[2]


def _check_pool(prepared: Call, pool: Pool, lib: str) -> None:
    """A Ref can only be passed to libraries of the pool that holds it."""
    holder = prepared.want
    if holder is not None and holder.pool is not pool:
        raise EncodeError(
            f"an argument is a Ref held by pool {holder.pool.name!r} (worker {holder.pid}), but "
            f"{lib!r} runs in pool {pool.name!r}; pass values, or call a library of that pool"
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
    pool: str | None = None,
    affinity: str | None = None,
) -> Any:
    """Call ``lib.symbol(*args, **kwargs)`` in a worker; a value, or a Ref for other objects."""
    routed, prepared = _library_call(
        lib, symbol, p.OP_CALL, args, kwargs, timeout, idempotent, session, pool, affinity
    )
    return routed.run(prepared)


def get(
    lib: str, symbol: str, *, timeout: float | None = None, session: Session | None = None
) -> Any:
    """The value of attribute ``lib.symbol`` (a Ref when it is not a value)."""
    pool, prepared = _library_call(lib, symbol, p.OP_GET, (), None, timeout, True, session)
    return pool.run(prepared)


async def acall(
    lib: str,
    symbol: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    idempotent: bool = False,
    session: Session | None = None,
    pool: str | None = None,
    affinity: str | None = None,
) -> Any:
    """Async twin of :func:`call`."""
    routed, prepared = _library_call(
        lib, symbol, p.OP_CALL, args, kwargs, timeout, idempotent, session, pool, affinity
    )
    return await routed.arun(prepared)


async def aget(
    lib: str, symbol: str, *, timeout: float | None = None, session: Session | None = None
) -> Any:
    """Async twin of :func:`get`."""
    pool, prepared = _library_call(lib, symbol, p.OP_GET, (), None, timeout, True, session)
    return await pool.arun(prepared)


def _map_calls(
    lib: str, symbol: str, items: Iterable[Any], timeout: float | None, session: Session | None
) -> tuple[Pool, list[Call]]:
    pool, module, configured = _routed(lib, None)
    idempotent = configured is True or (isinstance(configured, list) and symbol in configured)
    calls = prepare_many(
        pool.spec.call_timeout, module, symbol, items, timeout, idempotent, session, pool
    )
    for prepared in calls:
        if prepared.want is not None:
            _check_pool(prepared, pool, lib)
    return pool, calls


def _raise_first(results: list[Any]) -> list[Any]:
    for value in results:
        if isinstance(value, Exception):
            raise value
    return results


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
    pool, calls = _map_calls(lib, symbol, items, timeout, session)
    if not calls:
        return []
    return _raise_first(pool.run_many(calls))


async def amap(
    lib: str,
    symbol: str,
    items: Iterable[Any],
    *,
    timeout: float | None = None,
    session: Session | None = None,
) -> list[Any]:
    """Async twin of :func:`map_`: every item in flight at once over the pool's workers."""
    import asyncio

    pool, calls = _map_calls(lib, symbol, items, timeout, session)
    results = await asyncio.gather(*(pool.arun(c) for c in calls), return_exceptions=True)
    for value in results:
        if isinstance(value, BaseException) and not isinstance(value, Exception):
            raise value
    return _raise_first(list(results))


def method(ref: Ref, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """``ref.name(*args, **kwargs)`` in one round trip, even where the name is a Ref attribute."""
    return ref._sb_method(name, list(args), kwargs or None)


def attr(ref: Ref, name: str, /) -> Any:
    """The attribute ``name`` of the remote object (``getattr`` for names a Ref class shadows)."""
    return ref._sb_op(p.OP_GETATTR, args=[name])


async def amethod(ref: Ref, name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Async twin of :func:`method`."""
    return await ref._sb_aop(p.OP_METHOD, args=[name, *args], kwargs=kwargs or None)


async def aattr(ref: Ref, name: str, /) -> Any:
    """Async twin of :func:`attr`."""
    return await ref._sb_aop(p.OP_GETATTR, args=[name])


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
