"""Errno-carrying exceptions, in one place.

Imports nothing but the standard library's ``errno`` and ``os.strerror``.

===================  =========================  =============================
raised by            raise                      becomes
===================  =========================  =============================
drivers, cdevsw,     ``DeviceError(errno)``     ``FUSEError`` in ``fs.py``
kern
a driver bug         anything else              traceback logged, ``EIO``
control server       ``ControlError(errno)``    error reply ``errno`` + text
===================  =========================  =============================
"""

from __future__ import annotations

import os

__all__ = ["ControlError", "DevfsdError", "DeviceError", "Verbatim", "printable"]


def printable(text: object) -> str:
    """``str(text)`` with each character that is not printable (a control
    character, a line break, a tab) written as Python escapes it
    (``\\x1b``, ``\\n``), for the log and a terminal: a path, a name or
    a message that carries one (a module host's text, a control request's
    path, a state's row, a file name) cannot print a terminal's escape
    sequences or forge a line of its own."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Verbatim(str):
    """Text the log shows as it is, line breaks and all, where a message's
    arguments are otherwise escaped (``devfsd.service.logs.EscapeArgs``):
    devfsd's own lines (a stack it took), or lines each already escaped
    (a module host's last output)."""

    __slots__ = ()


class DevfsdError(Exception):
    """Base of devfsd's errno-carrying exceptions.

    Args:
        errno: a positive ``errno`` value (``errno.ENXIO``, ...).
        msg: optional text; ``str()`` falls back to ``os.strerror(errno)``.
    """

    def __init__(self, errno: int, msg: str | None = None) -> None:
        if isinstance(errno, bool) or errno <= 0:
            raise ValueError(f"errno must be a positive int, not {errno!r}")
        super().__init__(errno, msg)
        self.errno = errno
        self.msg = msg

    def __str__(self) -> str:
        return self.msg if self.msg else os.strerror(self.errno)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.errno}, {str(self)!r})"


class DeviceError(DevfsdError):
    """An error a driver entry point (or the device switch) returns.

    The one exception type drivers raise: ``raise DeviceError(errno.EINVAL)``
    is NetBSD's ``return EINVAL``.
    """


class ControlError(DevfsdError):
    """An error reply on the control socket (modload, modunload, ...)."""
