"""A fake worker answers a real host Pool with 100,000+ random and garbage frames.

The host must never die or hang, and every failure that reaches the caller must be a
SnakeBridgeError. The fake (``fuzz_peer.py``) is the pool's interpreter: it completes the
real handshake, then answers each call with a seeded burst of well-formed frames the host
serves (callback requests, callback releases) and one final frame: a valid result or one of
~50 garbage modes (framing, shape, msgpack edge cases, every extension type, payloads).
The driver runs in a child process so that a crash is reported, not suffered.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.runtime import fuzz_peer

CALLS = 480
SEED = 20261201


def drive(script: str, log: str, calls: int, seed: int) -> dict[str, Any]:
    """Run ``calls`` fuzzed calls (and pings) against a real Pool; what reached the caller."""
    from snakebridge.config import PoolSpec
    from snakebridge.errors import SnakeBridgeError
    from snakebridge.runtime.calls import prepare
    from snakebridge.runtime.pool import Pool
    from snakebridge_worker import protocol as p

    env = {**os.environ, "FUZZ_LOG": log, "FUZZ_SEED": str(seed)}
    spec = PoolSpec(size=2, startup_timeout=60.0, queue_timeout=120.0)
    pool = Pool("fuzz", spec, script, env)
    rng = random.Random(seed)
    outcomes: collections.Counter[str] = collections.Counter()
    escaped: list[str] = []

    def served(*args: Any, **kwargs: Any) -> int:
        return len(args) + len(kwargs)

    def attempt(action: Any, label: str) -> Any:
        try:
            value = action()
        except SnakeBridgeError as exc:
            outcomes[type(exc).__name__] += 1
            return None
        except BaseException as exc:
            escaped.append(
                f"{label}: {type(exc).__module__}.{type(exc).__qualname__}: {exc!r:.200}"
            )
            return None
        outcomes["value"] += 1
        return value

    def run(args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        call = prepare(None, "fuzz", "answer", None, p.OP_CALL, args, kwargs, 60.0, False, None)
        return pool.run(call)

    for number in range(calls):
        call_seed = rng.getrandbits(48)
        attempt(lambda s=call_seed: run([s, served]), f"call seed {call_seed}")
        if number % 8 == 0:
            for worker in pool.workers:
                attempt(lambda w=worker: pool.ping(w, timeout=30.0), "ping")
    echoes = [attempt(lambda n=n: run([n], {"echo": True}), "echo") for n in range(6)]
    pool.close(grace_s=1.0)
    return {"outcomes": dict(outcomes), "escaped": escaped, "echoes": echoes}


@pytest.mark.timeout(300)
def test_garbage_from_a_worker_never_escapes_as_anything_but_snakebridge_errors(
    tmp_path: Path,
) -> None:
    script = tmp_path / "fake-python"
    peer = fuzz_peer.__file__
    script.write_text(
        f"#!{sys.executable}\nimport runpy\nrunpy.run_path({peer!r}, run_name='__main__')\n"
    )
    script.chmod(0o755)
    log = tmp_path / "frames.log"
    root = Path(__file__).resolve().parents[2]
    program = (
        "import json, sys; from tests.runtime.test_fuzz import drive; "
        f"print(json.dumps(drive({str(script)!r}, {str(log)!r}, {CALLS}, {SEED})))"
    )
    child = subprocess.run(
        [sys.executable, "-c", program], cwd=root, capture_output=True, text=True, timeout=280
    )
    assert child.returncode == 0, f"the host died ({child.returncode}):\n{child.stderr[-3000:]}"
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["escaped"] == [], "\n".join(report["escaped"])
    assert report["echoes"] == list(range(6))  # the pool still serves calls afterwards
    lines = [line.split(" ", 2) for line in log.read_text().splitlines()]
    frames = sum(int(count) for _, count, _ in lines)
    modes = {mode for _, _, mode in lines}
    assert frames >= 100_000
    assert set(fuzz_peer.MODES) | {fuzz_peer.VALID_FINAL, "pong"} == modes
    assert report["outcomes"]["value"] > 0 and len(report["outcomes"]) > 3
