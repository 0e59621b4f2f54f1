"""Which Python interpreter runs the workers (and the introspector) of an environment.

The stdlib-only ``default`` environment runs on the host's own interpreter; an environment
with pinned libraries or requirements lives in ``.snakebridge/envs/NAME``, built by
``snakebridge setup``. This check is cheap (two small files), so it runs on every pool start.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from snakebridge.config import Settings
from snakebridge.runtime.errors import EnvironmentMissing

__all__ = ["MARKER", "env_digest", "env_dir", "interpreter_for", "needs_venv", "venv_python"]

MARKER = ".snakebridge-env.json"
LOCK_NAME = "snakebridge.lock"


def env_dir(settings: Settings, env: str) -> Path:
    """Directory of environment ``env``'s venv."""
    return settings.root / ".snakebridge" / "envs" / env


def venv_python(directory: Path) -> Path:
    return directory / "bin" / "python"


def env_digest(entry: dict[str, Any]) -> str:
    """Identity of one locked environment (what its marker file must match)."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def needs_venv(settings: Settings, env: str) -> bool:
    """True when ``env`` holds pinned libraries or requirements (so it needs a venv)."""
    spec = settings.envs.get(env)
    if spec is not None and (spec.requirements or spec.python):
        return True
    libraries = settings.libraries or {}
    return any(lib.env == env and not lib.is_stdlib and lib.version for lib in libraries.values())


def _locked_digest(settings: Settings, env: str) -> str | None:
    try:
        lock = json.loads((settings.root / LOCK_NAME).read_text())
        return env_digest(lock["envs"][env])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def interpreter_for(settings: Settings, env: str) -> str:
    """The interpreter for ``env``; EnvironmentMissing (naming the fix) if it is not built."""
    if not needs_venv(settings, env):
        return sys.executable
    directory = env_dir(settings, env)
    python = venv_python(directory)
    expected = _locked_digest(settings, env)
    try:
        built = json.loads((directory / MARKER).read_text()).get("digest")
    except (OSError, ValueError, AttributeError):
        built = None
    if not python.exists() or built is None:
        raise EnvironmentMissing(
            f"environment {env!r} is not built ({directory}); run `snakebridge setup`"
        )
    if expected is None or built != expected:
        raise EnvironmentMissing(
            f"environment {env!r} does not match {LOCK_NAME}; run `snakebridge setup`"
        )
    return str(python)
