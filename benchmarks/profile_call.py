"""Where the time of a no-op ``snakebridge.call`` goes, stage by stage (host and worker).

Run: ``python benchmarks/profile_call.py [--cprofile]``. Each stage of the call path is timed
in-process, without IPC, by running it alone many times (reads internals; changes nothing).
The sum is compared with the measured round trip and with the transport floor: a raw framed
socketpair echo that polls the same way snakebridge does.
"""

from __future__ import annotations

import argparse
import collections
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
from snakebridge.config import PoolSpec
from snakebridge.errors import WorkerCrashed
from snakebridge.runtime import client
from snakebridge.runtime.calls import prepare
from snakebridge.runtime.codec import codec_for_thread
from snakebridge.runtime.pool import Pool
from snakebridge.runtime.transport import WorkerTransport
from snakebridge_worker import main as worker_main
from snakebridge_worker import protocol as p
from snakebridge_worker.framing import FrameBuffer

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
    max_frame = p.DEFAULT_MAX_FRAME

    def send(self, body: bytes) -> None:
        self.last = body


class _Instant(WorkerTransport):
    """A transport whose 'worker' answers inside ``send``: the host's own path, no IPC."""

    def __init__(self, init: dict[str, Any]) -> None:
        self.pid = 1
        self.frames = FrameBuffer(p.DEFAULT_MAX_FRAME)
        self.answers: collections.deque[bytes] = collections.deque()

    def handshake(self, deadline: float) -> dict[str, Any]:
        return {"protocol": p.PROTOCOL_VERSION}

    def send(self, data: bytes) -> None:
        self.frames.feed(data)
        while (body := self.frames.next_body()) is not None:
            message = msgpack.unpackb(body)
            if message[0] == p.CALL:
                self.answers.append(msgpack.packb([p.RESULT, message[1], message[8][0]]))

    def recv(self, deadline: float | None, poll_s: float = 0.0) -> bytes:
        return self.answers.popleft()

    def recv_now(self) -> bytes | None:
        return self.answers.popleft() if self.answers else None

    def recv_buffered(self) -> bytes | None:
        return self.recv_now()

    def wait_handles(self) -> tuple[int, ...]:
        return ()

    def exited(self) -> bool:
        return False

    def kill(self) -> None:
        pass

    def stop(self, grace_s: float) -> None:
        pass

    def death(self, during: str, kill_reason: str = "") -> WorkerCrashed:
        raise AssertionError("the instant worker never dies")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile top 20")
    args = parser.parse_args()

    snakebridge.call("operator", "pos", [1])
    pool = client.runtime().pools["default"]
    codec = codec_for_thread()
    _, prepared = client._library_call("operator", "pos", p.OP_CALL, [1], None, None, False, None)
    worker = pool.leaser.acquire()
    pool.leaser.release(worker)
    reply = msgpack.packb([p.RESULT, prepared.call_id, 1])
    instant = Pool("instant", PoolSpec(size=1), sys.executable, {}, None, _Instant)
    instant.start()

    sink = _Sink()
    remote = worker_main.Worker(sink, host_numpy=False)  # type: ignore[arg-type]
    request_body = prepared.frame[4:]
    message = remote.codec.unpack(request_body)

    def lease() -> None:
        pool.leaser.release(pool.leaser.acquire())

    def whole() -> None:
        instant.run(prepare(None, "operator", "pos", None, p.OP_CALL, [1], None, None, False, None))

    host_stages = {
        "host: build the call (route, options, session, encode)": lambda: client._library_call(
            "operator", "pos", p.OP_CALL, [1], None, None, False, None
        ),
        "host: lease + release a worker": lease,
        "host: decode the reply": lambda: codec.decode(reply, worker, prepared.session),
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
    whole_us = per_call_us(whole)
    print(
        f"  {'host: the whole pool.run path, over a transport with no IPC':56s} {whole_us:6.2f} us"
    )

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
