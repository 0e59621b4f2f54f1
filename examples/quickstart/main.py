"""Quickstart: typed facades for five stdlib modules, every call served by a worker process.

Run from this directory: ``snakebridge check && python main.py`` (``snakebridge sync`` after
using a new symbol).
"""

from __future__ import annotations

from snakebridge_generated import json, math, statistics
from snakebridge_generated.collections import Counter
from snakebridge_generated.pathlib import Path

import snakebridge


def main() -> None:
    print("json.dumps:", json.dumps({"b": [1, 2], "a": None}, sort_keys=True))
    print("math.sqrt(2):", math.sqrt(2), " math.pi:", math.pi)
    print("statistics.median:", statistics.median([3, 1, 4, 1, 5]))
    words = Counter(["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog"])
    print("Counter (back by value):", words.most_common(1), isinstance(words, Counter))
    here = Path("/tmp")
    print("Path('/tmp').exists():", here.exists(), " isinstance:", isinstance(here, Path))
    for pool in snakebridge.status():
        print(f"pool {pool['name']!r}: {[w['pid'] for w in pool['workers']]}")


if __name__ == "__main__":
    main()
