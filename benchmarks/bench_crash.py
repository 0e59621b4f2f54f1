"""Crash barrier timings: SIGKILL of a busy worker → the caller's WorkerCrashed, and → full pool.

Run: ``python benchmarks/bench_crash.py``. Bars (issue 5): ≤ 50 ms p50 to WorkerCrashed; ≤ 1 s
back to full size.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time

import snakebridge
from snakebridge.runtime.client import runtime

TRIALS = 20


def one_trial() -> tuple[float, float]:
    pool = runtime().pools["default"]
    killed_at: list[float] = []
    busy: list[int] = []

    def killer() -> None:
        while not busy:
            time.sleep(0.001)
        time.sleep(0.02)  # let it sit in time.sleep
        killed_at.append(time.perf_counter())
        os.kill(busy[0], signal.SIGKILL)

    thread = threading.Thread(target=killer)
    thread.start()
    before = {w.pid for w in pool.workers}
    try:
        # the lease tells us the pid before the call is sent
        worker = pool.acquire(None)
        busy.append(worker.pid)
        pool._release(worker)
        while True:
            try:
                snakebridge.call("time", "sleep", [5])
            except snakebridge.WorkerCrashed as crash:
                if crash.pid == busy[0]:
                    break
    finally:
        thread.join()
    detected = time.perf_counter() - killed_at[0]
    while True:
        workers = pool.workers
        pids = {w.pid for w in workers}
        if (
            len(workers) == pool.size
            and busy[0] not in pids
            and pids != before
            and all(w.state == "idle" for w in workers)
        ):
            break
        time.sleep(0.001)
    recovered = time.perf_counter() - killed_at[0]
    return detected, recovered


def main() -> None:
    snakebridge.call("operator", "pos", [1])
    detected, recovered = zip(*(one_trial() for _ in range(TRIALS)), strict=True)
    for label, values, bar in (
        ("SIGKILL of a busy worker -> WorkerCrashed", detected, "p50 <= 50 ms"),
        ("SIGKILL -> pool back at full size, idle", recovered, "<= 1000 ms"),
    ):
        p50, worst = statistics.median(values) * 1000, max(values) * 1000
        print(f"{label:42s} p50 {p50:6.1f} ms   max {worst:6.1f} ms   (bar: {bar})")
    snakebridge.shutdown()


if __name__ == "__main__":
    main()
