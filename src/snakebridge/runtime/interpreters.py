"""Which Python interpreter runs the workers (and the introspector) of an environment.

The stdlib-only ``default`` environment runs on the host's own interpreter; an environment
with pinned libraries, requirements or its own ``python`` lives in ``.snakebridge/envs/NAME``,
built by ``snakebridge setup``. The check here is cheap (the lock, the config and one marker
file; no subprocess), so it runs on every pool start. This module is also where the config
turns into an environment's requested requirements, so setup and this check cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from snakebridge import paths
from snakebridge.config import Settings
from snakebridge.errors import EnvironmentMissing

__all__ = [
    "LOCK_NAME",
    "MARKER",
    "WORKER_REQUIREMENTS",
    "env_digest",
    "env_dir",
    "interpreter_for",
    "needs_venv",
    "requested_python",
    "requested_requirements",
    "venv_python",
]

MARKER = ".snakebridge-env.json"
LOCK_NAME = "snakebridge.lock"
WORKER_REQUIREMENTS = ("msgpack>=1.0.5",)  # the worker's codec; its code travels on sys.path
_OPERATOR = re.compile(r"^\s*(==|>=|<=|~=|!=|<|>|===)")


def env_dir(settings: Settings, env: str) -> Path:
    """Directory of environment ``env``'s venv."""
    return paths.env_dir(settings.root, env)


def venv_python(directory: Path) -> Path:
    """The interpreter inside the venv at ``directory``."""
    return directory / "bin" / "python"


def env_digest(entry: dict[str, Any]) -> str:
    """Identity of one locked environment (what its marker file must match)."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def _requirement(package: str, version: str) -> str:
    version = version.strip()
    if version in ("", "*"):
        return package
    return f"{package}{version}" if _OPERATOR.match(version) else f"{package}=={version}"


def requested_requirements(settings: Settings, env: str) -> tuple[str, ...]:
    """Sorted requirements of ``env``: its pinned libraries, extra requirements, the worker's."""
    found = {
        _requirement(lib.package or key, str(lib.version))
        for key, lib in (settings.libraries or {}).items()
        if lib.env == env and not lib.is_stdlib and lib.version
    }
    spec = settings.envs.get(env)
    found.update(spec.requirements if spec else ())
    found.update(WORKER_REQUIREMENTS)
    return tuple(sorted(found))


def requested_python(settings: Settings, env: str) -> str:
    """The ``python`` the config asks for in ``env`` ("" means the host's interpreter)."""
    spec = settings.envs.get(env)
    return (spec.python or "") if spec else ""


def needs_venv(settings: Settings, env: str) -> bool:
    """True when ``env`` holds pinned libraries, requirements or its own interpreter."""
    spec = settings.envs.get(env)
    if spec is not None and (spec.requirements or spec.python):
        return True
    libraries = settings.libraries or {}
    return any(lib.env == env and not lib.is_stdlib and lib.version for lib in libraries.values())


def locked_entry(settings: Settings, env: str) -> dict[str, Any] | None:
    """The lock's entry for ``env`` (None without a lock or entry); the runtime's lock reader."""
    try:
        entry = json.loads((settings.root / LOCK_NAME).read_text())["envs"][env]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return entry if isinstance(entry, dict) else None


def interpreter_for(settings: Settings, env: str) -> str:
    """The interpreter for ``env``; EnvironmentMissing (naming the fix) if it is not usable.

    Usable means: built, built from the entry ``snakebridge.lock`` holds, and that entry was
    locked for what the config asks now (requirements and ``python``).
    """
    if not needs_venv(settings, env):
        return sys.executable
    directory = env_dir(settings, env)
    entry = locked_entry(settings, env)
    if entry is None:
        raise EnvironmentMissing(
            f"environment {env!r} is not in {LOCK_NAME}; run `snakebridge setup` to build it"
        )
    if entry.get("requested") != list(requested_requirements(settings, env)) or entry.get(
        "python_request", ""
    ) != requested_python(settings, env):
        raise EnvironmentMissing(
            f"environment {env!r} is stale: the config changed since {LOCK_NAME} was written; "
            "run `snakebridge setup`"
        )
    try:
        built = json.loads((directory / MARKER).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        built = None
    python = venv_python(directory)
    if not python.exists() or built is None:
        raise EnvironmentMissing(
            f"environment {env!r} is not built ({directory}); run `snakebridge setup`"
        )
    if built != env_digest(entry):
        raise EnvironmentMissing(
            f"environment {env!r} does not match {LOCK_NAME}; run `snakebridge setup`"
        )
    return str(python)
