"""Freed host memory is reused: a training step's large tensors, allocated again the next step, come
without page faults (r3exp.host_memory)."""
from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process (the setting is process-wide): page faults per step of a layer's forward and backward
# over 64 MiB activations, after two steps that set the heap up.
FAULTS = """
import resource, sys, torch
from r3exp.host_memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
layer, inputs = torch.nn.Linear(1024, 1024), torch.randn(16384, 1024)
def step():
    layer(inputs).relu().square().sum().backward()
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 4)
"""


def faults_per_step(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_a_steps_freed_memory_is_reused_without_page_faults():
    activation_pages = 64 * 2**20 // 4096
    system, reused = faults_per_step("system"), faults_per_step("reuse")
    assert system > activation_pages  # glibc's default: munmap on free, every step's tensors on fresh pages
    assert reused < system / 10  # kept: the same pages, already mapped (measured: 115k against 4k)
