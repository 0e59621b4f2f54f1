"""The value codec shared by host and worker: what travels by value, and how (docs/protocol.md).

A value is msgpack-native (None, bool, 64-bit int, float, str, bytes, list, dict), a *flat*
extension (its data is plain bytes: big ints, complex, dates, Decimal, UUID, bytearray…) or a
*composite*: an array whose first item is a zero-length extension of a composite code and whose
other items are its fields (tuple, set, frozenset, range, slice, OrderedDict, deque, …). Fields
are packed by the same packer and rebuilt by one ``list_hook`` inside one ``unpackb``, so nesting
costs neither a fresh ``packb`` per element nor C stack per level: a value is bounded by
msgpack's own nesting limits, and anything deeper is an error, never a crash.

Exact types only (``type(decoded) is type(sent)``); side-specific subclasses decide the rest.

(Over 350 lines on purpose: one table of value kinds, each a short encode/decode pair.)
"""

from __future__ import annotations

import datetime
import enum
import struct
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import msgpack

from snakebridge_worker import hostrefs, oob
from snakebridge_worker import protocol as p
from snakebridge_worker.kinds import BUILDERS, dtype_spec, dtype_wire, encode_datetime, encode_time
from snakebridge_worker.kinds import builtin_name as builtin_name
from snakebridge_worker.kinds import encode_builtin as encode_builtin
from snakebridge_worker.kinds import encode_namedtuple as encode_namedtuple
from snakebridge_worker.kinds import is_namedtuple as is_namedtuple
from snakebridge_worker.kinds import loaded as loaded
from snakebridge_worker.kinds import module as _module
from snakebridge_worker.records import decode_records
from snakebridge_worker.records import lift_message as lift_message

MAX_DEPTH = 500
"""Nesting the codec always carries. Beyond msgpack's own limit (511 or 1024 levels, by
version) a value is a DepthError; the unpacker's explicit stack (1024) bounds decoding."""
_TOO_DEEP = (
    f"the value nests deeper than msgpack's nesting limit (at least {MAX_DEPTH} levels are "
    "always carried)"
)

_COMPLEX = struct.Struct(">dd")
_TIMEDELTA = struct.Struct(">iii")
PATH_KINDS = ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")
COMPOSITES = (
    p.EXT_TUPLE,
    p.EXT_SET,
    p.EXT_FROZENSET,
    p.EXT_PATH,
    p.EXT_NAME,
    p.EXT_BUILD,
    p.EXT_HOSTREF,
    p.EXT_INOUT,
    p.EXT_HOSTCLASS,
)


class Unsendable(ValueError):
    """A value this side cannot send: too deep, cyclic, or over the frame limit."""


class DepthError(Unsendable):
    """A value nests deeper than the codec carries (or contains itself)."""


class ArgumentError(ValueError):
    """A whole frame whose values this side cannot rebuild; ``kind``, ``call_id`` and
    ``request`` (a callback answer's request id, else None) say which frame it was."""

    def __init__(self, message: str, kind: int, call_id: int, request: Any = None) -> None:
        super().__init__(message)
        self.kind, self.call_id, self.request = kind, call_id, request


class Mark:
    """Head of a composite array: which composite the remaining items are the fields of."""

    __slots__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code = code

    def __repr__(self) -> str:
        return f"<snakebridge composite mark {self.code}>"


MARKS: Dict[int, Mark] = {code: Mark(code) for code in COMPOSITES}
HEADS: Dict[int, msgpack.ExtType] = {code: msgpack.ExtType(code, b"") for code in COMPOSITES}
_TUPLE, _SET, _FROZENSET = HEADS[p.EXT_TUPLE], HEADS[p.EXT_SET], HEADS[p.EXT_FROZENSET]
_BUILD = HEADS[p.EXT_BUILD]


REF_ITERATOR = 1
"""Flag of a Ref's class description: the class defines ``__next__`` (an iterator)."""


def type_key(cls: type) -> str:
    """``module.qualname`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_class(ref_id: int, cls: type) -> List[Any]:
    """A Ref's description with its class's (sent with a class's first Ref on a connection):
    ``[ref_id, module, qualname, mro, flags]``."""
    mro = [type_key(klass) for klass in cls.__mro__]
    flags = REF_ITERATOR if callable(getattr(cls, "__next__", None)) else 0
    return [ref_id, cls.__module__, cls.__qualname__, mro, flags]


def _bigint(value: int) -> msgpack.ExtType:
    data = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
    return msgpack.ExtType(p.EXT_BIGINT, data)


class ValueCodec:
    """msgpack hooks for the by-value types; subclasses add Refs, host objects and arrays."""

    def __init__(self) -> None:
        self.encoders: Dict[type, Callable[[Any], Any]] = {
            tuple: lambda o: [_TUPLE, *o],
            set: lambda o: [_SET, *o],
            frozenset: lambda o: [_FROZENSET, *o],
            int: _bigint,
            complex: lambda o: msgpack.ExtType(p.EXT_COMPLEX, _COMPLEX.pack(o.real, o.imag)),
            datetime.datetime: encode_datetime,
            datetime.date: lambda o: msgpack.ExtType(p.EXT_DATE, o.isoformat().encode()),
            datetime.time: encode_time,
            datetime.timedelta: lambda o: msgpack.ExtType(
                p.EXT_TIMEDELTA, _TIMEDELTA.pack(o.days, o.seconds, o.microseconds)
            ),
            range: lambda o: [_BUILD, "range", o.start, o.stop, o.step],
            slice: lambda o: [_BUILD, "slice", o.start, o.stop, o.step],
            type(Ellipsis): lambda o: msgpack.ExtType(p.EXT_ELLIPSIS, b""),
            bytearray: lambda o: (
                oob.encode_buffer(o)  # dataplane: large ones by shm
                if oob.wants_segment(len(o))
                else msgpack.ExtType(p.EXT_BYTEARRAY, bytes(o))
            ),
            hostrefs.StandIn: self._encode_stand_in,
            hostrefs.HostException: lambda o: [HEADS[p.EXT_HOSTCLASS], o.token, o.args],
            memoryview: lambda o: (
                oob.encode_buffer(o, as_bytes=True)  # arrives as bytes
                if oob.wants_segment(o.nbytes)
                else o.tobytes()
            ),
        }
        # Types whose modules are imported only once a value of them appears (keyed by name).
        self.named_encoders: Dict[str, Callable[[Any], Any]] = {
            "decimal.Decimal": lambda o: msgpack.ExtType(p.EXT_DECIMAL, str(o).encode()),
            "fractions.Fraction": lambda o: msgpack.ExtType(p.EXT_FRACTION, str(o).encode()),
            "uuid.UUID": lambda o: msgpack.ExtType(p.EXT_UUID, o.bytes),
            "collections.OrderedDict": lambda o: [_BUILD, "OrderedDict", dict(o)],
            "collections.Counter": lambda o: [_BUILD, "Counter", dict(o)],
            "collections.defaultdict": lambda o: [
                _BUILD,
                "defaultdict",
                o.default_factory,
                dict(o),
            ],
            "collections.deque": lambda o: [_BUILD, "deque", list(o), o.maxlen],
        }
        self.decoders: Dict[int, Callable[[bytes], Any]] = {
            p.EXT_BIGINT: lambda d: int.from_bytes(d, "big", signed=True),
            p.EXT_COMPLEX: lambda d: complex(*_COMPLEX.unpack(d)),
            p.EXT_DATETIME: lambda d: datetime.datetime.fromisoformat(d.decode()),
            p.EXT_DATE: lambda d: datetime.date.fromisoformat(d.decode()),
            p.EXT_TIME: lambda d: datetime.time.fromisoformat(d.decode()),
            p.EXT_TIMEDELTA: lambda d: datetime.timedelta(*_TIMEDELTA.unpack(d)),
            p.EXT_DECIMAL: lambda d: _module("decimal").Decimal(d.decode()),
            p.EXT_FRACTION: lambda d: _module("fractions").Fraction(d.decode()),
            p.EXT_UUID: lambda d: _module("uuid").UUID(bytes=d),
            p.EXT_NDARRAY: decode_ndarray,
            p.EXT_NPSCALAR: decode_npscalar,
            p.EXT_ELLIPSIS: lambda d: Ellipsis,
            p.EXT_BYTEARRAY: bytearray,
            p.EXT_RECORDS: decode_records,
        }
        self.builders: Dict[int, Callable[[List[Any]], Any]] = {
            p.EXT_TUPLE: lambda items: tuple(items[1:]),
            p.EXT_SET: lambda items: set(items[1:]),
            p.EXT_FROZENSET: lambda items: frozenset(items[1:]),
            p.EXT_PATH: self._build_path,
            p.EXT_BUILD: lambda items: BUILDERS[items[1]](*items[2:]),
            p.EXT_HOSTCLASS: hostrefs.stand_in,  # the host replaces it (host classes back)
        }
        self.decoders.update(oob.decoders(self))  # dataplane: extension codes 30-34
        self._hooks()
        self._packer = self.packer()

    # -- encoding -----------------------------------------------------------------------------
    def default(self, obj: Any) -> Any:
        """msgpack ``default`` hook: by-value types first, then :meth:`fallback`."""
        return self._default(obj)

    def _hooks(self) -> None:
        """The hot hooks as closures over their tables (no attribute lookups per element)."""
        encoders, named, decoders, builders = (
            self.encoders,
            self.named_encoders,
            self.decoders,
            self.builders,
        )
        tuple_head, tuple_mark, marks = _TUPLE, MARKS[p.EXT_TUPLE], MARKS.get

        def default(obj: Any) -> Any:
            cls = type(obj)
            if cls is tuple:
                return [tuple_head, *obj]
            encoder = encoders.get(cls)
            if encoder is None:
                encoder = named.get(type_key(cls))
                if encoder is None:
                    if isinstance(obj, enum.Enum):
                        return self.enum_member(obj)
                    return self.fallback(obj)
                encoders[cls] = encoder  # exact type: later values skip the name
            return encoder(obj)

        def ext_hook(code: int, data: bytes) -> Any:
            if not data:
                mark = marks(code)
                if mark is not None:
                    return mark
            decoder = decoders.get(code)
            if decoder is None:
                raise ValueError(f"unknown extension type {code}")
            return decoder(data)

        def list_hook(items: List[Any]) -> Any:
            if items:
                head = items[0]
                if head is tuple_mark:
                    del items[0]
                    return tuple(items)
                if type(head) is Mark:
                    return builders[head.code](items)
            return items

        self._default, self.ext_hook, self.list_hook = default, ext_hook, list_hook

    def enum_member(self, obj: enum.Enum) -> Any:
        """An enum member travels as its value unless a subclass knows better."""
        return obj.value

    def _encode_stand_in(self, cls: Any) -> Any:
        """A stand-in goes back as its host class; a worker subclass of one is a class of
        this side like any other."""
        token = cls.__dict__.get("_sb_token")
        return self.fallback(cls) if token is None else [HEADS[p.EXT_HOSTCLASS], token]

    def fallback(self, obj: Any) -> Any:
        """What to send for an object that is not a value; the base class refuses."""
        raise TypeError(f"cannot send {type_key(type(obj))}")

    def packer(self) -> msgpack.Packer:
        """A packer with this codec's hooks (one per thread: packers are not shared)."""
        return msgpack.Packer(default=self._default, strict_types=True, use_bin_type=True)

    def pack(self, obj: Any) -> bytes:
        """Pack ``obj``; DepthError when it nests too deep or contains itself."""
        try:
            return self._packer.pack(obj)
        except BaseException as exc:
            self._packer.reset()
            raise as_depth_error(exc) from None

    pack_nested = pack

    # -- decoding -----------------------------------------------------------------------------
    def unpack(self, data: Union[bytes, bytearray]) -> Any:
        """Decode one frame body; DepthError when it nests deeper than msgpack unpacks."""
        try:
            return msgpack.unpackb(
                data,
                ext_hook=self.ext_hook,
                list_hook=self.list_hook,
                raw=False,
                strict_map_key=False,
            )
        except (msgpack.exceptions.StackError, RecursionError):
            raise DepthError(_TOO_DEEP) from None

    unpack_nested = unpack

    def _build_path(self, items: List[Any]) -> Any:
        _, kind, text = items
        if kind not in PATH_KINDS:
            raise ValueError(f"unknown path kind {kind!r}")
        return getattr(_module("pathlib"), kind)(text)


def as_depth_error(exc: BaseException) -> BaseException:
    """The packer's nesting errors as a DepthError naming the limit; others unchanged."""
    if isinstance(exc, RecursionError) or (
        isinstance(exc, ValueError) and "recursion limit" in str(exc)
    ):
        return DepthError(f"{_TOO_DEEP}, or it contains itself")
    return exc


def frame_head(body: Union[bytes, bytearray]) -> Optional[Tuple[int, int, Any]]:
    """``(kind, id, request)`` of a frame whose values did not decode, None if unreadable.

    ``request`` is the fourth item of a callback answer (after its value), the lane number of
    a call sent with one, else None.
    """
    try:
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(body)
        size = unpacker.read_array_header()
        kind, call_id = unpacker.unpack(), unpacker.unpack()
        request = None
        if kind in (p.CALLBACK_RESULT, p.CALLBACK_ERROR) and size > 3:
            unpacker.skip()
            request = unpacker.unpack()
        elif kind == p.CALL and size > 10:  # a lane's call: the lane its answer goes on
            for _ in range(8):
                unpacker.skip()
            request = unpacker.unpack()
    except Exception:
        return None
    if type(kind) is not int or type(call_id) is not int:
        return None
    return kind, call_id, request


def encode_path(codec: ValueCodec, obj: Any) -> Any:
    """A pathlib path as a value."""
    name = type(obj).__name__
    kind = name if name in PATH_KINDS else "PurePosixPath"
    return [HEADS[p.EXT_PATH], kind, str(obj)]


def is_path(obj: Any) -> bool:
    pathlib = sys.modules.get("pathlib")
    return pathlib is not None and isinstance(obj, pathlib.PurePath)


def numpy_kind(obj: Any) -> str:
    """``"ndarray"``, ``"scalar"``, ``"dtype"`` or ``""`` for what numpy sends by value.

    ``"ndarray"`` also covers what the data plane sends out of band (bytes-like buffers, Arrow
    and pandas data, resident data, CUDA tensors): all of it goes through :func:`encode_ndarray`.
    """
    if oob.kind(obj) not in ("", "array"):  # dataplane
        return "ndarray"
    np = sys.modules.get("numpy")
    if np is None:
        return ""
    if type(obj) is np.ndarray and not obj.dtype.hasobject:
        return "ndarray"
    if isinstance(obj, np.generic) and not obj.dtype.hasobject:
        return "scalar" if type(obj).__module__ == "numpy" else ""
    if isinstance(obj, np.dtype) and not obj.hasobject:
        return "dtype"
    return ""


def encode_ndarray(codec: ValueCodec, obj: Any) -> Any:
    """``[dtype, shape, bytes, order]``: Fortran-ordered arrays keep their order.

    Arrays of ``shm_threshold`` bytes or more, and the other out-of-band values, go through
    the data plane instead (extensions 30-34, docs/dataplane.md).
    """
    kind = oob.kind(obj)
    if kind != "array":
        return oob.encode(codec, obj, kind)
    ext = oob.encode_array(obj)
    if ext is not None:
        return ext
    order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
    data = obj.tobytes(order=order)
    fields = [dtype_wire(obj.dtype), list(obj.shape), data, order]
    return msgpack.ExtType(p.EXT_NDARRAY, msgpack.packb(fields, use_bin_type=True))


def encode_npscalar(codec: ValueCodec, obj: Any) -> Any:
    if obj.dtype.fields is not None:
        return [_BUILD, "npvoid", dtype_wire(obj.dtype), obj.tobytes()]
    return msgpack.ExtType(p.EXT_NPSCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()]))


def encode_dtype(codec: ValueCodec, obj: Any) -> Any:
    return [_BUILD, "dtype", dtype_wire(obj)]


def decode_ndarray(data: bytes, writable: bool = True) -> Any:
    """An array from :func:`encode_ndarray`'s data; ``writable=False`` gives a read-only view
    of the frame (no copy), as the worker receives host arrays."""
    import numpy as np

    fields = msgpack.unpackb(data, raw=False)
    dtype, shape, raw = fields[:3]
    order = fields[3] if len(fields) > 3 else "C"
    buffer = bytearray(raw) if writable else raw
    array = np.frombuffer(buffer, dtype=np.dtype(dtype_spec(dtype)))
    return array.reshape(shape, order="F" if order == "F" else "C")


def decode_npscalar(data: bytes) -> Any:
    import numpy as np

    dtype, raw = msgpack.unpackb(data, raw=False)
    return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
