"""Value kinds beyond msgpack's own, as composite ``EXT_BUILD`` values (docs/protocol.md).

Zoned and folded datetimes, the collections types, namedtuples, numpy dtypes, and the names of
builtins. Rebuilding never imports anything but the stdlib module (or numpy) of the kind.
"""

from __future__ import annotations

import builtins
import datetime
import sys
import types
from typing import Any, Callable, Dict, List, Optional

import msgpack

from snakebridge_worker import protocol as p

BUILD = msgpack.ExtType(p.EXT_BUILD, b"")
UNSAFE_BUILTINS = frozenset(
    [
        "eval",
        "exec",
        "compile",
        "open",
        "__import__",
        "breakpoint",
        "input",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "help",
        "exit",
        "quit",
    ]
)
"""Builtins that reach code or state: by name they go through the allowlist like any name."""
NAME = msgpack.ExtType(p.EXT_NAME, b"")


def _type_key(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def encode_datetime(value: datetime.datetime) -> Any:
    tz = value.tzinfo
    if not value.fold and (tz is None or type(tz) is datetime.timezone):
        return msgpack.ExtType(p.EXT_DATETIME, value.isoformat().encode())
    key = getattr(tz, "key", None) if _type_key(type(tz)) == "zoneinfo.ZoneInfo" else None
    if key is None and not value.fold:
        return msgpack.ExtType(p.EXT_DATETIME, value.isoformat().encode())
    plain = value.replace(tzinfo=None) if key is not None else value
    return [BUILD, "datetime", plain.replace(fold=0).isoformat(), key, value.fold]


def encode_time(value: datetime.time) -> Any:
    tz = value.tzinfo
    key = getattr(tz, "key", None) if _type_key(type(tz)) == "zoneinfo.ZoneInfo" else None
    if key is None and not value.fold:
        return msgpack.ExtType(p.EXT_TIME, value.isoformat().encode())
    plain = value.replace(tzinfo=None) if key is not None else value
    return [BUILD, "time", plain.replace(fold=0).isoformat(), key, value.fold]


def module(name: str) -> Any:
    module = sys.modules.get(name)
    if module is None:
        __import__(name)
        module = sys.modules[name]
    return module


def _zoned(kind: str, iso: str, key: Optional[str], fold: int) -> Any:
    cls = datetime.datetime if kind == "datetime" else datetime.time
    value = cls.fromisoformat(iso)
    if key is not None:
        value = value.replace(tzinfo=module("zoneinfo").ZoneInfo(key))
    return value.replace(fold=int(fold))


def _build_range(start: int, stop: int, step: int) -> range:
    return range(start, stop, step)


def _build_slice(start: Any, stop: Any, step: Any) -> slice:
    return slice(start, stop, step)


def _build_ordered(items: Dict[Any, Any]) -> Any:
    return module("collections").OrderedDict(items)


def _build_counter(items: Dict[Any, Any]) -> Any:
    return module("collections").Counter(items)


def _build_defaultdict(factory: Any, items: Dict[Any, Any]) -> Any:
    return module("collections").defaultdict(factory, items)


def _build_deque(items: List[Any], maxlen: Optional[int]) -> Any:
    return module("collections").deque(items, maxlen)


def _build_namedtuple(cls: Any, fields: List[Any]) -> Any:
    if isinstance(cls, list):  # [module, qualname]: only a class already imported here
        cls = loaded(cls[0], cls[1])
    if isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_make"):
        return cls._make(fields)
    return tuple(fields)  # the class does not exist on this side: its fields as a tuple


def loaded(module: str, qualname: str) -> Any:
    """``module.qualname`` if that module is already imported (never imports anything)."""
    obj = sys.modules.get(module)
    for part in qualname.split("."):
        if obj is None or part.startswith("_"):
            return None
        obj = getattr(obj, part, None)
    return obj


def is_namedtuple(obj: Any) -> bool:
    cls = type(obj)
    return isinstance(obj, tuple) and hasattr(cls, "_fields") and hasattr(cls, "_make")


def builtin_name(obj: Any) -> Optional[str]:
    """The name of a class or function of the ``builtins`` module (the same on every side)."""
    name = getattr(obj, "__qualname__", None)
    if not isinstance(name, str) or getattr(obj, "__module__", None) != "builtins":
        return None
    return name if getattr(builtins, name, None) is obj else None


def plain_builtin(module: str, qualname: str) -> Any:
    """The builtin ``qualname`` names, when it is a class or function every library already
    has (``len``, ``str``, ``ValueError``…); None for anything else."""
    if module != "builtins" or qualname in UNSAFE_BUILTINS or "." in qualname:
        return None
    obj = getattr(builtins, qualname, None)
    return obj if isinstance(obj, (type, types.BuiltinFunctionType)) else None


def encode_builtin(name: str) -> Any:
    return [NAME, "builtins", name, None]


def encode_namedtuple(obj: Any) -> Any:
    """A namedtuple by its class name and fields (rebuilt where that class is loaded)."""
    cls = type(obj)
    return [BUILD, "namedtuple", [cls.__module__, cls.__qualname__], list(obj)]


def _build_dtype(spec: Any) -> Any:
    return module("numpy").dtype(dtype_spec(spec))


def _build_npvoid(spec: Any, raw: bytes) -> Any:
    np = module("numpy")
    return np.frombuffer(raw, dtype=np.dtype(dtype_spec(spec)))[0]


BUILDERS: Dict[str, Callable[..., Any]] = {
    "range": _build_range,
    "slice": _build_slice,
    "datetime": lambda iso, key, fold: _zoned("datetime", iso, key, fold),
    "time": lambda iso, key, fold: _zoned("time", iso, key, fold),
    "OrderedDict": _build_ordered,
    "Counter": _build_counter,
    "defaultdict": _build_defaultdict,
    "deque": _build_deque,
    "namedtuple": _build_namedtuple,
    "dtype": _build_dtype,
    "npvoid": _build_npvoid,
}
"""Composite ``EXTBUILD`` kinds: ``[head, kind, *fields]`` → ``BUILDERS[kind](*fields)``."""


def dtype_wire(dtype: Any) -> Any:
    """A dtype as msgpack carries it: ``dtype.str``, ``[base, shape]`` for a subarray, or a
    ``{names, formats, offsets, itemsize}`` map for a structured dtype (padding kept)."""
    if dtype.fields is not None:
        names = list(dtype.names)
        return {
            "names": names,
            "formats": [dtype_wire(dtype.fields[name][0]) for name in names],
            "offsets": [dtype.fields[name][1] for name in names],
            "itemsize": dtype.itemsize,
        }
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return [dtype_wire(base), list(shape)]
    return dtype.str


def dtype_spec(wire: Any) -> Any:
    """What :func:`dtype_wire` produced, in the form ``numpy.dtype`` takes."""
    if isinstance(wire, dict):
        formats = [dtype_spec(part) for part in wire["formats"]]
        return {**wire, "formats": formats}
    if isinstance(wire, list):
        return (dtype_spec(wire[0]), tuple(wire[1]))
    return wire
