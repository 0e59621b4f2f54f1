"""Resolve, build and swap environments: everything `snakebridge setup` changes.

Every environment is resolved first, so a bad version or a typo changes nothing. Each one is
then built in a temp directory beside its final place and renamed over it only when complete
(with SIGINT/SIGTERM held off for the two renames), and the lock is saved after each swap, so
a failed, interrupted or killed setup leaves every environment usable and matching the lock.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from snakebridge import paths
from snakebridge.config import Settings
from snakebridge.envs.installed import FILES, fingerprint, normal_name
from snakebridge.envs.lock import Lock, generator_hash
from snakebridge.envs.plan import EnvPlan, interpreter_facts, plan_envs
from snakebridge.envs.uvtool import EnvSetupError, run_uv
from snakebridge.envs.verify import config_drift, drifts, env_drifts
from snakebridge.runtime.interpreters import MARKER, env_digest, env_dir, venv_python

__all__ = ["Progress", "lock_env", "setup"]

Progress = Callable[[str], None]
_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_FACT_KEYS = ("version", "implementation", "platform", "tag", "sha256")


def _version() -> str:
    from importlib.metadata import version

    return version("snakebridge")


def _python_facts(plan: EnvPlan) -> dict[str, Any]:
    facts = interpreter_facts(plan.python)
    return {key: facts[key] for key in _FACT_KEYS}


def lock_env(plan: EnvPlan) -> dict[str, Any]:
    """Resolve ``plan`` with uv: exact versions and artifact hashes for every package."""
    args = ["pip", "compile", "-", "--python", plan.python, "--generate-hashes"]
    args += ["--no-header", "--quiet", "--no-annotate"]
    for url in plan.indexes:
        args += ["--extra-index-url", url]
    try:
        text = run_uv(args, input_text="\n".join(plan.requirements) + "\n")
    except EnvSetupError as exc:
        raise EnvSetupError(
            f"cannot resolve environment {plan.name!r} ({', '.join(plan.requirements)}): {exc}\n"
            "Nothing was changed. Check the names and versions in [tool.snakebridge] (and your "
            "network), then rerun `snakebridge setup`."
        ) from None
    requested = {
        normal_name(re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0]): r for r in plan.requirements
    }
    packages: dict[str, Any] = {}
    current: str | None = None
    for line in text.splitlines():
        pin = _PIN.match(line.strip())
        if pin:
            current = normal_name(pin.group(1))
            packages[current] = {
                "version": pin.group(2),
                "hashes": [],
                "requested": requested.get(current, ""),
            }
        for digest in _HASH.findall(line):
            if current is not None:
                packages[current]["hashes"].append(digest)
    for package in packages.values():
        package["hashes"].sort()
    return {
        "python": _python_facts(plan),
        "python_request": plan.python_request,
        "requested": list(plan.requirements),
        "indexes": list(plan.indexes),
        "packages": dict(sorted(packages.items())),
    }


def _wanted(plan: EnvPlan, entry: dict[str, Any] | None) -> tuple[dict[str, Any], bool]:
    """The lock entry ``plan`` should be built from, and whether it had to be resolved."""
    if entry is None or config_drift(plan, entry) is not None:
        return lock_env(plan), True
    facts = _python_facts(plan)
    if facts == entry["python"]:
        return entry, False
    same = ("version", "implementation", "platform")
    if all(facts.get(key) == entry["python"].get(key) for key in same):
        return {**entry, "python": facts}, False  # another build of the same Python: same pins
    return lock_env(plan), True  # another Python: resolve for it


def _requirements_file(entry: dict[str, Any]) -> str:
    lines = []
    for name, package in entry["packages"].items():
        hashes = " ".join(f"--hash={h}" for h in package["hashes"])
        lines.append(f"{name}=={package['version']} {hashes}".strip())
    return "\n".join(lines) + "\n"


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (delivered afterwards) so two renames happen together."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _remove(directory: Path) -> None:
    """Delete a tree, retrying while a killed installer's last writes land."""
    for _ in range(20):
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            return
        time.sleep(0.05)


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>old|building)-\d+-[0-9a-f]{8}$")


def _recover(envs: Path) -> None:
    """Undo what a setup killed outright left behind: a half swap, staging and old trees."""
    olds: dict[str, list[Path]] = {}
    for path in sorted(envs.glob(".*-*"), key=lambda p: p.stat().st_mtime):
        match = _LEFTOVER.match(path.name)
        if match and match["kind"] == "old":
            olds.setdefault(match["name"], []).append(path)
        elif match:
            _remove(path)
    for name, trees in olds.items():
        if not (envs / name).exists():
            os.replace(trees.pop(), envs / name)
        for tree in trees:
            _remove(tree)


def _build(settings: Settings, plan: EnvPlan, entry: dict[str, Any], progress: Progress) -> Path:
    """A complete venv for ``entry`` in a staging directory beside the final one."""
    name = plan.name
    final = env_dir(settings, name)
    staging = final.parent / f".{name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(parents=True)
        progress(f"{name}: creating a venv on {plan.python}")
        venv = ["venv", str(staging), "--python", plan.python, "--relocatable", "--no-project"]
        run_uv([*venv, "--quiet"])  # relocatable: scripts keep working after the rename
        requirements = staging / "requirements.lock.txt"
        requirements.write_text(_requirements_file(entry))
        args = ["pip", "sync", str(requirements), "--python", str(venv_python(staging))]
        args += ["--require-hashes", "--link-mode=copy"]  # no hardlinks: editing a venv
        # file must never reach uv's cache, nor a cache clean the venv
        for url in entry.get("indexes", []):
            args += ["--extra-index-url", url]
        run_uv(args, on_line=lambda line: progress(f"{name}: {line.strip()}"))
        (staging / FILES).write_text(json.dumps(fingerprint(staging), sort_keys=True) + "\n")
        marker = {"digest": env_digest(entry), "python_sha256": entry["python"]["sha256"]}
        (staging / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
        return staging
    except EnvSetupError as exc:
        _remove(staging)
        raise EnvSetupError(
            f"building environment {name!r} failed: {exc}\nThe previous environment is "
            "unchanged. Check your network and disk, then rerun `snakebridge setup`."
        ) from None
    except OSError as exc:  # a full disk, permissions: say so, keep the old env
        _remove(staging)
        raise EnvSetupError(
            f"building environment {name!r} failed: {exc}\nThe previous environment is "
            "unchanged; fix the cause and rerun `snakebridge setup`."
        ) from None
    except BaseException:
        _remove(staging)
        raise


def _swap(staging: Path, final: Path) -> Path | None:
    """Put ``staging`` in ``final``'s place; returns where the previous tree went."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    return old


def _ignore(_: str) -> None:
    pass


def setup(settings: Settings, check: bool = False, progress: Progress | None = None) -> list[str]:
    """Bring every environment in line with the config and the lock.

    With ``check`` nothing changes and the drifts are returned. Otherwise returns one line per
    thing done (empty when everything already matched).
    """
    say = progress or _ignore
    if check:
        return drifts(settings, Lock.load(settings.root), plan_envs(settings))
    if settings.path is None and not plan_envs(settings):
        return []  # no config: the host's interpreter serves everything, nothing to lock
    envs = paths.envs_dir(settings.root)
    envs.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(envs / ".setup.lock"), timeout=3600):
        _recover(envs)
        return _setup(settings, say)


def _setup(settings: Settings, say: Progress) -> list[str]:
    lock = Lock.load(settings.root)
    plans = plan_envs(settings, fresh=lock is None)
    lock = lock or Lock(settings.root / "snakebridge.lock")
    fresh = not drifts(settings, lock, plans)
    header = (lock.snakebridge, lock.generator) == (_version(), generator_hash())
    if fresh and header and set(lock.envs) == set(plans) and lock.path.exists():
        _fingerprint_missing(settings, plans)
        return []
    if not fresh:
        plans = plan_envs(settings, fresh=True)
    done: list[str] = []
    wanted: dict[str, dict[str, Any]] = {}
    for name, plan in plans.items():  # resolve everything first: a failure changes nothing
        say(f"{name}: checking {', '.join(plan.requirements)}")
        wanted[name], resolved = _wanted(plan, lock.envs.get(name))
        if resolved:
            pins = ", ".join(f"{p}=={v['version']}" for p, v in wanted[name]["packages"].items())
            done.append(f"locked {name}: {pins}")
        elif wanted[name] != lock.envs.get(name):
            python = wanted[name]["python"]
            done.append(
                f"locked {name}: same packages on {python['implementation']} "
                f"{python['version']} (interpreter {python['sha256'][:12]})"
            )
    lock.snakebridge, lock.generator = _version(), generator_hash()
    lock.envs = {name: entry for name, entry in lock.envs.items() if name in plans}
    for name, plan in plans.items():
        old = None
        if env_drifts(settings, plan, wanted[name]):
            say(f"{name}: building ({len(wanted[name]['packages'])} packages)")
            staging = _build(settings, plan, wanted[name], say)
            installed = ", ".join(
                f"{p} {v['version']}" for p, v in wanted[name]["packages"].items()
            )
            done.append(f"built {name} at {env_dir(settings, name)}: {installed}")
        else:
            staging = None
        with _signals_held():  # the swap and the lock entry that describes it go together
            if staging is not None:
                old = _swap(staging, env_dir(settings, name))
            lock.envs[name] = wanted[name]
            lock.envs = dict(sorted(lock.envs.items()))
            lock.save()
        if old is not None:
            _remove(old)
    lock.save()
    _fingerprint_missing(settings, plans)
    return done


def _fingerprint_missing(settings: Settings, plans: dict[str, EnvPlan]) -> None:
    """Give a verified venv built before fingerprints existed its file list (faster checks)."""
    for name in plans:
        directory = env_dir(settings, name)
        if venv_python(directory).exists() and not (directory / FILES).exists():
            (directory / FILES).write_text(json.dumps(fingerprint(directory), sort_keys=True))
