"""The codegen commands: sync, check, regen, prune, ledger, promote, doc, plan."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from snakebridge.codegen.generator import ModuleSpec, render_module
from snakebridge.codegen.helper_facades import stale_helpers, write_helper_facades
from snakebridge.codegen.pipeline import Project, SyncReport
from snakebridge.config import load_settings
from snakebridge.errors import SnakeBridgeError

__all__ = ["COMMANDS"]


def _project() -> Project:
    return Project(load_settings())


@contextmanager
def _errors() -> Iterator[None]:
    """Show a snakebridge error as one clear line and exit 1, never a traceback."""
    try:
        yield
    except SnakeBridgeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _print_report(report: SyncReport, planned: bool = False) -> None:
    """What a sync did (or, ``planned``, what it would do)."""
    add, write = ("would add", "would write") if planned else ("added", "wrote")
    for name in report.added:
        click.echo(f"{add} {name}")
    for name in report.typed:
        click.echo(f"{add} {name} (a type results have)")
    for library in report.rerendered:
        click.echo(
            f"{'would re-render' if planned else 're-rendered'} {library} (its facades "
            "came from another snakebridge generator)"
        )
    for path in report.written:
        click.echo(f"{write} {path}")
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    if not (report.added or report.typed or report.written or report.errors or report.rerendered):
        click.echo(f"{'nothing to do: ' if planned else ''}facades are up to date")


class _Progress:
    """A spinner naming the library being introspected; rich is loaded only if one is."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, library: str) -> None:
        if self._progress is None:
            from rich.progress import Progress, SpinnerColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                transient=True,
                disable=not sys.stderr.isatty(),
            )
            self._progress.start()
            self._task = self._progress.add_task("introspecting", total=None)
        self._progress.update(self._task, description=f"introspecting {library}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    progress = _Progress()
    try:
        yield progress
    finally:
        progress.close()


@click.command()
def sync() -> None:
    """Generate facades for every symbol the project uses (only what is new)."""
    with _errors(), _progress() as progress:
        project = _project()
        report = project.sync(progress)
        report.written += write_helper_facades(project.settings)  # streams (#14): helpers
    _print_report(report)
    if report.errors:
        sys.exit(1)


@click.command()
def check() -> None:
    """Fail when the code uses symbols the committed facades lack, or facades are stale."""
    with _errors():
        project = _project()
        problems = project.check() + stale_helpers(project.settings)  # streams (#14): helpers
    for problem in problems:
        click.echo(problem)
    if problems:
        regen = "`snakebridge regen`"  # what a generator change needs
        steps = [regen] if any(regen in p for p in problems) else []
        steps += [] if all(regen in p for p in problems) else ["`snakebridge sync`"]
        click.echo(f"{len(problems)} problem(s); run {', then '.join(steps)}", err=True)
        sys.exit(1)
    click.echo("facades match the code")


@click.command()
@click.option("--clean", is_flag=True, help="Delete the generated tree first.")
def regen(clean: bool) -> None:
    """Re-introspect every recorded symbol and rewrite the facades."""
    with _errors():
        _print_report(_project().regen(clean))


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def prune(dry_run: bool) -> None:
    """Remove generated symbols the code no longer uses."""
    with _errors():
        removed = _project().prune(dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in removed:
        click.echo(f"{verb} {name}")
    if not removed:
        click.echo("nothing to prune")


@click.command()
def ledger() -> None:
    """List symbols called dynamically (not generated) at run time."""
    with _errors():
        entries = _project().ledger()
    if not entries:
        click.echo("the ledger is empty")
    for library, calls in sorted(entries.items()):
        for dotted, count in sorted(calls.items()):
            click.echo(f"{library}.{dotted}  ({count} calls)")


@click.command()
@click.argument("symbols", nargs=-1)
def promote(symbols: tuple[str, ...]) -> None:
    """Generate facades for ledger entries (all, or the SYMBOLS given as LIB.NAME)."""
    with _errors():
        _print_report(_project().promote(list(symbols)))


@click.command()
@click.argument("target")
def doc(target: str) -> None:
    """Show the signature, signature tier and docstring of LIB.SYMBOL, from the library."""
    library, _, dotted = target.partition(".")
    if not dotted:
        raise click.BadParameter("write LIB.SYMBOL, e.g. json.dumps", param_hint="TARGET")
    with _errors():
        result = _project().introspect(library, [dotted])
    if dotted in result.get("errors", {}):
        click.echo(f"error: {result['errors'][dotted]}", err=True)
        sys.exit(1)
    info = result["symbols"][dotted]
    text = render_module(_spec(library, {dotted.split(".")[-1]: info}))
    body = text.split("__all__", 1)[1].split("\n", 1)[1].rsplit("\n\ndef __getattr__", 1)[0]
    click.echo(f"{target}  ({info.get('kind')}, signature tier: {info.get('tier')})")
    click.echo(body.strip("\n"))


def _spec(library: str, symbols: dict[str, Any]) -> ModuleSpec:
    return ModuleSpec(
        version="", library=library, resolved="", lib_path=library, package="", symbols=symbols
    )


@click.command()
@click.argument("libraries", nargs=-1)
def plan(libraries: tuple[str, ...]) -> None:
    """Show what `snakebridge sync` would add and write, writing nothing.

    With LIBRARIES: how many symbols and lines `generate = "all"` would produce for each.
    """
    with _errors():
        project = _project()
        if not libraries:
            report = project.sync(dry_run=True)
            _print_report(report, planned=True)
            return
        for library in libraries:
            result = project.introspect(library, [], everything=True)
            symbols = result.get("symbols", {})
            text = render_module(_spec(library, {k.split(".")[-1]: v for k, v in symbols.items()}))
            click.echo(
                json.dumps({"library": library, "symbols": len(symbols), "lines": text.count("\n")})
            )


COMMANDS = [sync, check, regen, prune, ledger, promote, doc, plan]
