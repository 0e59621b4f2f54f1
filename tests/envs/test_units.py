"""Environment logic that needs no network: interpreter choice, staleness, lock file, recovery."""

from __future__ import annotations

import json
import os
import platform
import stat
import sys
from pathlib import Path

import pytest

import snakebridge
from snakebridge.config import load_settings
from snakebridge.envs.builder import _recover, setup
from snakebridge.envs.doctor import diagnose
from snakebridge.envs.lock import Lock, generator_hash
from snakebridge.envs.plan import find_interpreter, plan_envs
from snakebridge.envs.uvtool import EnvSetupError
from snakebridge.envs.variants import choose_variant, parse_cuda_version, variant_indexes
from snakebridge.runtime.interpreters import interpreter_for, requested_requirements


def project(root: Path, table: str) -> Path:
    (root / "pyproject.toml").write_text(table)
    return root


def test_no_config_and_stdlib_configs_use_the_host_and_need_no_setup(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    project(bare, "[project]\nname = 'x'\n")
    settings = load_settings(bare)
    assert settings.libraries is None
    assert interpreter_for(settings, "default") == sys.executable
    assert plan_envs(settings) == {} and setup(settings) == []
    assert not (bare / "snakebridge.lock").exists() and not (bare / ".snakebridge").exists()
    (tmp_path / "std").mkdir()
    std = project(tmp_path / "std", '[tool.snakebridge.libraries]\njson = "stdlib"\n')
    assert interpreter_for(load_settings(std), "default") == sys.executable
    assert setup(load_settings(std), check=True) == []


def test_a_pinned_library_needs_setup_first(tmp_path: Path) -> None:
    project(tmp_path, '[tool.snakebridge.libraries]\nnumpy = "==1.26.4"\n')
    settings = load_settings(tmp_path)
    with pytest.raises(snakebridge.EnvironmentMissing, match="run `snakebridge setup`"):
        interpreter_for(settings, "default")
    assert requested_requirements(settings, "default") == ("msgpack>=1.0.5", "numpy==1.26.4")
    problems = setup(settings, check=True)
    assert problems == [f"env default: {tmp_path / 'snakebridge.lock'} does not exist"]


def test_interpreter_requests(tmp_path: Path) -> None:
    major, minor, _ = platform.python_version_tuple()
    assert find_interpreter("", tmp_path) == sys.executable
    assert find_interpreter(f"{major}.{minor}", tmp_path) == sys.executable
    with pytest.raises(EnvSetupError, match="does not exist"):
        find_interpreter("./no/such/python", tmp_path)
    with pytest.raises(EnvSetupError, match=r"no Python 2\.1 found"):
        find_interpreter("2.1", tmp_path)


def test_lock_file_is_sorted_atomic_and_readable(tmp_path: Path) -> None:
    lock = Lock(tmp_path / "snakebridge.lock", {"b": {"z": 1, "a": 2}, "a": {}}, "1.0", "abc")
    lock.save()
    text = (tmp_path / "snakebridge.lock").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert list(json.loads(text)["envs"]) == ["a", "b"]
    mode = stat.S_IMODE(os.stat(tmp_path / "snakebridge.lock").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # committable, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["snakebridge.lock"]
    again = Lock.load(tmp_path)
    assert again is not None and again.dump() == text
    (tmp_path / "snakebridge.lock").write_text("{not json")
    with pytest.raises(EnvSetupError, match=r"corrupt.*restore it from git"):
        Lock.load(tmp_path)


def test_generator_hash_is_stable() -> None:
    assert generator_hash() == generator_hash() and len(generator_hash()) == 64


def test_a_half_swap_is_undone_and_leftovers_removed(tmp_path: Path) -> None:
    envs = tmp_path / ".snakebridge" / "envs"
    (envs / ".legacy.old-123-0123abcd" / "bin").mkdir(parents=True)
    (envs / ".legacy.building-124-89abcdef" / "bin").mkdir(parents=True)
    (envs / ".other.old-125-0123abcd").mkdir()
    (envs / "other").mkdir()
    _recover(envs)
    assert sorted(p.name for p in envs.iterdir()) == ["legacy", "other"]
    assert (envs / "legacy" / "bin").is_dir()


def test_doctor_without_config_needs_nothing(tmp_path: Path) -> None:
    lines = diagnose(load_settings(tmp_path))
    text = "\n".join(line.render() for line in lines)
    assert "OK   env default: the host's interpreter" in text
    assert "OK   host Python" in text and "OK   uv " in text
    assert all(line.status != "FAIL" for line in lines)
    assert all(line.fix for line in lines if line.status != "OK")


def test_wheel_variants_come_from_config(tmp_path: Path) -> None:
    project(
        tmp_path,
        '[tool.snakebridge.variants.torch]\ncpu = "https://download.pytorch.org/whl/cpu"\n'
        'cu118 = "https://download.pytorch.org/whl/cu118"\n'
        'cu121 = "https://download.pytorch.org/whl/cu121"\n'
        '[tool.snakebridge.envs.gpu]\nvariants = { torch = "auto" }\nrequirements = ["torch"]\n'
        '[tool.snakebridge.envs.pinned]\nvariants = { torch = "cu118" }\n'
        '[tool.snakebridge.envs.typo]\nvariants = { torch = "rocm" }\n',
    )
    settings = load_settings(tmp_path)
    url = "https://download.pytorch.org/whl/"
    assert variant_indexes(settings, "gpu", "cpu") == (url + "cpu",)
    assert variant_indexes(settings, "gpu", "cu124") == (url + "cu121",)  # newest supported
    assert variant_indexes(settings, "gpu", "cu120") == (url + "cu118",)
    assert variant_indexes(settings, "gpu", "cu110") == (url + "cpu",)  # driver too old
    assert variant_indexes(settings, "gpu", "cuda") == (url + "cu121",)  # version unknown
    assert variant_indexes(settings, "pinned", "cpu") == (url + "cu118",)
    with pytest.raises(EnvSetupError, match="variant 'rocm' of torch"):
        variant_indexes(settings, "typo", "cpu")
    assert plan_envs(settings, "cu124")["gpu"].indexes == (url + "cu121",)


def test_cuda_version_is_read_from_nvidia_smi_or_torch() -> None:
    banner = "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2     |"
    assert parse_cuda_version(banner) == "cu122"
    assert parse_cuda_version("11.8") == "cu118"
    assert parse_cuda_version("no gpu here") is None
    assert choose_variant({"cpu": "a", "cu122": "b"}, "cu122") == "cu122"
