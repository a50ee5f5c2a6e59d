"""devfs-mknod: make a device node, naming the driver or its numbers.

``devfsd.mknod.args`` parses; this module does the I/O around it: it
looks names up (``getpwnam``, ``getgrnam``, the daemon's name <-> major
table), calls ``mknod(2)``/``mkfifo(2)`` with the umask cleared so the mode
is exact, then ``chown`` for ``-u``/``-g``, as NetBSD's ``mknod.c`` does.

Which daemon answers a driver name: the one serving the node's directory
(``path_for_node``: an extended attribute every inode of a mount answers),
because that daemon's table decides what the node's major means; a major
taken from any other daemon would be wrong there. Off a devfsd mount,
``-c PATH``, then ``$DEVFSD_CONTROL``, then the default socket. ``-l`` has
no node and goes straight to ``-c`` and the rest.

The node is made with a plain ``mknod(2)``: the daemon's file system takes
it, and answers ``EOPNOTSUPP`` for a block device (devfsd has none), which
is reported as ``devfs-mknod: NAME: Operation not supported``.

``-r``/``-R`` compare an existing node with the one asked for. A devfsd
mount shows nodes as regular files (no CUSE), so the comparison asks the
node's extended attributes first (``user.devfsd.type`` ``c``,
``user.devfsd.major``, ``user.devfsd.minor``, ASCII decimal) and falls back
to ``lstat``'s ``st_mode`` and ``st_rdev`` elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import stat
from collections.abc import Callable, Sequence
from typing import Final, final

from devfsd.control import path_for_node, resolve_path
from devfsd.control.client import Client
from devfsd.errors import ControlError
from devfsd.mknod.args import (
    PROG,
    REPLACE,
    USAGE,
    ListDrivers,
    MakeNode,
    MknodError,
    parse,
)
from devfsd.mknod.pack import makedev
from devfsd.tools import EXIT_SUCCESS, err, errx, failed, interruptible, long_option, out, usage, warn

__all__ = ["XATTR_MAJOR", "XATTR_MINOR", "XATTR_TYPE", "main", "node_identity"]

XATTR_TYPE: Final = "user.devfsd.type"
XATTR_MAJOR: Final = "user.devfsd.major"
XATTR_MINOR: Final = "user.devfsd.minor"

_XATTR_TYPES: Final = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}

GetXattr = Callable[[str, str], bytes]


class _DaemonFailed(Exception):
    """A control call failed; carries what ``failed()`` needs."""

    def __init__(self, arg: str, socket_path: str, exc: ControlError | UnicodeError) -> None:
        super().__init__(arg, socket_path, exc)
        self.arg = arg
        self.socket_path = socket_path
        self.exc = exc


def _control_path(node: str | None, control: str | None) -> str:
    """The socket to ask: the node's daemon, else ``-c``, ``$DEVFSD_CONTROL``, default."""
    if node is not None:
        found = path_for_node(node)
        if found:
            return found
    return resolve_path(control)


def _drivers(path: str) -> list[tuple[str, int, bool]]:
    try:
        return Client(path).drivers()
    except ControlError as exc:
        raise _DaemonFailed(path, path, exc) from None


@final
class _SystemLookup:
    """``args.Lookup`` over the password and group files and the daemon."""

    def __init__(self) -> None:
        self._tables: dict[str, list[tuple[str, int, bool]]] = {}

    def user(self, name: str) -> int | None:
        try:
            return pwd.getpwnam(name).pw_uid
        except (KeyError, ValueError):
            return None

    def group(self, name: str) -> int | None:
        try:
            return grp.getgrnam(name).gr_gid
        except (KeyError, ValueError):
            return None

    def major(self, driver: str, *, block: bool, node: str, control: str | None) -> int | None:
        if block:
            return None  # devfsd has no block majors
        path = _control_path(node, control)
        table = self._tables.get(path)
        if table is None:
            table = self._tables[path] = _drivers(path)
        for name, maj, _attached in table:
            if name == driver:
                return maj
        return None


def node_identity(path: str, getxattr: GetXattr | None = None) -> tuple[int, int, int] | None:
    """What an existing node is: ``(file type bits, dev, permission bits)``.

    Asks the devfsd extended attributes first, then ``lstat``.

    Returns:
        ``None`` if ``path`` cannot be ``lstat``-ed.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    perms = stat.S_IMODE(st.st_mode)
    if getxattr is None:
        getxattr = _getxattr
    try:
        kind = getxattr(path, XATTR_TYPE).decode("ascii")
        maj = int(getxattr(path, XATTR_MAJOR).decode("ascii"))
        mnr = int(getxattr(path, XATTR_MINOR).decode("ascii"))
        if not (0 <= maj <= 0xFFFFFFFF and 0 <= mnr <= 0xFFFFFFFF):
            raise ValueError("device number out of range")
        return _XATTR_TYPES[kind], makedev(maj, mnr), perms
    except (OSError, ValueError, KeyError):
        return stat.S_IFMT(st.st_mode), st.st_rdev, perms


def _getxattr(path: str, attr: str) -> bytes:
    return os.getxattr(path, attr, follow_symlinks=False)


def _create(req: MakeNode) -> None:
    if req.type == "p":
        os.mkfifo(req.name, stat.S_IMODE(req.mode))
    else:
        os.mknod(req.name, req.mode, req.dev)


def _make(req: MakeNode) -> int:
    """mknod (the caller cleared the umask), ``-r``/``-R``, then chown."""
    try:
        if not _create_or_replace(req):
            return EXIT_SUCCESS
    except OSError as exc:
        return err(PROG, req.name, exc.errno or errno.EIO)
    if req.uid is not None or req.gid is not None:
        uid = -1 if req.uid is None else req.uid
        gid = -1 if req.gid is None else req.gid
        try:
            os.chown(req.name, uid, gid, follow_symlinks=False)
        except OSError as exc:
            # Only a warning, and still exit 0, as NetBSD's mknod.
            warn(PROG, f"{req.name}: uid/gid not changed", exc.errno or errno.EIO)
    return EXIT_SUCCESS


def _create_or_replace(req: MakeNode) -> bool:
    """Make the node; with ``-r``/``-R``, deal with one already there.

    Returns:
        Whether to go on to ``chown`` (``-r`` on a matching node: no).

    Raises:
        OSError: from ``mknod``, ``mkfifo`` or ``chmod``.
    """
    try:
        _create(req)
    except FileExistsError:
        if not req.replace:
            raise
        have = node_identity(req.name)
        want_type = stat.S_IFMT(req.mode)
        # NetBSD compares st_rdev for devices only; a FIFO's dev is not asked for.
        if have is not None and have[0] == want_type and (req.type == "p" or have[1] == req.dev):
            if req.replace == REPLACE:
                return False  # -r: leave the node, its mode and owner alone
            if have[2] != stat.S_IMODE(req.mode):
                os.chmod(req.name, stat.S_IMODE(req.mode))
        else:
            with contextlib.suppress(OSError):
                os.unlink(req.name)  # the mknod below reports what is wrong
            _create(req)
    return True


def _list(req: ListDrivers) -> int:
    """``-l``: ``NAME character major N`` per entry (there are no block majors)."""
    table = _drivers(_control_path(None, req.control))
    lines: list[str] = []
    for wanted in req.names or (None,):
        lines.extend(
            f"{name} character major {maj}\n"
            for name, maj, _attached in table
            if wanted is None or name == wanted
        )
    out("".join(lines))
    return EXIT_SUCCESS


def main(argv: Sequence[str] | None = None) -> int:
    """Run devfs-mknod; returns the exit status (^C: killed by SIGINT, ``interrupted``)."""
    return interruptible(_main, argv)


def _main(argv: Sequence[str]) -> int:
    if (asked := long_option(PROG, USAGE, "devfs-mknod(8)", argv)) is not None:
        return asked
    old_umask = os.umask(0)
    try:
        try:
            req = parse(
                argv,
                umask=old_umask,
                lookup=_SystemLookup(),
            )
            if isinstance(req, ListDrivers):
                return _list(req)
            return _make(req)
        except MknodError as exc:
            if exc.usage:
                return usage(PROG, USAGE, exc.message)
            return errx(PROG, exc.message or "")
        except _DaemonFailed as exc:
            return failed(PROG, exc.arg, exc.socket_path, exc.exc)
    finally:
        os.umask(old_umask)
