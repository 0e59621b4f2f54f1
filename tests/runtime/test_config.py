"""Config: the embedded default, validation errors naming file and key, durations and sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakebridge import ConfigError
from snakebridge.config import load_settings, parse_bytes, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    return path


def test_no_table_means_the_embedded_default(tmp_path: Path) -> None:
    write(tmp_path, "[project]\nname = 'x'\n")
    settings = load_settings(tmp_path)
    assert settings.allow_all and settings.path is None
    assert settings.pools["default"].size == 2


def test_nearest_pyproject_above_the_start_directory(tmp_path: Path) -> None:
    write(tmp_path, '[tool.snakebridge.libraries]\njson = "stdlib"\nnumpy = "==2.1.3"\n')
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    settings = load_settings(nested)
    assert settings.root == tmp_path and not settings.allow_all
    assert settings.libraries is not None and settings.libraries["json"].is_stdlib
    assert settings.library_for("numpy.linalg") == ("numpy", settings.libraries["numpy"])
    assert settings.library_for("pandas") is None


def test_full_table(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
[tool.snakebridge]
generated = "gen"
scan = ["src"]
[tool.snakebridge.libraries]
sk = { package = "scikit-learn", version = "==1.3.2", env = "legacy", module = "sklearn" }
[tool.snakebridge.envs.legacy]
python = "3.11"
[tool.snakebridge.pools.legacy]
env = "legacy"
size = 3
ttl = "1h"
max_memory = "512MiB"
""",
    )
    settings = load_settings(tmp_path)
    assert settings.generated == "gen" and settings.scan == ("src",)
    assert settings.pool_for("sk") == "legacy"
    assert settings.pools["legacy"].ttl_s == 3600.0
    assert settings.pools["legacy"].max_memory_bytes == 512 * 2**20


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[tool.snakebridge]\ngenerate = 'x'\n", "tool.snakebridge.generate", "unknown key"),
        (
            "[tool.snakebridge.pools.default]\nsize = 'two'\n",
            "tool.snakebridge.pools.default.size",
            "Expected `int`",
        ),
        (
            "[tool.snakebridge.pools.default]\nsize = 0\n",
            "tool.snakebridge.pools.default.size",
            "at least 1",
        ),
        (
            "[tool.snakebridge.libraries]\nnp = { version = '1', pool = 'gpu' }\n",
            "tool.snakebridge.libraries.np.pool",
            "unknown pool 'gpu'",
        ),
        (
            "[tool.snakebridge.libraries]\nnp = { version = '1', env = 'old' }\n",
            "tool.snakebridge.libraries.np.env",
            "unknown environment 'old'",
        ),
        (
            "[tool.snakebridge.pools.default]\nttl = 'soon'\n",
            "tool.snakebridge.pools.default.ttl",
            "not a duration",
        ),
        ("[tool.snakebridge.libraries]\nnp = 3\n", "tool.snakebridge.libraries.np", "Expected"),
    ],
)
def test_errors_name_the_key_and_the_file(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.key == key and caught.value.path == path
    assert key in str(caught.value) and str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_invalid_toml_and_missing_explicit_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[tool.snakebridge\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(tmp_path)
    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path)


def test_standalone_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "snakebridge.toml"
    path.write_text('[libraries]\njson = "stdlib"\n')
    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(path))
    assert load_settings().library_for("json") is not None


def test_durations_and_sizes() -> None:
    assert parse_duration("250ms") == 0.25 and parse_duration("5m") == 300.0
    assert parse_duration(2) == 2.0 and parse_duration(None) is None
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("100k") == 100_000
    assert parse_bytes(10) == 10
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_recycle_reasons() -> None:
    import os
    import time

    from snakebridge.config import PoolSpec
    from snakebridge.runtime.lifecycle import recycle_reason, resident_bytes

    now = time.monotonic()
    rss = resident_bytes(os.getpid())
    assert rss is not None and rss > 10 * 2**20
    assert recycle_reason(PoolSpec(), 10**6, now - 10**6, os.getpid(), None) is None
    assert recycle_reason(PoolSpec(max_requests=5), 5, now, os.getpid(), None) == (
        "max_requests (5)"
    )
    assert recycle_reason(PoolSpec(ttl="1s"), 1, now - 2, os.getpid(), None) == "ttl (1s)"
    reason = recycle_reason(PoolSpec(), 1, now, os.getpid(), 2**20)
    assert reason is not None and reason.startswith("max_memory (")


@pytest.mark.parametrize(
    ("line", "key", "problem"),
    [
        ("ttl = 0", "ttl", "ttl must be a duration above 0"),
        ("ttl = '0s'", "ttl", "ttl must be a duration above 0"),
        ("ttl = -5", "ttl", "ttl must be a duration above 0"),
        ("max_requests = 0", "max_requests", "max_requests must be at least 1"),
        ("max_memory = -1", "max_memory", "max_memory must be a size above 0"),
        ("max_memory = 0", "max_memory", "max_memory must be a size above 0"),
        ("call_timeout = -1", "call_timeout", "call_timeout must be a finite number"),
        ("call_timeout = 0", "call_timeout", "above 0"),
        ("call_timeout = nan", "call_timeout", "call_timeout must be a finite number"),
        ("queue_timeout = -0.5", "queue_timeout", "queue_timeout must be a finite number"),
        ("queue_timeout = inf", "queue_timeout", "0 or more"),
        ("max_queue = 0", "max_queue", "max_queue must be at least 1"),
        ("startup_timeout = 0", "startup_timeout", "startup_timeout must be a finite number"),
    ],
)
def test_values_that_validate_but_cannot_work(
    tmp_path: Path, line: str, key: str, problem: str
) -> None:
    path = write(tmp_path, f"[tool.snakebridge.pools.workers]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path)
    assert caught.value.key == f"tool.snakebridge.pools.workers.{key}"
    assert caught.value.path == path and str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_usable_limits_pass(tmp_path: Path) -> None:
    write(
        tmp_path,
        "[tool.snakebridge.pools.default]\nttl = '1h'\nmax_requests = 1\nmax_memory = '1GiB'\n"
        "call_timeout = 0.5\nqueue_timeout = 0\nmax_queue = 1\nstartup_timeout = 0.1\n",
    )
    spec = load_settings(tmp_path).pools["default"]
    assert spec.queue_timeout == 0 and spec.max_requests == 1


def test_unreadable_config_files_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_bytes(
        b'[tool.snakebridge.libraries]\njson = "st\xffdlib"\n'
    )
    with pytest.raises(ConfigError, match="is not UTF-8 \\(byte 0xff"):
        load_settings(tmp_path)
    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match="is a directory; point SNAKEBRIDGE_CONFIG at a TOML"):
        load_settings(tmp_path)


def test_the_command_line_reports_them_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setenv("SNAKEBRIDGE_CONFIG", str(tmp_path))
    result = subprocess.run(
        ["snakebridge", "call", "json", "dumps", "1"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ConfigError:") and "is a directory" in result.stderr
