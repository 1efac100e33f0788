"""Keeps the memory a process frees for its next allocation (glibc ``mallopt``), so big tensors stop page-faulting."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: the largest C int: the heap's free top is never handed back to the kernel
NEVER_TRIM = 2**31 - 1


def retain_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed memory in the process instead of returning it to the kernel.

    By default glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh
    ``mmap`` and unmaps it when freed, so each training step faults in every page of its large
    activations and gradients again, at a kernel entry per 4 KiB page. With no mmap and no trim
    the heap keeps those pages and the next step reuses them. Results are unchanged (only where
    the bytes live changes); the process keeps its peak memory until it exits. Forked data
    loader workers inherit the setting. The same as starting the process with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.

    Returns:
        True when glibc took both settings; False elsewhere (another C library or platform),
        where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1)


def apply_memory_setting(retain: bool) -> None:
    """``retain_freed_memory`` of train.py / evaluate.py: applies it and says so in the log."""
    if not retain:
        return
    if retain_freed_memory():
        log.info("retain_freed_memory: freed memory stays in the process (glibc mallopt: no mmap, no trim)")
    else:
        log.info("retain_freed_memory: not a glibc process; the C library's default allocation is kept")
