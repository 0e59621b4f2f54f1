"""Introspect symbols of one library; the single source of truth for what facades contain.

A standalone script (one file by design: it is copied into nothing and imports nothing of
snakebridge, so it is longer than our other modules). It runs inside the library's environment
with only the standard library, as ``python -s introspect.py`` (no PYTHON* variables but a fixed
``PYTHONHASHSEED``) with a JSON request on stdin::

    {"library": "numpy", "module": "numpy", "symbols": ["mean", "linalg.norm"], "all": false,
     "depth": 1, "typeshed": "/path/to/typeshed/stdlib"}

and prints one JSON object: ``{"version": ..., "symbols": {name: info}, "types": {type key:
info}, "errors": {name: msg}}``. Each info holds kind, module, qualname, signature (params,
returns), tier, doc and, for classes, members. Annotations are written with every name
qualified (``pandas.core.frame.DataFrame``, ``typing.Literal``); ``types`` holds the library
classes that results of the symbols are typed as (so facades can return them), each with the
``home`` path a facade defines it at.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import enum
import importlib
import inspect
import json
import os
import re
import sys
import types
import typing
from typing import Any, Dict, List, Optional, Tuple

STUBBY = ("stub", "docstring")
LITERAL_TYPES = (type(None), bool, int, float, str, bytes)
MAX_DOC, MEMBER_DOC = 2000, 600
PULL_ROUNDS, PULL_MAX = 2, 150
BINARY = ["add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift"]
BINARY += ["rshift", "and", "or", "xor"]
UNARY = ["neg", "pos", "abs", "invert", "lt", "le", "gt", "ge", "eq", "ne"]
IN_PLACE = {"__i%s__" % op for op in BINARY}
# the special methods facades forward (codegen/members.py renders these; in-place ones are
# described but not rendered: ``x += 1`` falls back to ``__add__``)
SPECIAL = {
    "__call__",
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__iter__",
    "__next__",
    "__enter__",
}
SPECIAL |= {"__%s__" % op for op in UNARY} | IN_PLACE
SPECIAL |= {"__%s%s__" % (p, op) for op in BINARY for p in ("", "r")}
VALUE_TYPES = {
    "datetime.datetime",
    "datetime.date",
    "datetime.time",
    "datetime.timedelta",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "collections.OrderedDict",
    "collections.Counter",
    "collections.defaultdict",
    "collections.deque",
}  # what the worker's value codec sends back by value (snakebridge_worker/values.py)
TYPESHED: List[str] = []
TYPING_MODULES = ("typing.", "typing_extensions.", "collections.abc.", "_collections_abc.")


def type_key(cls: Any) -> str:
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def literal_default(value: Any) -> Optional[str]:
    """Source text of a default that can be reproduced host-side, else None."""
    if type(value) in LITERAL_TYPES and not (isinstance(value, float) and value != value):
        text = repr(value)
        if isinstance(value, float) and text in ("inf", "-inf"):
            return None
        if isinstance(value, str) and '"' not in value:
            text = '"' + text[1:-1].replace("\\'", "'") + '"'
        return text if len(text) <= 200 else None
    if type(value) is tuple and all(literal_default(item) is not None for item in value):
        inner = ", ".join(str(literal_default(item)) for item in value)
        return "(" + inner + (",)" if len(value) == 1 else ")")
    return None


def by_value(cls: Any) -> bool:
    """Whether instances of ``cls`` come back to the host as values, not Refs."""
    if cls.__module__ == "builtins" or type_key(cls) in VALUE_TYPES:
        return True
    if issubclass(cls, enum.Enum):  # enum members travel as their value
        return True
    numpy = sys.modules.get("numpy")
    return bool(numpy is not None and issubclass(cls, (numpy.ndarray, numpy.generic)))


# -- qualified annotations ---------------------------------------------------------------------
_IMPORTS: Dict[str, Dict[str, str]] = {}


def _import_map(tree: ast.Module, package: str) -> Dict[str, str]:
    """Local name → dotted target of a module's imports (TYPE_CHECKING blocks included)."""
    names: Dict[str, str] = {}
    for node in _flatten(tree.body, all_branches=True):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                names[alias.asname or alias.name] = "%s.%s" % (base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ClassDef):
            names.setdefault(node.name, "%s.%s" % (package.rsplit(".", 1)[0], node.name))
    return names


def _source_imports(module: str) -> Dict[str, str]:
    if module not in _IMPORTS:
        names: Dict[str, str] = {}
        mod = sys.modules.get(module)
        try:
            path = inspect.getsourcefile(mod) if mod is not None else None
            if path:
                with open(path, encoding="utf-8") as fh:
                    package = module if path.endswith("__init__.py") else module + ".x"
                    names = _import_map(ast.parse(fh.read()), package)
        except (OSError, SyntaxError, TypeError, ValueError):
            pass
        _IMPORTS[module] = names
    return _IMPORTS[module]


def _lookup(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj: Any = sys.modules.get(name) or importlib.import_module(name)
        except Exception:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    return getattr(builtins, dotted)


def _name_of(obj: Any, fallback: str) -> str:
    module = getattr(obj, "__module__", None)
    if getattr(obj, "__origin__", None) is not None and hasattr(obj, "__args__"):
        return str(obj).replace("NoneType", "None")  # an alias: its content, names qualified
    if module in ("typing", "typing_extensions"):
        name = getattr(obj, "_name", None) or getattr(obj, "__name__", None)
        return "typing.%s" % name if name else fallback
    if isinstance(obj, typing.TypeVar):
        return "typing.Any"
    if isinstance(obj, type):
        return obj.__name__ if obj.__module__ == "builtins" else type_key(obj)
    return fallback


class Qualifier(ast.NodeTransformer):
    """Rewrites the names of an annotation to qualified ones, seen from one module."""

    def __init__(
        self,
        module: str,
        extra: Optional[Dict[str, str]] = None,
        typevars: Optional[Dict[Any, Any]] = None,
        depth: int = 0,
    ) -> None:
        self.module, self.extra, self.typevars = module, extra or {}, typevars or {}
        self.depth = depth

    def alias(self, dotted: str, fallback: str) -> str:
        """A type alias a stub defines (``_OrderCF: TypeAlias = L["C", "F"] | None``),
        expanded with its names qualified; ``fallback`` when ``dotted`` is none."""
        module, _, name = dotted.rpartition(".")
        found = stub_module(module) if module and self.depth < 4 else None
        value = _stub_aliases(module).get(name) if found else None
        if found is None or value is None:
            return fallback
        inner = Qualifier(module, found[1], self.typevars, self.depth + 1)
        text = inner.text(ast.unparse(value))
        return "(%s)" % text if text else fallback

    def named(self, obj: Any, fallback: str) -> str:
        if isinstance(obj, typing.TypeVar) and obj in self.typevars:
            return _name_of(self.typevars[obj], fallback)
        return _name_of(obj, fallback)

    def qualify(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        namespace = vars(sys.modules[self.module]) if self.module in sys.modules else {}
        if head in self.extra:
            target = self.extra[head] + ("." + rest if rest else "")
        elif head in namespace:
            obj = namespace[head]
            for part in rest.split(".") if rest else []:
                obj = getattr(obj, part, None)
            return self.named(obj, dotted)
        elif head in _source_imports(self.module):
            target = _source_imports(self.module)[head] + ("." + rest if rest else "")
        elif hasattr(builtins, head) and not rest:
            return head
        else:
            return self.alias("%s.%s" % (self.module, dotted), dotted)
        try:
            return self.named(_lookup(target), target)
        except Exception:
            return self.alias(target, target)

    def visit_Name(self, node: ast.Name) -> Any:
        return ast.copy_location(ast.Name(id=self.qualify(node.id), ctx=node.ctx), node)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        parts = []
        current: Any = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            return self.generic_visit(node)
        dotted = ".".join([current.id] + parts[::-1])
        return ast.copy_location(ast.Name(id=self.qualify(dotted), ctx=node.ctx), node)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        value = self.visit(node.value)
        if isinstance(value, ast.Name) and value.id.rpartition(".")[2] == "Literal":
            return ast.copy_location(ast.Subscript(value, node.slice, node.ctx), node)
        return ast.copy_location(ast.Subscript(value, self.visit(node.slice), node.ctx), node)

    def visit_Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, str):
            qualified = self.text(node.value)
            if qualified is not None:
                return ast.parse(qualified, mode="eval").body
        return node

    def text(self, annotation: Optional[str]) -> Optional[str]:
        if not annotation:
            return None
        try:
            tree = ast.parse(annotation.strip(), mode="eval")
        except SyntaxError:
            return None
        try:
            return ast.unparse(self.visit(tree.body))
        except Exception:
            return None


def annotation_text(annotation: Any) -> Optional[str]:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__ if annotation.__module__ == "builtins" else type_key(annotation)
    return str(annotation).replace("typing.", "")


def params_of(signature: inspect.Signature, qualifier: Optional[Qualifier]) -> Dict[str, Any]:
    def ann(value: Any) -> Optional[str]:
        text = annotation_text(value)
        return qualifier.text(text) if qualifier and text else text

    params = []
    for param in signature.parameters.values():
        has_default = param.default is not inspect.Parameter.empty
        default = literal_default(param.default) if has_default else None
        params.append(
            {
                "name": param.name,
                "kind": param.kind.name,
                "has_default": has_default,
                "default": default,
                "annotation": ann(param.annotation),
            }
        )
    return {"params": params, "returns": ann(signature.return_annotation)}


# -- stubs -------------------------------------------------------------------------------------
def _stub_paths(module: str) -> List[str]:
    parts = module.split(".")
    found = []
    roots = []
    for entry in sys.path:
        roots += [entry, os.path.join(entry, parts[0] + "-stubs")]
    for root in roots + TYPESHED:
        inner = parts[1:] if root.endswith(parts[0] + "-stubs") else parts
        base = os.path.join(root, *inner)
        for candidate in (os.path.join(base, "__init__.pyi"), base + ".pyi"):  # as imports do
            if os.path.isfile(candidate):
                found.append(candidate)
    return found


_STUB_CACHE: Dict[str, Optional[Tuple[ast.Module, Dict[str, str]]]] = {}
_STUB_LINES: Dict[str, List[str]] = {}
_IGNORE = re.compile(r"#\s*(type|pyright):\s*ignore\[([^\]]*)\]")
OVERLAP_CODES = {"overload-overlap", "overload-cannot-match", "reportOverlappingOverload"}


def stub_module(module: str) -> Optional[Tuple[ast.Module, Dict[str, str]]]:
    """A module's stub tree and its import map (name → dotted target)."""
    if module not in _STUB_CACHE:
        found = None
        for path in _stub_paths(module):
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                tree = ast.parse(text)
            except (OSError, SyntaxError, ValueError):
                continue
            package = module if path.endswith("__init__.pyi") else module + ".x"
            found = (tree, _import_map(tree, package))
            _STUB_LINES[module] = text.splitlines()
            break
        _STUB_CACHE[module] = found
    return _STUB_CACHE[module]


_ALIASES: Dict[str, Dict[str, ast.expr]] = {}


def _stub_aliases(module: str) -> Dict[str, ast.expr]:
    """Name → value of the type aliases a module's stub defines at its top level."""
    if module not in _ALIASES:
        found = stub_module(module)
        aliases: Dict[str, ast.expr] = {}
        for node in _flatten(found[0].body) if found else []:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None and ast.unparse(node.annotation).endswith("TypeAlias"):
                    aliases[node.target.id] = node.value
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name) and isinstance(
                    node.value, (ast.Subscript, ast.BinOp)
                ):
                    aliases[target.id] = node.value
        _ALIASES[module] = aliases
    return _ALIASES[module]


def _condition(test: ast.expr) -> Optional[bool]:
    """The value of a stub's ``sys.version_info``/``sys.platform`` test here, else None."""
    try:
        source = ast.unparse(test)
        if "sys." not in source or re.search(r"[^\w.\s()<>=!,'\"\[\]:]", source):
            return None
        allowed = {
            "sys": types.SimpleNamespace(version_info=sys.version_info, platform=sys.platform)
        }
        return bool(
            eval(compile(ast.Expression(test), "<stub>", "eval"), {"__builtins__": {}}, allowed)
        )
    except Exception:
        return None


def _flatten(body: List[ast.stmt], all_branches: bool = False) -> List[ast.stmt]:
    out: List[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):
            value = None if all_branches else _condition(node.test)
            if value is None:
                out.extend(_flatten(node.body, all_branches))
                if all_branches:
                    out.extend(_flatten(node.orelse, all_branches))
            else:
                out.extend(_flatten(node.body if value else node.orelse, all_branches))
        elif isinstance(node, ast.Try) and all_branches:
            out.extend(_flatten(node.body, all_branches))
        else:
            out.append(node)
    return out


def _stub_defs(module: str, qualname: str, hops: int = 6) -> Tuple[List[Any], str]:
    """Stub defs of ``qualname`` and the stub module they are in (re-exports followed)."""
    found = stub_module(module)
    if found is None:
        return [], module
    tree, imports = found
    scope: List[ast.stmt] = tree.body
    parts = qualname.split(".")
    owner: Optional[ast.ClassDef] = None
    for index, part in enumerate(parts[:-1]):
        classes = [n for n in _flatten(scope) if isinstance(n, ast.ClassDef) and n.name == part]
        if not classes:
            target = imports.get(part) if index == 0 else None
            if target and hops and "." in target:
                source, _, name = target.rpartition(".")
                return _stub_defs(source, ".".join([name] + parts[1:]), hops - 1)
            alias = _class_alias(scope, part) if index == 0 else None
            if alias and hops:  # ``int8 = signedinteger[_8Bit]``: the class it names
                return _stub_defs(module, ".".join([alias] + parts[1:]), hops - 1)
            return [], module
        owner, scope = classes[0], classes[0].body
    defs = [
        n
        for n in _flatten(scope)
        if (isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == parts[-1])
        or (parts[-1] == "__hash__" and _declares(n, "__hash__"))  # ``__hash__: ClassVar[None]``
    ]
    for base in owner.bases if owner is not None and not defs and hops else []:
        node = base.value if isinstance(base, ast.Subscript) else base
        dotted = ast.unparse(node)
        head, _, rest = dotted.partition(".")
        target = imports.get(head)
        if target is None or "." not in target:
            continue
        source, _, name = (target + ("." + rest if rest else "")).rpartition(".")
        found_defs, where = _stub_defs(source, name + "." + parts[-1], hops - 1)
        if found_defs:
            return found_defs, where
    if not defs and owner is None and len(parts) == 1 and hops:
        protocol = _callable_type(scope, parts[0])  # ``zeros: Final[_ConstructorEmpty]``
        if protocol:
            head, _, rest = protocol.partition(".")
            target = imports.get(head)
            if target and "." in target:
                source, _, name = (target + ("." + rest if rest else "")).rpartition(".")
                return _stub_defs(source, name + ".__call__", hops - 1)
            return _stub_defs(module, protocol + ".__call__", hops - 1)
    target = imports.get(parts[0]) if len(parts) == 1 else None
    if not defs and target and hops and "." in target:
        source, _, name = target.rpartition(".")
        return _stub_defs(source, name, hops - 1)
    return defs, module


def _class_alias(scope: List[ast.stmt], name: str) -> Optional[str]:
    """``X`` for a stub's module-level ``name = X`` or ``name = X[...]`` (a class alias)."""
    for node in _flatten(scope):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id == name):
            continue
        if isinstance(value, ast.Subscript):
            value = value.value
        dotted = ast.unparse(value)
        return dotted if re.fullmatch(r"[A-Za-z_][\w.]*", dotted) and dotted != name else None
    return None


def _declares(node: ast.stmt, name: str) -> bool:
    """Whether a stub statement declares a variable ``name`` (``x: T`` or ``x = v``)."""
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.target.id == name
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    return False


def unhashable(cls: type) -> bool:
    """Whether instances are unhashable: ``__hash__`` is None at run time or in the stub
    (pandas' frames define a ``__hash__`` that raises; their stubs say ``ClassVar[None]``)."""
    if cls.__hash__ is None:
        return True
    defs, _ = _stub_defs(cls.__module__, cls.__qualname__ + ".__hash__")
    for node in defs:
        value = node.annotation if isinstance(node, ast.AnnAssign) else getattr(node, "value", None)
        if isinstance(value, ast.AST) and re.search(r"\bNone\b", ast.unparse(value)):
            return True
    return False


def _callable_type(scope: List[ast.stmt], name: str) -> Optional[str]:
    """The class a stub declares a module variable as (its ``__call__`` is the signature)."""
    for node in _flatten(scope):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if node.target.id != name:
            continue
        annotation = node.annotation
        if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) in (
            "Final",
            "typing.Final",
            "typing_extensions.Final",
        ):
            annotation = annotation.slice
        if isinstance(annotation, (ast.Name, ast.Attribute)):
            return ast.unparse(annotation)
    return None


def _stub_signature(node: Any, qualifier: Optional[Qualifier]) -> Dict[str, Any]:
    args = node.args
    params: List[Dict[str, Any]] = []

    def ann(expr: Optional[ast.expr]) -> Optional[str]:
        if expr is None:
            return None
        text = ast.unparse(expr)
        return qualifier.text(text) if qualifier else text

    def add(arg: ast.arg, kind: str, default: Optional[ast.expr]) -> None:
        text = None
        if default is not None and ast.unparse(default) != "...":
            try:
                text = literal_default(ast.literal_eval(default))
            except (ValueError, SyntaxError):
                text = None
        params.append(
            {
                "name": arg.arg,
                "kind": kind,
                "has_default": default is not None,
                "default": text,
                "annotation": ann(arg.annotation),
            }
        )

    positional = args.posonlyargs + args.args
    defaults: List[Optional[ast.expr]] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    for index, arg in enumerate(positional):
        kind = "POSITIONAL_ONLY" if index < len(args.posonlyargs) else "POSITIONAL_OR_KEYWORD"
        if arg.arg.startswith("__") and not arg.arg.endswith("__"):
            kind = "POSITIONAL_ONLY"
        add(arg, kind, defaults[index])
    if args.vararg:
        add(args.vararg, "VAR_POSITIONAL", None)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        add(arg, "KEYWORD_ONLY", default)
    if args.kwarg:
        add(args.kwarg, "VAR_KEYWORD", None)
    for param in params:
        if param["name"].startswith("__") and not param["name"].endswith("__"):
            param["name"] = param["name"][2:]
    return {"params": params, "returns": ann(node.returns)}


def stub_signatures(
    module: str, qualname: str, typevars: Optional[Dict[Any, Any]] = None
) -> List[Dict[str, Any]]:
    """Signatures from a .pyi stub (several when the stub has overloads)."""
    defs, where = _stub_defs(module, qualname)
    defs = [d for d in defs if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef))]
    found = stub_module(where)
    qualifier = Qualifier(where, found[1] if found else None, typevars)
    signatures = [_stub_signature(node, qualifier) for node in defs]
    lines = _STUB_LINES.get(where, [])
    for node, signature in zip(defs, signatures):
        if node.name == "__call__" and qualname.split(".")[-1] != "__call__":
            signature["params"] = signature["params"][1:]  # a callable object's self
        ignores = _overlap_ignores(lines, node)
        if ignores:
            signature["ignore"] = ignores
    return signatures


def _overlap_ignores(lines: List[str], node: Any) -> List[str]:
    """The overload-overlap codes a stub's own ``type:``/``pyright:`` ignores name at a def
    (kept so a facade's overloads are as clean as the library's stubs)."""
    last = node.body[0].lineno if node.body else node.lineno
    codes = set()
    for line in lines[node.lineno - 1 : last]:
        for _, names in _IGNORE.findall(line):
            codes |= {c.strip() for c in names.split(",")} & OVERLAP_CODES
    return sorted(codes)


# -- docstrings --------------------------------------------------------------------------------
_DOC_SIG = re.compile(r"^\s*([A-Za-z_][\w.]*)\((.*)\)\s*(?:->\s*(.+))?$")


def docstring_signature(name: str, doc: Optional[str]) -> Optional[Dict[str, Any]]:
    if not doc:
        return None
    first = doc.strip().splitlines()[0]
    match = _DOC_SIG.match(first)
    if not match or match.group(1).split(".")[-1] != name:
        return None
    returns = " -> %s" % match.group(3).strip() if match.group(3) else ""
    try:
        tree = ast.parse("def f(%s)%s: pass" % (match.group(2), returns))
    except SyntaxError:
        return None
    return _stub_signature(tree.body[0], None)


def _variadic() -> Dict[str, Any]:
    def param(name: str, kind: str) -> Dict[str, Any]:
        return {
            "name": name,
            "kind": kind,
            "has_default": False,
            "default": None,
            "annotation": None,
        }

    return {
        "params": [param("args", "VAR_POSITIONAL"), param("kwargs", "VAR_KEYWORD")],
        "returns": None,
    }


VARIADIC = _variadic()
Signature = Dict[str, Any]


def _merge_annotations(target: Signature, stub: Signature) -> None:
    """A stub's annotations win: they are written for type checkers."""
    by_name = {param["name"]: param for param in stub["params"]}
    for param in target["params"]:
        typed = by_name.get(param["name"])
        if typed is not None and typed["annotation"]:
            param["annotation"] = typed["annotation"]
    if stub["returns"]:
        target["returns"] = stub["returns"]


_RETURNS_SELF = re.compile(r"\n\s*Returns\n\s*-+\n\s*self\b")


def _returns_self(obj: Any) -> bool:
    """A numpydoc ``Returns`` section that names ``self`` (scikit-learn's ``fit``)."""
    return bool(_RETURNS_SELF.search(getattr(obj, "__doc__", None) or ""))


def _runtime_overloads(obj: Any, qualifier: Qualifier) -> List[Signature]:
    get_overloads = getattr(typing, "get_overloads", None)
    try:
        found = get_overloads(obj) if get_overloads else []
        return [params_of(inspect.signature(f), qualifier) for f in found]
    except Exception:
        return []


def typevar_map(cls: type) -> Dict[Any, Any]:
    """TypeVars of generic base classes → what ``cls`` binds them to (``GroupBy[DataFrame]``)."""
    bound: Dict[Any, Any] = {}
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = typing.get_origin(base)
            params = getattr(origin, "__parameters__", ())
            for param, arg in zip(params, typing.get_args(base)):
                arg = bound.get(arg, arg)
                if isinstance(arg, type) or arg in bound.values():
                    bound.setdefault(param, arg)
    return bound


def _defined_in(obj: Any, fallback: str) -> str:
    """The module whose namespace an object's annotations are written in.

    A function's globals say it even when a library rewrites ``__module__`` to a public one.
    """
    function = getattr(obj, "__func__", obj)
    with contextlib.suppress(Exception):
        function = inspect.unwrap(function)  # a decorator's globals are not the function's
    name = getattr(function, "__globals__", {}).get("__name__")
    if isinstance(name, str) and name in sys.modules:
        return name
    home = getattr(obj, "__module__", None)
    return home if isinstance(home, str) and home in sys.modules else fallback


def signature_of(
    obj: Any, module: str, qualname: str, name: str, typevars: Optional[Dict[Any, Any]] = None
) -> Tuple[Signature, str, List[Signature]]:
    """(signature, tier, overloads); annotations qualified."""
    overloads = stub_signatures(module, qualname, typevars)
    home = getattr(obj, "__module__", None)
    if not overloads and isinstance(home, str) and home != module:
        overloads = stub_signatures(home, getattr(obj, "__qualname__", qualname), typevars)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        tier = "text_signature" if getattr(obj, "__text_signature__", None) else "runtime"
        qualifier = Qualifier(_defined_in(obj, module), typevars=typevars)
        described = params_of(signature, qualifier)
        if len(overloads) == 1:
            _merge_annotations(described, overloads[0])
        if described["returns"] is None and _returns_self(obj):
            described["returns"] = "typing.Self"
        if len(overloads) < 2:
            overloads = _runtime_overloads(obj, qualifier)
        return described, tier, overloads if len(overloads) > 1 else []
    if overloads:
        return overloads[0], "stub", overloads if len(overloads) > 1 else []
    parsed = docstring_signature(name, getattr(obj, "__doc__", None))
    if parsed is not None:
        return parsed, "docstring", []
    return VARIADIC, "variadic", []


# -- symbols -----------------------------------------------------------------------------------
def trimmed_doc(obj: Any, limit: int = MAX_DOC) -> str:
    doc = inspect.getdoc(obj) or ""
    if limit == MEMBER_DOC:
        doc = doc.strip().split("\n\n")[0]
    return doc if len(doc) <= limit else doc[:limit].rstrip() + "\n…"


def kind_of(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isbuiltin(obj):
        return "builtin"
    if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isroutine(obj):
        return "function"
    if by_value(type(obj)) or type(obj).__module__ in ("typing", "typing_extensions"):
        return "constant"
    return "object"


def _defining(cls: type, name: str) -> type:
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return cls


def _property(name: str, raw: Any, owner: type, typevars: Dict[Any, Any]) -> Dict[str, Any]:
    info: Dict[str, Any] = {"name": name, "kind": "property", "doc": trimmed_doc(raw, MEMBER_DOC)}
    fget = getattr(raw, "fget", None)
    if fget is not None:
        try:
            returns = inspect.signature(fget).return_annotation
            qualifier = Qualifier(_defined_in(fget, owner.__module__), typevars=typevars)
            info["type"] = qualifier.text(annotation_text(returns))
        except Exception:
            pass
        info["settable"] = getattr(raw, "fset", None) is not None
    if not info.get("type"):
        stub = stub_signatures(owner.__module__, "%s.%s" % (owner.__qualname__, name))
        if stub:
            info["type"] = stub[0]["returns"]
    return info


def member_info(cls: type, name: str, typevars: Dict[Any, Any]) -> Optional[Dict[str, Any]]:
    raw = inspect.getattr_static(cls, name)
    owner = _defining(cls, name)
    kind = "method"
    if isinstance(raw, staticmethod):
        kind = "staticmethod"
    elif isinstance(raw, classmethod):
        kind = "classmethod"
    elif isinstance(raw, property) or inspect.isdatadescriptor(raw):
        return _property(name, raw, owner, typevars)
    target: Any = getattr(cls, name, None)
    if inspect.isclass(target) and not inspect.isclass(raw) and hasattr(type(raw), "__get__"):
        doc = trimmed_doc(target, MEMBER_DOC)
        return {"name": name, "kind": "property", "type": type_key(target), "doc": doc}
    if not callable(target) or inspect.isclass(target):
        return None
    qualname = "%s.%s" % (owner.__qualname__, name)
    signature, tier, overloads = signature_of(target, owner.__module__, qualname, name, typevars)
    params = signature["params"]
    bound_first = params and params[0]["kind"] != "VAR_POSITIONAL"
    if (
        kind == "method"
        and bound_first
        and (params[0]["name"] == "self" or tier in STUBBY or inspect.isfunction(raw))
    ):
        signature = dict(signature, params=params[1:])
    if kind == "method":
        bound = {_name_of(v, "") for v in typevars.values()}
        overloads = [
            dict(o, params=o["params"][1:])
            for o in overloads
            if _self_fits(o, bound) and all(p["name"] != "self" for p in o["params"][1:])
        ]
    elif kind == "classmethod" and tier in STUBBY and params:
        signature = dict(signature, params=params[1:])
    if kind == "classmethod":
        overloads = [dict(o, params=o["params"][1:]) for o in overloads]
    return {
        "name": name,
        "kind": kind,
        "signature": signature,
        "tier": tier,
        "overloads": overloads,
        "doc": trimmed_doc(target, MEMBER_DOC),
    }


def _self_fits(overload: Dict[str, Any], bound: "set[str]") -> bool:
    """Whether an overload typed for ``self: Base[X]`` applies to a class that binds X."""
    params = overload["params"]
    annotation = params[0].get("annotation") if params else None
    if not annotation or "[" not in annotation:
        return True
    inner = annotation[annotation.index("[") + 1 : annotation.rindex("]")]
    names = [n.strip() for n in inner.split(",")]
    return all(n in bound or not _NAME.fullmatch(n) for n in names)


def _wanted_member(cls: type, name: str) -> bool:
    if name in SPECIAL:
        if not any(name in vars(c) for c in cls.__mro__):
            return False  # the metaclass's (an enum's ``Flag["I"]``), not its instances'
        found = getattr(cls, name, None)
        return found is not None and found is not getattr(object, name, None)
    return not name.startswith("_")


def _built_by_new(cls: type, module: str, typevars: Dict[Any, Any]) -> Tuple[Dict[str, Any], str]:
    """The constructor of a class made by a ``__new__`` of its own (``numpy.int8``): what its
    stub says (``__init__`` or ``__new__``, through aliases), else nothing is claimed;
    ``object.__init__``'s empty signature is no evidence."""
    for home in dict.fromkeys([module, cls.__module__]):
        for name in ("__init__", "__new__"):
            found = stub_signatures(home, "%s.%s" % (cls.__qualname__, name), typevars)
            if found and found[0]["params"]:
                return dict(found[0], params=found[0]["params"][1:]), "stub"
    return VARIADIC, "variadic"


def class_info(cls: type, module: str) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "remote_type": type_key(cls),
        "bases": [type_key(c) for c in cls.__mro__[1:-1]],
    }
    if issubclass(cls, BaseException):
        builtin = next(c for c in cls.__mro__ if c.__module__ == "builtins")
        info["builtin"] = builtin.__name__
        return info
    members = []
    try:
        typevars = typevar_map(cls)
    except Exception:
        typevars = {}
    for name in sorted(set(dir(cls)) | set(vars(cls))):
        if not _wanted_member(cls, name):
            continue
        try:
            member = member_info(cls, name, typevars)
        except Exception:
            continue
        if member is not None:
            members.append(member)
    try:
        init = vars(cls).get("__init__") or getattr(cls, "__init__", cls)
        if init is object.__init__:
            init = cls
        owner = _defining(cls, "__init__")
        signature, tier, _ = signature_of(
            init, owner.__module__, "%s.__init__" % owner.__qualname__, "__init__"
        )
        if (signature["params"] and signature["params"][0]["name"] == "self") or (
            tier in STUBBY and signature["params"]
        ):
            signature = dict(signature, params=signature["params"][1:])
        if tier == "variadic" or not signature["params"]:
            whole, whole_tier, _ = signature_of(cls, module, cls.__qualname__, cls.__name__)
            if whole_tier != "variadic":
                signature, tier = whole, whole_tier
        if owner is object and _defining(cls, "__new__") is not object and tier in STUBBY:
            signature, tier = _built_by_new(cls, module, typevars)
    except Exception:
        signature, tier = VARIADIC, "variadic"
    info.update(members=members, signature=signature, tier=tier, overloads=[])
    with contextlib.suppress(Exception):
        if unhashable(cls):
            info["unhashable"] = True
    if by_value(cls):
        info["by_value"] = True
    return info


def describe(obj: Any, module: str, qualname: str) -> Dict[str, Any]:
    kind = kind_of(obj)
    name = qualname.split(".")[-1]
    info: Dict[str, Any] = {
        "kind": kind,
        "module": module,
        "qualname": qualname,
        "doc": trimmed_doc(obj) if kind not in ("constant", "object") else "",
    }
    if kind in ("class", "exception"):
        info.update(class_info(obj, module))
    elif kind in ("function", "builtin"):
        signature, tier, overloads = signature_of(obj, module, qualname, name)
        info.update(signature=signature, tier=tier, overloads=overloads)
    elif kind == "object":
        info.update(type=type_key(type(obj)), tier="runtime")
    elif kind == "constant":
        value_type = type(obj.value if isinstance(obj, enum.Enum) else obj)
        info["value_type"] = value_type.__name__ if value_type.__module__ == "builtins" else None
        info["tier"] = "runtime"
    else:
        info["tier"] = "runtime"
    return info


# -- classes that results are typed as ---------------------------------------------------------
_NAME = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)+")


def referenced(info: Dict[str, Any]) -> List[str]:
    """Dotted names in the result types of a symbol (returns, properties, object types)."""
    texts = [info.get("type")]
    for sig in [info.get("signature") or {}] + list(info.get("overloads") or []):
        texts.append(sig.get("returns"))
    for member in info.get("members", []):
        texts += referenced(member)
    return sorted({n for t in texts if isinstance(t, str) for n in _NAME.findall(t)})


def home_of(cls: type, root: str, near: str) -> Optional[Tuple[str, str]]:
    """(module, name) a facade defines a pulled class at: a public place if there is one."""
    if "." in cls.__qualname__ or "<" in cls.__qualname__:
        return None
    if cls.__name__.startswith("_"):  # a private class lives beside what returns it
        return near, cls.__name__
    for place in (root, near):
        module = sys.modules.get(place)
        if module is not None and getattr(module, cls.__name__, None) is cls:
            return place, cls.__name__
    if cls.__module__ == root or cls.__module__.startswith(root + "."):
        return cls.__module__, cls.__name__
    return None


def pull_types(out: Dict[str, Any], root: str, known: List[str]) -> None:
    """Describe the library classes the described symbols return, a few rounds deep."""
    out.setdefault("types", {})
    described = list(out["symbols"].values()) + list(out["types"].values())
    seen = set(known) | {i.get("remote_type") for i in described} | set(out["types"])
    frontier = [(n, i["module"]) for i in described for n in referenced(i)]
    for _ in range(PULL_ROUNDS):
        found = []
        for dotted, near in frontier:
            if dotted in seen or len(out["types"]) >= PULL_MAX:
                continue
            seen.add(dotted)
            if dotted.split(".")[0] != root.split(".")[0] or dotted.startswith(TYPING_MODULES):
                continue
            try:
                cls = _lookup(dotted)
            except Exception:
                continue
            if not inspect.isclass(cls) or type_key(cls) != dotted or by_value(cls):
                continue
            home = home_of(cls, root, near)
            if home is None:
                continue
            try:
                info = describe(cls, home[0], home[1])
            except Exception:
                continue
            info["pulled"] = True
            out["types"][dotted] = info
            found += [(n, home[0]) for n in referenced(info)]
        frontier = found


def resolve(module_name: str, dotted: str) -> Tuple[Any, str, str]:
    """(object, module it lives in, qualname) for a dotted path; stops at non-module objects."""
    obj: Any = importlib.import_module(module_name)
    current_module = module_name
    qual: List[str] = []
    for part in dotted.split(".") if dotted else []:
        if isinstance(obj, types.ModuleType) and not qual:
            if hasattr(obj, part):
                child = getattr(obj, part)
            else:
                try:
                    child = importlib.import_module("%s.%s" % (current_module, part))
                except ImportError:
                    matches = difflib.get_close_matches(
                        part, [n for n in dir(obj) if not n.startswith("_")], n=3
                    )
                    hint = "; did you mean %s?" % ", ".join(matches) if matches else ""
                    raise LookupError(
                        "%s has no attribute %r%s" % (current_module, part, hint)
                    ) from None
            if isinstance(child, types.ModuleType):
                obj, current_module = child, "%s.%s" % (current_module, part)
                continue
            obj = child
            qual.append(part)
            continue
        break  # an attribute of a class or a constant: the symbol is what we have
    return obj, current_module, ".".join(qual)


def public_names(module: Any) -> List[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        names = [n for n in names if not isinstance(getattr(module, n, None), types.ModuleType)]
    hidden = ("annotations", "Any", "TYPE_CHECKING")
    return sorted(set(str(n) for n in names if not str(n).startswith("_") and n not in hidden))


def version_of(library: str, top_module: str) -> str:
    if top_module.split(".")[0] in getattr(sys, "stdlib_module_names", ()):
        return "stdlib " + ".".join(map(str, sys.version_info[:3]))
    try:
        from importlib import metadata

        return metadata.version(library)
    except Exception:
        module = sys.modules.get(top_module)
        return str(getattr(module, "__version__", "unknown"))


def _surface(top: Any, module_name: str, depth: int) -> List[str]:
    """Public names of a module and, ``depth - 1`` levels down, of its public submodules."""
    symbols = public_names(top)
    if depth <= 1:
        return symbols
    for name in [n for n in dir(top) if not n.startswith("_")]:
        child = getattr(top, name, None)
        if isinstance(child, types.ModuleType) and child.__name__.startswith(module_name + "."):
            symbols += ["%s.%s" % (name, n) for n in _surface(child, child.__name__, depth - 1)]
    return symbols


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]  # as -I would
    request = json.loads(sys.stdin.read())
    module_name = request["module"]
    if request.get("typeshed"):
        TYPESHED.append(request["typeshed"])
    out: Dict[str, Any] = {"symbols": {}, "errors": {}}
    try:
        top = importlib.import_module(module_name)
    except BaseException as exc:
        out["import_error"] = "cannot import %r: %s: %s" % (module_name, type(exc).__name__, exc)
        print(json.dumps(out))
        return
    out["version"] = version_of(request.get("package") or request["library"], module_name)
    symbols: List[str] = list(request.get("symbols", []))
    if request.get("all"):
        symbols = sorted(
            set(symbols) | set(_surface(top, module_name, int(request.get("depth", 1))))
        )
    for prefix in request.get("star", []):
        try:
            module = resolve(module_name, prefix)[0] if prefix else top
            names = public_names(module)
            symbols += ["%s.%s" % (prefix, n) if prefix else n for n in names]
        except Exception as exc:
            out["errors"][prefix + ".*"] = "%s: %s" % (type(exc).__name__, exc)
    for dotted in sorted(set(symbols)):
        try:
            obj, module, qualname = resolve(module_name, dotted)
            if not qualname:
                out["symbols"][dotted] = {
                    "kind": "module",
                    "module": module,
                    "qualname": "",
                    "doc": trimmed_doc(obj),
                    "tier": "runtime",
                }
            else:
                out["symbols"][dotted] = describe(obj, module, qualname)
        except LookupError as exc:
            out["errors"][dotted] = str(exc)
        except Exception as exc:
            out["errors"][dotted] = "%s: %s" % (type(exc).__name__, exc)
    out["types"] = {}
    for home in request.get("types", []):  # classes pulled in by an earlier sync, by type key
        try:
            info = describe(_lookup(home["key"]), home["module"], home["name"])
            out["types"][home["key"]] = dict(info, pulled=True)
        except Exception as exc:
            out["errors"][home["key"]] = "%s: %s" % (type(exc).__name__, exc)
    if request.get("pull", True):
        pull_types(out, module_name, list(request.get("known", [])))
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
