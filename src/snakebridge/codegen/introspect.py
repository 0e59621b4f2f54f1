"""Introspect symbols of one library; the single source of truth for what facades contain.

A standalone script: it runs inside the library's environment with only the standard library,
as ``python -I introspect.py`` with a JSON request on stdin::

    {"library": "numpy", "module": "numpy", "symbols": ["mean", "linalg.norm"], "all": false}

and prints one JSON object: ``{"version": ..., "symbols": {name: info}, "errors": {name: msg}}``.
Each info holds kind, module, qualname, signature (params, returns), tier, doc and, for
classes, members. ``"all": true`` lists the public surface instead of named symbols.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import json
import os
import re
import sys
import types
from typing import Any, Dict, List, Tuple

STUBBY = ("stub", "docstring")
LITERAL_TYPES = (type(None), bool, int, float, str, bytes)
MAX_DOC = 2000


def literal_default(value: Any) -> str | None:
    """Source text of a default that can be reproduced host-side, else None."""
    if type(value) in LITERAL_TYPES and not (isinstance(value, float) and value != value):
        text = repr(value)
        if isinstance(value, float) and text in ("inf", "-inf"):
            return None
        return text if len(text) <= 200 else None
    if type(value) is tuple and all(literal_default(item) is not None for item in value):
        return repr(value)
    return None


def annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return (
            annotation.__name__
            if annotation.__module__ == "builtins"
            else (f"{annotation.__module__}.{annotation.__qualname__}")
        )
    return str(annotation).replace("typing.", "")


def params_of(signature: inspect.Signature) -> dict[str, Any]:
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
                "annotation": annotation_text(param.annotation),
            }
        )
    return {"params": params, "returns": annotation_text(signature.return_annotation)}


# -- stubs -------------------------------------------------------------------------------------
def _stub_paths(module: str) -> list[str]:
    parts = module.split(".")
    found = []
    for entry in sys.path + [os.path.dirname(os.path.dirname(os.__file__))]:
        for root in (entry, os.path.join(entry, "mypy", "typeshed", "stdlib")):
            base = os.path.join(root, *parts)
            for candidate in (base + ".pyi", os.path.join(base, "__init__.pyi")):
                if os.path.isfile(candidate):
                    found.append(candidate)
        stubs_pkg = os.path.join(entry, parts[0] + "-stubs", *parts[1:])
        for candidate in (stubs_pkg + ".pyi", os.path.join(stubs_pkg, "__init__.pyi")):
            if os.path.isfile(candidate):
                found.append(candidate)
    return found


_STUB_CACHE: dict[str, ast.Module | None] = {}


def stub_module(module: str) -> ast.Module | None:
    if module not in _STUB_CACHE:
        tree = None
        for path in _stub_paths(module):
            try:
                with open(path, encoding="utf-8") as fh:
                    tree = ast.parse(fh.read())
                break
            except (OSError, SyntaxError, ValueError):
                continue
        _STUB_CACHE[module] = tree
    return _STUB_CACHE[module]


def _stub_defs(module: str, qualname: str) -> list[Any]:
    tree = stub_module(module)
    if tree is None:
        return []
    scope: list[ast.stmt] = tree.body
    parts = qualname.split(".")
    for part in parts[:-1]:
        classes = [n for n in scope if isinstance(n, ast.ClassDef) and n.name == part]
        if not classes:
            return []
        scope = classes[0].body
    return [
        n
        for n in _flatten(scope)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == parts[-1]
    ]


def _flatten(body: list[ast.stmt]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.If):  # version/platform branches: take the first
            out.extend(_flatten(node.body))
        else:
            out.append(node)
    return out


def _stub_signature(node: Any) -> dict[str, Any]:
    args = node.args
    params: list[dict[str, Any]] = []

    def add(arg: ast.arg, kind: str, default: ast.expr | None) -> None:
        text = None
        if default is not None:
            source = ast.unparse(default)
            try:
                text = literal_default(ast.literal_eval(default))
            except (ValueError, SyntaxError):
                text = None
            if source == "...":
                text = None
        params.append(
            {
                "name": arg.arg,
                "kind": kind,
                "has_default": default is not None,
                "default": text,
                "annotation": ast.unparse(arg.annotation) if arg.annotation else None,
            }
        )

    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
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
    returns = ast.unparse(node.returns) if node.returns else None
    return {"params": params, "returns": returns}


def stub_signatures(module: str, qualname: str) -> list[dict[str, Any]]:
    """Signatures from a .pyi stub (several when the stub has overloads)."""
    return [_stub_signature(node) for node in _stub_defs(module, qualname)]


# -- docstrings --------------------------------------------------------------------------------
_DOC_SIG = re.compile(r"^\s*([A-Za-z_][\w.]*)\((.*)\)\s*(?:->\s*(.+))?$")


def docstring_signature(name: str, doc: str | None) -> dict[str, Any] | None:
    if not doc:
        return None
    first = doc.strip().splitlines()[0]
    match = _DOC_SIG.match(first)
    if not match or match.group(1).split(".")[-1] != name:
        return None
    returns = f" -> {match.group(3).strip()}" if match.group(3) else ""
    try:
        tree = ast.parse(f"def f({match.group(2)}){returns}: pass")
    except SyntaxError:
        return None
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return _stub_signature(node)


VARIADIC = {
    "params": [
        {
            "name": "args",
            "kind": "VAR_POSITIONAL",
            "has_default": False,
            "default": None,
            "annotation": None,
        },
        {
            "name": "kwargs",
            "kind": "VAR_KEYWORD",
            "has_default": False,
            "default": None,
            "annotation": None,
        },
    ],
    "returns": None,
}


Signature = Dict[str, Any]


def _merge_annotations(target: Signature, stub: Signature) -> None:
    by_name = {param["name"]: param for param in stub["params"]}
    for param in target["params"]:
        typed = by_name.get(param["name"])
        if param["annotation"] is None and typed is not None:
            param["annotation"] = typed["annotation"]
    if target["returns"] is None:
        target["returns"] = stub["returns"]


def signature_of(
    obj: Any, module: str, qualname: str, name: str
) -> Tuple[Signature, str, List[Signature]]:
    """(signature, tier, overloads)."""
    overloads = stub_signatures(module, qualname)
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        tier = "text_signature" if getattr(obj, "__text_signature__", None) else "runtime"
        described = params_of(signature)
        if len(overloads) == 1:  # a stub types what the runtime signature leaves bare
            _merge_annotations(described, overloads[0])
        return described, tier, overloads if len(overloads) > 1 else []
    if overloads:
        return overloads[0], "stub", overloads if len(overloads) > 1 else []
    parsed = docstring_signature(name, getattr(obj, "__doc__", None))
    if parsed is not None:
        return parsed, "docstring", []
    return VARIADIC, "variadic", []


# -- symbols -----------------------------------------------------------------------------------
def trimmed_doc(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc if len(doc) <= MAX_DOC else doc[:MAX_DOC].rstrip() + "\n…"


def kind_of(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if inspect.isbuiltin(obj):
        return "builtin"
    if inspect.isfunction(obj) or inspect.ismethod(obj) or callable(obj):
        return "function"
    return "constant"


def member_info(cls: type, name: str, module: str) -> dict[str, Any] | None:
    raw = inspect.getattr_static(cls, name)
    kind = "method"
    target: Any = getattr(cls, name, None)
    if isinstance(raw, staticmethod):
        kind = "staticmethod"
    elif isinstance(raw, classmethod):
        kind = "classmethod"
    elif isinstance(raw, property) or inspect.isdatadescriptor(raw):
        return {"name": name, "kind": "property", "doc": trimmed_doc(raw)}
    elif not callable(target):
        return None
    qualname = f"{cls.__qualname__}.{name}"
    signature, tier, overloads = signature_of(target, module, qualname, name)
    params = signature["params"]
    if kind == "method" and params and (params[0]["name"] == "self" or tier in STUBBY):
        signature = {**signature, "params": params[1:]}
    return {
        "name": name,
        "kind": kind,
        "signature": signature,
        "tier": tier,
        "overloads": overloads,
        "doc": trimmed_doc(target),
    }


def class_info(cls: type, module: str) -> dict[str, Any]:
    members = []
    inherited = set(dir(cls)) - set(dir(object)) | set(vars(cls))
    for name in sorted(inherited):
        if name.startswith("_") and name not in ("__call__", "__enter__", "__exit__"):
            continue
        try:
            info = member_info(cls, name, module)
        except Exception:
            continue
        if info is not None:
            members.append(info)
    try:
        init = vars(cls).get("__init__") or getattr(cls, "__init__", cls)
        if init is object.__init__:
            init = cls
        signature, tier, overloads = signature_of(
            init, module, f"{cls.__qualname__}.__init__", "__init__"
        )
        if signature["params"] and signature["params"][0]["name"] == "self":
            signature = {**signature, "params": signature["params"][1:]}
        if tier == "variadic" or not signature["params"]:
            whole, whole_tier, _ = signature_of(cls, module, cls.__qualname__, cls.__name__)
            if whole_tier != "variadic":
                signature, tier = whole, whole_tier
    except Exception:
        signature, tier, overloads = VARIADIC, "variadic", []
    return {
        "members": members,
        "signature": signature,
        "tier": tier,
        "overloads": overloads,
        "remote_type": f"{cls.__module__}.{cls.__qualname__}",
    }


def describe(obj: Any, module: str, qualname: str) -> dict[str, Any]:
    kind = kind_of(obj)
    name = qualname.split(".")[-1]
    info: dict[str, Any] = {
        "kind": kind,
        "module": module,
        "qualname": qualname,
        "doc": trimmed_doc(obj) if kind != "constant" else "",
    }
    if kind in ("class", "exception"):
        info.update(class_info(obj, module))
    elif kind in ("function", "builtin"):
        signature, tier, overloads = signature_of(obj, module, qualname, name)
        info.update(signature=signature, tier=tier, overloads=overloads)
    elif kind == "constant":
        value_type = type(obj)
        info["value_type"] = value_type.__name__ if value_type.__module__ == "builtins" else None
        info["tier"] = "runtime"
    else:
        info["tier"] = "runtime"
    return info


def resolve(module_name: str, dotted: str) -> tuple[Any, str, str]:
    """(object, module it lives in, qualname) for a dotted path; stops at non-module objects."""
    obj: Any = importlib.import_module(module_name)
    current_module = module_name
    qual: list[str] = []
    for part in dotted.split(".") if dotted else []:
        if isinstance(obj, types.ModuleType) and not qual:
            if hasattr(obj, part):
                child = getattr(obj, part)
            else:
                try:
                    child = importlib.import_module(f"{current_module}.{part}")
                except ImportError:
                    matches = difflib.get_close_matches(
                        part, [n for n in dir(obj) if not n.startswith("_")], n=3
                    )
                    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
                    raise LookupError(f"{current_module} has no attribute {part!r}{hint}") from None
            if isinstance(child, types.ModuleType):
                obj, current_module = child, f"{current_module}.{part}"
                continue
            obj = child
            qual.append(part)
            continue
        break  # an attribute of a class or a constant: the symbol is what we have
    return obj, current_module, ".".join(qual)


def public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        names = [n for n in names if not isinstance(getattr(module, n, None), types.ModuleType)]
    return sorted(set(str(n) for n in names))


def version_of(library: str, top_module: str) -> str:
    if top_module.split(".")[0] in getattr(sys, "stdlib_module_names", ()):
        return "stdlib " + ".".join(map(str, sys.version_info[:3]))
    try:
        from importlib import metadata

        return metadata.version(library)
    except Exception:
        module = sys.modules.get(top_module)
        return str(getattr(module, "__version__", "unknown"))


def main() -> None:
    request = json.loads(sys.stdin.read())
    module_name = request["module"]
    out: dict[str, Any] = {"symbols": {}, "errors": {}}
    try:
        top = importlib.import_module(module_name)
    except BaseException as exc:
        out["import_error"] = f"cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        print(json.dumps(out))
        return
    out["version"] = version_of(request.get("package") or request["library"], module_name)
    symbols: list[str] = list(request.get("symbols", []))
    if request.get("all"):
        symbols = public_names(top)
        depth = int(request.get("depth", 1))
        for name in [n for n in dir(top) if not n.startswith("_")]:
            child = getattr(top, name, None)
            if (
                isinstance(child, types.ModuleType)
                and depth > 1
                and child.__name__.startswith(module_name + ".")
            ):
                symbols += [f"{name}.{n}" for n in public_names(child)]
    for dotted in symbols:
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
            out["errors"][dotted] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
