"""Listening Unix sockets with their final mode, for the daemon and modules.

The control socket and tunwg's UAPI sockets are made the same way: the
directory is created if missing, a leftover socket file that nobody serves
(connection refused) is replaced, a live one is ``EADDRINUSE``, and the
socket is bound under a umask that gives it its final mode at once, so
there is no moment when others could connect.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

__all__ = ["bind_unix_listener"]


def bind_unix_listener(
    path: str, mode: int = 0o600, *, gid: int | None = None, backlog: int = 128
) -> socket.socket:
    """A listening ``AF_UNIX`` stream socket at ``path`` with permissions ``mode``.

    Args:
        path: the socket's path; its directories are made (0755) if missing.
        mode: the socket's permission bits.
        gid: if given, the socket's group (owner stays root).
        backlog: ``listen(2)``'s backlog.

    Raises:
        OSError: ``EADDRINUSE`` if a live process serves ``path``,
            ``EEXIST`` if ``path`` is something other than a socket, or the
            errno of the failing call.
    """
    # Every directory made is 0755, whatever the umask (makedirs's mode
    # would be the last one's only).
    old = os.umask(0o022)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    finally:
        os.umask(old)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(path)
        if gid is not None:
            os.chown(path, 0, gid)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock
