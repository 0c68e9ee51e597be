"""Freed host memory is reused: a training step's large tensors, allocated again the next step, come
without page faults (r3exp.host_memory)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # page faults counted in fresh processes

# In a fresh process (the setting is process-wide), one thread (worker threads allocate from heaps of their
# own, which add a varying few thousand faults): page faults per step of a layer's forward and backward over
# 64 MiB activations, averaged over 8 steps after two that set the heap up.
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
for _ in range(8):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 8)
"""


def faults_per_step(setting: str) -> int:
    # not the suite's environment: a vLLM engine started in it sets LD_PRELOAD and thread settings for its workers
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", FAULTS, setting], capture_output=True, text=True, check=True, env=env)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux)")
def test_a_steps_freed_memory_is_reused_without_page_faults():
    activation_pages = 64 * 2**20 // 4096
    system, reused = faults_per_step("system"), faults_per_step("reuse")
    assert system > activation_pages  # glibc's default: munmap on free, every step's tensors on fresh pages
    assert reused < system / 4  # kept: the same pages, already mapped (measured: 115k against 2k-16k)
