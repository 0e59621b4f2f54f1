"""The allowlist as the worker enforces it (the threat model is in docs/security.md).

With a config table the host ships the allowed libraries in the INIT frame
(``{"allowlist": {"json": {"allow_private": False}, ...}}``); without one there is no
boundary and everything importable is reachable. With a boundary:

- a call names a module inside an allowed library's package, and a symbol path walks only
  through modules inside an allowed package (``json.codecs`` is ``codecs``: refused);
- names starting with ``_`` are refused in symbol paths and in attribute access on Refs,
  except the informational names in :data:`INFO_NAMES` and the protocol names in
  :data:`PROTOCOL_NAMES`, unless the owning library sets ``allow_private``;
- modules, functions and classes of other packages refuse attribute access (informational
  and protocol names aside), and so do the worker's own objects (host callbacks).
"""

from __future__ import annotations

import sys
import types
from typing import Any, Dict, Optional

__all__ = ["INFO_NAMES", "PROTOCOL_NAMES", "NameRefused", "NotAllowed", "Policy"]

INFO_NAMES = frozenset(
    {
        "__all__",
        "__doc__",
        "__file__",
        "__module__",
        "__name__",
        "__qualname__",
        "__text_signature__",
        "__version__",
    }
)
"""Informational dunders readable on anything: strings and lists of strings."""

PROTOCOL_NAMES = frozenset(
    {
        "__aenter__",
        "__aexit__",
        "__aiter__",
        "__anext__",
        "__array__",
        "__array_interface__",
        "__array_priority__",
        "__array_struct__",
        "__bool__",
        "__call__",
        "__complex__",
        "__contains__",
        "__delitem__",
        "__enter__",
        "__exit__",
        "__float__",
        "__format__",
        "__fspath__",
        "__getitem__",
        "__hash__",
        "__index__",
        "__int__",
        "__iter__",
        "__len__",
        "__length_hint__",
        "__next__",
        "__repr__",
        "__setitem__",
        "__str__",
    }
)
"""Dunders of the protocols Refs forward (context managers, iteration, containers, arrays)."""

OPERATOR_FUNCTIONS = frozenset(
    {
        "abs",
        "add",
        "and_",
        "concat",
        "contains",
        "countOf",
        "delitem",
        "eq",
        "floordiv",
        "ge",
        "getitem",
        "gt",
        "iadd",
        "iand",
        "iconcat",
        "ifloordiv",
        "ilshift",
        "imatmul",
        "imod",
        "imul",
        "index",
        "indexOf",
        "inv",
        "invert",
        "ior",
        "ipow",
        "irshift",
        "is_",
        "is_not",
        "isub",
        "itruediv",
        "ixor",
        "le",
        "length_hint",
        "lshift",
        "lt",
        "matmul",
        "mod",
        "mul",
        "ne",
        "neg",
        "not_",
        "or_",
        "pos",
        "pow",
        "rshift",
        "setitem",
        "sub",
        "truediv",
        "truth",
        "xor",
    }
)
"""The ``operator`` functions a Ref operation may name (never attrgetter or methodcaller)."""

_DEFINITIONS = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
)
_FENCED = (*_DEFINITIONS, types.ModuleType)  # objects of other packages refuse attributes
_INTERNAL = "snakebridge_worker"


class NotAllowed(Exception):
    """A library, module or object outside the allowlist (the host raises LibraryNotAllowed)."""


class NameRefused(Exception):
    """A private name the allowlist refuses (the host raises SymbolNotFound, an AttributeError)."""


def _inside(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


class Policy:
    """The allowed libraries (module roots) and which of them opt out of the private rule."""

    def __init__(self, libraries: Optional[Dict[str, bool]]) -> None:
        self.libraries = libraries  # None: no boundary (no config table)

    @classmethod
    def from_options(cls, spec: Any) -> Policy:
        """From the INIT entry ``{root: {"allow_private": bool}}``; None means no boundary."""
        if spec is None:
            return cls(None)
        if not isinstance(spec, dict):
            raise ValueError(f"allowlist must be a map, not {type(spec).__name__}")
        libraries: Dict[str, bool] = {}
        for root, options in spec.items():
            if not isinstance(root, str) or not root:
                raise ValueError(f"allowlist entry {root!r} is not a module name")
            private = isinstance(options, dict) and options.get("allow_private") is True
            libraries[root] = private
        return cls(libraries)

    @property
    def open(self) -> bool:
        return self.libraries is None

    def library_of(self, module_name: Any) -> Optional[str]:
        """The allowed root whose package holds module ``module_name`` (longest match)."""
        if self.libraries is None or not isinstance(module_name, str):
            return None
        found = None
        for root in self.libraries:
            if _inside(module_name, root) and (found is None or len(root) > len(found)):
                found = root
        return found

    def module_library(self, module: types.ModuleType) -> Optional[str]:
        """The allowed root of a module object: by its name, or by a name it is registered
        under in ``sys.modules`` (``os.path`` is ``posixpath``)."""
        root = self.library_of(getattr(module, "__name__", None))
        if root is not None:
            return root
        for name, registered in list(sys.modules.items()):
            if registered is module:
                root = self.library_of(name)
                if root is not None:
                    return root
        return None

    def owner(self, obj: Any) -> Optional[str]:
        """The allowed root ``obj`` belongs to (see :func:`_home`), or None."""
        if isinstance(obj, types.ModuleType):
            return self.module_library(obj)
        return self.library_of(_home(obj))

    def check_module_name(self, module_name: str) -> Optional[str]:
        """The allowed root of the module a call names; NotAllowed / NameRefused otherwise."""
        if self.libraries is None:
            return None
        root = self.library_of(module_name)
        if root is None:
            raise NotAllowed(
                f"module {module_name!r} is outside the allowed libraries "
                f"({', '.join(sorted(self.libraries))})"
            )
        if not self.libraries[root]:
            for part in module_name[len(root) :].split("."):
                if part.startswith("_"):
                    raise NameRefused(self._private(part, module_name, root))
        return root

    def check_reached(self, obj: Any, path: str) -> None:
        """A symbol walk may pass only through modules of allowed packages."""
        if self.libraries is None or not isinstance(obj, types.ModuleType):
            return
        if self.module_library(obj) is None:
            raise NotAllowed(
                f"{path} is module {obj.__name__!r}, outside the allowed libraries; "
                f"list it in [tool.snakebridge.libraries] to call it"
            )

    def check_attribute(self, subject: Any, name: Any, write: bool = False) -> None:
        """May attribute ``name`` of ``subject`` be read (or, with ``write``, set/deleted)?"""
        if self.libraries is None:
            return
        if not isinstance(name, str):
            raise NameRefused(f"attribute names are strings, not {type(name).__name__}")
        home = _home(subject)
        if isinstance(home, str) and _inside(home, _INTERNAL):
            raise NotAllowed(f"{name!r} of a snakebridge worker object is not reachable")
        if not write and (name in INFO_NAMES or name in PROTOCOL_NAMES):
            return
        owner = self.owner(subject)
        if owner is None and isinstance(subject, _FENCED):
            raise NotAllowed(
                f"{_describe(subject)} belongs to no allowed library: its attributes "
                f"(here {name!r}) are not reachable"
            )
        if name.startswith("_") and not (owner is not None and self.libraries[owner]):
            raise NameRefused(self._private(name, _describe(subject), owner))

    def check_operator(self, name: Any) -> None:
        """Ref operations name operator functions from a fixed set."""
        if name not in OPERATOR_FUNCTIONS:
            raise NameRefused(f"operator has no Ref operation {name!r}")

    @staticmethod
    def _private(name: str, where: str, owner: Optional[str]) -> str:
        fix = (
            f"set allow_private = true on library {owner!r} to reach it"
            if owner is not None
            else "private names are reachable only on objects of an allowed library"
        )
        return (
            f"{name!r} (of {where}) is private: the allowlist refuses names starting with "
            f"'_'; {fix}"
        )


def _home(obj: Any) -> Optional[str]:
    """The module an object comes from: a module's own name, a definition's (function,
    class, method, descriptor) ``__module__``, an instance's class's ``__module__``."""
    if isinstance(obj, types.ModuleType):
        home = getattr(obj, "__name__", None)
    elif isinstance(obj, types.MethodType):
        home = getattr(obj.__func__, "__module__", None)
    elif isinstance(obj, _DEFINITIONS):
        home = getattr(obj, "__module__", None)
    else:
        home = getattr(type(obj), "__module__", None)
    return home if isinstance(home, str) else None


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__!r}"
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, _DEFINITIONS):
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", type(obj).__name__)
        return f"{module}.{qualname}" if module else str(qualname)
    cls = type(obj)
    return f"a {cls.__module__}.{cls.__qualname__}"
