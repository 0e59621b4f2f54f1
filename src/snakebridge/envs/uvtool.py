"""Running the uv binary that ships with the ``uv`` package (no system-wide install needed)."""

from __future__ import annotations

import os
import subprocess
from collections import deque
from collections.abc import Callable
from functools import cache

from snakebridge.errors import EnvSetupError

__all__ = ["EnvSetupError", "run_uv", "uv_binary", "uv_version"]


@cache
def uv_binary() -> str:
    """Path of the uv executable installed with the ``uv`` package."""
    try:
        import uv
    except ImportError:  # pragma: no cover - uv is a declared dependency
        raise EnvSetupError("the `uv` package is missing; `pip install uv`") from None
    try:
        return str(uv.find_uv_bin())
    except FileNotFoundError:  # pragma: no cover - a broken uv install
        raise EnvSetupError(
            "the `uv` package has no binary; `pip install --force-reinstall uv`"
        ) from None


def uv_version() -> str:
    """``uv --version`` output, e.g. ``uv 0.5.1``."""
    return run_uv(["--version"]).strip()


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")  # find interpreters; never fetch one
    env.pop("VIRTUAL_ENV", None)
    return env


def _failed(args: list[str], message: str) -> EnvSetupError:
    return EnvSetupError(f"uv {' '.join(args[:2])} failed:\n{message}")


def run_uv(
    args: list[str],
    input_text: str | None = None,
    timeout: float = 1800,
    on_line: Callable[[str], None] | None = None,
) -> str:
    """stdout of ``uv ARGS``; EnvSetupError carrying uv's own message on failure.

    With ``on_line`` uv's output (stdout and stderr, merged) is streamed line by line to it,
    for progress displays, and returned whole.
    """
    if on_line is not None:
        return _stream(args, on_line)
    try:
        done = subprocess.run(
            [uv_binary(), *args],
            input=input_text,
            capture_output=True,
            text=True,
            env=_environ(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise _failed(args, f"no answer after {timeout:.0f} s (network?)") from None
    except OSError as exc:
        raise _failed(args, f"cannot run {uv_binary()}: {exc}") from None
    if done.returncode != 0:
        message = "\n".join(done.stderr.strip().splitlines()[-12:]) or done.stdout.strip()
        raise _failed(args, message)
    return done.stdout


def _stream(args: list[str], on_line: Callable[[str], None]) -> str:
    tail: deque[str] = deque(maxlen=12)
    lines = []
    try:
        process = subprocess.Popen(
            [uv_binary(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_environ(),
        )
    except OSError as exc:
        raise _failed(args, f"cannot run {uv_binary()}: {exc}") from None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            lines.append(line)
            tail.append(line)
            if line:
                on_line(line)
        code = process.wait()
    except BaseException:  # interrupted: uv must not outlive us or keep writing
        process.kill()
        process.wait()
        raise
    if code != 0:
        raise _failed(args, "\n".join(tail))
    return "\n".join(lines)
