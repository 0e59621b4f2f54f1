"""Async facades (``snakebridge_generated.aio.<lib>``) and the ``name_stream`` twins.

An async facade module mirrors its sync module name for name: the same functions with the
same signatures as ``async def`` (``await aio.math.sqrt(2)``), and for each facade class an
*async proxy class* of the same remote type whose methods are ``async def`` and whose
properties are awaitables. Hints inside it name the async proxy classes, and the runtime
re-classes the Refs of every result as them, so an async facade hands out async proxies.
Exceptions are the sync facade's own classes, re-exported. The code that writes parameters,
overloads and return casts is the sync facades' (:mod:`snakebridge.codegen.members`), run
under :func:`~snakebridge.codegen.source.async_defs`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from snakebridge.codegen.hints import HintContext, hint
from snakebridge.codegen.members import Params, _body, _returning, sanitize
from snakebridge.codegen.source import Call, async_defs, def_lines, docstring, quote, statement

__all__ = ["mark_remote", "render_async_class", "render_async_function", "stream_twin"]


def mark_remote(lines: list[str], qualname: str, indent: str = "") -> list[str]:
    """``lines`` of a function with ``@_sb.remote(_LIB, qualname)`` on its implementation
    (the last ``def``, after any overloads): ``__sb_remote__`` as facade classes have."""
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith((f"{indent}def ", f"{indent}async def "))
    ]
    at = starts[-1]
    return [*lines[:at], f"{indent}@_sb.remote(_LIB, {quote(qualname)})", *lines[at:]]


def render_async_function(name: str, info: dict[str, Any], ctx: HintContext) -> list[str]:
    """``async def name(...)`` awaiting ``info['qualname']`` in a worker (``acall``)."""
    local = sanitize(name)
    qualname = str(info["qualname"])
    doc = docstring(str(info.get("doc", "")), "    ")
    with async_defs():
        lines, forward, returns = _body("", local, info, ctx, [], [])
    call = Call("await _sb.ainvoke", ("_LIB", quote(qualname), *forward))
    return [*mark_remote(lines, qualname), *doc, *_returning("    ", returns, call)]


def _factory_name(names: set[str]) -> str:
    name = "new"
    while name in names:
        name += "_"
    return name


def render_async_class(name: str, info: dict[str, Any], ctx: HintContext) -> list[str]:
    """An async proxy class: ``await Cls.new(...)`` creates one; methods are awaited. A class
    whose instances travel by value gets ``new`` alone: what it returns is a host object."""
    local = sanitize(name)
    members = sorted(info.get("members", []), key=lambda m: str(m["name"]))
    members = [m for m in members if not str(m["name"]).startswith("_") or m["name"] == "__call__"]
    if info.get("by_value"):  # results are host objects (a Counter, a Path): their own methods
        members = []
    names = {sanitize(str(m["name"])) for m in members}
    ctx = replace(ctx, self_name=local, shadowed=ctx.shadowed | names)
    lines = [f"class {local}(_sb.AsyncRef, metaclass=_sb.AsyncProxyMeta):"]
    if local.startswith("_"):  # the type of a result: nothing in its module may name it
        lines[0] += "  # pyright: ignore[reportUnusedClass]"
    doc = docstring(str(info.get("doc", "")), "    ")
    lines += [*doc, ""] if doc else []
    lines += ["    __slots__ = ()", f"    __sb_type__ = {quote(str(info.get('remote_type', '')))}"]
    lines += [f"    __sb_remote__ = (_LIB, {quote(str(info['qualname']))})"]
    if info.get("constructible", True):
        signature = info.get("signature") or {"params": [], "returns": None}
        params = Params(signature["params"], ctx, literal=info.get("tier") == "runtime")
        factory = _factory_name(names)
        with async_defs():
            defs = def_lines("    ", factory, ["cls", *params.defs], "_t.Self")
        call = Call("await _sb.aconstruct", ("cls", *params.forward()))
        lines += ["", "    @classmethod", *defs]
        lines.append(f'        """A new remote {local} (the arguments of the class)."""')
        lines += _returning("        ", "_t.Self", call)
    taken = {"__slots__"}
    for member in members:
        if sanitize(str(member["name"])) in taken:
            continue
        taken.add(sanitize(str(member["name"])))
        lines += ["", *_async_member(info, member, ctx)]
    return lines


def _async_member(cls: dict[str, Any], member: dict[str, Any], ctx: HintContext) -> list[str]:
    name, kind = str(member["name"]), str(member["kind"])
    local = sanitize(name)
    doc = docstring(str(member.get("doc", "")), "        ")
    if kind == "property":  # an awaitable: ``await obj.name`` (setting one stays ``obj.name = v``)
        returns = f"_t.Awaitable[{hint(member.get('type'), ctx)}]"
        lines = ["    @property", *def_lines("    ", local, ["self"], returns), *doc]
        return lines + statement(
            "        ", "return ", Call("_sb.aattribute", ("self", quote(name)))
        )
    first = {"staticmethod": [], "classmethod": ["cls"]}.get(kind, ["self"])
    decorator = [f"    @{kind}"] if kind in ("staticmethod", "classmethod") else []
    with async_defs():
        lines, forward, returns = _body("    ", local, member, ctx, first, decorator)
    lines += doc
    if name == "__call__":
        call = Call("await _sb.acall", ("self", *forward))
    elif kind in ("staticmethod", "classmethod"):
        call = Call("await _sb.ainvoke", ("_LIB", quote(f"{cls['qualname']}.{name}"), *forward))
    else:
        call = Call("await _sb.amethod", ("self", quote(name), *forward))
    return lines + _returning("        ", returns, call)


def stream_twin(name: str, info: dict[str, Any], ctx: HintContext, asynchronous: bool) -> list[str]:
    """``name_stream(...)``: the parameters of ``name``, its items as the worker yields them
    (a ``Stream`` to iterate; in an async facade an ``AsyncStream`` for ``async for``)."""
    local = sanitize(name)
    signature = info.get("signature") or {"params": [], "returns": None}
    params = Params(signature["params"], ctx, literal=info.get("tier") == "runtime")
    kind = "AsyncStream" if asynchronous else "Stream"
    lines = def_lines("", f"{local}_stream", params.defs, f"_sb_streams.{kind}")
    what = f"the items of :func:`{local}` as the worker yields them"
    text = f"For ``async for``: {what}." if asynchronous else f"Stream {what}."
    lines.append(f'    """{text}"""')
    invoke = "_sb_streams.invoke_astream" if asynchronous else "_sb_streams.invoke_stream"
    call = Call(invoke, ("_LIB", quote(str(info["qualname"])), *params.forward()))
    return [*lines, *statement("    ", "return ", call)]
