"""Wheel variants: per-accelerator package indexes (torch CPU vs CUDA), chosen from config.

The mapping is data in the config, never a table here::

    [tool.snakebridge.variants.torch]
    cpu   = "https://download.pytorch.org/whl/cpu"
    cu121 = "https://download.pytorch.org/whl/cu121"
    [tool.snakebridge.envs.gpu]
    variants = { torch = "auto" }      # or a key: "cu121", "cpu"

``auto`` takes the accelerator detected here: the highest ``cuXYZ`` key the driver's CUDA
version supports, else ``cpu``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from snakebridge.config import Settings
from snakebridge.envs.uvtool import EnvSetupError

__all__ = ["choose_variant", "detect_accelerator", "parse_cuda_version", "variant_indexes"]

_CUDA = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")
_CU_KEY = re.compile(r"^cu(\d+)$")


def parse_cuda_version(text: str) -> str | None:
    """``cu122`` from nvidia-smi's banner (``CUDA Version: 12.2``) or torch's ``12.2``."""
    match = _CUDA.search(text) or re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text)
    return f"cu{match[1]}{match[2]}" if match else None


def _nvidia_smi() -> tuple[str, str] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        names = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        banner = subprocess.run([smi], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if names.returncode != 0 or not names.stdout.strip():
        return None
    gpu = names.stdout.strip().splitlines()[0]
    return parse_cuda_version(banner.stdout) or "cuda", f"{gpu} (via nvidia-smi)"


def _torch() -> tuple[str, str] | None:
    from importlib.util import find_spec

    if find_spec("torch") is None:
        return None
    try:
        import torch  # type: ignore[import-not-found, unused-ignore]

        if not torch.cuda.is_available():
            return None
        cuda = parse_cuda_version(str(torch.version.cuda or "")) or "cuda"
        return cuda, f"{torch.cuda.get_device_name(0)} (via torch)"
    except Exception:  # a broken torch tells us nothing about the GPU
        return None


def detect_accelerator() -> tuple[str, str]:
    """(``cu122``, description) for a visible NVIDIA GPU (``cuda`` when the CUDA version is
    unknown), else (``cpu``, why not)."""
    found = _nvidia_smi() or _torch()
    if found is not None:
        return found
    return "cpu", "no NVIDIA GPU visible (nvidia-smi not found or reports none)"


def choose_variant(options: dict[str, str], accelerator: str) -> str:
    """The key ``auto`` means on ``accelerator``: the highest ``cuXYZ`` it supports, or cpu."""
    if accelerator in options:
        return accelerator
    supported = int(accelerator[2:]) if _CU_KEY.match(accelerator) else None
    cuda_keys = []
    for key in options:
        match = _CU_KEY.match(key)
        if match and accelerator.startswith("cu"):
            number = int(match[1])
            if supported is None or number <= supported:
                cuda_keys.append((number, key))
    return max(cuda_keys)[1] if cuda_keys else "cpu"


def variant_indexes(
    settings: Settings, env: str, accelerator: str | None = None
) -> tuple[str, ...]:
    """Index URLs for ``env``'s packages with per-accelerator builds (config or detection)."""
    chosen = settings.envs[env].variants if env in settings.envs else {}
    urls = []
    for package, choice in sorted(chosen.items()):
        options = settings.variants.get(package, {})
        key = choice
        if choice == "auto":
            if accelerator is None:
                accelerator = detect_accelerator()[0]
            key = choose_variant(options, accelerator)
        if key not in options:
            raise EnvSetupError(
                f"variant {key!r} of {package} is not in [tool.snakebridge.variants.{package}] "
                f"(known: {sorted(options)}); add it there or choose another in "
                f"[tool.snakebridge.envs.{env}] variants"
            )
        urls.append(options[key])
    return tuple(urls)
