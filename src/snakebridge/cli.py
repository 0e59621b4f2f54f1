"""The ``snakebridge`` command line."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from snakebridge.errors import SnakeBridgeError

__all__ = ["main"]


def _parse_argument(text: str) -> Any:
    """JSON when it parses (``16``, ``[1, 2]``, ``"x"``), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _render(value: Any) -> str:
    """JSON when the value is plain JSON data, else its repr."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return text if json.loads(text) == value and _json_exact(value) else repr(value)


def _json_exact(value: Any) -> bool:
    if isinstance(value, list):
        return all(_json_exact(v) for v in value)
    if isinstance(value, dict):
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return value is None or type(value) in (bool, int, float, str)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snakebridge")
def main() -> None:
    """Use Python libraries out of process: isolated environments, worker pools, typed facades."""


@main.command("call")
@click.argument("library")
@click.argument("symbol")
@click.argument("args", nargs=-1)
@click.option(
    "--kw",
    "kwargs",
    multiple=True,
    metavar="NAME=VALUE",
    help="A keyword argument (VALUE parsed like ARGS). Repeatable.",
)
@click.option("--timeout", type=float, default=None, help="Seconds before the call is abandoned.")
def call_command(
    library: str, symbol: str, args: tuple[str, ...], kwargs: tuple[str, ...], timeout: float | None
) -> None:
    """Call LIBRARY.SYMBOL(ARGS...) in a worker and print the result.

    Each ARG is parsed as JSON, falling back to a plain string: `snakebridge call math sqrt 16`.
    """
    import snakebridge

    keywords: dict[str, Any] = {}
    for item in kwargs:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--kw")
        keywords[name] = _parse_argument(value)
    try:
        result = snakebridge.call(
            library, symbol, [_parse_argument(a) for a in args], keywords or None, timeout=timeout
        )
        click.echo(_render(result))
    except SnakeBridgeError as exc:
        click.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        snakebridge.shutdown()


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status_command(as_json: bool) -> None:
    """Show the pools of every running snakebridge host process of this user."""
    from snakebridge.runtime.status_files import read_live

    hosts = read_live()
    if as_json:
        click.echo(json.dumps(hosts, indent=2, sort_keys=True))
        return
    if not hosts:
        click.echo("no running snakebridge pools")
        return
    for host in hosts:
        click.echo(f"host pid {host['pid']}")
        for pool in host["pools"]:
            on = " on Ray" if pool.get("backend") == "ray" else ""  # ray (#15)
            click.echo(f"  pool {pool['name']}{on}: size {pool['size']}, queued {pool['queued']}")
            for worker in pool["workers"]:
                startup = worker.get("startup") or {}  # streams (#14): preload/init seconds
                took = sum((startup.get("preload") or {}).values()) + (startup.get("init") or 0)
                click.echo(
                    f"    worker {worker['pid']}: {worker['state']}, {worker['calls']} calls served"
                    + (f", started in {took:.2f}s (preload, init)" if startup else "")
                    + (
                        f", Ray actor {worker['actor']} on {worker['node']}"
                        if "actor" in worker
                        else ""
                    )
                )


def _register() -> None:
    from snakebridge.codegen.commands import COMMANDS as CODEGEN
    from snakebridge.envs.commands import COMMANDS as ENVS

    for command in [*CODEGEN, *ENVS]:
        main.add_command(command)


_register()
