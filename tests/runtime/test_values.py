"""Values round-trip exactly through a real worker; everything else comes back as a Ref."""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import enum
import fractions
import math
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snakebridge
from snakebridge import DecodeError, EncodeError, Ref
from snakebridge.runtime.codec import codec_for_thread

from .conftest import default_pool, registry_size


def same(a: Any, b: Any) -> bool:
    """Equal and of exactly the same types all the way down (nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


hashables = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.floats(allow_nan=False),
    st.uuids(),
    st.dates(),
    st.fractions(),
)
scalars = st.one_of(
    hashables,
    st.floats(),
    st.complex_numbers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.times(),
    st.timedeltas(),
    st.decimals(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.one_of(hashables, st.tuples(hashables, hashables)), inner, max_size=4),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_values_round_trip_exactly(value: Any) -> None:
    assert same(snakebridge.call("copy", "copy", [value]), value)


def test_big_and_special_numbers() -> None:
    for value in (
        2**100,
        -(2**300),
        float("inf"),
        float("-inf"),
        decimal.Decimal("NaN"),
        decimal.Decimal("-0.000"),
        fractions.Fraction(-7, 3),
        complex(1, -2.5),
    ):
        assert same(snakebridge.call("copy", "copy", [value]), value)
    assert math.isnan(snakebridge.call("builtins", "float", ["nan"]))


def test_stdlib_collections_are_values_other_subclasses_refs() -> None:
    counter = snakebridge.call("collections", "Counter", ["abracadabra"])
    assert type(counter) is collections.Counter and counter["a"] == 5
    ordered = snakebridge.call("collections", "OrderedDict", [[("x", 1)]])
    assert type(ordered) is collections.OrderedDict and ordered == {"x": 1}
    cookie = snakebridge.call("http.cookies", "SimpleCookie", ["a=1"])
    assert type(cookie) is Ref and cookie["a"].value == "1"


def test_containers_keep_structure_and_only_opaque_leaves_become_refs() -> None:
    path = snakebridge.call("pathlib", "Path", ["/tmp"])
    mixed = snakebridge.call("builtins", "list", [(1, path, "x", {"k": path})])
    assert mixed[0] == 1 and mixed[2] == "x"
    assert type(mixed[1]) is Ref and str(mixed[1]) == "/tmp"
    assert type(mixed[3]) is dict and type(mixed[3]["k"]) is Ref
    as_dict = snakebridge.call("builtins", "dict", [[("a", path), ("b", 2)]])
    assert type(as_dict["a"]) is Ref and as_dict["b"] == 2


def test_enum_members_travel_by_value() -> None:
    class Color(enum.Enum):
        RED = "red"

    assert snakebridge.call("copy", "copy", [Color.RED]) == "red"
    assert snakebridge.call("signal", "Signals", [9]) == 9


def test_paths_are_refs_unless_asked_and_are_sent_as_values() -> None:
    assert type(snakebridge.call("pathlib", "Path", ["/tmp"])) is Ref
    with snakebridge.options(path_values=True):
        path = snakebridge.call("pathlib", "Path", ["/tmp"])
    assert type(path) is pathlib.PosixPath and path == pathlib.Path("/tmp")
    assert snakebridge.call("os.path", "basename", [pathlib.PurePosixPath("/a/b")]) == "b"


def test_numpy_arrays_and_scalars_by_value() -> None:
    array = snakebridge.call("numpy", "arange", [12], {"dtype": "float32"})
    assert type(array) is np.ndarray and array.dtype == np.float32
    assert array.flags.writeable and array.tolist() == list(range(12))
    grid = snakebridge.call("numpy", "reshape", [np.arange(6), [2, 3]])
    assert grid.shape == (2, 3) and grid[1, 2] == 5
    total = snakebridge.call("numpy", "sum", [np.ones(1000)])
    assert type(total) is np.float64 and total == 1000.0
    big = snakebridge.call("numpy", "zeros", [[512, 512]])
    assert big.shape == (512, 512) and not big.any()


def test_uuid_and_datetime_types() -> None:
    now = datetime.datetime(2026, 11, 23, 4, 5, 6, 789, tzinfo=datetime.UTC)
    assert same(snakebridge.call("copy", "copy", [now]), now)
    token = uuid.uuid4()
    assert same(snakebridge.call("copy", "copy", [token]), token)


def test_unsendable_argument_names_its_path() -> None:
    cyclic: dict[str, Any] = {"a": [1]}
    cyclic["a"].append(cyclic)
    with pytest.raises(EncodeError) as caught:
        snakebridge.call("copy", "copy", [cyclic])
    assert caught.value.path == "args[0]['a'][1]"
    assert "contains itself" in str(caught.value) and "args[0]['a'][1]" in str(caught.value)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match=r"kwargs\['x'\]\[0\]"):
        snakebridge.call("builtins", "dict", [], {"x": loop})
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        snakebridge.call("math", "sqrt", 16)  # type: ignore[arg-type]


def nested(depth: int, kind: Callable[[Any], Any] = lambda x: (x,)) -> Any:
    value: Any = ()
    for _ in range(depth):
        value = kind(value)
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while value:
        value, depth = next(iter(value)), depth + 1
    return depth


def test_deep_values_cross_and_too_deep_ones_are_clear_errors() -> None:
    """Each level was a nested unpackb: 200 levels segfaulted the host (issue 10 item 1)."""
    builder = "__import__('functools').reduce(lambda a, _: {kind}, range({depth}), ())"
    for kind in ("(a,)", "frozenset([a])", "[a]"):
        deep = snakebridge.call("builtins", "eval", [builder.format(kind=kind, depth=200)])
        assert depth_of(deep) == 200
    assert depth_of(snakebridge.call("copy", "copy", [nested(300)])) == 300
    with pytest.raises(DecodeError, match="nesting limit"):
        snakebridge.call("builtins", "eval", [builder.format(kind="(a,)", depth=3000)])
    with pytest.raises(EncodeError, match="levels deep") as caught:
        snakebridge.call("copy", "copy", [[nested(3000)]])
    assert caught.value.path.startswith("args[0][0]")
    assert snakebridge.call("operator", "add", [1, 2]) == 3  # the worker is fine


def test_a_failed_encode_keeps_no_host_callables() -> None:
    from snakebridge.runtime.codec import CALLBACKS

    snakebridge.call("operator", "pos", [1])
    before = len(CALLBACKS)
    loop: list[Any] = []
    loop.append(loop)
    for _ in range(5):
        with pytest.raises(EncodeError):
            snakebridge.call("builtins", "sorted", [[1], loop], {"key": lambda x: x})
    assert len(CALLBACKS) == before


def test_a_key_whose_repr_fails_is_still_an_encode_error() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="contains itself"):
        snakebridge.call("copy", "copy", [{BadRepr(): loop}])


def test_oversized_arguments_fail_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = default_pool()
    pids = {worker.pid for worker in pool.workers}
    monkeypatch.setattr(codec_for_thread(), "max_frame", 1 << 20)
    with pytest.raises(EncodeError, match="frame limit; nothing was sent"):
        snakebridge.call("builtins", "len", ["x" * (2 << 20)])  # str: large bytes go by shm
    monkeypatch.undo()
    assert snakebridge.call("builtins", "len", ["x" * (2 << 20)]) == 2 << 20
    assert {worker.pid for worker in pool.workers} == pids  # no worker was harmed


def test_a_reply_that_cannot_be_sent_leaves_no_refs_behind() -> None:
    pool = default_pool()
    before = registry_size(pool)
    deep = "__import__('functools').reduce(lambda a, _: (a,), range(3000), ())"
    code = f"[object(), object(), {deep}]"
    for _ in range(3):
        with pytest.raises(DecodeError):
            snakebridge.call("builtins", "eval", [code])
    assert registry_size(pool) == before


class Unknown:
    """Sent as an extension code the worker does not know (see the fixture below)."""


@pytest.fixture
def unknown_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = codec_for_thread()
    real = codec.fallback

    def fallback(obj: Any) -> Any:
        return msgpack.ExtType(99, b"?") if type(obj) is Unknown else real(obj)

    monkeypatch.setattr(codec, "fallback", fallback)


@pytest.mark.usefixtures("unknown_extension")
def test_arguments_the_worker_cannot_decode_fail_the_call_not_the_worker() -> None:
    pool = default_pool()
    pids = {worker.pid for worker in pool.workers}
    with pytest.raises(DecodeError, match="unknown extension type 99"):
        snakebridge.call("copy", "copy", [[1, Unknown()]])
    with pytest.raises(ValueError, match="unknown extension type 99"):  # a callback's answer
        snakebridge.call("builtins", "sorted", [[1, 2]], {"key": lambda _: Unknown()})
    assert snakebridge.call("operator", "add", [1, 2]) == 3
    assert {worker.pid for worker in pool.workers} == pids


def test_hostile_frames_decode_to_errors_on_both_ends() -> None:
    from snakebridge_worker.values import DepthError, ValueCodec

    deep = b"\x91" * 5000 + b"\xc0"
    with pytest.raises(DepthError):
        ValueCodec().unpack(deep)
    codec = codec_for_thread()
    with pytest.raises(DecodeError, match="nesting limit"):
        codec.decode(b"\x93\x03\x01" + deep, None, None)  # type: ignore[arg-type]
    old_style = msgpack.packb(msgpack.ExtType(1, msgpack.packb([1, 2])))
    with pytest.raises(DecodeError, match="unknown extension"):
        codec.decode(b"\x93\x03\x01" + old_style, None, None)  # type: ignore[arg-type]


def test_msgpack_timestamps_are_values_and_malformed_ones_decode_errors() -> None:
    """msgpack decodes its own extension -1 before any hook sees it: a well-formed one is the
    ``msgpack.Timestamp`` a library in the worker made (by value, exact), a malformed one a
    DecodeError."""
    back = snakebridge.call("msgpack", "Timestamp", [1, 5])
    assert type(back) is msgpack.Timestamp and back == msgpack.Timestamp(1, 5)
    assert snakebridge.call("copy", "copy", [msgpack.Timestamp(3, 4)]) == msgpack.Timestamp(3, 4)
    codec = codec_for_thread()
    with pytest.raises(DecodeError, match="invalid timestamp"):
        codec.decode(b"\x93\x03\x01\xc7\x03\xffabc", None, None)  # type: ignore[arg-type]


def test_host_callables_are_called_back() -> None:
    assert snakebridge.call("builtins", "sorted", [[3, 1, 2]], {"key": lambda x: -x}) == [3, 2, 1]
    seen: list[int] = []
    mapped = snakebridge.call("builtins", "map", [seen.append, [1, 2]])
    snakebridge.call("builtins", "list", [mapped])
    assert seen == [1, 2]


def test_host_callback_errors_reach_the_library() -> None:
    def fail(_: int) -> int:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        snakebridge.call("builtins", "sorted", [[1, 2]], {"key": fail})


def test_callbacks_the_worker_dropped_are_forgotten() -> None:
    from snakebridge.runtime.codec import CALLBACKS

    before = len(CALLBACKS)
    for _ in range(20):
        assert snakebridge.call("builtins", "sorted", [[1, 2]], {"key": lambda x: -x}) == [2, 1]
    assert len(CALLBACKS) <= before + 2


def test_mutated_frames_never_escape_as_anything_but_decode_errors() -> None:
    """20,000 seeded mutations of real frames: each end raises only its decode errors."""
    import random

    from snakebridge.errors import ProtocolError
    from snakebridge_worker import main as worker_main
    from snakebridge_worker import protocol as p

    class NoConnection:
        max_frame = p.DEFAULT_MAX_FRAME

    worker = worker_main.WorkerCodec(worker_main.Registry(), True, NoConnection())  # type: ignore[arg-type]
    host = codec_for_thread()
    samples = [
        [p.RESULT, 7, value]
        for value in (
            (1, (2, (3,))),
            {frozenset({1}): [datetime.date(2020, 1, 2), decimal.Decimal("1.5")]},
            [(i, str(i), None) for i in range(10)],
            collections.deque([range(3), slice(1, 2), ...], maxlen=4),
            np.arange(6.0).reshape(2, 3),
            uuid.UUID(int=5),
        )
    ]
    frames = [worker.pack(sample) for sample in samples]
    rng = random.Random(11)
    for _ in range(20_000):
        frame = bytearray(rng.choice(frames))
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(frame) or 1)
            if rng.random() < 0.2:
                del frame[position:]
                frame += bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))
            else:
                frame[position : position + 1] = bytes([rng.randrange(256)])
        with contextlib.suppress(DecodeError, ProtocolError):
            host.decode(bytes(frame), None, None)  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):  # ArgumentError, DepthError or a malformed frame
            worker.unpack(bytes(frame))
