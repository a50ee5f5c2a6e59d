"""The pyfuse3 file system: the node tree and the I/O path, behind FUSE.

The only module that imports pyfuse3 besides the daemon. Every handler
turns ``DeviceError`` into ``FUSEError`` here and nowhere else; a driver's
stray exception has already become ``EIO`` in ``SpecFs``. Nothing else may
leave a handler (pyfuse3 ends its loop on it): ``_contained`` wraps every
handler to make anything else ``EIO`` (``devfsd.contain``), and ``read``
and ``write`` do the same inline.

What the kernel sees (see ../shared/DESIGN.md): character nodes are
*regular files* (there is no CUSE), opened ``direct_io``, so each
read(2)/write(2)/pread(2)/pwrite(2) reaches the driver once with the
caller's size; ``O_TRUNC`` is ignored. Seekable, as NetBSD's character
devices: the offset reaches the driver as ``uio.offset``, and pread(2)/pwrite(2)
are how two threads use one open node at once (read(2)/write(2) on one
open file share Linux's position lock; FOPEN_STREAM would lift it, but
pyfuse3 cannot set it). The reply to MKNOD alone says
``S_IFCHR`` (the kernel insists on the type it asked for); with zero entry
and attribute timeouts the next lookup says ``S_IFREG`` and the kernel makes
a fresh inode. A node's driver, major and minor are extended attributes
(``user.devfsd.*``), since ``st_rdev`` of a regular file reads 0.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import pyfuse3

from devfsd import _fuseintr
from devfsd.cdevsw._dev import Dev, major, minor
from devfsd.cdevsw._table import devsw
from devfsd.contain import contain
from devfsd.control import CONTROL_XATTR
from devfsd.errors import DeviceError
from devfsd.nodes import DOT_COOKIE, DOTDOT_COOKIE, Node, NodeTable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from devfsd.cdevsw._switch import File
    from devfsd.specfs import SpecFs

__all__ = ["MAX_TASKS", "DevFs"]

log = logging.getLogger(__name__)

#: Request tasks pyfuse3 may run; must exceed ``_wait.MAX_SLEEPERS`` so a
#: sleeping driver never starves the mount (pyfuse3's max_tasks deadlock).
MAX_TASKS: Final = 4200

_XATTRS: Final = (b"user.devfsd.type", b"user.devfsd.driver", b"user.devfsd.major", b"user.devfsd.minor")


def _err(exc: DeviceError) -> pyfuse3.FUSEError:
    e = exc.errno
    return pyfuse3.FUSEError(e if e.__class__ is int and 0 < e < 512 else errno.EIO)


def _err_mountwide(exc: DeviceError) -> pyfuse3.FUSEError:
    """``_err`` for OPEN and POLL, where the kernel takes ``ENOSYS`` for
    "this file system has no such operation" and stops sending it for the
    whole mount: every later open(2) of any node would skip its driver
    (and get no file), every poll(2) would say ready. A driver's
    ``ENOSYS`` there (in process or from a hostile host) becomes
    ``ENODEV``, so it costs its own node only."""
    if exc.errno == errno.ENOSYS:
        return pyfuse3.FUSEError(errno.ENODEV)
    return _err(exc)


def _fault(exc: BaseException, what: str) -> pyfuse3.FUSEError:
    """What a handler's stray exception becomes (``devfsd.contain``): pyfuse3
    ends its loop, and the daemon, on anything but ``FUSEError``."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    return _err(contain(exc, f"FUSE {what}"))


_Op = TypeVar("_Op", bound=type)


def _contained(cls: _Op) -> _Op:
    """Wrap each of ``cls``'s pyfuse3 handlers so that only ``FUSEError``
    leaves it (``read`` and ``write``, the hot path, do that inline)."""
    for name, fn in list(vars(cls).items()):
        if name in ("read", "write") or not inspect.iscoroutinefunction(fn):
            continue
        if not hasattr(pyfuse3.Operations, name):
            continue

        def wrap(fn: Callable[..., Awaitable[object]], name: str = name) -> Callable[..., Awaitable[object]]:
            @functools.wraps(fn)
            async def handler(*args: object, **kwargs: object) -> object:
                try:
                    return await fn(*args, **kwargs)
                except BaseException as exc:
                    raise _fault(exc, name) from None

            return handler

        setattr(cls, name, wrap(fn))
    return cls


@final
@_contained
class DevFs(pyfuse3.Operations):
    """``/dev`` as a FUSE file system.

    Args:
        spec: the I/O path to drivers.
        control_path: answered as ``user.devfsd.control`` on every inode.
        clock: nanoseconds since the epoch (tests pass a fake).
        table: the node tree (the daemon may pass a restored one).
    """

    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        spec: SpecFs,
        control_path: str = "",
        clock: Callable[[], int] = time.time_ns,
        table: NodeTable | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.clock = clock
        self.table = table or NodeTable(clock())
        self.control = control_path.encode()
        self.files: dict[int, tuple[File, Node]] = {}
        #: Open directories: handle -> inode.
        self._dirs: dict[int, int] = {}
        #: Open files and directories counted against a user's share of
        #: ``nr_files`` (``Limits.share``): handle -> uid; and how many each
        #: such uid holds (none: no entry). Root's, and all while
        #: ``nr_files`` is 0, are not counted.
        self._owner: dict[int, int] = {}
        self._uid_files: dict[int, int] = {}
        #: Opens in their driver's ``d_open`` now (counted against
        #: ``nr_files`` as open: a driver whose opens wait must not let
        #: opens in flight pass the limit).
        self._opening = 0
        self._next_fh = 1
        #: Called with the tree's journal after each change, before the reply
        #: (the state store commits it); None: nothing is kept.
        self.on_change: Callable[[list[tuple[str, object, object, object]]], None] | None = None
        #: The errno of the state writes failing now (0: they succeed).
        self._state_failing = 0
        # A sleeper's FUSE request is watched for INTERRUPT only if its file
        # handle is the sleeper's (devfsd._fuseintr's guard).
        _fuseintr.file_of = self._file_of

    def _file_of(self, fh: int) -> File | None:
        entry = self.files.get(fh)
        return entry[0] if entry is not None else None

    # -- attributes -------------------------------------------------------

    def _attr(self, node: Node, *, mknod_reply: bool = False) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.inode
        mode = node.mode
        if node.is_chr and not mknod_reply:
            mode = stat.S_IFREG | stat.S_IMODE(mode)
        a.st_mode = mode
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_rdev = node.rdev
        a.st_size = len(node.target) if stat.S_ISLNK(node.mode) else 0
        a.st_blksize = 4096
        a.st_blocks = 0
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        a.generation = 0
        a.entry_timeout = 0
        a.attr_timeout = 0
        return a

    def _entry(self, node: Node, *, mknod_reply: bool = False) -> pyfuse3.EntryAttributes:
        node.nlookup += 1
        return self._attr(node, mknod_reply=mknod_reply)

    def _changed(self) -> None:
        """Commit the call's change; if the state write fails, take the
        change back and fail the call with its errno (``ENOSPC``, ``EROFS``,
        ``EIO``)."""
        journal = self.table.take_journal()
        if self.on_change is not None:
            try:
                self.on_change(journal)
            except DeviceError as exc:
                self.table.rollback()
                if exc.errno != self._state_failing:  # once per stretch: a full disk is not flooded
                    log.error("%s; the call is undone, and the calls after it until writes succeed", exc)
                    self._state_failing = exc.errno
                raise _err(exc) from None
            if self._state_failing:
                log.warning("state writes succeed again")
                self._state_failing = 0

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            return self._entry(self.table.lookup(parent_inode, name))
        except DeviceError as exc:
            raise _err(exc) from None

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, n in inode_list:
            self.table.forget(ino, n)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            return self._attr(self.table.get(inode))
        except DeviceError as exc:
            raise _err(exc) from None

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        try:
            node = self.table.get(inode)
        except DeviceError as exc:
            raise _err(exc) from None
        now = self.clock()
        if fields.update_size and node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
            # Truncating a device node does nothing (echo x > node opens O_TRUNC).
        self.table.begin(node)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = now
        self.table.touch(node)
        self._changed()
        return self._attr(node)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        try:
            node = self.table.get(inode)
        except DeviceError as exc:
            raise _err(exc) from None
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    # -- names ------------------------------------------------------------

    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            node = self.table.mknod(
                parent_inode, name, mode & ~ctx.umask, rdev, ctx.uid, ctx.gid, self.clock()
            )
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()
        return self._entry(node, mknod_reply=True)

    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            node = self.table.mkdir(parent_inode, name, mode & ~ctx.umask, ctx.uid, ctx.gid, self.clock())
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()
        return self._entry(node)

    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            node = self.table.symlink(parent_inode, name, target, ctx.uid, ctx.gid, self.clock())
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()
        return self._entry(node)

    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        try:
            node = self.table.link(inode, new_parent_inode, new_name, self.clock(), privileged=ctx.uid == 0)
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()
        return self._entry(node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        try:
            self.table.unlink(parent_inode, name, self.clock())
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        try:
            self.table.rmdir(parent_inode, name, self.clock())
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        try:
            self.table.rename(
                parent_inode_old,
                name_old,
                parent_inode_new,
                name_new,
                flags,
                self.clock(),
                privileged=ctx.uid == 0,
            )
        except DeviceError as exc:
            raise _err(exc) from None
        self._changed()

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        # Only device nodes, FIFOs, directories and links live here.
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    # -- directories --------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        # Only the number: readdir lists the live entries from their
        # cookies (nodes.Entries), no copy per open directory.
        try:
            self.table.dir(inode)
            uid = self._room_to_open(ctx)
        except DeviceError as exc:
            raise _err(exc) from None
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = inode
        if uid:
            self._owner[fh] = uid
        return fh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode = self._dirs.get(fh)
        if inode is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        nodes = self.table.nodes
        d = nodes.get(inode)
        if d is None or d.children is None:
            return  # removed meanwhile: nothing in it
        reply = pyfuse3.readdir_reply
        if start_id < DOT_COOKIE and not reply(token, b".", self._attr(d), DOT_COOKIE):
            return
        if start_id < DOTDOT_COOKIE:
            up = nodes.get(d.parent, d)
            if not reply(token, b"..", self._attr(up), DOTDOT_COOKIE):
                return
        for cookie, name, ino in d.children.after(start_id):
            node = nodes.get(ino)
            if node is not None and not reply(token, name, self._attr(node), cookie):
                return

    async def releasedir(self, fh: int) -> None:
        if self._dirs.pop(fh, None) is not None and self._owner:
            self._uncount(fh)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self.table.nodes)
        s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = 255
        lim, t = self.table.limits, self.table
        if lim is not None:  # as tmpfs: df and df -i show the limits
            ui, ub = lim.room(False)
            if lim.size:
                s.f_blocks = lim.size // 4096
                s.f_bfree = max(0, lim.size - t.bytes_used) // 4096
                s.f_bavail = max(0, ub - t.bytes_used) // 4096
            if lim.nr_inodes:
                s.f_files = lim.nr_inodes
                s.f_ffree = max(0, lim.nr_inodes - t.inodes_used)
                s.f_favail = max(0, ui - t.inodes_used)
        return s

    # -- extended attributes ------------------------------------------------

    def _xattrs(self, node: Node) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        if self.control:
            out[CONTROL_XATTR.encode()] = self.control
        if node.is_chr:
            dev = Dev(node.rdev)
            out[b"user.devfsd.type"] = b"c"
            out[b"user.devfsd.driver"] = (devsw.getname(major(dev)) or "").encode()
            out[b"user.devfsd.major"] = str(major(dev)).encode()
            out[b"user.devfsd.minor"] = str(minor(dev)).encode()
        return out

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        try:
            node = self.table.get(inode)
        except DeviceError as exc:
            raise _err(exc) from None
        value = self._xattrs(node).get(name)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        try:
            node = self.table.get(inode)
        except DeviceError as exc:
            raise _err(exc) from None
        return list(self._xattrs(node))

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.EPERM if name.startswith(b"user.devfsd.") else errno.ENOTSUP)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise pyfuse3.FUSEError(errno.EPERM if name.startswith(b"user.devfsd.") else errno.ENODATA)

    # -- device I/O -----------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        try:
            node = self.table.get(inode)
        except DeviceError as exc:
            raise _err(exc) from None
        if not node.is_chr:
            raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.ENXIO)
        try:
            uid = self._room_to_open(ctx)
        except DeviceError as exc:
            raise _err(exc) from None
        fh = self._next_fh
        self._next_fh += 1
        if uid:  # counted while the driver opens it: a user's opens in flight do not pass the share
            self._owner[fh] = uid
        node.nopen += 1
        self._opening += 1
        try:
            fp = await self.spec.open(Dev(node.rdev), flags, ctx.pid, ctx.uid, ctx.gid)
        except BaseException as exc:
            self._opening -= 1
            node.nopen -= 1
            self.table.maybe_free(node)
            if uid:
                self._uncount(fh)
            if isinstance(exc, DeviceError):
                raise _err_mountwide(exc) from None
            raise
        self._opening -= 1
        self.files[fh] = (fp, node)
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    def _room_to_open(self, ctx: pyfuse3.RequestContext) -> int:
        """``ENFILE`` if one more open file would pass ``nr_files`` (root's
        reserve less, unless ``ctx`` is root's; opens still in their
        driver count as open), ``EMFILE`` if it would
        pass the caller's share; else count it against the caller's share.

        Returns:
            The uid it counts against (0: none, root's or no limit); the
            caller puts it in ``_owner`` for the handle.
        """
        lim = self.table.limits
        if lim is None or not lim.nr_files:
            return 0
        uid = ctx.uid
        now = len(self.files) + len(self._dirs) + self._opening
        if not uid:
            lim.check_open(now, True)
            return 0
        mine = self._uid_files.get(uid, 0)
        lim.check_open(now, False, mine)
        self._uid_files[uid] = mine + 1
        return uid

    def _uncount(self, fh: int) -> None:
        """Give back the place ``fh`` held in its uid's share, if any."""
        uid = self._owner.pop(fh, 0)
        if uid:
            n = self._uid_files[uid] - 1
            if n:
                self._uid_files[uid] = n
            else:
                del self._uid_files[uid]

    async def read(self, fh: int, off: int, size: int) -> bytes:
        # The reply may be any contiguous buffer (fuse.md 1.2), a memoryview
        # from uiomove as often as not; typing.cast() would be a call per READ.
        try:
            return await self.spec.read(self.files[fh][0], size, off)  # type: ignore[return-value]
        except DeviceError as exc:
            raise _err(exc) from None
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None
        except BaseException as exc:
            raise _fault(exc, "read") from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        try:
            return await self.spec.write(self.files[fh][0], buf, off)
        except DeviceError as exc:
            raise _err(exc) from None
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None
        except BaseException as exc:
            raise _fault(exc, "write") from None

    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: pyfuse3.RequestContext) -> int:
        entry = self.files.get(fh)
        if entry is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        try:
            return await self.spec.poll(entry[0], poll_handle=poll_handle)
        except DeviceError as exc:
            raise _err_mountwide(exc) from None

    async def flush(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    async def release(self, fh: int) -> None:
        entry = self.files.pop(fh, None)
        if entry is None:
            return
        if self._owner:
            self._uncount(fh)
        fp, node = entry
        try:
            await self.spec.close(fp)
        finally:
            node.nopen -= 1
            self.table.maybe_free(node)

    def stacktrace(self) -> None:  # pragma: no cover - debugging aid
        log.info("stack trace requested")

    # -- for the control socket -----------------------------------------------

    def resolve(self, mountpoint: str, path: str) -> Node:
        """The node at ``path`` (absolute, under ``mountpoint``), without FUSE.

        The daemon must never walk its own mount through the kernel.

        Raises:
            DeviceError: ``EXDEV`` if ``path`` is not on this mount, else
                lookup errors.
        """
        rel = os.path.relpath(os.path.normpath(path), mountpoint)
        if rel == os.curdir:
            return self.table.root
        if rel.startswith(os.pardir):
            raise DeviceError(errno.EXDEV, f"{path} is not on {mountpoint}")
        node = self.table.root
        for part in rel.split(os.sep):
            node = self.table.lookup(node.inode, os.fsencode(part))
            if stat.S_ISLNK(node.mode):
                raise DeviceError(errno.ELOOP, "symbolic links are not followed here")
        return node
