"""The allocator settings gn-burn's benchmarks and programs use (crates/gn-module/src/alloc.rs), for PyTorch.

glibc returns freed memory at the top of its heap to the system once more than twice the
largest recent large block is free; tensors of tens of megabytes freed and allocated every
iteration are then page-faulted back in (and zeroed by the kernel) every time. Both sides of a
comparison should run with the same settings: this applies gn-burn's (no trimming, mmap above
32 MiB) unless GN_BURN_DEFAULT_MALLOC is set.
"""

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory():
    """Returns a description of the allocator settings in effect."""
    if os.environ.get("GN_BURN_DEFAULT_MALLOC") is not None:
        return "glibc defaults (GN_BURN_DEFAULT_MALLOC set)"
    if platform.system() != "Linux":
        return "platform defaults"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) and libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    except OSError:
        return "platform defaults (no glibc)"
    return "glibc: no trimming, mmap above 32 MiB" if ok else "glibc defaults (mallopt failed)"
