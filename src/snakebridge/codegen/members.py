"""Functions, classes and exception classes of a facade module, as formatted source lines.

Every parameter is forwarded as ``(name, value, kind)`` or ``(name, value, kind, default)``
(kind 0 positional-only, 1 positional-or-keyword, 2 keyword-only): the facade sends only what
the caller passed, so the library applies its own defaults, sentinels included.
"""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import replace
from typing import Any

from snakebridge.codegen import introspect
from snakebridge.codegen.hints import ANY, HintContext, hint, narrowed
from snakebridge.codegen.source import (
    Call,
    Expr,
    Seq,
    def_lines,
    docstring,
    flat,
    quote,
    statement,
    union_members,
    writing_async,
)
from snakebridge.codegen.source import literal as default_source

__all__ = [
    "SPECIAL",
    "class_order",
    "local_classes",
    "render_class",
    "render_exception",
    "render_function",
    "sanitize",
]

RESERVED = frozenset({"_sb", "_t", "_LIB", "_CONSTANTS", "_builtins"})
SPECIAL = frozenset(introspect.SPECIAL - introspect.IN_PLACE)
# Ref declares these with these parameter names; an override must keep them
_REF_PARAMS = {"__getitem__": ["key"], "__setitem__": ["key", "value"], "__delitem__": ["key"]}
_KINDS = {"POSITIONAL_ONLY": "0", "POSITIONAL_OR_KEYWORD": "1", "KEYWORD_ONLY": "2"}


def sanitize(name: str) -> str:
    """A Python identifier for ``name``: keywords and names the facade uses get a ``_``."""
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in RESERVED:
        return name + "_"
    return name if name.isidentifier() else "_" + "".join(c if c.isalnum() else "_" for c in name)


def _widen(annotation: str, default: str) -> str:
    """Keep a literal default type-correct under its hint (``x: int = None`` → ``int | None``)."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return ANY
    kind = "None" if value is None else type(value).__name__
    members = [m.rpartition(".")[2] for m in union_members(annotation)]
    if annotation == ANY or kind in members or (kind in ("int", "bool") and "float" in members):
        return annotation
    if kind == "bool" and "int" in members:
        return annotation
    if kind == "None":
        return f"{annotation} | None"
    if kind in ("int", "str", "float", "bytes", "bool") and "[" not in annotation:
        return ANY
    return ANY


class Params:
    """A signature as a def's parameter list and as the forwarding arguments."""

    def __init__(self, params: list[dict[str, Any]], ctx: HintContext, literal: bool) -> None:
        self.defs: list[str] = []
        self.entries: list[Expr] = []
        self.var_args = "()"
        self.var_kwargs = "None"
        seen_default = slash_needed = star_done = False
        for param in params:
            name, kind = str(param["name"]), str(param["kind"])
            local = sanitize(name)
            annotation = hint(param.get("annotation"), ctx)
            if slash_needed and kind != "POSITIONAL_ONLY":
                self.defs.append("/")
                slash_needed = False
            if kind == "VAR_POSITIONAL":
                self.defs.append(f"*{local}: {annotation}")
                self.var_args, star_done = local, True
                continue
            if kind == "VAR_KEYWORD":
                self.defs.append(f"**{local}: {annotation}")
                self.var_kwargs = local
                continue
            slash_needed = kind == "POSITIONAL_ONLY"
            if kind == "KEYWORD_ONLY" and not star_done:
                self.defs.append("*")
                star_done = True
            entry: list[Expr] = [quote(name), local, _KINDS[kind]]
            default = ""
            text = param.get("default") if literal else None
            if param.get("has_default") and text is not None:
                value = default_source(text)
                default = f" = {flat(value)}"
                annotation = _widen(annotation, text)
                entry.append(value)
                seen_default = True
            elif param.get("has_default") or (seen_default and kind != "KEYWORD_ONLY"):
                default = " = _sb.NOT_GIVEN"
                seen_default = True
            self.defs.append(f"{local}: {annotation}{default}")
            self.entries.append(Seq(tuple(entry)))
        if slash_needed:
            self.defs.append("/")

    def forward(self) -> tuple[Expr, ...]:
        rest: tuple[Expr, ...] = ()
        if self.var_kwargs != "None":
            rest = (self.var_args, self.var_kwargs)
        elif self.var_args != "()":
            rest = (self.var_args,)
        return (Seq(tuple(self.entries)), *rest)


def _returning(indent: str, returns: str, call: Call) -> list[str]:
    if returns == ANY:
        return statement(indent, "return ", call)
    if returns == "None":
        return statement(indent, "", call)
    if returns in ("_t.NoReturn", "_t.Never"):
        return [*statement(indent, "", call), f'{indent}raise AssertionError("unreachable")']
    return statement(indent, "return ", Call("_t.cast", (quote(returns), call)))


def _overloads(
    indent: str,
    name: str,
    info: dict[str, Any],
    ctx: HintContext,
    first: list[str],
    decorator: list[str],
    catch_all: list[str] | None = None,
) -> list[str]:
    """``@_t.overload`` variants (empty when fewer than two distinct ones), ending with
    ``catch_all`` (a def's parameters returning Any) when one is given."""
    blocks: list[list[str]] = []
    kept: list[list[str]] = []
    variants = info.get("overloads") or []
    if _indistinct(variants, ctx):
        return []
    for index, overload in enumerate(variants):
        params = Params(overload["params"], ctx, literal=False)
        defs = [d.replace("= _sb.NOT_GIVEN", "= ...") for d in params.defs]
        if first and "/" not in defs and name not in _REF_PARAMS:
            defs = ["/", *defs]  # self is positional-only in every variant and in the def
        if any(_covers(earlier, defs) for earlier in kept):
            continue  # types the host cannot spell made it the same as an earlier one
        kept.append(defs)
        returns = hint(overload.get("returns"), ctx)
        lines = def_lines(indent, name, [*first, *defs], returns, " ...")
        codes = set(overload.get("ignore") or [])
        if _shadows(overload, variants[index + 1 :], ctx):
            codes.add("overload-overlap")  # as the library's stubs do
        if index and writing_async():  # mypy finds async twins of stub overloads (pandas'
            codes.add("overload-cannot-match")  # pivot_table) shadowed where the sync are not
        lines[0] += _ignore_comment(codes)
        blocks.append([f"{indent}@_t.overload", *decorator, *lines])
    if catch_all is not None and blocks:
        lines = def_lines(indent, name, catch_all, ANY, " ...")
        blocks.append([f"{indent}@_t.overload", *decorator, *lines])
    return [line for block in blocks for line in block] if len(blocks) > 1 else []


def _ignore_comment(codes: set[str]) -> str:
    """The stub's own overlap ignores for mypy and pyright (mypy's may not be needed once
    hints are narrower than the stub's: ``unused-ignore`` keeps ``--strict`` quiet)."""
    mypy = sorted(c for c in codes if not c.startswith("report"))
    pyright = sorted(c for c in codes if c.startswith("report"))
    comment = f"  # type: ignore[{', '.join([*mypy, 'unused-ignore'])}]" if mypy else ""
    return comment + (f"  # pyright: ignore[{', '.join(pyright)}]" if pyright else "")


def _narrow(variants: list[dict[str, Any]], ctx: HintContext) -> tuple[list[dict[str, Any]], bool]:
    """Overloads with the parameter types no facade can spell left out (see ``narrowed``)
    where the overloads differ in them; an overload with a parameter of such a type only is
    left out. A parameter all overloads type alike tells none apart: it stays as it is.
    (overloads, narrowed)."""
    out, dropped = [], False
    seen: dict[str, set[str]] = {}
    for overload in variants:
        for param in overload["params"]:
            seen.setdefault(param["name"], set()).add(str(param.get("annotation")))
    for overload in variants:
        params = []
        for param in overload["params"]:
            if len(seen[param["name"]]) == 1:
                params.append(param)
                continue
            annotation, lost = narrowed(param.get("annotation"), ctx)
            dropped = dropped or lost
            if lost and annotation is None:
                break
            params.append({**param, "annotation": annotation})
        else:
            out.append({**overload, "params": params})
    return out, dropped


def _shadows(overload: dict[str, Any], later: list[dict[str, Any]], ctx: HintContext) -> bool:
    """Whether a ``None`` parameter makes this overload overlap a later one whose parameter
    is ``Hashable`` with another return type (mypy's overload-overlap: the facade classes do
    not inherit from each other, so differing returns never nest)."""
    mine = _slots(overload["params"], ctx)
    returns = hint(overload.get("returns"), ctx)
    for other in later:
        theirs = _slots(other["params"], ctx)
        if hint(other.get("returns"), ctx) == returns or set(mine) != set(theirs):
            continue
        if any(_disjoint(mine[k][0], theirs[k][0]) for k in mine if mine[k][0] != "None"):
            continue
        if any(mine[k][0] == "None" and theirs[k][0] == "_t.Hashable" for k in mine):
            return True
    return False


def _slots(params: list[dict[str, Any]], ctx: HintContext) -> dict[Any, tuple[str, bool, str]]:
    """Parameter slot (position, or name when keyword-only) → (hint, required, annotation)."""
    slots: dict[Any, tuple[str, bool, str]] = {}
    for index, param in enumerate(params):
        if param["kind"] == "VAR_KEYWORD":
            continue
        key: Any = param["name"] if param["kind"] == "KEYWORD_ONLY" else index
        if param["kind"] == "VAR_POSITIONAL":
            key = "*"
        annotation = str(param.get("annotation") or "")
        required = not param.get("has_default") and key != "*"
        slots[key] = (hint(annotation, ctx), required, annotation)
    return slots


def _disjoint(first: str, second: str) -> bool:
    """Whether no value has both hints (only cases that are certain)."""
    if ANY in (first, second):
        return False
    literal = re.compile(r"^_t\.Literal\[(.*)\]$")
    a, b = literal.match(first), literal.match(second)
    if a and b:
        return not set(a.group(1).split(", ")) & set(b.group(1).split(", "))
    parts_a, parts_b = set(union_members(first)), set(union_members(second))
    if parts_a == {"None"} or parts_b == {"None"}:
        return "None" not in (parts_b if parts_a == {"None"} else parts_a)
    scalar = {"str", "bytes", "int", "float", "list", "dict", "tuple"}
    heads_a = {p.partition("[")[0] for p in parts_a}
    heads_b = {p.partition("[")[0] for p in parts_b}
    for callables, others in ((heads_a, heads_b), (heads_b, heads_a)):
        if callables == {"_t.Callable"} and others <= scalar:
            return True  # no builtin value of these is callable
    return bool(parts_a <= scalar and parts_b <= scalar and not parts_a & parts_b) and not (
        {"int", "float"} <= parts_a | parts_b
    )


def _spread(
    slots: dict[Any, tuple[str, bool, str]], other: dict[Any, tuple[str, bool, str]]
) -> dict[Any, tuple[str, bool, str]]:
    """``*args`` stands for each positional slot the other overload has."""
    if "*" not in slots:
        return slots
    extra = {k: (*slots["*"][:1], False, slots["*"][2]) for k in other if isinstance(k, int)}
    return {**extra, **slots}


def _indistinct(overloads: list[dict[str, Any]], ctx: HintContext) -> bool:
    """Whether two overloads that differed in a type the host writes as Any can no longer be
    told apart (by disjoint hints or a parameter only one of them requires)."""
    slots = [_slots(o["params"], ctx) for o in overloads]
    for i, first in enumerate(slots):
        for second in slots[i + 1 :]:
            first, second = _spread(first, second), _spread(second, first)
            shared = set(first) & set(second)
            lost = any(
                first[k][2] != second[k][2] and ANY in first[k][0] + second[k][0] for k in shared
            )
            told = any(_disjoint(first[k][0], second[k][0]) for k in shared)
            told = told or any(first[k][1] for k in set(first) - set(second))
            told = told or any(second[k][1] for k in set(second) - set(first))
            if lost and not told:
                return True
    return False


def _covers(earlier: list[str], later: list[str]) -> bool:
    """Whether every call that matches overload ``later`` also matches ``earlier``."""

    def split(defs: list[str]) -> dict[str, tuple[str, bool]]:
        out = {}
        for d in defs:
            head, _, default = d.partition(" = ")
            name, _, annotation = head.partition(": ")
            if name not in ("*", "/"):
                out[name] = (annotation, bool(default) or name.startswith("*"))
        return out

    first, second = split(earlier), split(later)
    for name, (annotation, optional) in second.items():
        if name not in first:
            return False
        wider = set(union_members(first[name][0]))
        if not (first[name][0] == ANY or set(union_members(annotation)) <= wider):
            return False
        if optional and not first[name][1]:
            return False
    return all(optional or name in second for name, (_, optional) in first.items())


def _fits(overload: list[dict[str, Any]], runtime: list[dict[str, Any]]) -> bool:
    """Whether a def with the runtime parameters accepts every call the overload allows."""
    positional = [p for p in runtime if p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    by_name = {p["name"]: p for p in runtime}
    kinds = {p["kind"] for p in runtime}
    for index, param in enumerate(overload):
        kind = param["kind"]
        if kind in ("VAR_POSITIONAL", "VAR_KEYWORD"):
            if kind not in kinds:
                return False
            continue
        match = by_name.get(param["name"])
        if kind in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD"):
            if index >= len(positional) or positional[index]["name"] != param["name"]:
                return False
            if kind == "POSITIONAL_OR_KEYWORD" and positional[index]["kind"] == "POSITIONAL_ONLY":
                return False
        elif match is None or match["kind"] not in ("KEYWORD_ONLY", "POSITIONAL_OR_KEYWORD"):
            return False
    given = {p["name"] for p in overload if not p.get("has_default")}
    return all(p.get("has_default") or p["name"] in given for p in runtime if p["kind"] in _KINDS)


def _merged(
    signature: dict[str, Any], params: list[dict[str, Any]], variants: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An untyped signature's parameters typed as the union of its overloads' (for when the
    overloads cannot be told apart host-side), its returns as theirs when they all agree (a
    union would make every call site narrow a result that one overload would have typed)."""

    def union(texts: list[Any]) -> str | None:
        if not texts or not all(texts):
            return None
        return " | ".join(f"({t})" for t in dict.fromkeys(texts))

    typed = []
    for param in params:
        found = [
            next((o["annotation"] for o in v["params"] if o["name"] == param["name"]), None)
            for v in variants
        ]
        typed.append({**param, "annotation": union(found)})
    returns = {v.get("returns") for v in variants}
    agreed = returns.pop() if len(returns) == 1 else None
    return {**signature, "params": typed, "returns": signature.get("returns") or agreed}, typed


def param_spec(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A signature whose ``*args: P.args, **kwargs: P.kwargs`` go with a ``Concatenate[X, P]``
    written with the facade's own ParamSpec, ``_sb.P`` (a lambda's parameters then infer)."""
    star = [p for p in params if p["kind"] in ("VAR_POSITIONAL", "VAR_KEYWORD")]
    texts = [str(p.get("annotation") or "") for p in star]
    keyword = any(p["kind"] == "KEYWORD_ONLY" for p in params)  # not allowed with P.args
    if len(star) != 2 or not texts[0].endswith(".args") or keyword:
        return params
    spec = texts[0][: -len(".args")]
    pattern = re.compile(r"Concatenate\[.*\b" + re.escape(spec) + r"\]")
    if texts[1] != spec + ".kwargs" or not any(
        pattern.search(str(p.get("annotation") or "")) for p in params if p not in star
    ):
        return params
    spelled = re.compile(re.escape(spec) + r"\b")
    return [
        {**p, "annotation": spelled.sub("_sb.P", p["annotation"])} if p.get("annotation") else p
        for p in params
    ]


def _body(
    indent: str,
    name: str,
    info: dict[str, Any],
    ctx: HintContext,
    first: list[str],
    decorator: list[str],
) -> tuple[list[str], tuple[Expr, ...], str]:
    """(def lines with any overloads, forwarded arguments, return hint) of a callable."""
    signature = info.get("signature") or {"params": [], "returns": None}
    params_info = _renamed(name, signature["params"])
    literal = info.get("tier") == "runtime"
    params_info = param_spec(params_info)
    variants = [
        {**o, "params": param_spec(_renamed(name, o["params"]))}
        for o in info.get("overloads") or []
    ]
    if variants and not any(p.get("annotation") for p in params_info):
        signature, params_info = _merged(signature, params_info, variants)
    variants, dropped = _narrow(variants, ctx)
    info = {**info, "overloads": variants}
    fits = all(_fits(o["params"], params_info) for o in variants)
    if info.get("tier") in ("runtime", "text_signature") and fits:
        whole = Params([{**p, "annotation": None} for p in params_info], ctx, literal)
        defs, forward = whole.defs, whole.forward()
        if first and "/" not in defs and name not in _REF_PARAMS:
            defs = ["/", *defs]
    else:
        defs = [*(["/"] if first else []), "*args: _t.Any", "**kwargs: _t.Any"]
        forward = ("()", "args", "kwargs")
    overloads = []
    if (name in _REF_PARAMS and fits) or name not in SPECIAL:
        catch_all = [*first, *(d.replace("= _sb.NOT_GIVEN", "= ...") for d in defs)]
        overloads = _overloads(
            indent, name, info, ctx, first, decorator, catch_all if dropped else None
        )
    if overloads:
        lines = def_lines(indent, name, [*first, *defs], ANY)
        return [*overloads, *decorator, *lines], forward, ANY
    params = Params(params_info, ctx, literal)
    returns = hint(signature.get("returns"), ctx)
    if set(re.findall(r"[A-Za-z_]\w*", returns)) & {sanitize(p["name"]) for p in params_info}:
        returns = ANY  # the body's cast would read a parameter of that name
    if info.get("streaming"):
        returns = "_t.Iterator[_t.Any]"
    lines = def_lines(indent, name, [*first, *params.defs], returns)
    return [*decorator, *lines], params.forward(), returns


def render_function(name: str, info: dict[str, Any], ctx: HintContext) -> list[str]:
    """A module-level function that calls ``info['qualname']`` in a worker."""
    local = sanitize(name)
    doc = docstring(str(info.get("doc", "")), "    ")
    lines, forward, returns = _body("", local, info, ctx, [], [])
    call = Call("_sb.invoke", ("_LIB", quote(str(info["qualname"])), *forward))
    return [*lines, *doc, *_returning("    ", returns, call)]


def _member(cls: dict[str, Any], member: dict[str, Any], ctx: HintContext) -> list[str]:
    name, kind = str(member["name"]), str(member["kind"])
    local = sanitize(name)
    doc = docstring(str(member.get("doc", "")), "        ")
    if kind == "property":
        returns = hint(member.get("type"), ctx)
        call = Call("_sb.attribute", ("self", quote(name)))
        lines = ["    @property", *def_lines("    ", local, ["self"], returns), *doc]
        lines += _returning("        ", returns, call)
        if member.get("settable"):
            lines += ["", f"    @{local}.setter"]
            lines += def_lines("    ", local, ["self", f"value: {returns}"], "None")
            lines += statement(
                "        ", "", Call("_sb.set_attribute", ("self", quote(name), "value"))
            )
        return lines
    signature = member.get("signature") or {"params": [], "returns": None}
    first = {"staticmethod": [], "classmethod": ["cls"]}.get(kind, ["self"])
    decorator = [f"    @{kind}"] if kind in ("staticmethod", "classmethod") else []
    lines, forward, returns = _body("    ", local, member, ctx, first, decorator)
    if name in ("__eq__", "__ne__") and returns not in ("bool", ANY):
        at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("def "))
        lines[at] += "  # type: ignore[override]"  # like numpy and pandas stubs: not a bool
    lines += doc
    if name == "__call__":
        call = Call("_sb.call", ("self", *forward))
    elif name in SPECIAL:
        call = Call(
            "_sb.special", ("self", quote(name), *_plain(_renamed(name, signature["params"])))
        )
    elif kind in ("staticmethod", "classmethod"):
        call = Call("_sb.invoke", ("_LIB", quote(f"{cls['qualname']}.{name}"), *forward))
    else:
        call = Call("_sb.method", ("self", quote(name), *forward))
    return lines + _returning("        ", returns, call)


def _renamed(name: str, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = _REF_PARAMS.get(name)
    if names is None or len(names) != len(params):
        return params
    return [
        {**p, "name": n, "kind": "POSITIONAL_OR_KEYWORD"}
        for n, p in zip(names, params, strict=True)
    ]


def _plain(params: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(sanitize(str(p["name"])) for p in params if p["kind"] != "VAR_KEYWORD")


def _special_ok(member: dict[str, Any]) -> bool:
    """Dunders forward positionally: only fixed positional signatures qualify, and of the
    ones Ref declares only those of its arity (manifests recorded before the introspector
    left out metaclass methods hold an enum class's ``__getitem__(name)`` as one without)."""
    if member["name"] == "__call__":
        return True
    params = (member.get("signature") or {}).get("params", [])
    arity = _REF_PARAMS.get(str(member["name"]))
    if arity is not None and len(params) != len(arity):
        return False
    return all(p["kind"] in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD") for p in params)


def _facade_base(info: dict[str, Any], ctx: HintContext) -> tuple[str, dict[str, Any], bool] | None:
    """The nearest class of the library's MRO with a facade class this module may subclass:
    one it defines, or the one from another module the package layout allows (see
    :func:`snakebridge.codegen.layout.foreign_bases`); (name, info, from another module)."""
    own = str(info.get("remote_type"))
    foreign = ctx.foreign_bases.get(own)
    for key in info.get("bases") or []:
        if key in ctx.classes and key != own:
            name, base = ctx.classes[key]
            return name, base, False
        if foreign is not None and key == foreign[0]:
            return foreign[1], foreign[2], True
    return None


def class_order(
    symbols: dict[str, dict[str, Any]], names: list[str], ctx: HintContext | None = None
) -> list[str]:
    """``names`` with every class after the class of this module it subclasses."""
    ctx = replace(ctx or HintContext(module="", index={}), classes=local_classes(symbols, names))
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        base = _facade_base(symbols[name], ctx)
        if base is not None and not base[2]:
            visit(next(n for n in names if sanitize(n) == base[0]))
        out.append(name)

    for name in names:
        visit(name)
    return out


def local_classes(
    symbols: dict[str, dict[str, Any]], names: list[str]
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Remote type key → (name, info) of the classes a module defines (see HintContext)."""
    return {str(symbols[n].get("remote_type")): (sanitize(n), symbols[n]) for n in names}


def _rendered(info: dict[str, Any], ctx: HintContext) -> tuple[list[dict[str, Any]], HintContext]:
    """A class's members as its body defines them, and the context they are written in."""
    members = sorted(info.get("members", []), key=lambda m: str(m["name"]))
    members = [
        m
        for m in members
        if not str(m["name"]).startswith("_") or (m["name"] in SPECIAL and _special_ok(m))
    ]
    names = {sanitize(str(m["name"])) for m in members}
    local = sanitize(str(info.get("qualname", "")).rpartition(".")[2])
    return members, replace(ctx, self_name=local, shadowed=ctx.shadowed | names)


def _overriding(lines: list[str]) -> list[str]:
    """A member's lines marked as overriding its facade base's (the library's subclass may
    change a signature; its stubs and the checkers judge that, not the facade)."""
    out = []
    for line in lines:
        if line.startswith(("    def ", "    @")):
            if "# type: ignore[" in line:
                line = line.replace("# type: ignore[", "# type: ignore[override, ", 1)
            else:
                line += "  # type: ignore[override, misc, unused-ignore]"
        out.append(line)
    return out


def render_class(name: str, info: dict[str, Any], ctx: HintContext) -> list[str]:
    """A proxy class: a Ref subclass whose instances are the remote objects themselves; a
    subclass of the facade class of its nearest base that the same module defines or the
    package layout lets it import (``ctx.foreign_bases``)."""
    local = sanitize(name)
    members, ctx = _rendered({**info, "qualname": name}, ctx)
    ctx = replace(ctx, self_name=local)
    base = _facade_base(info, ctx)
    inherited: dict[str, list[str]] = {}
    if base is not None:
        qualname = base[1]["qualname"] if base[2] else base[0]
        base_members, base_ctx = _rendered({**base[1], "qualname": qualname}, ctx)
        inherited = {str(m["name"]): _member(base[1], m, base_ctx) for m in base_members}
    lines = [f"class {local}({base[0] if base else '_sb.Ref, metaclass=_sb.ProxyMeta'}):"]
    if local.startswith("_"):  # the type of a result: nothing in its module may name it
        lines[0] += "  # pyright: ignore[reportUnusedClass]"
    doc = docstring(str(info.get("doc", "")), "    ")
    lines += [*doc, ""] if doc else []
    lines += ["    __slots__ = ()", f"    __sb_type__ = {quote(str(info.get('remote_type', '')))}"]
    lines += [f"    __sb_remote__ = (_LIB, {quote(str(info['qualname']))})"]
    if info.get("constructible", True):
        signature = info.get("signature") or {"params": [], "returns": None}
        params = Params(signature["params"], ctx, literal=info.get("tier") == "runtime")
        call = Call("_sb.construct", ("cls", *params.forward()))
        lines += ["", *def_lines("    ", "__new__", ["cls", *params.defs], "_t.Self")]
        lines += _returning("        ", "_t.Self", call)
    taken = {"__new__", "__slots__"}
    for member in members:
        if sanitize(str(member["name"])) in taken:
            continue
        taken.add(sanitize(str(member["name"])))
        rendered = _member(info, member, ctx)
        if inherited.get(str(member["name"])) == rendered:
            continue  # the base's, as it is
        if str(member["name"]) in inherited:
            rendered = _overriding(rendered)
        lines += ["", *rendered]
    if info.get("unhashable"):  # as the library's stubs say (the remote hash raises)
        lines += ["", "    __hash__: _t.ClassVar[None]  # type: ignore[assignment, unused-ignore]"]
    elif "__eq__" in taken:  # a class body that defines __eq__ alone loses __hash__
        integer = "_builtins.int" if "int" in ctx.shadowed else "int"  # uuid.UUID.int
        lines += ["", f"    def __hash__(self) -> {integer}:"]
        lines += [f'        return _t.cast("{integer}", _sb.special(self, "__hash__"))']
    return lines


def render_exception(name: str, info: dict[str, Any], base: str) -> list[str]:
    """A real exception class: ``except`` catches the remote exception raised as it."""
    local = sanitize(name)
    lines = [f"class {local}({base}):"]
    doc = docstring(str(info.get("doc", "")), "    ")
    lines += [*doc, *([""] if doc else [])]
    lines += [f"    __sb_type__ = {quote(str(info.get('remote_type', '')))}"]
    return [*lines, "", "", f"_sb.register_exception({local})"]
