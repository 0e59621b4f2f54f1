"""Data plane (issue 13): arrays, buffers, Arrow and pandas data through shared memory.

Real workers throughout. The threshold is lowered to 4 KiB so small test data takes the
shared-memory path; each check names the guarantee it holds.
"""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

import snakebridge
from snakebridge.runtime import dataplane
from snakebridge.runtime.client import runtime
from snakebridge.runtime.codec import codec_for_thread
from snakebridge.runtime.refs import Session
from snakebridge_worker import protocol as p
from snakebridge_worker import shm

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

THRESHOLD = 4096
SRC = str(Path(snakebridge.__file__).resolve().parents[1])


def ours(run: str | None = None) -> set[str]:
    """The segments in /dev/shm of one host session (default: this process's, workers' too).

    Only its own: other hosts of this user (other test runs on the machine) come and go.
    """
    prefix = f"sb-{run or shm.CONFIG.run}-"
    return {n for n in os.listdir(shm.SHM_DIR) if shm.NAME_RE.match(n) and n.startswith(prefix)}


def echo(value: Any) -> Any:
    """The value after a round trip through a worker (identity there: ``[value][0]``)."""
    return snakebridge.call("operator", "getitem", [[value], 0])


def settle() -> None:
    """Drop dead views and give back pooled segments, so /dev/shm shows only what is in use.

    A worker drops a call's arguments once it reads its next frame: a ping to each worker makes
    sure it has let go of every host segment it was sent.
    """
    gc.collect()
    pool = runtime().pools.get("default")
    for worker in pool.workers if pool is not None else []:
        pool.ping(worker)
    dataplane.trim()


@pytest.fixture(autouse=True)
def _low_threshold(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SNAKEBRIDGE_SHM_THRESHOLD", str(THRESHOLD))
    snakebridge.shutdown()
    yield
    snakebridge.shutdown()


DTYPES = [
    "f8",
    ">f4",
    "i1",
    "<u8",
    "?",
    "c16",
    "M8[ns]",
    "m8[s]",
    "U7",
    "S5",
    np.dtype([("x", "<i4"), ("y", "<f8", (2,))], align=True),
    np.dtype([("a", "u1"), ("nested", [("b", ">i2"), ("c", "S3")])]),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("count", [3, 5000])  # by value, and through shared memory
def test_arrays_of_every_dtype_round_trip_exactly(dtype: Any, count: int) -> None:
    dtype = np.dtype(dtype)
    raw = np.random.default_rng(1).integers(0, 255, size=count * dtype.itemsize, dtype="u1")
    value = raw.view(dtype)
    back = echo(value)
    assert type(back) is np.ndarray and back.dtype == value.dtype and back.shape == value.shape
    assert back.tobytes() == value.tobytes()
    if value.nbytes >= THRESHOLD:
        assert not back.flags.writeable  # a view of the segment, read-only on the host


@pytest.mark.parametrize(
    "value",
    [
        np.arange(20000.0).reshape(200, 100)[:, ::3],  # non-contiguous: made contiguous once
        np.asfortranarray(np.arange(20000).reshape(100, 200)),
        np.arange(10000)[::-1],
        np.array(7.5),  # 0-d
        np.zeros((0, 4)),  # empty
        np.zeros((3, 0, 5000)),
        np.ones((2, 3, 4, 200), dtype="f4"),
    ],
    ids=["strided", "fortran", "reversed", "0-d", "empty", "empty-3d", "4-d"],
)
def test_array_layouts(value: np.ndarray) -> None:
    back = echo(value)
    assert back.dtype == value.dtype and back.shape == value.shape
    np.testing.assert_array_equal(back, value)


def test_host_gets_a_read_only_view_that_keeps_its_segment_alive() -> None:
    first = np.arange(100_000, dtype="f8")
    held = echo(first)
    with pytest.raises(ValueError, match="read-only"):
        held[0] = 1.0
    with pytest.raises(ValueError):
        held.setflags(write=True)
    writable = held.copy()
    writable[0] = -1.0  # a copy is the user's own
    for i in range(20):  # the pool reuses segments for these, never the one `held` maps
        np.testing.assert_array_equal(echo(first + i), first + i)
    np.testing.assert_array_equal(held, first)
    view = held[10:20]
    del held
    gc.collect()
    for i in range(5):
        echo(first * i)
    np.testing.assert_array_equal(view, first[10:20])


def test_a_write_the_host_would_not_see_fails_in_the_worker() -> None:
    value = np.zeros(10_000)
    with pytest.raises(ValueError, match="read-only"):  # never silently dropped
        snakebridge.call("numpy", "put", [value, [0, 1], [5.0, 6.0]])
    assert value[0] == 0.0
    copied = snakebridge.call("numpy", "add", [value, 1.0])  # new arrays are the worker's own
    np.testing.assert_array_equal(copied, value + 1.0)


def test_worker_made_arrays_and_arrays_inside_containers() -> None:
    made = snakebridge.call("numpy", "arange", [50_000])
    np.testing.assert_array_equal(made, np.arange(50_000))
    assert not made.flags.writeable
    parts = echo({"a": np.ones(9000), "b": [np.zeros(3), (np.arange(8000),)]})
    np.testing.assert_array_equal(parts["a"], np.ones(9000))
    np.testing.assert_array_equal(parts["b"][1][0], np.arange(8000))


def test_bytes_and_bytearrays_through_shared_memory() -> None:
    data = bytes(range(256)) * 400
    opened = len(shm.OPENED.opened)
    made = snakebridge.call("builtins", "bytearray", [100_000])  # a worker segment
    assert type(made) is bytearray and made == bytearray(100_000)
    assert len(shm.OPENED.opened) == opened + 1
    assert snakebridge.call("builtins", "bytes", [data]) == data  # both ways
    assert snakebridge.call("builtins", "len", [bytearray(data)]) == len(data)
    assert snakebridge.call("builtins", "bytes", [memoryview(data)]) == data
    assert snakebridge.call("builtins", "bytes", [b"small"]) == b"small"


def test_pickle5_buffers() -> None:
    data = bytes(range(256)) * 100
    assert snakebridge.call("builtins", "bytes", [pickle.PickleBuffer(data)]) == data
    small = pickle.PickleBuffer(b"abc")
    assert snakebridge.call("builtins", "bytes", [small]) == b"abc"


def test_arrow_round_trips_with_nulls_and_metadata() -> None:
    table = pa.table(
        {
            "i": pa.array([1, None, 3] * 2000, type=pa.int64()),
            "s": pa.array(["x", None, "zz"] * 2000),
            "l": pa.array([[1, 2], None, []] * 2000, type=pa.list_(pa.int32())),
            "d": pa.array(["a", "b", "a"] * 2000).dictionary_encode(),
        }
    ).replace_schema_metadata({"origin": "test"})
    allocated = pa.total_allocated_bytes()
    back = echo(table)
    assert isinstance(back, pa.Table) and back.equals(table, check_metadata=True)
    assert pa.total_allocated_bytes() - allocated < 1024  # buffers map the segment: no copy
    batch = table.to_batches()[0]
    assert echo(batch).equals(batch)
    array = table.column("s").combine_chunks()
    assert echo(array).equals(array)
    chunked = pa.chunked_array([[1, 2], [3, None]])
    assert echo(chunked).equals(chunked)
    assert echo(pa.table({"tiny": [1]})).equals(pa.table({"tiny": [1]}))  # inline, no segment


def test_pandas_round_trips_exactly() -> None:
    frame = pd.DataFrame(
        {
            "f": [1.5, None, 3.0] * 100,
            "cat": pd.Categorical(["x", "y", "x"] * 100),
            "n": pd.array([1, None, 3] * 100, dtype="Int64"),
            "s": ["a", None, "c"] * 100,
            "t": pd.date_range("2024-01-01", periods=300, freq="h", tz="Europe/Paris"),
            7: range(300),
        },
        index=pd.Index([f"r{i}" for i in range(300)], name="row"),
    )
    back = echo(frame)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.dtypes) == list(frame.dtypes)
    series = pd.Series([1, 2, None], name="named", dtype="Int64", index=[10, 20, 30])
    pd.testing.assert_series_equal(echo(series), series, check_exact=True)
    anonymous = pd.Series([0.5, 1.5])
    result = echo(anonymous)
    assert result.name is None
    pd.testing.assert_series_equal(result, anonymous)
    made = snakebridge.call("pandas", "DataFrame", [{"a": [1, 2]}])
    pd.testing.assert_frame_equal(made, pd.DataFrame({"a": [1, 2]}))


def test_frames_arrow_cannot_type_go_by_value() -> None:
    mixed = {"m": [1, "a", (2, 3)], "n": [None, 2.5, float("nan")]}
    made = snakebridge.call("pandas", "DataFrame", [mixed])  # Arrow cannot type "m": by value
    pd.testing.assert_frame_equal(made, pd.DataFrame(mixed), check_exact=True)
    assert made["m"].tolist() == [1, "a", (2, 3)]
    columns = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["u", "v"])
    index = pd.MultiIndex.from_tuples([("x", 1), ("y", 2), ("z", 3)], names=["k", None])
    frame = pd.DataFrame(np.arange(12).reshape(3, 4), columns=columns, index=index)
    pd.testing.assert_frame_equal(echo(frame), frame, check_exact=True)


SPARSE = "{'sp': __import__('pandas').arrays.SparseArray([0, 0, 1])}"


def test_values_that_cannot_be_exact_are_clear_errors() -> None:
    sparse = pd.DataFrame(eval(SPARSE))
    with pytest.raises(snakebridge.EncodeError, match="column 'sp' has dtype Sparse"):
        echo(sparse)
    with pytest.raises(snakebridge.RemoteError, match="column 'sp' has dtype Sparse"):
        snakebridge.call("builtins", "eval", [f"__import__('pandas').DataFrame({SPARSE})"])


FRAMES = """
import numpy as np, pandas as pd
n = 300
frame = pd.DataFrame(
    {
        "f": [1.5, None, 3.0] * 100,
        "cat": pd.Categorical(["x", "y", "x"] * 100, ordered=True),
        "n": pd.array([1, None, 3] * 100, dtype="Int64"),
        "b": pd.array([True, None, False] * 100, dtype="boolean"),
        "fl": pd.array([0.5, None, float("nan")] * 100, dtype="Float64"),
        "s": ["a", None, "c"] * 100,
        "sp": pd.array(["a", None, "c"] * 100, dtype="string[python]"),
        "o": [1, "a", (2, 3)] * 100,
        "t": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
        "naive": pd.date_range("2024-01-01", periods=n, freq="s").as_unit("s"),
        "td": pd.to_timedelta(range(n), unit="ms"),
        "p": pd.period_range("2024-01", periods=n, freq="M"),
        "iv": pd.interval_range(0, n, periods=n),
        7: range(n),
    },
    index=pd.Index([f"r{i}" for i in range(n)], name="row"),
)
frame.attrs = {"origin": "test"}
series = pd.Series([1, 2, None], name=("a", 1), dtype="Int64", index=[10, 20, 30])
big = pd.DataFrame(  # 800 kB of floats: through shared memory, by value
    {"x": np.arange(100_000, dtype="f8")},
    index=pd.date_range("2020-01-01", periods=100_000, freq="min"),
)
columns = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["u", "v"])
multi = pd.DataFrame(np.arange(12).reshape(3, 4), columns=columns)
"""


def _frames() -> dict[str, Any]:
    names: dict[str, Any] = {}
    exec(FRAMES, names)
    return names


def test_pandas_goes_by_value_when_the_host_has_no_pyarrow(tmp_path: Path) -> None:
    """A host whose pyarrow is blocked (``sys.modules``: pandas runs without it) and a worker
    with pyarrow: both directions go by value, exactly; Arrow tables come back as Refs."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pyarrow"] = None  # this host has no pyarrow
        import pandas as pd, snakebridge
        from snakebridge.runtime import dataplane
        from snakebridge.runtime.client import runtime
        from snakebridge_worker import oob
        assert oob.capabilities() == {{"arrow": False, "pandas": True}}
        exec({FRAMES!r})

        def echo(value):
            return snakebridge.call("operator", "getitem", [[value], 0])

        back = echo(frame)
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
        assert list(back.dtypes) == list(frame.dtypes) and back.attrs == frame.attrs
        pd.testing.assert_series_equal(echo(series), series, check_exact=True)
        pd.testing.assert_frame_equal(echo(big), big, check_exact=True, check_freq=True)
        pd.testing.assert_frame_equal(echo(multi), multi, check_exact=True)
        made = snakebridge.call("pandas", "DataFrame", [{{"a": [1, 2]}}])
        pd.testing.assert_frame_equal(made, pd.DataFrame({{"a": [1, 2]}}))
        assert dataplane.peer_of(runtime().pools["default"]) == (True, True)  # the worker's
        table = snakebridge.call("builtins", "eval", ["__import__('pyarrow').table({{'x': [1]}})"])
        assert isinstance(table, snakebridge.Ref)  # nothing to rebuild it with here
        print("exact")
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC, "SNAKEBRIDGE_SHM_THRESHOLD": str(THRESHOLD)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.split() == [b"exact"]


def test_pandas_round_trips_exactly_through_arrow_or_by_value() -> None:
    """Host and worker with pyarrow: through Arrow, by value where Arrow cannot carry it
    (the object column of ``frame``, MultiIndex columns); exact either way."""
    frames = _frames()
    for name in ("frame", "big", "multi"):
        back = echo(frames[name])
        pd.testing.assert_frame_equal(back, frames[name], check_exact=True, check_freq=True)
        assert list(back.dtypes) == list(frames[name].dtypes)
    pd.testing.assert_series_equal(echo(frames["series"]), frames["series"], check_exact=True)


def test_shared_data_is_read_by_every_worker_without_a_copy() -> None:
    value = np.arange(1_000_000, dtype="i8")
    before = ours()
    with snakebridge.share(value) as handle:
        assert len(ours() - before) == 1
        sums = snakebridge.map("numpy", "sum", [handle] * 80)  # > 32 in flight: both workers
        assert sums == [int(value.sum())] * 80
        assert all(w["calls"] > 0 for w in snakebridge.status()[0]["workers"])
        with pytest.raises(ValueError, match="read-only"):  # resident data is shared: no writes
            snakebridge.call("numpy", "put", [handle, [0], [1]])
        np.testing.assert_array_equal(handle.value, value)
        table = snakebridge.share(pa.table({"x": list(range(1000))}))
        assert echo(table).equals(pa.table({"x": list(range(1000))}))
        table.release()
    assert ours() == before  # released: the name is gone
    with pytest.raises(snakebridge.RefInvalid, match="released"):
        snakebridge.call("numpy", "sum", [handle])
    dropped = snakebridge.share(value)
    assert len(ours() - before) == 1
    del dropped
    gc.collect()
    assert ours() == before  # garbage collected: released like a Ref


def test_shared_data_made_in_a_session_goes_when_it_closes() -> None:
    before = ours()
    with snakebridge.session():
        handle = snakebridge.share(np.arange(10_000))
        assert snakebridge.call("numpy", "sum", [handle]) == sum(range(10_000))
        assert len(ours() - before) == 1
    assert ours() == before
    with pytest.raises(snakebridge.RefInvalid):
        snakebridge.call("numpy", "sum", [handle])


def test_no_leak_after_10000_mixed_round_trips() -> None:
    echo(np.zeros(THRESHOLD))  # start the pool
    settle()
    before = ours()
    sizes = [16, 1000, THRESHOLD, 50_000, 300_000]
    rng = np.random.default_rng(0)
    held = []
    for i in range(10_000):
        value = rng.random(sizes[i % len(sizes)] // 8 + 1)
        back = echo(value) if i % 3 else snakebridge.call("numpy", "sum", [value])
        if i % 997 == 0:
            held.append(back)  # some results live on while the rest come and go
        if i % 500 == 0:
            table = echo(pa.table({"v": value}))
            assert table.num_rows == len(value)
    assert len(held) == 11
    del held, back, table
    settle()
    assert ours() == before


SELF_KILL = "__import__('os').kill(__import__('os').getpid(), 9)"


def test_worker_killed_mid_transfer_leaves_no_segment() -> None:
    echo(np.zeros(THRESHOLD))
    settle()
    before = ours()
    # The worker writes an 8 MiB result into a segment, then dies encoding the next item,
    # before the frame is sent: only the host can remove that segment.
    bomb = f"type('Bomb', (), {{'__dlpack_device__': lambda self: {SELF_KILL}}})()"
    with pytest.raises(snakebridge.WorkerCrashed):
        snakebridge.call("builtins", "eval", [f"[__import__('numpy').ones(1 << 20), {bomb}]"])
    assert ours() == before
    # The worker dies while it maps a host segment (an argument of the call).
    with pytest.raises(snakebridge.WorkerCrashed):
        snakebridge.call("builtins", "eval", [f"{SELF_KILL} or a", {"a": np.ones(1 << 20)}])
    settle()
    assert ours() == before


def test_host_killed_leaves_nothing_after_the_next_start(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys, numpy, snakebridge
        held = snakebridge.call("numpy", "ones", [1 << 20])     # a worker segment, opened
        data = snakebridge.share(numpy.arange(1 << 20))         # a host segment
        snakebridge.call("numpy", "sum", [numpy.ones(1 << 20)])  # a pooled host segment
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC, "SNAKEBRIDGE_SHM_THRESHOLD": str(THRESHOLD)}
    host = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert host.stdout is not None and host.stdout.readline().strip() == b"ready"
    run = f"{host.pid}x{shm.process_start(host.pid)}"
    left = ours(run)
    assert left  # its resident and its pooled segment (its worker's lost its name at once)
    host.kill()
    host.wait()  # its segments stay behind (until any later host of this user starts)
    nxt = subprocess.run(
        [sys.executable, "-c", "import snakebridge; snakebridge.call('operator', 'pos', [1])"],
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert nxt.returncode == 0
    assert not (ours(run) & left)


def test_segment_names_are_private_and_unguessable() -> None:
    with snakebridge.share(np.arange(1000)) as handle:
        name = handle._sb_descriptor()[2]
        assert shm.NAME_RE.match(name) and len(name.rsplit("-", 1)[1]) == 32
        info = os.stat(shm.segment_path(name))
        assert info.st_mode & 0o777 == 0o600 and info.st_uid == os.getuid()


def _foreign_segment(tmp_path: Path, mode: int = 0o600, size: int = 4096) -> str:
    """A segment as a worker would make it (creator pid 1), header and all."""
    name = f"sb-{shm.CONFIG.run}-1-{os.urandom(16).hex()}"
    fd = os.open(shm.segment_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(fd, mode)
    os.write(fd, shm.MAGIC + bytes([shm.BUSY]) + bytes(3) + (1).to_bytes(8, "little"))
    os.ftruncate(fd, shm.HEADER_SIZE + size)
    os.close(fd)
    return name


def _decode(where: Any, tag: str = "b", meta: Any = None) -> Any:
    codec = codec_for_thread()
    ext = msgpack.ExtType(p.EXT_BUFFER, msgpack.packb([tag, meta, where]))
    body = msgpack.packb([p.RESULT, 1, ext])
    worker = runtime().pools["default"].workers[0]
    return codec.decode(body, worker, Session(0))


@pytest.mark.parametrize(
    "where",
    [
        "offset beyond",
        "length beyond",
        "negative",
        "stale generation",
        "traversal",
        "other run",
        "missing",
        "not a list",
    ],
)
def test_bad_descriptors_are_decode_errors(where: str, tmp_path: Path) -> None:
    echo(1)
    name = _foreign_segment(tmp_path)
    other = name.replace(shm.CONFIG.run, "1x1")
    descriptors = {
        "offset beyond": [name, 1, 4096, 1],
        "length beyond": [name, 1, 0, 10**12],
        "negative": [name, 1, -8, 8],
        "stale generation": [name, 7, 0, 8],
        "traversal": ["../../etc/passwd", 1, 0, 8],
        "other run": [other, 1, 0, 8],
        "missing": [f"sb-{shm.CONFIG.run}-1-{'0' * 32}", 1, 0, 8],
        "not a list": {"name": name},
    }
    try:
        with pytest.raises(snakebridge.DecodeError):
            _decode(descriptors[where])
    finally:
        shm.unlink(name)


def test_symlinks_and_shared_modes_are_refused(tmp_path: Path) -> None:
    echo(1)
    loose = _foreign_segment(tmp_path, mode=0o644)
    link = f"sb-{shm.CONFIG.run}-1-{os.urandom(16).hex()}"
    target = _foreign_segment(tmp_path)
    os.symlink(shm.segment_path(target), shm.segment_path(link))
    try:
        for name in (loose, link):
            with pytest.raises(snakebridge.DecodeError):
                _decode([name, 1, 0, 8])
        with pytest.raises(snakebridge.DecodeError):  # right segment, array that overruns it
            _decode([target, 1, 0, 64], "nd", ["<f8", [100], None])
    finally:
        for name in (loose, link, target):
            shm.unlink(name)


def test_threshold_off_sends_everything_through_the_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAKEBRIDGE_SHM_THRESHOLD", "off")
    snakebridge.shutdown()
    before = ours()
    back = echo(np.arange(100_000))
    assert back.flags.writeable  # by value: the host owns a copy
    assert ours() == before
    monkeypatch.setenv("SNAKEBRIDGE_SHM_THRESHOLD", str(THRESHOLD))
    snakebridge.shutdown()
    assert not echo(np.arange(100_000)).flags.writeable  # the next runtime turns it back on


def test_cuda_tensors_cross_by_ipc_handle() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed: no CUDA IPC to test")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (run benchmarks/gpu_check.py on one)")
    tensor = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
    total = snakebridge.call("torch", "sum", [tensor])
    assert total.device.type == "cuda" and float(total) == float(tensor.sum())


def test_shm_threshold_from_the_config_table(
    configured: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SNAKEBRIDGE_SHM_THRESHOLD")
    libraries = '[libraries]\noperator = "stdlib"\n'
    configured(f'shm_threshold = "1MiB"\n{libraries}')
    assert echo(np.zeros(100_000)).flags.writeable  # 800 kB: by value
    assert not echo(np.zeros(200_000)).flags.writeable  # 1.6 MB: shared memory
    configured(f'shm_threshold = "lots"\n{libraries}')
    with pytest.raises(snakebridge.ConfigError, match="shm_threshold"):
        echo(np.zeros(10))


@pytest.fixture(scope="module")
def no_pyarrow_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose ``nopa`` env (built with uv from PyPI) has pandas but no pyarrow."""
    root = tmp_path_factory.mktemp("nopa")
    (root / "pyproject.toml").write_text(
        f'[tool.snakebridge.libraries]\npandas = {{ version = "=={pd.__version__}", env = "nopa" }}'
        "\n[tool.snakebridge.envs.nopa]\n"
    )
    built = subprocess.run(
        ["snakebridge", "setup"], cwd=root, capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr
    python = root / ".snakebridge" / "envs" / "nopa" / "bin" / "python"
    probe = [str(python), "-c", "import pandas, importlib.util as u; print(u.find_spec('pyarrow'))"]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.split() == ["None"]
    return root


@pytest.mark.envs
def test_pandas_goes_by_value_to_a_worker_without_pyarrow(
    no_pyarrow_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(no_pyarrow_env)
    monkeypatch.delenv("SNAKEBRIDGE_CONFIG", raising=False)
    snakebridge.shutdown()
    frames = _frames()
    for name in ("frame", "big", "multi"):  # the first call starts the pool (not known yet)
        back = snakebridge.call("pandas", "DataFrame", [frames[name]])
        pd.testing.assert_frame_equal(back, frames[name], check_exact=True, check_freq=True)
        assert list(back.dtypes) == list(frames[name].dtypes)
    pool = runtime().route("pandas")[0]
    assert dataplane.peer_of(pool) == (False, True)  # what the worker said in HELLO
    series = frames["series"]
    pd.testing.assert_series_equal(snakebridge.call("pandas", "Series", [series]), series)
    records = [{"a": 1, "s": "x"}, {"a": None, "s": None}]
    made = snakebridge.call("pandas", "json_normalize", [records])  # made there: python strs
    pd.testing.assert_frame_equal(made, pd.json_normalize(records), check_exact=True)
    explicit = pd.DataFrame({"s": pd.array(["a"], dtype="string[pyarrow]")})
    with pytest.raises(snakebridge.EncodeError, match="needs pyarrow on the other side"):
        snakebridge.call("pandas", "DataFrame", [explicit])
