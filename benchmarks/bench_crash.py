"""Crash barrier timings (issue 5 bars), through the public API only.

Run: ``python benchmarks/bench_crash.py``. A caller runs ``snakebridge.call("time", "sleep",
[30])`` (or ``acall`` under asyncio); once ``snakebridge.status()`` shows a worker busy, the
worker is given 20 ms to sit in ``time.sleep`` and is killed with SIGKILL. Measured from the
kill:

- **detect**: until the caller holds ``snakebridge.WorkerCrashed`` (bar: p50 <= 50 ms);
- **recover**: until ``snakebridge.status()`` shows the pool at full size, every worker idle
  and the killed pid gone (bar: <= 1 s).

For contrast it times the same kill under ``ProcessPoolExecutor`` (the caller gets
``BrokenProcessPool`` and the executor is unusable from then on) and loky (the caller gets
``TerminatedWorkerError``; the reusable executor is rebuilt on the next call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import snakebridge

TRIALS = 20
ASYNC_TRIALS = 10
PEER_TRIALS = 5
SETTLE_S = 0.02  # how long the worker sits in time.sleep before the kill


def _pool() -> dict[str, Any]:
    return snakebridge.status()[0]


def _wait_full(timeout: float = 5.0, gone: int | None = None) -> float:
    """perf_counter when the pool is full, all idle (and ``gone`` not among the workers)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        pool = _pool()
        workers = pool["workers"]
        if (
            len(workers) == pool["size"]
            and all(w["state"] == "idle" for w in workers)
            and gone not in {w["pid"] for w in workers}
        ):
            return time.perf_counter()
        time.sleep(0.0005)
    raise TimeoutError(f"pool not back at full size within {timeout}s: {_pool()}")


def one_trial(use_async: bool) -> tuple[float, float]:
    _wait_full()
    outcome: list[Any] = []

    def caller() -> None:
        try:
            if use_async:
                asyncio.run(snakebridge.acall("time", "sleep", [30]))
            else:
                snakebridge.call("time", "sleep", [30])
        except snakebridge.WorkerCrashed as crash:
            outcome.append((time.perf_counter(), crash))
        except BaseException as exc:  # reported below
            outcome.append((time.perf_counter(), exc))
        else:
            outcome.append((time.perf_counter(), None))

    thread = threading.Thread(target=caller)
    thread.start()
    busy: list[int] = []
    while not busy:
        busy = [w["pid"] for w in _pool()["workers"] if w["state"] == "busy"]
        time.sleep(0.0002)
    time.sleep(SETTLE_S)
    killed_at = time.perf_counter()
    os.kill(busy[0], signal.SIGKILL)
    thread.join(10)
    if not outcome:
        raise RuntimeError("the caller did not return within 10 s of its worker's SIGKILL")
    raised_at, crash = outcome[0]
    if not isinstance(crash, snakebridge.WorkerCrashed) or crash.pid != busy[0]:
        raise RuntimeError(f"expected WorkerCrashed for pid {busy[0]}, got {crash!r}")
    if crash.signal != signal.SIGKILL:
        raise RuntimeError(f"WorkerCrashed names signal {crash.signal}, not SIGKILL")
    recovered_at = _wait_full(gone=busy[0])
    return raised_at - killed_at, recovered_at - killed_at


def peer_trial(make: Callable[[], Any], error: type[BaseException]) -> float:
    """ms from SIGKILL of a worker busy in time.sleep to the caller's exception."""
    executor = make()
    pids: set[int] = set()
    while len(pids) < 2:
        pids.update(executor.submit(os.getpid).result() for _ in range(2))
    future = executor.submit(_sleep_and_report, 30)
    time.sleep(0.3)  # the task reaches a worker and sleeps
    idle = executor.submit(os.getpid).result(timeout=5)  # answered by the other worker
    (victim,) = pids - {idle}
    killed_at = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    try:
        future.result(timeout=10)
    except error:
        took = time.perf_counter() - killed_at
    else:
        raise RuntimeError("the sleeping task finished although its worker was killed")
    executor.shutdown(wait=True)
    return took


def _sleep_and_report(seconds: float) -> None:
    time.sleep(seconds)


def summary(label: str, values: list[float], bar: str) -> str:
    p50, worst = statistics.median(values) * 1000, max(values) * 1000
    return f"  {label:52s} p50 {p50:7.1f} ms   max {worst:7.1f} ms   {bar}".rstrip()


def main() -> None:
    began = time.perf_counter()
    snakebridge.call("operator", "pos", [1])
    sync = [one_trial(use_async=False) for _ in range(TRIALS)]
    asynchronous = [one_trial(use_async=True) for _ in range(ASYNC_TRIALS)]
    snakebridge.shutdown()

    detect = [d for d, _ in sync]
    recover = [r for _, r in sync + asynchronous]
    rows = [
        summary(f"call: SIGKILL -> WorkerCrashed ({TRIALS} trials)", detect, "(bar p50 <= 50 ms)"),
        summary(
            f"acall: SIGKILL -> WorkerCrashed ({ASYNC_TRIALS} trials)",
            [d for d, _ in asynchronous],
            "",
        ),
        summary("SIGKILL -> status() full size, all idle", recover, "(bar max <= 1000 ms)"),
    ]
    peers: dict[str, list[float]] = {}
    ppe_error = BrokenProcessPool
    peers["ProcessPoolExecutor: -> BrokenProcessPool"] = [
        peer_trial(lambda: cf.ProcessPoolExecutor(2), ppe_error) for _ in range(PEER_TRIALS)
    ]
    try:
        import loky
        from loky.process_executor import TerminatedWorkerError

        peers["loky: -> TerminatedWorkerError"] = [
            peer_trial(lambda: loky.get_reusable_executor(max_workers=2), TerminatedWorkerError)
            for _ in range(PEER_TRIALS)
        ]
    except ImportError:
        pass

    print("crash barrier: SIGKILL of a worker busy in time.sleep")
    for row in rows:
        print(row)
    print("  peers, same kill (their pools do not recover in place):")
    for label, values in peers.items():
        print(summary(label, values, ""))
    all_detect = detect + [d for d, _ in asynchronous]
    print("\nissue 5 bars")
    for label, ok in (
        (
            f"SIGKILL -> WorkerCrashed p50 <= 50 ms ({statistics.median(detect) * 1e3:.1f} ms; "
            f"acall included {statistics.median(all_detect) * 1e3:.1f} ms)",
            statistics.median(all_detect) <= 0.05 and statistics.median(detect) <= 0.05,
        ),
        (
            f"crash -> full pool <= 1 s (max {max(recover) * 1e3:.0f} ms, "
            f"p50 {statistics.median(recover) * 1e3:.0f} ms)",
            max(recover) <= 1.0,
        ),
    ):
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    print(f"\n(total {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
