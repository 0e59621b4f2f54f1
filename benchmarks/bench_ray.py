"""snakebridge on Ray vs plain Ray actors, in the same run, on one local cluster (ray #15).

No-op latency (sequential calls), throughput (a batch of no-ops: ``snakebridge.map`` against
``ray.get`` of a list of actor calls), and a 64 MiB float64 array: summed (host → worker only),
made in the worker (``numpy.ones``: worker → host only), echoed (``numpy.asarray``, the argument
itself back; the plain actor returns its argument) and copied (``numpy.copy`` on both sides):
through Ray's object store (the default for Ray pools) and, for comparison, through the data
plane's shared memory (``SNAKEBRIDGE_RAY_STORE=0``). One actor each.
Bar: no-op at most 1.3 times a raw Ray actor call. Run: ``python benchmarks/bench_ray.py``.
"""

from __future__ import annotations

import os
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

import snakebridge

CONFIG = """
[tool.snakebridge.libraries]
operator = "stdlib"
numpy = "stdlib"
time = "stdlib"

[tool.snakebridge.pools.default]
backend = "ray"
size = 1
num_cpus = 0.5
"""
LATENCY_N = 500
BATCH_N = 2000
ROUNDS = 5
ARRAY_ROUNDS = 15


class Plain:
    def noop(self, x: Any) -> Any:
        return x

    def total(self, array: Any) -> float:
        return float(np.sum(array))

    def copy(self, array: Any) -> Any:
        return np.copy(array)

    def ones(self, n: int) -> Any:
        return np.ones(n)


def best(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    """The median of ``rounds`` timings of ``fn`` in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired(
    mine: Callable[[], Any], theirs: Callable[[], Any], rounds: int = ARRAY_ROUNDS
) -> tuple[float, float]:
    """Medians (s) of ``mine`` and ``theirs`` timed in alternation, so that both see the same
    load (this machine's load moves within seconds)."""
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(rounds):
        order = ((0, mine), (1, theirs)) if i % 2 == 0 else ((1, theirs), (0, mine))
        for which, fn in order:
            start = time.perf_counter()
            fn()
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def crash_seconds() -> tuple[float, float]:
    """(SIGKILL of a busy actor → WorkerCrashed raised, → the pool back at full size)."""
    from snakebridge.runtime.client import runtime

    snakebridge.call("operator", "pos", [0])
    pool = runtime().pools["default"]
    raised: list[float] = []

    def sleeper() -> None:
        try:
            snakebridge.call("time", "sleep", [60])
        except snakebridge.WorkerCrashed:
            raised.append(time.perf_counter())

    thread = threading.Thread(target=sleeper)
    thread.start()
    while not any(w.state.value == "busy" for w in pool.workers):
        time.sleep(0.001)
    victim = next(w.pid for w in pool.workers if w.state.value == "busy")
    start = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    thread.join()
    while not pool.workers or pool.workers[0].pid == victim:
        time.sleep(0.005)
    return raised[0] - start, time.perf_counter() - start


def main() -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (at the start)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(CONFIG)
    os.environ["SNAKEBRIDGE_CONFIG"] = fh.name
    plain = ray.remote(num_cpus=0.5)(Plain).remote()
    ray.get(plain.noop.remote(0))
    snakebridge.call("operator", "pos", [0])
    array = np.ones(64 * 2**20 // 8)

    def raw_latency() -> None:
        for i in range(LATENCY_N):
            ray.get(plain.noop.remote(i))

    def sb_latency() -> None:
        for i in range(LATENCY_N):
            snakebridge.call("operator", "pos", [i])

    rows = [
        (
            "no-op latency (µs/call)",
            best(sb_latency) / LATENCY_N * 1e6,
            best(raw_latency) / LATENCY_N * 1e6,
        ),
        (
            "throughput (calls/s)",
            BATCH_N / best(lambda: snakebridge.map("operator", "pos", range(BATCH_N))),
            BATCH_N / best(lambda: ray.get([plain.noop.remote(i) for i in range(BATCH_N)])),
        ),
    ]
    n = array.size
    raw: dict[str, Callable[[], Any]] = {
        "sum": lambda: ray.get(plain.total.remote(array)),
        "made in the worker": lambda: ray.get(plain.ones.remote(n)),
        "echo": lambda: ray.get(plain.noop.remote(array)),
        "copy": lambda: ray.get(plain.copy.remote(array)),
    }
    ours: dict[str, Callable[[], Any]] = {
        "sum": lambda: snakebridge.call("numpy", "sum", [array]),
        "made in the worker": lambda: snakebridge.call("numpy", "ones", [n]),
        "echo": lambda: snakebridge.call("numpy", "asarray", [array]),
        "copy": lambda: snakebridge.call("numpy", "copy", [array]),
    }
    for label, store in (("object store", "1"), ("shared memory", "0")):
        snakebridge.shutdown()  # a Ray pool decides at each actor's start
        os.environ["SNAKEBRIDGE_RAY_STORE"] = store
        assert snakebridge.call("numpy", "sum", [array]) == array.sum()
        assert np.array_equal(snakebridge.call("numpy", "asarray", [array]), array)
        for what, run in ours.items():
            mine, theirs = paired(run, raw[what])
            rows.append((f"64 MiB {what}, {label} (ms)", mine * 1e3, theirs * 1e3))
    os.environ.pop("SNAKEBRIDGE_RAY_STORE")
    snakebridge.shutdown()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (at the end)")
    print(f"{'':46} {'snakebridge-on-ray':>20} {'plain Ray actor':>16} {'ratio':>7}")
    for name, mine, theirs in rows:
        print(f"{name:46} {mine:20.1f} {theirs:16.1f} {mine / theirs:7.2f}")
    crashed, replaced = crash_seconds()
    print(
        f"SIGKILLed actor mid-call: WorkerCrashed after {crashed:.3f}s, "
        f"replaced after {replaced:.2f}s"
    )
    snakebridge.shutdown()
    ray.shutdown()
    os.unlink(fh.name)


if __name__ == "__main__":
    main()
