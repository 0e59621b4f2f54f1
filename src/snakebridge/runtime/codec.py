"""Host-side value codec: Refs and host callables out, Refs and values back in.

(Over 350 lines on purpose: encoding and decoding are one codec, and the host-callable and
Ref tables they fill are kept beside them.)
"""

from __future__ import annotations

import enum
import importlib.util
import itertools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from snakebridge.errors import (
    DecodeError,
    EncodeError,
    ProtocolError,
    RefInvalid,
    SnakeBridgeError,
)
from snakebridge.runtime import hostobjects, refs
from snakebridge.runtime.replies import check_reply
from snakebridge_worker import protocol as p
from snakebridge_worker import values as v

if TYPE_CHECKING:
    from snakebridge.runtime.refs import Ref, RefHost, Session

__all__ = ["CALLBACKS", "HostCodec", "InOut", "codec_for_thread", "inout"]

CALLBACKS: dict[int, Callable[..., Any]] = {}
"""Host callables sent to workers, by id; a session drops its own when it closes."""
_callback_ids = itertools.count(1)
_SINGLETONS: dict[int, frozenset[Any]] = {}
"""A one-item set per host object that came back inside a set, by host id: sets holding host
objects are rebuilt from these, so each object's ``__hash__`` runs once, not once per set."""


def _forget_callbacks(callback_ids: list[int]) -> None:
    for callback_id in callback_ids:
        CALLBACKS.pop(callback_id, None)


refs._SESSION_CLOSE_HOOKS.append(_forget_callbacks)

HOST_HAS_NUMPY = importlib.util.find_spec("numpy") is not None
"""Whether arrays can come back by value (numpy itself is imported only when one arrives)."""


class InOut:
    """A host numpy array a call may write to: the worker's writes are copied back into it."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        if v.numpy_kind(array) != "ndarray" or not array.flags.writeable:
            raise TypeError("snakebridge.inout takes a writeable numpy array")
        self.array = array


def inout(array: Any) -> InOut:
    """Mark ``array`` as written by the call: the worker gets a writeable copy, and what it
    wrote is copied back into ``array`` before the call returns (arrays are read-only in the
    worker otherwise, so an in-place write without it fails instead of being lost)."""
    return InOut(array)


_READ_ONLY_HINT = (
    " (host arrays arrive read-only in the worker; wrap an array the call writes to in "
    "snakebridge.inout(array) to get the writes back)"
)


class HostCodec(v.ValueCodec):
    """One per thread. Encoding records the Refs and callables it meets; decoding makes Refs."""

    def __init__(self) -> None:
        super().__init__()
        self.max_frame = p.DEFAULT_MAX_FRAME
        self.refs_seen: list[Ref] = []
        self.callbacks: list[int] = []
        self.worker: RefHost | None = None
        self.session: Session | None = None
        self._sent: dict[int, int] = {}
        self.decoders[p.EXT_REF] = self._decode_ref
        self.decoders[p.EXT_CALLBACK] = self._decode_host_object
        self._host_ids: dict[int, int] = {}  # id() -> host id of the host objects decoded
        self.builders[p.EXT_SET] = lambda items: self._build_set(items, set)
        self.builders[p.EXT_FROZENSET] = lambda items: self._build_set(items, frozenset)
        self.builders[p.EXT_NAME] = _decode_name
        self.builders[p.EXT_HOSTCLASS] = _decode_host_class

    # -- encoding -----------------------------------------------------------------------------
    def fallback(self, obj: Any) -> Any:
        from snakebridge.runtime.refs import Ref, RemoteMethod, check_valid

        if type(obj) is RemoteMethod:  # a method looked up on a Ref, sent as the method itself
            owner = obj._sb_owner
            check_valid(owner)
            self.refs_seen.append(owner)
            return msgpack.ExtType(p.EXT_METHOD, msgpack.packb([owner._sb_id, obj._sb_name]))
        if isinstance(obj, Ref):
            check_valid(obj)
            self.refs_seen.append(obj)
            return msgpack.ExtType(p.EXT_REF, msgpack.packb(obj._sb_id))
        if v.is_path(obj):
            return v.encode_path(self, obj)
        kind = v.numpy_kind(obj)
        if kind == "ndarray":
            return v.encode_ndarray(self, obj)
        if kind == "scalar":
            return v.encode_npscalar(self, obj)
        if kind == "dtype":
            return v.encode_dtype(self, obj)
        if type(obj) is InOut:
            target = obj.array
            host_id = self._sent.get(id(target))
            if host_id is None:
                host_id = self.register(lambda written: target.__setitem__(..., written))
                self._sent[id(target)] = host_id
            return [v.HEADS[p.EXT_INOUT], v.encode_ndarray(self, target), host_id]
        if v.is_namedtuple(obj):  # by class name; a class the worker lacks: a plain tuple
            name = hostobjects.importable_name(type(obj))
            if name is None:
                return [v.HEADS[p.EXT_TUPLE], *obj]
            cls = [v.HEADS[p.EXT_NAME], name[0], name[1], list(name)]
            return [v.HEADS[p.EXT_BUILD], "namedtuple", cls, list(obj)]
        name = hostobjects.importable_name(obj)
        exception_class = isinstance(obj, type) and issubclass(obj, BaseException)
        if name is not None:
            fallback = None
            if hostobjects.needs_fallback(*name):
                fallback = self.stand_in(obj) if exception_class else self.host_ref(obj)
            return [v.HEADS[p.EXT_NAME], name[0], name[1], fallback]
        if exception_class:
            return self.stand_in(obj)
        return self.host_ref(obj)

    def stand_in(self, cls: type[BaseException]) -> Any:
        """An exception class the worker may not import: a stand-in class there, one per host
        class, deriving from what its exception bases are there (so ``except`` matches)."""
        bases = [base for base in cls.__bases__ if issubclass(base, BaseException)]
        token = hostobjects.exception_token(cls)
        return [v.HEADS[p.EXT_HOSTCLASS], token, cls.__module__, cls.__qualname__, bases]

    def enum_member(self, obj: enum.Enum) -> Any:
        name = hostobjects.importable_name(type(obj))
        if name is None:
            return obj.value
        return [v.HEADS[p.EXT_NAME], name[0], f"{name[1]}.{obj.name}", obj.value]

    def register(self, obj: Any) -> int:
        """Keep ``obj`` for the worker under a new id (dropped when the worker releases it)."""
        host_id = next(_callback_ids)
        CALLBACKS[host_id] = obj
        self.callbacks.append(host_id)
        return host_id

    def host_ref(self, obj: Any) -> Any:
        """``obj`` by reference: the worker gets a proxy that calls back into the host."""
        host_id = self._sent.get(id(obj))
        if host_id is None or CALLBACKS.get(host_id) is not obj:
            host_id = self._sent[id(obj)] = self.register(obj)
        return [v.HEADS[p.EXT_HOSTREF], host_id, hostobjects.describe(obj)]

    def encode(self, message: list[Any], values: tuple[Any, Any] | None = None) -> bytes:
        """Frame ``message``; EncodeError names the part of ``values`` (args, kwargs) at fault.

        ``values`` defaults to the message's last two items (a CALL's args and kwargs).
        """
        self.refs_seen = []
        self.callbacks = []
        if self._sent:
            self._sent = {}
        try:
            body = self._packer.pack(v.lift_message(message))
        except RefInvalid:
            self._packer.reset()
            self._forget_callbacks()
            raise
        except Exception as exc:
            self._packer.reset()
            self._forget_callbacks()
            path, reason = _find_unsendable(values or (message[-2], message[-1]), self)
            reason = reason or _reason(v.as_depth_error(exc))
            raise EncodeError(f"cannot send {path}: {reason}", path=path) from None
        if len(body) > self.max_frame:
            self._forget_callbacks()
            raise EncodeError(
                f"cannot send the arguments: they encode to {len(body):,} bytes, over the "
                f"{self.max_frame:,}-byte frame limit; nothing was sent (pass large data in "
                "parts, or create it in the worker and pass a Ref)"
            )
        return p.frame(body)

    def _forget_callbacks(self) -> None:
        for host_id in self.callbacks:
            CALLBACKS.pop(host_id, None)
        self.callbacks = []

    # -- decoding -----------------------------------------------------------------------------
    def _decode_ref(self, data: bytes) -> Ref:
        from snakebridge.runtime.refs import learn_mro, make_ref

        described = msgpack.unpackb(data, raw=False)
        ref_id, module, qualname = described[:3]
        type_name = f"{module}.{qualname}"
        if len(described) > 3:  # the class's first Ref: its MRO and whether it is an iterator
            flags = described[4] if len(described) > 4 else 0
            learn_mro(type_name, described[3], bool(flags & v.REF_ITERATOR))
        assert self.worker is not None
        session = self.session if self.session is not None else refs.current_session()
        return make_ref(self.worker, session, ref_id, type_name)

    def _decode_host_object(self, data: bytes) -> Any:
        host_id = msgpack.unpackb(data)
        if host_id not in CALLBACKS:
            raise ValueError(f"the worker sent back host object #{host_id}, already released")
        obj = CALLBACKS[host_id]
        self._host_ids[id(obj)] = host_id
        return obj

    def _build_set(self, items: list[Any], kind: type[set[Any]] | type[frozenset[Any]]) -> Any:
        """A set from the worker. One holding host objects is merged from their one-item sets,
        which keep the hash they were made with (as a set copied from sets does in process):
        the host object's ``__hash__`` runs once while the worker holds it, not once per set
        (a hashable object's hash must not change while it is in a set anyway)."""
        if not self._host_ids:
            return kind(items[1:])
        plain, singles = [], []
        for item in items[1:]:
            host_id = self._host_ids.get(id(item))
            if host_id is None:
                plain.append(item)
                continue
            single = _SINGLETONS.get(host_id)
            if single is None:
                single = _SINGLETONS[host_id] = frozenset((item,))
                if len(_SINGLETONS) > 2 * len(CALLBACKS) + 256:  # forget released objects
                    for released in [i for i in _SINGLETONS if i not in CALLBACKS]:
                        _SINGLETONS.pop(released, None)
            singles.append(single)
        merged = set(plain)
        merged.update(*singles)
        return merged if kind is set else frozenset(merged)

    def decode(
        self, body: bytes | bytearray, worker: RefHost, session: Session | None
    ) -> list[Any]:
        """Decode a reply frame body; Refs in it belong to ``worker`` and ``session``."""
        self.worker, self.session = worker, session
        if self._host_ids:
            self._host_ids = {}
        try:
            message = self.unpack(body)
        except v.DepthError as exc:
            raise DecodeError(f"cannot decode the reply: {exc}") from None
        except msgpack.UnpackException as exc:
            raise ProtocolError(f"worker sent a malformed frame ({exc}); it was closed") from None
        except ImportError as exc:
            raise DecodeError(f"cannot decode the reply: {exc} (install it in the host)") from None
        except SnakeBridgeError:
            raise
        except Exception as exc:  # a hook met garbage: struct.error, InvalidOperation, …
            raise DecodeError(f"cannot decode the reply: {_reason(exc)}") from None
        finally:
            self.worker = self.session = None
            if self._host_ids:
                self._host_ids = {}
        message = check_reply(message)  # ProtocolError unless the frame has its kind's shape
        if message[0] == p.ERROR and type(message[2]) is dict:
            text = message[2].get("message")
            if isinstance(text, str) and "read-only" in text and "inout" not in text:
                message[2]["message"] = text + _READ_ONLY_HINT
        return message


def _decode_name(items: list[Any]) -> Any:
    """A by-name value from the worker: only builtins travel this way (the host imports
    nothing a worker names)."""
    _, module, qualname, _ = items
    found = v.loaded(module, qualname) if module == "builtins" else None
    if found is None:
        raise ValueError(f"the worker named {module}.{qualname}, which is not a builtin")
    return found


def _decode_host_class(items: list[Any]) -> Any:
    """A stand-in from the worker: ``[head, token]`` is the host exception class again, and
    ``[head, token, args]`` an exception of that class raised in the worker (None once the
    host class is gone: the error is then raised as the remote error it also is)."""
    if len(items) == 2:
        return hostobjects.exception_class(items[1])
    _, token, args = items
    if type(args) is not list:
        raise ValueError("a host exception's arguments are not a list")
    try:
        cls: Any = hostobjects.exception_class(token)
    except ValueError:
        return None
    try:
        return cls(*args)
    except Exception:  # an __init__ that wants other arguments: the args as they were
        exc = cls.__new__(cls, *args)
        exc.args = tuple(args)
        return exc


def _reason(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


def _key_text(key: Any) -> str:
    try:
        return repr(key)
    except Exception:  # a key whose __repr__ fails still gets a path
        return f"<{type(key).__qualname__} key>"


def _children(value: Any) -> list[tuple[str, Any]] | None:
    if type(value) in (list, tuple):
        return [(f"[{index}]", item) for index, item in enumerate(value)]
    if type(value) in (set, frozenset):
        return [("{…}", item) for item in value]
    if type(value) is dict:
        children = []
        for key, item in value.items():
            children.append((f"[{_key_text(key)}]", item))
            children.append((f" (key {_key_text(key)})", key))
        return children
    return None


def _find_unsendable(values: tuple[Any, Any], codec: HostCodec) -> tuple[str, str | None]:
    """(path, reason) of the first part of (args, kwargs) the codec refuses; iterative, so
    cyclic and very deep arguments are found without recursion."""
    args, kwargs = values
    on_path: set[int] = set()
    stack: list[tuple[bool, str, Any, int]] = [(True, "kwargs", kwargs or {}, 1)]
    stack.append((True, "args", args or [], 1))
    try:
        while stack:
            enter, path, value, depth = stack.pop()
            if not enter:
                on_path.discard(id(value))
                continue
            children = _children(value)
            if children is None:
                try:
                    codec.pack(value)
                except Exception as exc:
                    return path, _reason(exc)
                continue
            if id(value) in on_path:
                return path, "it contains itself (a cycle)"
            if depth > v.MAX_DEPTH:
                return path, f"it nests more than {v.MAX_DEPTH} levels deep (the codec's limit)"
            on_path.add(id(value))
            stack.append((False, path, value, depth))
            stack.extend(
                (True, path + suffix, child, depth + 1) for suffix, child in children[::-1]
            )
    finally:
        codec._forget_callbacks()
    return "a value", None


_local = threading.local()


def codec_for_thread() -> HostCodec:
    """This thread's codec (packers keep state, so threads never share one)."""
    codec: HostCodec | None = getattr(_local, "codec", None)
    if codec is None:
        codec = _local.codec = HostCodec()
    return codec
