"""Out-of-band values: arrays, buffers, Arrow and pandas data through shared memory.

Stdlib + msgpack only at import; numpy, pyarrow and pandas are imported only when a value of
theirs crosses. Extension codes (docs/protocol.md): 30 buffer (numpy array, bytes, bytearray,
memoryview, PickleBuffer), 31 Arrow IPC stream, 32 pandas via Arrow, 33 resident (shared)
data, 34 CUDA tensor by IPC handle. A payload's ``where`` is either the bytes themselves (small
values, or no shared memory) or ``[segment, generation, offset, nbytes]``.

(Over 350 lines on purpose: one module per side of the wire owns every out-of-band kind, so
their descriptors are checked by the same code in host and worker.)
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgpack

from snakebridge_worker import pdvalues, shm
from snakebridge_worker import protocol as p

_BUFFER_TYPES = {"builtins.bytes": "b", "builtins.bytearray": "ba", "builtins.memoryview": "mv"}
_ARROW_TYPES = {
    "pyarrow.lib.Table": "table",
    "pyarrow.lib.RecordBatch": "batch",
    "pyarrow.lib.ChunkedArray": "chunked",
}
_COLUMN = "__sb_series__"


# ray (#15): an object store (Ray's) that large arrays and buffers go through instead of shared
# memory. ``STORE()`` is the store for what is encoded now (None: shared memory, as without Ray);
# ``STORE_DECODE(codec, data)`` reads extension 35. Both are set by the Ray side only
# (snakebridge_worker/ray_store.py in an actor, snakebridge/runtime/ray_transport.py on the host).
def _no_store() -> Any:
    return None


STORE: Callable[[], Any] = _no_store
STORE_DECODE: Optional[Callable[[Any, bytes], Any]] = None


def _key(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def kind(obj: Any) -> str:
    """What travels out of band: "array", "buffer", "arrow", "pandas", "shared", "cuda" or ""."""
    cls = type(obj)
    module = cls.__module__
    np = sys.modules.get("numpy")
    if np is not None and cls is np.ndarray:
        return "array" if not obj.dtype.hasobject else ""
    if module == "builtins" or module == "pickle":
        if _key(obj) in _BUFFER_TYPES or cls.__name__ == "PickleBuffer":
            return "buffer"
        return ""
    if getattr(cls, "_sb_shared", False):
        return "shared"
    if module.startswith("pyarrow") and (_key(obj) in _ARROW_TYPES or _is_arrow_array(obj)):
        return "arrow" if _peer_has(0) else ""  # a receiver without pyarrow: by reference
    if module.startswith("pandas") and cls.__name__ in ("DataFrame", "Series"):
        return "pandas" if _peer_has(1) else ""  # via Arrow or by value; no pandas: a ref
    if hasattr(cls, "__dlpack_device__") and _on_cuda(obj):
        return "cuda"
    return ""


_has = pdvalues.has_module

_CAPABILITIES: Dict[str, bool] = {}


def capabilities() -> Dict[str, bool]:
    """What this process can rebuild: ``{"arrow": pyarrow, "pandas": pandas}`` importable.

    The host sends its own in INIT, a worker its own in HELLO (``data``): each side sends a
    DataFrame through Arrow only when both have pyarrow, by value when the other side has
    pandas but no pyarrow, and by reference when it has no pandas.
    """
    if not _CAPABILITIES:
        _CAPABILITIES.update(arrow=_has("pyarrow"), pandas=_has("pandas"))
    return dict(_CAPABILITIES)


def peer() -> Optional[Tuple[bool, bool]]:
    """(pyarrow, pandas) of the process this one sends to; None when not known yet.

    A worker's peer is its host (from INIT). The host asks ``CONFIG.peer_source`` (installed by
    the host's data plane: the workers of the pool a call goes to), which knows once a worker
    of that pool has said HELLO.
    """
    config = shm.CONFIG
    source = config.peer_source
    if source is None:
        return config.peer_arrow, config.peer_pandas
    return source()


def _peer_has(which: int) -> bool:
    """Whether the peer has pyarrow (0) or pandas (1); assumed yes while unknown (a host whose
    pool has not started: a DataFrame then goes by value, which needs no pyarrow there)."""
    found = peer()
    return True if found is None else found[which]


def _is_arrow_array(obj: Any) -> bool:
    pa = sys.modules.get("pyarrow")
    return pa is not None and isinstance(obj, pa.Array)


def _on_cuda(obj: Any) -> bool:
    try:
        return int(obj.__dlpack_device__()[0]) in (2, 3)  # kDLCUDA, kDLCUDAHost
    except Exception:
        return False


def encode(codec: Any, obj: Any, kind_: str) -> Any:
    """The extension value for ``obj`` of ``kind_`` (see :func:`kind`)."""
    if kind_ == "buffer":
        return encode_buffer(obj)
    if kind_ == "arrow":
        return _encode_arrow(obj)
    if kind_ == "pandas":
        found = peer()
        arrow = found is not None and found[0] and _has("pyarrow")  # both sides have pyarrow
        if arrow and not pdvalues.plain(obj):  # numpy-typed columns are faster by value
            try:
                return _encode_pandas(codec, obj)
            except Exception:  # not representable in Arrow (mixed objects, MultiIndex columns…)
                pass
        body = pdvalues.encode(codec, obj, found is None or found[0])  # NotByValue: not exact
        return msgpack.ExtType(p.EXT_PANDAS, msgpack.packb(["v", body], use_bin_type=True))
    if kind_ == "shared":
        return msgpack.ExtType(p.EXT_SHARED, msgpack.packb(obj._sb_descriptor()))
    if kind_ == "cuda":
        from snakebridge_worker import cuda

        return msgpack.ExtType(p.EXT_CUDA, msgpack.packb(cuda.export(obj), use_bin_type=True))
    raise TypeError(f"cannot send {_key(obj)} out of band")


def wants_segment(nbytes: int) -> bool:
    """Whether ``nbytes`` go through shared memory (0 or more than the threshold; -1: never)
    or through the object store of a Ray pool (:data:`STORE`)."""
    store = STORE()
    if store is not None and nbytes >= store.threshold:
        return True
    return _shm_wanted(nbytes)


def _shm_wanted(nbytes: int) -> bool:
    if not shm.CONFIG.enabled or nbytes <= 0:
        return False
    limit = shm.CONFIG.limit()
    return 0 <= limit <= nbytes


def _place(source: Any, nbytes: int) -> List[Any]:
    """Copy a C-contiguous buffer into a pooled segment; the descriptor's ``where``."""
    segment = shm.POOL.acquire(nbytes)
    view = segment.data(nbytes)
    try:
        view[:] = source
    finally:
        view.release()
    return [segment.name, segment.generation, 0, nbytes]


def encode_array(obj: Any) -> Optional[msgpack.ExtType]:
    """A numpy array through a segment when it is large enough, else None (send it by value)."""
    store = STORE()
    if store is not None and obj.nbytes >= store.threshold:
        return store.encode("nd", [descr(obj.dtype), list(obj.shape), None], obj)  # type: ignore[no-any-return]
    if not _shm_wanted(obj.nbytes):
        return None

    segment = shm.POOL.acquire(obj.nbytes)
    view = segment.data(obj.nbytes)
    try:
        copy_into(view, obj)
    finally:
        view.release()
    meta = [descr(obj.dtype), list(obj.shape), None]
    where = [segment.name, segment.generation, 0, obj.nbytes]
    return msgpack.ExtType(p.EXT_BUFFER, msgpack.packb(["nd", meta, where], use_bin_type=True))


def copy_into(view: memoryview, obj: Any) -> None:
    """Copy array ``obj`` into ``view`` in C order, once (padding bytes too when contiguous)."""
    import numpy as np

    if obj.flags.c_contiguous:
        np.frombuffer(view, dtype=np.uint8)[:] = obj.reshape(-1).view(np.uint8)
        return
    target = np.frombuffer(view, dtype=obj.dtype, count=obj.size).reshape(obj.shape)
    np.copyto(target, obj, casting="no")


def descr(dtype: Any) -> Any:
    """A msgpack-able description of any numpy dtype without objects (structured ones too)."""
    if dtype.fields is None and dtype.subdtype is None:
        return dtype.str
    import numpy as np

    return _lists(np.lib.format.dtype_to_descr(dtype))


def _lists(description: Any) -> Any:
    if isinstance(description, (list, tuple)):
        return [_lists(item) for item in description]
    return description


def dtype_from(description: Any) -> Any:
    import numpy as np

    try:
        if isinstance(description, str):
            dtype = np.dtype(description)
        else:
            dtype = np.lib.format.descr_to_dtype(_tuples(description))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad dtype description {description!r:.80}: {exc}") from None
    if dtype.hasobject:
        raise ValueError("arrays of Python objects do not travel by value")
    return dtype


def _tuples(description: Any) -> Any:
    if isinstance(description, list):
        return [
            tuple(_tuples(x) for x in item) if isinstance(item, list) else item
            for item in description
        ]
    return description


def encode_buffer(obj: Any, as_bytes: bool = False) -> msgpack.ExtType:
    """bytes, bytearray, memoryview or PickleBuffer: through a segment when large enough
    (``as_bytes``: a memoryview arrives as bytes, as it does by value)."""
    if type(obj).__name__ == "PickleBuffer":
        tag, data = "pb", obj.raw()
    elif as_bytes and isinstance(obj, memoryview):
        tag, data = "b", _flat(obj)
    else:
        tag = _BUFFER_TYPES[_key(obj)]
        data = obj if tag != "mv" else _flat(obj)
    nbytes = data.nbytes if isinstance(data, memoryview) else len(data)
    meta = [obj.format, list(obj.shape)] if tag == "mv" else None
    store = STORE()
    if store is not None and nbytes >= store.threshold:
        return store.encode(tag, meta, data)  # type: ignore[no-any-return]
    where: Any = _place(data, nbytes) if wants_segment(nbytes) else bytes(data)
    return msgpack.ExtType(p.EXT_BUFFER, msgpack.packb([tag, meta, where], use_bin_type=True))


def _flat(view: memoryview) -> memoryview:
    """The bytes of a memoryview, flat (a copy only when it is not C-contiguous)."""
    try:
        return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    except TypeError:  # a format cast() does not take
        return memoryview(view.tobytes())


def _mapping(where: List[Any], readonly: bool) -> memoryview:
    """The bytes a ``[segment, generation, offset, nbytes]`` descriptor names, mapped."""
    if not (isinstance(where, list) and len(where) == 4):
        raise shm.ShmError("malformed shared-memory descriptor")
    name, generation, offset, nbytes = where
    if type(generation) is not int or generation <= 0:
        raise shm.ShmError("descriptor generation must be a positive integer")
    opened = shm.OPENED.get(name, shm.CONFIG.run)
    return opened.view(generation, offset, nbytes, readonly)


def _readonly() -> bool:
    """Received data is read-only on both sides: a write the sender would never see fails
    loudly instead of being dropped (DESIGN §9, Mutation); a copy is the receiver's own."""
    return True


def decode_shm(data: bytes) -> Any:
    """Extension 30: an array or buffer, inline or mapped from a segment."""
    tag, meta, where = msgpack.unpackb(data, raw=False)
    inline = isinstance(where, bytes)
    view = memoryview(where) if inline else _mapping(where, _readonly())
    return buffer_value(tag, meta, view, inline)


def buffer_value(tag: str, meta: Any, view: memoryview, inline: bool) -> Any:
    """The array or buffer ``tag``/``meta`` describe over ``view`` (``inline``: the frame's
    own bytes, copied; else a mapping, kept as the value's memory)."""
    if tag == "nd":
        return _array(meta, view, inline)
    if tag == "b":
        return bytes(view)
    if tag == "ba":
        return bytearray(view)
    if tag == "mv":
        fmt, shape = meta
        if inline:
            view = memoryview(bytearray(view))
            if _readonly():
                view = view.toreadonly()
        return view.cast("B").cast(fmt, shape) if shape != [view.nbytes] or fmt != "B" else view
    if tag == "pb":
        import pickle

        return pickle.PickleBuffer(view if not inline else bytearray(view))
    raise ValueError(f"unknown buffer kind {tag!r}")


def _array(meta: Any, view: memoryview, inline: bool) -> Any:
    """The array a descriptor's meta ``[dtype, shape, strides]`` describes over ``view``.

    Only C order is accepted (``strides`` null or the C strides): senders make arrays
    contiguous once, and the receiver never trusts strides to stay inside the buffer.
    """
    import numpy as np

    description, shape, strides = meta
    dtype = dtype_from(description)
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"bad array shape {shape!r:.80}")
    count = math.prod(shape)
    if count * dtype.itemsize != view.nbytes:
        raise ValueError(
            f"array of shape {shape} and dtype {dtype} does not fill its {view.nbytes} bytes"
        )
    if strides is not None and list(strides) != _c_strides(shape, dtype.itemsize):
        raise ValueError("only C-ordered arrays are accepted (strides must be the C strides)")
    if inline:
        view = memoryview(bytearray(view))
    return np.frombuffer(view, dtype=dtype, count=count).reshape(shape)


def _c_strides(shape: List[int], itemsize: int) -> List[int]:
    strides: List[int] = []
    step = itemsize
    for n in reversed(shape):
        strides.insert(0, step)
        step *= max(n, 1)
    return strides


# -- Arrow ------------------------------------------------------------------------------------
def _arrow_table(obj: Any) -> Any:
    """(kind, Table or RecordBatch) for any Arrow data object."""
    import pyarrow as pa

    arrow_kind = _ARROW_TYPES.get(_key(obj), "array")
    if arrow_kind == "array":
        return arrow_kind, pa.RecordBatch.from_arrays([obj], names=["a"])
    if arrow_kind == "chunked":
        return arrow_kind, pa.table({"a": obj})
    return arrow_kind, obj


def _ipc(data: Any) -> Any:
    """``where`` of an Arrow IPC stream holding ``data`` (a Table or RecordBatch): its bytes,
    a segment's ``[name, generation, offset, nbytes]``, or (a Ray pool, #15) extension 35."""
    import pyarrow as pa

    def write(sink: Any) -> None:
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write(data)

    mock = pa.MockOutputStream()
    write(mock)
    nbytes = mock.size()
    store = STORE()
    if store is not None and nbytes >= store.threshold:
        out = pa.BufferOutputStream()
        write(out)
        return store.encode("mv", ["B", [nbytes]], out.getvalue())
    if not _shm_wanted(nbytes):
        out = pa.BufferOutputStream()
        write(out)
        return out.getvalue().to_pybytes()
    segment = shm.POOL.acquire(nbytes)
    view = segment.data(nbytes)
    try:
        buffer = pa.py_buffer(view)
        sink = pa.FixedSizeBufferWriter(buffer)
        write(sink)
        sink.close()
        del sink, buffer
    finally:
        view.release()
    return [segment.name, segment.generation, 0, nbytes]


def _read_ipc(where: Any, codec: Any = None) -> Any:
    import pyarrow as pa

    if isinstance(where, bytes):
        source = pa.py_buffer(where)
    elif isinstance(where, msgpack.ExtType) and where.code == p.EXT_STORE:
        source = pa.py_buffer(_decode_store(codec, where.data))  # mapped from Ray's store
    else:
        source = pa.py_buffer(_mapping(where, True))
    return pa.ipc.open_stream(source).read_all()


def _encode_arrow(obj: Any) -> msgpack.ExtType:
    arrow_kind, data = _arrow_table(obj)
    return msgpack.ExtType(p.EXT_ARROW, msgpack.packb([arrow_kind, _ipc(data)], use_bin_type=True))


def decode_arrow(data: bytes, codec: Any = None) -> Any:
    """Extension 31: Arrow data, its buffers mapped from the segment (no copy)."""
    arrow_kind, where = msgpack.unpackb(data, raw=False)
    table = _read_ipc(where, codec)
    if arrow_kind == "table":
        return table
    if arrow_kind == "batch":
        batches = table.to_batches()
        if len(batches) == 1:
            return batches[0]
        import pyarrow as pa

        return pa.RecordBatch.from_pylist([], schema=table.schema)
    if arrow_kind == "chunked":
        return table.column(0)
    if arrow_kind == "array":
        column = table.column(0)
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    raise ValueError(f"unknown Arrow kind {arrow_kind!r}")


# -- pandas -----------------------------------------------------------------------------------
def _encode_pandas(codec: Any, obj: Any) -> msgpack.ExtType:
    import pandas as pd
    import pyarrow as pa

    series = isinstance(obj, pd.Series)
    frame = obj.to_frame(name=_COLUMN) if series else obj
    columns = frame.columns
    if isinstance(columns, pd.MultiIndex):
        raise TypeError("DataFrames with MultiIndex columns do not travel by value")
    labels = [obj.name] if series else list(columns)
    renamed = frame.set_axis([f"c{i}" for i in range(len(columns))], axis=1)
    table = pa.Table.from_pandas(renamed, preserve_index=None)
    freq = pdvalues.index_freq(obj.index)  # Arrow keeps the index, not its frequency
    header = codec.packer().pack([series, labels, columns.name, str(columns.dtype), freq])
    # (its own packer: the codec's is in the middle of packing the message this is part of)
    return msgpack.ExtType(p.EXT_PANDAS, msgpack.packb([header, _ipc(table)], use_bin_type=True))


def decode_pandas(codec: Any, data: bytes) -> Any:
    """Extension 32: a DataFrame or Series rebuilt from Arrow (or by value, pdvalues.py) with
    its labels and dtypes."""
    import pandas as pd

    header, where = msgpack.unpackb(data, raw=False)
    if header == "v":  # by value (one side has no pyarrow)
        return pdvalues.decode(codec, where)
    series, labels, name, dtype, freq = codec.unpack_nested(header)
    frame = _read_ipc(where, codec).to_pandas()
    if freq is not None:
        frame.index = pdvalues.with_freq(frame.index, freq)
    if series:
        result = frame.iloc[:, 0]
        result.name = labels[0]
        return result
    frame.columns = pd.Index(labels, name=name, dtype=dtype)
    return frame


# -- resident data ----------------------------------------------------------------------------
def decode_shared(data: bytes) -> Any:
    """Extension 33: resident data (``snakebridge.share``), mapped read-only, no copy."""
    shared_kind, meta, name, nbytes = msgpack.unpackb(data, raw=False)
    view = shm.OPENED.get(name, shm.CONFIG.run).view(0, 0, nbytes, True)
    return resident(shared_kind, meta, view)


def resident(shared_kind: str, meta: Any, view: memoryview) -> Any:
    """The array or Arrow data of resident bytes ``view``."""
    if shared_kind == "nd":
        return _array(meta, view, False)
    if shared_kind == "arrow":
        import pyarrow as pa

        table = pa.ipc.open_stream(pa.py_buffer(view)).read_all()
        return table if meta == "table" else table.column(0).combine_chunks()
    raise ValueError(f"unknown resident data kind {shared_kind!r}")


def decode_cuda(data: bytes) -> Any:
    """Extension 34: a CUDA tensor opened from its IPC handle (same device, no host copy)."""
    from snakebridge_worker import cuda

    return cuda.rebuild(msgpack.unpackb(data, raw=False))


def decoders(codec: Any) -> Any:
    """Extension decoders of the data plane, for a codec's ``decoders`` table."""
    return {
        p.EXT_BUFFER: decode_shm,
        p.EXT_ARROW: lambda data: decode_arrow(data, codec),
        p.EXT_PANDAS: lambda data: decode_pandas(codec, data),
        p.EXT_SHARED: decode_shared,
        p.EXT_CUDA: decode_cuda,
        p.EXT_STORE: lambda data: _decode_store(codec, data),
    }


def _decode_store(codec: Any, data: bytes) -> Any:
    """Extension 35: an array or buffer from Ray's object store (see :data:`STORE`)."""
    if STORE_DECODE is None:
        raise ValueError("a Ray object-store reference arrived in a process that is not on Ray")
    return STORE_DECODE(codec, data)
