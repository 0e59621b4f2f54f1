"""Frame kinds, extension codes and framing shared by host and worker (see docs/protocol.md).

A frame is a 4-byte big-endian unsigned length followed by that many bytes of one msgpack
array whose first two items are ``kind`` and ``call_id``.
"""

from __future__ import annotations

import struct

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 256 * 1024 * 1024
HEADER = struct.Struct(">I")

# Frame kinds. Host → worker: INIT, CALL, RELEASE, RELEASE_SESSION, CANCEL, PING, SHUTDOWN,
# CALLBACK_RESULT, CALLBACK_ERROR, CREDIT, LANE. Worker → host: HELLO, RESULT, ERROR, CHUNK,
# STREAM_END, CALLBACK, PONG, CALLBACK_RELEASE.
HELLO = 0
INIT = 1
CALL = 2
RESULT = 3
ERROR = 4
RELEASE = 5
RELEASE_SESSION = 6
CANCEL = 7
CHUNK = 8
STREAM_END = 9
CREDIT = 10
CALLBACK = 11
CALLBACK_RESULT = 12
CALLBACK_ERROR = 13
PING = 14
PONG = 15
SHUTDOWN = 16
CALLBACK_RELEASE = 17
LANE = 18  # [LANE, number]: take the next descriptor(s) on the lane channel as answer lane
# ``number`` (and, with the first lane, the running-call slot); a CALL may then carry an 11th
# item, a lane number: its answer and host callbacks go on that lane (docs/protocol.md)


# CALL operations.
OP_CALL = "call"  # subject(*args, **kwargs)
OP_GET = "get"  # subject
OP_GETATTR = "getattr"  # getattr(subject, args[0])
OP_SETATTR = "setattr"  # setattr(subject, args[0], args[1])
OP_DELATTR = "delattr"  # delattr(subject, args[0])
OP_METHOD = "method"  # getattr(subject, args[0])(*args[1:], **kwargs)
OP_OPERATOR = "operator"  # operator.<qualname>(*args)
OP_BUILTIN = "builtin"  # <qualname>(subject, *args) for a fixed set of builtins
OP_NEXT_BATCH = "next_batch"  # [up to args[0] items of iterator subject, exhausted?]
OP_TYPE_MRO = "type_mro"  # qualified names of type(subject).__mro__
OP_EXIT = "exit"  # subject.__exit__(*args[0] as (builtin name, message) or None)
OP_ITER = "iter"  # [True, None] if iter(subject) is subject, else [False, Ref to iter(subject)]

# CALL flags (bit field).
FLAG_PATH_VALUES = 1  # return pathlib paths by value
FLAG_STREAM = 2  # answer with CHUNK frames and STREAM_END
FLAG_NESTED = 4  # sent from inside a host callback of the running call: run it at once

# Extension type codes.
EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_BIGINT = 4
EXT_COMPLEX = 5
EXT_DATETIME = 6
EXT_DATE = 7
EXT_TIME = 8
EXT_TIMEDELTA = 9
EXT_DECIMAL = 10
EXT_FRACTION = 11
EXT_UUID = 12
EXT_PATH = 13
EXT_REF = 14
EXT_NDARRAY = 15
EXT_NPSCALAR = 16
EXT_CALLBACK = 17
EXT_SHM = 18
# Values helper (#11): 19-29. Composites are arrays headed by a zero-length ext of the code.
EXT_NAME = 19  # composite [module, qualname, fallback]: resolved by name in the worker
EXT_BUILD = 20  # composite [kind, *fields]: range, slice, OrderedDict, deque, dtype, ...
EXT_ELLIPSIS = 21  # flat, empty: Ellipsis
EXT_BYTEARRAY = 22  # flat: the bytes of a bytearray
EXT_HOSTREF = 23  # composite [host object id, meta]: a host object by reference
EXT_INOUT = 24  # composite [array, host object id]: an array whose writes go back to the host
EXT_RECORDS = 25  # flat: a list of tuples of plain scalars, packed as plain arrays
EXT_METHOD = 26  # flat [ref id, name]: getattr(the Ref's object, name), a method sent as itself
EXT_HOSTCLASS = 27  # composite: a host exception class the worker cannot import (a stand-in)
# dataplane (issue 13, docs/dataplane.md): 30-34
EXT_BUFFER = 30  # numpy array / bytes / bytearray / memoryview / PickleBuffer, inline or in shm
EXT_ARROW = 31  # pyarrow Table / RecordBatch / Array / ChunkedArray as an Arrow IPC stream
EXT_PANDAS = 32  # pandas DataFrame / Series via Arrow
EXT_SHARED = 33  # resident data placed by snakebridge.share
EXT_CUDA = 34  # CUDA tensor by IPC handle
EXT_STORE = 35  # ray (#15): an array or buffer in Ray's object store, by ObjectRef

# ERROR kinds.
ERR_REMOTE = "remote"
ERR_SYMBOL = "symbol"
ERR_REF = "ref"
ERR_DECODE = "decode"
ERR_PROTOCOL = "protocol"
ERR_NOT_ALLOWED = "not_allowed"  # security: the allowlist refused a library, module or name


# The running-call slot (answer lanes, see snakebridge_worker.lanes): shared bytes the worker
# writes and the host reads: the top-level call running (0: none; -1: not yet taken by the
# worker), when it started (time.monotonic_ns), how many calls ran, how many of them were short.
SLOT = struct.Struct("<qqqq")
SHORT_NS = 25_000  # a call that took the worker less than this is short


def frame(body: bytes) -> bytes:
    """Prefix ``body`` with its length."""
    return HEADER.pack(len(body)) + body
