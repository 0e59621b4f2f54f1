"""Value types that cross the wire by value, as msgpack extension types.

Exactly these types travel by value (``type(decoded) is type(sent)``): None, bool, int of any
size, float, str, bytes, list, dict, tuple, set, frozenset, complex, datetime, date, time,
timedelta, Decimal, Fraction, UUID; enum members travel as their value. Subclasses do not
match (they go to the side-specific fallback: a Ref from the worker, an error from the host).
"""

from __future__ import annotations

import datetime
import enum
import struct
import sys
from typing import Any, Callable, Dict

import msgpack

from snakebridge_worker import oob
from snakebridge_worker import protocol as p

_COMPLEX = struct.Struct(">dd")
PATH_KINDS = ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath")


def type_key(cls: type) -> str:
    """``module.qualname`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _bigint_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)


class ValueCodec:
    """msgpack hooks for the by-value types; subclasses add Refs, paths and arrays."""

    def __init__(self) -> None:
        nested = self.pack_nested
        self.encoders: Dict[str, Callable[[Any], msgpack.ExtType]] = {
            "builtins.tuple": lambda o: msgpack.ExtType(p.EXT_TUPLE, nested(list(o))),
            "builtins.set": lambda o: msgpack.ExtType(p.EXT_SET, nested(list(o))),
            "builtins.frozenset": lambda o: msgpack.ExtType(p.EXT_FROZENSET, nested(list(o))),
            "builtins.int": lambda o: msgpack.ExtType(p.EXT_BIGINT, _bigint_bytes(o)),
            "builtins.complex": lambda o: msgpack.ExtType(
                p.EXT_COMPLEX, _COMPLEX.pack(o.real, o.imag)
            ),
            "datetime.datetime": lambda o: msgpack.ExtType(p.EXT_DATETIME, o.isoformat().encode()),
            "datetime.date": lambda o: msgpack.ExtType(p.EXT_DATE, o.isoformat().encode()),
            "datetime.time": lambda o: msgpack.ExtType(p.EXT_TIME, o.isoformat().encode()),
            "datetime.timedelta": lambda o: msgpack.ExtType(
                p.EXT_TIMEDELTA, nested([o.days, o.seconds, o.microseconds])
            ),
            "decimal.Decimal": lambda o: msgpack.ExtType(p.EXT_DECIMAL, str(o).encode()),
            "fractions.Fraction": lambda o: msgpack.ExtType(p.EXT_FRACTION, str(o).encode()),
            "uuid.UUID": lambda o: msgpack.ExtType(p.EXT_UUID, o.bytes),
        }
        self.decoders: Dict[int, Callable[[bytes], Any]] = {
            p.EXT_TUPLE: lambda d: tuple(self.unpack_nested(d)),
            p.EXT_SET: lambda d: set(self.unpack_nested(d)),
            p.EXT_FROZENSET: lambda d: frozenset(self.unpack_nested(d)),
            p.EXT_BIGINT: lambda d: int.from_bytes(d, "big", signed=True),
            p.EXT_COMPLEX: lambda d: complex(*_COMPLEX.unpack(d)),
            p.EXT_DATETIME: lambda d: datetime.datetime.fromisoformat(d.decode()),
            p.EXT_DATE: lambda d: datetime.date.fromisoformat(d.decode()),
            p.EXT_TIME: lambda d: datetime.time.fromisoformat(d.decode()),
            p.EXT_TIMEDELTA: lambda d: datetime.timedelta(*self.unpack_nested(d)),
            p.EXT_DECIMAL: lambda d: _module("decimal").Decimal(d.decode()),
            p.EXT_FRACTION: lambda d: _module("fractions").Fraction(d.decode()),
            p.EXT_UUID: lambda d: _module("uuid").UUID(bytes=d),
            p.EXT_PATH: self._decode_path,
            p.EXT_NDARRAY: decode_ndarray,
            p.EXT_NPSCALAR: decode_npscalar,
        }
        self.decoders.update(oob.decoders(self))  # dataplane: extension codes 30-34

    # -- encoding -----------------------------------------------------------------------------
    def default(self, obj: Any) -> Any:
        """msgpack ``default`` hook: by-value types first, then :meth:`fallback`."""
        encoder = self.encoders.get(type_key(type(obj)))
        if encoder is not None:
            return encoder(obj)
        if isinstance(obj, enum.Enum):
            return obj.value
        return self.fallback(obj)

    def fallback(self, obj: Any) -> Any:
        """What to send for an object that is not a value; the base class refuses."""
        raise TypeError(f"cannot send {type_key(type(obj))}")

    def pack_nested(self, obj: Any) -> bytes:
        return msgpack.packb(obj, default=self.default, strict_types=True, use_bin_type=True)

    def packer(self) -> msgpack.Packer:
        """A reusable packer with this codec's hooks (one per thread: packers are not shared)."""
        return msgpack.Packer(default=self.default, strict_types=True, use_bin_type=True)

    # -- decoding -----------------------------------------------------------------------------
    def ext_hook(self, code: int, data: bytes) -> Any:
        decoder = self.decoders.get(code)
        if decoder is None:
            raise ValueError(f"unknown extension type {code}")
        return decoder(data)

    def unpack_nested(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=False)

    def unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self.ext_hook, raw=False, strict_map_key=False)

    def _decode_path(self, data: bytes) -> Any:
        kind, text = self.unpack_nested(data)
        if kind not in PATH_KINDS:
            raise ValueError(f"unknown path kind {kind!r}")
        return getattr(_module("pathlib"), kind)(text)


def _module(name: str) -> Any:
    module = sys.modules.get(name)
    if module is None:
        module = __import__(name)
    return module


def encode_path(codec: ValueCodec, obj: Any) -> msgpack.ExtType:
    """A pathlib path as a value."""
    name = type(obj).__name__
    kind = name if name in PATH_KINDS else "PurePosixPath"
    return msgpack.ExtType(p.EXT_PATH, codec.pack_nested([kind, str(obj)]))


def is_path(obj: Any) -> bool:
    pathlib = sys.modules.get("pathlib")
    return pathlib is not None and isinstance(obj, pathlib.PurePath)


def numpy_kind(obj: Any) -> str:
    """``"ndarray"``, ``"scalar"`` or ``""`` for an object that numpy can send by value.

    ``"ndarray"`` also covers what the data plane sends out of band (arrays of any dtype but
    object, bytes-like buffers, Arrow and pandas data, resident data, CUDA tensors): all of it
    goes through :func:`encode_ndarray`.
    """
    if oob.kind(obj):
        return "ndarray"
    np = sys.modules.get("numpy")
    if np is None:
        return ""
    if isinstance(obj, np.generic) and not obj.dtype.hasobject and obj.dtype.fields is None:
        return "scalar" if type(obj).__module__ == "numpy" else ""
    return ""


def encode_ndarray(codec: ValueCodec, obj: Any) -> Any:
    """An array by value (small ones) or through shared memory; other out-of-band values
    (an extension value, or what the codec's fallback makes of a frame Arrow cannot hold)."""
    kind = oob.kind(obj)
    if kind != "array":
        return oob.encode(codec, obj, kind)
    ext = oob.encode_array(obj)
    if ext is not None:
        return ext
    np = sys.modules["numpy"]
    data = np.ascontiguousarray(obj).tobytes()
    description = oob.descr(obj.dtype)
    return msgpack.ExtType(p.EXT_NDARRAY, codec.pack_nested([description, list(obj.shape), data]))


def encode_npscalar(codec: ValueCodec, obj: Any) -> msgpack.ExtType:
    return msgpack.ExtType(p.EXT_NPSCALAR, codec.pack_nested([obj.dtype.str, obj.tobytes()]))


def decode_ndarray(data: bytes) -> Any:
    import numpy as np

    description, shape, raw = msgpack.unpackb(data, raw=False)
    dtype = oob.dtype_from(description)
    return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)


def decode_npscalar(data: bytes) -> Any:
    import numpy as np

    dtype, raw = msgpack.unpackb(data, raw=False)
    return np.frombuffer(raw, dtype=np.dtype(dtype))[0]
