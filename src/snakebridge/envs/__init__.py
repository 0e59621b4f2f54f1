"""Locked environments built with uv: planning, the lock file, setup, verification, doctor."""
