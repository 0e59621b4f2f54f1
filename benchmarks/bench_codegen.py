"""`snakebridge sync` and `snakebridge check` on a 1,000-file project with nothing changed.

Run: ``python benchmarks/bench_codegen.py``. Bar (issue 3): each ≤ 0.5 s, end to end (the
command's own start-up included), once the scan cache is warm.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

FILES = 1000


def make_project(root: Path) -> None:
    (root / "pyproject.toml").write_text(
        '[tool.snakebridge]\nscan = ["src"]\n[tool.snakebridge.libraries]\n'
        'math = "stdlib"\njson = "stdlib"\n'
    )
    for i in range(FILES):
        package = root / "src" / f"pkg{i % 25}"
        package.mkdir(parents=True, exist_ok=True)
        (package / f"mod{i}.py").write_text(
            "from snakebridge_generated import json, math\n\n"
            f"def f{i}(x: float) -> str:\n    return json.dumps(math.sqrt(x))\n"
            + "# some unrelated code\n"
            * 60
        )


def timed(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["snakebridge", *args], cwd=root, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root)
        cold = timed(root, "sync")
        sync = statistics.median(timed(root, "sync") for _ in range(5))
        check = statistics.median(timed(root, "check") for _ in range(5))
        print(f"{FILES}-file project: first sync {cold * 1000:.0f} ms (introspects, writes)")
        print(f"  sync, nothing changed:  {sync * 1000:6.0f} ms   (bar: <= 500 ms)")
        print(f"  check, nothing changed: {check * 1000:6.0f} ms   (bar: <= 500 ms)")


if __name__ == "__main__":
    main()
