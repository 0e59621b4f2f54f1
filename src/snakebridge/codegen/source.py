"""Python source in the layout ``ruff format`` produces, for the few shapes facades use.

The generator builds calls and tuples as small trees (:class:`Call`, :class:`Seq`) and asks
:func:`statement` for lines: a statement that fits stays on one line; otherwise its last
bracket opens and a call's arguments go on one indented line if they fit there, else (and
always for a collection literal) one item per line with a trailing comma, nested brackets split
the same way. That is the right-hand split black and ruff apply, so the output is a fixed point
of ``ruff format`` (default settings, 88 columns).
"""

from __future__ import annotations

import ast
import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "WIDTH",
    "Call",
    "Seq",
    "async_defs",
    "def_lines",
    "docstring",
    "flat",
    "literal",
    "quote",
    "statement",
    "union_members",
    "writing_async",
]

WIDTH = 88
_KEYWORD: contextvars.ContextVar[str] = contextvars.ContextVar("def_keyword", default="def")


@contextlib.contextmanager
def async_defs() -> Iterator[None]:
    """Within the block, :func:`def_lines` writes ``async def`` (the async facades render
    their functions and methods with the same code as the sync ones)."""
    token = _KEYWORD.set("async def")
    try:
        yield
    finally:
        _KEYWORD.reset(token)


def writing_async() -> bool:
    """Whether :func:`def_lines` writes ``async def`` now (inside :func:`async_defs`)."""
    return _KEYWORD.get() == "async def"


@dataclass(frozen=True)
class Seq:
    """A bracketed, comma-separated sequence: ``(a, b)``, ``[a, b]``, ``{k: v}``."""

    items: tuple[Expr, ...]
    open: str = "("
    close: str = ")"
    bare: bool = False  # no brackets while on one line (the names of a ``from`` import)


@dataclass(frozen=True)
class Call:
    """``func(args...)``."""

    func: str
    args: tuple[Expr, ...]


Expr = str | Seq | Call


def quote(text: str) -> str:
    """A string literal as ruff writes it: double quotes unless that needs more escapes."""
    literal = repr(text)
    if literal[0] == '"' or '"' in text:
        return literal
    return '"' + literal[1:-1].replace("\\'", "'") + '"'


def literal(text: str) -> Expr:
    """A default's source text as ruff writes it: strings and bytes in double quotes where
    that needs no more escapes, tuples and lists as :class:`Seq` (they split item by item)."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    return _literal(node, text)


def _literal(node: ast.expr, text: str) -> Expr:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return quote(node.value)
    if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
        literal = repr(node.value)
        if literal[1] == '"' or b'"' in node.value:
            return literal
        return 'b"' + literal[2:-1].replace("\\'", "'") + '"'
    if isinstance(node, ast.Tuple | ast.List):
        items = tuple(_literal(e, ast.unparse(e)) for e in node.elts)
        return Seq(items, *("()" if isinstance(node, ast.Tuple) else "[]"))
    return text


def flat(expr: Expr) -> str:
    """``expr`` on one line (a one-item tuple keeps its comma)."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, Call):
        return f"{expr.func}({', '.join(flat(a) for a in expr.args)})"
    inner = ", ".join(flat(i) for i in expr.items)
    if expr.bare:
        return inner
    if len(expr.items) == 1 and expr.open == "(":
        inner += ","
    return f"{expr.open}{inner}{expr.close}"


def _parts(expr: Seq | Call) -> tuple[str, tuple[Expr, ...], str]:
    if isinstance(expr, Call):
        return expr.func + "(", expr.args, ")"
    return expr.open, expr.items, expr.close


def _split(indent: str, head: str, expr: Expr, tail: str) -> list[str]:
    """Lines for ``head + expr + tail`` at ``indent``, split at ``expr``'s brackets."""
    line = f"{indent}{head}{flat(expr)}{tail}"
    if len(line) <= WIDTH or isinstance(expr, str):
        return [line]
    opener, items, closer = _parts(expr)
    if not items:
        return [line]
    inner = indent + "    "
    body = ", ".join(flat(i) for i in items)
    single_tuple = len(items) == 1 and opener == "("
    if isinstance(expr, Call) and len(inner + body) + int(single_tuple) <= WIDTH:
        return [
            f"{indent}{head}{opener}",
            inner + body + ("," if single_tuple else ""),
            f"{indent}{closer}{tail}",
        ]
    lines = [f"{indent}{head}{opener}"]
    for item in items:
        lines += _split(inner, "", item, ",")
    return [*lines, f"{indent}{closer}{tail}"]


def statement(indent: str, head: str, expr: Expr, tail: str = "") -> list[str]:
    """``head + expr + tail`` as formatted lines (``expr`` is the part that may split)."""
    return _split(indent, head, expr, tail)


def def_lines(
    indent: str, name: str, params: Sequence[str], returns: str, suffix: str = ""
) -> list[str]:
    """A ``def`` line; when too long, its parameters on one indented line if they fit (two
    or more of them), else one per line with a trailing comma, long unions split at ``|``."""
    tail = f" -> {returns}:{suffix}"
    keyword = _KEYWORD.get()
    one = f"{indent}{keyword} {name}({', '.join(params)}){tail}"
    if len(one) <= WIDTH or not params:
        return [one]
    inner = indent + "    "
    body = ", ".join(params)
    if len(params) > 1 and len(inner + body) <= WIDTH:
        return [f"{indent}{keyword} {name}(", inner + body, f"{indent}){tail}"]
    lines = [f"{indent}{keyword} {name}("]
    for param in params:
        lines += _param_lines(inner, param + ",")
    return [*lines, *_subscript_lines(indent, f"){tail}")]


def _param_lines(inner: str, text: str) -> list[str]:
    """One parameter; a union too long for its line continues on ``| ...`` lines, a tuple
    or list default too long for it goes one item per line."""
    if len(inner + text) <= WIDTH:
        return [inner + text]
    head, equals, default = text.rstrip(",").partition(" = ")
    if equals and default[:1] in "([":
        expr = literal(default)
        if isinstance(expr, Seq) and flat(expr) == default:
            return _split(inner, f"{head} = ", expr, text[len(head + equals + default) :])
    parts = _top_level(text, " | ")
    if len(parts) > 1:
        pieces = [parts[0], *(f"| {part}" for part in parts[1:])]
        return [line for piece in pieces for line in _subscript_lines(inner, piece)]
    return _subscript_lines(inner, text)


def _subscript_lines(inner: str, text: str) -> list[str]:
    """A too-long ``X[a, b, ...]`` with its items one per line (a subscript splits so)."""
    if len(inner + text) <= WIDTH:
        return [inner + text]
    opening = text.find("[")
    closing = _matching(text, opening) if opening >= 0 else -1
    if closing < 0:
        return [inner + text]
    items = _top_level(text[opening + 1 : closing], ", ")
    body = [line for item in items for line in _param_lines(inner + "    ", item + ",")]
    return [inner + text[: opening + 1], *body, inner + text[closing:]]


def union_members(hint: str) -> list[str]:
    """The members of a union hint (``A | B[C | D]`` → ``A``, ``B[C | D]``)."""
    return _top_level(hint, " | ")


def _top_level(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside brackets and string literals."""
    parts, depth, start, quoted = [], 0, 0, ""
    for index, char in enumerate(text):
        if quoted:
            quoted = "" if char == quoted else quoted
            continue
        if char in "\"'":
            quoted = char
        depth += char in "([{"
        depth -= char in ")]}"
        if depth == 0 and text.startswith(separator, index):
            parts.append(text[start:index])
            start = index + len(separator)
    return [*parts, text[start:]]


def _matching(text: str, opening: int) -> int:
    depth = 0
    for index in range(opening, len(text)):
        depth += text[index] in "([{"
        depth -= text[index] in ")]}"
        if depth == 0:
            return index
    return -1


def _escape(text: str) -> str:
    out = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return "".join(
        c if c in "\n" or c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else c
        for c in out
    )


def docstring(text: str, indent: str) -> list[str]:
    """A docstring in ruff's normal form (stripped lines, closing quotes on their own line)."""
    lines = [line.expandtabs(8).rstrip() for line in text.strip("\n").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return []
    lines[0] = lines[0].lstrip()
    margin = min((len(x) - len(x.lstrip()) for x in lines[1:] if x.strip()), default=0)
    lines = [lines[0], *(x[margin:] for x in lines[1:])]  # as ruff re-indents them
    lines = [_escape(line) for line in lines]
    if lines[0].startswith('"'):
        lines[0] = " " + lines[0]
    if len(lines) == 1:
        last = lines[0] + (" " if lines[0].endswith('"') else "")
        return [f'{indent}"""{last}"""']
    out = [f'{indent}"""{lines[0]}']
    out += [f"{indent}{line}" if line else "" for line in lines[1:]]
    return [*out, f'{indent}"""']
