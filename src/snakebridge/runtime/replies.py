"""What a well-formed frame from a worker looks like; anything else is a ProtocolError.

The host dispatches on a decoded frame's kind and unpacks its fields; a worker (buggy,
crashed half-way, or hostile) may send any msgpack at all, so every frame is checked here
first and the dispatch code can trust the shape it reads.
"""

from __future__ import annotations

from typing import Any

from snakebridge.errors import ProtocolError
from snakebridge_worker import protocol as p

__all__ = ["check_reply"]

_LENGTHS = {
    p.RESULT: 3,
    p.ERROR: 3,
    p.CHUNK: 3,
    p.STREAM_END: 3,
    p.CALLBACK: 6,  # [CALLBACK, callback id, args, kwargs, call id, request id]
    p.CALLBACK_RELEASE: 3,
    p.PONG: 3,
}


def _problem(message: Any) -> str | None:
    if type(message) is not list or len(message) < 2:
        return "it is not [kind, id, ...]"
    kind, call_id = message[0], message[1]
    if type(kind) is not int or type(call_id) is not int:
        return "its kind or id is not an integer"
    length = _LENGTHS.get(kind)
    if length is None:
        return None  # an unexpected kind: the dispatcher names it
    if len(message) != length and not (kind == p.CALLBACK and 4 <= len(message) < length):
        return f"a kind-{kind} frame has {len(message)} items, not {length}"
    if kind == p.CALLBACK:
        kwargs = message[3]
        if type(message[2]) is not list or not (
            kwargs is None or (type(kwargs) is dict and all(type(k) is str for k in kwargs))
        ):
            return "a callback request's arguments are not a list and a map of names"
        if not all(type(item) is int for item in message[4:]):
            return "a callback request's call or request id is not an integer"
    elif kind == p.CALLBACK_RELEASE:
        if type(message[2]) is not list or not all(type(i) is int for i in message[2]):
            return "a callback release is not a list of integer ids"
    elif kind == p.PONG and (
        type(message[2]) is not dict
        or not all(type(k) is str and type(v) is int for k, v in message[2].items())
    ):
        return "a ping's stats are not a map of names to integers"
    return None


def check_reply(message: Any) -> list[Any]:
    """``message`` when it is a well-formed frame from a worker; ProtocolError otherwise."""
    if (  # the common case, in short
        type(message) is list
        and len(message) == 3
        and message[0] == p.RESULT
        and type(message[1]) is int
    ):
        return message
    problem = _problem(message)
    if problem is not None:
        raise ProtocolError(f"worker sent a malformed frame ({problem}): {message!r:.80}")
    result: list[Any] = message
    return result
