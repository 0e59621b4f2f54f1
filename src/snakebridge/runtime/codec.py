"""Host-side value codec: Refs and host callables out, Refs and values back in."""

from __future__ import annotations

import importlib.util
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgpack

from snakebridge.runtime import refs
from snakebridge.runtime.errors import DecodeError, EncodeError, ProtocolError, RefInvalid
from snakebridge_worker import protocol as p
from snakebridge_worker import values as v

if TYPE_CHECKING:
    from snakebridge.runtime.refs import Ref, RefHost, Session

__all__ = ["CALLBACKS", "HostCodec", "codec_for_thread"]

CALLBACKS: dict[int, Callable[..., Any]] = {}
"""Host callables sent to workers, by id; a session drops its own when it closes."""
_callback_ids = itertools.count(1)


def _forget_callbacks(callback_ids: list[int]) -> None:
    for callback_id in callback_ids:
        CALLBACKS.pop(callback_id, None)


refs._SESSION_CLOSE_HOOKS.append(_forget_callbacks)

HOST_HAS_NUMPY = importlib.util.find_spec("numpy") is not None
"""Whether arrays can come back by value (numpy itself is imported only when one arrives)."""


class HostCodec(v.ValueCodec):
    """One per thread. Encoding records the Refs and callables it meets; decoding makes Refs."""

    def __init__(self) -> None:
        super().__init__()
        self.packer_ = self.packer()
        self.refs_seen: list[Ref] = []
        self.callbacks: list[int] = []
        self.worker: RefHost | None = None
        self.session: Session | None = None
        self.decoders[p.EXT_REF] = self._decode_ref

    # -- encoding -----------------------------------------------------------------------------
    def fallback(self, obj: Any) -> Any:
        from snakebridge.runtime.refs import Ref, check_valid

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
        if callable(obj):
            callback_id = next(_callback_ids)
            CALLBACKS[callback_id] = obj
            self.callbacks.append(callback_id)
            return msgpack.ExtType(p.EXT_CALLBACK, msgpack.packb(callback_id))
        raise TypeError(f"cannot send {v.type_key(type(obj))}")

    def encode(self, message: list[Any], values: tuple[Any, Any] | None = None) -> bytes:
        """Frame ``message``; EncodeError names the part of ``values`` (args, kwargs) at fault.

        ``values`` defaults to the message's last two items (a CALL's args and kwargs).
        """
        self.refs_seen = []
        self.callbacks = []
        try:
            return p.frame(self.packer_.pack(message))
        except RefInvalid:
            self.packer_.reset()
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            self.packer_.reset()
            path = _find_unsendable(values or (message[-2], message[-1]), self)
            raise EncodeError(
                f"cannot send {path}: {exc}; send values (str, int, list, dict, …), Refs, "
                "or host callables",
                path=path,
            ) from None

    # -- decoding -----------------------------------------------------------------------------
    def _decode_ref(self, data: bytes) -> Ref:
        from snakebridge.runtime.refs import learn_mro, make_ref

        described = msgpack.unpackb(data, raw=False)
        ref_id, module, qualname = described[:3]
        type_name = f"{module}.{qualname}"
        if len(described) > 3:
            learn_mro(type_name, described[3])
        assert self.worker is not None
        session = self.session if self.session is not None else refs.current_session()
        return make_ref(self.worker, session, ref_id, type_name)

    def decode(
        self, body: bytes | bytearray, worker: RefHost, session: Session | None
    ) -> list[Any]:
        """Decode a reply frame body; Refs in it belong to ``worker`` and ``session``."""
        self.worker, self.session = worker, session
        try:
            message = msgpack.unpackb(body, ext_hook=self.ext_hook, raw=False, strict_map_key=False)
        except msgpack.UnpackException as exc:
            raise ProtocolError(f"worker sent a malformed frame ({exc}); it was closed") from None
        except ImportError as exc:
            raise DecodeError(f"cannot decode the reply: {exc} (install it in the host)") from None
        except (ValueError, TypeError) as exc:
            raise DecodeError(f"cannot decode the reply: {exc}") from None
        finally:
            self.worker = self.session = None
        if type(message) is not list or len(message) < 3 or type(message[0]) is not int:
            raise ProtocolError(f"worker sent a frame that is not [kind, id, ...]: {message!r:.80}")
        return message


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if type(value) in (list, tuple):
        for index, item in enumerate(value):
            yield f"[{index}]", item
    elif type(value) in (set, frozenset):
        for item in value:
            yield "{…}", item
    elif type(value) is dict:
        for key, item in value.items():
            yield f"[{key!r}]", item
            yield f" (key {key!r})", key


def _find_unsendable(values: tuple[Any, Any], codec: HostCodec) -> str:
    """Path of the first leaf of (args, kwargs) that the codec refuses."""
    args, kwargs = values

    def walk(path: str, value: Any) -> str | None:
        children = list(_children(value))
        if children:
            for suffix, child in children:
                found = walk(path + suffix, child)
                if found is not None:
                    return found
            return None
        try:
            codec.pack_nested(value)
        except (TypeError, ValueError, OverflowError):
            return path
        return None

    roots = [("args", args or []), ("kwargs", kwargs or {})]
    for name, root in roots:
        found = walk(name, root)
        if found is not None:
            return found
    return "a value"


_local = threading.local()


def codec_for_thread() -> HostCodec:
    """This thread's codec (packers keep state, so threads never share one)."""
    codec: HostCodec | None = getattr(_local, "codec", None)
    if codec is None:
        codec = _local.codec = HostCodec()
    return codec
