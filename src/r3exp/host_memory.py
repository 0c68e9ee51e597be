"""Keep freed host memory in the process, so that a CPU step's tensors do not come as fresh pages every step.

glibc's ``malloc`` serves every block of 32 MiB or more (and, once its threshold has adapted, many smaller
ones) with ``mmap`` and returns it with ``munmap`` on ``free``. A training step allocates and frees the same
large tensors every step (activations, the output layer's logits, the tied embedding's gradient, AdamW's
temporaries): each comes back as new pages, which the kernel zero-fills on first touch, one 4 KiB page
fault at a time. On 2 CPU cores that was about a fifth of SmolLM2-135M's training step
(docs/results/speed.md, "Keeping freed memory"). Two ``mallopt`` settings stop it: no ``mmap`` for
allocations (``M_MMAP_MAX`` = 0: they come from the heap) and no trimming of the heap's free top
(``M_TRIM_THRESHOLD`` = -1), so freed blocks are reused. The process's resident memory then stays at its
peak instead of falling between steps. PyTorch's CPU tuning guides get the same effect by preloading
jemalloc or tcmalloc (Intel Extension for PyTorch, "Performance Tuning Guide", "Memory Allocator"; vLLM's
CPU installation page); this needs no library beyond glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h


def reuse_freed_memory() -> bool:
    """Set glibc's ``malloc`` to keep freed memory for reuse (module docstring). True when set; False where
    the C library is not glibc (macOS, musl), where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (musl has mallopt as a stub, but no gnu_get_libc_version)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
