"""Compare built environments with the lock and the config, changing nothing.

Each drift is one line that starts with ``env NAME:`` and says what differs; `setup --check`
prints them, `doctor` files them under their environment, `setup` repairs them.
"""

from __future__ import annotations

import json
from typing import Any

from snakebridge.config import Settings
from snakebridge.envs.installed import installed_packages
from snakebridge.envs.lock import LOCK_NAME, Lock
from snakebridge.envs.plan import EnvPlan, interpreter_facts, interpreter_sha256
from snakebridge.envs.uvtool import EnvSetupError
from snakebridge.runtime.interpreters import MARKER, env_digest, env_dir, venv_python

__all__ = ["config_drift", "drifts", "env_drifts"]


def config_drift(plan: EnvPlan, entry: dict[str, Any] | None) -> str | None:
    """Why the lock entry no longer fits what the config asks for (None when it does)."""
    name = plan.name
    if entry is None:
        return f"env {name}: not in {LOCK_NAME}"
    locked, wanted = entry.get("requested", []), list(plan.requirements)
    if locked != wanted:
        changes = [f"+{r}" for r in wanted if r not in locked]
        changes += [f"-{r}" for r in locked if r not in wanted]
        return f"env {name}: requirements changed since locking ({', '.join(changes)})"
    if entry.get("indexes", []) != list(plan.indexes):
        return f"env {name}: wheel-variant indexes changed since locking"
    if entry.get("python_request", "") != plan.python_request:
        was = entry.get("python_request") or "the host's"
        now = plan.python_request or "the host's"
        return f"env {name}: interpreter differs: config asks for {now}, the lock has {was}"
    return None


def _interpreter_drift(plan: EnvPlan, entry: dict[str, Any]) -> str | None:
    locked = entry["python"]
    if interpreter_sha256(plan.python) == locked["sha256"]:
        return None
    try:  # a shim or wrapper hashes differently from the binary it runs: ask the interpreter
        if interpreter_facts(plan.python)["sha256"] == locked["sha256"]:
            return None
    except EnvSetupError:
        pass
    return (
        f"env {plan.name}: interpreter differs: {plan.python} is not the locked "
        f"{locked['implementation']} {locked['version']} (binary hash differs)"
    )


def env_drifts(settings: Settings, plan: EnvPlan, entry: dict[str, Any]) -> list[str]:
    """How the venv of ``plan`` differs from the lock ``entry`` it should be built from."""
    name = plan.name
    directory = env_dir(settings, name)
    if not venv_python(directory).exists():
        return [f"env {name}: missing ({directory})"]
    try:
        marker = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    problems = []
    if marker.get("python_sha256") != entry["python"]["sha256"]:
        problems.append(
            f"env {name}: interpreter differs: the venv was not built on the locked "
            f"{entry['python']['implementation']} {entry['python']['version']}"
        )
    if marker.get("digest") != env_digest(entry):
        problems.append(f"env {name}: built from another lock (hashes differ)")
    installed = installed_packages(directory)
    for package, locked in entry["packages"].items():
        have = installed.pop(package, None)
        if have is None:
            problems.append(f"env {name}: package {package} is missing")
        elif have["version"] != locked["version"]:
            problems.append(
                f"env {name}: {package} is {have['version']}, lock says {locked['version']}"
            )
        elif have["missing"]:
            problems.append(
                f"env {name}: package {package} is damaged ({len(have['missing'])} file(s) "
                f"missing, e.g. {have['missing'][0]})"
            )
        elif have["modified"]:
            problems.append(
                f"env {name}: package {package} was changed after install (hash differs: "
                f"{len(have['modified'])} file(s), e.g. {have['modified'][0]})"
            )
    for package, have in sorted(installed.items()):
        problems.append(f"env {name}: {package} {have['version']} is installed but not in the lock")
    return problems


def drifts(settings: Settings, lock: Lock | None, plans: dict[str, EnvPlan]) -> list[str]:
    """Every way the config, the lock and the built environments disagree (empty: all match)."""
    problems = []
    for name, plan in plans.items():
        if lock is None:
            problems.append(f"env {name}: {settings.root / LOCK_NAME} does not exist")
            continue
        entry = lock.envs.get(name)
        stale = config_drift(plan, entry)
        if stale is None and entry is not None:
            stale = _interpreter_drift(plan, entry)
        if stale is not None or entry is None:
            problems.append(str(stale))
            continue
        problems.extend(env_drifts(settings, plan, entry))
    return problems
