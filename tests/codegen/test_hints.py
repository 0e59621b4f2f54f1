"""Hints that must stay valid Python (and mean the same) after rendering."""

from __future__ import annotations

import ast

from snakebridge.codegen.hints import HintContext, hint


def test_the_empty_tuple_type_stays_tuple_of_unit() -> None:
    # numpy's stubs: ``def shape(self) -> tuple[()] | _Shape`` (a scalar's shape)
    ctx = HintContext(module="numpy", index={})
    assert hint("tuple[()] | tuple[int, ...]", ctx) == "tuple[()] | tuple[int, ...]"
    assert hint("typing.Tuple[()]", ctx) == "tuple[()]"
    ast.parse(f"def f() -> {hint('tuple[()]', ctx)}: ...")
