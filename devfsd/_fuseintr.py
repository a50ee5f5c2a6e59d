"""FUSE_INTERRUPT for sleeping entry points, through libfuse (a guarded private path).

When a process blocked in a FUSE request gets a signal, the kernel sends
the daemon an INTERRUPT for that request. libfuse's low-level layer takes
it and calls the function registered for the request with
``fuse_req_interrupt_func(3)`` (at once, if the INTERRUPT came first), but
pyfuse3 3.5 registers none and does not expose its ``fuse_req_t``. Without
it a sleeper's signals can only be looked for in ``/proc`` every so often,
which costs the idle daemon CPU time per sleeping process
(``devfsd.cdevsw._wait``, bench/bench_sleepers.py).

``watch`` finds the ``fuse_req_t`` of the request a suspended task serves
(pyfuse3 keeps it in a ``_Container`` its handler coroutine holds, found
through the garbage collector's references) and registers a callback for
it; the sleep clock calls it once per sleep, at the sleeper's first check.
It is a fast path on private state behind guards: pyfuse3 3.5.x, its
``_Container`` of exactly the measured size, and the container's file
handle must be the one the daemon gave the sleeper's open file (so a wrong
layout reads no pointer); libfuse3 must load. Anything else, or
``DEVFSD_PUBLIC_ONLY`` in the environment, and ``watch`` answers False and
the sleeper keeps the ``/proc`` checks.

Imports trio-free code only, and pyfuse3 only when a daemon's file system
(which has imported it) first watches a sleep; the callback runs in the
trio thread, inside pyfuse3's ``fuse_session_process_buf``.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["available", "unwatch", "watch", "watching"]

log = logging.getLogger(__name__)

#: pyfuse3 3.5's ``_Container`` (handlers.pxi) on x86-64: object header,
#: ``rdev``, ``fi``, ``ino``, ``parent``, then ``req``; ``fh`` last.
_CONTAINER_SIZE: Final = 264
_REQ_AT: Final = 80
_FH_AT: Final = _CONTAINER_SIZE - 8
#: How deep to look from a task's coroutine for the container: the worker
#: loop's await wrapper, the loop, the handler coroutine, its scope.
_DEPTH: Final = 6
_WALK: Final = ("coroutine", "coroutine_wrapper")

_FUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)

#: pyfuse3's ``_Container`` type, once the guards pass.
_CONTAINER: Any = None
#: Key -> what to call when the request's INTERRUPT comes.
_watched: dict[int, Callable[[], None]] = {}
#: The open file a daemon file handle is for (``DevFs`` sets it), or None.
file_of: Callable[[int], object] | None = None


def _load() -> Any:
    global _CONTAINER
    if os.environ.get("DEVFSD_PUBLIC_ONLY"):
        return None
    try:
        import pyfuse3

        if not pyfuse3.__version__.startswith("3.5.") or ctypes.sizeof(ctypes.c_void_p) != 8:
            return None
        container = pyfuse3._Container  # type: ignore[attr-defined]
        if container.__basicsize__ != _CONTAINER_SIZE:
            return None
        lib = ctypes.CDLL("libfuse3.so.3")
        lib.fuse_req_interrupt_func.argtypes = [ctypes.c_void_p, _FUNC, ctypes.c_void_p]
        lib.fuse_req_interrupt_func.restype = None
        _CONTAINER = container
    except (ImportError, OSError, AttributeError) as exc:
        log.debug("no FUSE_INTERRUPT path: %s", exc)
        return None
    return lib


def _on_interrupt(req: int | None, data: int | None) -> None:
    fn = _watched.pop(data or 0, None)
    if fn is not None:
        try:
            fn()
        except Exception:  # from C: nowhere to raise to
            log.exception("interrupt callback failed")


_callback = _FUNC(_on_interrupt)
_keys = iter(range(1, 1 << 62))
#: libfuse3, once ``_library`` has looked (False: not yet; None: unusable).
_lib: Any = False


def _library() -> Any:
    """libfuse3 if the guards pass, else None; looked up once, on first use
    (importing this module imports no pyfuse3)."""
    global _lib
    if _lib is False:
        _lib = _load()
    return _lib


def turn_off() -> None:
    """No FUSE_INTERRUPT path from now on (the daemon's ``-o public_only``)."""
    global _lib
    _lib = None


def available() -> bool:
    """The path is usable here (libfuse3 loaded, pyfuse3 3.5, not public-only)."""
    return _library() is not None


def _container(coro: object) -> object | None:
    """pyfuse3's ``_Container`` held by the handler under ``coro``, or None."""
    todo = [(coro, 0)]
    while todo:
        obj, depth = todo.pop()
        for r in gc.get_referents(obj):
            t = type(r)
            if t is _CONTAINER:
                found: object = r
                return found
            name = t.__name__
            if depth < _DEPTH and (name in _WALK or name.startswith("__pyx_scope")):
                todo.append((r, depth + 1))
    return None


def watch(coro: object, fp: object, on_interrupt: Callable[[], None]) -> int:
    """Call ``on_interrupt()`` when the request served under ``coro`` is interrupted.

    ``coro`` is a suspended task's coroutine (``Task.coro``), ``fp`` the
    open file the request is for. Returns a key for ``unwatch``, or 0 if
    the request cannot be watched (no FUSE request under ``coro``, the
    guards fail): then signals must be looked for otherwise.
    """
    if file_of is None:
        return 0
    lib = _library()
    if lib is None:
        return 0
    c = _container(coro)
    if c is None:
        return 0
    base = id(c)
    fh = ctypes.c_uint64.from_address(base + _FH_AT).value
    if file_of(fh) is not fp:
        return 0  # not the layout measured, or not this file's request
    req = ctypes.c_void_p.from_address(base + _REQ_AT).value
    if not req:
        return 0
    key = next(_keys)
    _watched[key] = on_interrupt
    lib.fuse_req_interrupt_func(req, _callback, key)  # calls back at once if already interrupted
    return key


def unwatch(key: int) -> None:
    """Forget ``key``: the sleep is over. (libfuse keeps the callback until the
    request is answered, and ignores it then; an INTERRUPT before finds no key.)"""
    _watched.pop(key, None)


def watching() -> int:
    """Sleeps watched now."""
    return len(_watched)
