"""Streams, helpers, preload and the executor against their plain-call baselines, in one run.

Run: ``python benchmarks/bench_streams.py`` (``--json FILE`` also writes the numbers,
``--quick`` shortens the 10 s memory run to 3 s). It builds a throwaway project (config file,
a helper module, a module with a 0.5 s import) in a temporary directory and points
``SNAKEBRIDGE_CONFIG`` at it. The machine is shared and noisy: compare the ratios.

Bars (issue 14): a 100,000-item stream >= 5x one call per item; host and worker RSS within
+-10 % while consuming an endless generator for 10 s; minimize in the worker with a host
objective gives the in-process result; a helper running 1,000 small library calls >= 20x
1,000 host calls; the 0.5 s preload is imported once per worker start, never during a call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HELPERS = """
import itertools
import math


def numbers(n):
    yield from range(n)


def endless(size):
    block = "x" * size
    for i in itertools.count():
        yield block


def item(i):
    return i


def total_sqrt(n):
    return sum(math.sqrt(i) for i in range(n))
"""
SLOW = "import time\n\ntime.sleep(0.5)\nLOADED = time.monotonic()\n"
CONFIG = """
helpers = ["benchproj.helpers", "benchproj.slow"]
[libraries]
math = "stdlib"
operator = "stdlib"
builtins = "stdlib"
scipy = "stdlib"
[pools.default]
size = 2
preload = ["benchproj.slow"]
"""


def _project(root: Path) -> None:
    (root / "benchproj").mkdir()
    (root / "benchproj" / "__init__.py").write_text("")
    (root / "benchproj" / "helpers.py").write_text(textwrap.dedent(HELPERS))
    (root / "benchproj" / "slow.py").write_text(SLOW)
    (root / "snakebridge.toml").write_text(CONFIG)
    os.environ["SNAKEBRIDGE_CONFIG"] = str(root / "snakebridge.toml")
    sys.path.insert(0, str(root))


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _best(samples: list[float]) -> float:
    return statistics.median(samples)


def bench_stream_vs_calls(results: dict[str, Any]) -> None:
    import snakebridge
    from snakebridge.runtime.streams import stream

    n, per_item_n = 100_000, 5_000
    stream_s, calls_s = [], []
    for _ in range(3):
        started = time.perf_counter()
        count = sum(1 for _ in stream("benchproj.helpers", "numbers", [n]))
        stream_s.append(time.perf_counter() - started)
        assert count == n
        started = time.perf_counter()
        for i in range(per_item_n):
            snakebridge.call("benchproj.helpers", "item", [i])
        calls_s.append((time.perf_counter() - started) * n / per_item_n)
    results["stream_100k_s"] = _best(stream_s)
    results["calls_100k_s (extrapolated from 5k)"] = _best(calls_s)
    results["stream_vs_calls_x"] = _best(calls_s) / _best(stream_s)


def bench_endless_rss(results: dict[str, Any], seconds: float) -> None:
    import snakebridge
    from snakebridge.runtime.streams import stream

    items = stream("benchproj.helpers", "endless", [1024])
    next(items)
    worker_pid = next(w["pid"] for w in snakebridge.status()[0]["workers"] if w["state"] != "idle")
    started, consumed = time.monotonic(), 0
    warm = started + seconds / 5  # baseline after the first fifth (buffers warmed up)
    host0 = worker0 = 0
    while time.monotonic() - started < seconds:
        for _ in range(1000):
            next(items)
        consumed += 1000
        if not host0 and time.monotonic() >= warm:
            host0, worker0 = _rss(os.getpid()), _rss(worker_pid)
    host1, worker1 = _rss(os.getpid()), _rss(worker_pid)
    items.close()
    results["endless_items"] = consumed
    results["endless_seconds"] = seconds
    results["host_rss_change_pct"] = 100.0 * (host1 - host0) / host0
    results["worker_rss_change_pct"] = 100.0 * (worker1 - worker0) / worker0


def bench_minimize(results: dict[str, Any]) -> None:
    import numpy as np
    import scipy.optimize

    import snakebridge

    def rosen(x: Any) -> float:
        return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2.0) ** 2.0 + (1 - x[:-1]) ** 2.0))

    x0 = [1.3, 0.7, 0.8, 1.9, 1.2]
    options = {"method": "Nelder-Mead", "options": {"xatol": 1e-8}}
    started = time.perf_counter()
    remote = snakebridge.call("scipy.optimize", "minimize", [rosen, x0], options)
    remote_s = time.perf_counter() - started
    local = scipy.optimize.minimize(rosen, x0, method="Nelder-Mead", options={"xatol": 1e-8})
    x = snakebridge.attr(remote, "x")
    results["minimize_same_x"] = bool(np.array_equal(x, local.x))
    results["minimize_max_abs_diff"] = float(np.max(np.abs(x - local.x)))
    results["minimize_nfev"] = int(snakebridge.attr(remote, "nfev"))
    results["minimize_remote_s"] = remote_s


def bench_helper_loop(results: dict[str, Any]) -> None:
    import snakebridge

    helper_s, host_s = [], []
    for _ in range(5):
        started = time.perf_counter()
        snakebridge.call("benchproj.helpers", "total_sqrt", [1000])
        helper_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        for i in range(1000):
            snakebridge.call("math", "sqrt", [float(i)])
        host_s.append(time.perf_counter() - started)
    results["helper_1000_calls_s"] = _best(helper_s)
    results["host_1000_calls_s"] = _best(host_s)
    results["helper_vs_host_x"] = _best(host_s) / _best(helper_s)


def bench_preload(results: dict[str, Any], events: list[tuple[str, str, dict[str, Any]]]) -> None:
    import snakebridge

    starts = [m for n, ph, m in events if (n, ph) == ("runtime.worker", "start")]
    loads = [m["startup"]["preload"]["benchproj.slow"] for m in starts]
    results["preload_worker_starts"] = len(starts)
    results["preload_seconds_each"] = loads
    started = time.perf_counter()
    snakebridge.call("benchproj.helpers", "item", [1])
    results["first_call_after_start_s"] = time.perf_counter() - started


def bench_executor(results: dict[str, Any]) -> None:
    import snakebridge

    n = 20_000
    map_s, ex_s, chunked_s = [], [], []
    from snakebridge.runtime.executor import executor

    with executor(lib="operator") as ex:
        for _ in range(3):
            started = time.perf_counter()
            snakebridge.map("operator", "pos", range(n))
            map_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            futures = [ex.submit("pos", i) for i in range(n)]
            for future in futures:
                future.result()
            ex_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert len(list(ex.map("pos", range(n), chunksize=256))) == n
            chunked_s.append(time.perf_counter() - started)
    results["executor_submit_calls_per_s"] = n / _best(ex_s)
    results["map_calls_per_s"] = n / _best(map_s)
    results["executor_vs_map"] = _best(map_s) / _best(ex_s)
    results["executor_map_chunk256_calls_per_s"] = n / _best(chunked_s)
    results["executor_map_chunk256_vs_map"] = _best(map_s) / _best(chunked_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        _project(Path(directory))
        import snakebridge
        from snakebridge.runtime import telemetry

        events: list[tuple[str, str, dict[str, Any]]] = []
        telemetry.attach(lambda name, phase, meta: events.append((name, phase, meta)))
        results: dict[str, Any] = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
        snakebridge.call("benchproj.helpers", "item", [0])  # start the pool
        bench_preload(results, events)
        bench_helper_loop(results)
        bench_stream_vs_calls(results)
        bench_endless_rss(results, 3.0 if arguments.quick else 10.0)
        bench_minimize(results)
        bench_executor(results)
        results["preload_worker_starts_total"] = len(
            [m for n, ph, m in events if (n, ph) == ("runtime.worker", "start")]
        )
        snakebridge.shutdown()
    for key, value in results.items():
        print(f"{key:42} {value}")
    bars = {
        "stream >= 5x calls": results["stream_vs_calls_x"] >= 5,
        "host RSS within 10%": abs(results["host_rss_change_pct"]) <= 10,
        "worker RSS within 10%": abs(results["worker_rss_change_pct"]) <= 10,
        "minimize converges to the in-process x": results["minimize_same_x"],
        "helper >= 20x host calls": results["helper_vs_host_x"] >= 20,
        "preload once per worker start": results["preload_worker_starts"] == 2
        and all(s >= 0.5 for s in results["preload_seconds_each"]),
        "first call not on the preload clock": results["first_call_after_start_s"] < 0.5,
    }
    for name, ok in bars.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
