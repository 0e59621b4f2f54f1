"""snakebridge's call path side by side with its peers, in one run; prints ratios.

Run: ``pip install -e '.[bench]' && python benchmarks/bench_runtime.py``. Peers that are not
installed are skipped. The machine is shared and noisy: peers are interleaved round by round
and medians are reported, so compare the ratios, not the absolute times.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing as mp
import operator
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import snakebridge

ROUNDS = 7
CALLS_PER_ROUND = 1500
THROUGHPUT_CALLS = 8000


def _echo(conn: Connection) -> None:
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(operator.pos(message))


def median_us(call: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def latency_peers() -> dict[str, Callable[[], Any]]:
    peers: dict[str, Callable[[], Any]] = {}
    parent, child = mp.Pipe()
    process = mp.Process(target=_echo, args=(child,), daemon=True)
    process.start()

    def raw_pipe() -> Any:
        parent.send(1)
        return parent.recv()

    peers["raw multiprocessing.Pipe"] = raw_pipe
    peers["snakebridge.call"] = lambda: snakebridge.call("operator", "pos", [1])
    executor = cf.ProcessPoolExecutor(2)
    peers["ProcessPoolExecutor"] = lambda: executor.submit(operator.pos, 1).result()
    try:
        import loky

        reusable = loky.get_reusable_executor(max_workers=2)
        peers["loky"] = lambda: reusable.submit(operator.pos, 1).result()
    except ImportError:
        pass
    try:
        import execnet

        gateway = execnet.makegateway()
        channel = gateway.remote_exec(
            "while True:\n    x = channel.receive()\n    channel.send(+x)\n"
        )

        def execnet_echo() -> Any:
            channel.send(1)
            return channel.receive()

        peers["execnet"] = execnet_echo
    except ImportError:
        pass
    try:
        import rpyc

        connection = rpyc.classic.connect_subproc()
        remote_pos = connection.modules.operator.pos
        peers["rpyc (classic)"] = lambda: remote_pos(1)
    except ImportError:
        pass
    return peers


def acall_median_us(n: int) -> float:
    """p50 of ``await snakebridge.acall`` inside one running event loop."""

    async def run() -> float:
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            await snakebridge.acall("operator", "pos", [1])
            samples.append(time.perf_counter() - start)
        return statistics.median(samples) * 1e6

    return asyncio.run(run())


def bench_latency() -> dict[str, float]:
    peers = latency_peers()
    for call in peers.values():  # warm up every peer (workers started, caches hot)
        for _ in range(200):
            call()
    results: dict[str, list[float]] = {name: [] for name in peers}
    results["snakebridge.acall (in a running loop)"] = []
    for _ in range(ROUNDS):
        for name, call in peers.items():
            results[name].append(median_us(call, CALLS_PER_ROUND))
        results["snakebridge.acall (in a running loop)"].append(acall_median_us(CALLS_PER_ROUND))
    return {name: statistics.median(values) for name, values in results.items()}


def bench_throughput() -> dict[str, float]:
    """Calls per second with 2 workers, many small calls from 4 host threads."""
    out: dict[str, float] = {}

    def threaded(call: Callable[[int], Any]) -> float:
        per_thread = THROUGHPUT_CALLS // 4

        def work() -> None:
            for i in range(per_thread):
                call(i)

        threads = [threading.Thread(target=work) for _ in range(4)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return THROUGHPUT_CALLS / (time.perf_counter() - start)

    runs: dict[str, list[float]] = {}
    executor = cf.ProcessPoolExecutor(2)
    list(executor.map(operator.pos, range(100)))
    candidates: dict[str, Callable[[], float]] = {
        "snakebridge.call (4 threads)": lambda: threaded(
            lambda i: snakebridge.call("operator", "pos", [i])
        ),
        "ProcessPoolExecutor.map": lambda: _map_rate(executor),
        "ProcessPoolExecutor.submit (4 threads)": lambda: threaded(
            lambda i: executor.submit(operator.pos, i).result()
        ),
    }
    try:
        import loky

        reusable = loky.get_reusable_executor(max_workers=2)
        list(reusable.map(operator.pos, range(100)))
        candidates["loky.map"] = lambda: _map_rate(reusable)
    except ImportError:
        pass
    for _ in range(3):
        for name, run in candidates.items():
            runs.setdefault(name, []).append(run())
    for name, values in runs.items():
        out[name] = statistics.median(values)
    return out


def _map_rate(executor: Any) -> float:
    start = time.perf_counter()
    list(executor.map(operator.pos, range(THROUGHPUT_CALLS)))
    return THROUGHPUT_CALLS / (time.perf_counter() - start)


COLD = {
    "snakebridge": (
        "import snakebridge",
        "snakebridge.call('operator', 'pos', [1])\n"
        "assert len(snakebridge.status()[0]['workers']) == 2",
    ),
    "ProcessPoolExecutor": (
        "import concurrent.futures as cf, operator",
        "ex = cf.ProcessPoolExecutor(2); ex.submit(operator.pos, 1).result()",
    ),
    "loky": (
        "import loky, operator",
        "ex = loky.get_reusable_executor(max_workers=2); ex.submit(operator.pos, 1).result()",
    ),
}


def bench_cold_start() -> dict[str, float]:
    """ms from a fresh interpreter's imports done to the first result from a 2-worker pool."""
    results: dict[str, list[float]] = {}
    for _ in range(5):
        for name, (imports, start) in COLD.items():
            code = (
                f"{imports}\nimport time\nt = time.perf_counter()\n{start}\n"
                "print((time.perf_counter() - t) * 1000)"
            )
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if done.returncode == 0:
                results.setdefault(name, []).append(float(done.stdout.strip().splitlines()[-1]))
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    snakebridge.call("operator", "pos", [1])
    latency = bench_latency()
    floor = latency["raw multiprocessing.Pipe"]
    ours = latency["snakebridge.call"]
    print("no-op round trip, p50 (median of round medians)")
    for name, value in sorted(latency.items(), key=lambda item: item[1]):
        print(
            f"  {name:34s} {value:8.1f} us   {value / floor:5.2f}x raw Pipe   "
            f"{value / ours:5.2f}x snakebridge"
        )
    print("\nthroughput, 2 workers, small calls")
    throughput = bench_throughput()
    best = throughput["snakebridge.call (4 threads)"]
    for name, value in sorted(throughput.items(), key=lambda item: -item[1]):
        print(f"  {name:40s} {value:9.0f} calls/s   {value / best:5.2f}x snakebridge")
    snakebridge.shutdown()
    print("\ncold start to first result, 2 workers (imports excluded)")
    cold = bench_cold_start()
    for name, value in sorted(cold.items(), key=lambda item: item[1]):
        print(f"  {name:34s} {value:8.1f} ms")


if __name__ == "__main__":
    main()
