"""Large arrays and buffers through Ray's object store (ray #15, docs/ray.md).

In a Ray pool, a numpy array, bytes-like buffer or Arrow IPC stream (Arrow and pandas data) at
or above the data-plane threshold does not travel in the frame nor through shared memory: the
sender puts it in Ray's object store and the frame carries extension 35, ``[tag, meta, object
id, owner address, status, keeper]``. The receiver registers the reference with its Ray core
worker and reads the object from the node's object store (plasma): zero-copy, read-only.
``tag``/``meta`` are those of extension 30.

Nothing is unpickled on either side. Each sender puts a ``pickle.PickleBuffer`` over the
value's own bytes (``ray.put``: Ray copies them once into the object store, as it does an
actor's array result); Ray lays such an object out as a tiny pickle stream plus one out-of-band
buffer. The receiver does not deserialize the object: it reads the object's buffer table with
Ray's own parser (``split_buffer``/``unpack_pickle5_buffers``) and maps the one buffer, so a
worker can no more run code in the host this way than through shared memory; the headers and
the buffer are checked to lie inside the object first (Ray's parser trusts the lengths it
reads). Ray's ``RAW`` objects (plain bytes) are read as they are.

Lifetime: the sender holds the object (``keeper``) until the receiver has it mapped; a mapped
object stays in the store as long as a view of it lives. The host holds its objects as host
objects of the call (``keeper`` is the host id; the worker drops it after reading, and a lost
worker's calls drop theirs); the worker holds its objects as Refs of the call's session
(``keeper`` describes the Ref; the host releases it after reading).

Imports Ray only when a value crosses, in a process that is on Ray.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from typing import Any, List, Optional

import msgpack

from snakebridge_worker import hostrefs, oob
from snakebridge_worker import protocol as p

GET_TIMEOUT_MS = 60_000
"""How long a receiver waits for an object to be readable (a remote node's object is fetched)."""


class Held:
    """An object-store object the worker holds for the host until the host has read it."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref


def _ray() -> Any:
    return importlib.import_module("ray")


def _core_worker() -> Any:
    worker = _ray()._private.worker.global_worker
    worker.check_connected()
    return worker.core_worker


def export_ref(ref: Any) -> List[Any]:
    """``[object id, owner address, status]``: what another Ray process needs to read ``ref``."""
    _, owner, status = _core_worker().serialize_object_ref(ref)
    return [ref.binary(), owner, status]


def import_ref(binary: Any, owner: Any, status: Any) -> Any:
    """The ObjectRef :func:`export_ref` described, registered with this process's core worker."""
    ray = _ray()

    if not (isinstance(binary, bytes) and isinstance(owner, bytes) and isinstance(status, bytes)):
        raise ValueError("malformed object-store descriptor")
    ref = ray.ObjectRef(binary, owner, "")
    _core_worker().deserialize_and_register_object_ref(binary, ray.ObjectRef.nil(), owner, status)
    return ref


def raw_view(ref: Any) -> memoryview:
    """The bytes of an object :func:`put_bytes` made, read-only, mapped from the object store
    (no copy, and nothing deserialized: an object that is not one flat buffer is refused)."""
    [(data, metadata, *_)] = _core_worker().get_objects([ref], GET_TIMEOUT_MS)
    if data is None:
        raise ValueError("an object-store value could not be read (lost or not ready)")
    if metadata == b"RAW":
        return memoryview(data).toreadonly()
    if metadata != b"PYTHON":
        raise ValueError(f"an object-store value is not a buffer (metadata {metadata!r:.40})")
    return _one_buffer(data)


def _one_buffer(data: Any) -> memoryview:
    """The one out-of-band buffer of a pickle-5 object's bytes ``data``, without unpickling.

    Ray's parser of the buffer table trusts the offsets and lengths it reads, and the sender
    wrote them: its headers are checked to lie inside ``data`` before it runs, and the buffer
    it finds after (numpy gives the addresses: Ray depends on numpy).
    """
    import numpy as np

    whole = np.frombuffer(data, dtype=np.uint8)
    raylet = importlib.import_module("ray._raylet")
    try:
        _, pickled = raylet.split_buffer(data)  # a slice of ``data`` (clamped to it)
    except (AssertionError, IndexError, TypeError) as exc:  # Ray asserts on a short object
        raise ValueError(f"an object-store value is malformed ({type(exc).__name__})") from None
    table = np.frombuffer(pickled, dtype=np.uint8) if memoryview(pickled).nbytes else whole[:0]
    inband_size, meta_size = _int64(table, 0), _int64(table, 8)
    if 16 + inband_size + meta_size > table.nbytes:
        raise ValueError("an object-store value's headers run past its end")
    try:
        _, buffers = raylet.unpack_pickle5_buffers(pickled)  # the table; nothing unpickled
    except Exception as exc:  # a protobuf that does not parse, and the like
        raise ValueError(f"an object-store value is malformed ({type(exc).__name__})") from None
    if len(buffers) != 1:
        raise ValueError(f"an object-store value holds {len(buffers)} buffers, not one")
    view = memoryview(buffers[0])
    if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
        raise ValueError("an object-store value is not a flat byte buffer")
    if view.nbytes:
        part = np.frombuffer(view, dtype=np.uint8)
        start = part.ctypes.data - whole.ctypes.data
        if part.nbytes != view.nbytes or start < 0 or start + part.nbytes > whole.nbytes:
            raise ValueError("an object-store value's buffer lies outside the object")
    return view.toreadonly()


def _int64(whole: Any, at: int) -> int:
    if at < 0 or at + 8 > whole.nbytes:
        raise ValueError("an object-store value is too short for its headers")
    size = int.from_bytes(whole[at : at + 8].tobytes(), "little", signed=True)
    if size < 0:
        raise ValueError("an object-store value has a negative size in its headers")
    return size


def put_bytes(data: Any) -> Any:
    """Put the bytes of array or buffer ``data`` (C order) in the object store: one copy, made
    by Ray into the object (no copy before it when ``data`` is contiguous); its ObjectRef."""
    return _ray().put(pickle.PickleBuffer(as_bytes_array(data)))


def as_bytes_array(data: Any) -> Any:
    """Array or buffer ``data`` as flat bytes in C order (no copy when contiguous)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(data, np.ndarray):
        contiguous = data if data.flags.c_contiguous else np.ascontiguousarray(data)
        return contiguous.reshape(-1).view(np.uint8)
    view = memoryview(data)
    return view if view.c_contiguous and view.format == "B" and view.ndim == 1 else view.cast("B")


def rebuild(tag: str, meta: Any, view: memoryview) -> Any:
    """The value extension 30's ``tag``/``meta`` describe over the read-only bytes ``view``."""
    return oob.buffer_value(tag, meta, view, False)


def descriptor(tag: str, meta: Any, ref: Any, keeper: Any) -> msgpack.ExtType:
    payload = [tag, meta, *export_ref(ref), keeper]
    return msgpack.ExtType(p.EXT_STORE, msgpack.packb(payload, use_bin_type=True))


def parse(data: bytes) -> List[Any]:
    """``[tag, meta, ObjectRef, keeper]`` of an extension-35 payload."""
    fields = msgpack.unpackb(data, raw=False)
    if not (isinstance(fields, list) and len(fields) == 6 and isinstance(fields[0], str)):
        raise ValueError("malformed object-store descriptor")
    tag, meta, binary, owner, status, keeper = fields
    return [tag, meta, import_ref(binary, owner, status), keeper]


class WorkerStore:
    """The worker's side, in a Ray actor: puts a value's bytes, reads what the host put."""

    def __init__(self, codec: Any, threshold: int) -> None:
        self.codec = codec  # the worker's codec: its registry and the session answered now
        self.threshold = max(1, int(threshold))

    def encode(self, tag: str, meta: Any, data: Any) -> msgpack.ExtType:
        ref = put_bytes(data)  # the one copy, by Ray, straight from the value's memory
        keeper = msgpack.unpackb(self.codec.as_ref(Held(ref)).data)  # a Ref of this session
        return descriptor(tag, meta, ref, keeper)

    def decode(self, codec: Any, data: bytes) -> Any:
        tag, meta, ref, keeper = parse(data)
        try:
            view = raw_view(ref)
        finally:
            if type(keeper) is int:
                hostrefs.RELEASED.append(keeper)  # the host may drop its hold: we have it mapped
        return rebuild(tag, meta, view)


_INSTALLED: Optional[WorkerStore] = None


def install_worker(codec: Any, options: Any) -> Optional[WorkerStore]:
    """In a Ray actor: large values go through the object store (INIT option ``ray_store``)."""
    global _INSTALLED
    if not isinstance(options, dict):
        return None
    store = WorkerStore(codec, int(options.get("threshold", 0)))
    _INSTALLED = store
    oob.STORE = lambda: _INSTALLED
    oob.STORE_DECODE = store.decode
    return store
