"""Resolve, build, verify and swap environments; everything `snakebridge setup` does.

An environment is built in a temp directory beside its final place and renamed over it only
when complete, so a failed or interrupted setup leaves the previous environment usable.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snakebridge.config import Settings
from snakebridge.envs.lock import Lock, generator_hash
from snakebridge.envs.plan import EnvPlan, interpreter_facts, plan_envs
from snakebridge.envs.uvtool import EnvSetupError, run_uv
from snakebridge.runtime.interpreters import MARKER, env_digest, env_dir, venv_python

__all__ = ["drifts", "installed_packages", "lock_env", "setup"]

_PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version() -> str:
    from importlib.metadata import version

    return version("snakebridge")


def lock_env(plan: EnvPlan) -> dict[str, Any]:
    """Resolve ``plan`` with uv: exact versions and artifact hashes for every package."""
    args = [
        "pip",
        "compile",
        "-",
        "--python",
        plan.python,
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--no-annotate",
    ]
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
    packages: dict[str, Any] = {}
    current: str | None = None
    requested = {_normal(re.split(r"[<>=!~ \[]", r, maxsplit=1)[0]): r for r in plan.requirements}
    for line in text.splitlines():
        pin = _PIN.match(line.strip())
        if pin:
            current = _normal(pin.group(1))
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
        "requested": list(plan.requirements),
        "indexes": list(plan.indexes),
        "packages": dict(sorted(packages.items())),
    }


def _python_facts(plan: EnvPlan) -> dict[str, Any]:
    facts = interpreter_facts(plan.python)
    return {key: facts[key] for key in ("version", "implementation", "platform", "sha256")}


def _requirements_file(entry: dict[str, Any]) -> str:
    lines = []
    for name, package in entry["packages"].items():
        hashes = " ".join(f"--hash={h}" for h in package["hashes"])
        lines.append(f"{name}=={package['version']} {hashes}".strip())
    return "\n".join(lines) + "\n"


def installed_packages(directory: Path) -> dict[str, dict[str, Any]]:
    """Packages in a venv from their dist-info: version and files missing on disk."""
    found: dict[str, dict[str, Any]] = {}
    for site in directory.glob("lib/python*/site-packages"):
        for info in site.glob("*.dist-info"):
            metadata = info / "METADATA"
            try:
                head = metadata.read_text(errors="replace").split("\n\n", 1)[0]
            except OSError:
                continue
            fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
            missing = []
            try:
                for row in (info / "RECORD").read_text().splitlines():
                    path = row.split(",", 1)[0]
                    if path and not path.endswith(".pyc") and not (site / path).exists():
                        missing.append(path)
            except OSError:
                pass
            found[_normal(fields.get("Name", info.name))] = {
                "version": fields.get("Version", ""),
                "missing": missing,
            }
    return found


def drifts(settings: Settings, lock: Lock | None, plans: dict[str, EnvPlan]) -> list[str]:
    """Every way the built environments differ from the lock (empty when all match)."""
    if lock is None:
        return [f"{settings.root / 'snakebridge.lock'} does not exist"] if plans else []
    problems = []
    for name, plan in plans.items():
        entry = lock.envs.get(name)
        directory = env_dir(settings, name)
        if (
            entry is None
            or entry.get("requested") != list(plan.requirements)
            or entry.get("indexes", []) != list(plan.indexes)
        ):
            problems.append(
                f"env {name}: the lock does not match the config (requirements "
                "changed); run `snakebridge setup`"
            )
            continue
        if not venv_python(directory).exists():
            problems.append(f"env {name}: missing ({directory})")
            continue
        try:
            marker = json.loads((directory / MARKER).read_text())
        except (OSError, ValueError):
            marker = {}
        if marker.get("python_sha256") != entry["python"]["sha256"]:
            problems.append(
                f"env {name}: interpreter differs from the lock "
                f"(locked Python {entry['python']['version']})"
            )
        if marker.get("digest") != env_digest(entry):
            problems.append(f"env {name}: built from another lock (hashes differ)")
        installed = installed_packages(directory)
        for package, locked in entry["packages"].items():
            have = installed.get(package)
            if have is None:
                problems.append(f"env {name}: package {package} is missing")
            elif have["version"] != locked["version"]:
                problems.append(
                    f"env {name}: {package} is {have['version']}, lock says {locked['version']}"
                )
            elif have["missing"]:
                problems.append(
                    f"env {name}: package {package} is damaged "
                    f"({len(have['missing'])} files missing, e.g. "
                    f"{have['missing'][0]})"
                )
    return problems


def _build(settings: Settings, plan: EnvPlan, entry: dict[str, Any]) -> None:
    name = plan.name
    final = env_dir(settings, name)
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{name}.building-*"):  # from a setup killed hard
        shutil.rmtree(leftover, ignore_errors=True)
    staging = final.parent / f".{name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir()
        run_uv(["venv", str(staging), "--python", plan.python, "--quiet", "--no-project"])
        requirements = staging / "requirements.lock.txt"
        requirements.write_text(_requirements_file(entry))
        args = [
            "pip",
            "sync",
            str(requirements),
            "--python",
            str(venv_python(staging)),
            "--require-hashes",
            "--quiet",
        ]
        for url in entry.get("indexes", []):
            args += ["--extra-index-url", url]
        run_uv(args)
        marker = {"digest": env_digest(entry), "python_sha256": entry["python"]["sha256"]}
        (staging / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
        old = None
        if final.exists():
            old = final.with_name(f".{name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:  # a full disk, permissions: say so, keep the old env
        _remove(staging)
        raise EnvSetupError(
            f"building environment {name!r} failed: {exc}. The previous environment is "
            "unchanged; fix the cause and rerun `snakebridge setup`."
        ) from None
    except BaseException:
        _remove(staging)
        raise


def _remove(directory: Path) -> None:
    """Delete a staging tree, retrying while a killed installer's last writes land."""
    for _ in range(20):
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            return
        time.sleep(0.05)


def setup(
    settings: Settings, check: bool = False, progress: Callable[[str], None] | None = None
) -> list[str]:
    """Bring every environment in line with the lock (locking first if needed).

    With ``check`` nothing changes and the drifts are returned. Otherwise returns what was done.
    """
    plans = plan_envs(settings)
    lock = Lock.load(settings.root)
    if check:
        return drifts(settings, lock, plans)
    done: list[str] = []
    if lock is None:
        lock = Lock(settings.root / "snakebridge.lock")
    stale = drifts(settings, lock, plans)
    if not stale and lock.generator == generator_hash():
        return done
    for name, plan in plans.items():
        entry = lock.envs.get(name)
        relock = (
            entry is None
            or entry.get("requested") != list(plan.requirements)
            or entry.get("indexes", []) != list(plan.indexes)
            or entry.get("python") != _python_facts(plan)  # another interpreter: lock for it
        )
        if relock or entry is None:
            if progress:
                progress(f"resolving {name}: {', '.join(plan.requirements)}")
            entry = lock_env(plan)
            lock.envs[name] = entry
            done.append(
                f"locked {name}: "
                + ", ".join(f"{p}=={v['version']}" for p, v in entry["packages"].items())
            )
        if any(d.startswith(f"env {name}:") for d in drifts(settings, lock, {name: plan})):
            if progress:
                progress(f"building {name} ({len(entry['packages'])} packages)")
            _build(settings, plan, entry)
            done.append(f"built {name} at {env_dir(settings, name)}")
    lock.envs = {name: lock.envs[name] for name in sorted(plans)}
    lock.snakebridge, lock.generator = _version(), generator_hash()
    lock.save()
    return done
