"""Where snakebridge keeps files, and the one way it writes them.

Two places:

- the per-user **runtime directory** — ``$XDG_RUNTIME_DIR/snakebridge``, else
  ``<tempdir>/snakebridge-<uid>`` — holding status files and the worker-path links. Every
  directory in it is verified before use, as ssh does: a directory that is a symlink, is owned
  by another user, or is open to group or others is refused with :class:`UnsafePath`;
- each project's **state directory** ``.snakebridge/`` next to its pyproject (environments,
  manifest, ledger, caches) and its ``snakebridge.lock``.

:func:`atomic_write` writes through a temp file (``O_EXCL | O_NOFOLLOW``) and a rename, with the
umask's permissions for project files and 0600 for private ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from snakebridge.errors import UnsafePath, UnwritablePath

__all__ = [
    "STATE_DIR",
    "atomic_write",
    "env_dir",
    "envs_dir",
    "interpreters_cache",
    "ledger_path",
    "lock_path",
    "manifest_path",
    "private_dir",
    "read_private",
    "runtime_dir",
    "scan_cache",
    "state_dir",
    "status_dir",
    "worker_path_dir",
]

STATE_DIR = ".snakebridge"


# -- the per-user runtime directory -----------------------------------------------------------
def _refuse(path: Path, problem: str) -> UnsafePath:
    return UnsafePath(
        f"{path} {problem}; snakebridge keeps private files there and will not use it. "
        f"Remove it (or fix its owner and mode: chown {os.getuid()} and chmod 700) and retry"
    )


def _verify(path: Path, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a directory")
    if info.st_uid != os.getuid():
        raise _refuse(path, f"is owned by uid {info.st_uid}, not by you (uid {os.getuid()})")
    if info.st_mode & 0o077:
        raise _refuse(path, f"has mode {stat.S_IMODE(info.st_mode):o}: others can reach it")


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can use: created 0700, or verified if it exists."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    _verify(path, os.lstat(path))
    return path


def runtime_dir() -> Path:
    """The per-user runtime directory (created and verified on each use)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        base = Path(xdg)
        info = os.stat(base)
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise _refuse(base, "(XDG_RUNTIME_DIR) is not yours alone")
        return private_dir(base / "snakebridge")
    return private_dir(Path(tempfile.gettempdir()) / f"snakebridge-{os.getuid()}")


def status_dir() -> Path:
    """Where host processes publish their pool status."""
    return private_dir(runtime_dir() / "status")


def worker_path_dir(source: Path) -> str:
    """A private directory holding only a ``snakebridge_worker`` link to ``source``.

    Workers put it on ``sys.path``: they import the host's own worker package and nothing
    else of the host's tree.
    """
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    target = private_dir(runtime_dir() / f"worker-path-{digest}")
    link = target / "snakebridge_worker"
    try:
        current = os.readlink(link)
    except OSError:
        current = None
    if current != str(source):
        tmp = target / f".link-{os.getpid()}-{os.urandom(4).hex()}"
        tmp.symlink_to(source, target_is_directory=True)
        os.replace(tmp, link)
    return str(target)


def read_private(path: Path, limit: int = 1 << 20) -> bytes:
    """The contents of a file in a private directory, never following a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit)


# -- project state ----------------------------------------------------------------------------
def state_dir(root: Path) -> Path:
    """``<root>/.snakebridge``: environments, manifest, ledger and caches of one project."""
    return root / STATE_DIR


def envs_dir(root: Path) -> Path:
    return state_dir(root) / "envs"


def env_dir(root: Path, env: str) -> Path:
    return envs_dir(root) / env


def interpreters_cache(root: Path) -> Path:
    return envs_dir(root) / ".interpreters.json"


def manifest_path(root: Path) -> Path:
    return state_dir(root) / "manifest.json"


def ledger_path(root: Path) -> Path:
    return state_dir(root) / "ledger.json"


def scan_cache(root: Path) -> Path:
    return state_dir(root) / "cache" / "scan.json"


def lock_path(root: Path) -> Path:
    return root / "snakebridge.lock"


# -- writing ----------------------------------------------------------------------------------
def _umask() -> int:
    """The process umask, read without changing it where /proc allows (threads race on
    ``os.umask``)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(
    path: Path, data: str | bytes, *, private: bool = False, fsync: bool = False
) -> bool:
    """Replace ``path`` with ``data`` atomically; False (nothing written) when unchanged.

    The temp file is created with ``O_EXCL | O_NOFOLLOW`` next to ``path``; the result has
    mode 0600 when ``private``, else what the umask gives any new file (0644 usually).
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if path.read_bytes() == raw:
            return False
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise UnwritablePath(
            f"cannot write {path}: {exc.strerror or exc}; make {path.parent} writable (or point "
            "the setting that names it elsewhere) and retry"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
