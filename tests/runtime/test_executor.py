"""snakebridge.executor: a concurrent.futures.Executor over real workers."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import snakebridge
from snakebridge.runtime.executor import Executor, ExecutorShutdown, executor

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


@pytest.fixture
def ex() -> Iterator[Executor]:
    with snakebridge.executor("operator") as running:
        yield running


def test_submit_symbol_names_and_module_symbols(ex: Executor) -> None:
    assert isinstance(ex, cf.Executor)
    assert ex.submit("pos", 3).result() == 3
    assert ex.submit("math:sqrt", 16.0).result() == 4.0
    assert ex.submit("getitem", {"a": 1}, "a").result() == 1


def test_submit_generated_facade_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(QUICKSTART))
    facade = importlib.import_module("snakebridge_generated.math")
    try:
        with executor() as ex:
            assert ex._target(facade.sqrt) == ("math", "sqrt")  # pipelined, not a thread
            assert ex.submit(facade.sqrt, 2.0).result() == 2.0**0.5
    finally:
        for name in [n for n in sys.modules if n.startswith("snakebridge_generated")]:
            del sys.modules[name]


def test_submit_host_callable_runs_on_a_thread(ex: Executor) -> None:
    assert ex.submit(lambda x: snakebridge.call("operator", "neg", [x]), 5).result() == -5


def test_remote_errors_land_on_the_future(ex: Executor) -> None:
    future = ex.submit("truediv", 1, 0)
    assert isinstance(future.exception(), ZeroDivisionError)
    with pytest.raises(snakebridge.SymbolNotFound):
        ex.submit("no_such_function", 1).result()


def test_worker_crash_lands_on_the_future_and_the_pool_recovers(ex: Executor) -> None:
    future = ex.submit("signal:raise_signal", 9)
    error = future.exception()
    assert isinstance(error, snakebridge.WorkerCrashed)
    assert error.signal == 9
    assert ex.submit("pos", 7).result() == 7


def test_map_keeps_order_with_chunks_and_raises_at_the_failed_item(ex: Executor) -> None:
    assert list(ex.map("neg", range(100), chunksize=7)) == [-i for i in range(100)]
    assert list(ex.map("add", [1, 2], [10, 20])) == [11, 22]
    results = ex.map("truediv", [1, 1, 1], [1, 0, 1])
    assert next(results) == 1.0
    with pytest.raises(ZeroDivisionError):
        next(results)
    with pytest.raises(ValueError, match="chunksize"):
        ex.map("neg", [1], chunksize=0)


def test_map_timeout_bounds_the_iteration() -> None:
    with executor("time") as ex:
        results = ex.map("sleep", [3.0], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)


def test_imap_unordered_yields_every_result(ex: Executor) -> None:
    assert sorted(ex.imap_unordered("neg", range(50), chunksize=4)) == sorted(-i for i in range(50))


def test_as_completed_wait_and_wrap_future(ex: Executor) -> None:
    futures = [ex.submit("mul", i, i) for i in range(20)]
    assert sorted(f.result() for f in cf.as_completed(futures)) == [i * i for i in range(20)]
    done, not_done = cf.wait(futures)
    assert len(done) == 20 and not not_done

    async def main() -> int:
        result: int = await asyncio.wrap_future(ex.submit("add", 2, 3))
        return result

    assert asyncio.run(main()) == 5


def test_queued_work_can_be_cancelled() -> None:
    pool = snakebridge.runtime.client.runtime().pool("default")
    with executor("time") as ex:
        # hold every worker so later work stays queued behind the dispatcher
        blockers = [ex.submit("sleep", 0.5) for _ in range(pool.size)]
        while not all(f.running() or f.done() for f in blockers):
            cf.wait(blockers, timeout=0.01)
        queued = ex.submit("sleep", 0)
        assert queued.cancel()
        assert queued.cancelled()
        later = [ex.submit("sleep", 0) for _ in range(3)]
        ex.shutdown(wait=True, cancel_futures=True)
        assert all(f.cancelled() for f in later)
        assert all(f.result() is None for f in blockers)


def test_refs_in_the_arguments_go_to_their_worker(ex: Executor) -> None:
    buffer = snakebridge.call("io", "StringIO", ["abc"])
    assert ex.submit("io:StringIO.getvalue", buffer).result() == "abc"
    assert list(ex.map("io:StringIO.getvalue", [buffer, buffer])) == ["abc", "abc"]


def test_submit_after_shutdown_is_a_clear_error() -> None:
    ex = executor("operator")
    ex.shutdown()
    with pytest.raises(ExecutorShutdown, match="after shutdown"):
        ex.submit("pos", 1)


def test_symbol_name_without_a_library_is_a_clear_error() -> None:
    with executor() as ex, pytest.raises(TypeError, match="module:sqrt"):
        ex.submit("sqrt", 2.0)


def test_a_short_call_is_not_held_up_by_a_long_one() -> None:
    with executor() as ex:
        slow = ex.submit("time:sleep", 5.0)
        while not slow.running():
            cf.wait([slow], timeout=0.01)
        assert ex.submit("operator:neg", 2).result() == -2
        assert not slow.done()  # answered on the other worker while the long call runs
        assert slow.result() is None
