"""Refs (handles to objects living in a worker) and the sessions that own them.

(Over 350 lines on purpose: a Ref forwards the whole Python object protocol, one small method
per special method.)
"""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

from snakebridge.errors import RefInvalid
from snakebridge_worker import protocol as p

__all__ = [
    "IteratorRef",
    "Ref",
    "RefHost",
    "RemoteMethod",
    "Session",
    "as_proxy",
    "current_session",
    "known_mro",
    "learn_mro",
    "make_ref",
    "register_proxy",
    "remote_mro",
    "remote_type",
]

_session_ids = itertools.count(1)
_SESSION_CLOSE_HOOKS: list[Callable[[list[int]], None]] = []
"""Called with a closing session's host-callback ids (the codec registers its cleanup)."""


class RefHost(Protocol):
    """What a Ref needs from the worker that holds its object (the pool's worker record)."""

    pid: int
    death: BaseException | None

    @property
    def alive(self) -> bool: ...

    def operate(
        self, ref: Ref, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any: ...

    async def aoperate(
        self, ref: Ref, op: str, name: str, args: list[Any], kwargs: dict[str, Any] | None
    ) -> Any: ...

    def add_ref(self) -> None: ...

    def drop_ref(self, session_id: int, ref_id: int, session_closed: bool) -> None: ...

    def release_session(self, session_id: int) -> None: ...


class Session:
    """A scope for Refs: closing it releases every Ref it owns, in every worker."""

    def __init__(self, session_id: int | None = None) -> None:
        self.id = next(_session_ids) if session_id is None else session_id
        self.closed = False
        self.workers: dict[int, RefHost] = {}
        self.callback_ids: list[int] = []
        self._token: contextvars.Token[Session] | None = None

    def close(self) -> None:
        """Release every Ref of this session; using one afterwards raises RefInvalid."""
        if self.closed:
            return
        self.closed = True
        for forget in _SESSION_CLOSE_HOOKS:
            forget(self.callback_ids)
        for worker in self.workers.values():
            worker.release_session(self.id)
        self.workers.clear()

    def __enter__(self) -> Session:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        self.close()

    def __repr__(self) -> str:
        return f"<snakebridge.Session {self.id}{' closed' if self.closed else ''}>"


_DEFAULT = Session(0)
_current: contextvars.ContextVar[Session] = contextvars.ContextVar("snakebridge_session")


def current_session() -> Session:
    """The session of the enclosing ``with snakebridge.session()`` block, else the default."""
    return _current.get(_DEFAULT)


def reset_default_session() -> None:
    global _DEFAULT
    _DEFAULT = Session(0)


def _describe(ref: Ref) -> str:
    worker = ref._sb_worker
    return f"Ref #{ref._sb_id} to a {ref._sb_type} (worker {worker.pid})"


def check_valid(ref: Ref) -> None:
    """RefInvalid naming the object when its session closed or its worker is gone."""
    if ref._sb_session.closed:
        raise RefInvalid(f"{_describe(ref)} was released when its session closed")
    worker = ref._sb_worker
    if not worker.alive:
        cause = getattr(worker.death, "cause", None)
        reason = f"crashed ({cause})" if cause else "was stopped"
        raise RefInvalid(f"{_describe(ref)} is gone: the worker holding it {reason}")


_BATCH_FIRST, _BATCH_MAX = 16, 512


def _exc_spec(exc: BaseException | None) -> list[str] | None:
    if exc is None:
        return None
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins":
            return [cls.__name__, str(exc)]
    return ["Exception", str(exc)]


class Ref:
    """A handle to an object that lives in a worker; operations on it run there."""

    __slots__ = ("__weakref__", "_sb_id", "_sb_session", "_sb_type", "_sb_worker")
    _sb_id: int
    _sb_session: Session
    _sb_type: str
    _sb_worker: RefHost

    def _sb_op(
        self,
        op: str,
        name: str = "",
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        check_valid(self)
        return self._sb_worker.operate(self, op, name, args or [], kwargs)

    async def _sb_aop(
        self,
        op: str,
        name: str = "",
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        check_valid(self)
        return await self._sb_worker.aoperate(self, op, name, args or [], kwargs)

    def _sb_method(
        self, name: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> Any:
        """``self.name(*args, **kwargs)`` in one round trip (no bound-method Ref)."""
        return self._sb_op(p.OP_METHOD, args=[name, *(args or ())], kwargs=kwargs)

    # attributes and calls
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_sb_"):
            raise AttributeError(name)
        key = (self._sb_type, name)
        if key in _METHODS:  # known to be a method of this remote class: call it in one hop
            return RemoteMethod(self, name)
        value = self._sb_op(p.OP_GETATTR, args=[name])
        if isinstance(value, Ref) and value._sb_type in _BOUND_METHOD_TYPES:
            _METHODS.add(key)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_sb_"):
            object.__setattr__(self, name, value)
        else:
            self._sb_op(p.OP_SETATTR, args=[name, value])

    def __delattr__(self, name: str) -> None:
        self._sb_op(p.OP_DELATTR, args=[name])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sb_op(p.OP_CALL, args=list(args), kwargs=kwargs)

    def __dir__(self) -> list[str]:
        names: list[str] = self._sb_op(p.OP_BUILTIN, "dir")
        return names

    # containers
    def __getitem__(self, key: Any) -> Any:
        return self._sb_op(p.OP_OPERATOR, "getitem", [self, key])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._sb_op(p.OP_OPERATOR, "setitem", [self, key, value])

    def __delitem__(self, key: Any) -> None:
        self._sb_op(p.OP_OPERATOR, "delitem", [self, key])

    def __len__(self) -> int:
        length: int = self._sb_op(p.OP_BUILTIN, "len")
        return length

    def __contains__(self, item: Any) -> bool:
        return bool(self._sb_op(p.OP_OPERATOR, "contains", [self, item]))

    def __iter__(self) -> Iterator[Any]:
        """A remote iterator is its own iterator (items fetched one by one, so none is lost);
        a container is iterated in growing prefetched batches (its fresh iterator's own)."""
        same, iterator = self._sb_op(p.OP_ITER)
        if same:  # this Ref (an IteratorRef now, if its class was not known as an iterator)
            object.__setattr__(self, "__class__", _fitted(type(self), self._sb_type, True))
            return self
        return _batches(iterator)

    def __aiter__(self) -> AsyncIterator[Any]:
        return _abatches(self)

    # conversions
    def __repr__(self) -> str:
        try:
            check_valid(self)
        except RefInvalid:
            return f"<snakebridge.Ref #{self._sb_id} to a {self._sb_type} (released)>"
        text: str = self._sb_op(p.OP_BUILTIN, "repr")
        return text

    def __str__(self) -> str:
        text: str = self._sb_op(p.OP_BUILTIN, "str")
        return text

    def __format__(self, spec: str) -> str:
        text: str = self._sb_op(p.OP_BUILTIN, "format", args=[spec])
        return text

    def __bool__(self) -> bool:
        return bool(self._sb_op(p.OP_BUILTIN, "bool"))

    def __hash__(self) -> int:
        value: int = self._sb_op(p.OP_BUILTIN, "hash")
        return value

    def __float__(self) -> float:
        value: float = self._sb_op(p.OP_BUILTIN, "float")
        return value

    def __int__(self) -> int:
        value: int = self._sb_op(p.OP_BUILTIN, "int")
        return value

    def __index__(self) -> int:
        value: int = self._sb_op(p.OP_BUILTIN, "index")
        return value

    def __complex__(self) -> complex:
        value: complex = self._sb_op(p.OP_BUILTIN, "complex")
        return value

    def __abs__(self) -> Any:
        return self._sb_op(p.OP_BUILTIN, "abs")

    def __neg__(self) -> Any:
        return self._sb_op(p.OP_OPERATOR, "neg", [self])

    def __pos__(self) -> Any:
        return self._sb_op(p.OP_OPERATOR, "pos", [self])

    def __invert__(self) -> Any:
        return self._sb_op(p.OP_OPERATOR, "invert", [self])

    # context manager
    def __enter__(self) -> Any:
        return self._sb_op(p.OP_METHOD, args=["__enter__"])

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        return self._sb_op(p.OP_EXIT, args=[_exc_spec(exc)])

    def __reduce__(self) -> Any:
        raise TypeError(f"{_describe(self)} cannot be pickled: it lives in a worker process")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown nothing is left to release
            self._sb_worker.drop_ref(self._sb_session.id, self._sb_id, self._sb_session.closed)


class IteratorRef(Ref):
    """A Ref to a remote iterator (its class defines ``__next__``): ``next(r)`` takes one item
    there, and ``iter(r) is r``. Only these Refs are ``collections.abc.Iterator`` instances."""

    __slots__ = ()

    def __next__(self) -> Any:
        items, _done = self._sb_op(p.OP_NEXT_BATCH, args=[1])
        if items:
            return items[0]
        raise StopIteration


_METHODS: set[tuple[str, str]] = set()
"""(remote type, attribute) pairs seen to be bound methods: later lookups call in one hop."""
_BOUND_METHOD_TYPES = frozenset(
    ("builtins.method", "builtins.builtin_function_or_method", "builtins.method-wrapper")
)


class RemoteMethod:
    """``ref.name`` for a name known to be a method: calling it is one round trip (OP_METHOD).

    Anything else done with it (attributes, repr, passing it to a call) uses the bound-method
    Ref, fetched once on first need.
    """

    __slots__ = ("_sb_name", "_sb_owner", "_sb_ref")

    def __init__(self, owner: Ref, name: str) -> None:
        self._sb_owner, self._sb_name = owner, name
        self._sb_ref: Ref | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._sb_owner._sb_method(self._sb_name, list(args), kwargs or None)

    def _sb_materialize(self) -> Ref:
        if self._sb_ref is None:
            self._sb_ref = self._sb_owner._sb_op(p.OP_GETATTR, args=[self._sb_name])
        return self._sb_ref

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_sb_"):
            raise AttributeError(name)
        return getattr(self._sb_materialize(), name)

    def __repr__(self) -> str:
        return repr(self._sb_materialize())

    def __eq__(self, other: object) -> bool:
        if type(other) is RemoteMethod:
            other = other._sb_materialize()
        return bool(self._sb_materialize() == other)

    def __hash__(self) -> int:
        return hash(self._sb_materialize())


def _batches(iterator: Ref) -> Iterator[Any]:
    batch = _BATCH_FIRST
    while True:
        items, done = iterator._sb_op(p.OP_NEXT_BATCH, args=[batch])
        yield from items
        if done:
            return
        batch = min(batch * 2, _BATCH_MAX)


async def _abatches(ref: Ref) -> AsyncIterator[Any]:
    same, iterator = await ref._sb_aop(p.OP_ITER)
    if same:
        iterator = ref
    batch = 1 if same else _BATCH_FIRST
    while True:
        items, done = await iterator._sb_aop(p.OP_NEXT_BATCH, args=[batch])
        for item in items:
            yield item
        if done or (same and not items):
            return
        if not same:
            batch = min(batch * 2, _BATCH_MAX)


def _binary(name: str, reflected: bool) -> Any:
    if reflected:

        def method(self: Ref, other: Any) -> Any:
            return self._sb_op(p.OP_OPERATOR, name, [other, self])
    else:

        def method(self: Ref, other: Any) -> Any:
            return self._sb_op(p.OP_OPERATOR, name, [self, other])

    return method


_BINARY = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "matmul": "matmul",
    "truediv": "truediv",
    "floordiv": "floordiv",
    "mod": "mod",
    "pow": "pow",
    "lshift": "lshift",
    "rshift": "rshift",
    "and": "and_",
    "or": "or_",
    "xor": "xor",
}
for _dunder, _operator in _BINARY.items():
    setattr(Ref, f"__{_dunder}__", _binary(_operator, reflected=False))
    setattr(Ref, f"__r{_dunder}__", _binary(_operator, reflected=True))
    setattr(Ref, f"__i{_dunder}__", _binary(f"i{_operator.rstrip('_')}", reflected=False))
for _compare in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(Ref, f"__{_compare}__", _binary(_compare, reflected=False))


_PROXIES: dict[str, type[Ref]] = {}
_MRO_CACHE: dict[str, tuple[str, ...]] = {}
_ITERATORS: set[str] = set()  # remote type keys whose classes define __next__
_CLASS_FOR: dict[str, type[Ref]] = {}  # remote type key -> the class its Refs are made as
_VARIANTS: dict[tuple[type[Ref], bool, tuple[str, ...]], type[Ref]] = {}
_REGISTERED_ABCS = frozenset(
    f"collections.abc.{name}"
    for name in (
        "Sequence",
        "MutableSequence",
        "Set",
        "MutableSet",
        "Mapping",
        "MutableMapping",
        "MappingView",
        "KeysView",
        "ItemsView",
        "ValuesView",
    )
)
"""The collections ABCs that only registration or inheritance makes a class an instance of
(the others, such as Iterable or Sized, look at the methods a class has)."""


def register_proxy(type_key: str, cls: type[Ref]) -> None:
    """Make Refs whose remote class has ``type_key`` in its MRO instances of ``cls``.

    ``cls`` must subclass :class:`Ref` and declare ``__slots__ = ()``. The most specific
    registered class in the remote MRO wins.
    """
    if not (isinstance(cls, type) and issubclass(cls, Ref)) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls!r} must be a Ref subclass with __slots__ = ()")
    if cls.__hash__ is None:  # it defines __eq__: hashing is the remote object's business
        cls.__hash__ = Ref.__hash__
    _PROXIES[type_key] = cls
    _CLASS_FOR.clear()


def learn_mro(type_key: str, mro: list[str] | tuple[str, ...], iterator: bool = False) -> None:
    """Remember the remote MRO of ``type_key`` and whether that class is an iterator (the
    worker sends both with a class's first Ref)."""
    _MRO_CACHE[type_key] = tuple(str(name) for name in mro)
    if iterator:
        _ITERATORS.add(type_key)
    else:
        _ITERATORS.discard(type_key)
    _CLASS_FOR.pop(type_key, None)


def known_mro(type_key: str) -> tuple[str, ...]:
    """The remote MRO of ``type_key`` as far as the host knows it (no round trip)."""
    return _MRO_CACHE.get(type_key, (type_key,))


def _fitted(cls: type[Ref], type_key: str, iterator: bool) -> type[Ref]:
    """The class for Refs to remote type ``type_key`` that ``cls`` stands for: ``cls`` or
    its subclass made an iterator (:class:`IteratorRef`'s ``__next__``) when the remote class
    is one, and registered with the collections ABCs it derives from (so ``isinstance(ref,
    Sequence)`` answers as the remote class does). A proxy class registered for exactly that
    type takes these on itself (every instance of it is one of that type), so it stays the
    class of its Refs."""
    abcs = tuple(name for name in _MRO_CACHE.get(type_key, ()) if name in _REGISTERED_ABCS)
    iterator = iterator and not hasattr(cls, "__next__")
    exact = _PROXIES.get(type_key) is cls or vars(cls).get("__sb_type__") == type_key
    if cls is not Ref and exact:  # (an async proxy class names its type as __sb_type__)
        if iterator:
            cls.__next__ = IteratorRef.__next__  # type: ignore[attr-defined]
            abcs += ("collections.abc.Iterator",)  # (also clears the ABCs' negative caches)
        for name in abcs:
            getattr(collections.abc, name.rpartition(".")[2]).register(cls)
        return cls
    return _variant(cls, iterator, abcs)


def _variant(cls: type[Ref], iterator: bool, abcs: tuple[str, ...]) -> type[Ref]:
    """``cls``, or its subclass that is an :class:`IteratorRef` and registered with ``abcs``."""
    if not iterator and not abcs:
        return cls
    key = (cls, iterator, abcs)
    found = _VARIANTS.get(key)
    if found is None:
        if cls is Ref and iterator and not abcs:
            found = IteratorRef
        else:
            bases: tuple[type[Ref], ...] = (cls,)
            if iterator:
                bases = (IteratorRef,) if cls is Ref else (cls, IteratorRef)
            namespace = {"__slots__": (), "__module__": cls.__module__, "__doc__": cls.__doc__}
            namespace["__qualname__"] = cls.__qualname__
            metaclass: Any = type(cls)  # a facade's ProxyMeta
            found = metaclass(cls.__name__, bases, namespace)
            for name in abcs:
                getattr(collections.abc, name.rpartition(".")[2]).register(found)
        _VARIANTS[key] = found
    return found


def _class_for(type_key: str) -> type[Ref]:
    cls = _CLASS_FOR.get(type_key)
    if cls is None:
        cls = Ref
        if _PROXIES:
            for name in _MRO_CACHE.get(type_key, (type_key,)):
                if name in _PROXIES:
                    cls = _PROXIES[name]
                    break
        cls = _CLASS_FOR[type_key] = _fitted(cls, type_key, type_key in _ITERATORS)
    return cls


def make_ref(worker: RefHost, session: Session, ref_id: int, type_name: str) -> Ref:
    """A Ref to object ``ref_id`` held by ``worker`` for ``session``.

    Its class is the registered proxy class of the remote type, else :class:`Ref` (made an
    iterator and registered with collections ABCs as the remote class is: :func:`_fitted`).
    """
    ref = object.__new__(_class_for(type_name))
    object.__setattr__(ref, "_sb_worker", worker)
    object.__setattr__(ref, "_sb_session", session)
    object.__setattr__(ref, "_sb_id", ref_id)
    object.__setattr__(ref, "_sb_type", type_name)
    session.workers[worker.pid] = worker
    worker.add_ref()
    return ref


def as_proxy(ref: Ref, cls: type[Ref]) -> Ref:
    """``ref`` re-classed as proxy class ``cls`` (same object, no round trip); a Ref to an
    iterator stays one."""
    cls = _fitted(cls, ref._sb_type, hasattr(type(ref), "__next__"))
    if type(ref) is not cls:
        object.__setattr__(ref, "__class__", cls)
    return ref


def remote_type(ref: Ref) -> str:
    """``module.qualname`` of the remote object's class."""
    return ref._sb_type


def remote_mro(ref: Ref) -> tuple[str, ...]:
    """Qualified names of the remote object's class and its bases (cached per class)."""
    cached = _MRO_CACHE.get(ref._sb_type)
    if cached is None:
        cached = _MRO_CACHE[ref._sb_type] = tuple(ref._sb_op(p.OP_TYPE_MRO))
    return cached
