"""What a worker does before its first call: helpers, ``preload`` imports and the ``init`` hook.

The host sends, in ``INIT``: ``helpers`` (``{module: {"source", "filename", "package"}}``,
host-authored modules shipped as source, never pickled), ``preload`` (module names) and
``init`` (``"module:function"``). Helpers are served by an import hook, so they import like
any module (tracebacks name their host file and line). :func:`prepare` runs all of it and
returns the timings the worker reports in ``HELLO``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import linecache
import sys
import time
import traceback
import types
from typing import Any, Dict, List, Optional, cast

_NOTHING = object()
_state: Any = _NOTHING
_init_name: Optional[str] = None


class HelperImportError(ImportError):
    """A helper module failed to import in the worker; the message names its file and line."""


class StartupError(Exception):
    """A ``preload`` module or the ``init`` hook failed; the worker cannot take calls."""


def worker_state() -> Any:
    """What this pool's ``init`` hook returned in this worker (inside helpers only)."""
    if _state is _NOTHING:
        raise LookupError(
            "no worker state: this pool has no `init` hook (set [tool.snakebridge.pools.NAME] "
            'init = "module:function"), or it has not run in this process'
        )
    return _state


def _where(exc: BaseException, filename: str) -> str:
    """``file, line N`` of the deepest frame of ``exc`` inside ``filename``."""
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        return f"{filename}, line {exc.lineno}"
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == filename:
            line = lineno
    return f"{filename}, line {line}" if line is not None else filename


class HelperFinder:
    """Imports helper modules from the source the host sent (and their bare parent packages).

    A meta path finder and loader by protocol (``find_spec``, ``create_module``,
    ``exec_module``); not derived from ``importlib.abc``, whose import costs every worker ~20 ms.
    """

    def __init__(self, helpers: Dict[str, Dict[str, Any]]) -> None:
        self.helpers = helpers
        self.parents = set()
        for name in helpers:
            parts = name.split(".")
            for i in range(1, len(parts)):
                self.parents.add(".".join(parts[:i]))

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        helper = self.helpers.get(fullname)
        if helper is not None:
            return importlib.machinery.ModuleSpec(
                fullname,
                cast(Any, self),
                origin=helper["filename"],
                is_package=bool(helper.get("package")),
            )
        if fullname in self.parents:  # a parent the worker cannot import otherwise: empty
            found = importlib.machinery.PathFinder.find_spec(fullname, path)
            if found is not None:
                return found
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = []
            return spec
        return None

    def create_module(self, spec: Any) -> Optional[types.ModuleType]:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        helper = self.helpers[module.__name__]
        filename, source = str(helper["filename"]), str(helper["source"])
        module.__file__ = filename
        if helper.get("package"):
            module.__path__ = []
        lines = source.splitlines(True)
        linecache.cache[filename] = (len(source), None, lines, filename)
        try:
            code = compile(source, filename, "exec", dont_inherit=True)
            exec(code, module.__dict__)
        except BaseException as exc:
            raise HelperImportError(
                f"helper module {module.__name__!r} failed to import in the worker: "
                f"{_where(exc, filename)}: {type(exc).__name__}: {exc}"
            ) from exc


def _install_shim() -> None:
    """Inside the worker, ``import snakebridge`` gives ``worker_state`` (and nothing else)."""
    shim = types.ModuleType("snakebridge", "snakebridge inside a worker: worker_state() only.")
    shim.worker_state = worker_state  # type: ignore[attr-defined]
    sys.modules["snakebridge"] = shim


def _timed_import(name: str) -> float:
    started = time.perf_counter()
    try:
        importlib.import_module(name)
    except BaseException as exc:
        raise StartupError(f"preload of {name!r} failed: {type(exc).__name__}: {exc}") from exc
    return time.perf_counter() - started


def _run_init(target: str) -> float:
    global _state, _init_name
    started = time.perf_counter()
    module_name, _, function_name = target.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        _state = function()
    except BaseException as exc:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise StartupError(f"init hook {target!r} failed:\n{detail}") from exc
    _init_name = target
    return time.perf_counter() - started


def prepare(options: Dict[str, Any]) -> Dict[str, Any]:
    """Install helpers, import ``preload``, run ``init``; timings (seconds) for ``HELLO``.

    A helper that fails to import is reported (``helper_errors``) and raises again, clearly,
    at its first call; a failing ``preload`` or ``init`` raises :class:`StartupError`.
    """
    helpers: Dict[str, Dict[str, Any]] = options.get("helpers") or {}
    preload: List[str] = list(options.get("preload") or [])
    init: Optional[str] = options.get("init")
    report: Dict[str, Any] = {}
    if helpers or init:
        _install_shim()
    if helpers:
        sys.meta_path.insert(0, HelperFinder(helpers))
    if preload:  # first, so a preloaded helper's import is timed as preload
        report["preload"] = {name: _timed_import(name) for name in preload}
    errors = {}
    for name in sorted(helpers):
        try:
            importlib.import_module(name)
        except HelperImportError as exc:
            errors[name] = str(exc)
            sys.stderr.write(f"snakebridge worker: {exc}\n")
    if errors:
        report["helper_errors"] = errors
    if init:
        report["init"] = _run_init(init)
    return report
