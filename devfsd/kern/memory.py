"""Giving freed heap memory back to the system.

Touches the C library. Python frees a large ``bytearray`` into glibc's
heap, which keeps the pages (and, after a large block has been mapped and
freed, raises its mapping threshold, so that later blocks of that size come
from the heap too): 512 control connections each holding an unfinished
1 MiB request left 232 MB in the daemon after they had gone (issue 13).
``malloc_trim(0)`` returns every free page of the heap. It is glibc's;
on a C library without it this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["release_free_memory"]

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


_TRIM: Final = _malloc_trim()


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; ``False`` if it cannot."""
    if _TRIM is None:
        return False
    _TRIM(0)
    log.debug("freed heap memory returned to the system")
    return True
