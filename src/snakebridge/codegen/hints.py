"""Annotations from the introspector → type hints that resolve in a facade module.

The introspector writes every name in an annotation qualified (``pandas.core.frame.DataFrame``,
``typing.Literal``, ``collections.abc.Iterator``, builtins bare). A hint keeps builtins, the
typing constructs facades can spell (as ``_t.X``) and library classes that have a facade class
(by local name, or imported from their facade module for type checking only); anything else is
``_t.Any``, so a hint never claims more than is true at run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from snakebridge.codegen.source import quote, union_members

__all__ = ["ANY", "BUILTIN_TYPES", "HintContext", "hint", "import_alias", "narrowed"]

ANY = "_t.Any"
PARAM_SPEC = frozenset({"_sb.P", "_sb.P.args", "_sb.P.kwargs"})  # see members.param_spec
BUILTIN_TYPES = frozenset(
    [
        "int",
        "str",
        "float",
        "bool",
        "bytes",
        "complex",
        "object",
        "bytearray",
        "list",
        "dict",
        "set",
        "frozenset",
        "tuple",
        "type",
        "slice",
        "range",
        "memoryview",
        "BaseException",
        "Exception",
    ]
)
_GENERIC_BUILTINS = frozenset({"list", "dict", "set", "frozenset", "tuple", "type"})
_TYPING = frozenset(
    [
        "AbstractSet",
        "AsyncGenerator",
        "AsyncIterable",
        "AsyncIterator",
        "Awaitable",
        "Callable",
        "Collection",
        "Container",
        "Coroutine",
        "Generator",
        "Hashable",
        "ItemsView",
        "Iterable",
        "Iterator",
        "KeysView",
        "Mapping",
        "MappingView",
        "MutableMapping",
        "MutableSequence",
        "MutableSet",
        "Reversible",
        "Sequence",
        "Sized",
        "ValuesView",
        "NoReturn",
        "Never",
        "SupportsIndex",
        "SupportsInt",
        "SupportsFloat",
        "SupportsComplex",
        "SupportsBytes",
    ]
)
_TYPING_MODULES = ("typing", "typing_extensions", "collections.abc")
_ARITY = {"dict": 2, "Mapping": 2, "MutableMapping": 2, "ItemsView": 2, "Generator": 3}
_ARITY |= {"Coroutine": 3, "AsyncGenerator": 2, "NoReturn": 0, "Never": 0, "Hashable": 0}
_ARITY |= {"Sized": 0, "SupportsIndex": 0, "SupportsInt": 0, "SupportsFloat": 0}
_ARITY |= {"SupportsComplex": 0, "SupportsBytes": 0}
_ALIASES = {"List": "list", "Dict": "dict", "Set": "set", "FrozenSet": "frozenset"}
_ALIASES |= {"Tuple": "tuple", "Type": "type", "Text": "str"}


@dataclass
class HintContext:
    """Where a hint is written: the facade module, its class (for ``Self``) and shadowed names.

    ``index`` maps a remote type key to ``(facade module, class name)``; ``imports`` collects
    the ``(module, name)`` pairs the hints need from other facade modules; ``classes`` maps
    the remote type key of each class the module defines to its name and description;
    ``foreign_bases`` maps the remote type key of a class the module defines to the facade
    base it takes from another module: ``(base type key, local alias, base description)``.
    """

    module: str
    index: dict[str, tuple[str, str]]
    self_name: str | None = None
    shadowed: frozenset[str] = frozenset()
    imports: set[tuple[str, str]] = field(default_factory=set)
    by_value: frozenset[str] = frozenset()
    classes: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    foreign_bases: dict[str, tuple[str, str, dict[str, Any]]] = field(default_factory=dict)
    taken: frozenset[str] = frozenset()  # the module's own names: an import of one is aliased
    reexported: frozenset[tuple[str, str]] = frozenset()  # (module, name) it re-exports


def import_alias(module: str, name: str, taken: frozenset[str] | set[str]) -> str:
    """The name a facade module imports ``module``'s class ``name`` as for its hints: its
    own, unless the module has a name of its own so spelled (difflib's ``Match`` beside
    ``re.Match``)."""
    return name if name not in taken else f"_{module.rpartition('.')[2]}_{name}"


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _union(parts: list[str]) -> str:
    if ANY in parts:
        return ANY
    unique = list(dict.fromkeys(p for part in parts for p in union_members(part)))
    return " | ".join([p for p in unique if p != "None"] + (["None"] if "None" in unique else []))


class _Renderer:
    def __init__(self, ctx: HintContext) -> None:
        self.ctx = ctx

    def builtin(self, name: str) -> str:
        return f"_builtins.{name}" if name in self.ctx.shadowed else name

    def name(self, dotted: str) -> str:
        ctx = self.ctx
        if dotted in PARAM_SPEC:
            return dotted
        if dotted in BUILTIN_TYPES:
            return self.builtin(dotted)
        if dotted in ("None", "NoneType", "builtins.NoneType", "types.NoneType"):
            return "None"
        if dotted.startswith("builtins.") and dotted[9:] in BUILTIN_TYPES:
            return self.builtin(dotted[9:])
        module, _, leaf = dotted.rpartition(".")
        if module in _TYPING_MODULES:
            if leaf in _ALIASES:
                return self.builtin(_ALIASES[leaf])
            if leaf == "Self" and ctx.self_name:
                return "_t.Self" if ctx.self_name in ctx.shadowed else ctx.self_name
            if leaf in _TYPING:
                return f"_t.{leaf}"
            return ANY
        if dotted in ctx.by_value:
            return ANY
        target = ctx.index.get(dotted)
        if target is None:
            return ANY
        facade_module, local = target
        if facade_module != ctx.module:
            if local.startswith("_") or local in ctx.shadowed:  # private, or not visible
                return ANY
            ctx.imports.add((facade_module, local))
            if (facade_module, local) not in ctx.reexported:
                return import_alias(facade_module, local, ctx.taken)
        elif local in ctx.shadowed:
            return ANY
        return local

    def literal(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return quote(node.value)
        if isinstance(node, ast.Constant) and (
            node.value is None or isinstance(node.value, (bool, int, bytes))
        ):
            return repr(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.literal(node.operand)
            return f"-{inner}" if inner and inner[0].isdigit() else None
        return None

    def subscript(self, node: ast.Subscript) -> str:
        base = _dotted(node.value)
        if base is None:
            return ANY
        leaf = base.rpartition(".")[2]
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        typing_base = base.rpartition(".")[0] in _TYPING_MODULES
        if typing_base and leaf == "Optional":
            return _union([self.render(args[0]), "None"])
        if typing_base and leaf == "Union":
            return _union([self.render(a) for a in args])
        if typing_base and leaf == "Literal":
            values = [self.literal(a) for a in args]
            if any(v is None for v in values):
                return ANY
            return f"_t.Literal[{', '.join(v for v in values if v)}]"
        if typing_base and leaf in ("Annotated", "Final", "ClassVar", "Required", "NotRequired"):
            return self.render(args[0])
        head = self.name(base)
        if head == ANY:
            return ANY
        if head.startswith("_t.") and leaf == "Callable":
            return self.callable(args)
        if head.split(".")[-1] in _GENERIC_BUILTINS or head.startswith("_t."):
            inner = [
                "..." if isinstance(a, ast.Constant) and a.value is Ellipsis else self.render(a)
                for a in args
            ]
            return f"{head}[{', '.join(inner) or '()'}]"  # tuple[()]: the empty tuple
        return head  # a facade class: not generic host-side

    def callable(self, args: list[ast.expr]) -> str:
        if len(args) != 2:
            return ANY
        params, returns = args
        if isinstance(params, ast.List):
            rendered = ", ".join(self.render(p) for p in params.elts)
            return f"_t.Callable[[{rendered}], {self.render(returns)}]"
        concatenate = isinstance(params, ast.Subscript) and (
            (_dotted(params.value) or "").rpartition(".")[2] == "Concatenate"
        )
        if isinstance(params, ast.Subscript) and concatenate:
            args = params.slice.elts if isinstance(params.slice, ast.Tuple) else [params.slice]
            first = ", ".join(self.render(p) for p in args[:-1])  # the last is a ParamSpec
            spec = "_sb.P" if _dotted(args[-1]) == "_sb.P" else "..."
            if first:
                return f"_t.Callable[_t.Concatenate[{first}, {spec}], {self.render(returns)}]"
        return f"_t.Callable[..., {self.render(returns)}]"

    def bare(self, rendered: str) -> str:
        """A generic written without its parameters gets ``Any`` ones (mypy --strict)."""
        leaf = rendered.rpartition(".")[2]
        if rendered == ANY or leaf == "Self":
            return rendered
        if leaf == "tuple":
            return f"{rendered}[_t.Any, ...]"
        if leaf == "Callable":
            return "_t.Callable[..., _t.Any]"
        if leaf in _GENERIC_BUILTINS or rendered.startswith("_t."):
            count = _ARITY.get(leaf, 1)
            return f"{rendered}[{', '.join([ANY] * count)}]" if count else rendered
        return rendered

    def render(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            if node.value is None:
                return "None"
            if isinstance(node.value, str):
                return parse_hint(node.value, self)
            return ANY
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            return _union([self.render(node.left), self.render(node.right)])
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        dotted = _dotted(node)
        return self.bare(self.name(dotted)) if dotted else ANY


def parse_hint(text: str, renderer: _Renderer) -> str:
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return ANY
    return renderer.render(node)


def hint(annotation: str | None, ctx: HintContext) -> str:
    """The hint for a qualified annotation (``_t.Any`` when there is none or it cannot resolve)."""
    if not annotation:
        return ANY
    return parse_hint(annotation, _Renderer(ctx))


def _members(node: ast.expr) -> list[ast.expr]:
    """The members of a union annotation (``A | B``, ``Union[A, B]``, ``Optional[A]``)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_members(node.left), *_members(node.right)]
    if isinstance(node, ast.Subscript):
        base = _dotted(node.value) or ""
        module, _, leaf = base.rpartition(".")
        if module in _TYPING_MODULES and leaf in ("Union", "Optional"):
            args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
            members = [m for a in args for m in _members(a)]
            return [*members, ast.Constant(None)] if leaf == "Optional" else members
    return [node]


def narrowed(annotation: str | None, ctx: HintContext) -> tuple[str | None, bool]:
    """An overload parameter's annotation without the union members no facade can spell.

    Written as ``Any`` such a member would make the overload match every call, shadowing
    the ones after it (``df["a"]`` would take pandas' ``Expression`` overload). A host value
    of such a type is typed ``Any`` and still matches what is left; the overloads end with
    a catch-all when anything was dropped. (annotation, dropped); None when nothing is left.
    """
    if not annotation:
        return annotation, False
    try:
        members = _members(ast.parse(annotation.strip(), mode="eval").body)
    except SyntaxError:
        return annotation, False
    kept = [m for m in members if not _unspellable(m, ctx)]
    if len(kept) == len(members):
        return annotation, False
    if not kept:
        return None, True
    return " | ".join(ast.unparse(m) for m in kept), True


def _unspellable(member: ast.expr, ctx: HintContext) -> bool:
    """Whether a union member names a class (or a forward reference to one) that no facade
    spells; a bare name (a type variable of the stub) or ``Any`` is not: it is ``Any``."""
    if hint(ast.unparse(member), ctx) != ANY:
        return False
    head = member.value if isinstance(member, ast.Subscript) else member
    dotted = _dotted(head)
    if dotted is None:
        return isinstance(head, ast.Call)  # ForwardRef('Timestamp')
    if dotted.endswith((".args", ".kwargs")):  # a ParamSpec's ``P.args``
        return False
    return "." in dotted and dotted.rpartition(".")[0] not in _TYPING_MODULES
