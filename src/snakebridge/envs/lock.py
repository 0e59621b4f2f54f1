"""``snakebridge.lock``: per environment the interpreter and every package, pinned and hashed.

JSON, sorted keys, no timestamps, written atomically. It also records the snakebridge version
and a hash of the generator's source, so facades invalidate when the generator changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snakebridge import paths
from snakebridge.envs.uvtool import EnvSetupError

__all__ = ["LOCK_NAME", "Lock", "generator_hash"]

LOCK_NAME = "snakebridge.lock"
FORMAT = 1


def generator_hash() -> str:
    """sha256 over the codegen package's source files (paths and bytes, in path order)."""
    digest = hashlib.sha256()
    codegen = Path(__file__).parents[1] / "codegen"
    for path in sorted(codegen.rglob("*.py"), key=lambda p: p.relative_to(codegen).as_posix()):
        digest.update(path.relative_to(codegen).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class Lock:
    """The parsed lock: ``envs`` maps an environment name to its locked entry."""

    path: Path
    envs: dict[str, dict[str, Any]] = field(default_factory=dict)
    snakebridge: str = ""
    generator: str = ""

    @classmethod
    def load(cls, root: Path) -> Lock | None:
        """The lock of the project at ``root``; None when there is none yet."""
        path = root / LOCK_NAME
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            return cls(path, dict(data["envs"]), str(data["snakebridge"]), str(data["generator"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EnvSetupError(
                f"{path} is corrupt ({exc}); restore it from git or delete it and run "
                "`snakebridge setup` to lock again"
            ) from None

    def dump(self) -> str:
        """The file's text: JSON, sorted keys, two-space indent, final newline."""
        data = {
            "format": FORMAT,
            "snakebridge": self.snakebridge,
            "generator": self.generator,
            "envs": self.envs,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self) -> None:
        """Write atomically (temp file, fsync, rename), and only when the text changed."""
        text = self.dump()
        paths.atomic_write(self.path, text, fsync=True)  # the umask's mode: a committable file
