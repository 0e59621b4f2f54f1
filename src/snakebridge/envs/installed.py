"""What a venv really holds: packages from their dist-info, files missing or changed.

At build time every installed file's size and mtime go into ``.snakebridge-files.json``; a check
stats the files again (cheap) and hashes only those whose stat changed against the sha256 in the
package's RECORD, so a file that was touched but not changed is no drift.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["FILES", "fingerprint", "installed_packages", "normal_name"]

FILES = ".snakebridge-files.json"


def normal_name(name: str) -> str:
    """PEP 503 normalized project name (``Scikit_Learn`` → ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dists(directory: Path) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """(site-packages, dist-info, metadata headers) of every installed distribution."""
    for site in directory.glob("lib/python*/site-packages"):
        for info in sorted(site.glob("*.dist-info")):
            try:
                head = (info / "METADATA").read_text(errors="replace").split("\n\n", 1)[0]
            except OSError:
                continue
            yield (
                site,
                info,
                dict(line.split(": ", 1) for line in head.splitlines() if ": " in line),
            )


def _record(info: Path) -> list[tuple[str, str]]:
    """(path relative to site-packages, ``sha256=…`` or "") for each file the RECORD lists."""
    try:
        rows = (info / "RECORD").read_text().splitlines()
    except OSError:
        return []
    found = []
    for row in rows:
        path, _, rest = row.partition(",")
        if path and not path.endswith(".pyc"):
            found.append((path, rest.rpartition(",")[0]))
    return found


def _stat(path: Path) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def fingerprint(directory: Path) -> dict[str, dict[str, list[int]]]:
    """Per package, each installed file's [size, mtime_ns] (written beside the marker)."""
    prints: dict[str, dict[str, list[int]]] = {}
    for site, info, fields in _dists(directory):
        stats = prints.setdefault(normal_name(fields.get("Name", info.name)), {})
        for path, _ in _record(info):
            stat = _stat(site / path)
            if stat is not None:
                stats[path] = stat
    return prints


def _changed(file: Path, recorded: str) -> bool:
    algorithm, _, expected = recorded.partition("=")
    if algorithm not in hashlib.algorithms_guaranteed or not expected:
        return False
    try:
        digest = hashlib.new(algorithm, file.read_bytes()).digest()
    except OSError:  # unreadable counts as changed
        return True
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != expected


def installed_packages(directory: Path) -> dict[str, dict[str, Any]]:
    """Per package in the venv: version, files missing, files whose content changed."""
    try:
        prints = json.loads((directory / FILES).read_text())
    except (OSError, ValueError):
        prints = {}
    found: dict[str, dict[str, Any]] = {}
    for site, info, fields in _dists(directory):
        name = normal_name(fields.get("Name", info.name))
        known = prints.get(name, {}) if isinstance(prints, dict) else {}
        missing, modified = [], []
        for path, recorded in _record(info):
            stat = _stat(site / path)
            if stat is None:
                missing.append(path)
            elif stat != known.get(path) and recorded and _changed(site / path, recorded):
                modified.append(path)
        found[name] = {
            "version": fields.get("Version", ""),
            "missing": missing,
            "modified": modified,
        }
    return found
