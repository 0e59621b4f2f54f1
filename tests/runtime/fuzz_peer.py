"""A fake worker for test_fuzz.py: a real handshake, then seeded random and garbage frames.

The pool starts it as its interpreter (``fake -I -u -c BOOT <dir> <fd> <host-pid>``; the
shebang line of a generated script runs this file). Each CALL carries ``[seed]`` in its
arguments: the answer is a burst of well-formed frames with random contents (host callback
requests and callback releases, which the host serves and keeps reading past) followed by one
final frame — a valid result, or one of the garbage :data:`MODES` from the frame grammar. A
line per call (seed, frames sent, mode) goes to ``$FUZZ_LOG``. PINGs get garbage PONGs too.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import msgpack

from snakebridge_worker import protocol as p

HEADER = struct.Struct(">I")
ExtType = msgpack.ExtType
Final = tuple[bytes, bool]  # (bytes to send, exit afterwards)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def framed(obj: Any) -> bytes:
    return p.frame(pack(obj))


# -- random well-formed values (what a real worker may send) ---------------------------------
def _leaf(rng: random.Random) -> Any:
    pick = rng.randrange(16)
    if pick == 0:
        return rng.randrange(-(2**63), 2**64)
    if pick == 1:
        return ExtType(p.EXT_BIGINT, rng.randbytes(rng.randrange(9, 40)))
    if pick == 2:
        return rng.random() * 10 ** rng.randrange(-300, 300)
    if pick == 3:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(12)))
    if pick == 4:
        return rng.randbytes(rng.randrange(24))
    if pick == 5:
        return rng.choice([None, True, False, float("nan"), float("inf")])
    if pick == 6:
        return ExtType(p.EXT_COMPLEX, struct.pack(">dd", rng.random(), -rng.random()))
    if pick == 7:
        return ExtType(p.EXT_DATETIME, b"2024-02-29T12:34:56.789+05:30")
    if pick == 8:
        return ExtType(p.EXT_DATE, b"1999-12-31")
    if pick == 9:
        return ExtType(p.EXT_TIME, b"23:59:59.999999")
    if pick == 10:
        return ExtType(p.EXT_TIMEDELTA, pack([rng.randrange(-999, 999), 5, 6]))
    if pick == 11:
        return ExtType(p.EXT_DECIMAL, rng.choice([b"1.50", b"-0", b"NaN", b"1E+999", b"Infinity"]))
    if pick == 12:
        return ExtType(p.EXT_FRACTION, f"{rng.randrange(-99, 99)}/{rng.randrange(1, 99)}".encode())
    if pick == 13:
        return ExtType(p.EXT_UUID, uuid.UUID(int=rng.getrandbits(128)).bytes)
    if pick == 14:
        return ExtType(p.EXT_PATH, pack([rng.choice(["PurePosixPath", "PosixPath"]), "/a/b"]))
    return ExtType(p.EXT_REF, pack([rng.randrange(1, 2**31), "fuzz.module", "Thing"]))


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random value the host can decode: leaves, lists, maps, tuples, sets, frozensets."""
    if depth >= 3 or rng.random() < 0.45:
        return _leaf(rng)
    width = rng.randrange(5)
    kind = rng.randrange(5)
    if kind == 0:
        return [value(rng, depth + 1) for _ in range(width)]
    if kind == 1:
        return {f"k{i}": value(rng, depth + 1) for i in range(width)}
    if kind == 2:
        return ExtType(p.EXT_TUPLE, pack([value(rng, depth + 1) for _ in range(width)]))
    scalars = [rng.randrange(1000) for _ in range(width)] + ["s" * rng.randrange(3)]
    return ExtType(p.EXT_SET if kind == 3 else p.EXT_FROZENSET, pack(scalars))


def noise(rng: random.Random, callbacks: list[int], call_id: int) -> bytes:
    """One frame the host must serve and read past: a callback request or release."""
    if rng.random() < 0.75:
        ids = [rng.randrange(0, 2**62) for _ in range(rng.randrange(6))]
        return framed([p.CALLBACK_RELEASE, 0, ids])
    target = rng.choice(callbacks) if callbacks and rng.random() < 0.7 else rng.randrange(2**40)
    args = [value(rng) for _ in range(rng.randrange(4))]
    kwargs = {f"a{i}": value(rng) for i in range(rng.randrange(3))} if rng.random() < 0.5 else None
    return framed([p.CALLBACK, target, args, kwargs, call_id, rng.randrange(2**31)])


# -- the garbage modes of the final frame -----------------------------------------------------
def _nested_ext(code: int, depth: int) -> Any:
    inner: Any = ExtType(code, pack([]))
    for _ in range(depth):
        inner = ExtType(code, pack([inner]))
    return inner


def _result(call_id: int, payload: Any) -> Final:
    return framed([p.RESULT, call_id, payload]), False


def _body(body: bytes) -> Final:
    return p.frame(body), False


def _mutate(rng: random.Random, call_id: int) -> bytes:
    body = bytearray(pack([p.RESULT, call_id, value(rng)]))
    for _ in range(rng.randrange(1, 4)):
        body[rng.randrange(len(body))] = rng.randrange(256)
    return bytes(body)


def _error(call_id: int, payload: Any) -> Final:
    return framed([p.ERROR, call_id, payload]), False


Mode = Callable[[random.Random, int], Final]
MODES: dict[str, Mode] = {
    # framing
    "huge length": lambda r, c: (HEADER.pack(0xFFFFFFFF) + b"\x93", False),
    "over max_frame": lambda r, c: (HEADER.pack(p.DEFAULT_MAX_FRAME + 1), False),
    "truncated frame then exit": lambda r, c: (framed([p.RESULT, c, "x" * 100])[:-40], True),
    "empty body": lambda r, c: _body(b""),
    "random bytes": lambda r, c: _body(r.randbytes(r.randrange(1, 64))),
    "truncated msgpack": lambda r, c: _body(pack([p.RESULT, c, [1, 2, "three"]])[:-3]),
    "extra data": lambda r, c: _body(pack([p.RESULT, c, 1]) + b"\x00"),
    "reserved byte 0xc1": lambda r, c: _body(b"\x93\x03\x01\xc1"),
    "mutated bytes": lambda r, c: _body(_mutate(r, c)),
    # frame shape
    "not a list": lambda r, c: _body(pack(r.choice([5, "x", {"a": 1}, None, b"b", 1.5]))),
    "too short": lambda r, c: _body(pack(r.choice([[], [p.RESULT], [p.RESULT, c]]))),
    "kind of wrong type": lambda r, c: _body(pack([r.choice(["3", 3.0, None, True, [3]]), c, 1])),
    "unknown kind": lambda r, c: _body(pack([r.choice([99, -1, 2**40, 2**64 - 1]), c, 1])),
    "wrong direction": lambda r, c: _body(
        pack([r.choice([p.HELLO, p.INIT, p.CALL, p.CHUNK, p.STREAM_END, p.PING]), c, {}])
    ),
    "id of wrong type": lambda r, c: _body(
        pack([p.RESULT, r.choice([str(c), None, c + 0.5, [c], True]), 1])
    ),
    "stale id": lambda r, c: _result(c - 1, 1),
    "future id": lambda r, c: _result(c + 1000, 1),
    "result too long": lambda r, c: _body(pack([p.RESULT, c, 1, 2, 3])),
    # msgpack edge cases
    "huge declared array": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\xdd\xff\xff\xff\xff"),
    "huge declared str": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\xdb\xff\xff\xff\xff"),
    "deep plain lists": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\x91" * 5000 + b"\xc0"),
    "invalid utf-8": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\xa2\xff\xfe"),
    "list as map key": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\x81\x91\x01\x02"),
    "tuple with list as map key": lambda r, c: _body(
        b"\x93\x03" + pack(c) + b"\x81" + pack(ExtType(p.EXT_TUPLE, pack([[1]]))) + b"\x02"
    ),
    "timestamp ext": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\xd6\xff\x00\x00\x00\x01"),
    "negative ext code": lambda r, c: _body(b"\x93\x03" + pack(c) + b"\xd4\xfb\x00"),
    # extension types
    "unknown ext code": lambda r, c: _result(c, ExtType(r.choice([0, 18, 99, 127]), b"x")),
    "tuple payload not msgpack": lambda r, c: _result(c, ExtType(p.EXT_TUPLE, b"\xc1")),
    "tuple payload not a list": lambda r, c: _result(c, ExtType(p.EXT_TUPLE, pack(5))),
    "set of unhashables": lambda r, c: _result(c, ExtType(p.EXT_SET, pack([[1], {"a": 2}]))),
    "frozenset payload a map": lambda r, c: _result(c, ExtType(p.EXT_FROZENSET, pack({"a": 1}))),
    "complex of wrong size": lambda r, c: _result(c, ExtType(p.EXT_COMPLEX, b"abc")),
    "bad datetime": lambda r, c: _result(
        c, ExtType(r.choice([p.EXT_DATETIME, p.EXT_DATE, p.EXT_TIME]), r.choice([b"\xff", b"x"]))
    ),
    "bad timedelta": lambda r, c: _result(
        c, ExtType(p.EXT_TIMEDELTA, pack(r.choice([["a"], [10**12], "x", 5, [1, 2, 3, 4]])))
    ),
    "bad decimal": lambda r, c: _result(c, ExtType(p.EXT_DECIMAL, r.choice([b"abc", b"\xff"]))),
    "bad fraction": lambda r, c: _result(c, ExtType(p.EXT_FRACTION, r.choice([b"1/0", b"x"]))),
    "bad uuid": lambda r, c: _result(c, ExtType(p.EXT_UUID, b"short")),
    "bad path": lambda r, c: _result(
        c, ExtType(p.EXT_PATH, pack(r.choice([["EvilPath", "/"], 5, ["PosixPath", 5], []])))
    ),
    "bad ref": lambda r, c: _result(
        c,
        ExtType(
            p.EXT_REF,
            pack(r.choice([5, [1], ["a", "b", "c"], [1, 2, 3, 4], [1, "m", "q", ["a"], 5], None])),
        ),
    ),
    "bad ndarray": lambda r, c: _result(
        c,
        ExtType(
            p.EXT_NDARRAY,
            pack(
                r.choice(
                    [
                        ["zz", [1], b""],
                        ["<f8", [3], b"12"],
                        ["|O", [1], b"\0" * 8],
                        ["<f8", [-1], b""],
                        ["<f8", "x", b""],
                        5,
                    ]
                )
            ),
        ),
    ),
    "bad numpy scalar": lambda r, c: _result(
        c, ExtType(p.EXT_NPSCALAR, pack(r.choice([["<f8", b""], ["|O", b"\0" * 8], [1, 2], 5])))
    ),
    "callback ext from the worker": lambda r, c: _result(c, ExtType(p.EXT_CALLBACK, pack(1))),
    "nested tuple bomb": lambda r, c: _result(
        c, _nested_ext(r.choice([p.EXT_TUPLE, p.EXT_SET, p.EXT_FROZENSET]), r.randrange(200, 3000))
    ),
    "wide tuple bomb": lambda r, c: _result(
        c, ExtType(p.EXT_TUPLE, pack([ExtType(p.EXT_TUPLE, pack([]))] * 20000))
    ),
    # answers with garbage payloads
    "error payload not a map": lambda r, c: _error(c, r.choice([5, "x", None, [1]])),
    "error payload of wrong types": lambda r, c: _error(
        c,
        {
            "kind": r.choice(["remote", 5, None, "decode", "protocol", "not_allowed", "symbol"]),
            "builtin": r.choice([["x"], 5, "MemoryError", "__import__", "KeyboardInterrupt"]),
            "message": r.choice([b"bytes", 5, None, "m"]),
            "type": r.choice([None, 7, "x.Y"]),
            "traceback": r.choice([5, None, "tb"]),
        },
    ),
    "error groups": lambda r, c: _error(
        c,
        {
            "kind": "remote",
            "builtin": r.choice(["ExceptionGroup", "BaseExceptionGroup"]),
            "message": "g",
            "exceptions": r.choice([[1, {"builtin": "ExceptionGroup"}], 5, [], [{}] * 3]),
        },
    ),
    "baseexception builtins": lambda r, c: _error(
        c,
        {
            "kind": "remote",
            "builtin": r.choice(["SystemExit", "KeyboardInterrupt", "GeneratorExit"]),
            "message": "stop",
        },
    ),
    "callback of wrong shape": lambda r, c: _body(
        pack(
            r.choice(
                [
                    [p.CALLBACK, 1, 5, None],
                    [p.CALLBACK, 1, [], 5],
                    [p.CALLBACK, "x", [], {}],
                    [p.CALLBACK, 1, [], {1: 2}],
                    [p.CALLBACK, 1, [], {}, c, 1, "extra"],
                    [p.CALLBACK, 1, [], {}, "c", 1],
                    [p.CALLBACK, 1, []],
                ]
            )
        )
    ),
    "callback release of wrong shape": lambda r, c: _body(
        pack([p.CALLBACK_RELEASE, 0, r.choice([5, [[1]], None, {"a": 1}, ["x"]])])
    ),
    "pong during a call": lambda r, c: _body(pack([p.PONG, c, {"rss": "lots"}])),
}
VALID_FINAL = "valid result"


def pong(rng: random.Random, ping_id: int) -> bytes:
    """The answer to a PING: valid stats or garbage."""
    choice = rng.randrange(9)
    if choice == 0:
        return framed([p.PONG, ping_id, {"rss": 1, "refs": 0, "calls": 0}])
    if choice == 1:
        return framed([p.PONG, ping_id, rng.choice([5, None, "x", [1]])])
    if choice == 2:
        return framed([p.PONG])
    if choice == 3:
        return framed([p.RESULT, ping_id, {}])
    if choice == 4:
        return p.frame(rng.randbytes(rng.randrange(1, 16)))
    if choice == 5:
        return framed([p.PONG, ping_id, {1: 2, "rss": ExtType(p.EXT_TUPLE, b"\xc1")}])
    if choice == 6:
        return framed([p.PONG, ping_id, ExtType(p.EXT_DECIMAL, b"nope")])
    if choice == 7:
        return framed([p.PONG, ping_id + 1, {"rss": 1}])
    return framed([p.PONG, ping_id, {"rss": ExtType(p.EXT_FRACTION, b"1/0")}])


def answer(seed: int, call_id: int, callbacks: list[int]) -> tuple[list[bytes], bool, str]:
    """(frames, exit afterwards, mode) for one CALL."""
    rng = random.Random(seed)
    frames = [noise(rng, callbacks, call_id) for _ in range(rng.randrange(150, 300))]
    if rng.random() < 0.4:
        frames.append(_result(call_id, value(rng))[0])
        return frames, False, VALID_FINAL
    skipped = set(os.environ.get("FUZZ_WITHOUT", "").split(","))  # to bisect by hand
    mode = rng.choice(sorted(set(MODES) - skipped))
    final, leave = MODES[mode](rng, call_id)
    frames.append(final)
    return frames, leave, mode


# -- the process --------------------------------------------------------------------------------
class _Reader:
    """Reads frames on a thread of its own, so the host's replies never back up while a
    burst is being sent (the host answers each callback request)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, bytearray()
        self.frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                self.buffer += chunk
                while len(self.buffer) >= 4:
                    (size,) = HEADER.unpack_from(self.buffer)
                    if len(self.buffer) < 4 + size:
                        break
                    self.frames.put(bytes(self.buffer[4 : 4 + size]))
                    del self.buffer[: 4 + size]
        except OSError:
            pass
        self.frames.put(None)

    def frame(self) -> bytes | None:
        return self.frames.get()


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[-2].split(",")[0]))
    log = os.open(os.environ["FUZZ_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    pings = random.Random(int(os.environ.get("FUZZ_SEED", "0")) ^ os.getpid())
    hello = {"protocol": p.PROTOCOL_VERSION, "python": "3.11.0", "pid": os.getpid()}
    sock.sendall(framed([p.HELLO, 0, hello]))
    reader = _Reader(sock)
    if reader.frame() is None:  # INIT
        return
    while True:
        body = reader.frame()
        if body is None:
            return
        callbacks: list[int] = []

        def hook(code: int, data: bytes, callbacks: list[int] = callbacks) -> Any:
            if code == p.EXT_CALLBACK:
                callbacks.append(msgpack.unpackb(data))
            return None

        message = msgpack.unpackb(body, ext_hook=hook, raw=False, strict_map_key=False)
        kind = message[0]
        if kind == p.CALL and message[9] == {"echo": True}:  # the pool still works
            sock.sendall(framed([p.RESULT, message[1], message[8][0]]))
        elif kind == p.CALL:
            seed = message[8][0]
            frames, leave, mode = answer(seed, message[1], callbacks)
            os.write(log, f"{seed} {len(frames)} {mode}\n".encode())
            sock.sendall(b"".join(frames))
            if leave:
                return
        elif kind == p.PING:
            os.write(log, b"ping 1 pong\n")
            sock.sendall(pong(pings, message[1]))
        elif kind == p.SHUTDOWN:
            return


if __name__ == "__main__":
    with contextlib.suppress(OSError):  # the host closed the connection: it gave up on us
        main()
