"""Run-time support imported by generated facade modules (never by user code directly).

It turns a facade call into one ``snakebridge.call`` that sends only the arguments the caller
passed, makes proxy classes answer ``isinstance`` for Refs of their remote class, and serves
names a facade lacks: a dynamic call recorded in ``.snakebridge/ledger.json``, or, in strict
mode, an ``AttributeError`` that names ``snakebridge sync``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Final

from snakebridge import paths
from snakebridge.runtime.client import call, get
from snakebridge.runtime.refs import Ref, remote_mro
from snakebridge_worker.values import type_key

__all__ = [
    "NOT_GIVEN",
    "ProxyMeta",
    "attribute",
    "constant",
    "construct",
    "invoke",
    "invoke_method",
    "missing_name",
]


class _NotGiven:
    """Default of a parameter whose library default cannot be written host-side."""

    _instance: _NotGiven | None = None

    def __new__(cls) -> _NotGiven:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<library default>"

    def __bool__(self) -> bool:
        return False


NOT_GIVEN: Final[Any] = _NotGiven()

Positional = tuple[tuple[str, Any, bool], ...]


def _arguments(
    positional: Positional,
    keywords: dict[str, Any],
    var_args: tuple[Any, ...],
    var_kwargs: dict[str, Any] | None,
) -> tuple[list[Any], dict[str, Any]]:
    """Positional and keyword arguments to send, leaving out every NOT_GIVEN."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    skipped = False
    for name, value, by_keyword in positional:
        if value is NOT_GIVEN:
            skipped = True
        elif not skipped:
            args.append(value)
        elif by_keyword:
            kwargs[name] = value
        else:
            raise TypeError(f"argument {name!r} cannot follow an omitted positional-only one")
    if var_args:
        if skipped:
            raise TypeError("*args cannot follow an omitted positional argument")
        args.extend(var_args)
    kwargs.update((key, value) for key, value in keywords.items() if value is not NOT_GIVEN)
    if var_kwargs:
        kwargs.update(var_kwargs)
    return args, kwargs


def invoke(
    library: str,
    qualname: str,
    positional: Positional = (),
    keywords: dict[str, Any] | None = None,
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Call ``library.qualname`` in a worker with the arguments the caller gave."""
    args, kwargs = _arguments(positional, keywords or {}, var_args, var_kwargs)
    return call(library, qualname, args, kwargs or None)


def construct(cls: type, *arguments: Any, **named: Any) -> Any:
    """Create an instance of a proxy class's remote class (see :func:`invoke`)."""
    library, qualname = cls.__sb_remote__  # type: ignore[attr-defined]
    return invoke(library, qualname, *arguments, **named)


class ProxyMeta(type):
    """Metaclass of generated proxy classes: ``isinstance`` asks the remote class hierarchy."""

    __sb_type__: str

    def __instancecheck__(cls, instance: Any) -> bool:
        remote = getattr(cls, "__sb_type__", None)
        if remote is None:
            return type.__instancecheck__(cls, instance)
        if type(instance) is Ref:
            return remote in remote_mro(instance)
        return any(type_key(klass) == remote for klass in type(instance).__mro__)


_LEDGER_LOCK = threading.Lock()


def _strict() -> bool:
    flag = os.environ.get("SNAKEBRIDGE_STRICT", "")
    if flag:
        return flag not in ("0", "false", "no")
    from snakebridge.runtime.client import runtime

    return runtime().settings.strict


def _record(library: str, name: str) -> None:
    from snakebridge.runtime.client import runtime

    path = paths.ledger_path(runtime().settings.root)
    with _LEDGER_LOCK:
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            entries = {}
        calls = entries.setdefault(library, {})
        calls[name] = int(calls.get(name, 0)) + 1
        paths.atomic_write(path, json.dumps(entries, indent=2, sort_keys=True) + "\n")


def missing_name(lib_path: str, name: str) -> Any:
    """A module ``__getattr__`` for names the facade lacks: dynamic and recorded, or strict."""
    if name.startswith("__"):
        raise AttributeError(name)
    library, _, prefix = lib_path.partition(".")
    dotted = f"{prefix}.{name}" if prefix else name
    if _strict():
        raise AttributeError(
            f"{library}.{dotted} is not in the generated facade (strict mode); "
            "run `snakebridge sync` to generate it"
        )
    _record(library, dotted)
    return get(lib_path, name)


def invoke_method(
    instance: Any,
    name: str,
    positional: Positional = (),
    keywords: dict[str, Any] | None = None,
    var_args: tuple[Any, ...] = (),
    var_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Call method ``name`` of a remote instance (a Ref) with the arguments the caller gave."""
    args, kwargs = _arguments(positional, keywords or {}, var_args, var_kwargs)
    return getattr(instance, name)(*args, **kwargs)


def attribute(instance: Any, name: str) -> Any:
    """An attribute of a remote instance (what a proxy property reads)."""
    return getattr(instance, name)


def constant(library: str, name: str, namespace: dict[str, Any]) -> Any:
    """Fetch a module constant once and keep it in the facade module's namespace."""
    value = get(library, name)
    namespace[name] = value
    return value
