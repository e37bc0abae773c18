"""``reuse_freed_memory``: freed CPU tensors' memory is reused instead of being mapped (and zero-filled) afresh."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from diffsampler.device import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "tuned" else False
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(6 << 20)  # 24 MiB, under glibc's cap of the mmap threshold (32 MiB)
before = faults()
for _ in range(5):
    torch.ones(6 << 20)
print(applied, faults() - before)
"""


def probe(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env={})
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuned_allocator_reuses_freed_blocks() -> None:
    """Five 24 MiB tensors made and freed in turn: glibc's defaults map and zero-fill each afresh (about 6k page
    faults each for 4 KiB pages); tuned, the first block's memory is reused (under a tenth of those faults)."""
    tuned_applied, tuned = probe("tuned")
    _, plain = probe("plain")
    assert tuned_applied
    assert plain > 5 * 3000
    assert tuned < plain / 10
