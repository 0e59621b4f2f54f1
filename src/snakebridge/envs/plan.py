"""What each environment should hold, read from the settings (no I/O beyond the interpreter)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snakebridge import paths
from snakebridge.config import Settings
from snakebridge.envs.uvtool import EnvSetupError, run_uv
from snakebridge.envs.variants import variant_indexes
from snakebridge.runtime.interpreters import (
    WORKER_REQUIREMENTS,
    needs_venv,
    requested_python,
    requested_requirements,
)

__all__ = [
    "WORKER_REQUIREMENTS",
    "EnvPlan",
    "find_interpreter",
    "interpreter_facts",
    "interpreter_sha256",
    "plan_envs",
]

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_PROBE = """
import hashlib, json, os, platform, sys, sysconfig
exe = os.path.realpath(sys.executable)
with open(exe, "rb") as fh:
    digest = hashlib.sha256(fh.read()).hexdigest()
gil = getattr(sys, "_is_gil_enabled", None)
free = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
short = {"cpython": "cp", "pypy": "pp"}.get(sys.implementation.name, sys.implementation.name)
plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
print(json.dumps({
    "version": platform.python_version(),
    "implementation": sys.implementation.name,
    "platform": sysconfig.get_platform(),
    "executable": exe,
    "sha256": digest,
    "tag": f"{short}{sys.version_info[0]}{sys.version_info[1]}{'t' if free else ''}-{plat}",
    "free_threading": free,
    "gil_enabled": gil() if gil else True,
}))
"""


@dataclass(frozen=True)
class EnvPlan:
    """One environment: its interpreter and the requirements it must satisfy."""

    name: str
    python: str  # the interpreter found for python_request
    python_request: str  # what the config asks for ("" = the host's interpreter)
    requirements: tuple[str, ...]
    indexes: tuple[str, ...]
    env_vars: dict[str, str]


def _host_matches(request: str) -> bool:
    """True when the host interpreter satisfies a plain ``X.Y`` or ``X.Y.Z`` request."""
    match = _VERSION.match(request)
    if match is None or sys.implementation.name != "cpython":
        return False
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # "3.13" asks for the GIL build
        return False
    wanted = tuple(int(part) for part in match.groups() if part is not None)
    return tuple(sys.version_info[: len(wanted)]) == wanted


def _uv_find(request: str, cache: Path, fresh: bool) -> str:
    """``uv python find REQUEST``, remembered in ``cache`` while the binary is unchanged."""
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    hit = known.get(request) if isinstance(known, dict) else None
    if not fresh and isinstance(hit, dict):
        try:
            stat = os.stat(hit["path"])
            if [stat.st_size, stat.st_mtime_ns] == hit["stat"]:
                return str(hit["path"])
        except (OSError, KeyError, TypeError):
            pass
    try:
        found = run_uv(["python", "find", request]).strip()
    except EnvSetupError as exc:
        raise EnvSetupError(
            f"no Python {request} found on this machine ({exc}); install it or point `python` "
            "at an interpreter path, then rerun `snakebridge setup`"
        ) from None
    stat = os.stat(found)
    known = known if isinstance(known, dict) else {}
    known[request] = {"path": found, "stat": [stat.st_size, stat.st_mtime_ns]}
    with contextlib.suppress(OSError):  # a read-only project still works, only slower
        paths.atomic_write(cache, json.dumps(known, sort_keys=True, indent=1) + "\n")
    return found


def find_interpreter(request: str, root: Path, fresh: bool = False) -> str:
    """The interpreter for ``python = REQUEST``: a path, a version, or "" for the host's.

    A plain version the host satisfies is the host (no subprocess); other versions are found
    by ``uv python find`` (never downloaded), cached under ``.snakebridge/envs`` unless
    ``fresh``.
    """
    if not request or _host_matches(request):
        return sys.executable
    if "/" in request or request.startswith("."):
        path = (root / request).expanduser()
        if not path.exists():
            raise EnvSetupError(
                f"interpreter {path} does not exist; fix `python` in the environment's config"
            )
        return str(path)
    return _uv_find(request, paths.interpreters_cache(root), fresh)


def interpreter_sha256(python: str) -> str:
    """sha256 of the interpreter binary behind ``python`` (symlinks resolved), in-process."""
    digest = hashlib.sha256()
    with open(os.path.realpath(python), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def interpreter_facts(python: str) -> dict[str, Any]:
    """Version, implementation, platform, binary hash and GIL facts of an interpreter."""
    try:
        done = subprocess.run(
            [python, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvSetupError(f"cannot run {python}: {exc}") from None
    if done.returncode != 0:
        raise EnvSetupError(f"cannot run {python}: {done.stderr.strip()[-500:]}")
    facts: dict[str, Any] = json.loads(done.stdout)
    return facts


def plan_envs(
    settings: Settings, accelerator: str | None = None, fresh: bool = False
) -> dict[str, EnvPlan]:
    """Every environment that needs a venv, with its sorted requirements and interpreter.

    ``fresh`` looks interpreters up again instead of trusting the cache.
    """
    names = {lib.env for lib in (settings.libraries or {}).values()} | set(settings.envs)
    plans = {}
    for name in sorted(names):
        if not needs_venv(settings, name):
            continue
        spec = settings.envs.get(name)
        plans[name] = EnvPlan(
            name=name,
            python=find_interpreter(requested_python(settings, name), settings.root, fresh),
            python_request=requested_python(settings, name),
            requirements=requested_requirements(settings, name),
            indexes=variant_indexes(settings, name, accelerator),
            env_vars=dict(spec.env_vars) if spec else {},
        )
    return plans
