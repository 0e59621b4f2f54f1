"""Records: lists of plain-scalar tuples packed at C speed (docs/protocol.md, code 25).

The commonest large value — rows, pairs, points — would otherwise cost a Python call per tuple
on both sides; as one flat extension of plain arrays, unpacked with ``use_list=False``, it
costs none. Anything else in the list keeps the general path.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional

import msgpack

from snakebridge_worker import oob
from snakebridge_worker import protocol as p

_SCALARS = frozenset((type(None), bool, int, float, str, bytes))
_RECORDS_MIN = 8
_LIFT_MAX = 64


def as_records(items: List[Any]) -> Optional[msgpack.ExtType]:
    """A list of tuples of plain scalars as one flat extension packed at C speed, or None.

    The commonest large value (rows, pairs, points) then costs no Python call per tuple on
    either side; anything else in the list (a nested container, a subclass, a big int) keeps
    the general path.
    """
    if len(items) < _RECORDS_MIN or type(items[0]) is not tuple:
        return None
    if set(map(type, items)) != {tuple}:
        return None
    if not set(map(type, itertools.chain.from_iterable(items))) <= _SCALARS:
        return None
    try:  # not strict, no default: the tuples are plain arrays
        return msgpack.ExtType(p.EXT_RECORDS, msgpack.packb(items, use_bin_type=True))
    except (OverflowError, ValueError, TypeError):  # an int beyond 64 bits
        return None


_CONTAINERS = frozenset((list, tuple, dict, bytearray, bytes, memoryview))
_OOB_MIN = 1024  # dataplane: buffers smaller than this never go out of band


def lift(value: Any, depth: int = 1) -> Any:
    """``value`` with its lists of plain tuples (``depth`` levels down) as records; never
    changes the caller's containers (changed ones are copies)."""
    cls = type(value)
    if cls is list:
        if len(value) >= _RECORDS_MIN and type(value[0]) is tuple:
            records = as_records(value)
            if records is not None:
                return records
    elif cls is bytearray:  # msgpack packs bytearrays as bytes without asking: say so here
        if len(value) >= _OOB_MIN and oob.wants_segment(len(value)):
            return oob.encode_buffer(value)  # dataplane: large ones through shared memory
        return msgpack.ExtType(p.EXT_BYTEARRAY, bytes(value))
    elif cls is bytes or cls is memoryview:  # dataplane: msgpack packs them without asking
        size = value.nbytes if cls is memoryview else len(value)
        if size >= _OOB_MIN and oob.wants_segment(size):
            return oob.encode_buffer(value, as_bytes=True)
        return value
    elif cls is not tuple and cls is not dict:
        return value
    if not depth or len(value) > _LIFT_MAX:
        return value
    if cls is dict:
        copied: Optional[Dict[Any, Any]] = None
        for key, item in value.items():
            if type(item) in _CONTAINERS:
                new = lift(item, depth - 1)
                if new is not item:
                    copied = dict(value) if copied is None else copied
                    copied[key] = new
        return value if copied is None else copied
    items: Optional[List[Any]] = None
    for index, item in enumerate(value):
        if type(item) in _CONTAINERS:
            new = lift(item, depth - 1)
            if new is not item:
                items = list(value) if items is None else items
                items[index] = new
    if items is None:
        return value
    return tuple(items) if cls is tuple else items


def lift_message(message: List[Any]) -> List[Any]:
    """A CALL's args and kwargs, or an answer's value, with records lifted (in place)."""
    kind = message[0]
    if kind == p.CALL and len(message) == 10:
        args, kwargs = message[8], message[9]
        if type(args) is list and (
            len(args) >= _RECORDS_MIN or not _CONTAINERS.isdisjoint(map(type, args))
        ):
            message[8] = lift(args, 1)
        if type(kwargs) is dict and not _CONTAINERS.isdisjoint(map(type, kwargs.values())):
            message[9] = lift(kwargs, 1)
    elif kind in (p.RESULT, p.CALLBACK_RESULT) and type(message[2]) in _CONTAINERS:
        message[2] = lift(message[2], 2)
    return message


def decode_records(data: bytes) -> List[Any]:
    return list(msgpack.unpackb(data, use_list=False, raw=False))
