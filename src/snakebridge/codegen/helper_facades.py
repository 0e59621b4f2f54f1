"""Typed facades for helper modules, generated from their source (no import, no worker).

``snakebridge sync`` calls :func:`write_helper_facades`; ``snakebridge check`` calls
:func:`stale_helpers`. A facade records the sha256 of the source it was made from, so a helper
edited since generation is flagged. Public top-level functions become facade functions (the
same renderer as library facades); a generator function also gets a ``name_stream`` twin.
Each helper also gets an async facade, ``<package>.aio.<helper>``, checked the same way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from snakebridge.codegen.generator import ModuleSpec, render_module
from snakebridge.codegen.introspect import literal_default
from snakebridge.codegen.layout import AIO
from snakebridge.codegen.manifest import atomic_write
from snakebridge.config import Settings
from snakebridge.runtime.helpers import HelperSource, find_helper

__all__ = ["helper_facade_path", "render_helper", "stale_helpers", "write_helper_facades"]

_DIGEST = re.compile(r"helper source sha256:([0-9a-f]{64})")
_KINDS = {
    "posonlyargs": "POSITIONAL_ONLY",
    "args": "POSITIONAL_OR_KEYWORD",
    "kwonlyargs": "KEYWORD_ONLY",
}


def _default(node: ast.expr | None) -> tuple[bool, str | None]:
    if node is None:
        return False, None
    try:
        return True, literal_default(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return True, None  # not a literal: the worker applies it (NOT_GIVEN)


def _params(args: ast.arguments) -> list[dict[str, Any]]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    params: list[dict[str, Any]] = []
    for index, arg in enumerate(positional):
        kind = _KINDS["posonlyargs"] if index < len(args.posonlyargs) else _KINDS["args"]
        params.append(_param(arg, kind, defaults[index]))
    if args.vararg is not None:
        params.append(_param(args.vararg, "VAR_POSITIONAL", None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_param(arg, "KEYWORD_ONLY", default))
    if args.kwarg is not None:
        params.append(_param(args.kwarg, "VAR_KEYWORD", None))
    return params


def _param(arg: ast.arg, kind: str, default: ast.expr | None) -> dict[str, Any]:
    has_default, text = _default(default)
    annotation = ast.unparse(arg.annotation) if arg.annotation is not None else None
    return {
        "name": arg.arg,
        "kind": kind,
        "annotation": annotation,
        "has_default": has_default,
        "default": text,
    }


def _is_generator(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``node`` itself yields (nested functions do not count)."""
    stack: list[ast.AST] = list(node.body)
    while stack:
        current = stack.pop()
        if isinstance(current, ast.Yield | ast.YieldFrom):
            return True
        if not isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(current))
    return False


def helper_symbols(helper: HelperSource) -> dict[str, dict[str, Any]]:
    """Introspection-shaped infos for the helper's public top-level functions."""
    tree = ast.parse(helper.source, filename=str(helper.filename))
    exported: set[str] | None = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            try:
                exported = {str(name) for name in ast.literal_eval(node.value)}
            except ValueError:
                exported = None
    symbols: dict[str, dict[str, Any]] = {}
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
            continue
        if exported is not None and node.name not in exported:
            continue
        returns = ast.unparse(node.returns) if node.returns is not None else None
        symbols[node.name] = {
            "kind": "function",
            "qualname": node.name,
            "doc": ast.get_docstring(node) or "",
            "tier": "runtime",  # the source is the truth: its literal defaults are the real ones
            "signature": {"params": _params(node.args), "returns": returns},
            "streaming": _is_generator(node),
        }
    return symbols


def render_helper(
    helper: HelperSource, version: str = "", package: str = "", asynchronous: bool = False
) -> str:
    """The facade module source for one helper (with ``_stream`` twins of its generators);
    ``asynchronous``: its async facade (``<package>.aio.<helper>``)."""
    from snakebridge.codegen.pipeline import _version

    package = package or "snakebridge_generated"
    return render_module(
        ModuleSpec(
            version=version or _version(),
            library=helper.name,
            resolved=f"helper source sha256:{helper.digest}",
            lib_path=helper.name,
            package=f"{package}.{AIO}" if asynchronous else package,
            symbols=helper_symbols(helper),
            asynchronous=asynchronous,
        )
    )


def helper_facade_path(settings: Settings, name: str, asynchronous: bool = False) -> Path:
    base = (settings.root / settings.generated_path).joinpath(*settings.generated.split("."))
    return base.joinpath(*([AIO] if asynchronous else []), *name.split("."), "__init__.py")


def write_helper_facades(settings: Settings) -> list[str]:
    """Write (atomically, only when changed) a facade and an async facade per helper; paths
    written."""
    written: list[str] = []
    base = (settings.root / settings.generated_path).joinpath(*settings.generated.split("."))
    for name in sorted(settings.helpers):
        helper = find_helper(settings, name)
        for asynchronous in (False, True):
            path = helper_facade_path(settings, name, asynchronous)
            parents = [*([AIO] if asynchronous else []), *name.split(".")[:-1]]
            for depth in range(len(parents)):  # packages above a dotted helper (and aio)
                init = base.joinpath(*parents[: depth + 1], "__init__.py")
                if not init.exists():
                    atomic_write(init, '"""Facades generated by `snakebridge sync`."""\n')
                    written.append(str(init.relative_to(settings.root)))
            text = render_helper(helper, package=settings.generated, asynchronous=asynchronous)
            if atomic_write(path, text):
                written.append(str(path.relative_to(settings.root)))
    return written


def stale_helpers(settings: Settings) -> list[str]:
    """Problems for ``snakebridge check``: a helper whose facade or async facade is missing or
    older than its source (one problem per helper: ``sync`` writes both)."""
    problems: list[str] = []
    for name in sorted(settings.helpers):
        helper = find_helper(settings, name)
        for asynchronous in (False, True):
            problem = _stale(settings, helper, asynchronous)
            if problem:
                problems.append(problem)
                break
    return problems


def _stale(settings: Settings, helper: HelperSource, asynchronous: bool) -> str:
    path = helper_facade_path(settings, helper.name, asynchronous)
    relative = path.relative_to(settings.root)
    kind = "async facade" if asynchronous else "facade"
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return f"{relative}: no {kind} for helper {helper.name}; run `snakebridge sync`"
    found = _DIGEST.search(first)
    if found is None or found.group(1) != helper.digest:
        return (
            f"{relative}: helper {helper.name} ({helper.filename}) changed since its {kind} was "
            "generated; run `snakebridge sync`"
        )
    return ""
