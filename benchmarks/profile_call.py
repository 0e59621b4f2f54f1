"""Where the time of a no-op ``snakebridge.call`` goes, stage by stage (host and worker).

Run: ``python benchmarks/profile_call.py [--cprofile]``. Each stage of the call path is timed
in-process, without IPC, by running it alone many times (reads internals; changes nothing).
The sum is compared with the measured round trip and with the transport floor: a raw framed
socketpair echo that polls the same way snakebridge does.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import pstats
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

import snakebridge
from snakebridge.runtime import client
from snakebridge.runtime.codec import codec_for_thread
from snakebridge_worker import main as worker_main
from snakebridge_worker import protocol as p

sys.path.insert(0, str(Path(__file__).parent))
from bench_runtime import _spin_echo, _spin_recv

N = 20_000


def per_call_us(stage: Callable[[], Any], n: int = N, repeats: int = 5) -> float:
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            stage()
        best.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(best)


def round_trip_us(call: Callable[[], Any], n: int = 3000, rounds: int = 5) -> float:
    medians = []
    for _ in range(rounds):
        samples = []
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - start)
        medians.append(statistics.median(samples) / 1e3)
    return statistics.median(medians)


class _Sink:
    def send(self, body: bytes) -> None:
        self.last = body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile top 20")
    args = parser.parse_args()

    snakebridge.call("operator", "pos", [1])
    pool = client.runtime().pools["default"]
    codec = codec_for_thread()
    _, prepared = client._library_call("operator", "pos", p.OP_CALL, [1], None, None, False, None)
    worker = pool.acquire(None)
    pool._release(worker)
    reply = msgpack.packb([p.RESULT, prepared.call_id, 1])

    sink = _Sink()
    remote = worker_main.Worker(sink, host_numpy=False)  # type: ignore[arg-type]
    request_body = prepared.frame[4:]
    message = remote.codec.unpack(request_body)

    def lease() -> None:
        pool._release(pool.acquire(None))

    host_stages = {
        "host: build the call (route, options, session, encode)": lambda: client._library_call(
            "operator", "pos", p.OP_CALL, [1], None, None, False, None
        ),
        "host: lease + release a worker": lease,
        "host: decode the reply + check it (_answer)": lambda: pool._answer(
            worker, prepared, reply, codec
        ),
    }
    worker_stages = {
        "worker: decode the request": lambda: remote.codec.unpack(request_body),
        "worker: resolve + call + encode + frame the reply": lambda: remote.handle_call(message),
    }
    print(f"stages of a no-op call, in-process, no IPC (median of 5 x {N}):")
    total = 0.0
    for name, stage in {**host_stages, **worker_stages}.items():
        us = per_call_us(stage)
        total += us
        print(f"  {name:56s} {us:6.2f} us")
    print(f"  {'sum of the Python stages':56s} {total:6.2f} us")

    host, child = socket.socketpair()
    echo = mp.Process(target=_spin_echo, args=(child,), daemon=True)
    echo.start()
    child.close()

    def floor() -> None:
        host.sendall(b"\x00\x00\x00\x01\x01")
        _spin_recv(host)

    ours = round_trip_us(lambda: snakebridge.call("operator", "pos", [1]))
    base = round_trip_us(floor)
    print("\nround trips, p50 (median of 5 x 3000):")
    print(f"  {'snakebridge.call':56s} {ours:6.2f} us")
    print(f"  {'raw framed socketpair echo, both ends poll 40 us':56s} {base:6.2f} us")
    print(f"  {'difference (snakebridge above its own transport)':56s} {ours - base:6.2f} us")

    if args.cprofile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(N):
            snakebridge.call("operator", "pos", [1])
        profile.disable()
        print(f"\ncProfile, {N} calls (host side; tottime order):")
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    host.close()
    echo.terminate()
    snakebridge.shutdown()


if __name__ == "__main__":
    main()
