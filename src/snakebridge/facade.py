"""Run-time support imported by generated facade modules (never by user code directly).

It turns a facade call into one ``snakebridge.call`` (a method into one method round trip) that
sends only the arguments the caller passed, registers proxy classes so Refs of their remote
class arrive as their instances, registers exception classes so remote errors of their type
are raised as them, and serves names a facade lacks: a dynamic call recorded in
``.snakebridge/ledger.json``, or, in strict mode, an ``AttributeError`` that names
``snakebridge sync``.

The async facades (``snakebridge_generated.aio``) use the ``a``-named twins here: each awaits
the runtime's async path (``acall``, the async Ref operations; no thread hop) and re-classes
the Refs in its result as the async proxy classes, so an async facade hands out async proxies.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, Never, ParamSpec, Self, TypeVar
from typing import cast as _t_cast

from snakebridge import paths
from snakebridge.errors import RemoteError, register_remote_exception
from snakebridge.runtime.client import acall as acall_function
from snakebridge.runtime.client import call as call_function
from snakebridge.runtime.client import get
from snakebridge.runtime.refs import (
    IteratorRef,
    Ref,
    as_proxy,
    known_mro,
    register_proxy,
    remote_mro,
)
from snakebridge_worker import protocol as _p
from snakebridge_worker.values import type_key

__all__ = [
    "NOT_GIVEN",
    "AsyncProxyMeta",
    "AsyncRef",
    "P",
    "ProxyMeta",
    "Ref",
    "RemoteError",
    "aattribute",
    "acall",
    "aconstant",
    "aconstruct",
    "ainvoke",
    "amethod",
    "as_async",
    "attribute",
    "call",
    "constant",
    "construct",
    "invoke",
    "method",
    "missing_name",
    "register_async_homes",
    "register_exception",
    "remote",
    "set_attribute",
    "special",
]


class _NotGiven:
    """Default of a parameter whose library default cannot be written host-side."""

    _instance: _NotGiven | None = None

    def __new__(cls) -> _NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<library default>"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Final[Any] = _NotGiven()
P = ParamSpec("P")  # what a facade writes for a library's ``Concatenate[X, P]``/``P.args``

Params = tuple[tuple[Any, ...], ...]
_KEYWORD_ONLY, _POSITIONAL_ONLY = 2, 0


def _arguments(
    params: Params, var_args: tuple[Any, ...], var_kwargs: dict[str, Any] | None
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments to send: what the caller passed, never a default the facade filled in.

    ``params`` holds ``(name, value, kind)`` or ``(name, value, kind, default)``; a value that
    is NOT_GIVEN, or the very literal default of its parameter, is left out (so the library
    applies its own default), unless a later positional-only argument needs its slot.
    """
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    held: list[Any] = []  # omitted positional slots, replayed if a positional-only one follows
    for entry in params:
        name, value, kind = entry[0], entry[1], entry[2]
        omitted = value is NOT_GIVEN or (
            len(entry) == 4 and type(value) is type(entry[3]) and value == entry[3]
        )
        if kind == _KEYWORD_ONLY:
            if not omitted:
                kwargs[name] = value
        elif omitted:
            held.append(value)
        elif not held:
            args.append(value)
        elif kind != _POSITIONAL_ONLY:
            kwargs[name] = value
        elif NOT_GIVEN in held:
            raise TypeError(f"argument {name!r} cannot follow an omitted positional-only one")
        else:
            args += [*held, value]
            held = []
    if var_args:
        if held:
            raise TypeError("*args cannot follow an omitted positional argument")
        args.extend(var_args)
    if var_kwargs:
        kwargs.update(var_kwargs)
    return args, kwargs


def invoke(
    library: str,
    qualname: str,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Call ``library.qualname`` in a worker with the arguments the caller gave."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return call_function(library, qualname, args, kwargs or None)


def construct(
    cls: type[Ref],
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """An instance of proxy class ``cls``: its remote class called with the caller's arguments."""
    library, qualname = cls.__sb_remote__  # type: ignore[attr-defined]
    result = invoke(library, qualname, params, var_args, var_kwargs)
    if isinstance(result, Ref) and not isinstance(result, cls):
        result = as_proxy(result, cls)
    return result


def method(
    instance: Ref,
    name: str,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Call method ``name`` of a remote object in one round trip."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return instance._sb_method(name, args, kwargs)


def call(
    instance: Ref,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Call a remote callable object (what a proxy's ``__call__`` does)."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return Ref.__call__(instance, *args, **kwargs)


def special(instance: Ref, name: str, *args: Any) -> Any:
    """A special method (``__getitem__``, ``__add__``, …) as the Ref protocol runs it."""
    owner = IteratorRef if name == "__next__" else Ref  # only Refs to iterators have one
    return getattr(owner, name)(instance, *args)


def attribute(instance: Ref, name: str) -> Any:
    """An attribute of a remote object (what a proxy property reads)."""
    return Ref.__getattr__(instance, name)


def set_attribute(instance: Ref, name: str, value: Any) -> None:
    """Set an attribute of a remote object (what a proxy property setter does)."""
    Ref.__setattr__(instance, name, value)


_R = TypeVar("_R")  # unbound: a metaclass method's self type must be erasable to it


class ProxyMeta(type):
    """Metaclass of proxy classes: registers them for their remote type; ``isinstance`` asks
    the remote class hierarchy, so by-value results of that type answer too."""

    __sb_type__: str

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        remote = namespace.get("__sb_type__")
        if remote and issubclass(cls, Ref):
            register_proxy(str(remote), cls)
        if issubclass(cls, Ref) and "__del__" not in namespace:
            type.__setattr__(cls, "__del__", _release_unless_borrowed)  # see `of`

    def __instancecheck__(cls, instance: Any) -> bool:
        if type.__instancecheck__(cls, instance):
            return True
        remote = getattr(cls, "__sb_type__", None)
        if remote is None:
            return False
        if isinstance(instance, Ref):
            return remote in remote_mro(instance)
        return any(type_key(klass) == remote for klass in type(instance).__mro__)

    def of(cls: type[_R], instance: Ref) -> _R:
        """This class's handle on the remote object ``instance`` refers to: a sync facade
        instance as its async proxy (``aio.logging.Logger.of(logger)``) and back
        (``logging.Logger.of(alogger)``). No round trip: the new handle shares the remote
        object and keeps ``instance``'s owner alive, which releases it; ``instance`` stays
        what it was."""
        return _t_cast(_R, _borrow(_viewable(cls, instance), instance))


# id of a Ref made by ``of`` -> the Ref that owns (and will release) the remote object
_BORROWED: dict[int, Ref] = {}
_SLOTS = ("_sb_worker", "_sb_session", "_sb_id", "_sb_type")


def _borrow(cls: type[Ref], instance: Ref) -> Ref:
    view = object.__new__(cls)
    for slot in _SLOTS:
        object.__setattr__(view, slot, object.__getattribute__(instance, slot))
    _BORROWED[id(view)] = _BORROWED.get(id(instance), instance)
    return as_proxy(view, cls)


def _release_unless_borrowed(self: Ref) -> None:
    """``__del__`` of facade classes: a handle made by ``of`` only lets go of its owner."""
    if _BORROWED.pop(id(self), None) is None:
        Ref.__del__(self)


def _viewable(cls: type[Any], instance: object) -> type[Ref]:
    """``cls`` when ``instance`` is a Ref to a remote object of its remote type."""
    if issubclass(cls, Ref) and isinstance(instance, Ref) and isinstance(instance, cls):
        return cls
    remote = getattr(cls, "__sb_type__", cls.__qualname__)
    raise TypeError(
        f"{cls.__qualname__}.of() takes a Ref to a remote {remote} (or a subclass of it), "
        f"not {instance!r}"
    )


def register_exception(cls: type[RemoteError]) -> None:
    """Raise remote exceptions of ``cls.__sb_type__`` (or a subclass of it) as ``cls``."""
    register_remote_exception(str(cls.__sb_type__), cls)  # type: ignore[attr-defined]


_LEDGER_LOCK = threading.Lock()


def _strict() -> bool:
    flag = os.environ.get("SNAKEBRIDGE_STRICT", "")
    if flag:
        return flag not in ("0", "false", "no")
    from snakebridge.runtime.client import runtime

    return runtime().settings.strict


def _record(library: str, name: str) -> None:
    from snakebridge.runtime.client import runtime

    path = paths.ledger_path(runtime().settings.root)
    with _LEDGER_LOCK:
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        calls = entries.setdefault(library, {})
        calls[name] = int(calls.get(name, 0)) + 1
        paths.atomic_write(path, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def _has_module(dotted: str) -> bool:
    try:
        return importlib.util.find_spec(dotted) is not None
    except (ImportError, ValueError):
        return False


def missing_name(lib_path: str, name: str, module: str = "") -> Any:
    """A module ``__getattr__`` for names the facade lacks: dynamic and recorded, or strict.

    A child facade module comes first: ``from . import child`` asks ``__getattr__`` before it
    imports, and a parent still initialising does not have its children as attributes yet.
    """
    if name.startswith("__"):
        raise AttributeError(name)
    if module:
        child = sys.modules.get(f"{module}.{name}")
        if child is None and _has_module(f"{module}.{name}"):
            child = importlib.import_module(f"{module}.{name}")
        if child is not None:
            return child
    library, _, prefix = lib_path.partition(".")
    dotted = f"{prefix}.{name}" if prefix else name
    if _strict():
        raise AttributeError(
            f"{library}.{dotted} is not in the generated facade (strict mode); "
            "run `snakebridge sync` to generate it"
        )
    _record(library, dotted)
    return get(lib_path, name)


def constant(library: str, name: str, namespace: dict[str, Any]) -> Any:
    """Fetch a module constant once and keep it in the facade module's namespace."""
    value = get(library, name)
    namespace[name] = value
    return value


# -- async facades ----------------------------------------------------------------------------
_ASYNC_CLASSES: dict[str, type[Ref]] = {}  # remote type key -> its async proxy class
_ASYNC_HOMES: dict[str, tuple[str, str]] = {}  # remote type key -> (aio module, class name)


class AsyncProxyMeta(ProxyMeta):
    """Metaclass of async proxy classes: ``isinstance`` as :class:`ProxyMeta`; the class is
    not the one Refs arrive as (that stays the sync facade class), the async facades re-class
    their results as it (:func:`as_async`)."""

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        type.__init__(cls, name, bases, namespace)
        remote = namespace.get("__sb_type__")
        if remote and issubclass(cls, Ref):
            _ASYNC_CLASSES[str(remote)] = cls
        if issubclass(cls, Ref) and "__del__" not in namespace:
            type.__setattr__(cls, "__del__", _release_unless_borrowed)  # see `of`


class AsyncRef(Ref):
    """Base of async proxy classes: created by ``await Cls.new(...)`` or as a result of an
    async facade, never by calling the class (that would block the event loop)."""

    __slots__ = ()

    def __new__(cls, *args: Never, **kwargs: Never) -> Self:
        raise TypeError(
            f"{cls.__qualname__} is an async proxy class: create one with "
            f"`await {cls.__qualname__}.new(...)`"
        )


def register_async_homes(*homes: tuple[str, str, str]) -> None:
    """``(remote type, aio module, class name)``: where the async proxy class of each remote
    type is defined (what ``aio/__init__.py`` of a generated package calls)."""
    for key, module, name in homes:
        _ASYNC_HOMES[key] = (module, name)


def _async_class(type_name: str) -> type[Ref] | None:
    for key in known_mro(type_name):
        cls = _ASYNC_CLASSES.get(key)
        if cls is None and key in _ASYNC_HOMES:
            try:
                importlib.import_module(_ASYNC_HOMES[key][0])  # defines (and registers) it
            except ImportError:  # the tree changed under a running program: leave it sync
                continue
            cls = _ASYNC_CLASSES.get(key)
        if cls is not None:
            return cls
    return None


_PLAIN = frozenset({int, float, str, bytes, bool, complex, type(None)})
_COLLECTIONS = (list, tuple, set, frozenset)


def as_async(value: Any) -> Any:
    """``value`` with every Ref in it (also inside lists, tuples, sets and dicts) re-classed
    as its async proxy class, in place (no round trip, no copy; plain items cost a type test)."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if isinstance(value, Ref):
        cls = _async_class(value._sb_type)
        if cls is not None:
            as_proxy(value, cls)
    elif isinstance(value, _COLLECTIONS):
        for item in value:
            if type(item) not in _PLAIN:
                as_async(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in _PLAIN:
                as_async(key)
            if type(item) not in _PLAIN:
                as_async(item)
    return value


async def ainvoke(
    library: str,
    qualname: str,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Async twin of :func:`invoke` (``snakebridge.acall``)."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return as_async(await acall_function(library, qualname, args, kwargs or None))


async def aconstruct(
    cls: type[Ref],
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """An instance of async proxy class ``cls`` (what ``await Cls.new(...)`` does)."""
    library, qualname = cls.__sb_remote__  # type: ignore[attr-defined]
    result = await ainvoke(library, qualname, params, var_args, var_kwargs)
    if isinstance(result, Ref) and not isinstance(result, cls):
        result = as_proxy(result, cls)
    return result


async def amethod(
    instance: Ref,
    name: str,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Async twin of :func:`method` (one round trip)."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return as_async(await instance._sb_aop(_p.OP_METHOD, "", [name, *args], kwargs or None))


async def acall(
    instance: Ref,
    params: Params = (),
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Async twin of :func:`call` (an async proxy's ``__call__``)."""
    args, kwargs = _arguments(params, var_args, var_kwargs)
    return as_async(await instance._sb_aop(_p.OP_CALL, "", args, kwargs or None))


async def aattribute(instance: Ref, name: str) -> Any:
    """Async twin of :func:`attribute` (what an async proxy's property returns to await)."""
    return as_async(await instance._sb_aop(_p.OP_GETATTR, "", [name]))


def aconstant(library: str, name: str, namespace: dict[str, Any]) -> Any:
    """:func:`constant` for an async facade module: fetched once, Refs as async proxies."""
    value = as_async(get(library, name))
    namespace[name] = value
    return value


_F = TypeVar("_F", bound=Callable[..., Any])


def remote(library: str, qualname: str) -> Callable[[_F], _F]:
    """Decorator of facade functions: ``__sb_remote__ = (library, qualname)``, as facade
    classes have (a facade function passed as an argument travels by name)."""

    def mark(function: _F) -> _F:
        function.__sb_remote__ = (library, qualname)  # type: ignore[attr-defined]
        return function

    return mark
