"""The environment commands: setup [--check] and doctor."""

from __future__ import annotations

import re
import signal
import sys
from types import FrameType

import click

from snakebridge.config import load_settings
from snakebridge.envs.builder import setup as run_setup
from snakebridge.envs.doctor import diagnose
from snakebridge.errors import SnakeBridgeError

__all__ = ["COMMANDS"]


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: uv stopped, staging removed


@click.command()
@click.option("--check", is_flag=True, help="Verify against the lock; change nothing.")
def setup(check: bool) -> None:
    """Build or update every environment from snakebridge.lock (locking first if needed)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False)
    if not check:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        with console.status("checking environments") as status:

            def show(text: str) -> None:
                if re.search(r": [+-] \S", text):  # uv's per-package line: keep it on screen
                    console.print(f"  {text}", markup=False)
                else:
                    status.update(Text(text))

            done = run_setup(load_settings(), check=check, progress=show)
    except SnakeBridgeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a full disk or a permission, after the environments were built
        click.echo(
            f"error: {exc}\nEvery environment is either the previous one or complete; fix the "
            "cause and rerun `snakebridge setup`.",
            err=True,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(
            "setup interrupted; the previous environments are unchanged. "
            "Rerun `snakebridge setup` to finish.",
            err=True,
        )
        sys.exit(130)
    if check:
        for drift in done:
            click.echo(drift)
        if done:
            click.echo(f"{len(done)} drift(s); run `snakebridge setup`", err=True)
            sys.exit(1)
        click.echo("environments match snakebridge.lock")
        return
    for line in done:
        click.echo(line)
    if not done:
        click.echo("environments are up to date")


@click.command()
def doctor() -> None:
    """Report on the host, uv, every environment and GPU visibility, with fixes."""
    try:
        lines = diagnose(load_settings())
    except (SnakeBridgeError, OSError) as exc:
        click.echo(f"FAIL {exc}")
        sys.exit(1)
    for line in lines:
        click.echo(line.render())
    if any(line.status == "FAIL" for line in lines):
        sys.exit(1)


COMMANDS = [setup, doctor]
