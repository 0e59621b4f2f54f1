"""Import rules of the codebase, enforced: layers point one way and the runtime has no cycles.

Every import counts, lazy ones inside functions too; only ``if TYPE_CHECKING:`` blocks are
exempt (they never run).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports at run time (resolved to absolute names)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}


def test_the_runtime_never_imports_codegen_envs_or_the_cli() -> None:
    offending = {
        (name, target)
        for name, targets in _graph().items()
        if name.startswith("snakebridge.runtime")
        for target in targets
        if target.startswith(("snakebridge.codegen", "snakebridge.envs", "snakebridge.cli"))
    }
    assert not offending


def test_the_worker_package_imports_nothing_of_the_host() -> None:
    offending = {
        (name, target)
        for name, targets in _graph().items()
        if name.startswith("snakebridge_worker")
        for target in targets
        if target.startswith("snakebridge.") or target == "snakebridge"
    }
    assert not offending


@pytest.mark.parametrize(
    "layer", ["snakebridge.runtime", "snakebridge.codegen", "snakebridge.envs"]
)
def test_no_import_cycles_inside(layer: str) -> None:
    graph = {
        name: {t for t in targets if t.startswith(layer + ".") and t != name}
        for name, targets in _graph().items()
        if name.startswith(layer + ".")
    }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_foundation_modules_import_no_layer() -> None:
    graph = _graph()
    for foundation in ("snakebridge.errors", "snakebridge.paths"):
        assert not {
            t
            for t in graph.get(foundation, set())
            if t.startswith(("snakebridge.runtime", "snakebridge.codegen", "snakebridge.envs"))
        }, foundation
