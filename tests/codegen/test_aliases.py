"""One import name under two facade names in two environments (numpy 2 beside numpy 1.26).

Each environment gets facade classes of its own, so ``numpy126.int8(100)`` is built by the
numpy 1.26 workers; and facades stay valid on another machine's build of the same Python.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from snakebridge.codegen.layout import render_package
from snakebridge.codegen.manifest import Manifest
from snakebridge.codegen.pipeline import Project, interpreter_identity
from snakebridge.config import load_settings


def int8_entry(resolved: str) -> dict[str, Any]:
    info = {"kind": "class", "module": "numpy", "qualname": "int8", "remote_type": "numpy.int8"}
    info |= {"bases": [], "members": [], "signature": {"params": [], "returns": None}}
    info |= {"tier": "runtime", "overloads": [], "doc": ""}
    return {"resolved": resolved, "symbols": {"int8": {"info": info}}, "aliases": {}}


LIBRARIES = {"numpy": int8_entry("2.1.3"), "numpy126": int8_entry("1.26.4")}


def test_each_environment_gets_its_own_classes() -> None:
    scopes = {"numpy": "default", "numpy126": "numpy126"}
    out = render_package("gen", LIBRARIES, "0", scopes=scopes)
    legacy = out[PurePosixPath("numpy126", "__init__.py")]
    assert "class int8(" in legacy and '__sb_remote__ = (_LIB, "int8")' in legacy
    assert '_LIB = "numpy126"' in legacy and "snakebridge_generated.numpy " not in legacy
    assert "from gen.numpy import" not in legacy
    assert "class int8(" in out[PurePosixPath("numpy", "__init__.py")]


def test_one_environment_shares_one_class() -> None:
    out = render_package("gen", LIBRARIES, "0", scopes={"numpy": "default", "numpy126": "default"})
    legacy = out[PurePosixPath("numpy126", "__init__.py")]
    assert "class int8(" not in legacy
    assert "from gen.numpy import int8 as int8" in legacy


def lock_for(tmp_path: Path, version: str, sha256: str) -> None:
    python = {"implementation": "cpython", "platform": "linux-x86_64", "sha256": sha256}
    python |= {"tag": "cp311-linux_x86_64", "version": version}
    entry = {"indexes": [], "python": python, "python_request": "", "requested": []}
    entry["packages"] = {"six": {"hashes": [], "requested": "six==1.16.0", "version": "1.16.0"}}
    lock = {"envs": {"default": entry}, "format": 1, "generator": "x", "snakebridge": "0.1.0"}
    (tmp_path / "snakebridge.lock").write_text(json.dumps(lock))


def test_facades_hold_on_another_build_of_the_same_python(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.snakebridge.libraries]\nsix = "==1.16.0"\n')
    lock_for(tmp_path, "3.11.7", "a" * 64)
    project = Project(load_settings(tmp_path))
    made = interpreter_identity({"implementation": "cpython", "version": "3.11.7"})
    assert made == "cpython 3.11"
    manifest = Manifest(tmp_path / "manifest.json")
    manifest.libraries["six"] = {"resolved": "1.16.0", "symbols": {}, "interpreter": made}
    assert project._stale_libraries(manifest) == []
    lock_for(tmp_path, "3.11.9", "b" * 64)  # another machine: another binary, another patch
    assert project._stale_libraries(manifest) == []
    lock_for(tmp_path, "3.12.1", "c" * 64)
    assert project._stale_libraries(manifest) == [
        "six: facades were generated with another interpreter than environment 'default' now "
        "has (cpython 3.11, the lock has cpython 3.12); run `snakebridge regen`"
    ]
    manifest.libraries["six"]["interpreter"] = "c" * 64  # an older manifest: a binary hash
    assert project._stale_libraries(manifest) == []
