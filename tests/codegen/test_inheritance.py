"""Facade classes subclass the facade class of their library base also where it lives in another
facade module (``MIMEText`` → ``email.message.Message``), unless that import would close a
cycle; the package imports cleanly whichever module comes first and type checks strictly."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import snakebridge
from snakebridge.codegen.layout import render_package
from snakebridge.codegen.pipeline import Project

Make = Callable[..., Project]
SRC = str(Path(snakebridge.__file__).parents[1])

APP = """
from snakebridge_generated import logging
from snakebridge_generated.email.message import Message
from snakebridge_generated.email.mime.text import MIMEText
from snakebridge_generated.logging.handlers import RotatingFileHandler

def text() -> str:
    message: Message = MIMEText("hi")  # a subclass, to the checkers too
    handler: logging.FileHandler = RotatingFileHandler("/dev/null")
    handler.close()
    return message.as_string()
"""
PYPROJECT = """
[tool.snakebridge]
scan = ["app"]
[tool.snakebridge.libraries]
email = "stdlib"
logging = "stdlib"
"""


def modules(root: Path) -> list[str]:
    return sorted(
        ".".join(p.relative_to(root).parent.parts)
        for p in (root / "snakebridge_generated").rglob("__init__.py")
    )


def imports_in_any_order(root: Path) -> None:
    """Each module imported first, in a fresh interpreter."""
    for module in modules(root):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            cwd=root,
            env={"PYTHONPATH": f"{root}:{SRC}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (module, done.stderr[-2000:])


@pytest.fixture
def facades(make_project: Make, tmp_path: Path) -> Iterator[Path]:
    report = make_project({"main.py": APP}, pyproject=PYPROJECT).sync()
    assert not report.errors
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))


def test_classes_subclass_bases_of_other_facade_modules(facades: Path) -> None:
    from snakebridge_generated import logging
    from snakebridge_generated.email.message import Message
    from snakebridge_generated.email.mime.text import MIMEText
    from snakebridge_generated.logging.handlers import RotatingFileHandler

    assert issubclass(MIMEText, Message)  # a sibling module's class
    assert issubclass(RotatingFileHandler, logging.FileHandler)  # the parent package's
    message = MIMEText("hi")
    assert type(message) is MIMEText and isinstance(message, Message)
    assert "as_string" not in vars(MIMEText)  # inherited as it is
    assert message.as_string().endswith("\nhi")
    text = (facades / "snakebridge_generated/email/mime/text/__init__.py").read_text()
    assert "class MIMEText(_base_message_Message):" in text
    aio = (facades / "snakebridge_generated/aio/email/mime/text/__init__.py").read_text()
    assert "_base_" not in aio  # async proxy classes do not inherit
    assert "_base_message_Message" not in vars(sys.modules[MIMEText.__module__])  # deleted


def test_the_package_imports_in_any_order_and_type_checks(facades: Path) -> None:
    imports_in_any_order(facades)
    mypy = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "snakebridge_generated",
            "app",
        ],
        cwd=facades,
        capture_output=True,
        text=True,
    )
    assert mypy.returncode == 0, mypy.stdout
    config = {"typeCheckingMode": "strict", "extraPaths": [SRC]}
    config["include"] = ["app", "snakebridge_generated"]
    (facades / "pyrightconfig.json").write_text(json.dumps(config))
    pyright = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson"], cwd=facades, capture_output=True
    )
    report = json.loads(pyright.stdout)
    errors = [d for d in report["generalDiagnostics"] if d["severity"] == "error"]
    assert errors == [], errors[:5]
    ruff = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "E,F,W,I,B,UP,RUF",
            "snakebridge_generated",
        ],
        cwd=facades,
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0, ruff.stdout


def described(qualname: str, module: str, bases: list[str]) -> dict[str, Any]:
    info = {"kind": "class", "module": module, "qualname": qualname}
    info |= {"remote_type": f"{module}.{qualname}", "bases": bases, "members": []}
    info |= {"signature": {"params": [], "returns": None}, "tier": "runtime", "doc": ""}
    return {"info": info | {"overloads": []}}


def test_a_base_whose_module_would_import_the_subclass_module_first_is_left_out(
    tmp_path: Path,
) -> None:
    # pkg.Top subclasses pkg.sub.Base, and pkg.sub re-exports pkg.Other (home: pkg): pkg would
    # import pkg.sub before defining Other, so Top keeps the plain Ref base. pkg.sub.Leaf
    # subclassing pkg.Other is fine: pkg is past its classes when its tail imports pkg.sub.
    symbols = {
        "Top": described("Top", "pkg", ["pkg.sub.Base"]),
        "Other": described("Other", "pkg", []),
        "sub.Base": described("Base", "pkg.sub", []),
        "sub.Other": described("Other", "pkg", []),
        "sub.Leaf": described("Leaf", "pkg.sub", ["pkg.Other"]),
    }
    out = render_package("gen", {"pkg": {"resolved": "1", "symbols": symbols}}, "0")
    top = out[PurePosixPath("pkg", "__init__.py")]
    sub = out[PurePosixPath("pkg", "sub", "__init__.py")]
    assert "class Top(_sb.Ref, metaclass=_sb.ProxyMeta):" in top
    assert "class Leaf(_base_pkg_Other):" in sub
    assert "from gen.pkg import Other as _base_pkg_Other  # noqa: E402" in sub
    for relative, text in out.items():
        path = tmp_path / "gen" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "gen" / "__init__.py").write_text("")
    imports_in_any_order_of(tmp_path, "gen")


def imports_in_any_order_of(root: Path, package: str) -> None:
    for path in sorted((root / package).rglob("__init__.py")):
        module = ".".join(path.relative_to(root).parent.parts)
        code = f"import {module}, gen.pkg, gen.pkg.sub\n"
        code += "assert issubclass(gen.pkg.sub.Leaf, gen.pkg.Other)"
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": f"{root}:{SRC}", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (module, done.stderr[-2000:])
