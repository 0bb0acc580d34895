"""The C library's functions that tune or report the allocator (glibc's mallopt, malloc_trim, mallinfo2).

They exist only in glibc (mallinfo2 only from 2.33): on macOS or musl each lookup gives None, and the callers then
leave the allocator as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def c_function(name: str, restype=None):
    """The C library's function `name` (its result read as `restype`, when given), or None where it has none."""
    function = getattr(_libc(), name, None)
    if function is not None and restype is not None:
        function.restype = restype
    return function
