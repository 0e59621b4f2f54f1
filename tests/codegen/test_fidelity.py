"""Differential fidelity: facades of 150+ stdlib functions keep the real signatures."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from snakebridge.codegen.generator import sanitize
from snakebridge.codegen.introspect import literal_default
from snakebridge.codegen.pipeline import Project
from snakebridge.facade import NOT_GIVEN

MODULES = [
    "base64",
    "bisect",
    "calendar",
    "colorsys",
    "copy",
    "difflib",
    "fnmatch",
    "glob",
    "heapq",
    "html",
    "json",
    "keyword",
    "math",
    "operator",
    "random",
    "shlex",
    "shutil",
    "statistics",
    "string",
    "textwrap",
    "zlib",
    "secrets",
    "tempfile",
    "gzip",
]


def candidates() -> list[tuple[str, str, inspect.Signature]]:
    found = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        names = getattr(module, "__all__", None) or [n for n in dir(module) if n[0] != "_"]
        for name in sorted(names):
            obj = getattr(module, name, None)
            if not (inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            try:
                found.append((module_name, name, inspect.signature(obj)))
            except (TypeError, ValueError):
                continue
    return found


def shape(signature: inspect.Signature, trusted: bool = True) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults; untrusted (text-signature) defaults become NOT_GIVEN."""
    out = []
    for param in signature.parameters.values():
        if param.default is inspect.Parameter.empty:
            default: Any = inspect.Parameter.empty
        else:
            literal = literal_default(param.default) if trusted else None
            default = param.default if literal is not None else NOT_GIVEN
        out.append((sanitize(param.name), param.kind, default))
    return out


def test_generated_signatures_match_the_library(
    make_project: Callable[..., Project], tmp_path: Path
) -> None:
    symbols = candidates()
    assert len(symbols) >= 150
    libraries = "\n".join(f'{m} = "stdlib"' for m in MODULES)
    uses = "\n".join(f"{m}.{n}" for m, n, _ in symbols)
    imports = "from snakebridge_generated import " + ", ".join(MODULES)
    project = make_project(
        {"uses.py": f"{imports}\n{uses}\n"},
        pyproject=(
            f'[tool.snakebridge]\nscan = ["app"]\n[tool.snakebridge.libraries]\n{libraries}\n'
        ),
    )
    report = project.sync()
    assert not report.errors
    sys.path.insert(0, str(tmp_path))
    mismatches = []
    try:
        for module_name, name, original in symbols:
            facade = importlib.import_module(f"snakebridge_generated.{module_name}")
            generated = inspect.signature(getattr(facade, sanitize(name)))
            original_object = getattr(importlib.import_module(module_name), name)
            trusted = not getattr(original_object, "__text_signature__", None)
            if shape(generated) != shape(original, trusted):
                mismatches.append(f"{module_name}.{name}: {generated} != {original}")
        facade_math = importlib.import_module("snakebridge_generated.math")
        assert facade_math.hypot(3, 4) == 5.0  # and the facade really calls through a worker
    finally:
        sys.path.remove(str(tmp_path))
    assert not mismatches, "\n".join(mismatches)
