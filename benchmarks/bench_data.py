"""Large data side by side in one run: arrays, Arrow, pandas; prints ratios, draws a chart.

Run: ``pip install -e '.[bench,test]' && python benchmarks/bench_data.py`` (``--json FILE`` also
writes the numbers, ``--png FILE`` names the chart; default ``benchmarks/bench_data.png``).

Every contender does the same two things with a value the host holds: **sum** (the worker
reduces it, a number comes back) and **echo** (the value comes back). Contenders:

- floor: a forked child with both ends mapping one shared region set up beforehand; the host
  copies the value in, a pipe carries a few bytes, the child reads the region in place (echo:
  copies its answer into a second region, which the host reads in place). No serialisation, no
  allocation: the least work any shared-memory design does per call;
- raw UDS: the bytes through a socketpair with ``sendall``/``recv_into`` into buffers allocated
  once;
- snakebridge, three ways: shared memory with segments reused (the shipped design), a fresh
  segment per call (the alternative measured for issue 13), and by value (``shm_threshold =
  "off"``: everything through the socket, as before the data plane);
- ProcessPoolExecutor (pickle), execnet (bytes over its channel), Ray if installed.

Rounds interleave contenders (the order rotates) and medians are reported: the machine is a
shared, noisy 2-core VM, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gc
import json
import mmap
import multiprocessing as mp
import os
import socket
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import snakebridge

ROUNDS = 3
BUDGET_S = 0.3  # per contender, case and round: slow contenders get fewer samples (>= 1)
MAX_CALLS = 20
SIZES = {"1 KiB": 1 << 10, "1 MiB": 1 << 20, "64 MiB": 64 << 20}
ROWS = 1_000_000
REGION = 80 << 20
SB_MODES = {
    "snakebridge shm (reused segments)": {},
    "snakebridge shm (segment per call)": {"SNAKEBRIDGE_SHM_REUSE": "0"},
    "snakebridge by value (threshold off)": {"SNAKEBRIDGE_SHM_THRESHOLD": "off"},
}
FLOOR = "floor: pre-mapped shared memory"
ARRAYS_ONLY = ("raw UDS (recv_into)", "snakebridge shm (segment per call)")
TABLE_SUM = "__import__('pyarrow.compute').compute.sum(t.column('x')).as_py()"
FRAME_SUM = "float(t['x'].sum())"


def _identity(value: Any) -> Any:
    return value


def _array_sum(value: Any) -> float:
    return float(np.sum(value))


def _frame_sum(value: Any) -> float:
    return float(value["x"].sum())


def _table_sum(value: Any) -> float:
    import pyarrow.compute as pc

    return float(pc.sum(value.column("x")).as_py())


# -- cases --------------------------------------------------------------------------------------
def make_cases() -> dict[str, Any]:
    import pandas as pd
    import pyarrow as pa

    rng = np.random.default_rng(0)
    cases: dict[str, Any] = {name: rng.random(size // 8) for name, size in SIZES.items()}
    cases["Arrow 1M rows"] = pa.table(
        {"x": rng.random(ROWS), "k": rng.integers(0, 1000, ROWS), "s": pa.array(["ab"] * ROWS)}
    )
    cases["DataFrame 1M rows"] = pd.DataFrame(
        {"x": rng.random(ROWS), "k": rng.integers(0, 1000, ROWS)}
    )
    return cases


def kind_of(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "array"
    return "table" if type(value).__module__.startswith("pyarrow") else "frame"


# -- floor: pre-mapped shared memory ----------------------------------------------------------
def _floor_child(conn: Any, region: mmap.mmap) -> None:
    import pandas as pd  # noqa: F401  (imported before timing, like every peer)
    import pyarrow as pa

    inbox = memoryview(region)[:REGION]
    outbox = memoryview(region)[REGION:]
    while True:
        try:
            kind, op, nbytes, _ = conn.recv()
        except EOFError:
            return
        if kind == "array":
            value: Any = np.frombuffer(inbox[:nbytes], dtype="f8")
        else:
            value = pa.ipc.open_stream(pa.py_buffer(inbox[:nbytes])).read_all()
            if kind == "frame":
                value = value.to_pandas()
        if op == "sum":
            total = {"array": _array_sum, "table": _table_sum, "frame": _frame_sum}[kind](value)
            conn.send(total)
            continue
        if kind == "array":
            outbox[:nbytes] = inbox[:nbytes]
            conn.send(nbytes)
        else:
            conn.send(_write_ipc(value if kind == "table" else pa.Table.from_pandas(value), outbox))


def _write_ipc(table: Any, target: memoryview) -> int:
    import pyarrow as pa

    sink = pa.FixedSizeBufferWriter(pa.py_buffer(target))
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return int(sink.tell())


class Floor:
    def __init__(self) -> None:
        self.region = mmap.mmap(-1, 2 * REGION)
        self.conn, child = mp.Pipe()
        self.proc = mp.Process(target=_floor_child, args=(child, self.region), daemon=True)
        self.proc.start()
        self.inbox = memoryview(self.region)[:REGION]
        self.outbox = memoryview(self.region)[REGION:]

    def run(self, op: str, value: Any) -> Any:
        import pyarrow as pa

        kind = kind_of(value)
        if kind == "array":
            nbytes = value.nbytes
            np.frombuffer(self.inbox[:nbytes], dtype="f8")[:] = value
        else:
            table = value if kind == "table" else pa.Table.from_pandas(value)
            nbytes = _write_ipc(table, self.inbox)
        self.conn.send((kind, op, nbytes, None))
        answer = self.conn.recv()
        if op == "sum":
            return answer
        if kind == "array":
            return np.frombuffer(self.outbox[:answer], dtype="f8")
        table = pa.ipc.open_stream(pa.py_buffer(self.outbox[:answer])).read_all()
        return table if kind == "table" else table.to_pandas()

    def close(self) -> None:
        self.conn.close()
        self.proc.join(2)


# -- raw UDS -----------------------------------------------------------------------------------
_HEAD = struct.Struct("<QB")


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if not n:
            raise EOFError
        got += n


def _uds_child(sock: socket.socket) -> None:
    buffer = bytearray(REGION)
    view = memoryview(buffer)
    head = bytearray(_HEAD.size)
    while True:
        try:
            _recv_exact(sock, memoryview(head))
        except EOFError:
            return
        nbytes, op = _HEAD.unpack(head)
        _recv_exact(sock, view[:nbytes])
        if op == 0:
            total = _array_sum(np.frombuffer(view[:nbytes], dtype="f8"))
            sock.sendall(struct.pack("<Qd", 8, total))
        else:
            sock.sendall(struct.pack("<Q", nbytes))
            sock.sendall(view[:nbytes])


class RawUDS:
    def __init__(self) -> None:
        self.sock, child = socket.socketpair()
        self.proc = mp.Process(target=_uds_child, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.buffer = bytearray(REGION)

    def run(self, op: str, value: Any) -> Any:
        if kind_of(value) != "array":
            return None
        data = memoryview(value).cast("B")
        self.sock.sendall(_HEAD.pack(data.nbytes, 0 if op == "sum" else 1))
        self.sock.sendall(data)
        head = bytearray(8)
        _recv_exact(self.sock, memoryview(head))
        (nbytes,) = struct.unpack("<Q", head)
        if op == "sum":
            total = bytearray(8)
            _recv_exact(self.sock, memoryview(total))
            return struct.unpack("<d", total)[0]
        view = memoryview(self.buffer)[:nbytes]
        _recv_exact(self.sock, view)
        return np.frombuffer(view, dtype="f8")

    def close(self) -> None:
        self.sock.close()
        self.proc.join(2)


# -- peers ---------------------------------------------------------------------------------------
class Executor:
    def __init__(self) -> None:
        self.pool = cf.ProcessPoolExecutor(1)
        self.pool.submit(_identity, 1).result()

    def run(self, op: str, value: Any) -> Any:
        if op == "echo":
            return self.pool.submit(_identity, value).result()
        reducer = {"array": _array_sum, "table": _table_sum, "frame": _frame_sum}[kind_of(value)]
        return self.pool.submit(reducer, value).result()

    def close(self) -> None:
        self.pool.shutdown()


_EXECNET_CHILD = """
import pickle
while True:
    op, data = channel.receive()
    value = pickle.loads(data)
    if op == "sum":
        import numpy
        if isinstance(value, numpy.ndarray):
            channel.send(float(value.sum()))
        elif hasattr(value, "column"):
            import pyarrow.compute
            channel.send(float(pyarrow.compute.sum(value.column("x")).as_py()))
        else:
            channel.send(float(value["x"].sum()))
    else:
        channel.send(pickle.dumps(value, protocol=5))
"""


class Execnet:
    def __init__(self) -> None:
        import execnet

        self.gateway = execnet.makegateway()
        self.channel = self.gateway.remote_exec(_EXECNET_CHILD)

    def run(self, op: str, value: Any) -> Any:
        import pickle

        self.channel.send((op, pickle.dumps(value, protocol=5)))
        answer = self.channel.receive()
        return answer if op == "sum" else pickle.loads(answer)

    def close(self) -> None:
        self.gateway.exit()


class Ray:
    def __init__(self) -> None:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        self.ray = ray

        @ray.remote
        class Actor:
            def run(self, op: str, value: Any) -> Any:
                if op == "echo":
                    return value
                kind = kind_of(value)
                return {"array": _array_sum, "table": _table_sum, "frame": _frame_sum}[kind](value)

        self.actor = Actor.remote()  # type: ignore[attr-defined]

    def run(self, op: str, value: Any) -> Any:
        return self.ray.get(self.actor.run.remote(op, value))

    def close(self) -> None:
        self.ray.shutdown()


class Snakebridge:
    """snakebridge in one mode (set by environment variables read when its workers start)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def start(self) -> None:
        snakebridge.shutdown()
        for key in ("SNAKEBRIDGE_SHM_REUSE", "SNAKEBRIDGE_SHM_THRESHOLD"):
            os.environ.pop(key, None)
        os.environ.update(self.env)
        snakebridge.call("operator", "pos", [1])

    def run(self, op: str, value: Any) -> Any:
        kind = kind_of(value)
        if op == "echo":
            return snakebridge.call("operator", "getitem", [[value], 0])
        if kind == "array":
            return snakebridge.call("numpy", "sum", [value])
        code = TABLE_SUM if kind == "table" else FRAME_SUM
        return snakebridge.call("builtins", "eval", [code, {"t": value}])

    def close(self) -> None:
        snakebridge.shutdown()


# -- measurement ---------------------------------------------------------------------------------
def check(op: str, value: Any, answer: Any) -> None:
    if op == "sum":
        expected = {"array": _array_sum, "table": _table_sum, "frame": _frame_sum}
        assert abs(answer - expected[kind_of(value)](value)) < 1e-6 * max(1.0, abs(answer))
    elif kind_of(value) == "array":
        assert answer.shape == value.shape and answer[-1] == value[-1]
    else:
        assert len(answer) == len(value)


def sample(run: Callable[[str, Any], Any], op: str, value: Any, warm: bool) -> list[float]:
    if not warm:
        check(op, value, run(op, value))  # warm-up, and the answer is right
    times: list[float] = []
    stop = time.perf_counter() + BUDGET_S
    while len(times) < MAX_CALLS and (not times or time.perf_counter() < stop):
        gc.collect()
        start = time.perf_counter()
        answer = run(op, value)
        times.append(time.perf_counter() - start)
        del answer
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the medians (ms) to this file")
    parser.add_argument("--png", default=os.path.join(os.path.dirname(__file__), "bench_data.png"))
    args = parser.parse_args()
    began = time.perf_counter()
    load = os.getloadavg()
    cases = make_cases()
    peers: dict[str, Any] = {FLOOR: Floor(), "raw UDS (recv_into)": RawUDS()}
    skipped: list[str] = []
    for name, factory in (
        ("ProcessPoolExecutor (pickle)", Executor),
        ("execnet (pickle 5 bytes)", Execnet),
        ("Ray actor", Ray),
    ):
        try:
            peers[name] = factory()
        except ImportError as exc:
            skipped.append(f"{name} ({exc.name} not installed)")
    modes = {name: Snakebridge(env) for name, env in SB_MODES.items()}
    samples: dict[tuple[str, str, str], list[float]] = {}
    order = list(peers) + list(modes)
    for round_ in range(ROUNDS):
        rotated = order[round_ % len(order) :] + order[: round_ % len(order)]
        for name in rotated:
            contender = peers.get(name) or modes[name]
            if name in modes:
                modes[name].start()
            for case, value in cases.items():
                for op in ("sum", "echo"):
                    if kind_of(value) != "array" and name in ARRAYS_ONLY:
                        continue
                    # snakebridge restarts its workers every round (modes are read at start):
                    # a call first, like the others had, so no contender is timed cold
                    warm = round_ > 0 and name not in modes
                    times = sample(contender.run, op, value, warm=warm)
                    samples.setdefault((name, case, op), []).extend(times)
            if name in modes:
                modes[name].close()
    medians = {key: statistics.median(times) * 1e3 for key, times in samples.items()}
    medians.update(big_ab(peers[FLOOR], cases["64 MiB"]))
    for contender in peers.values():
        contender.close()
    medians.update(one_kib_ab(cases["1 KiB"]))
    report(medians, cases, order, skipped, load, time.perf_counter() - began, args)


AB_ON, AB_OFF = "1 KiB A/B: data plane on", "1 KiB A/B: data plane off"
AB_SB, AB_FLOOR = "64 MiB A/B: snakebridge shm", "64 MiB A/B: floor"
AB_PAIRS = 30


def big_ab(floor: Floor, value: Any) -> dict[tuple[str, str, str], float]:
    """64 MiB calls to the floor and to snakebridge (pooled segments), alternating call by call.

    The rounds above time each contender in its own stretch of seconds; on a shared machine the
    load moves between stretches, so a ratio of two medians drifts with it (0.75-1.36x for the
    same code). Alternating puts both under the same load: these give the bars' ratios.
    """
    sb = Snakebridge({})
    sb.start()
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for op in ("sum", "echo"):
            for run in (floor.run, sb.run):
                check(op, value, run(op, value))  # warm, and right
            for _ in range(AB_PAIRS):
                for name, run in ((AB_FLOOR, floor.run), (AB_SB, sb.run)):
                    gc.collect()
                    start = time.perf_counter()
                    answer = run(op, value)
                    times.setdefault((name, op), []).append(time.perf_counter() - start)
                    del answer
    finally:
        sb.close()
    return {(name, "64 MiB", op): statistics.median(t) * 1e3 for (name, op), t in times.items()}


def one_kib_ab(value: Any) -> dict[tuple[str, str, str], float]:
    """1 KiB calls with the host's data plane on and off, alternating call by call in one pool.

    At 1 KiB both go by value; this isolates what the data plane adds to a small call (the
    size check) from the load drift between the runs above, which is larger than it.
    """
    from snakebridge_worker import shm

    sb = Snakebridge({})
    sb.start()
    times: dict[tuple[str, bool], list[float]] = {}
    try:
        for op in ("sum", "echo"):
            sb.run(op, value)
            for i in range(4000):
                on = i % 2 == 0
                shm.CONFIG.enabled = on
                start = time.perf_counter()
                sb.run(op, value)
                times.setdefault((op, on), []).append(time.perf_counter() - start)
    finally:
        shm.CONFIG.enabled = True
        sb.close()
    return {
        (AB_ON if on else AB_OFF, "1 KiB", op): statistics.median(t) * 1e3
        for (op, on), t in times.items()
    }


def report(
    medians: dict[tuple[str, str, str], float],
    cases: dict[str, Any],
    order: list[str],
    skipped: list[str],
    load: tuple[float, float, float],
    elapsed: float,
    args: argparse.Namespace,
) -> None:
    print(
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; cpus: {os.cpu_count()}"
    )
    if skipped:
        print("skipped: " + ", ".join(skipped))
    for op in ("sum", "echo"):
        print(f"\n{op}: median ms (ratio to the floor)")
        print(f"{'contender':40s}" + "".join(f"{case:>22s}" for case in cases))
        for name in order:
            cells = []
            for case in cases:
                value = medians.get((name, case, op))
                floor = medians.get((FLOOR, case, op))
                if value is None:
                    cells.append(f"{'-':>22s}")
                else:
                    ratio = f" ({value / floor:.2f}x)" if floor else ""
                    cells.append(f"{value:12.3f}{ratio:>10s}")
            print(f"{name:40s}" + "".join(cells))
    print("\n64 MiB, floor and snakebridge shm alternating call by call (median ms):")
    for op in ("sum", "echo"):
        sb, floor = medians[(AB_SB, "64 MiB", op)], medians[(AB_FLOOR, "64 MiB", op)]
        print(f"  {op}: snakebridge {sb:.2f}, floor {floor:.2f} ({sb / floor:.2f}x)")
    print("\n1 KiB, host data plane on/off alternating call by call (median ms):")
    for op in ("sum", "echo"):
        on, off = medians[(AB_ON, "1 KiB", op)], medians[(AB_OFF, "1 KiB", op)]
        print(f"  {op}: on {on:.3f}, off {off:.3f} ({on / off:.2f}x)")
    bars(medians)
    print(f"\nwhole run: {elapsed:.0f} s; load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({" | ".join(key): ms for key, ms in medians.items()}, handle, indent=1)
    chart(medians, order, args.png)


def bars(medians: dict[tuple[str, str, str], float]) -> None:
    checks = [
        (
            "64 MiB sum <= 1.3x floor (interleaved A/B)",
            medians[(AB_SB, "64 MiB", "sum")],
            1.3 * medians[(AB_FLOOR, "64 MiB", "sum")],
        ),
        (
            "64 MiB echo <= 1.5x floor (interleaved A/B)",
            medians[(AB_SB, "64 MiB", "echo")],
            1.5 * medians[(AB_FLOOR, "64 MiB", "echo")],
        ),
    ]
    for op in ("sum", "echo"):
        checks.append(
            (
                f"1 KiB {op} no slower than by value (interleaved A/B)",
                medians[(AB_ON, "1 KiB", op)],
                medians[(AB_OFF, "1 KiB", op)] * 1.05,
            )
        )
    print("\nbars (issue 13):")
    for label, got, limit in checks:
        print(f"  {'PASS' if got <= limit else 'FAIL'}  {label}: {got:.3f} ms (limit {limit:.3f})")


def chart(medians: dict[tuple[str, str, str], float], order: list[str], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    sizes = [SIZES[case] for case in SIZES]
    for axis, op in zip(axes, ("sum", "echo"), strict=True):
        for name in order:
            points = [(SIZES[c], medians[(name, c, op)]) for c in SIZES if (name, c, op) in medians]
            if points:
                axis.plot(*zip(*points, strict=True), marker="o", label=name)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(sizes, list(SIZES))
        axis.set_title(f"float64 array, {op} (median of rounds)")
        axis.set_xlabel("array size")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms per call (log)")
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
