"""The torch device a command runs on, and what it is (a base module: imports nothing of the package but errors)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from diffsampler.errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (/proc/cpuinfo) of units that run bf16 matrix products natively."""


def _cpuinfo(key: str) -> str:
    """The value of the first ``key`` line of /proc/cpuinfo ('' where there is none, as on macOS)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return ""


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else what ``platform`` knows)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def hardware(device: torch.device) -> str:
    """One line naming the device the run trains on: GPU name, or CPU model, cores and bf16 units."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    units = [flag for flag in BF16_CPU_FLAGS if flag in _cpuinfo("flags").split()]
    extra = f" ({', '.join(units)})" if units else ""
    return f"CPU {cpu_model()}{extra} x{os.cpu_count()} {platform.machine()}, torch {torch.__version__}"


def native_bf16(device: torch.device) -> bool:
    """True on CUDA and on CPUs whose flags list bf16 matrix or vector units (``BF16_CPU_FLAGS``)."""
    if device.type == "cuda":
        return True
    flags = _cpuinfo("flags").split()
    return any(flag in flags for flag in BF16_CPU_FLAGS)
