"""snakebridge's call path side by side with its peers, in one run; prints times and ratios.

Run: ``pip install -e '.[bench]' && python benchmarks/bench_runtime.py`` (``--json FILE`` also
writes the numbers). Peers that are not installed are skipped. The machine this was written on
is a shared, noisy 2-core VM: peers are warmed up, interleaved round by round (the order rotates
every round) and summarised by medians, so compare the ratios, not the absolute times.

Sections (see benchmarks/README.md):
1. no-op round trip, p50/p99 and CPU per call (host + worker processes);
2. throughput with 2 workers and many small calls in flight;
3. cold start of 2 workers, in a fresh interpreter per sample ("import+start" and "start only");
4. a medium payload round trip (1 MiB of bytes; a list of 100,000 floats).
Issue 2's bars are checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import contextlib
import copy
import json
import multiprocessing as mp
import operator
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import snakebridge

LAT_ROUNDS = 7
LAT_CALLS = 1000
LAT_WARMUP = 300
LAT_ROUNDS_ONE_CPU = 5
LAT_CALLS_ONE_CPU = 400
TP_CALLS = 3000
TP_ROUNDS = 3
TP_IN_FLIGHT = 64
COLD_ROUNDS = 5
PAYLOAD_ROUNDS = 3
PAYLOAD_CALLS = 10
PAYLOAD_BUDGET_S = 0.25  # per peer and round: slow peers get fewer samples
SPIN_S = 40e-6

SB = "snakebridge.call"
FLOOR = "raw multiprocessing.Pipe"


# -- children ---------------------------------------------------------------------------------
def _pipe_echo(conn: Connection) -> None:
    """The floor: a child that sends back whatever it receives (pickled by the Pipe)."""
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        conn.send(message)


def _spin_echo(sock: socket.socket) -> None:
    """A framed socket echo that polls ``SPIN_S`` before blocking (snakebridge's own technique)."""
    while True:
        data = _spin_recv(sock)
        if not data:
            return
        sock.sendall(data)


def _spin_recv(sock: socket.socket) -> bytes:
    deadline = time.perf_counter() + SPIN_S
    while time.perf_counter() < deadline:
        try:
            return sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
    return sock.recv(65536)


_EXECNET_ECHO = "while True:\n    x = channel.receive()\n    channel.send(x)\n"


# -- measurement helpers ----------------------------------------------------------------------
def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_ns(pids: list[int]) -> int | None:
    """CPU time used so far by every thread of ``pids`` (Linux schedstat), or None."""
    total = 0
    try:
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                    total += int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def timed(call: Callable[[], Any], budget_s: float | None = None) -> Callable[[int], list[int]]:
    """A runner doing ``n`` sequential calls (fewer once ``budget_s`` is spent); ns each."""

    def run(n: int) -> list[int]:
        clock = time.perf_counter_ns
        out = [0] * n
        stop = clock() + int(budget_s * 1e9) if budget_s is not None else None
        for i in range(n):
            start = clock()
            call()
            end = out[i] = clock() - start
            if stop is not None and start + end > stop:
                return out[: i + 1]
        return out

    return run


def threaded(bodies: list[Callable[[int], Any]], total: int) -> float:
    """Seconds for ``total`` calls split over one thread per body, started together."""
    per = total // len(bodies)
    barrier = threading.Barrier(len(bodies) + 1)

    def work(body: Callable[[int], Any]) -> None:
        barrier.wait()
        for i in range(per):
            body(i)

    threads = [threading.Thread(target=work, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


@dataclass
class Latency:
    name: str
    run: Callable[[int], list[int]]
    pids: list[int]
    samples: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # ns per call, host + workers, per round


# -- the contenders ---------------------------------------------------------------------------
class Contenders:
    """Every peer started once, with 2 workers each; the latency runs use the first worker."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], None]] = []
        self.skipped: list[str] = []
        self.loop = asyncio.new_event_loop()
        snakebridge.call("operator", "pos", [1])
        self.sb_pids = [w["pid"] for w in snakebridge.status()[0]["workers"]]

        self.pipes: list[Connection] = []
        self.pipe_pids: list[int] = []
        for _ in range(2):
            parent, child = mp.Pipe()
            process = mp.Process(target=_pipe_echo, args=(child,), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.pipe_pids.append(process.pid or 0)
            self.closers.append(parent.close)

        host, worker = socket.socketpair()
        process = mp.Process(target=_spin_echo, args=(worker,), daemon=True)
        process.start()
        worker.close()
        self.spin, self.spin_pid = host, process.pid or 0
        self.closers.append(host.close)

        self.ppe = cf.ProcessPoolExecutor(2)
        self.ppe_pids = self._two_pids(self.ppe)
        self.closers.append(self.ppe.shutdown)

        self.loky: Any = None
        try:
            import loky

            self.loky = loky.get_reusable_executor(max_workers=2)
            self.loky_pids = self._two_pids(self.loky)
            self.closers.append(self.loky.shutdown)
        except ImportError:
            self.skipped.append("loky (not installed)")

        self.execnet: list[Any] = []
        try:
            import execnet

            for _ in range(2):
                gateway = execnet.makegateway()
                self.closers.append(gateway.exit)
                self.execnet.append((gateway.remote_exec(_EXECNET_ECHO), gateway._rinfo().pid))
        except ImportError:
            self.skipped.append("execnet (not installed)")

        self.rpyc: list[Any] = []
        try:
            import rpyc

            for _ in range(2):
                connection = rpyc.classic.connect_subproc()
                self.closers.append(connection.close)
                self.rpyc.append((connection, connection.modules.os.getpid()))
        except ImportError:
            self.skipped.append("rpyc (not installed; pip install rpyc)")
        except Exception as exc:  # e.g. rpyc_classic.py not on PATH
            self.skipped.append(f"rpyc ({exc})")

    def all_pids(self) -> list[int]:
        pids = [*self.sb_pids, *self.pipe_pids, self.spin_pid, *self.ppe_pids]
        pids += getattr(self, "loky_pids", [])
        pids += [pid for _, pid in self.execnet] + [pid for _, pid in self.rpyc]
        return pids

    @staticmethod
    def _two_pids(executor: Any) -> list[int]:
        pids: set[int] = set()
        while len(pids) < 2:
            pids.update(executor.submit(os.getpid).result() for _ in range(2))
        return sorted(pids)

    def close(self) -> None:
        for closer in reversed(self.closers):
            with contextlib.suppress(Exception):
                closer()
        self.loop.close()

    # -- no-op latency ------------------------------------------------------------------------
    def latency(self) -> list[Latency]:
        pipe, spin = self.pipes[0], self.spin

        def raw_pipe() -> Any:
            pipe.send(1)
            return pipe.recv()

        def raw_spin() -> Any:
            spin.sendall(b"\x00\x00\x00\x01\x01")
            return _spin_recv(spin)

        async def acall_batch(n: int) -> list[int]:
            clock = time.perf_counter_ns
            out = [0] * n
            for i in range(n):
                start = clock()
                await snakebridge.acall("operator", "pos", [1])
                out[i] = clock() - start
            return out

        peers = [
            Latency(FLOOR, timed(raw_pipe), self.pipe_pids[:1]),
            Latency("raw socketpair, both ends poll 40us", timed(raw_spin), [self.spin_pid]),
            Latency(SB, timed(lambda: snakebridge.call("operator", "pos", [1])), self.sb_pids),
            Latency(
                "snakebridge.acall (running loop)",
                lambda n: self.loop.run_until_complete(acall_batch(n)),
                self.sb_pids,
            ),
            Latency(
                "ProcessPoolExecutor",
                timed(lambda: self.ppe.submit(operator.pos, 1).result()),
                self.ppe_pids,
            ),
        ]
        if self.loky is not None:
            loky = self.loky
            peers.append(
                Latency(
                    "loky", timed(lambda: loky.submit(operator.pos, 1).result()), self.loky_pids
                )
            )
        if self.execnet:
            channel, pid = self.execnet[0]

            def execnet_echo() -> Any:
                channel.send(1)
                return channel.receive()

            peers.append(Latency("execnet (channel echo)", timed(execnet_echo), [pid]))
        if self.rpyc:
            connection, pid = self.rpyc[0]
            remote_pos = connection.modules.operator.pos
            peers.append(Latency("rpyc (classic)", timed(lambda: remote_pos(1)), [pid]))
        return peers

    # -- throughput ---------------------------------------------------------------------------
    def throughput(self) -> dict[str, Callable[[int], float]]:
        def sb_threads(n: int) -> Callable[[int], float]:
            body = lambda i: snakebridge.call("operator", "pos", [i])  # noqa: E731
            return lambda total: threaded([body] * n, total)

        async def sb_async(total: int, tasks: int) -> None:
            per = total // tasks

            async def worker() -> None:
                for i in range(per):
                    await snakebridge.acall("operator", "pos", [i])

            await asyncio.gather(*(worker() for _ in range(tasks)))

        def sb_acall(tasks: int) -> Callable[[int], float]:
            def run(total: int) -> float:
                start = time.perf_counter()
                self.loop.run_until_complete(sb_async(total, tasks))
                return time.perf_counter() - start

            return run

        def executor_threads(executor: Any, n: int) -> Callable[[int], float]:
            body = lambda i: executor.submit(operator.pos, i).result()  # noqa: E731
            return lambda total: threaded([body] * n, total)

        def pipe_body(conn: Connection) -> Callable[[int], Any]:
            def body(i: int) -> Any:
                conn.send(i)
                return conn.recv()

            return body

        def executor_map(executor: Any) -> Callable[[int], float]:
            def run(total: int) -> float:
                start = time.perf_counter()
                list(executor.map(operator.pos, range(total)))
                return time.perf_counter() - start

            return run

        def executor_submit(executor: Any) -> Callable[[int], float]:
            def run(total: int) -> float:
                start = time.perf_counter()
                futures = [executor.submit(operator.pos, i) for i in range(total)]
                for future in futures:
                    future.result()
                return time.perf_counter() - start

            return run

        def sb_map(total: int) -> float:
            start = time.perf_counter()
            snakebridge.map("operator", "pos", range(total))
            return time.perf_counter() - start

        runs: dict[str, Callable[[int], float]] = {
            "snakebridge.map (pipelined)": sb_map,
            "snakebridge.call, 2 threads": sb_threads(2),
            "snakebridge.call, 8 threads": sb_threads(8),
            "snakebridge.acall, 1 task": sb_acall(1),
            f"snakebridge.acall, {TP_IN_FLIGHT} tasks": sb_acall(TP_IN_FLIGHT),
            "raw Pipe x2, 2 threads (floor)": lambda total: threaded(
                [pipe_body(c) for c in self.pipes], total
            ),
            "ProcessPoolExecutor.map": executor_map(self.ppe),
            "ProcessPoolExecutor.submit all": executor_submit(self.ppe),
            "ProcessPoolExecutor, 8 threads": executor_threads(self.ppe, 8),
        }
        if self.loky is not None:
            runs["loky.map"] = executor_map(self.loky)
            runs["loky.submit all"] = executor_submit(self.loky)
            runs["loky, 8 threads"] = executor_threads(self.loky, 8)
        if self.execnet:
            channels = [channel for channel, _ in self.execnet]

            def execnet_pipelined(total: int) -> float:
                per = total // len(channels)
                start = time.perf_counter()
                for i in range(per):
                    for channel in channels:
                        channel.send(i)
                for channel in channels:
                    for _ in range(per):
                        channel.receive()
                return time.perf_counter() - start

            def echo_body(channel: Any) -> Callable[[int], Any]:
                def body(i: int) -> Any:
                    channel.send(i)
                    return channel.receive()

                return body

            runs["execnet x2, pipelined"] = execnet_pipelined
            runs["execnet x2, 2 threads"] = lambda total: threaded(
                [echo_body(c) for c in channels], total
            )
        if self.rpyc:
            bodies = [conn.modules.operator.pos for conn, _ in self.rpyc]
            runs["rpyc x2, 2 threads"] = lambda total: threaded(bodies, total)
        return runs

    # -- payload ------------------------------------------------------------------------------
    def payload(self, value: Any) -> dict[str, Callable[[], Any]]:
        pipe = self.pipes[0]

        def raw_pipe() -> Any:
            pipe.send(value)
            return pipe.recv()

        runs: dict[str, Callable[[], Any]] = {
            FLOOR: raw_pipe,
            SB: lambda: snakebridge.call("copy", "copy", [value]),
            "ProcessPoolExecutor": lambda: self.ppe.submit(copy.copy, value).result(),
        }
        if self.loky is not None:
            loky = self.loky
            runs["loky"] = lambda: loky.submit(copy.copy, value).result()
        if self.execnet:
            channel = self.execnet[0][0]

            def execnet_echo() -> Any:
                channel.send(value)
                return channel.receive()

            runs["execnet (channel echo)"] = execnet_echo
        if self.rpyc:
            import rpyc

            connection = self.rpyc[0][0]
            remote_copy = connection.modules.copy.copy
            if isinstance(value, bytes):  # brine carries bytes by value
                runs["rpyc (classic)"] = lambda: remote_copy(value)
            else:  # lists travel by reference; deliver/obtain is rpyc's way to move values

                def rpyc_values() -> Any:
                    remote = rpyc.classic.deliver(connection, value)
                    return rpyc.classic.obtain(remote_copy(remote))

                runs["rpyc (deliver/obtain)"] = rpyc_values
        return runs


# -- sections ---------------------------------------------------------------------------------
def pin(pids: list[int], cpus: set[int]) -> bool:
    """Set the CPU affinity of every thread of ``pids``; False where that is not possible."""
    try:
        for pid in pids:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setaffinity(int(tid), cpus)
    except (OSError, AttributeError):
        return False
    return True


def bench_latency(
    contenders: Contenders, rounds: int = LAT_ROUNDS, calls: int = LAT_CALLS
) -> dict[str, dict[str, float]]:
    peers = contenders.latency()
    for peer in peers:
        peer.run(LAT_WARMUP)
    for round_no in range(rounds):
        shift = round_no % len(peers)
        for peer in peers[shift:] + peers[:shift]:
            host0, workers0 = time.process_time_ns(), cpu_ns(peer.pids)
            peer.samples += peer.run(calls)
            host1, workers1 = time.process_time_ns(), cpu_ns(peer.pids)
            if workers0 is not None and workers1 is not None:
                peer.cpu.append((host1 - host0 + workers1 - workers0) / calls)
    return {
        peer.name: {
            "p50_us": statistics.median(peer.samples) / 1e3,
            "p99_us": quantile(peer.samples, 0.99) / 1e3,
            "cpu_us_per_call": statistics.median(peer.cpu) / 1e3 if peer.cpu else float("nan"),
        }
        for peer in peers
    }


def bench_latency_one_cpu(contenders: Contenders) -> dict[str, dict[str, float]] | None:
    """The same no-op round trips with the host and every worker pinned to one CPU.

    What a busy machine, a 1-CPU container or the scheduler's own wake-affine placement does:
    caller and worker share a CPU, so time spent polling for the answer is stolen from the
    worker that would produce it.
    """
    everything = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(everything) < 2:
        return None
    pids = [os.getpid(), *contenders.all_pids()]
    if not pin(pids, {everything[0]}):
        return None
    try:
        return bench_latency(contenders, rounds=LAT_ROUNDS_ONE_CPU, calls=LAT_CALLS_ONE_CPU)
    finally:
        pin(pids, set(everything))


def bench_throughput(contenders: Contenders) -> dict[str, float]:
    runs = contenders.throughput()
    for run in runs.values():
        run(400)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for round_no in range(TP_ROUNDS):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(TP_CALLS / runs[name](TP_CALLS))
    return {name: statistics.median(values) for name, values in rates.items()}


def bench_payload(contenders: Contenders) -> dict[str, dict[str, float]]:
    rng = random.Random(0)
    values = {
        "1 MiB bytes": rng.randbytes(1 << 20),
        "100k-float list": [rng.random() for _ in range(100_000)],
    }
    out: dict[str, dict[str, float]] = {}
    for label, value in values.items():
        runs = contenders.payload(value)
        for name, run in runs.items():
            if run() != value:
                raise AssertionError(f"{name} did not round-trip the {label}")
        samples: dict[str, list[int]] = {name: [] for name in runs}
        names = list(runs)
        for round_no in range(PAYLOAD_ROUNDS):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name] += timed(runs[name], PAYLOAD_BUDGET_S)(PAYLOAD_CALLS)
        out[label] = {name: statistics.median(s) / 1e6 for name, s in samples.items()}
    return out


_COLD_HELPERS = """
import os, sys, time
def two_pids(executor):
    pids = set()
    while len(pids) < 2:
        pids.update(f.result() for f in [executor.submit(os.getpid) for _ in range(2)])
def echo(conn):
    while True:
        try:
            conn.send(conn.recv())
        except EOFError:
            return
"""

# name -> (imports, start: until 2 workers have answered / are ready, teardown)
COLD: dict[str, tuple[str, str, str]] = {
    "snakebridge": (
        "import snakebridge",
        "snakebridge.call('os', 'getpid')\n"
        "assert [w['state'] for w in snakebridge.status()[0]['workers']] == ['idle', 'idle']",
        "snakebridge.shutdown()",
    ),
    "raw Popen of 2 `python -I` (exec floor)": (
        "import subprocess",
        "ps = [subprocess.Popen([sys.executable, '-I', '-c', 'import sys; print(1, flush=True);"
        " sys.stdin.read()'], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]\n"
        "[p.stdout.readline() for p in ps]",
        "[p.stdin.close() or p.wait() for p in ps]",
    ),
    "raw mp.Process x2 + Pipe (fork)": (
        "import multiprocessing as mp",
        "pipes = [mp.Pipe() for _ in range(2)]\n"
        "ps = [mp.Process(target=echo, args=(c,)) for _, c in pipes]\n"
        "[p.start() for p in ps]\n"
        "[a.send(1) for a, _ in pipes]; [a.recv() for a, _ in pipes]",
        "[p.terminate() for p in ps]; [p.join() for p in ps]",
    ),
    "ProcessPoolExecutor (fork)": (
        "import concurrent.futures as cf, multiprocessing as mp",
        "ex = cf.ProcessPoolExecutor(2, mp_context=mp.get_context('fork')); two_pids(ex)",
        "ex.shutdown()",
    ),
    "ProcessPoolExecutor (spawn)": (
        "import concurrent.futures as cf, multiprocessing as mp",
        "ex = cf.ProcessPoolExecutor(2, mp_context=mp.get_context('spawn')); two_pids(ex)",
        "ex.shutdown()",
    ),
    "loky": (
        "import loky",
        "ex = loky.get_reusable_executor(max_workers=2); two_pids(ex)",
        "ex.shutdown()",
    ),
    "execnet (2 gateways)": (
        "import execnet",
        "gws = [execnet.makegateway() for _ in range(2)]\n"
        "chs = [g.remote_exec('import os; channel.send(os.getpid())') for g in gws]\n"
        "[c.receive() for c in chs]",
        "[g.exit() for g in gws]",
    ),
    "rpyc (2 classic subprocs)": (
        "import rpyc",
        "cs = [rpyc.classic.connect_subproc() for _ in range(2)]\n"
        "[c.modules.os.getpid() for c in cs]",
        "[c.close() for c in cs]",
    ),
}


def bench_cold_start() -> dict[str, dict[str, float]]:
    """ms to 2 workers that answer, in a fresh interpreter: with the peer's imports, and without.

    "import+start" starts the clock before the peer's own imports (interpreter start-up is the
    same for all and is excluded); "start only" starts it after them.
    """
    # Every peer imports from cached bytecode, as an installed package would: the sandbox this
    # was written in sets PYTHONDONTWRITEBYTECODE, which leaves a source checkout uncompiled.
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "snakebridge-bench-pycache")
    results: dict[str, list[tuple[float, float]]] = {}
    names = list(COLD)
    for round_no in range(-1, COLD_ROUNDS):  # round -1 warms the bytecode and disk caches
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            imports, start, teardown = COLD[name]
            code = (
                "import time\nt0 = time.perf_counter()\n"
                f"{imports}\n"
                "t1 = time.perf_counter()\n"
                f"{_COLD_HELPERS}\n"
                f"{start}\n"
                "t2 = time.perf_counter()\n"
                "print('COLD', (t2 - t0) * 1e3, (t2 - t1) * 1e3, flush=True)\n"
                f"{teardown}\n"
            )
            try:
                done = subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    env=env,
                )
            except subprocess.TimeoutExpired as exc:
                stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout
                done = subprocess.CompletedProcess(exc.cmd, -1, stdout or "", "timed out")
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("COLD ")]
            if lines and round_no >= 0:
                _, both, only = lines[-1].split()
                results.setdefault(name, []).append((float(both), float(only)))
            elif not lines and round_no == -1:
                print(f"  (cold start of {name} failed: {done.stderr.strip()[-200:]})")
    return {
        name: {
            "import_start_ms": statistics.median(v[0] for v in values),
            "start_ms": statistics.median(v[1] for v in values),
        }
        for name, values in results.items()
    }


def timed_section(label: str, run: Callable[..., Any], *args: Any) -> Any:
    start = time.perf_counter()
    result = run(*args)
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)", flush=True)
    return result


# -- report -----------------------------------------------------------------------------------
def print_latency(title: str, latency: dict[str, dict[str, float]]) -> None:
    floor, ours = latency[FLOOR]["p50_us"], latency[SB]["p50_us"]
    print(f"\n{title}")
    print(
        f"  {'':38s} {'p50 us':>8s} {'p99 us':>8s} {'x raw Pipe':>11s} {'x snakebridge':>14s}"
        f" {'CPU us/call':>12s}"
    )
    for name, row in sorted(latency.items(), key=lambda item: item[1]["p50_us"]):
        print(
            f"  {name:38s} {row['p50_us']:8.1f} {row['p99_us']:8.1f} {row['p50_us'] / floor:10.2f}x"
            f" {row['p50_us'] / ours:13.2f}x {row['cpu_us_per_call']:12.1f}"
        )


def print_throughput(throughput: dict[str, float]) -> float:
    """Print section 2 with ratios; the best snakebridge rate."""
    best_sb = max(v for k, v in throughput.items() if k.startswith("snakebridge"))
    peers = {k: v for k, v in throughput.items() if _is_peer(k)}
    best_peer = max(peers, key=lambda k: peers[k])
    print(f"\n2. throughput, 2 workers, {TP_CALLS} small calls per run, many in flight")
    print(f"  {'':38s} {'calls/s':>9s}   {'x best peer':>11s}   (best peer: {best_peer})")
    for name, rate in sorted(throughput.items(), key=lambda item: -item[1]):
        print(f"  {name:38s} {rate:9.0f}   {rate / peers[best_peer]:10.2f}x")
    return best_sb


def _is_peer(name: str) -> bool:
    return not name.startswith(("raw", "snakebridge"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="run section 2 only (quick concurrency check)",
    )
    args = parser.parse_args()
    if args.throughput_only:
        contenders = Contenders()
        try:
            throughput = timed_section("throughput", bench_throughput, contenders)
        finally:
            contenders.close()
            snakebridge.shutdown()
        print_throughput(throughput)
        return
    began = time.perf_counter()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; medians over interleaved rounds"
    )

    contenders = Contenders()
    for skipped in contenders.skipped:
        print(f"  skipped: {skipped}")
    try:
        latency = timed_section("latency", bench_latency, contenders)
        one_cpu = timed_section("latency on one CPU", bench_latency_one_cpu, contenders)
        throughput = timed_section("throughput", bench_throughput, contenders)
        payload = timed_section("payload", bench_payload, contenders)
    finally:
        contenders.close()
        snakebridge.shutdown()
    cold = timed_section("cold start", bench_cold_start)

    print_latency(f"1. no-op round trip ({LAT_ROUNDS} rounds x {LAT_CALLS} calls)", latency)
    print("  (CPU us/call: host process + its workers, every thread; polling shows up here)")
    if one_cpu is not None:
        print_latency(
            f"1b. no-op round trip, host and workers pinned to one CPU ({LAT_ROUNDS_ONE_CPU} x "
            f"{LAT_CALLS_ONE_CPU})",
            one_cpu,
        )

    best_sb = print_throughput(throughput)

    print("\n3. cold start to 2 workers answering (fresh interpreter per sample, bytecode cached)")
    print(f"  {'':42s} {'import+start':>13s} {'start only':>11s} {'x snakebridge':>14s}")
    sb_cold = cold.get("snakebridge", {"start_ms": float("nan"), "import_start_ms": float("nan")})
    for name, row in sorted(cold.items(), key=lambda item: item[1]["import_start_ms"]):
        print(
            f"  {name:42s} {row['import_start_ms']:10.1f} ms {row['start_ms']:8.1f} ms"
            f" {row['import_start_ms'] / sb_cold['import_start_ms']:8.2f}x /"
            f"{row['start_ms'] / sb_cold['start_ms']:5.2f}x"
        )

    print("\n4. payload round trip, p50")
    for label, rows in payload.items():
        sb = rows[SB]
        print(f"  {label}")
        for name, ms in sorted(rows.items(), key=lambda item: item[1]):
            print(
                f"    {name:36s} {ms:8.2f} ms   {ms / rows[FLOOR]:5.2f}x raw Pipe"
                f"   {ms / sb:5.2f}x snakebridge"
            )

    floor, ours = latency[FLOOR]["p50_us"], latency[SB]["p50_us"]
    fastest_peer = min(v["p50_us"] for k, v in latency.items() if _is_peer(k))
    peer_rates = {k: v for k, v in throughput.items() if _is_peer(k)}
    best_peer = max(peer_rates, key=lambda k: peer_rates[k])
    best_rr = max(v for k, v in peer_rates.items() if "pipelined" not in k)
    bars = [
        (f"no-op p50 <= 1.5x raw Pipe ({ours / floor:.2f}x)", ours <= 1.5 * floor),
        (
            f"no-op p50 faster than every peer ({ours / fastest_peer:.2f}x the fastest)",
            ours < fastest_peer,
        ),
        (
            f"2-worker throughput >= best peer ({best_sb / peer_rates[best_peer]:.2f}x "
            f"{best_peer})",
            best_sb >= peer_rates[best_peer],
        ),
        (
            f"  same, request/response peers only ({best_sb / best_rr:.2f}x)",
            best_sb >= best_rr,
        ),
        (
            f"cold start of 2 workers <= 150 ms (start only {sb_cold['start_ms']:.0f} ms)",
            sb_cold["start_ms"] <= 150,
        ),
        (
            f"  same, imports counted (import+start {sb_cold['import_start_ms']:.0f} ms)",
            sb_cold["import_start_ms"] <= 150,
        ),
    ]
    if one_cpu is not None:
        ratio = one_cpu[SB]["p50_us"] / one_cpu[FLOOR]["p50_us"]
        bars.append((f"  (not a bar) on one CPU: {ratio:.2f}x raw Pipe", ratio <= 1.5))
    print("\nissue 2 bars")
    for label, ok in bars:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    print(f"\n(total {time.perf_counter() - began:.0f} s)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "latency": latency,
                    "latency_one_cpu": one_cpu,
                    "throughput": throughput,
                    "cold": cold,
                    "payload": payload,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
