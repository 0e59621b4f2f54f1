"""Running the uv binary that ships with the ``uv`` package (no system-wide install needed)."""

from __future__ import annotations

import os
import subprocess
from functools import cache

from snakebridge.runtime.errors import EnvSetupError

__all__ = ["EnvSetupError", "run_uv", "uv_binary", "uv_version"]


@cache
def uv_binary() -> str:
    try:
        import uv
    except ImportError:  # pragma: no cover - uv is a declared dependency
        raise EnvSetupError("the `uv` package is missing; `pip install uv`") from None
    return str(uv.find_uv_bin())


def uv_version() -> str:
    return run_uv(["--version"]).strip()


def run_uv(args: list[str], input_text: str | None = None, timeout: float = 1800) -> str:
    """stdout of ``uv ARGS``; EnvSetupError carrying uv's own message on failure."""
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [uv_binary(), *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if done.returncode != 0:
        message = "\n".join(done.stderr.strip().splitlines()[-12:]) or done.stdout.strip()
        raise EnvSetupError(f"uv {args[0]} {args[1] if len(args) > 1 else ''} failed:\n{message}")
    return done.stdout
