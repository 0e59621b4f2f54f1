"""Host side of values by meaning and host objects by reference.

* :func:`importable_name` — modules, classes, functions and methods the worker can import
  travel as ``(module, qualname)`` and are the worker's own objects there (``dtype=float``,
  ``key=len``, ``isinstance(x, str)``, exception and enum classes).
* :func:`describe` — what a worker proxy of any other host object needs: its class, the special
  methods it has, and for functions their name, doc and signature.
* :func:`operation` — runs what a worker proxy asks for (attribute, method, special method,
  iteration) on the host object.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import itertools
import sys
import types
import weakref
from collections.abc import Callable
from typing import Any

from snakebridge_worker import hostrefs, kinds

__all__ = ["describe", "exception_class", "exception_token", "importable_name", "operation"]

_NAMES: dict[Any, tuple[str, str]] = {}
_OPS: dict[type, list[str]] = {}
_ITER_SELF: dict[type, bool] = {}
_NAMED_KINDS = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
    types.ModuleType,
)


def _lookup(module: str, qualname: str) -> Any:
    obj = sys.modules.get(module)
    for part in qualname.split(".") if qualname else ():
        obj = getattr(obj, part, None)
    return obj


def _unrouted(library: str) -> str:
    return library


module_of_library: Callable[[str], str] = _unrouted
"""The worker module a configured library key names (the client installs its router)."""


def importable_name(obj: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` when ``obj`` is a module-level object the worker can import."""
    if obj is NotImplemented:
        return "builtins", "NotImplemented"
    if not isinstance(obj, _NAMED_KINDS) and type(obj).__name__ != "ufunc":
        return None  # before the cache: an instance's own __hash__ is not ours to run
    try:
        cached = _NAMES.get(obj)
    except TypeError:  # a class whose metaclass makes it unhashable
        return None
    if cached is not None:
        return cached
    facade = isinstance(obj, type | types.FunctionType)
    remote = getattr(obj, "__sb_remote__", None) if facade else None
    if isinstance(remote, tuple) and len(remote) == 2:  # a generated facade class or function
        try:
            found: tuple[str, str] | None = (module_of_library(remote[0]), str(remote[1]))
        except Exception:
            return None
    elif isinstance(obj, types.ModuleType):
        found = (obj.__name__, "") if sys.modules.get(obj.__name__) is obj else None
    elif isinstance(obj, _NAMED_KINDS) or type(obj).__name__ == "ufunc":
        owner = getattr(obj, "__objclass__", None)
        module = getattr(owner if owner is not None else obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if not (isinstance(module, str) and isinstance(qualname, str)) or "<" in qualname:
            return None
        target = _lookup(module, qualname)
        found = (module, qualname) if target is obj or (owner and target == obj) else None
    else:
        return None
    if found is None or found[0] == "__main__" or found[0].split(".")[0] == "snakebridge":
        return None
    _NAMES[obj] = found
    return found


_TOKENS: weakref.WeakKeyDictionary[type, int] = weakref.WeakKeyDictionary()
_BY_TOKEN: weakref.WeakValueDictionary[int, type] = weakref.WeakValueDictionary()
_next_token = itertools.count(1)


def exception_token(cls: type) -> int:
    """The lasting token of host exception class ``cls``: workers keep one stand-in class per
    token, and a stand-in that comes back is ``cls`` again (held weakly: a class nobody holds
    can be neither raised nor caught in the host any more)."""
    token = _TOKENS.get(cls)
    if token is None:
        token = _TOKENS[cls] = next(_next_token)
        _BY_TOKEN[token] = cls
    return token


def exception_class(token: Any) -> type:
    """The host exception class of a stand-in's token (ValueError if it is not one)."""
    cls = _BY_TOKEN.get(token) if type(token) is int else None
    if cls is None:
        raise ValueError(f"the worker sent back host exception class #{token!r}, not known here")
    return cls


def needs_fallback(module: str, qualname: str) -> bool:
    """Whether a by-name value should carry a host object in case the worker cannot resolve
    it (outside the allowlist or not installed there); plain builtins always resolve."""
    return kinds.plain_builtin(module, qualname) is None


def _special_methods(cls: type) -> list[str]:
    ops = _OPS.get(cls)
    if ops is None:
        ops = [
            name
            for name in hostrefs.FORWARDED
            if getattr(cls, name, None) is not None
            and getattr(cls, name, None) is not getattr(object, name, None)
        ]
        _OPS[cls] = ops
    return ops


def _iter_is_self(cls: type) -> bool:
    """Whether ``iter()`` of an iterator of class ``cls`` surely runs no code of its own: its
    ``__iter__`` is a C slot (generators, ``map``, ``zip``, itertools), not Python code that
    may raise or return another object."""
    found = _ITER_SELF.get(cls)
    if found is None:
        own = (k.__dict__["__iter__"] for k in cls.__mro__ if "__iter__" in k.__dict__)
        found = _ITER_SELF[cls] = isinstance(next(own, None), types.WrapperDescriptorType)
    return found


def _signature(function: Any) -> list[list[Any]] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return [
        [
            param.name,
            param.kind.name,
            None if param.default is inspect.Parameter.empty else _default_text(param.default),
        ]
        for param in signature.parameters.values()
    ]


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _default_text(value: Any) -> str:
    """How a signature shows a default: the repr of a plain value, else only its type. Any
    other repr may run code, and a Ref's is a call to its worker, made here in the middle of
    encoding the call that sends this callable."""
    if type(value) in _PLAIN:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"<{type(value).__qualname__} object>"


def describe(obj: Any) -> dict[str, Any]:
    """What the worker's proxy of host object ``obj`` needs to know about it."""
    cls = type(obj)
    meta: dict[str, Any] = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "ops": _special_methods(cls),
    }
    if "__next__" in meta["ops"] and _iter_is_self(cls):
        meta["iter_self"] = True
    with contextlib.suppress(Exception):  # unhashable: the proxy is unhashable too
        meta["hash"] = hash(obj)
    if callable(obj):
        for key in ("name", "qualname", "module", "doc"):
            value = getattr(obj, f"__{key}__", None)
            if isinstance(value, str):
                meta[key] = value
        if not isinstance(obj, type):
            meta["signature"] = _signature(obj)
    return meta


def _exit_args(spec: Any) -> tuple[Any, Any, Any]:
    if spec is None:
        return None, None, None
    cls = getattr(builtins, str(spec[0]), None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = Exception
    exc = cls(spec[1])
    return cls, exc, None


def _checked(name: Any) -> str:
    if not isinstance(name, str) or (name.startswith("_") and name not in hostrefs.SAFE_DUNDERS):
        raise AttributeError(f"host objects do not give workers attribute {name!r}")
    return name


def operation(args: list[Any], registry: dict[int, Any]) -> Any:
    """Run ``[op, host_id, *op_args]`` (sent by a worker proxy) on the host object."""
    op, host_id, *rest = args
    if host_id not in registry:
        raise LookupError(f"host object #{host_id} was already released")
    obj = registry[host_id]
    if op == "getattr":
        return getattr(obj, _checked(rest[0]))
    if op == "setattr":
        setattr(obj, _checked(rest[0]), rest[1])
        return None
    if op == "delattr":
        delattr(obj, _checked(rest[0]))
        return None
    if op == "dunder":
        name = rest[0]
        if name not in hostrefs.FORWARDED and name not in ("__repr__", "__str__"):
            raise AttributeError(f"host objects do not forward {name!r}")
        return getattr(type(obj), name)(obj, *rest[1:])
    if op == "next":
        try:
            return [next(obj), False]
        except StopIteration:
            return [None, True]
    if op == "next_batch":
        items = []
        for _ in range(int(rest[0])):
            try:
                items.append(next(obj))
            except StopIteration:
                return [items, True]
        return [items, False]
    if op == "iter":
        iterator = iter(obj)
        return [True, None] if iterator is obj else [False, iterator]
    if op == "exit":
        return obj.__exit__(*_exit_args(rest[0]))
    if op == "dir":
        return [name for name in dir(obj) if not name.startswith("_")]
    raise LookupError(f"unknown host object operation {op!r}")
