"""`snakebridge doctor`: one report on the host, uv, every environment and the accelerators.

Each line is OK, WARN or FAIL; a line that is not OK carries the command or edit that fixes it.
Nothing is changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snakebridge import paths
from snakebridge.config import Settings
from snakebridge.envs.lock import Lock
from snakebridge.envs.plan import EnvPlan, interpreter_facts, plan_envs
from snakebridge.envs.uvtool import EnvSetupError, run_uv, uv_binary, uv_version
from snakebridge.envs.variants import detect_accelerator
from snakebridge.envs.verify import drifts
from snakebridge.runtime.interpreters import env_dir, needs_venv, venv_python

__all__ = ["Line", "diagnose", "library_code"]

_SETUP = "snakebridge setup"


@dataclass(frozen=True)
class Line:
    """One finding: ``status`` is OK, WARN or FAIL; ``fix`` says what to do about it."""

    status: str
    text: str
    fix: str = ""

    def render(self) -> str:
        """``STATUS text`` and, when there is one, the fix on the next line."""
        return f"{self.status:4s} {self.text}" + (f"\n     fix: {self.fix}" if self.fix else "")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _threading(free_threading: bool, gil_enabled: bool) -> str:
    build = "free-threading build" if free_threading else "GIL build"
    return build + (", GIL enabled" if gil_enabled else ", GIL disabled")


def _host() -> list[Line]:
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    free = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    lines = [
        Line(
            "OK",
            f"host Python {platform.python_version()} ({sys.executable}; {_threading(free, gil)})",
        )
    ]
    try:
        lines.append(Line("OK", f"{uv_version()} ({uv_binary()})"))
    except EnvSetupError as exc:
        lines.append(Line("FAIL", f"uv unusable: {exc}", "pip install --force-reinstall uv"))
        return lines
    found = []
    for request in ("3.14t", "3.13t"):
        try:
            found.append(run_uv(["python", "find", request]).strip())
        except EnvSetupError:
            continue
    if found:
        lines.append(Line("OK", f"free-threaded CPython available: {found[0]}"))
    else:
        lines.append(
            Line(
                "WARN",
                "no free-threaded CPython installed (only needed for GIL-free thread pools)",
                'uv python install 3.13t, then python = "3.13t" in [tool.snakebridge.envs.NAME]',
            )
        )
    return lines


def _accelerator(settings: Settings) -> tuple[str, Line]:
    kind, description = detect_accelerator()
    wants_gpu = any(
        choice == "auto" or choice.startswith("cu")
        for env in settings.envs.values()
        for choice in env.variants.values()
    )
    if kind != "cpu" or not wants_gpu:
        return kind, Line("OK", f"accelerator: {description}")
    return kind, Line(
        "WARN",
        f"accelerator: {description}; wheel variants fall back to CPU builds",
        "install the NVIDIA driver, or choose a cpu variant in [tool.snakebridge.envs.NAME]",
    )


def _env(settings: Settings, plan: EnvPlan, lock: Lock | None, problems: list[str]) -> list[Line]:
    name = plan.name
    directory = env_dir(settings, name)
    mine = [p for p in problems if p.startswith(f"env {name}:")]
    if not venv_python(directory).exists():
        return [Line("FAIL", p, _SETUP) for p in mine]
    try:
        facts = interpreter_facts(str(venv_python(directory)))
    except EnvSetupError as exc:
        return [Line("FAIL", f"env {name}: its interpreter does not run: {exc}", _SETUP)]
    threading = _threading(facts["free_threading"], facts["gil_enabled"])
    lines = [
        Line(
            "OK",
            f"env {name}: Python {facts['version']} ({facts['implementation']}, "
            f"{threading}) at {directory}",
        )
    ]
    lines += [Line("FAIL", problem, _SETUP) for problem in mine]
    lines += _thread_pools(settings, name, bool(facts["gil_enabled"]), str(venv_python(directory)))
    if not mine and lock is not None:
        count = len(lock.envs[name]["packages"])
        lines.append(Line("OK", f"env {name}: matches snakebridge.lock ({count} packages)"))
    variants = settings.envs[name].variants if name in settings.envs else {}
    if variants:
        chosen = ", ".join(f"{package}={choice}" for package, choice in sorted(variants.items()))
        lines.append(Line("OK", f"env {name}: wheel variants {chosen} → {', '.join(plan.indexes)}"))
    return lines


_PURITY_PROBE = r"""
import importlib.machinery, importlib.util, json, os, sys

EXT = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def native(spec):
    return spec is not None and (spec.origin == "built-in" or (spec.origin or "").endswith(EXT))


def kind(top):
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return "missing"
    if spec is None:
        return "missing"
    if native(spec):
        return "native"
    for location in spec.submodule_search_locations or ():
        for _, _, files in os.walk(location):
            if any(name.endswith(EXT) for name in files):
                return "native"
    if not top.startswith("_"):
        try:
            if native(importlib.util.find_spec("_" + top)):  # hashlib -> _hashlib, json -> _json
                return "native"
        except (ImportError, ValueError):
            pass
    return "pure"


print(json.dumps({top: kind(top) for top in sys.argv[1:]}))
"""


def library_code(python: str | None, modules: list[str]) -> dict[str, str]:
    """scale (#15): ``"native"``, ``"pure"`` or ``"missing"`` per top-level module, as the
    interpreter ``python`` (None: this one) finds it, without importing it.

    Native: the module is an extension or built-in, its package holds an extension module
    anywhere below it, or it has a C accelerator named ``_<module>`` (the stdlib's way:
    hashlib/_hashlib). Pure: only Python source, so under a GIL its calls run one at a time.
    """
    tops = sorted({module.split(".")[0] for module in modules})
    if not tops:
        return {}
    if python is None:
        namespace: dict[str, Any] = {"__name__": "_snakebridge_probe"}
        argv, sys.argv = sys.argv, ["probe", *tops]
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                exec(compile(_PURITY_PROBE, "<purity probe>", "exec"), namespace)
        finally:
            sys.argv = argv
        text = out.getvalue()
    else:
        try:
            done = subprocess.run(
                [python, "-I", "-c", _PURITY_PROBE, *tops],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if done.returncode != 0:
            return {}
        text = done.stdout
    found: dict[str, str] = json.loads(text)
    return found


def _pool_libraries(settings: Settings, pool: str) -> dict[str, str]:
    """The libraries routed to ``pool``: config key -> module it imports."""
    return {
        key: spec.module or key
        for key, spec in sorted((settings.libraries or {}).items())
        if settings.pool_for(key) == pool
    }


def _thread_pools(
    settings: Settings, env: str, gil_enabled: bool, python: str | None = None
) -> list[Line]:
    """scale (#15): one line per ``profile = "thread"`` pool of ``env`` (interpreter ``python``,
    None: the host's). Without a GIL, OK. Under a GIL, a WARN naming the pool's libraries that
    are pure Python (:func:`library_code`): their calls run one at a time; OK when every
    library has native code (its calls run at once where it releases the GIL)."""
    lines = []
    for name, pool in sorted(settings.pools.items()):
        if pool.profile != "thread" or pool.env != env:
            continue
        if not gil_enabled:
            lines.append(
                Line(
                    "OK",
                    f'pool {name}: profile = "thread", env {env} has no GIL: calls run at once',
                )
            )
            continue
        libraries = _pool_libraries(settings, name)
        code = library_code(python, list(libraries.values()))
        pure = [
            key for key, module in libraries.items() if code.get(module.split(".")[0]) == "pure"
        ]
        if pure:
            lines.append(
                Line(
                    "WARN",
                    f'pool {name}: profile = "thread" on env {env}, whose interpreter has a GIL, '
                    f"for pure-Python {', '.join(pure)} (no extension modules): those calls run "
                    "one at a time",
                    f'profile = "process" for {", ".join(pure)} (a pool of its own), or a '
                    "free-threaded Python (3.13t) for the env; ignore this if they only call "
                    "GIL-releasing native code of other packages",
                )
            )
        elif libraries:
            native = ", ".join(
                key
                for key, module in libraries.items()
                if code.get(module.split(".")[0]) == "native"
            )
            lines.append(
                Line(
                    "OK",
                    f'pool {name}: profile = "thread" on env {env} (GIL): {native} native code; '
                    "calls run at once where it releases the GIL",
                )
            )
        else:
            lines.append(
                Line(
                    "WARN",
                    f'pool {name}: profile = "thread" on env {env}, whose interpreter has a GIL: '
                    "pure-Python calls run one at a time (only GIL-releasing code runs at once)",
                    'use profile = "process" for pure-Python libraries, or a free-threaded Python '
                    "(3.13t) for the env",
                )
            )
    return lines


def _disk(settings: Settings, plans: dict[str, EnvPlan]) -> list[Line]:
    envs = paths.envs_dir(settings.root)
    if not envs.exists():
        return []
    lines = [Line("OK", f"disk used by environments: {_size(envs) / 2**20:.0f} MiB ({envs})")]
    for path in sorted(envs.iterdir()):
        if re.match(r"^\..+\.(old|building)-", path.name):
            lines.append(
                Line("WARN", f"leftover of an interrupted setup: {path}", f"{_SETUP} (removes it)")
            )
        elif path.is_dir() and not path.name.startswith(".") and path.name not in plans:
            lines.append(
                Line("WARN", f"env {path.name} is no longer configured ({path})", f"rm -rf {path}")
            )
    return lines


def diagnose(settings: Settings) -> list[Line]:
    """The whole report, in order: host, uv, accelerator, environments, disk."""
    lines = _host()
    kind, line = _accelerator(settings)
    lines.append(line)
    try:
        plans = plan_envs(settings, kind)
        lock = Lock.load(settings.root)
    except EnvSetupError as exc:
        return [*lines, Line("FAIL", str(exc), f"fix the config, then `{_SETUP}`")]
    if not needs_venv(settings, "default"):
        lines.append(
            Line("OK", "env default: the host's interpreter (stdlib and host libraries; no venv)")
        )
        lines += _thread_pools(settings, "default", getattr(sys, "_is_gil_enabled", lambda: True)())
    if plans and lock is None:
        lines.append(Line("FAIL", "snakebridge.lock is missing", _SETUP))
    problems = drifts(settings, lock, plans)
    for plan in plans.values():
        lines += _env(settings, plan, lock, problems)
    return lines + _ray(settings) + _disk(settings, plans)


def _ray(settings: Settings) -> list[Line]:
    """ray (#15): each backend="ray" pool, whether Ray is there and which cluster it joins."""
    import importlib.util

    lines = []
    for name, pool in sorted(settings.pools.items()):
        if pool.backend != "ray":
            continue
        if importlib.util.find_spec("ray") is None:
            lines.append(
                Line("FAIL", f"pool {name}: Ray is not installed", "pip install snakebridge[ray]")
            )
            continue
        from importlib.metadata import version

        where = pool.ray_address or "a local cluster started by the host"
        lines.append(
            Line(
                "OK",
                f"pool {name}: Ray {version('ray')} backend, cluster {where}, "
                f"{pool.num_cpus:g} CPU / {pool.num_gpus:g} GPU per actor",
            )
        )
    return lines
