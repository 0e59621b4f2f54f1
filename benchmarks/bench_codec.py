"""Codec speed: snakebridge's value codec against raw msgpack on the same data as plain lists.

Round trip = host encode, worker decode, worker encode, host decode, all in this process
(the codecs both ends run), against two raw ``packb``/``unpackb`` round trips; best of N in
CPU time, so neither the transport nor other load on the machine enters the figures. Also
shown: the old design (a Python callback and a fresh ``packb``/``unpackb`` per tuple), and
end-to-end calls that echo the data through a worker.

    python benchmarks/bench_codec.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import gc
import time
from collections.abc import Callable
from typing import Any

import msgpack

import snakebridge
from snakebridge.runtime.codec import HostCodec
from snakebridge_worker.records import lift
from snakebridge_worker.values import ValueCodec

N = 100_000


def best_ms(
    function: Callable[[], Any], repeat: int, clock: Callable[[], float] = time.process_time
) -> float:
    """Best of ``repeat`` runs in CPU time (the machine is shared), with the cyclic GC paused
    (it would charge whichever side happens to trigger a collection)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            started = clock()
            function()
            best = min(best, clock() - started)
        finally:
            gc.enable()
    return best * 1e3


def raw(value: Any) -> Any:
    return msgpack.unpackb(msgpack.packb(value), raw=False, strict_map_key=False)


def _old_default(obj: Any) -> Any:
    if type(obj) is tuple:
        return msgpack.ExtType(1, msgpack.packb(list(obj), default=_old_default, strict_types=True))
    raise TypeError(type(obj))


def _old_ext(code: int, data: bytes) -> Any:
    return tuple(msgpack.unpackb(data, ext_hook=_old_ext, raw=False))


def old(value: Any) -> Any:
    packed = msgpack.packb(value, default=_old_default, strict_types=True)
    return msgpack.unpackb(packed, ext_hook=_old_ext, raw=False)


def cases() -> list[tuple[str, Any, Any]]:
    """(name, value, the same data as plain msgpack types)."""
    ints = list(range(N))
    lists = [[i, i + 1, i + 2] for i in range(N)]
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5)
    return [
        ("100k ints", ints, ints),
        ("100k 3-lists", lists, lists),
        ("100k 3-tuples", [tuple(x) for x in lists], lists),
        ("set of 100k ints", set(ints), ints),
        (
            "10k dicts with a tuple",
            [{"a": i, "b": [i], "c": (i,)} for i in range(N // 10)],
            [{"a": i, "b": [i], "c": [i]} for i in range(N // 10)],
        ),
        ("10k datetimes", [moment + datetime.timedelta(seconds=i) for i in range(N // 10)], None),
        ("10k Decimals", [decimal.Decimal(i) / 7 for i in range(N // 10)], None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    host, worker = HostCodec(), ValueCodec()

    def ours(value: Any) -> Any:  # host → worker and back, as a call's arguments travel
        there = worker.unpack(host.pack(lift(value, 2)))
        return host.unpack(worker.pack(lift(there, 2)))

    def raw_both(value: Any) -> Any:
        return raw(raw(value))

    print(f"{'value':22} {'raw msgpack ms':>15} {'snakebridge ms':>15} {'ratio':>6}  notes")
    for name, value, plain in cases():
        assert ours(value) == value
        if plain is None:  # no plain twin: compare with the same shape as strings
            plain = [str(item) for item in value]
            note = "raw: as many short strings"
        else:
            note = ""
        base = best_ms(lambda plain=plain: raw_both(plain), repeat)
        mine = best_ms(lambda value=value: ours(value), repeat)
        if name == "100k 3-tuples":
            before = best_ms(lambda value=value: old(old(value)), max(2, repeat // 3))
            note = f"old codec {before:.0f} ms ({before / base:.1f}x)"
        print(f"{name:22} {base:15.1f} {mine:15.1f} {mine / base:6.2f}  {note}")

    print("\nend to end (wall clock), echoed by a worker (copy.copy), best of", repeat)
    snakebridge.call("operator", "pos", [1])
    lists = [[i, i + 1, i + 2] for i in range(N)]
    tuples = [tuple(x) for x in lists]
    wall = time.perf_counter
    as_lists = best_ms(lambda: snakebridge.call("copy", "copy", [lists]), repeat, wall)
    as_tuples = best_ms(lambda: snakebridge.call("copy", "copy", [tuples]), repeat, wall)
    print(
        f"100k 3-lists {as_lists:.1f} ms, 100k 3-tuples {as_tuples:.1f} ms, "
        f"ratio {as_tuples / as_lists:.2f}"
    )
    snakebridge.shutdown()


if __name__ == "__main__":
    main()
