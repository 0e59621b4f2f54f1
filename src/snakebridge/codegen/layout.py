"""The facade package as a whole: which module defines each class, and every module's source.

A remote class gets one facade class per environment (proxies are registered per remote type):
its home is the shortest path the manifest records for it among the libraries of that
environment; their other paths re-export it. Libraries in different environments never share a
class, so ``numpy126 = { module = "numpy", env = "numpy126" }`` beside ``numpy`` gets classes of
its own whose constructors run in its own environment. The type index built here lets a module's
hints name classes defined anywhere in the package for its environment, and lets a facade class
subclass the facade class of a base defined in another module (:func:`foreign_bases`, which
leaves out a base whose import would close an import cycle).

Every module also gets its async facade under ``<package>.aio`` (the same path below it), whose
hints name the async proxy classes; ``aio/__init__.py`` tells the runtime where each remote
type's async proxy class lives, so results are re-classed as it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

from snakebridge.codegen.generator import (
    ModuleSpec,
    header,
    isort_key,
    render_module,
    sanitize,
)
from snakebridge.codegen.source import Call, Seq, quote, statement

__all__ = ["AIO", "TypeIndex", "async_package_init", "foreign_bases", "render_package"]

CLASS_KINDS = ("class", "exception")
AIO = "aio"  # the async facades' subpackage (a library may not have this name)


def _split(path: str) -> tuple[str, str]:
    prefix, _, name = path.rpartition(".")
    return prefix, name


class TypeIndex:
    """Per environment: remote type key → the facade module and name of its facade class
    (``indexes``) and of its async proxy class (``async_indexes``).

    ``scopes`` maps a library to its environment (a library it lacks is in scope "").
    """

    def __init__(
        self,
        package: str,
        libraries: dict[str, dict[str, Any]],
        scopes: Mapping[str, str] | None = None,
    ) -> None:
        self.scope_of = {library: (scopes or {}).get(library, "") for library in libraries}
        # (scope, type key) -> (library, symbol path)
        self.homes: dict[tuple[str, str], tuple[str, str]] = {}
        self.indexes: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        self.async_indexes: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)
        self.key_of: dict[tuple[str, str], str] = {}  # (facade module, name) -> type key
        self.by_value: set[str] = set()
        self.exceptions: set[str] = set()
        for library in sorted(libraries):
            scope = self.scope_of[library]
            for path, record in sorted(libraries[library].get("symbols", {}).items()):
                info = record["info"]
                key = info.get("remote_type")
                if info.get("kind") not in CLASS_KINDS or not key:
                    continue
                if info.get("by_value"):
                    self.by_value.add(key)
                if info.get("kind") == "exception":
                    self.exceptions.add(key)
                current = self.homes.get((scope, key))
                rank = (path.count("."), len(path), path)
                if current is None or rank < (current[1].count("."), len(current[1]), current[1]):
                    self.homes[scope, key] = (library, path)
        for (scope, key), (library, path) in self.homes.items():
            prefix, name = _split(path)
            home = (self.module_of(package, library, prefix), sanitize(name))
            self.indexes[scope][key] = home
            self.key_of[home] = key
            if key in self.exceptions:  # one class for both: the sync facade's
                self.async_indexes[scope][key] = home
            else:
                aio_module = self.module_of(f"{package}.{AIO}", library, prefix)
                self.async_indexes[scope][key] = (aio_module, sanitize(name))

    def index_for(self, library: str) -> dict[str, tuple[str, str]]:
        """The type index the modules of ``library`` see: that of its environment."""
        return self.indexes[self.scope_of.get(library, "")]

    def async_index_for(self, library: str) -> dict[str, tuple[str, str]]:
        """The async proxy classes the async modules of ``library`` see."""
        return self.async_indexes[self.scope_of.get(library, "")]

    @staticmethod
    def module_of(package: str, library: str, prefix: str) -> str:
        parts = [sanitize(p) for p in prefix.split(".")] if prefix else []
        return ".".join([package, library, *parts])

    def is_home(self, library: str, path: str, key: str) -> bool:
        return self.homes.get((self.scope_of.get(library, ""), key)) == (library, path)


def _modules(entry: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    modules: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    modules[""] = {}
    for path, record in entry.get("symbols", {}).items():
        prefix, name = _split(path)
        if record["info"].get("kind") == "module":
            modules[path]
            continue
        modules[prefix][name] = record["info"]
    for prefix in list(modules):
        parts = prefix.split(".") if prefix else []
        for i in range(len(parts)):
            modules[".".join(parts[:i])]
    return modules


def render_package(
    package: str,
    libraries: dict[str, dict[str, Any]],
    version: str,
    only: Iterable[str] | None = None,
    scopes: Mapping[str, str] | None = None,
) -> dict[PurePosixPath, str]:
    """Source of every facade module of ``only`` (default: all libraries), by relative path.

    ``scopes`` maps each library to its environment: classes are shared within one only.
    """
    types = TypeIndex(package, libraries, scopes)
    specs: dict[PurePosixPath, ModuleSpec] = {}
    for library in sorted(libraries):
        entry = libraries[library]
        index = types.index_for(library)
        modules = _modules(entry)
        for prefix in sorted(modules):
            symbols: dict[str, dict[str, Any]] = {}
            reexports: dict[str, tuple[str, str]] = {}
            for name, info in modules[prefix].items():
                key = info.get("remote_type")
                path = f"{prefix}.{name}" if prefix else name
                if (
                    info.get("kind") in CLASS_KINDS
                    and key
                    and not types.is_home(library, path, key)
                ):
                    reexports[name] = index[key]
                    continue
                symbols[name] = info
            children = {m.split(".")[-1] for m in modules if m and m.rpartition(".")[0] == prefix}
            lib_path = f"{library}.{prefix}" if prefix else library
            parts = [sanitize(p) for p in prefix.split(".")] if prefix else []
            specs[PurePosixPath(library, *parts, "__init__.py")] = ModuleSpec(
                version=version,
                library=library,
                resolved=str(entry.get("resolved", "unknown")),
                lib_path=lib_path,
                package=package,
                symbols=symbols,
                children=children,
                reexports=reexports,
                index=index,
                by_value=frozenset(types.by_value),
            )
    foreign_bases(list(specs.values()), types, libraries)
    wanted = set(only) if only is not None else set(libraries)
    out: dict[PurePosixPath, str] = {}
    for where, spec in specs.items():
        if spec.library in wanted:
            out[where] = render_module(spec)
            out[PurePosixPath(AIO, *where.parts)] = render_module(async_spec(spec, types))
    out[PurePosixPath(AIO, "__init__.py")] = async_package_init(types, version)
    return out


def _facade_module(spec: ModuleSpec) -> str:
    return ".".join([spec.package, *map(sanitize, spec.lib_path.split("."))])


class _Imports:
    """What executing each facade module imports, to tell whether a new base-class import
    can fail: a module first runs its base-class imports (``from M import Base``: M must get
    past its own class definitions), then defines its names, then imports its re-exported
    classes and its children. Python runs a package's ``__init__`` before any module in it,
    so importing any facade module first is importing its library's top module first."""

    def __init__(self, specs: list[ModuleSpec]) -> None:
        self.first: dict[str, set[str]] = {_facade_module(s): set() for s in specs}
        self.then: dict[str, list[str]] = {}
        self.roots = sorted(m for m in self.first if m.count(".") == 1)
        for spec in specs:
            here = _facade_module(spec)
            found = sorted(  # in the order the module's tail imports them
                spec.reexports.items(),
                key=lambda r: (r[1][0], isort_key(r[1][1]), isort_key(sanitize(r[0]))),
            )
            names = [m for _, (m, _) in found if m != here]
            children = sorted(spec.children, key=lambda c: isort_key(sanitize(c)))
            names += [f"{here}.{sanitize(c)}" for c in children]
            self.then[here] = names

    def clean(self) -> bool:
        """Whether the package imports without error whichever of its modules comes first."""
        return all(self._runs(root) for root in self.roots)

    def _runs(self, root: str) -> bool:
        state: dict[str, bool] = {}  # module -> whether its names are defined yet

        def load(module: str) -> bool:
            parent = module.rpartition(".")[0]
            if parent in self.first and parent not in state and not load(parent):
                return False
            if module in state or module not in self.first:
                return True
            state[module] = False
            for base_module in sorted(self.first[module]):
                if not load(base_module) or not state.get(base_module, True):
                    return False  # its classes are not defined yet: ImportError
            state[module] = True
            for other in self.then[module]:
                if not load(other):
                    return False
                if other in self.first and not state[other] and other != module:
                    is_child = other.rpartition(".")[0] == module
                    if not is_child:  # `from . import child` takes a partial module
                        return False
            return True

        return load(root)


def foreign_bases(
    specs: list[ModuleSpec], types: TypeIndex, libraries: dict[str, dict[str, Any]]
) -> None:
    """Let each facade class subclass the facade class of its nearest library base, also where
    that class lives in another facade module (scipy's ``norm_gen`` in ``_continuous_distns``
    subclasses ``rv_continuous`` of ``scipy.stats``), unless importing the base's module
    first would meet a module that is still importing (a cycle, e.g. the base's module
    re-exporting a class of the subclass's module): that pair keeps today's base, the
    nearest class of its own module (or none). Fills each spec's ``foreign_bases``."""
    imports = _Imports(specs)
    for spec in sorted(specs, key=_facade_module):
        here = _facade_module(spec)
        local = {str(info.get("remote_type")) for info in spec.symbols.values()}
        for name in sorted(spec.symbols):
            info = spec.symbols[name]
            key = str(info.get("remote_type"))
            if info.get("kind") != "class" or not info.get("remote_type"):
                continue
            for base in info.get("bases") or []:
                if base in local:
                    break  # the base of today: a class of this module
                home = spec.index.get(base)
                if home is None or home[0] == here or base in types.exceptions:
                    continue
                if home[1].startswith("_"):
                    continue  # a private name of another module (as hints treat it)
                if home[0] in imports.first[here] or _try(imports, here, home[0]):
                    library, path = types.homes[types.scope_of[spec.library], base]
                    described = libraries[library]["symbols"][path]["info"]
                    spec.foreign_bases[key] = (base, home[0], home[1], described)
                    break


def _try(imports: _Imports, module: str, base_module: str) -> bool:
    if base_module not in imports.first:
        return False
    imports.first[module].add(base_module)
    if imports.clean():
        return True
    imports.first[module].discard(base_module)
    return False


def async_spec(spec: ModuleSpec, types: TypeIndex) -> ModuleSpec:
    """The async facade of the module ``spec`` describes: its classes as async proxies,
    classes defined elsewhere from their async home, exceptions the sync facade's own."""
    sync_module = TypeIndex.module_of(spec.package, *spec.lib_path.partition(".")[::2])
    symbols: dict[str, dict[str, Any]] = {}
    reexports: dict[str, tuple[str, str]] = {}
    for name, info in spec.symbols.items():
        if info.get("kind") == "exception":
            reexports[name] = (sync_module, sanitize(name))
        else:
            symbols[name] = info
    for name, home in spec.reexports.items():
        key = types.key_of.get(home)
        reexports[name] = types.async_index_for(spec.library)[key] if key else home
    return replace(
        spec,
        package=f"{spec.package}.{AIO}",
        symbols=symbols,
        reexports=reexports,
        index=types.async_index_for(spec.library),
        asynchronous=True,
        foreign_bases={},  # async proxy classes derive from AsyncRef alone
    )


def async_package_init(types: TypeIndex, version: str) -> str:
    """``<package>/aio/__init__.py``: where the async proxy class of each remote type lives."""
    lines = [
        header(version, "snakebridge", version).rstrip("\n"),
        '"""Async facades (``await aio.math.sqrt(2)``), generated by `snakebridge sync`."""',
    ]
    homes = sorted(
        {
            (k, m, n)
            for index in types.async_indexes.values()
            for k, (m, n) in index.items()
            if k not in types.exceptions
        }
    )
    if homes:
        entries = tuple(Seq((quote(k), quote(m), quote(n))) for k, m, n in homes)
        lines += ["", "import snakebridge.facade as _sb", ""]
        lines += statement("", "", Call("_sb.register_async_homes", entries))
    return "\n".join(lines) + "\n"
