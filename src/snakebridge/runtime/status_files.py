"""Per-process status files in the private per-user runtime dir, for ``snakebridge status``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from snakebridge.paths import atomic_write, read_private, status_dir

__all__ = ["publish", "read_live", "remove", "status_dir"]


def publish(pools: list[dict[str, Any]]) -> None:
    """Atomically write this process's pool status (owner-only, never through a symlink)."""
    data = json.dumps({"pid": os.getpid(), "pools": pools}, sort_keys=True)
    atomic_write(status_dir() / f"{os.getpid()}.json", data, private=True)


def remove() -> None:
    """Remove this process's status file."""
    with contextlib.suppress(OSError):
        (status_dir() / f"{os.getpid()}.json").unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _valid(entry: Any) -> bool:
    """Whether a status entry has the shape ``publish`` writes."""
    if type(entry) is not dict or type(entry.get("pid")) is not int:
        return False
    pools = entry.get("pools")
    if type(pools) is not list:
        return False
    for pool in pools:
        if type(pool) is not dict or not {"name", "size", "queued", "workers"} <= set(pool):
            return False
        workers = pool["workers"]
        if type(workers) is not list or not all(
            type(w) is dict and {"pid", "state", "calls"} <= set(w) for w in workers
        ):
            return False
    return True


def read_live() -> list[dict[str, Any]]:
    """Status of every live host process; files of dead processes are removed.

    A file that is not a status entry (a symlink, malformed JSON, the wrong shape) is skipped
    with a one-line warning on stderr.
    """
    entries: list[dict[str, Any]] = []
    for path in sorted(status_dir().glob("*.json")):
        try:
            entry = json.loads(read_private(path))
        except FileNotFoundError:  # its host removed it meanwhile
            continue
        except (OSError, ValueError) as exc:
            _skip(path, f"unreadable ({exc})")
            continue
        if not _valid(entry):
            _skip(path, "not a status entry")
            continue
        if _alive(entry["pid"]):
            entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return entries


def _skip(path: Path, why: str) -> None:
    sys.stderr.write(f"snakebridge: ignoring status file {path}: {why}\n")
