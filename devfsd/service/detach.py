"""What a detached daemon does, and who holds a control socket.

Without ``-f`` devfsd forks, and the child (after ``setsid``) becomes a
daemon as daemon(3) and systemd's daemon(7) describe: it leaves its
launcher's working directory for ``/`` (so that it keeps no file system
busy), takes umask 022 (files it makes do not inherit a launcher's odd
umask), and closes every descriptor it inherited except the pipe that
tells the launcher "ready"; its standard streams go to /dev/null once
start-up errors can no longer be reported through that pipe
(``null_stdio``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from typing import Final

__all__ = ["DAEMON_UMASK", "become_daemon", "holder", "null_stdio"]

DAEMON_UMASK: Final = 0o022
_UCRED: Final = struct.Struct("3i")


def become_daemon(keep: int) -> None:
    """chdir("/"), umask 022 and close every descriptor above 2 but ``keep``."""
    os.chdir("/")
    os.umask(DAEMON_UMASK)
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def null_stdio() -> None:
    """Standard input, output and error to /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def holder(path: str) -> tuple[int, str] | None:
    """The pid and command name of the process listening on the Unix socket ``path``.

    A connected stream socket's ``SO_PEERCRED`` are those of the process
    that called listen(2). ``None`` if nobody listens or it cannot be told.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            pid, _, _ = _UCRED.unpack(s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None
    if pid <= 0:
        return None
    comm = "?"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
        comm = f.read().strip()
    return pid, comm
