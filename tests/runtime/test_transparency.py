"""Ordinary host values cross the bridge unchanged (issue 11 items 1, 2, 5, 6 and 7)."""

from __future__ import annotations

import collections
import datetime
import decimal
import gc
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

import snakebridge
from snakebridge import Ref
from snakebridge.runtime import exchange as exchange_module
from snakebridge.runtime.codec import CALLBACKS


def echo(value: Any) -> Any:
    return snakebridge.call("copy", "copy", [value])


@pytest.fixture
def host_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the callbacks workers make into the host (one entry per round trip)."""
    trips: list[int] = []
    real = exchange_module.callback_reply

    def counted(message: list[Any], codec: Any) -> bytes:
        trips.append(message[1])
        return real(message, codec)

    monkeypatch.setattr(exchange_module, "callback_reply", counted)
    return trips


# -- item 1: ordinary host values can be sent ------------------------------------------------
def test_stdlib_value_kinds_round_trip_exactly() -> None:
    assert snakebridge.call("builtins", "sum", [range(5)]) == 10
    for value in (
        range(2, 10, 3),
        slice(1, None, 2),
        ...,
        collections.OrderedDict(b=1, a=2),
        collections.deque([1, 2], maxlen=5),
        collections.Counter("abracadabra"),
        decimal.DecimalTuple(0, (1, 2), -1),  # a namedtuple of an importable class
    ):
        back = echo(value)
        assert type(back) is type(value) and back == value
    assert echo(collections.deque([1], maxlen=5)).maxlen == 5
    assert list(echo(collections.OrderedDict(b=1, a=2))) == ["b", "a"]
    factory = echo(collections.defaultdict(list, {"a": [1]}))
    assert type(factory) is collections.defaultdict and factory.default_factory is list
    assert factory == {"a": [1]}
    local = collections.namedtuple("local", "x y")  # not importable: its fields as a tuple
    assert echo(local(1, 2)) == (1, 2) and type(echo(local(1, 2))) is tuple


def test_iterators_generators_and_host_mappings_are_sent() -> None:
    assert snakebridge.call("builtins", "sum", [(x * x for x in range(5))]) == 30
    assert snakebridge.call("builtins", "list", [map(str, [1, 2])]) == ["1", "2"]
    pairs = zip("ab", [1, 2], strict=True)
    assert snakebridge.call("builtins", "list", [pairs]) == [("a", 1), ("b", 2)]
    assert snakebridge.call("operator", "getitem", [os.environ, "PATH"]) == os.environ["PATH"]
    assert snakebridge.call("builtins", "dict", [os.environ]) == dict(os.environ)


class Box:
    """A user class the worker has never heard of."""

    def __init__(self) -> None:
        self.v = 3
        self._secret = "host only"

    def scaled(self, k: int = 1) -> int:
        return self.v * k

    def __len__(self) -> int:
        return 7

    def __iter__(self) -> Iterator[int]:
        return iter(range(40))

    def __getitem__(self, key: int) -> int:
        return key * 10

    def __add__(self, other: int) -> int:
        return self.v + other


def test_host_objects_reach_the_worker_by_reference() -> None:
    box = Box()
    assert snakebridge.call("builtins", "getattr", [box, "v"]) == 3
    assert snakebridge.call("operator", "methodcaller", ["scaled", 5])(box) == 15
    assert snakebridge.call("builtins", "len", [box]) == 7
    assert snakebridge.call("builtins", "list", [box]) == list(range(40))
    assert snakebridge.call("operator", "getitem", [box, 4]) == 40
    assert snakebridge.call("operator", "add", [box, 1]) == 4
    assert snakebridge.call("builtins", "list", [[box]])[0] is box  # the same object back
    snakebridge.call("builtins", "setattr", [box, "v", 9])
    assert box.v == 9  # the worker wrote to the host's object
    with pytest.raises(AttributeError, match="_secret"):
        snakebridge.call("builtins", "getattr", [box, "_secret"])  # private: refused


def test_host_objects_are_released_when_the_worker_drops_them() -> None:
    snakebridge.call("operator", "pos", [1])
    before = len(CALLBACKS)
    for _ in range(30):
        assert snakebridge.call("builtins", "len", [Box()]) == 7
    gc.collect()
    assert len(CALLBACKS) <= before + 2


def test_a_host_generator_is_not_consumed_past_what_the_worker_took() -> None:
    taken: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(100):
            taken.append(n)
            yield n

    generator = numbers()
    assert snakebridge.call("builtins", "next", [generator]) == 0
    assert snakebridge.call("itertools", "islice", [generator, 2]) is not None
    assert snakebridge.call("builtins", "next", [generator]) == 1
    assert next(generator) == 2 and taken == [0, 1, 2]  # nothing prefetched and lost


# -- item 2: types, functions and modules travel by name --------------------------------------
def test_types_functions_and_modules_are_the_workers_own(host_trips: list[int]) -> None:
    assert snakebridge.call("numpy", "zeros", [3], {"dtype": float}).dtype == np.float64
    assert snakebridge.call("numpy", "zeros", [3], {"dtype": np.float32}).dtype == np.float32
    assert snakebridge.call("builtins", "isinstance", ["a", str]) is True
    assert snakebridge.call("builtins", "issubclass", [json.JSONDecodeError, ValueError])
    assert snakebridge.call("builtins", "len", [re.RegexFlag]) == len(re.RegexFlag)
    assert snakebridge.call("builtins", "repr", [re.IGNORECASE]) == repr(re.IGNORECASE)
    dumps = snakebridge.call("builtins", "getattr", [json, "dumps"])
    assert type(dumps) is Ref and dumps([1]) == "[1]"
    assert snakebridge.call("builtins", "type", [1]) is int
    words = snakebridge.call("builtins", "iter", [["ccc", "a", "bb"] * 50])
    assert isinstance(words, Ref)  # a Ref to an iterator (an IteratorRef)
    assert snakebridge.call("builtins", "sorted", [words], {"key": len})[:3] == ["a"] * 3
    assert host_trips == []  # len ran in the worker: no host round trip per item


def test_names_resolve_within_the_allowlist(
    configured: Callable[[str], Path], host_trips: list[int]
) -> None:
    configured('[tool.snakebridge.libraries]\njson = "stdlib"\n')
    dumped = snakebridge.call(
        "json", "dumps", [[1, "a"]], {"default": str, "cls": json.JSONEncoder}
    )
    assert dumped == '[1, "a"]' and host_trips == []  # the worker's own str and JSONEncoder
    assert snakebridge.call("json", "dumps", [[b"x"]], {"default": bytes.hex}) == '["78"]'
    assert len(host_trips) == 1  # bytes.hex is outside the allowlist: it ran in the host
    assert snakebridge.call("json", "dumps", [re.IGNORECASE]) == "2"  # re is not allowed


def test_facade_classes_travel_as_the_remote_class() -> None:
    class float32:  # what a generated facade class carries
        __sb_remote__ = ("numpy", "float32")

    assert snakebridge.call("numpy", "zeros", [2], {"dtype": float32}).dtype == np.float32

    def hypot(*args: float) -> float:  # a facade function: its remote twin runs, no callback
        raise AssertionError("the host function must not be called")

    hypot.__sb_remote__ = ("math", "hypot")  # type: ignore[attr-defined]
    assert snakebridge.call("functools", "reduce", [hypot, [3, 4]]) == 5.0


def host_key(value: int) -> int:
    """A module-level function of a module the worker cannot import."""
    return -value


def test_functions_the_worker_cannot_import_are_called_back(host_trips: list[int]) -> None:
    assert snakebridge.call("builtins", "sorted", [[1, 3, 2]], {"key": host_key}) == [3, 2, 1]
    assert len(host_trips) == 3


def test_a_callback_whose_default_is_a_ref_is_described_without_calling_the_worker() -> None:
    part = snakebridge.call("functools", "partial", [sorted, [3, 1, 2]])

    def key(value: int, part: Any = part) -> int:
        return -value

    assert part(key=key) == [3, 2, 1]
    # a Ref's repr is a call to its worker; made while encoding, it broke the call (#9)
    assert "part=<" in str(snakebridge.call("inspect", "signature", [key]))


def test_callbacks_keep_their_name_doc_and_signature() -> None:
    def fit(x: float, a: float, b: float = 2.0) -> float:
        """A model to fit."""
        return a * x + b

    signature = snakebridge.call("inspect", "signature", [fit])
    assert str(signature) == "(x, a, b=2.0)"  # names, kinds and defaults (not annotations)
    assert snakebridge.call("builtins", "getattr", [fit, "__name__"]) == "fit"
    assert snakebridge.call("builtins", "getattr", [fit, "__qualname__"]) == fit.__qualname__
    assert snakebridge.call("builtins", "getattr", [fit, "__doc__"]) == "A model to fit."
    arity = "lambda f: len(__import__('inspect').signature(f).parameters) - 1"
    assert snakebridge.call("builtins", "eval", [arity])(fit) == 2  # what curve_fit reads


# -- item 5 (runtime side): host callbacks' exceptions keep their type -----------------------
class Oops(ValueError):
    pass


def test_a_host_callbacks_exception_comes_back_as_itself() -> None:
    raised: list[BaseException] = []

    def fail(_: Any) -> Any:
        raised.append(Oops("bad"))
        raise raised[-1]

    with pytest.raises(Oops) as caught:
        snakebridge.call("builtins", "sorted", [[1, 2]], {"key": fail})
    assert caught.value is raised[0]

    def bad_json(_: Any) -> Any:
        raised.append(json.JSONDecodeError("no", "doc", 0))
        raise raised[-1]

    with pytest.raises(json.JSONDecodeError) as decoded:
        snakebridge.call("builtins", "list", [map(bad_json, [1])])
    assert decoded.value is raised[-1]


def test_in_the_worker_it_is_an_instance_of_its_builtin_base() -> None:
    class Missing(AttributeError):
        pass

    class Lazy:
        @property
        def value(self) -> Any:
            raise Missing("not here")

    # getattr(obj, name, default) in the worker catches AttributeError: Missing must be one.
    assert snakebridge.call("builtins", "getattr", [Lazy(), "value", "default"]) == "default"
    assert snakebridge.call("builtins", "hasattr", [Lazy(), "value"]) is False


# -- item 6: no silent loss of mutation -------------------------------------------------------
def test_writes_to_host_arrays_fail_clearly_unless_marked_inout() -> None:
    a = np.arange(5.0)
    with pytest.raises(ValueError, match=r"read-only.*snakebridge\.inout"):
        snakebridge.call("numpy", "multiply", [a, 2], {"out": a})
    with pytest.raises(ValueError, match=r"snakebridge\.inout"):
        snakebridge.call("numpy.random", "shuffle", [a])
    with pytest.raises(ValueError, match=r"snakebridge\.inout"):
        snakebridge.call("numpy", "copyto", [a, 7.0])
    assert a.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # nothing half-written either
    assert snakebridge.call("numpy", "sum", [a]) == 10.0  # reading is unaffected


def test_inout_arrays_see_the_workers_writes() -> None:
    a = np.arange(5.0)
    marked = snakebridge.inout(a)
    assert snakebridge.call("numpy", "multiply", [marked, 2], {"out": marked}) is not None
    assert a.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    snakebridge.call("numpy", "copyto", [snakebridge.inout(a), 7.0])
    assert a.tolist() == [7.0] * 5
    deck = np.arange(50)
    snakebridge.call("numpy.random", "shuffle", [snakebridge.inout(deck)])
    assert sorted(deck.tolist()) == list(range(50)) and deck.tolist() != list(range(50))
    with pytest.raises(TypeError, match="writeable numpy array"):
        snakebridge.inout([1, 2])


# -- item 7: values are exact -----------------------------------------------------------------
def test_zoned_datetimes_keep_their_zone_and_fold() -> None:
    paris = ZoneInfo("Europe/Paris")
    summer = datetime.datetime(2026, 7, 1, 12, 0, tzinfo=paris)
    back = echo(summer)
    assert type(back.tzinfo) is ZoneInfo and back.tzinfo.key == "Europe/Paris"
    later = back + datetime.timedelta(days=180)
    assert later.utcoffset() == datetime.timedelta(hours=1)  # winter time, as in process
    ambiguous = datetime.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=paris)
    assert echo(ambiguous).fold == 1 and echo(ambiguous).utcoffset() == ambiguous.utcoffset()
    assert echo(datetime.time(1, 2, fold=1)).fold == 1


def test_arrays_keep_order_and_structure_dtypes_and_scalars_are_values() -> None:
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    back = echo(fortran)
    assert back.flags.f_contiguous and not back.flags.c_contiguous
    assert np.array_equal(back, fortran)
    records = snakebridge.call("numpy", "zeros", [3], {"dtype": [("a", "i4"), ("b", "f8")]})
    assert type(records) is np.ndarray and records.dtype.names == ("a", "b")
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8]})
    assert echo(np.zeros(2, dtype=padded)).dtype == padded
    for dtype in (np.dtype("f4"), np.dtype([("a", "<i4"), ("b", "<f8", (2,))]), padded):
        assert echo(dtype) == dtype
    assert type(echo(np.float32(1.5))) is np.float32
    assert echo(records[0]) == records[0]


def test_bytearray_stays_bytearray_and_memoryview_arrives_as_bytes() -> None:
    back = echo(bytearray(b"ab"))
    assert type(back) is bytearray and back == bytearray(b"ab")
    assert echo(memoryview(b"ab")) == b"ab"  # by value, documented in docs/protocol.md


# -- the remaining fixable failures of the more-itertools measure ---------------------------
def test_only_refs_to_iterators_are_iterators() -> None:
    container = snakebridge.call("collections", "UserList", [[1, 2]])
    assert isinstance(container, collections.abc.Iterable)
    assert not isinstance(container, collections.abc.Iterator)  # numeric_range's parent classes
    with pytest.raises(TypeError):
        next(container)  # type: ignore[call-overload]
    items = snakebridge.call("builtins", "iter", [[1, 2, 3]])
    assert isinstance(items, Ref) and isinstance(items, collections.abc.Iterator)
    assert iter(items) is items and next(items) == 1 and list(items) == [2, 3]
    generator = snakebridge.call("builtins", "eval", ["(n * n for n in range(4))"])
    assert next(generator) == 0 and list(generator) == [1, 4, 9]  # nothing skipped or lost


def test_a_proxy_class_of_an_iterator_type_is_an_iterator_too() -> None:
    from snakebridge.runtime import refs

    class ListIterator(Ref):
        __slots__ = ()

    class Box(Ref):
        __slots__ = ()

    refs.register_proxy("builtins.list_iterator", ListIterator)
    refs.register_proxy("collections.UserList", Box)
    try:
        items = snakebridge.call("builtins", "iter", [[1, 2]])
        assert type(items) is ListIterator  # the proxy class of exactly that type stays it
        assert isinstance(items, collections.abc.Iterator) and next(items) == 1
        box = snakebridge.call("collections", "UserList", [[1]])
        assert type(box) is Box and not isinstance(box, collections.abc.Iterator)
        assert isinstance(box, collections.abc.MutableSequence)
    finally:
        refs._PROXIES.clear()
        refs._CLASS_FOR.clear()


class Producer:
    """A host iterator whose ``__iter__`` runs code (more-itertools' iter_suppress tests)."""

    def __init__(self, die_early: bool) -> None:
        self.die_early, self.pos = die_early, 0

    def __iter__(self) -> Producer:
        if self.die_early:
            raise LookupError("dies in __iter__")
        return self

    def __next__(self) -> int:
        self.pos += 1
        if self.pos > 3:
            raise StopIteration
        return self.pos


def test_iter_of_a_host_iterator_runs_its_own_iter() -> None:
    with pytest.raises(LookupError, match="dies in __iter__"):
        snakebridge.call("builtins", "list", [Producer(die_early=True)])
    same = snakebridge.call("builtins", "eval", ["lambda p: iter(p) is p"])
    assert same(Producer(die_early=False)) is True
    assert snakebridge.call("builtins", "list", [Producer(die_early=False)]) == [1, 2, 3]
    assert same(x for x in "ab") is True  # a generator's __iter__ is a C slot: no round trip


def worker_function(source: str, name: str) -> Any:
    """A function defined in the worker from ``source`` (a Ref to it)."""
    define = f"(lambda g: (exec({source!r}, g), g[{name!r}])[1])({{}})"
    return snakebridge.call("builtins", "eval", [define])


CATCH = """
def collect(func, exceptions):
    items = []
    while True:
        try:
            items.append(func())
        except exceptions:
            return items

def throw(cls, *args):
    raise cls(*args)

def ident(obj):
    return id(obj)
"""


def test_exception_classes_the_worker_cannot_import_get_stand_ins() -> None:
    class Fiz(Exception):  # defined in a function: not importable in the worker
        pass

    class Buzz(Fiz, LookupError):
        pass

    count = 0

    def fizbuzz() -> int:
        nonlocal count
        count += 1
        if count % 3 == 0:
            raise Fiz
        if count % 5 == 0:
            raise Buzz("five")
        return count

    collect = worker_function(CATCH, "collect")
    expected = [[1, 2], [4], [], [7, 8], []]  # more-itertools' IterExceptTests.test_multiple
    assert [collect(fizbuzz, (Fiz, Buzz)) for _ in expected] == expected
    assert collect(fizbuzz, Fiz) == [11]  # except Fiz catches a Buzz as well
    assert snakebridge.call("builtins", "issubclass", [Buzz, Fiz]) is True
    assert snakebridge.call("builtins", "issubclass", [Buzz, LookupError]) is True
    assert snakebridge.call("copy", "copy", [Buzz]) is Buzz  # a stand-in comes back as itself
    ident = worker_function(CATCH, "ident")
    assert ident(Fiz) == ident(Fiz)  # one stand-in per host class, kept between calls
    with pytest.raises(Buzz) as raised:  # raised in the worker, an instance of the host class
        worker_function(CATCH, "throw")(Buzz, "from the worker")
    assert type(raised.value) is Buzz and raised.value.args == ("from the worker",)
    assert "Remote traceback" in "".join(raised.value.__notes__)

    def fail(_: Any) -> Any:
        raise Fiz("from the host")

    with pytest.raises(Fiz, match="from the host"):  # out of the call: the host's own object
        snakebridge.call("builtins", "sorted", [[1, 2]], {"key": fail})


def test_refs_to_remote_sequences_and_mappings_are_sequences_and_mappings() -> None:
    listed = snakebridge.call("collections", "UserList", [[1, 2]])
    assert isinstance(listed, collections.abc.MutableSequence)  # as numeric_range's parents
    assert not isinstance(listed, collections.abc.Mapping)
    mapping = snakebridge.call("collections", "UserDict", [{"a": 1}])
    assert isinstance(mapping, collections.abc.MutableMapping)
    assert not isinstance(mapping, collections.abc.Sequence)


POWERSET = """
from itertools import combinations, starmap

def powerset_of_sets(iterable):
    sets = tuple(map(set, dict.fromkeys(map(frozenset, zip(iterable)))))
    for r in range(len(sets) + 1):
        yield from starmap(set().union, combinations(sets, r))
"""


class Counted:
    """A host object (by reference) that counts the calls of its ``__hash__``."""

    hashes = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        Counted.hashes += 1
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Counted({self.name!r})"


def test_host_objects_in_sets_that_come_back_are_hashed_once() -> None:
    keys = [Counted(name) for name in "ABCDEFG"]
    Counted.hashes = 0
    powerset = worker_function(POWERSET, "powerset_of_sets")
    subsets = list(powerset(iter(keys)))
    assert Counted.hashes <= 2 * len(keys)  # more-itertools' test_hash_count: not 7 per set
    assert len(subsets) == 128 and all(type(subset) is set for subset in subsets)
    assert {keys[0], keys[3]} in subsets and set(keys) in subsets and set() in subsets
    mixed = snakebridge.call("builtins", "frozenset", [[keys[1], 2, "x"]])
    assert type(mixed) is frozenset and mixed == frozenset([keys[1], 2, "x"])


def test_an_exception_of_a_host_class_that_is_gone_is_a_remote_error() -> None:
    class Gone(LookupError):
        pass

    store = snakebridge.call("collections", "UserList")
    store.append(Gone)  # the worker keeps the stand-in; the host drops its class
    del Gone
    gc.collect()
    throw_first = worker_function(
        "def throw_first(store):\n    raise store[0]('x')\n", "throw_first"
    )
    with pytest.raises(LookupError, match="x") as raised:
        throw_first(store)
    assert isinstance(raised.value, snakebridge.RemoteError)
