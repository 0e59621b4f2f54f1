"""Quickstart: numpy 2 and numpy 1.26 in one program, and a worker crash that it survives.

Run from this directory: ``snakebridge setup && snakebridge check && python main.py``.
``setup`` builds the two numpy environments with uv, exactly as ``snakebridge.lock`` pins them;
``check`` verifies the committed facades; ``snakebridge sync`` after using a new symbol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from snakebridge_generated import ctypes, json, math, numpy, numpy126

import snakebridge


def workers(pool: str) -> list[int]:
    """The process ids of ``pool``'s workers."""
    return [w["pid"] for p in snakebridge.status() if p["name"] == pool for w in p["workers"]]


def int8_plus_200(add: Callable[..., Any], int8: Callable[[int], Any]) -> str:
    """NEP 50 (numpy 2): a Python int no longer widens a numpy scalar's type."""
    try:
        total = add(int8(100), 200)
    except OverflowError as exc:  # a remote OverflowError is an OverflowError
        return f"raises {exc}"
    return f"{int(total)} ({total.dtype})"


def main() -> None:
    for version, outcome in [
        (numpy.__version__, int8_plus_200(numpy.add, numpy.int8)),
        (numpy126.__version__, int8_plus_200(numpy126.add, numpy126.int8)),
    ]:
        print(f"numpy {version}: int8(100) + 200 -> {outcome}")
    print("one process per environment:", {p: workers(p) for p in ("default", "numpy126")})
    print("math.sqrt(2):", math.sqrt(2), " json.dumps:", json.dumps({"b": [1, 2], "a": None}))

    before = workers("default")
    try:
        ctypes.string_at(0)  # reads address 0: the worker segfaults
    except snakebridge.WorkerCrashed as exc:
        print("survived:", str(exc).splitlines()[0])
    after = math.sqrt(16)  # served by a fresh worker
    print(f"math.sqrt(16): {after}  default pool's worker: {before} -> {workers('default')}")


if __name__ == "__main__":
    main()
