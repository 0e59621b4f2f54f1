"""The scanner finds every documented form of use, with file and line, and respects scopes."""

from __future__ import annotations

import time
from pathlib import Path

from snakebridge.codegen.scanner import scan_paths, scan_source

SOURCE = """
import snakebridge_generated.numpy as np
from snakebridge_generated import json as j, math
from snakebridge_generated.numpy import mean as m
from snakebridge_generated.numpy.linalg import norm
import snakebridge_generated
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from snakebridge_generated.statistics import median
def shadowed(np):
    return np.not_a_use
class Model:
    def fit(self):
        return np.linalg.solve
def g():
    x = map(np.sqrt, [1])
    y = [np.linalg.norm(v) for v in x]
    z = lambda q: j.dumps(q)
    return np.random.default_rng(), np.ndarray, snakebridge_generated.pathlib.Path, math.pi
def local_rebind():
    math = 3
    return math.floor
"""


def test_every_form_of_use_is_found_with_its_line() -> None:
    uses = {
        (u.library, u.symbol, u.line) for u in scan_source(SOURCE, "f.py", "snakebridge_generated")
    }
    assert uses == {
        ("numpy", "mean", 4),
        ("numpy", "linalg.norm", 5),
        ("statistics", "median", 9),
        ("numpy", "linalg.solve", 14),
        ("numpy", "sqrt", 16),
        ("numpy", "linalg.norm", 17),
        ("json", "dumps", 18),
        ("numpy", "random.default_rng", 19),
        ("numpy", "ndarray", 19),
        ("pathlib", "Path", 19),
        ("math", "pi", 19),
    }


def test_other_packages_are_ignored() -> None:
    assert scan_source("import numpy as np\nnp.mean([1])\n", "f.py", "snakebridge_generated") == []


def test_syntax_error_is_reported_and_other_files_still_scanned(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def broken(:\n")
    (tmp_path / "good.py").write_text("from snakebridge_generated import math\nmath.sqrt(4)\n")
    result = scan_paths([tmp_path], "snakebridge_generated", tmp_path)
    assert result.errors == ["bad.py:1: syntax error: invalid syntax"]
    assert [(u.library, u.symbol, u.file, u.line) for u in result.uses] == [
        ("math", "sqrt", "good.py", 2)
    ]


def test_cache_makes_an_unchanged_rescan_cheap(tmp_path: Path) -> None:
    for i in range(1000):
        package = tmp_path / f"pkg{i % 20}"
        package.mkdir(exist_ok=True)
        (package / f"mod{i}.py").write_text(
            f"from snakebridge_generated import math\n\ndef f{i}(x):\n    return math.sqrt(x)\n"
            + "# padding\n" * 40
        )
    cache = tmp_path / ".snakebridge" / "cache" / "scan.json"
    first = scan_paths([tmp_path], "snakebridge_generated", tmp_path, cache_file=cache)
    assert len(first.uses) == 1000 and cache.exists()
    started = time.perf_counter()
    again = scan_paths([tmp_path], "snakebridge_generated", tmp_path, cache_file=cache)
    elapsed = time.perf_counter() - started
    assert again.uses == first.uses
    print(f"cached rescan of 1000 files: {elapsed * 1000:.0f} ms")
    (tmp_path / "pkg0" / "mod0.py").write_text(
        "from snakebridge_generated import json\njson.dumps\n"
    )
    changed = scan_paths([tmp_path], "snakebridge_generated", tmp_path, cache_file=cache)
    assert ("json", "dumps") in {(u.library, u.symbol) for u in changed.uses}
