"""Find uses of the generated package in a project's source with ``ast`` (no user code runs).

A use is ``(library, dotted symbol, file, line)``. Results are cached per file content hash in
``.snakebridge/cache/scan.json``, so a rescan of an unchanged project reads no source. A use of
the async facades (``<package>.aio.math.sqrt``) is a use of the library (``math.sqrt``): both
facades are generated from one manifest.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from snakebridge import paths as project_paths

__all__ = ["ScanResult", "Use", "scan_paths", "scan_source"]

_SKIP_DIRS = {
    ".git",
    ".snakebridge",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".tox",
    "build",
    "dist",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
}
_CACHE_FORMAT = 2
AIO = "aio"  # codegen.layout.AIO: the async facades' subpackage


@dataclass(frozen=True, order=True)
class Use:
    """One use of a generated symbol: ``library`` and the dotted path used inside it."""

    library: str
    symbol: str
    file: str
    line: int


@dataclass
class ScanResult:
    uses: list[Use]
    errors: list[str]


class _Scope:
    def __init__(self, parent: _Scope | None, bound: set[str]) -> None:
        self.parent, self.bound = parent, bound
        self.aliases: dict[str, tuple[str, str]] = {}

    def lookup(self, name: str) -> tuple[str, str] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.aliases:
                return scope.aliases[name]
            if name in scope.bound:
                return None
            scope = scope.parent
        return None


def _bound_names(node: ast.AST) -> set[str]:
    """Names a function, lambda or comprehension binds locally (its shadowing set)."""
    names: set[str] = set()
    args = getattr(node, "args", None)
    if isinstance(args, ast.arguments):
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            names.add(arg.arg)
        for star in (args.vararg, args.kwarg):
            if star is not None:
                names.add(star.arg)
    body = getattr(node, "body", [])
    stack = list(body) if isinstance(body, list) else [body]
    if isinstance(
        node, ast.comprehension | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
    ):
        stack = [g.target for g in getattr(node, "generators", [])]
    while stack:
        child = stack.pop()
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            names.add(child.id)
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(child.name)
            continue
        if isinstance(
            child, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp
        ):
            continue
        stack.extend(ast.iter_child_nodes(child))
    return names


class _Visitor(ast.NodeVisitor):
    def __init__(self, package: str, file: str) -> None:
        self.package, self.file = package, file
        self.scope = _Scope(None, set())
        self.uses: list[Use] = []
        self.module_imported = False

    def _add(self, library: str, symbol: str, line: int) -> None:
        self.uses.append(Use(library, symbol, self.file, line))

    # imports bind aliases in the current scope
    def _parts(self, module: str) -> list[str]:
        """``module``'s dotted parts, ``<package>.aio`` read as the package itself."""
        parts = module.split(".")
        if len(parts) > 1 and parts[0] == self.package and parts[1] == AIO:
            del parts[1]
        return parts

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = self._parts(alias.name)
            if parts[0] != self.package or len(parts) < 2:
                if parts == [self.package]:
                    self.scope.aliases[alias.asname or self.package] = ("", "")
                continue
            library, rest = parts[1], ".".join(parts[2:])
            if alias.asname:
                self.scope.aliases[alias.asname] = (library, rest)
            else:
                self.scope.aliases.setdefault(self.package, ("", ""))
            self._add(library, rest, node.lineno) if rest else None

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        parts = self._parts(node.module)
        if parts[0] != self.package:
            return
        for alias in node.names:
            local = alias.asname or alias.name
            if alias.name == "*":  # every public name of that module: a "*" use
                if len(parts) > 1:
                    self._add(parts[1], ".".join([*parts[2:], "*"]), node.lineno)
                continue
            if len(parts) == 1:
                self.scope.aliases[local] = ("", "") if alias.name == AIO else (alias.name, "")
            else:
                dotted = ".".join([*parts[2:], alias.name])
                self.scope.aliases[local] = (parts[1], dotted)
                self._add(parts[1], dotted, node.lineno)

    # scopes
    def _scoped(self, node: ast.AST) -> None:
        outer = self.scope
        self.scope = _Scope(outer, _bound_names(node))
        self.generic_visit(node)
        self.scope = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped
    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _scoped

    # uses
    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            chain.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name):
            target = self.scope.lookup(current.id)
            if target is not None:
                chain.reverse()
                library, prefix = target
                if not library:  # the package itself: G.lib.symbol (or G.aio.lib.symbol)
                    if chain[:1] == [AIO]:
                        chain = chain[1:]
                    if not chain:
                        return
                    library, chain = chain[0], chain[1:]
                dotted = ".".join([p for p in (prefix, *chain) if p])
                self._add(library, dotted, node.lineno)
                return
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        target = self.scope.lookup(node.id)
        if target is not None and target[0] and isinstance(node.ctx, ast.Load):
            self._add(target[0], target[1], node.lineno)


def scan_source(source: str, file: str, package: str) -> list[Use]:
    """Uses of ``package`` in one file's source (SyntaxError propagates)."""
    tree = ast.parse(source, filename=file)
    visitor = _Visitor(package, file)
    visitor.visit(tree)
    return sorted(set(visitor.uses))


def _python_files(paths: Iterable[Path], skip: Path | None) -> Iterator[Path]:
    for root in paths:
        if root.is_file() and root.suffix == ".py":
            yield root
            continue
        for directory, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
            here = Path(directory)
            if skip is not None and (here == skip or skip in here.parents):
                dirs[:] = []
                continue
            for name in sorted(files):
                if name.endswith(".py"):
                    yield here / name


def scan_paths(
    paths: Iterable[Path],
    package: str,
    root: Path,
    cache_file: Path | None = None,
    skip: Path | None = None,
) -> ScanResult:
    """Scan every ``.py`` file under ``paths``; a syntax error is reported, not fatal."""
    cache: dict[str, list[list[object]]] = {}
    if cache_file is not None:
        try:
            data = json.loads(cache_file.read_text())
            if data.get("format") == _CACHE_FORMAT and data.get("package") == package:
                cache = data["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            cache = {}
    fresh: dict[str, list[list[object]]] = {}
    uses: list[Use] = []
    errors: list[str] = []
    for path in _python_files(paths, skip):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            errors.append(f"{path}: cannot read ({exc.strerror})")
            continue
        relative = os.path.relpath(path, root)
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        key = f"{relative}:{digest}"
        found = cache.get(key)
        if found is None:
            try:
                found_uses = scan_source(raw.decode("utf-8", errors="replace"), relative, package)
            except SyntaxError as exc:
                errors.append(f"{relative}:{exc.lineno}: syntax error: {exc.msg}")
                continue
            found = [[u.library, u.symbol, u.line] for u in found_uses]
        fresh[key] = found
        uses.extend(Use(str(lib), str(sym), relative, int(str(line))) for lib, sym, line in found)
    if cache_file is not None and fresh != cache:
        cached = {"format": _CACHE_FORMAT, "package": package, "files": fresh}
        project_paths.atomic_write(cache_file, json.dumps(cached, sort_keys=True))
    return ScanResult(sorted(set(uses)), errors)
