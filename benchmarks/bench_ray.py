"""snakebridge on Ray vs plain Ray actors, in the same run, on one local cluster (ray #15).

No-op latency (sequential calls), throughput (a batch of no-ops: ``snakebridge.map`` against
``ray.get`` of a list of actor calls), and a 64 MiB float64 array summed (host → worker) and
echoed (both ways): through Ray's object store (the default for Ray pools) and, for comparison,
through the data plane's shared memory (``SNAKEBRIDGE_RAY_STORE=0``). One actor each.
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


class Plain:
    def noop(self, x: Any) -> Any:
        return x

    def total(self, array: Any) -> float:
        return float(np.sum(array))


def best(fn: Callable[[], Any], rounds: int = ROUNDS) -> float:
    """The median of ``rounds`` timings of ``fn`` in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    raw_sum = best(lambda: ray.get(plain.total.remote(array))) * 1e3
    raw_echo = best(lambda: ray.get(plain.noop.remote(array))) * 1e3
    for label, store in (("object store", "1"), ("shared memory", "0")):
        snakebridge.shutdown()  # a Ray pool decides at each actor's start
        os.environ["SNAKEBRIDGE_RAY_STORE"] = store
        assert snakebridge.call("numpy", "sum", [array]) == array.sum()
        rows.append(
            (
                f"64 MiB sum, {label} (ms)",
                best(lambda: snakebridge.call("numpy", "sum", [array])) * 1e3,
                raw_sum,
            )
        )
        rows.append(
            (
                f"64 MiB echo, {label} (ms)",
                best(lambda: snakebridge.call("numpy", "copy", [array])) * 1e3,
                raw_echo,
            )
        )
    os.environ.pop("SNAKEBRIDGE_RAY_STORE")
    snakebridge.shutdown()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"{'':34} {'snakebridge-on-ray':>20} {'plain Ray actor':>16} {'ratio':>7}")
    for name, ours, theirs in rows:
        print(f"{name:34} {ours:20.1f} {theirs:16.1f} {ours / theirs:7.2f}")
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
