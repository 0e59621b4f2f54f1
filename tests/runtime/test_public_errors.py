"""Every error snakebridge raises can be caught by its public name."""

from __future__ import annotations

import snakebridge
from snakebridge import errors


def test_every_snakebridge_error_is_exported_from_the_package() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    raised = {cls.__name__ for cls in classes if isinstance(cls, type)}
    assert {"UnsafePath", "UnwritablePath", "EnvSetupError"} <= raised
    assert raised <= set(snakebridge.__all__)
    assert all(getattr(snakebridge, name) is getattr(errors, name) for name in raised)
