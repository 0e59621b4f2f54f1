"""Every builtin exception a library can raise arrives as a RemoteError of the matching kind."""

from __future__ import annotations

import builtins

import pytest

import snakebridge
from snakebridge import RemoteError

_RAISE = """
import builtins
cls = getattr(builtins, NAME)
if issubclass(cls, BaseExceptionGroup):
    inner = KeyboardInterrupt("inner") if cls is BaseExceptionGroup else ValueError("inner")
    exc = cls("group message", [inner, KeyError("k")])
else:
    try:
        exc = cls("remote message")
    except TypeError:  # e.g. UnicodeDecodeError needs five arguments
        exc = cls.__new__(cls)
raise exc
"""

BUILTIN_EXCEPTIONS = sorted(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)


def test_the_corpus_is_every_builtin_exception() -> None:
    assert {"MemoryError", "ExceptionGroup", "BaseExceptionGroup", "SystemExit"} <= set(
        BUILTIN_EXCEPTIONS
    )
    assert len(BUILTIN_EXCEPTIONS) > 60


@pytest.mark.parametrize("name", BUILTIN_EXCEPTIONS)
def test_builtin_exception_maps(name: str) -> None:
    cls = getattr(builtins, name)
    with pytest.raises(RemoteError) as caught:
        snakebridge.call("builtins", "exec", [_RAISE, {"NAME": name}])
    error = caught.value
    assert error.remote_type == f"builtins.{cls.__name__}"  # IOError is OSError
    assert "Traceback" in error.remote_traceback
    if issubclass(cls, BaseExceptionGroup):
        assert isinstance(error, ExceptionGroup)
        assert error.remote_message == "group message"
        inner, key = error.exceptions
        assert isinstance(key, KeyError) and isinstance(key, RemoteError)
        assert inner.remote_type in ("builtins.ValueError", "builtins.KeyboardInterrupt")
    elif issubclass(cls, Exception):
        assert isinstance(error, cls)
    else:  # SystemExit, KeyboardInterrupt, GeneratorExit must not unwind the host
        assert isinstance(error, Exception)
        assert not isinstance(error, SystemExit | KeyboardInterrupt | GeneratorExit)


def test_except_star_sees_group_members() -> None:
    caught: list[BaseException] = []
    try:
        snakebridge.call("builtins", "exec", [_RAISE, {"NAME": "ExceptionGroup"}])
    except* ValueError as group:
        caught.extend(group.exceptions)
    except* KeyError:
        pass
    assert len(caught) == 1 and isinstance(caught[0], RemoteError)
    assert caught[0].remote_message == "inner"
