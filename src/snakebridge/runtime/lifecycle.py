"""When a worker should be recycled, and how much memory it uses."""

from __future__ import annotations

import os
import time

from snakebridge.config import PoolSpec

__all__ = ["recycle_reason", "resident_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int) -> int | None:
    """Resident set size of process ``pid`` (None where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def recycle_reason(
    spec: PoolSpec, calls: int, started_at: float, pid: int, max_memory: int | None
) -> str | None:
    """Why a worker that just finished a call should be replaced, or None."""
    if spec.max_requests is not None and calls >= spec.max_requests:
        return f"max_requests ({spec.max_requests})"
    ttl = spec.ttl_s
    if ttl is not None and time.monotonic() - started_at >= ttl:
        return f"ttl ({spec.ttl})"
    if max_memory is not None:
        rss = resident_bytes(pid)
        if rss is not None and rss > max_memory:
            return f"max_memory ({rss // 2**20} MiB > {max_memory // 2**20} MiB)"
    return None
