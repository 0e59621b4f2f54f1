"""The worker side of snakebridge: runs inside a library's environment.

It needs only the standard library and ``msgpack``, and never imports host code. The host
imports :mod:`snakebridge_worker.protocol` and :mod:`snakebridge_worker.values` too, so both
ends share one definition of the wire.
"""
