"""Which Python interpreter runs the workers (and the introspector) of an environment.

The stdlib-only ``default`` environment with no requirements runs on the host's own
interpreter; any other environment lives in ``.snakebridge/envs/NAME`` (built by
``snakebridge setup``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from snakebridge.config import DEFAULT, Settings

__all__ = ["env_dir", "interpreter_for"]


def env_dir(settings: Settings, env: str) -> Path:
    """Directory of environment ``env``'s venv."""
    return settings.root / ".snakebridge" / "envs" / env


def _needs_venv(settings: Settings, env: str) -> bool:
    if env != DEFAULT:
        return True
    spec = settings.envs.get(DEFAULT)
    libraries = settings.libraries or {}
    pinned = any(
        lib.env == DEFAULT and not lib.is_stdlib and lib.version for lib in libraries.values()
    )
    return bool(spec and (spec.requirements or spec.python)) or pinned


def interpreter_for(settings: Settings, env: str) -> str:
    """Path of the interpreter for ``env``: the host's for a plain default env, else its venv's."""
    venv_python = env_dir(settings, env) / "bin" / "python"
    if not _needs_venv(settings, env) or not venv_python.exists():
        return sys.executable
    return str(venv_python)
