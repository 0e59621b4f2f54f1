"""Facades are real proxies: constructing returns an instance of the facade class, results typed
as a facade class come back as it, methods are one round trip, library exceptions are real."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
from snakebridge.codegen.pipeline import Project
from snakebridge.facade import NOT_GIVEN, _arguments
from snakebridge.runtime.refs import Ref

Make = Callable[..., Project]

APP = """
import configparser as _cp
from snakebridge_generated import configparser, decimal, ipaddress, json, logging, pathlib
from snakebridge_generated.collections import Counter

json.loads, json.JSONDecodeError, pathlib.Path, Counter, configparser.Error
configparser.ConfigParser, configparser.SectionProxy, decimal.DefaultContext, logging.root
configparser.RawConfigParser, logging.Logger
ipaddress.IPv4Address
"""
PYPROJECT = """
[tool.snakebridge]
scan = ["app"]
[tool.snakebridge.libraries]
json = "stdlib"
pathlib = "stdlib"
collections = "stdlib"
configparser = "stdlib"
decimal = "stdlib"
logging = "stdlib"
ipaddress = "stdlib"
"""


@pytest.fixture
def facades(make_project: Make, tmp_path: Path) -> Iterator[Path]:
    report = make_project({"main.py": APP}, pyproject=PYPROJECT).sync()
    assert not report.errors
    sys.path.insert(0, str(tmp_path))
    yield tmp_path / "snakebridge_generated"
    sys.path.remove(str(tmp_path))


def test_instances_are_of_their_facade_class(facades: Path) -> None:
    from snakebridge_generated import collections, configparser, pathlib

    parser = configparser.ConfigParser()
    assert type(parser) is configparser.ConfigParser and isinstance(parser, Ref)
    parser.read_string("[main]\nkey = 1\n")
    section = parser["main"]  # typed SectionProxy: it comes back as that facade class
    assert type(section).__name__ == "SectionProxy" and section["key"] == "1"
    assert isinstance(section, configparser.SectionProxy)
    assert not isinstance(parser, configparser.SectionProxy)
    with pytest.raises(TypeError, match="unhashable"):  # as in process: hash asks the worker
        hash(section)
    from snakebridge_generated import ipaddress

    address = ipaddress.IPv4Address("10.0.0.1")  # defines __eq__: the facade keeps __hash__
    assert type(address) is ipaddress.IPv4Address and address == ipaddress.IPv4Address("10.0.0.1")
    assert len({address, ipaddress.IPv4Address("10.0.0.1")}) == 1
    assert snakebridge.method(parser, "sections") == ["main"]
    words = collections.Counter(["a", "b", "a"])  # a by-value type: the host's own Counter
    assert isinstance(words, collections.Counter) and not isinstance(words, pathlib.Path)


def test_a_method_call_is_one_round_trip(facades: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from snakebridge_generated import configparser

    parser = configparser.ConfigParser()
    operations: list[tuple[Any, ...]] = []
    original = Ref._sb_op

    def counted(self: Ref, *args: Any, **kwargs: Any) -> Any:
        operations.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ref, "_sb_op", counted)
    assert parser.has_section("main") is False
    assert len(operations) == 1


def test_library_exceptions_are_real_exception_classes(facades: Path) -> None:
    from snakebridge_generated import configparser, json

    assert issubclass(json.JSONDecodeError, ValueError)
    assert issubclass(json.JSONDecodeError, snakebridge.RemoteError)
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads("{")
    assert caught.value.remote_type == "json.decoder.JSONDecodeError"
    parser = configparser.ConfigParser()
    with pytest.raises(configparser.Error) as missing:  # NoSectionError: matched by its MRO
        parser.get("no-such-section", "key")
    assert missing.value.remote_type == "configparser.NoSectionError"


def test_module_constants_are_values_or_typed_refs(facades: Path) -> None:
    from snakebridge_generated import decimal, logging

    context = decimal.DefaultContext
    assert type(context).__name__ == "Context" and context.prec == 28
    assert type(logging.root).__name__ == "RootLogger"
    assert isinstance(logging.root.getEffectiveLevel(), int)


def test_namespaces_hold_only_library_names(facades: Path) -> None:
    from snakebridge_generated import json

    assert not {"Any", "annotations", "TYPE_CHECKING"} & set(vars(json))
    assert all(not name.startswith("_") for name in json.__all__)
    namespace: dict[str, Any] = {"__file__": "mine.py"}
    exec("from snakebridge_generated.json import *", namespace)
    assert namespace["__file__"] == "mine.py" and "loads" in namespace


def test_facade_classes_follow_the_library_mro(facades: Path) -> None:
    from snakebridge_generated import configparser, logging

    assert issubclass(configparser.ConfigParser, configparser.RawConfigParser)
    assert "sections" not in vars(configparser.ConfigParser)  # inherited as it is
    parser = configparser.ConfigParser()
    assert isinstance(parser, configparser.RawConfigParser) and parser.sections() == []
    assert isinstance(logging.root, logging.Logger)  # RootLogger(Logger), both generated
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(facades)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout  # overrides the library makes are marked


def test_generated_source_is_ruff_format_clean(facades: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--isolated", "--check", str(facades)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    source = (facades / "json" / "__init__.py").read_text()
    assert "Signature tier" not in source  # the tier is in the manifest and `snakebridge doc`


def test_only_arguments_the_caller_passed_are_sent() -> None:
    params = (("a", 1, 1), ("b", "__no_default__", 1, "__no_default__"), ("c", 3, 2, 0))
    assert _arguments(params, (), None) == ([1], {"c": 3})
    assert _arguments((("a", 1, 1), ("b", NOT_GIVEN, 1), ("c", 5, 1)), (), None) == (
        [1],
        {"c": 5},
    )
    held = (("a", 1, 0, 1), ("b", 2, 0))  # a positional-only one needs the slot before it
    assert _arguments(held, (), None) == ([1, 2], {})
    with pytest.raises(TypeError, match="omitted positional-only"):
        _arguments((("a", NOT_GIVEN, 0), ("b", 2, 0)), (), None)
