"""The runtime's errors: the foundation module :mod:`snakebridge.errors`, re-exported here."""

from snakebridge.errors import *  # noqa: F403
from snakebridge.errors import __all__ as __all__
from snakebridge.errors import register_remote_exception as register_remote_exception
from snakebridge.errors import registered_exception as registered_exception
from snakebridge.errors import remote_error_class as remote_error_class
