"""What the host does with a worker's answers: build the error it raises, run callbacks."""

from __future__ import annotations

from typing import Any

from snakebridge.errors import (
    DecodeError,
    LibraryNotAllowed,
    ProtocolError,
    RefInvalid,
    RemoteError,
    SymbolNotFound,
    registered_exception,
    remote_error,
)
from snakebridge.runtime import hostobjects
from snakebridge.runtime.codec import CALLBACKS, HostCodec
from snakebridge_worker import hostrefs
from snakebridge_worker import protocol as p

__all__ = ["callback_reply", "error_from_payload"]


def error_from_payload(payload: object, depth: int = 0) -> Exception:
    """The host exception for an ERROR frame's payload (a malformed one is a ProtocolError)."""
    if type(payload) is not dict:
        return ProtocolError(f"worker sent an ERROR whose payload is not a map: {payload!r:.80}")
    host_exception = payload.get("host_exception")
    if isinstance(host_exception, Exception):  # a host callback's own error, or one of a
        traceback = payload.get("traceback")  # host class raised in the worker (a stand-in's)
        if host_exception.__traceback__ is None and type(traceback) is str and traceback:
            host_exception.add_note("Remote traceback (in the worker):\n" + traceback.rstrip())
        return host_exception
    kind, message = payload.get("kind"), _text(payload.get("message", ""))
    if kind == p.ERR_SYMBOL:
        return SymbolNotFound(message)
    if kind == p.ERR_REF:
        return RefInvalid(message)
    if kind == p.ERR_DECODE:
        return DecodeError(message)
    if kind == p.ERR_PROTOCOL:
        return ProtocolError(f"the worker rejected a frame: {message}")
    if kind == p.ERR_NOT_ALLOWED:
        return LibraryNotAllowed(message)
    builtin = payload.get("builtin")
    members: list[RemoteError] = []
    raw_members = payload.get("exceptions")
    if type(raw_members) is list and depth < _MAX_GROUP_DEPTH:
        for item in raw_members[:_MAX_GROUP_MEMBERS]:
            member = error_from_payload(item, depth + 1)
            if isinstance(member, RemoteError):
                members.append(member)
    remote_type, mro = _text(payload.get("type", "")), payload.get("mro")
    facade = registered_exception(remote_type, mro if type(mro) is list else None)
    exc = remote_error(builtin if type(builtin) is str else None, message, members, facade)
    exc.remote_type = remote_type
    exc.remote_message = message
    exc.remote_traceback = _text(payload.get("traceback", ""))
    if exc.remote_traceback:
        exc.add_note("Remote traceback (in the worker):\n" + exc.remote_traceback.rstrip())
    return exc


_MAX_GROUP_DEPTH, _MAX_GROUP_MEMBERS = 8, 1000


def _text(value: object) -> str:
    """A payload field as text (a peer may send any type)."""
    return value if type(value) is str else repr(value)


def callback_reply(message: list[Any], codec: HostCodec) -> bytes:
    """Run what the worker asked of the host: a host callable (``CALLBACK``) or an operation
    on a host object (callback id ``HOST_OP``); framed CALLBACK_RESULT or CALLBACK_ERROR.

    An error carries the exception's class (by name when the worker can import it) and the
    exception itself by reference, so it is raised in the worker with its own type and, when
    it propagates out of the call, the host raises the original exception object again.
    """
    callback_id, args, kwargs = message[1], message[2], message[3]
    request = message[5] if len(message) > 5 else callback_id  # answers are matched by it
    try:
        if callback_id == hostrefs.HOST_OP:
            result = hostobjects.operation(list(args), CALLBACKS)
        else:
            function = CALLBACKS.get(callback_id)
            if function is None:
                raise LookupError(f"no host callback #{callback_id} in this call")
            result = function(*args, **(kwargs or {}))
        reply = [p.CALLBACK_RESULT, callback_id, result, request]
        return codec.encode(reply, values=([result], None))
    except Exception as exc:
        builtin = next(
            (c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"), "Exception"
        )
        payload: dict[str, Any] = {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "builtin": builtin,
            "message": str(exc),
        }
        try:
            full = {**payload, "class": type(exc), "args": list(exc.args), "exception": exc}
            return codec.encode([p.CALLBACK_ERROR, callback_id, full, request], values=([], None))
        except Exception:  # arguments that cannot travel: the type and message still do
            reply = [p.CALLBACK_ERROR, callback_id, payload, request]
            return codec.encode(reply, values=([], None))
