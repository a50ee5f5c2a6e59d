"""rawfs: the least a pyfuse3 file system can do to serve a zero device.

``python bench/rawfs.py MOUNTPOINT`` mounts one file, ``MOUNTPOINT/zero``,
and serves it until the mount goes (``umount``, ``fusermount3 -u``) or the
process gets SIGTERM/SIGINT. It is the reference devfsd's ``mm`` zero is
measured against (``bench_read.py``), so it does on each READ only what
pyfuse3 cannot avoid: an ``async def`` returning a ``memoryview`` slice of
one preallocated zero buffer. No table, no per-request object of its own,
no logging.

Everything that is not per request is devfsd's (../devfsd/daemon.py,
../devfsd/fs.py), so the two differ only in the code between the READ and
its reply: the same mount options but the names (``default_permissions``,
``allow_other`` as root, ``fsname=``/``subtype=``), the same
``pyfuse3.main(min_tasks=2, max_tasks=MAX_TASKS)``, the same trio, a signal
receiver in the same nursery, the file opened ``direct_io`` (seekable, as
devfsd's nodes), FLUSH answered rather than ``ENOSYS``.

Touches the world (a mount); imports pyfuse3 and trio, and ``MAX_TASKS``
from devfsd so that a change there follows here.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import sys
from typing import TYPE_CHECKING, Final, final

import pyfuse3
import trio

from devfsd.fs import MAX_TASKS

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["RawFs", "main"]

#: The one file, and its inode.
NAME: Final = b"zero"
ZERO_INODE: Final = pyfuse3.ROOT_INODE + 1

#: The largest READ the kernel sends (256 pages); every reply is a slice.
ZERO_SIZE: Final = 1 << 20


def _mount_options() -> set[str]:
    # As devfsd.daemon._mount_options(), names aside.
    opts = {"default_permissions", "fsname=rawfs", "subtype=rawfs"}
    if os.geteuid() == 0:
        opts.add("allow_other")
    return opts


@final
class RawFs(pyfuse3.Operations):
    """A root directory holding one endless file of zeros."""

    enable_writeback_cache = False
    enable_acl = False

    def __init__(self) -> None:
        super().__init__()
        self._zero = memoryview(bytes(ZERO_SIZE))
        self._next_fh = 1

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = pyfuse3.InodeT(inode)
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
        else:
            a.st_mode = stat.S_IFREG | 0o666
            a.st_nlink = 1
        a.st_uid = a.st_gid = 0
        a.st_size = 0
        a.st_blksize = 4096
        a.entry_timeout = a.attr_timeout = 0
        return a

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ZERO_INODE)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode not in (pyfuse3.ROOT_INODE, ZERO_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode != ZERO_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = self._next_fh
        self._next_fh += 1
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> memoryview:  # type: ignore[override]
        # The whole job. pyfuse3 takes any contiguous buffer (fuse.md 1.2).
        return self._zero[:size]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return len(buf)

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        return None


def _is_mounted(real: str) -> bool:
    # mountinfo only: the server must never stat its own mount.
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


async def _serve() -> None:
    async with trio.open_nursery() as nursery:

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return

        nursery.start_soon(signals)
        await pyfuse3.main(min_tasks=2, max_tasks=MAX_TASKS)
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: rawfs.py MOUNTPOINT", file=sys.stderr)
        return 2
    mountpoint = os.path.realpath(args[0])
    pyfuse3.init(RawFs(), mountpoint, _mount_options())
    try:
        trio.run(_serve)
    except BaseException:
        pyfuse3.close(unmount=_is_mounted(mountpoint))
        raise
    pyfuse3.close(unmount=_is_mounted(mountpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
