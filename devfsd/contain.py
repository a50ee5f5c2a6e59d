"""What a driver's exception becomes: an errno for its caller, never the daemon's end.

Imports trio and ``devfsd.errors`` only (no pyfuse3). Every place that runs
driver code (the import, each ``modcmd``, each cdevsw entry point, each
``kthread_create`` task) and every pyfuse3 handler ends in ``contain``:

- A ``DeviceError`` is the driver's answer: its errno, if it is a positive
  ``int`` below 4096 (else ``EIO``).
- The daemon's own cancellation passes through untouched: a
  ``trio.Cancelled`` (or a group of nothing else) while the calling task is
  in fact cancelled (``trio.current_effective_deadline()`` is ``-inf``).
  A ``Cancelled`` a driver raises when nothing cancelled it (one it caught
  earlier and kept, say) is the driver's fault.
- The daemon's own SIGINT passes through: a ``KeyboardInterrupt`` that trio
  raised (its signal handler or its delivery to the main task, so the
  innermost frame of the traceback is trio's). The daemon's signal task
  normally owns SIGINT, so none arrives that way while it serves; a
  ``KeyboardInterrupt`` whose innermost frame is anywhere else was raised
  by code, the driver's.
- Everything else a driver raises (any ``Exception``, ``SystemExit``,
  ``GeneratorExit``, ``KeyboardInterrupt``, a ``BaseExceptionGroup``, any
  ``BaseException``) is logged with its traceback and becomes ``default``
  (``EIO``; the loader passes ``ENOEXEC`` for an import). A group whose
  leaves, cancellations aside, are ``DeviceError`` of one errno is that errno.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from typing import Final, TypeGuard

import trio

from devfsd.errors import DeviceError

__all__ = ["MAX_ERRNO", "contain", "daemon_signal", "is_own_cancel", "valid_errno"]

log = logging.getLogger(__name__)

#: Errno values above this are not errno values (Linux's ``MAX_ERRNO``).
MAX_ERRNO: Final = 4095
_TRIO_DIR: Final = os.path.dirname(trio.__file__) + os.sep


def valid_errno(e: object) -> TypeGuard[int]:
    """Whether ``e`` can be an errno: an ``int`` (not a bool) in 1..4095."""
    return type(e) is int and 0 < e <= MAX_ERRNO


def is_own_cancel() -> bool:
    """Whether the calling task is being cancelled now (by the daemon, or a
    scope around the call), so that a ``Cancelled`` it sees is genuine."""
    try:
        return trio.current_effective_deadline() == -math.inf
    except RuntimeError:  # not in trio.run
        return False


def daemon_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``KeyboardInterrupt`` that trio raised for a
    real SIGINT (its innermost frame is trio's, not the driver's)."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_TRIO_DIR)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _passes(exc: BaseException) -> bool:
    """The daemon's own cancellation or signal, to be re-raised as it is."""
    leaves = _leaves(exc)
    if any(daemon_signal(e) for e in leaves):
        return True
    return all(isinstance(e, trio.Cancelled) for e in leaves) and is_own_cancel()


def contain(exc: BaseException, what: str, default: int = errno.EIO) -> DeviceError:
    """The ``DeviceError`` that driver code's ``exc`` becomes; call in its ``except``.

    Use as ``except BaseException as exc: raise contain(exc, "d_read") from None``.

    Args:
        exc: what the driver (or a handler around it) raised.
        what: names the code for the log (``"module x: modcmd(INIT)"``).
        default: the errno of a fault that chose none (``EIO``).

    Returns:
        A ``DeviceError`` with a valid errno; the driver's own if it raised one.

    Raises:
        BaseException: ``exc`` itself, if it is the daemon's own
            cancellation or SIGINT (the one thing that must go on up).
    """
    if isinstance(exc, DeviceError):
        own = type(exc) is DeviceError or type(exc).__module__.startswith("devfsd.")
        msg = getattr(exc, "msg", None)
        text = msg if msg is None or type(msg) is str else None
        if own and valid_errno(exc.errno) and text is msg:
            return exc  # devfsd's own classes (trust.Untrusted...) as they are
        e = getattr(exc, "errno", None)
        log.error("%s raised %s with errno %.40r", what, type(exc).__name__, e)
        return DeviceError(e if valid_errno(e) else default, text)
    if _passes(exc):
        raise exc
    chosen = {e.errno for e in _leaves(exc) if isinstance(e, DeviceError)}
    others = [e for e in _leaves(exc) if not isinstance(e, DeviceError | trio.Cancelled)]
    if isinstance(exc, BaseExceptionGroup) and not others and len(chosen) == 1:
        (e,) = chosen
        if valid_errno(e):
            return DeviceError(e)
    info = (type(exc), exc, exc.__traceback__)
    log.error("%s raised %s: %s", what, type(exc).__name__, os.strerror(default), exc_info=info)
    return DeviceError(default)
