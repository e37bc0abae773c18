"""The torch device a command runs on, and what it is (a base module: imports nothing of the package but errors)."""

from __future__ import annotations

import ctypes
import ctypes.util
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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc ``mallopt`` parameter numbers (malloc.h)."""
KEEP_FREED_BYTES = 1 << 30
"""Asked-for mmap and trim thresholds: glibc caps the mmap threshold (32 MiB on 64-bit), so blocks under that come
from the heap, and freed memory up to this much stays there for reuse."""


def reuse_freed_memory() -> bool:
    """Let glibc's malloc keep freed CPU tensors' memory for the next ones instead of returning it to the system.

    By default glibc maps every block above its mmap threshold (at most 32 MiB) afresh and unmaps it on free, so each
    activation of a U-Net forward (33 MB at batch 256 on fmnist-p1) is zero-filled page by page by the kernel: on a
    2-core EPYC in float32 that was 0.65M page faults and a quarter of the CPU time per forward, and raising both
    thresholds (``mallopt``) made the forward 1.4x faster. Environment settings (``MALLOC_MMAP_THRESHOLD_``) win.
    Returns whether it applied (glibc only; elsewhere, and with those variables set, it does nothing).
    """
    if platform.libc_ver()[0] != "glibc" or any(
        k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
        )
    except (OSError, AttributeError):
        return False
