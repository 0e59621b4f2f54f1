"""Pools on a local Ray cluster (ray #15): the same pool-level behaviour as process pools.

One loopback cluster per module (``ray.init(num_cpus=2)``); each test gets a fresh
``backend = "ray"`` default pool of two actors.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib.util
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge.config import load_settings
from snakebridge.runtime import dataplane
from snakebridge.runtime.client import runtime
from snakebridge_worker import shm

from . import test_pool
from .conftest import registry_size

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

RAY_POOL = """
[tool.snakebridge.libraries]
math = "stdlib"
operator = "stdlib"
functools = "stdlib"
io = "stdlib"
time = "stdlib"
numpy = "stdlib"
os = {version = "stdlib", allow_private = true}

[tool.snakebridge.pools.default]
backend = "ray"
size = 2
num_cpus = 0.5
"""


def _segments() -> set[str]:
    """This host's data-plane segments in /dev/shm (Ray's own plasma files never match)."""
    prefix = f"sb-{shm.CONFIG.run}-"
    return {n for n in os.listdir(shm.SHM_DIR) if shm.NAME_RE.match(n) and n.startswith(prefix)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    before = _segments()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    snakebridge.shutdown()
    ray.shutdown()
    gc.collect()
    dataplane.trim()
    # the actors (killed ones too) left nothing behind for later modules' leak checks to see
    assert _segments() <= before


@pytest.fixture
def ray_pool(cluster: Any, configured: Callable[[str], Path]) -> Iterator[None]:
    configured(RAY_POOL)
    yield


def _pids() -> list[int]:
    return [w["pid"] for w in snakebridge.status()[0]["workers"]]


def _actor_pids() -> set[int]:
    from ray._private.state import actors  # the GCS's actor table (no dashboard needed)

    return {a["Pid"] for a in actors().values() if a["State"] == "ALIVE"}


POOL_LEVEL = [
    test_pool.test_eight_threads_and_a_hundred_tasks_at_once,
    test_pool.test_async_twins_and_async_timeout,
    test_pool.test_map_pipelines_calls_in_order_and_raises_the_first_error,
    test_pool.test_map_survives_crashes_and_timeouts,
]


@pytest.mark.parametrize("case", POOL_LEVEL, ids=lambda case: case.__name__)
def test_pool_level_behaviour_on_ray(ray_pool: None, case: Callable[[], None]) -> None:
    case()


def test_calls_map_and_acall_run_in_actors(ray_pool: None) -> None:
    assert snakebridge.call("operator", "add", [2, 3]) == 5
    assert snakebridge.map("math", "sqrt", [1, 4, 9]) == [1.0, 2.0, 3.0]
    assert asyncio.run(snakebridge.acall("operator", "mul", [6, 7])) == 42
    pids = _pids()
    assert len(pids) == 2 and os.getpid() not in pids
    assert snakebridge.call("os", "getpid", []) in pids
    assert set(pids) <= _actor_pids()  # status shows the actors' processes
    pool = snakebridge.status()[0]
    assert pool["backend"] == "ray" and all(len(w["actor"]) == 12 for w in pool["workers"])
    from snakebridge.envs.doctor import diagnose

    assert any("pool default: Ray" in line.text for line in diagnose(load_settings()))


def test_refs_live_in_the_actor_that_made_them(ray_pool: None) -> None:
    buffer = snakebridge.call("io", "StringIO", ["hello ray"])
    holder = buffer._sb_worker.pid
    assert holder in _pids()
    assert snakebridge.method(buffer, "read", 5) == "hello"
    assert snakebridge.method(buffer, "getvalue") == "hello ray"
    with snakebridge.Session() as session:
        inner = session.call("io", "BytesIO", [b"abc"])
        assert snakebridge.method(inner, "getvalue") == b"abc"
    with pytest.raises(snakebridge.RefInvalid):
        snakebridge.method(inner, "getvalue")


def test_callbacks_reach_the_host(ray_pool: None) -> None:
    seen: list[tuple[int, int]] = []

    def add(a: int, b: int) -> int:
        seen.append((a, b))
        return a + b

    assert snakebridge.call("functools", "reduce", [add, [1, 2, 3, 4]]) == 10
    assert seen == [(1, 2), (3, 3), (6, 4)]


def test_timeout_kills_the_actor_and_the_next_call_works(ray_pool: None) -> None:
    with pytest.raises(snakebridge.CallTimeout):
        snakebridge.call("time", "sleep", [30], timeout=0.5)
    assert snakebridge.call("operator", "pos", [7]) == 7


def test_sigkilled_actor_mid_call_is_a_crash_and_is_replaced(ray_pool: None) -> None:
    snakebridge.call("operator", "pos", [1])
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            snakebridge.call("time", "sleep", [60])
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    pool = runtime().pools["default"]
    while not any(w.state.value == "busy" for w in pool.workers):
        time.sleep(0.01)
    victim = next(w.pid for w in pool.workers if w.state.value == "busy")
    os.kill(victim, signal.SIGKILL)
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], snakebridge.WorkerCrashed)
    assert errors[0].pid == victim
    assert snakebridge.call("operator", "neg", [5]) == -5
    while len(pool.workers) < 2:  # the supervisor starts a replacement actor
        time.sleep(0.05)
    assert victim not in _pids()


def test_cluster_status_names_the_cluster(ray_pool: None) -> None:
    from snakebridge.runtime.ray_transport import cluster_status

    snakebridge.call("operator", "pos", [1])
    status = cluster_status()
    assert status is not None and status["nodes"] == 1
    assert status["resources"]["CPU"] == 2.0


def test_ray_keys_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.toml"
    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(path))
    bad = {
        "num_cpus = -1": "num_cpus must be a finite number",
        "resources = {CPU = 1.0}": "use num_cpus/num_gpus",
        "resources = {accelerator = 0.0}": "must be a number above 0",
        'backend = "slurm"': "backend",
    }
    for line, problem in bad.items():
        backend = "" if line.startswith("backend") else 'backend = "ray"\n'
        path.write_text(f"[tool.snakebridge.pools.gpu]\n{backend}{line}\n")
        with pytest.raises(snakebridge.ConfigError, match=problem):
            load_settings()


def test_without_ray_the_backend_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        functools.partial(lambda real, name, *a: None if name == "ray" else real(name, *a), real),
    )
    path = tmp_path / "ray.toml"
    path.write_text('[tool.snakebridge.pools.default]\nbackend = "ray"\n')
    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(path))
    with pytest.raises(snakebridge.ConfigError, match=r"pip install snakebridge\[ray\]"):
        load_settings()


def test_a_connection_without_the_token_is_refused() -> None:
    import socket

    import msgpack

    from snakebridge.runtime.ray_transport import RayTransport
    from snakebridge_worker import protocol as p
    from snakebridge_worker.ray_actor import AUTH

    transport = RayTransport.__new__(RayTransport)
    transport._token = "a" * 64
    for frame, accepted in [
        (msgpack.packb([AUTH, "a" * 64]), True),
        (msgpack.packb([AUTH, "b" * 64]), False),
        (msgpack.packb([p.HELLO, 0, {}]), False),
        (b"\xff" * 12, False),
    ]:
        host, rogue = socket.socketpair()
        rogue.sendall(p.frame(frame))
        rogue.close()
        assert transport._authenticated(host) is accepted
        host.close()


def _counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count what goes through the object store: host puts, and reads of the worker's puts."""
    from snakebridge.runtime import ray_transport
    from snakebridge_worker import oob

    seen = {"put": 0, "read": 0}
    put, read = ray_transport.HostStore.encode, oob.STORE_DECODE
    assert read is not None

    def counted_put(self: Any, *args: Any) -> Any:
        seen["put"] += 1
        return put(self, *args)

    def counted_read(codec: Any, data: bytes) -> Any:
        seen["read"] += 1
        return read(codec, data)

    monkeypatch.setattr(ray_transport.HostStore, "encode", counted_put)
    monkeypatch.setattr(oob, "STORE_DECODE", counted_read)
    return seen


def test_a_64_mib_array_goes_both_ways_through_the_object_store(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from snakebridge.runtime.codec import CALLBACKS

    seen = _counting(monkeypatch)
    data = np.random.default_rng(15).random(8 << 20)  # 64 MiB of float64
    back = snakebridge.call("numpy", "copy", [data])
    assert seen == {"put": 1, "read": 1}
    assert type(back) is np.ndarray and back.dtype == data.dtype and back.shape == data.shape
    assert np.array_equal(back, data) and not back.flags.writeable
    assert snakebridge.call("numpy", "sum", [data]) == data.sum()
    # released: the host holds none of its objects once the worker read them, the workers
    # none of theirs once the host read them; the array read stays valid without them
    assert not any(isinstance(held, ray.ObjectRef) for held in CALLBACKS.values())
    assert registry_size(runtime().pools["default"]) == 0
    assert np.array_equal(back, data)


def test_buffers_and_odd_arrays_through_the_object_store(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    seen = _counting(monkeypatch)
    blob = os.urandom(1 << 20)
    assert snakebridge.call("operator", "pos", [7]) == 7
    assert snakebridge.call("operator", "concat", [blob, b"!"]) == blob + b"!"
    assert snakebridge.call("operator", "concat", [bytearray(blob), b""]) == bytearray(blob)
    fortran = np.asfortranarray(np.arange(1 << 18, dtype=np.int32).reshape(512, 512))
    assert np.array_equal(snakebridge.call("numpy", "negative", [fortran]), -fortran)
    when = np.arange(0, 1 << 15, dtype="datetime64[s]")  # no buffer-protocol format
    assert np.array_equal(snakebridge.call("numpy", "copy", [when]), when)
    record = np.zeros(1 << 14, dtype=[("a", "<i4"), ("b", ">f8", (2,))])
    assert snakebridge.call("numpy", "copy", [record]).tobytes() == record.tobytes()
    assert seen == {"put": 5, "read": 5}
    small = np.arange(10)
    assert np.array_equal(snakebridge.call("numpy", "copy", [small]), small)
    assert seen["put"] == 5  # under the threshold: in the frame


def _held_objects() -> int:
    """Object-store objects this host still holds references to (Ray's own count)."""
    gc.collect()
    core = ray._private.worker.global_worker.core_worker
    return sum(1 for counts in core.get_all_reference_counts().values() if counts["local"] > 0)


def test_results_come_back_without_a_copy_in_the_worker_and_are_released(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from snakebridge.runtime.codec import CALLBACKS
    from snakebridge_worker import ray_store

    snakebridge.call("operator", "pos", [0])
    baseline = _held_objects()
    seen = _counting(monkeypatch)
    data = np.random.default_rng(1).integers(0, 1 << 60, 1 << 20)  # 8 MiB of int64
    back = snakebridge.call("numpy", "asarray", [data])  # the argument itself, sent back
    assert seen == {"put": 1, "read": 1}
    assert back.dtype == data.dtype and np.array_equal(back, data) and not back.flags.writeable
    # what a worker puts is a PickleBuffer's bytes; the host reads the buffer table, not a pickle
    mv = snakebridge.call("operator", "getitem", [[memoryview(bytearray(data.tobytes()))], 0])
    assert bytes(mv) == data.tobytes()
    assert ray_store.as_bytes_array(memoryview(b"xy")).tobytes() == b"xy"
    assert registry_size(runtime().pools["default"]) == 0
    assert not any(isinstance(held, ray.ObjectRef) for held in CALLBACKS.values())
    assert _held_objects() == baseline  # neither side keeps a reference; `back` maps the object
    assert np.array_equal(back, data)


def test_host_callback_results_go_through_the_object_store(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from snakebridge.runtime.codec import CALLBACKS

    snakebridge.call("operator", "pos", [0])
    seen = _counting(monkeypatch)
    data = np.arange(1 << 18, dtype=np.float32).reshape(512, 512)
    blob = os.urandom(1 << 20)

    def make() -> Any:
        return data

    back = snakebridge.call("operator", "call", [make])  # host → worker as a callback result
    assert seen == {"put": 1, "read": 1}  # and back to the host as the call's result
    assert back.shape == data.shape and np.array_equal(back, data)
    assert snakebridge.call("operator", "call", [lambda: blob]) == blob
    assert seen == {"put": 2, "read": 2}
    x, y = np.arange(1 << 16, dtype=np.int64), np.ones(1 << 16, dtype=np.int64)
    total = snakebridge.call("functools", "reduce", [lambda a, b: a + b, [x, y]])
    assert seen == {"put": 5, "read": 5}  # x, y out; both into the callback; a + b back and out
    assert np.array_equal(total, x + y)
    assert registry_size(runtime().pools["default"]) == 0
    assert not any(isinstance(held, ray.ObjectRef) for held in CALLBACKS.values())


def test_executor_calls_go_through_the_object_store(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    seen = _counting(monkeypatch)
    arrays = [np.full(1 << 17, i, dtype=np.int64) for i in range(3)]
    with snakebridge.executor("numpy") as ex:
        assert ex.submit("sum", arrays[0]).result() == 0
        assert [int(total) for total in ex.map("sum", arrays)] == [0, 1 << 17, 2 << 17]
        copies = list(ex.map("copy", arrays))
    assert seen["put"] == 7 and seen["read"] == 3
    assert all(np.array_equal(a, b) for a, b in zip(copies, arrays, strict=True))
    assert registry_size(runtime().pools["default"]) == 0


def test_only_calls_to_ray_pools_use_the_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from snakebridge.config import PoolSpec
    from snakebridge.runtime import exchange, ray_transport

    line = type("FakeLine", (), {})()
    line.transport = ray_transport.RayTransport.__new__(ray_transport.RayTransport)
    local, remote = PoolSpec(), PoolSpec(backend="ray")
    assert ray_transport.current_store() is None  # no call being encoded
    with ray_transport.storing(remote):
        assert isinstance(ray_transport.current_store(), ray_transport.HostStore)
    token = exchange._callback_line.set(line)  # answering a Ray worker's host callback
    try:
        assert isinstance(ray_transport.current_store(), ray_transport.HostStore)
        with ray_transport.storing(local):  # a call the callback makes to a local pool
            assert ray_transport.current_store() is None
        monkeypatch.setenv("SNAKEBRIDGE_RAY_STORE", "0")
        assert ray_transport.current_store() is None
    finally:
        exchange._callback_line.reset(token)


def test_arrow_and_pandas_data_through_the_object_store(
    ray_pool: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")

    snakebridge.call("operator", "pos", [0])
    seen = _counting(monkeypatch)
    table = pa.table({"n": list(range(1 << 16)), "s": [f"row {i}" for i in range(1 << 16)]})
    back = snakebridge.call("operator", "getitem", [[table], 0])  # both ways, as IPC streams
    assert seen == {"put": 1, "read": 1}
    assert type(back) is pa.Table and back.equals(table)
    frame = pd.DataFrame({"s": [f"x{i}" for i in range(1 << 15)], "f": range(1 << 15)})
    returned = snakebridge.call("operator", "getitem", [[frame], 0])
    assert seen == {"put": 2, "read": 2}
    pd.testing.assert_frame_equal(returned, frame)
    assert registry_size(runtime().pools["default"]) == 0
    del back, returned
    assert snakebridge.call("operator", "getitem", [[pa.table({"a": [1]})], 0]).num_rows == 1
    assert seen["put"] == 2  # small: in the frame


def test_a_malformed_object_is_refused_not_read_past(cluster: Any) -> None:
    """What a worker puts is checked before it is read: its headers and its one buffer must
    lie inside the object (Ray's buffer-table parser trusts the lengths it reads)."""
    from snakebridge_worker import ray_store

    core = ray._private.worker.global_worker.core_worker
    data = bytes(range(256)) * 4096  # 1 MiB
    ref = ray_store.put_bytes(data)
    assert bytes(ray_store.raw_view(ref)) == data
    [(whole, _, *_)] = core.get_objects([ref], 10_000)
    raw = bytes(memoryview(whole))

    def stored(content: bytes) -> Any:  # those bytes as a readable object's buffer
        [(buffer, _, *_)] = core.get_objects([ray.put(content)], 10_000)
        return buffer

    assert bytes(ray_store._one_buffer(stored(raw))) == data
    table = raw.index(bytes.fromhex("1a15")) + 2  # the buffer's entry: length 1 MiB first
    assert raw[table : table + 4] == bytes.fromhex("10808040")
    longer = raw[: table + 3] + b"\x41" + raw[table + 4 :]  # 1 MiB + 16 KiB: past the end
    with pytest.raises(ValueError, match="outside the object"):
        ray_store._one_buffer(stored(longer))
    for size in (5, 9, 12, 20, 40):
        with pytest.raises(ValueError):
            ray_store._one_buffer(stored(raw[:size]))
    twice = ray.put([pickle.PickleBuffer(data), pickle.PickleBuffer(data)])
    with pytest.raises(ValueError, match="2 buffers"):
        ray_store.raw_view(twice)
    with pytest.raises(ValueError, match="0 buffers"):  # a pickled object: never unpickled
        ray_store.raw_view(ray.put(ValueError("x")))
