"""The one function runtime events go through; handlers attach in-process.

Events are ``(name, phase, metadata)``, e.g. ``("runtime.worker", "crash", {"pool": ..., "pid":
...})``. A handler that raises breaks nothing: its error is ignored.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Handler", "attach", "detach", "emit"]

Handler = Callable[[str, str, dict[str, Any]], None]
_handlers: tuple[Handler, ...] = ()
_lock = threading.Lock()


def attach(handler: Handler) -> None:
    """Call ``handler(name, phase, metadata)`` for every event from now on."""
    global _handlers
    with _lock:
        _handlers = (*_handlers, handler)


def detach(handler: Handler) -> None:
    """Stop calling ``handler``."""
    global _handlers
    with _lock:
        _handlers = tuple(h for h in _handlers if h is not handler)


def emit(name: str, phase: str, **metadata: Any) -> None:
    """Deliver one event to every attached handler."""
    for handler in _handlers:
        with contextlib.suppress(Exception):
            handler(name, phase, metadata)
