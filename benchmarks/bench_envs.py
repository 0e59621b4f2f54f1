"""`snakebridge setup` and `setup --check` with nothing to do (bars: ≤ 1 s each).

Run: ``python benchmarks/bench_envs.py`` (needs PyPI the first time, to build two numpy envs).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

CONFIG = """
[tool.snakebridge.libraries]
numpy = "==2.1.3"
legacy_np = { package = "numpy", version = "==1.26.4", env = "legacy", module = "numpy" }
[tool.snakebridge.envs.legacy]
"""


def timed(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["snakebridge", *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text(CONFIG)
        first = timed(root, "setup")
        noop = statistics.median(timed(root, "setup") for _ in range(5))
        check = statistics.median(timed(root, "setup", "--check") for _ in range(5))
        print(f"first setup (lock + build 2 envs): {first:6.2f} s")
        print(f"setup, nothing to do:              {noop:6.2f} s   (bar: <= 1 s)")
        print(f"setup --check:                     {check:6.2f} s   (bar: <= 1 s)")


if __name__ == "__main__":
    main()
