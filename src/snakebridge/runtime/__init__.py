"""The runtime core: pools of worker processes, the wire, values and Refs.

It never imports ``snakebridge.codegen``, ``snakebridge.envs`` or the CLI; those build on it.
"""
