"""Every error class, each from a real scenario."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import snakebridge
from snakebridge import (
    CallTimeout,
    ConfigError,
    LibraryNotAllowed,
    PoolSaturated,
    QueueTimeout,
    RefInvalid,
    RemoteError,
    SnakeBridgeError,
    SymbolNotFound,
    WorkerCrashed,
)
from snakebridge.runtime.client import runtime

from .conftest import alive, default_pool


def test_remote_exception_is_also_the_builtin() -> None:
    with pytest.raises(KeyError) as caught:
        snakebridge.call("operator", "getitem", [{"a": 1}, "b"])
    error = caught.value
    assert isinstance(error, RemoteError) and isinstance(error, SnakeBridgeError)
    assert error.remote_type == "builtins.KeyError"
    assert "'b'" in str(error)
    assert "Traceback" in error.remote_traceback


def test_library_exception_maps_to_nearest_builtin() -> None:
    with pytest.raises(ValueError) as caught:
        snakebridge.call("json", "loads", ["{broken"])
    assert isinstance(caught.value, RemoteError)
    assert caught.value.remote_type == "json.decoder.JSONDecodeError"
    assert "json/decoder.py" in caught.value.remote_traceback
    with pytest.raises(OSError):
        snakebridge.call("builtins", "open", ["/definitely/not/here"])


def test_missing_symbols_are_attribute_errors_with_suggestions() -> None:
    with pytest.raises(SymbolNotFound, match="did you mean sqrt"):
        snakebridge.call("math", "sqrtt", [4])
    with pytest.raises(AttributeError):
        snakebridge.get("math", "nothing_here")
    with pytest.raises(SymbolNotFound, match=r"no module named 'jsn'.*did you mean json"):
        snakebridge.call("jsn", "dumps", [1])
    assert snakebridge.call("os", "path.basename", ["/a/b"]) == "b"


def test_library_not_allowed(configured: Callable[[str], Path]) -> None:
    configured('[tool.snakebridge.libraries]\njson = "stdlib"\n')
    assert snakebridge.call("json", "dumps", [[1]]) == "[1]"
    assert snakebridge.call("json.decoder", "JSONDecoder") is not None
    with pytest.raises(LibraryNotAllowed, match=r"'os' is not listed.*os = \"stdlib\""):
        snakebridge.call("os", "getcwd")


def test_config_error_surfaces_from_call(configured: Callable[[str], Path]) -> None:
    path = configured("[tool.snakebridge.pools.default]\nsise = 2\n")
    with pytest.raises(ConfigError) as caught:
        snakebridge.call("math", "sqrt", [4])
    assert "tool.snakebridge.pools.default.sise" in str(caught.value)
    assert str(path) in str(caught.value)


def test_worker_crash_reports_exit_code_and_is_replaced() -> None:
    pool = default_pool()
    with pytest.raises(WorkerCrashed) as caught:
        snakebridge.call("os", "_exit", [3])
    crash = caught.value
    assert crash.exit_code == 3 and crash.signal is None and "exited with code 3" in str(crash)
    assert crash.call == "os._exit" and crash.pid is not None
    assert snakebridge.call("math", "sqrt", [9]) == 3.0
    _wait_for_full(pool.size)


def test_segfault_and_abort_are_named() -> None:
    with pytest.raises(WorkerCrashed) as caught:
        snakebridge.call("ctypes", "string_at", [0])
    assert caught.value.cause.startswith("segfault") and caught.value.signal == 11
    assert "Segmentation fault" in caught.value.stderr_tail
    with pytest.raises(WorkerCrashed, match="abort"):
        snakebridge.call("os", "abort")
    assert snakebridge.call("math", "sqrt", [16]) == 4.0


def test_ref_of_crashed_worker_is_invalid() -> None:
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    pid = path._sb_worker.pid
    with pytest.raises(WorkerCrashed):
        snakebridge.call("os", "kill", [pid, 9])  # may run in the same worker or another
    deadline = time.monotonic() + 2
    while path._sb_worker.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(RefInvalid, match="crashed"):
        path.exists()


def test_timeout_kills_and_replaces_the_worker() -> None:
    pool = default_pool()
    started = time.monotonic()
    with pytest.raises(CallTimeout) as caught:
        snakebridge.call("time", "sleep", [30], timeout=0.3)
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, TimeoutError)
    killed = int(str(caught.value).split("worker ")[1].split()[0])
    assert not alive(killed)
    _wait_for_full(pool.size)
    assert killed not in {w.pid for w in pool.workers}
    with snakebridge.options(timeout=0.2), pytest.raises(CallTimeout):
        snakebridge.call("time", "sleep", [30])


def test_queue_timeout_and_saturation(configured: Callable[[str], Path]) -> None:
    configured(
        '[tool.snakebridge.libraries]\ntime = "stdlib"\n'
        "[tool.snakebridge.pools.default]\nsize = 1\nqueue_timeout = 0.3\nmax_queue = 1\n"
    )
    snakebridge.call("time", "sleep", [0])
    busy = threading.Thread(target=snakebridge.call, args=("time", "sleep", [1.5]))
    busy.start()
    time.sleep(0.2)
    errors: list[BaseException] = []

    def wait_in_queue() -> None:
        try:
            snakebridge.call("time", "sleep", [0])
        except SnakeBridgeError as exc:
            errors.append(exc)

    queued = threading.Thread(target=wait_in_queue)
    queued.start()
    time.sleep(0.05)
    with pytest.raises(PoolSaturated) as saturated:
        snakebridge.call("time", "sleep", [0])
    assert not isinstance(saturated.value, QueueTimeout)
    queued.join()
    busy.join()
    assert len(errors) == 1 and isinstance(errors[0], QueueTimeout)


def _wait_for_full(size: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pools = snakebridge.status()
        workers = pools[0]["workers"] if pools else []
        if len(workers) == size and all(w["state"] in ("idle", "busy") for w in workers):
            return
        time.sleep(0.02)
    raise AssertionError(f"pool did not return to {size} workers: {snakebridge.status()}")


def test_status_shape() -> None:
    default_pool()
    (pool,) = snakebridge.status()
    assert set(pool) == {"name", "size", "min", "max", "backend", "queued", "workers"}
    assert pool["name"] == "default" and pool["size"] == 2 and pool["queued"] == 0
    assert all(set(w) == {"pid", "state", "calls"} for w in pool["workers"])
    assert runtime().pools["default"].size == 2
