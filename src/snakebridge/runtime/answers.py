"""What the host does with a worker's answers: build the error it raises, run callbacks."""

from __future__ import annotations

from typing import Any

from snakebridge.runtime.codec import CALLBACKS, HostCodec
from snakebridge.runtime.errors import (
    DecodeError,
    ProtocolError,
    RefInvalid,
    SymbolNotFound,
    registered_exception,
    remote_error_class,
)
from snakebridge_worker import protocol as p

__all__ = ["callback_reply", "error_from_payload"]


def error_from_payload(payload: dict[str, Any]) -> Exception:
    """The host exception for an ERROR frame's payload."""
    kind, message = payload.get("kind"), str(payload.get("message", ""))
    if kind == p.ERR_SYMBOL:
        return SymbolNotFound(message)
    if kind == p.ERR_REF:
        return RefInvalid(message)
    if kind == p.ERR_DECODE:
        return DecodeError(message)
    if kind == p.ERR_PROTOCOL:
        return ProtocolError(f"the worker rejected a frame: {message}")
    mro = payload.get("mro")
    cls = registered_exception(str(payload.get("type", "")), mro if isinstance(mro, list) else None)
    cls = cls or remote_error_class(payload.get("builtin"))
    exc = cls.__new__(cls, message)
    exc.remote_type = str(payload.get("type", ""))
    exc.remote_message = message
    exc.remote_traceback = str(payload.get("traceback", ""))
    if exc.remote_traceback:
        exc.add_note("Remote traceback (in the worker):\n" + exc.remote_traceback.rstrip())
    return exc


def callback_reply(message: list[Any], codec: HostCodec) -> bytes:
    """Run the host callable the worker asked for; framed CALLBACK_RESULT or CALLBACK_ERROR."""
    _, callback_id, args, kwargs = message
    function = CALLBACKS.get(callback_id)
    try:
        if function is None:
            raise LookupError(f"no host callback #{callback_id} in this call")
        result = function(*args, **(kwargs or {}))
        return codec.encode([p.CALLBACK_RESULT, callback_id, result], values=([result], None))
    except Exception as exc:
        builtin = next(
            (c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"), "Exception"
        )
        payload = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "builtin": builtin,
            "message": str(exc),
        }
        return codec.encode([p.CALLBACK_ERROR, callback_id, payload], values=([], None))
