"""Scaling (#15): the thread profile against the process profile, autoscaling under a burst.

Run: ``python benchmarks/bench_scale.py`` (``--json FILE`` also writes the numbers). It writes a
throwaway config in a temporary directory and points ``SNAKEBRIDGE_CONFIG`` at it. The machine
is shared and noisy: compare the ratios of one run.

Bar (issue 15): hashlib.sha256 over 16 MiB buffers from 8 host threads, thread profile with one
worker >= 1.7x a one-worker process profile on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import snakebridge
from snakebridge.runtime.client import runtime

_MIB = 1 << 20
_HOST_THREADS = 8
_PER_THREAD = 4

CONFIG = """
[tool.snakebridge.libraries]
hashlib = "stdlib"
operator = "stdlib"

[tool.snakebridge.pools.default]
size = 1
{extra}
"""


def _configure(directory: Path, extra: str) -> None:
    snakebridge.shutdown()
    path = directory / "snakebridge.toml"
    path.write_text(CONFIG.format(extra=extra))
    os.environ["SNAKEBRIDGE_CONFIG"] = str(path)


def _hash_run(buffer: Any) -> float:
    """Seconds for 8 host threads to hash ``_PER_THREAD`` buffers each, in the worker.

    The buffer is shared once (``snakebridge.share``): each call maps it, so the figure is
    the hashing, not the copying of 16 MiB per call.
    """
    digest = snakebridge.method(snakebridge.call("hashlib", "sha256", [buffer]), "hexdigest")

    def work() -> None:
        for _ in range(_PER_THREAD):
            hashed = snakebridge.call("hashlib", "sha256", [buffer])
            assert snakebridge.method(hashed, "hexdigest") == digest

    threads = [threading.Thread(target=work) for _ in range(_HOST_THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _burst(directory: Path) -> dict[str, float]:
    """Autoscaling: a burst of 8 slow calls on a pool of min 1, max 4."""
    _configure(directory, "min_size = 1\nmax_size = 4\nidle_timeout = 0.5")
    snakebridge.call("operator", "pos", [1])
    pool = runtime().pools["default"]
    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=snakebridge.call,
            args=("hashlib", "pbkdf2_hmac"),
            kwargs={"args": ["sha256", b"pw", b"salt", 200_000]},
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    peak = len(pool.workers)
    return {"burst_s": elapsed, "workers_at_end_of_burst": float(peak)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import numpy

    data = numpy.frombuffer(os.urandom(16 * _MIB), dtype=numpy.uint8)
    figures: dict[str, Any] = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _configure(directory, 'profile = "process"')
        figures["process_1_worker_s"] = _hash_run(snakebridge.share(data))
        _configure(directory, 'profile = "thread"\nthreads = 8')
        figures["thread_1_worker_s"] = _hash_run(snakebridge.share(data))
        figures["thread_speedup"] = figures["process_1_worker_s"] / figures["thread_1_worker_s"]
        figures.update(_burst(directory))
        snakebridge.shutdown()
    hashed = _HOST_THREADS * _PER_THREAD * 16
    print(f"sha256 of {hashed} MiB from {_HOST_THREADS} host threads, 1 worker:")
    print(f"  process profile {figures['process_1_worker_s']:.3f} s")
    print(f"  thread profile  {figures['thread_1_worker_s']:.3f} s")
    print(f"  speed-up        {figures['thread_speedup']:.2f}x (bar >= 1.7x)")
    print(
        f"burst of 8 pbkdf2 calls, min 1 max 4: {figures['burst_s']:.3f} s, "
        f"{figures['workers_at_end_of_burst']:.0f} workers at its end"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
