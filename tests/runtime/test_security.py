"""The allowlist is a boundary: escape attempts from a caller who does not control the host.

With only ``json`` (and, for the protocol checks, ``collections`` and ``io``) allowed, every
attempt below must be refused with LibraryNotAllowed or SymbolNotFound, and normal use of
the allowed libraries must keep working. The worker enforces it: raw calls that skip the
host's routing and the ``snakebridge call`` command are refused the same way.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import snakebridge
import snakebridge_worker
from snakebridge import LibraryNotAllowed, Ref, SymbolNotFound, paths
from snakebridge.errors import UnsafePath
from snakebridge.runtime import status_files
from snakebridge.runtime.calls import prepare
from snakebridge.runtime.client import runtime
from snakebridge_worker import protocol as p

CONFIG = """
[tool.snakebridge.libraries]
json = "stdlib"
collections = "stdlib"
io = "stdlib"
[tool.snakebridge.pools.default]
size = 1
"""
REFUSED = (LibraryNotAllowed, SymbolNotFound)


@pytest.fixture
def boundary(configured: Callable[[str], Path]) -> Iterator[None]:
    configured(CONFIG)
    yield


def _decoder() -> Any:
    return snakebridge.call("json", "JSONDecoder")


def _raw(module: str, qualname: str, op: str = p.OP_CALL, args: list[Any] | None = None) -> Any:
    """A CALL frame built by hand, skipping the host's library routing entirely."""
    pool = runtime().pool("default")
    call = prepare(None, module, qualname, None, op, args or [], None, None, False, None)
    return pool.run(call)


def test_builtins_come_back_as_the_hosts_own_so_walking_them_stays_on_the_host() -> None:
    assert snakebridge.get("json", "JSONDecoder").mro()[1] is object
    assert snakebridge.call("json", "JSONDecoder").parse_float is float


def _callback_sees(name: str) -> Callable[[], Any]:
    """A host callback is handed a worker object (as a Ref) and reads ``name`` on it."""

    def attempt() -> Any:
        handed: list[Any] = []

        def default(obj: Any) -> str:  # json calls it with the object it cannot serialise
            handed.append(obj)
            return "x"

        snakebridge.call("json", "dumps", [[_decoder()]], {"default": default})
        (obj,) = handed
        assert isinstance(obj, Ref)
        return snakebridge.attr(obj, name)

    return attempt


ATTEMPTS: dict[str, Callable[[], Any]] = {
    # dotted symbols walking out of the package
    "codecs.builtins.eval": lambda: snakebridge.call("json", "codecs.builtins.eval", ["1"]),
    "codecs.builtins.exec": lambda: snakebridge.call("json", "codecs.builtins.exec", ["1"]),
    "codecs.builtins.open": lambda: snakebridge.call(
        "json", "codecs.builtins.open", ["/etc/passwd"]
    ),
    "decoder.re.enum.sys.modules": lambda: snakebridge.get("json", "decoder.re.enum.sys.modules"),
    "decoder.re": lambda: snakebridge.get("json", "decoder.re"),
    "scanner.re.compile": lambda: snakebridge.call("json", "scanner.re.compile", ["x"]),
    "codecs": lambda: snakebridge.get("json", "codecs"),
    # private names in symbol paths
    "__builtins__": lambda: snakebridge.get("json", "__builtins__"),
    "__builtins__.__import__": lambda: snakebridge.call("json", "__builtins__.__import__", ["os"]),
    "__dict__": lambda: snakebridge.get("json", "__dict__"),
    "__loader__": lambda: snakebridge.get("json", "__loader__"),
    "__spec__": lambda: snakebridge.get("json", "__spec__"),
    "decoder.__dict__": lambda: snakebridge.get("json", "decoder.__dict__"),
    "loads.__globals__": lambda: snakebridge.get("json", "loads.__globals__"),
    "JSONDecoder.decode.__globals__": lambda: snakebridge.get(
        "json", "JSONDecoder.decode.__globals__"
    ),
    "JSONDecoder.__init__.__globals__": lambda: snakebridge.get(
        "json", "JSONDecoder.__init__.__globals__"
    ),
    "JSONDecoder.__class__": lambda: snakebridge.get("json", "JSONDecoder.__class__"),
    "JSONDecoder.__mro__": lambda: snakebridge.get("json", "JSONDecoder.__mro__"),
    "JSONDecoder.__subclasses__": lambda: snakebridge.call("json", "JSONDecoder.__subclasses__"),
    "JSONDecoder.__reduce_ex__": lambda: snakebridge.call(
        "json", "JSONDecoder.__reduce_ex__", [_decoder(), 2]
    ),
    "JSONDecodeError.__init__.__globals__": lambda: snakebridge.get(
        "json", "JSONDecodeError.__init__.__globals__"
    ),
    "private module json.__init__": lambda: snakebridge.get("json.__init__", "loads"),
    # attribute access through Refs
    "function Ref __globals__": lambda: snakebridge.get("json", "loads").__globals__,
    "function Ref __code__": lambda: snakebridge.get("json", "loads").__code__,
    "function Ref __defaults__": lambda: snakebridge.get("json", "loads").__kwdefaults__,
    "instance Ref __dict__": lambda: _decoder().__dict__,
    "attr() __class__": lambda: snakebridge.attr(_decoder(), "__class__"),
    "method() __reduce_ex__": lambda: snakebridge.method(_decoder(), "__reduce_ex__", 2),
    "method() __getattribute__": lambda: snakebridge.method(
        _decoder(), "__getattribute__", "__class__"
    ),
    "setattr __class__": lambda: setattr(_decoder(), "__class__", 1),
    "delattr __dict__": lambda: delattr(_decoder(), "__dict__"),
    "bound method __self__": lambda: _decoder().decode.__self__,
    "bound method __func__": lambda: _decoder().decode.__func__,
    "module Ref walks to re": lambda: snakebridge.get("json", "decoder.scanner").re,
    "bound method to __func__": lambda: _decoder().decode.__func__,
    "__reduce_ex__ by method": lambda: snakebridge.method(_decoder(), "__reduce_ex__", 2),
    "__init_subclass__ by attr": lambda: snakebridge.attr(_decoder(), "__init_subclass__"),
    "operator.attrgetter as a Ref op": lambda: _decoder()._sb_op(
        p.OP_OPERATOR, "attrgetter", ["__globals__"]
    ),
    "operator.methodcaller as a Ref op": lambda: _decoder()._sb_op(
        p.OP_OPERATOR, "methodcaller", ["__reduce_ex__", 2]
    ),
    "builtin eval as a Ref op": lambda: _decoder()._sb_op(p.OP_BUILTIN, "eval", ["1"]),
    # callbacks
    "setattr of a private name": lambda: setattr(_decoder(), "_hidden", 1),
    "delattr of a private name": lambda: delattr(_decoder(), "_hidden"),
    "callback given a Ref reads __class__": _callback_sees("__class__"),
    "callback given a Ref reads __init__": _callback_sees("__init__"),
    "callback given a Ref reads __dict__": _callback_sees("__dict__"),
    # frames built by hand, skipping the host's routing
    "raw call os.system": lambda: _raw("os", "system", args=["true"]),
    "raw call builtins.eval": lambda: _raw("builtins", "eval", args=["1"]),
    "raw get posix": lambda: _raw("posix", "", op=p.OP_GET),
    "raw call json.codecs.builtins.eval": lambda: _raw("json", "codecs.builtins.eval", ["1"]),
}


def test_the_corpus_is_big_enough() -> None:
    assert len(ATTEMPTS) >= 30


@pytest.mark.usefixtures("boundary")
@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_escape_attempt_is_refused(name: str) -> None:
    with pytest.raises(REFUSED):
        ATTEMPTS[name]()


@pytest.mark.usefixtures("boundary")
def test_refusals_say_which_rule_and_the_fix() -> None:
    with pytest.raises(LibraryNotAllowed, match=r"json\.codecs is module 'codecs', outside"):
        snakebridge.call("json", "codecs.builtins.eval", ["1"])
    with pytest.raises(SymbolNotFound, match=r"'__globals__'.*private.*allow_private = true"):
        snakebridge.get("json", "loads").__globals__  # noqa: B018
    with pytest.raises(LibraryNotAllowed, match="module 'os' is outside the allowed libraries"):
        _raw("os", "system", args=["true"])


@pytest.mark.usefixtures("boundary")
def test_normal_use_keeps_working_inside_the_boundary() -> None:
    assert snakebridge.call("json", "dumps", [{"a": [1, 2]}]) == '{"a": [1, 2]}'
    assert snakebridge.call("json", "decoder.JSONDecoder.decode", [_decoder(), "[1]"]) == [1]
    assert isinstance(snakebridge.get("json", "__version__"), str)
    loads = snakebridge.get("json", "loads")
    assert loads.__name__ == "loads" and "JSON" in snakebridge.attr(loads, "__doc__")
    assert loads("[3]") == [3]
    decoder = _decoder()
    assert decoder.decode('{"x": 1}') == {"x": 1} and decoder.strict is True
    assert not hasattr(decoder, "__array_interface__")  # refused names are AttributeErrors
    ordered = snakebridge.call("collections", "ChainMap", [{"a": 1, "b": 2}])
    assert len(ordered) == 2 and ordered["a"] == 1 and "b" in ordered
    assert list(ordered) == ["a", "b"]
    ordered["c"] = 3
    assert snakebridge.method(ordered, "popitem") == ("c", 3)
    total = snakebridge.call("collections", "Counter", ["ab"]) + snakebridge.call(
        "collections", "Counter", ["a"]
    )
    assert total == {"a": 2, "b": 1}  # Counters travel by value
    with snakebridge.call("io", "StringIO", ["one\ntwo\n"]) as buffer:
        assert list(buffer) == ["one\n", "two\n"]
    assert snakebridge.call("json", "loads", ["[1]"], {"object_hook": dict}) == [1]


def test_allow_private_opts_a_library_out(configured: Callable[[str], Path]) -> None:
    configured('[tool.snakebridge.libraries.json]\nversion = "stdlib"\nallow_private = true\n')
    assert snakebridge.get("json", "decoder._CONSTANTS")["NaN"] != 0
    assert snakebridge.get("json", "loads").__code__ is not None
    with pytest.raises(LibraryNotAllowed):  # other packages stay fenced off
        snakebridge.call("json", "codecs.builtins.eval", ["1"])


def test_without_a_config_table_nothing_is_fenced() -> None:
    assert snakebridge.get("json", "decoder._CONSTANTS")["NaN"] != 0
    assert snakebridge.call("json", "codecs.builtins.eval", ["1 + 1"]) == 2


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["snakebridge", "call", *args], capture_output=True, text=True, timeout=60, cwd=project
    )


def test_the_command_line_is_fenced_too(configured: Callable[[str], Path]) -> None:
    path = configured('[tool.snakebridge.libraries]\njson = "stdlib"\n')
    project = path.parent
    escapes = [
        ["json", "codecs.builtins.eval", "1"],
        ["json", "__builtins__.__import__", "os"],
        ["json", "loads.__globals__.get", "codecs"],
        ["os", "system", "true"],
    ]
    for argv in escapes:
        result = _cli(project, *argv)
        assert result.returncode == 1, (argv, result.stdout)
        assert result.stderr.startswith(("error: LibraryNotAllowed", "error: SymbolNotFound"))
        assert "Traceback" not in result.stderr
    assert _cli(project, "json", "dumps", "[1]").stdout == '"[1]"\n'


# -- private directories ----------------------------------------------------------------------
@pytest.fixture
def runtime_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An XDG_RUNTIME_DIR of our own; the runtime directory is ``<it>/snakebridge``."""
    base = tmp_path / "xdg"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    return base


def test_runtime_dir_is_created_private(runtime_base: Path) -> None:
    directory = paths.runtime_dir()
    assert directory == runtime_base / "snakebridge"
    info = os.lstat(directory)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert stat.S_IMODE(os.lstat(paths.status_dir()).st_mode) == 0o700


def test_tempdir_fallback_is_verified_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    planted = tmp_path / f"snakebridge-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    with pytest.raises(UnsafePath, match="owned by uid 65534"):
        paths.runtime_dir()


@pytest.mark.parametrize("where", ["snakebridge", "snakebridge/status"])
def test_directory_of_another_user_is_refused(runtime_base: Path, where: str) -> None:
    planted = runtime_base / where
    planted.mkdir(mode=0o700, parents=True)
    os.chmod(runtime_base / "snakebridge", 0o700)
    os.chown(planted, 65534, 65534)
    with pytest.raises(UnsafePath, match=r"owned by uid 65534.*chmod 700"):
        paths.status_dir()


def test_directory_open_to_others_is_refused(runtime_base: Path) -> None:
    (runtime_base / "snakebridge").mkdir(mode=0o700)
    os.chmod(runtime_base / "snakebridge", 0o755)
    with pytest.raises(UnsafePath, match="has mode 755"):
        paths.runtime_dir()


def test_planted_symlink_directory_is_refused(runtime_base: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    (runtime_base / "snakebridge").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        paths.runtime_dir()


def test_planted_worker_path_dir_stops_worker_start(runtime_base: Path, tmp_path: Path) -> None:
    """Another user's ``worker-path-*`` would run their code as us: no worker starts."""
    source = Path(snakebridge_worker.__file__).resolve().parent
    paths.worker_path_dir(source)  # creates it; now make it someone else's
    (planted,) = (runtime_base / "snakebridge").glob("worker-path-*")
    os.chown(planted, 65534, 65534)
    snakebridge.shutdown()
    with pytest.raises(UnsafePath, match="worker-path-"):
        snakebridge.call("math", "sqrt", [4])
    snakebridge.shutdown()
    os.chown(planted, os.getuid(), os.getgid())
    (planted / "snakebridge_worker").unlink()
    (planted / "snakebridge_worker").symlink_to(tmp_path, target_is_directory=True)
    assert snakebridge.call("math", "sqrt", [4]) == 2.0  # a stale link is repointed
    assert os.readlink(planted / "snakebridge_worker") == str(source)


def test_status_files_never_follow_symlinks(
    runtime_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    directory = paths.status_dir()
    own = directory / f"{os.getpid()}.json"
    own.symlink_to(victim)
    status_files.publish([])
    assert victim.read_text() == "precious" and not own.is_symlink()
    assert stat.S_IMODE(os.lstat(own).st_mode) == 0o600
    other = directory / "1.json"  # pid 1 is alive: a planted link must still not be read
    other.symlink_to(victim)
    assert [entry["pid"] for entry in status_files.read_live()] == [os.getpid()]
    assert "ignoring status file" in capsys.readouterr().err
