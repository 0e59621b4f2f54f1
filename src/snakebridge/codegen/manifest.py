"""`.snakebridge/manifest.json`: every generated symbol, its introspection, and the file hashes.

Append-only: symbols stay until ``snakebridge prune``. Sorted keys, no timestamps, atomic
writes; a corrupt file is an error that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snakebridge import paths
from snakebridge.errors import CodegenError

__all__ = ["CodegenError", "Manifest", "atomic_write", "content_hash"]

FORMAT = 1


def content_hash(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (or of bytes/str as they are)."""
    if isinstance(data, str):
        raw = data.encode()
    elif isinstance(data, bytes):
        raw = data
    else:
        raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()


def atomic_write(path: Path, text: str) -> bool:
    """Write ``text`` through a temp file and rename, with the umask's mode; False when
    unchanged (:func:`snakebridge.paths.atomic_write`)."""
    return paths.atomic_write(path, text)


@dataclass
class Manifest:
    """Libraries → symbol path → {info, hash, first_use}; plus generated file hashes."""

    path: Path
    libraries: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            libraries = data["libraries"]
            files = data["files"]
            if not isinstance(libraries, dict) or not isinstance(files, dict):
                raise ValueError("libraries and files must be tables")
            for name, entry in libraries.items():
                if not isinstance(entry, dict) or not all(
                    isinstance(entry.get(key, {}), dict) for key in ("symbols", "aliases")
                ):
                    raise ValueError(f"library {name!r} is not a table of symbols and aliases")
            if not all(isinstance(digest, str) for digest in files.values()):
                raise ValueError("file hashes must be strings")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CodegenError(
                f"{path} is corrupt ({exc}); restore it from git (`git checkout -- {path.name}`) "
                "or delete it and run `snakebridge regen --clean`"
            ) from None
        return cls(path, libraries, files)

    def symbols(self, library: str) -> dict[str, Any]:
        entry = self.libraries.setdefault(library, {"resolved": "", "symbols": {}, "aliases": {}})
        symbols: dict[str, Any] = entry["symbols"]
        return symbols

    def covers(self, library: str, dotted: str) -> bool:
        """True when a use ``library.dotted`` is served by a generated symbol."""
        entry = self.libraries.get(library)
        if entry is None:
            return False
        if dotted.endswith("*"):
            return dotted[:-1].rstrip(".") in entry.get("star", [])
        return not dotted or self.covering(library, dotted) is not None

    def covering(self, library: str, dotted: str) -> tuple[str, str] | None:
        """(symbol path, rest of the use past it) of the symbol that serves a use."""
        entry = self.libraries.get(library, {})
        symbols, aliases = entry.get("symbols", {}), entry.get("aliases", {})
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            head, rest = ".".join(parts[:i]), ".".join(parts[i:])
            if head in symbols:
                return head, rest
            target = aliases.get(head)
            if target in symbols:
                beyond = head[len(target) + 1 :] if head.startswith(target + ".") else ""
                return target, ".".join(p for p in (beyond, rest) if p)
        return None

    def dump(self) -> str:
        data = {"format": FORMAT, "libraries": self.libraries, "files": self.files}
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self) -> bool:
        return atomic_write(self.path, self.dump())
