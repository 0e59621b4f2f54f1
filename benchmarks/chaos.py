"""Chaos run (issue 10): 8 threads + asyncio tasks + map, a random worker SIGKILLed every 200 ms.

Run: ``python benchmarks/chaos.py [--calls 20000]``. Prints correct answers, WorkerCrashed (a
call that was running when its worker died), other snakebridge errors, raw non-snakebridge
exceptions and hung callers; the guarantee is 0 wrong, 0 hung, 0 raw.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import signal
import threading
import time
from typing import Any

import snakebridge

counts: collections.Counter[str] = collections.Counter()
lock = threading.Lock()


def record(kind: str, n: int = 1) -> None:
    with lock:
        counts[kind] += n


def judge(expected: Any, got: Any, n: int = 1) -> None:
    record("ok" if got == expected else "wrong", n)


def failed(exc: BaseException) -> None:
    if isinstance(exc, snakebridge.WorkerCrashed):
        record("crashed")
    elif isinstance(exc, snakebridge.SnakeBridgeError):
        record(f"other {type(exc).__name__}")
    else:
        record(f"RAW {type(exc).__name__}")


def threads_part(n: int, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set() and i < n:
        i += 1
        try:
            judge(i * 3, snakebridge.call("operator", "mul", [i, 3], timeout=30))
        except BaseException as exc:
            failed(exc)


async def async_part(n: int) -> None:
    async def one(i: int) -> None:
        try:
            judge(-i, await snakebridge.acall("operator", "neg", [i], timeout=30))
        except BaseException as exc:
            failed(exc)

    for start in range(0, n, 64):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 64))))


def map_part(n: int) -> None:
    for start in range(0, n, 500):
        items = list(range(start, min(n, start + 500)))
        try:
            answers = snakebridge.map("operator", "pos", items, timeout=30)
            judge(items, answers, len(items))
        except BaseException as exc:  # map raises the first failed item's error
            failed(exc)


def chaos(stop: threading.Event) -> None:
    pool = snakebridge.status()
    while not stop.wait(0.2):
        pool = snakebridge.status()
        pids = [w["pid"] for p in pool for w in p["workers"] if w["state"] != "dead"]
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(pids), signal.SIGKILL)
                record("kills")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30000)
    args = parser.parse_args()
    snakebridge.call("operator", "pos", [1])
    per = args.calls // 3
    stop = threading.Event()
    killer = threading.Thread(target=chaos, args=(stop,))
    workers = [threading.Thread(target=threads_part, args=(per // 8, stop)) for _ in range(8)]
    mapper = threading.Thread(target=map_part, args=(per,))
    started = time.monotonic()
    killer.start()
    for thread in [*workers, mapper]:
        thread.start()
    asyncio.run(async_part(per))
    for thread in [*workers, mapper]:
        thread.join(timeout=300)
    hung = sum(thread.is_alive() for thread in [*workers, mapper])
    stop.set()
    killer.join()
    print(
        f"{time.monotonic() - started:.1f} s, {dict(sorted(counts.items()))}, hung callers: {hung}"
    )
    raw = sum(v for k, v in counts.items() if k.startswith("RAW"))
    print("PASS" if not counts["wrong"] and not hung and not raw else "FAIL")


if __name__ == "__main__":
    main()
