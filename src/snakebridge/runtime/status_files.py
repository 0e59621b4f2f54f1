"""Per-process status files in an owner-only runtime directory, for ``snakebridge status``."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["publish", "read_live", "remove", "status_dir"]


def status_dir() -> Path:
    """``$XDG_RUNTIME_DIR/snakebridge`` when usable, else a per-user directory in the temp dir."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        Path(runtime) / "snakebridge"
        if runtime and os.path.isdir(runtime)
        else (Path(tempfile.gettempdir()) / f"snakebridge-{os.getuid()}")
    )
    directory = base / "status"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def publish(pools: list[dict[str, Any]]) -> None:
    """Atomically write this process's pool status."""
    directory = status_dir()
    data = json.dumps({"pid": os.getpid(), "pools": pools}, sort_keys=True)
    tmp = directory / f".{os.getpid()}.tmp"
    tmp.write_text(data)
    os.replace(tmp, directory / f"{os.getpid()}.json")


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


def read_live() -> list[dict[str, Any]]:
    """Status of every live host process; files of dead processes are removed."""
    entries: list[dict[str, Any]] = []
    for path in sorted(status_dir().glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            entries.append(entry)
        else:
            path.unlink(missing_ok=True)
    return entries
