"""`snakebridge doctor`: one report on the host, uv, every environment and the accelerators."""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from snakebridge.config import Settings
from snakebridge.envs.builder import drifts
from snakebridge.envs.lock import Lock
from snakebridge.envs.plan import detect_accelerator, interpreter_facts, plan_envs
from snakebridge.envs.uvtool import EnvSetupError, uv_binary, uv_version
from snakebridge.runtime.interpreters import env_dir, venv_python

__all__ = ["Line", "diagnose"]


@dataclass(frozen=True)
class Line:
    status: str  # OK, WARN or FAIL
    text: str
    fix: str = ""

    def render(self) -> str:
        return f"{self.status:4s} {self.text}" + (f"\n     fix: {self.fix}" if self.fix else "")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def diagnose(settings: Settings) -> list[Line]:
    lines = [Line("OK", f"host Python {platform.python_version()} ({sys.executable})")]
    try:
        lines.append(Line("OK", f"{uv_version()} ({uv_binary()})"))
    except EnvSetupError as exc:
        lines.append(Line("FAIL", f"uv unusable: {exc}", "pip install --force-reinstall uv"))
    kind, description = detect_accelerator()
    lines.append(
        Line(
            "OK" if kind == "cuda" else "WARN",
            f"accelerator: {description}",
            "" if kind == "cuda" else "CPU wheels will be used",
        )
    )
    try:
        plans = plan_envs(settings, kind)
        lock = Lock.load(settings.root)
    except EnvSetupError as exc:
        return [*lines, Line("FAIL", str(exc), "fix the config, then `snakebridge setup`")]
    if not plans:
        lines.append(Line("OK", "no environment needs a venv (stdlib/host libraries only)"))
    problems = drifts(settings, lock, plans)
    for name in plans:
        directory = env_dir(settings, name)
        mine = [p for p in problems if p.startswith(f"env {name}:")]
        if not venv_python(directory).exists():
            lines.append(Line("FAIL", f"env {name}: missing ({directory})", "snakebridge setup"))
            continue
        facts = interpreter_facts(str(venv_python(directory)))
        threading = ("free-threading build" if facts["free_threading"] else "GIL build") + (
            ", GIL enabled" if facts["gil_enabled"] else ", GIL disabled"
        )
        lines.append(
            Line(
                "OK",
                f"env {name}: Python {facts['version']} ({facts['implementation']}, {threading})",
            )
        )
        for problem in mine:
            lines.append(Line("FAIL", problem, "snakebridge setup"))
        if not mine:
            count = len(lock.envs[name]["packages"]) if lock else 0
            lines.append(Line("OK", f"env {name}: matches the lock ({count} packages)"))
    envs_root = settings.root / ".snakebridge" / "envs"
    if envs_root.exists():
        lines.append(Line("OK", f"disk used by environments: {_size(envs_root) / 2**20:.0f} MiB"))
    if lock is None and plans:
        lines.append(Line("FAIL", "snakebridge.lock is missing", "snakebridge setup"))
    return lines
