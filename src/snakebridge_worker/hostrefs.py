"""Host objects by reference: worker-side proxies that call back into the host.

The mirror of the host's Refs. A host object that is not a value (a user-class instance, a
closure, a host iterator or generator, ``os.environ``…) arrives as a :class:`HostObject` whose
class has exactly the special methods the host class has; each operation is one callback to the
host (callback id :data:`HOST_OP` runs ``[op, host_id, *args]`` there). A proxy the worker drops
is reported to the host (``CALLBACK_RELEASE``), which then forgets the object.

(Over 350 lines on purpose: a proxy forwards the whole object protocol, one small method per
special method, and host exception classes get their stand-ins here.)
"""

from __future__ import annotations

import builtins
import contextlib
from typing import Any, Callable, Dict, List, Optional, Tuple

HOST_OP = 0
"""Callback id of the host's operation dispatcher: args ``[op, host_id, *op_args]``."""

RELEASED: List[int] = []
"""Host object ids this worker no longer holds (sent to the host before the next answer)."""

FORWARDED = [
    "__call__",
    "__len__",
    "__iter__",
    "__next__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
    "__complex__",
    "__enter__",
    "__exit__",
    "__eq__",
    "__ne__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__neg__",
    "__pos__",
    "__abs__",
    "__invert__",
    "__round__",
    "__reversed__",
    "__fspath__",
    "__array__",
    "__length_hint__",
    "__add__",
    "__sub__",
    "__mul__",
    "__matmul__",
    "__truediv__",
    "__floordiv__",
    "__mod__",
    "__divmod__",
    "__pow__",
    "__lshift__",
    "__rshift__",
    "__and__",
    "__or__",
    "__xor__",
    "__radd__",
    "__rsub__",
    "__rmul__",
    "__rmatmul__",
    "__rtruediv__",
    "__rfloordiv__",
    "__rmod__",
    "__rdivmod__",
    "__rpow__",
    "__rlshift__",
    "__rrshift__",
    "__rand__",
    "__ror__",
    "__rxor__",
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__iand__",
    "__ior__",
    "__ixor__",
]
"""Special methods a proxy forwards when the host class defines them (beyond ``object``'s)."""

SAFE_DUNDERS = frozenset(("__name__", "__qualname__", "__doc__", "__module__", "__version__"))
_BATCH_FIRST, _BATCH_MAX = 16, 512

_call_host: Optional[Callable[[int, List[Any], Dict[str, Any]], Any]] = None


def install(call_host: Callable[[int, List[Any], Dict[str, Any]], Any]) -> None:
    """Set how proxies reach the host: ``call_host(callback_id, args, kwargs)``."""
    global _call_host
    _call_host = call_host


def _host(callback_id: int, args: List[Any], kwargs: Dict[str, Any]) -> Any:
    if _call_host is None:
        raise RuntimeError("snakebridge: host objects can only be used inside a call")
    return _call_host(callback_id, args, kwargs)


def host_op(proxy: "HostObject", op: str, *args: Any) -> Any:
    """Run operation ``op`` on the host object behind ``proxy``."""
    return _host(HOST_OP, [op, proxy._sb_id, *args], {})


class _Default:
    """Stands for a host function's default value in a signature (shown as the host's repr)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class HostObject:
    """A host object, used from the worker; every operation runs in the host."""

    __slots__ = ("__dict__", "__weakref__", "_sb_hash", "_sb_id", "_sb_meta")
    _sb_type = "builtins.object"

    def __init__(self, host_id: int, meta: Dict[str, Any]) -> None:
        object.__setattr__(self, "_sb_id", host_id)
        object.__setattr__(self, "_sb_hash", meta.get("hash"))
        object.__setattr__(self, "_sb_meta", meta)
        for key in ("name", "qualname", "module", "doc"):
            if key in meta:
                object.__setattr__(self, f"__{key}__", meta[key])

    def __del__(self) -> None:
        RELEASED.append(self._sb_id)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and name not in SAFE_DUNDERS:
            raise AttributeError(f"host object {self._sb_type} has no attribute {name!r}")
        return host_op(self, "getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        host_op(self, "setattr", name, value)

    def __delattr__(self, name: str) -> None:
        host_op(self, "delattr", name)

    def __repr__(self) -> str:
        return str(host_op(self, "dunder", "__repr__"))

    def __str__(self) -> str:
        return str(host_op(self, "dunder", "__str__"))

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, HostObject):
            return other._sb_id == self._sb_id
        return NotImplemented

    def __hash__(self) -> int:
        if self._sb_hash is None:
            raise TypeError(f"unhashable host object: {self._sb_type}")
        return int(self._sb_hash)

    def __dir__(self) -> List[str]:
        return list(host_op(self, "dir"))

    def __reduce__(self) -> Any:
        raise TypeError(f"host object {self._sb_type} cannot be pickled: it lives in the host")

    @property
    def __signature__(self) -> Any:
        params = self._sb_meta.get("signature")
        if params is None:
            raise AttributeError("__signature__")
        import inspect

        return inspect.Signature(
            [
                inspect.Parameter(
                    name,
                    getattr(inspect.Parameter, kind),
                    default=inspect.Parameter.empty if default is None else _Default(default),
                )
                for name, kind, default in params
            ]
        )


def _forward(name: str) -> Callable[..., Any]:
    def method(self: HostObject, *args: Any) -> Any:
        return host_op(self, "dunder", name, *args)

    method.__name__ = name
    return method


def _call(self: HostObject, *args: Any, **kwargs: Any) -> Any:
    return _host(self._sb_id, list(args), kwargs)


def _next(self: HostObject) -> Any:
    item, done = host_op(self, "next")
    if done:
        raise StopIteration
    return item


def _iter(self: HostObject) -> Any:
    """``iter()`` run in the host: the proxy itself when the host object is its own iterator,
    else a fresh host iterator that nobody else sees, so reading it in batches is safe."""
    same, iterator = host_op(self, "iter")
    return self if same else _Batches(iterator)


def _self(self: HostObject) -> Any:
    return self


def _exit(self: HostObject, exc_type: Any, exc: Any, tb: Any) -> Any:
    spec = None
    if exc is not None:
        base = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
        spec = [base.__name__, str(exc)]
    return host_op(self, "exit", spec)


class _Batches:
    """Iterates a private host iterator, fetching items in growing batches."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.items: List[Any] = []
        self.done, self.size, self.index = False, _BATCH_FIRST, 0

    def __iter__(self) -> "_Batches":
        return self

    def __next__(self) -> Any:
        if self.index >= len(self.items):
            if self.done:
                raise StopIteration
            if not isinstance(self.source, HostObject):  # iter() gave back a value
                self.source = iter(self.source)
                self.items, self.done = list(self.source), True
            else:
                self.items, self.done = host_op(self.source, "next_batch", self.size)
                self.size = min(self.size * 2, _BATCH_MAX)
            self.index = 0
            if not self.items:
                raise StopIteration
        item = self.items[self.index]
        self.index += 1
        return item


_CLASSES: Dict[Tuple[str, Tuple[str, ...], bool], type] = {}


def proxy_class(type_name: str, ops: Tuple[str, ...], iter_self: bool = False) -> type:
    """The proxy class for host class ``type_name`` with special methods ``ops`` (cached);
    ``iter_self``: the host class is an iterator whose ``__iter__`` runs no code of its own
    (a generator, ``map``…), so ``iter()`` needs no round trip."""
    key = (type_name, ops, iter_self)
    cls = _CLASSES.get(key)
    if cls is None:
        namespace: Dict[str, Any] = {"__slots__": (), "_sb_type": type_name}
        for name in ops:
            if name in FORWARDED:
                namespace[name] = _forward(name)
        if "__call__" in ops:
            namespace["__call__"] = _call
        if "__next__" in ops:
            namespace["__next__"] = _next
            namespace["__iter__"] = _self if iter_self or "__iter__" not in ops else _iter
        elif "__iter__" in ops:
            namespace["__iter__"] = _iter
        if "__exit__" in ops:
            namespace["__exit__"] = _exit
        if "__eq__" in ops and "__hash__" not in namespace:
            namespace["__hash__"] = HostObject.__hash__
        short = type_name.rpartition(".")[2] or "HostObject"
        cls = _CLASSES[key] = type(short, (HostObject,), namespace)
    return cls


def make(host_id: int, meta: Optional[Dict[str, Any]]) -> HostObject:
    """The proxy for host object ``host_id`` described by ``meta`` (None: a plain callable)."""
    if meta is None:
        meta = {"type": "builtins.function", "ops": ["__call__"]}
    type_name, ops = str(meta.get("type", "builtins.object")), tuple(meta.get("ops", ()))
    cls = proxy_class(type_name, ops, bool(meta.get("iter_self")))
    return cls(host_id, meta)  # type: ignore[no-any-return]


class StandIn(type):
    """Metaclass of the worker's stand-ins for host exception classes it cannot import
    (defined in a function, in ``__main__``, in the application's modules).

    A stand-in derives from the stand-ins or worker classes of its host class's exception
    bases, so ``except`` and ``issubclass`` in the library behave as in the host. There is one
    per host class (cached by the host's token), so the class a callback's error is raised as
    is the class the library was given; a stand-in sent back is the host class again, and an
    instance raised in the worker reaches the host as an instance of the host class.
    """

    _sb_token: int


class HostException:
    """An exception of a stand-in class, on its way to the host: ``host_class(*args)``."""

    __slots__ = ("args", "token")

    def __init__(self, token: int, args: Tuple[Any, ...]) -> None:
        self.token, self.args = token, list(args)


def _host_exception(self: BaseException) -> Any:
    """What the host raises for this exception: the host's own exception object when it came
    from a host callback, else an instance of the nearest host class."""
    own = self.__dict__.get("_sb_host_original")
    if own is not None:
        return own
    token = next(k.__dict__["_sb_token"] for k in type(self).__mro__ if "_sb_token" in k.__dict__)
    return HostException(token, self.args)


def _set_host_exception(self: BaseException, value: Any) -> None:
    self.__dict__["_sb_host_original"] = value


_STAND_INS: Dict[int, type] = {}


def stand_in(items: List[Any]) -> type:
    """The stand-in for the host exception class ``[head, token, module, qualname, bases]``
    (made once per token; ``bases`` are the worker's classes for the host class's bases)."""
    _, token, module, qualname, bases = items
    cls = _STAND_INS.get(int(token))
    if cls is not None:
        return cls
    usable = tuple(b for b in bases if isinstance(b, type) and issubclass(b, BaseException))
    builtin = next((k for b in usable for k in b.__mro__ if k.__module__ == "builtins"), Exception)
    namespace = {
        "__module__": str(module),
        "__qualname__": str(qualname),
        "_sb_token": int(token),
        "_sb_host_exception": property(_host_exception, _set_host_exception),
    }
    name = str(qualname).rpartition(".")[2] or "HostError"
    try:
        cls = StandIn(name, usable or (Exception,), namespace)
    except TypeError:  # bases whose layouts or metaclasses do not combine: the builtin only
        cls = StandIn(name, (builtin,), namespace)
    _STAND_INS[int(token)] = cls
    return cls


_EXCEPTION_CLASSES: Dict[Tuple[str, str], type] = {}


def callback_exception(payload: Dict[str, Any]) -> BaseException:
    """The exception a failed host callback raises in the worker.

    The host's own class when the worker can import it; otherwise a class of the same name
    deriving from the nearest builtin. It carries the host exception (``_sb_host_exception``),
    so when it propagates out of the call the host raises its original exception object.
    """
    cls: Any = payload.get("class")
    args = payload.get("args")
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        base = getattr(builtins, str(payload.get("builtin") or ""), None)
        if not (isinstance(base, type) and issubclass(base, Exception)):
            base = Exception
        type_name = str(payload.get("type", "Exception"))
        cls = _EXCEPTION_CLASSES.get((type_name, base.__name__))
        if cls is None:
            module, _, qualname = type_name.rpartition(".")
            cls = type(qualname or "HostError", (base,), {"__module__": module or "host"})
            _EXCEPTION_CLASSES[(type_name, base.__name__)] = cls
    if not isinstance(args, (list, tuple)):
        args = [str(payload.get("message", ""))]
    exc: BaseException
    try:
        exc = cls(*args)
    except Exception:
        exc = cls.__new__(cls, *args)
        exc.args = tuple(args)
    host = payload.get("exception")
    if host is not None:
        with contextlib.suppress(AttributeError):  # an exception class with __slots__
            exc._sb_host_exception = host  # type: ignore[attr-defined]
    return exc
