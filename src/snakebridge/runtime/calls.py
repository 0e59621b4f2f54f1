"""One call, prepared: encoded frame, routing wishes, timeout; and the per-block options."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from snakebridge.errors import ConfigError, EncodeError, RefInvalid
from snakebridge.runtime import dataplane
from snakebridge.runtime.codec import CALLBACKS, codec_for_thread
from snakebridge.runtime.exchange import in_callback_of
from snakebridge.runtime.ray_transport import storing
from snakebridge.runtime.refs import Ref, Session, current_session
from snakebridge_worker import protocol as p

if TYPE_CHECKING:
    from snakebridge.runtime.lease import Worker

__all__ = ["Call", "Options", "next_call_id", "options", "prepare", "prepare_many"]

_call_ids = itertools.count(1)


def next_call_id() -> int:
    return next(_call_ids)


@dataclass(frozen=True)
class Options:
    """Per-call options set by ``with snakebridge.options(...)``."""

    timeout: float | None = None
    idempotent: bool | None = None
    path_values: bool = False
    pool: str | None = None  # scale (#15): the pool every call of the block goes to
    affinity: str | None = None  # scale (#15): one of AFFINITIES


AFFINITIES = ("hint", "strict_queue", "strict_fail_fast")
_NO_OPTIONS = Options()
_options: contextvars.ContextVar[Options] = contextvars.ContextVar("snakebridge_options")


@contextlib.contextmanager
def options(
    *,
    timeout: float | None = None,
    idempotent: bool | None = None,
    path_values: bool | None = None,
    pool: str | None = None,
    affinity: str | None = None,
) -> Iterator[Options]:
    """Defaults for every call in the block (facade calls included); explicit arguments win."""
    check_affinity(affinity)
    current = _options.get(_NO_OPTIONS)
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("timeout", timeout),
            ("idempotent", idempotent),
            ("path_values", path_values),
            ("pool", pool),
            ("affinity", affinity),
        )
        if value is not None
    }
    token = _options.set(replace(current, **changes))
    try:
        yield _options.get(_NO_OPTIONS)
    finally:
        _options.reset(token)


def check_affinity(affinity: str | None) -> None:
    """ValueError naming the choices for an unknown affinity mode."""
    if affinity is not None and affinity not in AFFINITIES:
        raise ConfigError(
            f"affinity must be one of {', '.join(AFFINITIES)}, not {affinity!r}",
            key="affinity",
            path=None,
        )


def current_options() -> Options:
    """The options of the enclosing ``with snakebridge.options(...)`` block."""
    return _options.get(_NO_OPTIONS)


@dataclass(slots=True)
class Call:
    """One encoded request and what is needed to route and answer it."""

    frame: bytes
    call_id: int
    description: str
    session: Session
    timeout: float | None
    want: Worker | None = None  # the worker holding the Refs it uses
    avoid: Worker | None = None  # a worker it must not wait for (its callback is running)
    nested: bool = False  # sent from inside a host callback of ``want``: runs at once
    idempotent: bool = False
    callbacks: tuple[int, ...] = ()  # host callables it sent (dropped if its worker is lost)
    affinity: str = "strict_queue"  # scale (#15): how firmly it sticks to its worker
    pin: bool = False  # scale (#15): no Refs, but its session is pinned to one worker


def prepare(
    pool_timeout: float | None,
    module: str | None,
    qualname: str,
    subject: Ref | None,
    op: str,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
    affinity: str | None = None,
    pool: Any = None,
) -> Call:
    """Encode a CALL; find the worker its Refs live in and whether it nests in a callback.

    ``pool``: the pool it goes to (a call on a Ref goes to the Ref's), so that DataFrames and
    Arrow data are sent in a form its workers can rebuild (dataplane).
    """
    if affinity is not None:
        check_affinity(affinity)
    if type(args) is not list and not isinstance(args, (list, tuple)):
        raise TypeError(
            f"args must be a list or tuple of positional arguments, not "
            f"{type(args).__name__} (write [{args!r}])"
        )
    current = _options.get(_NO_OPTIONS)
    owner = session or (subject._sb_session if subject is not None else current_session())
    if owner.closed:
        raise RefInvalid(f"{owner!r} is closed; open a new snakebridge.session()")
    codec = codec_for_thread()
    call_id = next(_call_ids)
    ref_id = subject._sb_id if subject is not None else None
    want: Worker | None = subject._sb_worker if subject is not None else None  # type: ignore[assignment]
    line = in_callback_of()
    flags = p.FLAG_PATH_VALUES if current.path_values else 0
    message = [p.CALL, call_id, owner.id, flags, module, qualname, ref_id, op, list(args), kwargs]
    if pool is None and want is not None:
        pool = want.pool  # a call on a Ref goes to the Ref's pool
    dataplane.sending_to(pool)
    with _storing(pool):
        frame = codec.encode(message)
    callbacks: tuple[int, ...] = ()
    if codec.callbacks:
        callbacks = tuple(codec.callbacks)
        owner.callback_ids.extend(callbacks)
    for ref in codec.refs_seen:
        holder: Worker = ref._sb_worker  # type: ignore[assignment]
        if want is None:
            want = holder
        elif holder is not want:
            raise EncodeError(
                f"the arguments hold Refs from two workers ({want.pid} and {holder.pid}); "
                "a call runs in one worker, so create these objects in one session call chain"
            )
    nested = want is not None and line is not None and line is want.line
    if nested:  # encode again with the flag; the first encoding's callables are dropped
        for callback_id in callbacks:
            CALLBACKS.pop(callback_id, None)
        message[3] = flags | p.FLAG_NESTED
        with _storing(pool):
            frame = codec.encode(message)
        callbacks = tuple(codec.callbacks)
        owner.callback_ids.extend(callbacks)
    if timeout is None:
        timeout = current.timeout if current.timeout is not None else pool_timeout
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
        avoid=line.holder if line is not None and not nested else None,
        nested=nested,
        idempotent=idempotent or bool(current.idempotent),
        callbacks=callbacks,
        affinity=affinity or current.affinity or "strict_queue",
        pin=want is None and bool(getattr(owner, "pin", False)),
    )


def _storing(pool: Any) -> contextlib.AbstractContextManager[Any]:
    """Encode for ``pool`` inside this: a Ray pool's large arrays go by its object store.

    Only a Ray pool, or a call made inside a host callback (which would otherwise use the
    waiting worker's store), needs to choose; any other encoding enters nothing."""
    if pool is None or (pool.spec.backend != "ray" and in_callback_of() is None):
        return _NO_CONTEXT
    return storing(pool.spec)


_NO_CONTEXT = contextlib.nullcontext()


def prepare_many(
    pool_timeout: float | None,
    module: str | None,
    qualname: str,
    items: Iterable[Any],
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
    pool: Any,
) -> list[Call]:
    """``prepare`` of ``module.qualname(item)`` for every item (a map's calls), in one pass.

    What the calls share is worked out once; an item holding Refs or host callables goes
    through :func:`prepare` itself (it may have to run on the worker holding them).
    """
    with _storing(pool):
        return _prepare_many(
            pool_timeout, module, qualname, items, timeout, idempotent, session, pool
        )


def _prepare_many(
    pool_timeout: float | None,
    module: str | None,
    qualname: str,
    items: Iterable[Any],
    timeout: float | None,
    idempotent: bool,
    session: Session | None,
    pool: Any,
) -> list[Call]:
    current = _options.get(_NO_OPTIONS)
    owner = session or current_session()
    if owner.closed:
        raise RefInvalid(f"{owner!r} is closed; open a new snakebridge.session()")
    codec = codec_for_thread()
    line = in_callback_of()
    avoid = line.holder if line is not None else None
    flags = p.FLAG_PATH_VALUES if current.path_values else 0
    if timeout is None:
        timeout = current.timeout if current.timeout is not None else pool_timeout
    description = f"{module}.{qualname}" if qualname else str(module)
    idempotent = idempotent or bool(current.idempotent)
    affinity = current.affinity or "strict_queue"
    pin = bool(getattr(owner, "pin", False))
    owner_id, call, encode, ids = owner.id, p.CALL, codec.encode, _call_ids
    dataplane.sending_to(pool)
    calls: list[Call] = []
    for item in items:
        call_id = next(ids)
        frame = encode(
            [call, call_id, owner_id, flags, module, qualname, None, p.OP_CALL, [item], None]
        )
        if codec.callbacks or codec.refs_seen:  # rare: the general path decides where it runs
            codec._forget_callbacks()
            calls.append(
                prepare(
                    pool_timeout,
                    module,
                    qualname,
                    None,
                    p.OP_CALL,
                    [item],
                    None,
                    timeout,
                    idempotent,
                    session,
                    pool=pool,
                )
            )
            dataplane.sending_to(pool)
            continue
        calls.append(
            Call(
                frame,
                call_id,
                description,
                owner,
                timeout,
                None,
                avoid,
                False,
                idempotent,
                (),
                affinity,
                pin,
            )
        )
    return calls
