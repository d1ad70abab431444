"""Handing freed memory back to the system, as a long-running process must after large decodes.

glibc's malloc keeps what is freed for reuse: in the arena of the thread that allocated it (up to
8 arenas per core), and it raises its mmap threshold to the largest mapping freed so far, so big
blocks soon come from the arenas too. An `imgwatch web` whose request threads had each decoded one
13000×13000 upload held ~0.6 GB per thread for good. Two remedies, each measured to matter
(bench/upload_memory.py; bench/RESULTS.md, "Upload memory"): big allocations as mappings of their
own (give_large_frees_back_at_once, once at start), and malloc_trim after each decode
(give_back_freed_memory: a millisecond or two) for what the arenas keep of smaller ones.
"""

from __future__ import annotations

import ctypes
import functools
import os

# mallopt's parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# From this size up, an allocation is a mapping of its own, unmapped when freed: decoded pictures
# (Pillow's 16 MiB blocks), decoders' buffers, upload bodies. Smaller ones (the model's activations,
# up to ~3 MiB) stay in the arenas, where they are reused.
LARGE_ALLOCATION_BYTES = 4 * 2**20
# Fixing the mmap threshold also fixes the trim threshold, at 128 KiB unless set: the arenas then shrink
# and grow on nearly every free, and a ResNet50 forward pass took 1.3× to 2.4× as long (bench/RESULTS.md).
# This is where glibc's own heuristic leaves it once big blocks have been freed (2 × 32 MiB).
_TRIM_THRESHOLD_BYTES = 64 * 2**20


def give_large_frees_back_at_once() -> None:
    """From now on, let every allocation of LARGE_ALLOCATION_BYTES or more go back to the system when freed.

    glibc raises its mmap threshold to the size of the largest mapping freed so far (up to 32 MiB),
    after which Pillow's 16 MiB blocks come from the thread arenas and stay there. Process-wide;
    nothing on other C libraries.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
        libc.mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES)


def give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim); nothing on other C libraries."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library this process already uses, where it is glibc."""
    try:
        glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or not a name this system knows: not glibc
        glibc = False
    if not glibc:  # musl, macOS, Windows: neither mallopt's parameters nor malloc_trim are glibc's
        return None
    libc = ctypes.CDLL(None)
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc
