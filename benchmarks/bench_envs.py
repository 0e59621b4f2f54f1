"""`snakebridge setup` and `setup --check` with nothing to do (bars: ≤ 1 s each).

Times the real command (a fresh process each run, interpreter start included) on the issue's
two-numpy project. Run: ``python benchmarks/bench_envs.py`` (needs PyPI, or uv's cache, the
first time, to build the two numpy envs).
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
python = "3.11"
"""
RUNS = 7


def timed(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["snakebridge", *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pyproject.toml").write_text(CONFIG)
        first = timed(root, "setup")
        noop = statistics.median(timed(root, "setup") for _ in range(RUNS))
        check = statistics.median(timed(root, "setup", "--check") for _ in range(RUNS))
        doctor = statistics.median(timed(root, "doctor") for _ in range(3))
        base = statistics.median(timed(root, "--help") for _ in range(RUNS))
        print(f"first setup (lock + build 2 envs): {first:6.2f} s   (uv cache warm or cold)")
        print(f"setup, nothing to do:              {noop:6.2f} s   (bar: <= 1 s)")
        print(f"setup --check:                     {check:6.2f} s   (bar: <= 1 s)")
        print(f"doctor:                            {doctor:6.2f} s")
        print(f"`snakebridge --help` (start-up):   {base:6.2f} s")


if __name__ == "__main__":
    main()
