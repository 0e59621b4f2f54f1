"""`[tool.snakebridge]` → validated, immutable settings.

The table is found in the nearest ``pyproject.toml`` above the working directory, or in the
file named by ``SNAKEBRIDGE_CONFIG``. With no table at all an embedded default applies: every
module importable in the host's own environment is callable, through one pool of 2 workers.
Every problem is a :class:`~snakebridge.ConfigError` that names the file and the key.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from snakebridge.errors import ConfigError

__all__ = [
    "EnvSpec",
    "LibrarySpec",
    "PoolSpec",
    "Settings",
    "load_settings",
    "parse_bytes",
    "parse_duration",
]

T = TypeVar("T")
SignatureTier = Literal["runtime", "text_signature", "stub", "docstring", "variadic"]
STDLIB = "stdlib"
DEFAULT = "default"


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class LibrarySpec(_Strict, frozen=True):
    """One entry of ``[tool.snakebridge.libraries]`` (a bare string is its ``version``)."""

    version: str | None = None
    package: str | None = None
    module: str | None = None
    env: str = DEFAULT
    pool: str | None = None
    include: list[str] = []
    exclude: list[str] = []
    generate: Literal["used", "all"] = "used"
    depth: int = 1
    streaming: list[str] = []
    min_signature_tier: SignatureTier = "variadic"
    idempotent: bool | list[str] = False
    allow_private: bool = False

    @property
    def is_stdlib(self) -> bool:
        return self.version == STDLIB


class EnvSpec(_Strict, frozen=True):
    """``[tool.snakebridge.envs.NAME]``: interpreter, extra requirements, worker env vars."""

    python: str | None = None
    requirements: list[str] = []
    env_vars: dict[str, str] = {}
    variants: dict[str, str] = {}


class PoolSpec(_Strict, frozen=True):
    """``[tool.snakebridge.pools.NAME]``: how many workers and how they live."""

    env: str = DEFAULT
    size: int = 2
    profile: Literal["process", "thread"] = "process"
    max_requests: int | None = None
    ttl: str | float | None = None
    max_memory: str | int | None = None
    startup_timeout: float = 20.0
    call_timeout: float | None = None
    queue_timeout: float = 60.0
    max_queue: int = 10_000
    env_vars: dict[str, str] = {}
    preload: list[str] = []  # streams (#14): modules each worker imports before taking calls
    init: str | None = None  # streams (#14): "helper.module:function" run once per worker
    # scale (#15): autoscaling between min_size and max_size (both default to size); a worker
    # idle for idle_timeout above min_size stops
    min_size: int | None = None
    max_size: int | None = None
    idle_timeout: str | float | None = None
    threads: int | None = None  # profile = "thread": calls one worker runs at once
    start: Literal["fresh", "zygote"] = "fresh"  # zygote: workers forked from a template

    @property
    def capacity(self) -> int:
        """Calls one worker runs at once (1 for the process profile)."""
        return (self.threads or 4) if self.profile == "thread" else 1

    @property
    def min_workers(self) -> int:
        return self.size if self.min_size is None else self.min_size

    @property
    def max_workers(self) -> int:
        return max(self.size, self.min_workers) if self.max_size is None else self.max_size

    @property
    def start_workers(self) -> int:
        return min(max(self.size, self.min_workers), self.max_workers)

    @property
    def idle_timeout_s(self) -> float:
        parsed = parse_duration(self.idle_timeout)
        return 60.0 if parsed is None else parsed

    # ray (#15): workers as Ray actors (docs/ray.md); these keys only apply to backend="ray"
    backend: Literal["process", "ray"] = "process"
    ray_address: str | None = None  # None or "local": a private local cluster; "auto", "ray://…"
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = {}
    runtime_env: Literal["pins", "py_executable", "none"] = "pins"

    def __post_init__(self) -> None:
        """Ray keys (#15): msgspec reports a ValueError here under this pool's key."""
        if self.backend != "ray":
            return
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ValueError('backend = "ray" needs Ray on the host: pip install snakebridge[ray]')
        for key in ("num_cpus", "num_gpus"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} must be a finite number 0 or more, got {value}")
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"resources.{name}: use num_cpus/num_gpus for {name}")
            if not (math.isfinite(amount) and amount > 0):
                raise ValueError(f"resources.{name} must be a number above 0, got {amount}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise ValueError('ray_address must name a cluster ("auto", "ray://host:10001")')

    @property
    def ttl_s(self) -> float | None:
        return parse_duration(self.ttl)

    @property
    def max_memory_bytes(self) -> int | None:
        return parse_bytes(self.max_memory)


class _Table(_Strict, frozen=True):
    generated: str = "snakebridge_generated"
    generated_path: str = "."
    scan: list[str] | None = None
    strict: bool = False
    shm_threshold: str | int | None = None  # dataplane: bytes from which buffers go by shm
    libraries: dict[str, str | LibrarySpec] = {}
    envs: dict[str, EnvSpec] = {}
    pools: dict[str, PoolSpec] = {}
    variants: dict[str, dict[str, str]] = {}
    helpers: list[str] = []  # streams (#14): host modules shipped to workers as source


@dataclass(frozen=True)
class Settings:
    """Validated settings of one project (or the embedded default when ``path`` is None)."""

    path: Path | None
    root: Path
    generated: str = "snakebridge_generated"
    generated_path: str = "."
    scan: tuple[str, ...] | None = None
    strict: bool = False
    shm_threshold: int | None = None  # dataplane: None = measured default, -1 = never
    libraries: dict[str, LibrarySpec] | None = None
    envs: dict[str, EnvSpec] = field(default_factory=lambda: {DEFAULT: EnvSpec()})
    pools: dict[str, PoolSpec] = field(default_factory=lambda: {DEFAULT: PoolSpec()})
    variants: dict[str, dict[str, str]] = field(default_factory=dict)
    helpers: tuple[str, ...] = ()

    def helper_pool(self, helper: str) -> str:
        """The pool a helper's calls go to: the one whose ``init`` it provides, else default."""
        owners = [
            n for n, s in sorted(self.pools.items()) if (s.init or "").split(":")[0] == helper
        ]
        return owners[0] if owners else DEFAULT

    @property
    def allow_all(self) -> bool:
        """True for the embedded default: everything in the host environment is callable."""
        return self.libraries is None

    def allowlist(self) -> dict[str, dict[str, bool]] | None:
        """What the workers enforce: ``{module root: {"allow_private": bool}}``; None when
        there is no config table (no boundary). Sent to every worker in its INIT frame."""
        if self.libraries is None:
            return None
        return {
            spec.module or name: {"allow_private": spec.allow_private}
            for name, spec in sorted(self.libraries.items())
        }

    def library_for(self, name: str) -> tuple[str, LibrarySpec] | None:
        """The configured library that owns dotted module ``name`` (``numpy.linalg`` → numpy)."""
        if self.libraries is None:
            return None
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            spec = self.libraries.get(key)
            if spec is not None:
                return key, spec
            if key in self.helpers:
                return key, LibrarySpec(pool=self.helper_pool(key))
        return None

    def pool_for(self, library: str | None) -> str:
        """Pool for ``library``: its ``pool``, else the one named after its env, else default."""
        spec = self.libraries.get(library) if (self.libraries and library) else None
        if spec is None:
            return self.helper_pool(library) if library in self.helpers else DEFAULT
        return spec.pool if spec.pool is not None else spec.env

    def pool_spec(self, name: str) -> PoolSpec:
        """The pool ``name``; an environment without a pool of its own gets a default one."""
        spec = self.pools.get(name)
        return spec if spec is not None else PoolSpec(env=name)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_duration(value: str | float | None) -> float | None:
    """Seconds from ``30``, ``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"2d"``."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30, '250ms', '10s', '5m', '1h')")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_bytes(value: str | int | None) -> int | None:
    """Bytes from ``1048576``, ``"512MB"``, ``"2GiB"``, ``"100k"``."""
    if value is None or isinstance(value, int):
        return value
    match = _BYTES.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size (use e.g. '512MB', '2GiB', 1048576)")
    unit = (match.group(2) or "").lower()
    scale = _BYTE_UNITS[unit[:1]] if unit else 1
    if "i" in unit:
        scale = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[unit[0]]
    return int(float(match.group(1)) * scale)


def _convert(value: object, kind: type[T], prefix: str, path: Path) -> T:
    """``msgspec.convert`` whose errors name the full dotted key and the file."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        problem, _, where = str(exc).partition(" - at `")
        key = prefix + re.sub(r"\[(\d+)\]", r"[\1]", where.rstrip("`").removeprefix("$"))
        unknown = re.search(r"unknown field `([^`]+)`", problem)
        if unknown:
            key = f"{key}.{unknown.group(1)}"
            problem = f"unknown key {unknown.group(1)!r}"
        raise ConfigError(problem, key=key, path=path) from None


_SECTIONS: dict[str, Any] = {
    "libraries": str | LibrarySpec,
    "envs": EnvSpec,
    "pools": PoolSpec,
    "variants": dict[str, str],
}


def _validate(table: dict[str, Any], path: Path) -> _Table:
    """Validate section by section so errors can name the entry (msgspec hides dict keys)."""
    checked: dict[str, Any] = {}
    for name, value in table.items():
        entry_type = _SECTIONS.get(name)
        if entry_type is None or not isinstance(value, dict):
            checked[name] = value
            continue
        checked[name] = {
            key: _convert(entry, entry_type, f"tool.snakebridge.{name}.{key}", path)
            for key, entry in value.items()
        }
    return _convert(checked, _Table, "tool.snakebridge", path)


def _pool_problems(pool: PoolSpec) -> Iterator[tuple[str, str]]:
    """(key, problem) for each pool value that validates as a type but cannot work."""
    for key, parse in (("ttl", parse_duration), ("max_memory", parse_bytes)):
        try:
            parsed = parse(getattr(pool, key))
        except ValueError as exc:
            yield key, str(exc)
            continue
        if parsed is not None and not (0 < parsed < math.inf):
            unit = "a duration" if key == "ttl" else "a size"
            yield key, f"{key} must be {unit} above 0 (or left out for no limit), got {parsed}"
    for key, least in (("max_requests", 1), ("max_queue", 1)):
        value = getattr(pool, key)
        if value is not None and value < least:
            yield key, f"{key} must be at least {least}, got {value}"
    timeouts = (("startup_timeout", False), ("call_timeout", False), ("queue_timeout", True))
    for key, zero_ok in timeouts:
        value = getattr(pool, key)
        if value is None:
            continue
        low_ok = value >= 0 if zero_ok else value > 0
        if not (low_ok and math.isfinite(value)):
            bound = "0 or more" if zero_ok else "above 0"
            yield key, f"{key} must be a finite number of seconds {bound}, got {value}"


def _check_semantics(parsed: _Table, path: Path) -> None:
    def fail(key: str, problem: str) -> None:
        raise ConfigError(problem, key=f"tool.snakebridge.{key}", path=path)

    pools = {DEFAULT, *parsed.pools}
    envs = {DEFAULT, *parsed.envs}
    for name, pool in parsed.pools.items():
        if pool.size < 1:
            fail(f"pools.{name}.size", f"pool size must be at least 1, got {pool.size}")
        if pool.env not in envs:
            fail(f"pools.{name}.env", f"unknown environment {pool.env!r} (known: {sorted(envs)})")
        for key, problem in _pool_problems(pool):
            fail(f"pools.{name}.{key}", problem)
    for name, pool in parsed.pools.items():  # scale (#15): autoscaling bounds
        for key in ("min_size", "max_size"):
            value = getattr(pool, key)
            if value is not None and value < 1:
                fail(f"pools.{name}.{key}", f"{key} must be at least 1, got {value}")
        if pool.threads is not None and (pool.threads < 1 or pool.profile != "thread"):
            fail(
                f"pools.{name}.threads",
                'threads needs profile = "thread" and must be at least 1, got '
                f"{pool.threads} with profile {pool.profile!r}",
            )
        if pool.start == "zygote" and not hasattr(os, "fork"):
            fail(f"pools.{name}.start", 'start = "zygote" needs fork (POSIX); use "fresh"')
        if pool.min_workers > pool.max_workers:
            fail(
                f"pools.{name}.max_size",
                f"max_size ({pool.max_workers}) is below min_size ({pool.min_workers}); "
                "raise max_size or lower min_size",
            )
        try:
            idle = parse_duration(pool.idle_timeout)
        except ValueError as exc:
            fail(f"pools.{name}.idle_timeout", str(exc))
        if idle is not None and not (0 < idle < math.inf):
            fail(f"pools.{name}.idle_timeout", f"idle_timeout must be above 0, got {idle}")
    for name, pool in parsed.pools.items():  # streams (#14)
        if pool.init is not None and not re.fullmatch(r"[\w.]+:\w+", pool.init):
            fail(f"pools.{name}.init", f"write init as 'module:function', not {pool.init!r}")
    for index, helper in enumerate(parsed.helpers):
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", helper):
            fail(f"helpers[{index}]", f"{helper!r} is not a dotted module name")
    if parsed.shm_threshold is not None and parsed.shm_threshold != "off":
        try:
            parse_bytes(parsed.shm_threshold)
        except ValueError as exc:
            fail("shm_threshold", f"{exc}, or 'off' to send every buffer through the socket")
    for name, lib in parsed.libraries.items():
        if isinstance(lib, str):
            continue
        if lib.pool is not None and lib.pool not in pools:
            fail(f"libraries.{name}.pool", f"unknown pool {lib.pool!r} (known: {sorted(pools)})")
        if lib.env not in envs:
            fail(
                f"libraries.{name}.env", f"unknown environment {lib.env!r} (known: {sorted(envs)})"
            )


def _settings_from(table: object, path: Path) -> Settings:
    if not isinstance(table, dict):
        raise ConfigError("must be a table", key="tool.snakebridge", path=path)
    parsed = _validate(table, path)
    _check_semantics(parsed, path)
    libraries = {
        name: LibrarySpec(version=lib) if isinstance(lib, str) else lib
        for name, lib in sorted(parsed.libraries.items())
    }
    return Settings(
        path=path,
        root=path.parent,
        generated=parsed.generated,
        generated_path=parsed.generated_path,
        scan=tuple(parsed.scan) if parsed.scan is not None else None,
        strict=parsed.strict,
        shm_threshold=-1 if parsed.shm_threshold == "off" else parse_bytes(parsed.shm_threshold),
        libraries=libraries,
        envs={DEFAULT: EnvSpec(), **parsed.envs},
        pools={DEFAULT: PoolSpec(), **parsed.pools},
        variants=parsed.variants,
        helpers=tuple(parsed.helpers),
    )


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", key="SNAKEBRIDGE_CONFIG", path=path) from None
    except IsADirectoryError:
        raise ConfigError(
            "is a directory; point SNAKEBRIDGE_CONFIG at a TOML file", key="", path=path
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"is not UTF-8 (byte {exc.object[exc.start]:#04x} at offset {exc.start}); TOML files "
            "are UTF-8",
            key="",
            path=path,
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", key="", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", key="", path=path) from None


def _table_of(document: dict[str, object], standalone: bool) -> object | None:
    tool = document.get("tool")
    if isinstance(tool, dict) and "snakebridge" in tool:
        table: object = tool["snakebridge"]
        return table
    return document if standalone and "tool" not in document else None


def find_pyproject(start: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start``."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_settings(start: Path | None = None) -> Settings:
    """Settings from ``SNAKEBRIDGE_CONFIG`` or the nearest pyproject; the default if no table."""
    explicit = os.environ.get("SNAKEBRIDGE_CONFIG")
    if explicit:
        path = Path(explicit).resolve()
        table = _table_of(_read_toml(path), standalone=True)
        if table is None:
            raise ConfigError("has no [tool.snakebridge] table", key="tool.snakebridge", path=path)
        return _settings_from(table, path)
    origin = (start or Path.cwd()).resolve()
    pyproject = find_pyproject(origin)
    if pyproject is not None:
        table = _table_of(_read_toml(pyproject), standalone=False)
        if table is not None:
            return _settings_from(table, pyproject)
        return Settings(path=None, root=pyproject.parent)
    return Settings(path=None, root=origin)
