"""Refs forward every operation to the object in the worker; sessions and GC release them."""

from __future__ import annotations

import gc
import threading
import time

import numpy as np
import pytest

import snakebridge
from snakebridge import EncodeError, Ref, RefInvalid
from snakebridge.runtime.refs import remote_mro, remote_type

from .conftest import default_pool, registry_size


def test_attributes_calls_and_methods() -> None:
    ns = snakebridge.call("types", "SimpleNamespace", [], {"a": 1})
    assert type(ns) is Ref and remote_type(ns) == "types.SimpleNamespace"
    assert ns.a == 1
    ns.b = [1, 2]
    assert ns.b == [1, 2]
    del ns.b
    assert not hasattr(ns, "b")
    with pytest.raises(AttributeError):
        ns.missing  # noqa: B018
    add = snakebridge.get("operator", "add")
    assert add(2, 3) == 5
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    assert path.exists() is True and path.name == "tmp"
    assert "exists" in dir(path)


def test_items_len_contains_bool() -> None:
    ordered = snakebridge.call("collections", "OrderedDict")
    assert not ordered and len(ordered) == 0
    ordered["x"] = 1
    assert ordered["x"] == 1 and "x" in ordered and "y" not in ordered and bool(ordered)
    del ordered["x"]
    assert len(ordered) == 0


def test_iteration_is_lazy_and_batched() -> None:
    numbers = snakebridge.call("collections", "UserList", [list(range(2000))])
    assert isinstance(numbers, Ref)  # a Ref registered as a MutableSequence, as UserList is
    assert list(numbers) == list(range(2000))  # a container: prefetched in growing batches
    endless = snakebridge.call("itertools", "count", [5])
    iterator = iter(endless)
    assert iterator is endless  # a remote iterator is its own iterator
    assert [next(iterator) for _ in range(3)] == [5, 6, 7]
    assert next(endless) == 8  # nothing was prefetched past what was consumed


def test_async_iteration_and_async_ref_operations() -> None:
    import asyncio

    async def scenario() -> tuple[list[int], str, bool]:
        numbers = snakebridge.call("collections", "UserList", [[1, 2, 3]])
        items = [item async for item in numbers]
        buffer = snakebridge.call("io", "StringIO", ["hello"])
        text = await snakebridge.amethod(buffer, "read")
        closed = await snakebridge.aattr(buffer, "closed")
        return items, text, closed

    assert asyncio.run(scenario()) == ([1, 2, 3], "hello", False)


def test_repr_str_format_and_comparisons() -> None:
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    assert repr(path) == "PosixPath('/tmp')" and str(path) == "/tmp"
    one = snakebridge.call("collections", "Counter", ["ab"])
    two = snakebridge.call("collections", "Counter", ["ab"])
    assert one == two
    assert (one != two) is False
    assert one <= two and not one < two
    assert f"{path!s:>6}" == "  /tmp"


def test_arithmetic_operators() -> None:
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    assert str(path / "x") == "/tmp/x"
    assert str("/a" / snakebridge.call("pathlib", "PurePosixPath", ["b"])) == "/a/b"
    first = snakebridge.call("collections", "Counter", ["aab"])
    total = first + snakebridge.call("collections", "Counter", ["a"])
    assert total["a"] == 3
    first += snakebridge.call("collections", "Counter", ["b"])
    assert first["b"] == 2
    masked = snakebridge.call("numpy.ma", "array", [2.5])  # an ndarray subclass: a Ref
    assert type(masked) is Ref and float(masked) == 2.5 and int(masked) == 2
    assert complex(masked) == 2.5 + 0j and float(-masked) == -2.5 and float(abs(-masked)) == 2.5


def test_context_manager() -> None:
    buffer = snakebridge.call("io", "StringIO", ["hello"])
    with buffer as handle:
        assert handle.read() == "hello"
    assert buffer.closed is True


def test_ref_argument_resolves_to_the_original_object() -> None:
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    assert snakebridge.call("os.path", "join", [path, "y"]) == "/tmp/y"
    items = snakebridge.call("builtins", "list", [[1]])
    assert items == [1]
    bag = snakebridge.call("collections", "UserList", [[1]])
    snakebridge.call("operator", "methodcaller", ["append", 2])(bag)
    assert list(bag) == [1, 2]


def test_remote_mro_names_the_class_hierarchy() -> None:
    chain = snakebridge.call("collections", "ChainMap", [{"a": 1}])
    assert remote_mro(chain)[:2] == ("collections.ChainMap", "collections.abc.MutableMapping")


def test_session_close_releases_every_ref_and_invalidates_them() -> None:
    snakebridge.shutdown()
    pool = default_pool()
    before = registry_size(pool)
    assert before == 0
    with snakebridge.session() as session:
        path = snakebridge.call("pathlib", "Path", ["/tmp"])
        refs = [session.call("pathlib", "Path", [f"/x{i}"]) for i in range(20)]
        assert registry_size(pool) == before + 21
    assert registry_size(pool) == before
    with pytest.raises(RefInvalid, match=r"pathlib\.PosixPath.*session closed"):
        path.exists()
    assert "released" in repr(refs[0])
    with pytest.raises(RefInvalid):
        session.call("math", "sqrt", [4])


def test_dropped_refs_are_released_in_batches() -> None:
    snakebridge.shutdown()
    pool = default_pool()
    before = registry_size(pool)
    assert before == 0
    refs = [snakebridge.call("pathlib", "Path", [f"/y{i}"]) for i in range(50)]
    assert registry_size(pool) == before + 50
    del refs
    gc.collect()
    deadline = time.monotonic() + 2
    while registry_size(pool) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert registry_size(pool) == before


def test_refs_keep_affinity_to_their_worker() -> None:
    pool = default_pool()
    refs: list[Ref] = []
    lock = threading.Lock()

    def make() -> None:
        for i in range(10):
            ref = snakebridge.call("pathlib", "Path", [f"/z{i}"])
            with lock:
                refs.append(ref)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {ref._sb_worker.pid for ref in refs} <= {w.pid for w in pool.workers}
    assert all(ref.name.startswith("z") for ref in refs)


def test_refs_from_two_workers_cannot_meet_in_one_call() -> None:
    pool = default_pool()
    first, second = pool.workers[:2]
    gate = threading.Barrier(2)
    made: dict[int, Ref] = {}

    def make() -> None:
        gate.wait()
        ref = snakebridge.call("time", "sleep", [0.2]) or snakebridge.call(
            "pathlib", "Path", ["/tmp"]
        )
        made[ref._sb_worker.pid] = ref

    while len(made) < 2:
        threads = [threading.Thread(target=make) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert {first.pid, second.pid} == set(made)
    with pytest.raises(EncodeError, match="two workers"):
        snakebridge.call("os.path", "join", list(made.values()))


def test_numpy_array_ref_methods() -> None:
    matrix = snakebridge.call("numpy", "matrix", [[[1, 2], [3, 4]]])
    assert isinstance(matrix.sum(), np.integer | int)
    assert matrix.shape == (2, 2)


def test_registered_proxy_classes_are_what_refs_come_back_as() -> None:
    from snakebridge.runtime.refs import IteratorRef, Ref, as_proxy, register_proxy

    class PurePath(Ref):
        __slots__ = ()

        def stem_upper(self) -> str:
            return str(self._sb_method("with_suffix", [""])).upper()

    register_proxy("pathlib.PurePath", PurePath)
    try:
        path = snakebridge.call("pathlib", "PurePosixPath", ["/tmp/a.txt"])
        assert type(path) is PurePath  # found through the MRO the worker sent with the Ref
        assert path.stem_upper() == "/TMP/A"
        assert snakebridge.method(path, "with_name", "b.txt").name == "b.txt"
        assert snakebridge.attr(path, "suffix") == ".txt"
        plain = snakebridge.call("types", "SimpleNamespace")
        assert type(plain) is Ref
        assert type(as_proxy(plain, PurePath)) is PurePath
        buffer = snakebridge.call("io", "StringIO", ["x"])  # a file is an iterator
        assert type(buffer) is IteratorRef and next(buffer) == "x"
        assert isinstance(as_proxy(buffer, PurePath), PurePath) and next(buffer, None) is None
    finally:
        from snakebridge.runtime import refs

        refs._PROXIES.pop("pathlib.PurePath", None)
        refs._CLASS_FOR.clear()


def test_a_ref_method_call_is_one_round_trip() -> None:
    buffer = snakebridge.call("io", "StringIO", ["hello"])
    before = buffer._sb_worker.calls
    assert snakebridge.method(buffer, "read") == "hello"
    assert buffer._sb_worker.calls - before == 1


def test_a_plain_ref_method_call_is_one_round_trip_once_the_method_is_known() -> None:
    first = snakebridge.call("io", "StringIO", ["ab"])
    assert first.read() == "ab"  # learns that StringIO.read is a method
    buffer = snakebridge.call("io", "StringIO", ["hello"])
    worker = buffer._sb_worker
    before = worker.calls
    assert buffer.read() == "hello"
    assert worker.calls - before == 1
    method = buffer.getvalue
    assert "getvalue" in repr(method) and method() == "hello"
    assert snakebridge.call("builtins", "callable", [buffer.read]) is True  # sent as the method
