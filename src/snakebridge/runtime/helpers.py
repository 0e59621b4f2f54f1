"""Helpers and per-worker state, host side: what a pool's workers get in ``INIT``.

``helpers = ["myproj.sb_helpers"]`` names host-authored modules. Their source is found on the
host (project root, ``src/``, then ``sys.path``; never imported there) and shipped to every
worker in ``INIT``, where an import hook serves it, so ``call("myproj.sb_helpers", "f")`` runs a
whole loop of library calls in one round trip. ``[pools.NAME] preload`` and ``init`` ride
along; the worker reports their timings in ``HELLO`` (``startup``), which the pool puts in
its ``runtime.worker`` start event and in ``status()``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from snakebridge.config import Settings
from snakebridge.errors import ConfigError, SnakeBridgeError

__all__ = [
    "HelperSource",
    "NotInWorker",
    "find_helper",
    "init_options",
    "worker_state",
]


class NotInWorker(SnakeBridgeError, RuntimeError):
    """``worker_state()`` was called in the host; it only has a value inside a worker."""


class HelperSource:
    """One helper module's source as found on the host."""

    __slots__ = ("filename", "name", "package", "source")

    def __init__(self, name: str, filename: Path, package: bool) -> None:
        self.name, self.filename, self.package = name, filename, package
        self.source = filename.read_text(encoding="utf-8")

    @property
    def digest(self) -> str:
        """sha256 of the source (what generated facades record)."""
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    def wire(self) -> dict[str, Any]:
        return {"source": self.source, "filename": str(self.filename), "package": self.package}


def _search_roots(settings: Settings) -> list[Path]:
    roots = [settings.root, settings.root / "src"]
    roots += [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]
    seen: list[Path] = []
    for root in roots:
        resolved = root.resolve()
        if resolved not in seen:
            seen.append(resolved)
    return seen


def find_helper(settings: Settings, name: str) -> HelperSource:
    """The source of helper module ``name``; ConfigError naming the places searched."""
    relative = Path(*name.split("."))
    roots = _search_roots(settings)
    for root in roots:
        module = root / relative.with_suffix(".py")
        if module.is_file():
            return HelperSource(name, module, package=False)
        package = root / relative / "__init__.py"
        if package.is_file():
            return HelperSource(name, package, package=True)
    searched = ", ".join(str(root) for root in roots[:4])
    raise ConfigError(
        f"helper module {name!r} not found (looked for {relative}.py and "
        f"{relative}/__init__.py under {searched}, and the rest of sys.path)",
        key="tool.snakebridge.helpers",
        path=settings.path,
    )


def init_options(settings: Settings, pool: str) -> dict[str, Any]:
    """The INIT options a worker of ``pool`` needs: helper sources, preload, init."""
    spec = settings.pool_spec(pool)
    options: dict[str, Any] = {}
    if settings.helpers:
        options["helpers"] = {
            name: find_helper(settings, name).wire() for name in sorted(settings.helpers)
        }
        allowlist = settings.allowlist()
        if allowlist is not None:  # helpers are callable like the libraries listed
            helpers = {name: {"allow_private": False} for name in settings.helpers}
            options["allowlist"] = {**allowlist, **helpers}
    if spec.preload:
        options["preload"] = list(spec.preload)
    if spec.init:
        options["init"] = spec.init
    return options


def worker_state() -> Any:
    """What the pool's ``init`` hook returned in this worker; only inside a helper.

    In the worker, ``import snakebridge`` gives a small module whose ``worker_state`` returns
    it; in the host there is no worker state and this raises :class:`NotInWorker`.
    """
    raise NotInWorker(
        "snakebridge.worker_state() has a value only inside a helper running in a worker "
        "(the pool's `init` hook return value); call the helper through snakebridge.call"
    )
