"""devfsd.fs's handlers called in process, as pyfuse3 calls them behind a mount.

The mount tests (tests/integration) see the same behaviour through the
kernel; these run without FUSE, so that the mutation judge (tests/unit,
issue 18) sees fs.py too. A request's context is what pyfuse3 hands a
handler: the caller's uid, gid, pid and umask.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tracemalloc
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyfuse3
import pytest
import trio
import trio.testing

from devfsd import _fuseintr
from devfsd.cdevsw import Cdevsw, Lwp, Uio, WaitChannel, devsw, makedev
from devfsd.control import CONTROL_XATTR
from devfsd.errors import DeviceError
from devfsd.fs import DevFs
from devfsd.limits import Limits
from devfsd.nodes import RENAME_NOREPLACE, ROOT_INODE
from devfsd.state import StateStore
from devfsd.testing.harness import Kernel
from modules.mm.mm import DEV_FULL, DEV_NULL, DEV_ZERO

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

R = ROOT_INODE
MM = 2  # mm's major


@dataclass
class Ctx:
    """The fields of pyfuse3.RequestContext the handlers read."""

    uid: int = 0
    gid: int = 0
    pid: int = 0
    umask: int = 0o022


@dataclass
class Fields:
    """pyfuse3.SetattrFields: which attributes a SETATTR changes."""

    update_size: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_atime: bool = False
    update_mtime: bool = False


ROOT = Ctx()
USER = Ctx(uid=1000, gid=1000, pid=os.getpid(), umask=0o002)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 1
        return self.now


@asynccontextmanager
async def devfs() -> AsyncIterator[tuple[DevFs, Clock]]:
    """A DevFs over the harness kernel, mm loaded, with a clock that ticks per call."""
    kept = _fuseintr.file_of  # DevFs hooks itself in there, as the daemon's does
    try:
        async with Kernel.running() as k:
            await k.modload("mm")
            clock = Clock()
            fs = DevFs(k.spec, "/run/devfsd.sock", clock=clock)
            yield fs, clock
    finally:
        _fuseintr.file_of = kept


def fuse_errno(exc: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc.value.errno


async def mknod(fs: DevFs, name: bytes, minor: int = DEV_NULL, ctx: Ctx = ROOT, parent: int = R) -> Any:
    return await fs.mknod(parent, name, stat.S_IFCHR | 0o666, makedev(MM, minor), ctx)  # type: ignore[arg-type]


async def test_mknod_reply_says_chr_and_later_lookups_say_regular_file() -> None:
    async with devfs() as (fs, clock):
        a = await mknod(fs, b"null", ctx=USER)
        assert stat.S_ISCHR(a.st_mode)
        assert stat.S_IMODE(a.st_mode) == 0o664  # the caller's umask 002
        assert (a.st_uid, a.st_gid, a.st_rdev) == (1000, 1000, makedev(MM, DEV_NULL))
        assert (a.entry_timeout, a.attr_timeout) == (0, 0)
        b = await fs.lookup(R, b"null", ROOT)  # type: ignore[arg-type]
        assert stat.S_IFMT(b.st_mode) == stat.S_IFREG
        assert stat.S_IMODE(b.st_mode) == 0o664
        assert b.st_ino == a.st_ino and b.st_nlink == 1
        assert (b.st_size, b.st_blksize, b.st_blocks, b.generation) == (0, 4096, 0, 0)
        assert b.st_mtime_ns == b.st_ctime_ns == b.st_atime_ns == clock.now
        g = await fs.getattr(a.st_ino, ROOT)  # type: ignore[arg-type]
        assert (g.st_mode, g.st_uid, g.st_gid, g.st_rdev) == (b.st_mode, 1000, 1000, makedev(MM, DEV_NULL))


async def test_mkdir_and_symlink_attributes() -> None:
    async with devfs() as (fs, _):
        d = await fs.mkdir(R, b"d", stat.S_IFDIR | 0o777, USER)  # type: ignore[arg-type]
        assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o775
        assert (d.st_uid, d.st_gid, d.st_nlink) == (1000, 1000, 2)
        s = await fs.symlink(d.st_ino, b"l", b"../null", USER)  # type: ignore[arg-type]
        assert stat.S_ISLNK(s.st_mode) and s.st_size == len(b"../null")
        assert (s.st_uid, s.st_gid) == (1000, 1000)
        assert await fs.readlink(s.st_ino, ROOT) == b"../null"  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.readlink(d.st_ino, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EINVAL
        root = await fs.getattr(R, ROOT)  # type: ignore[arg-type]
        assert root.st_nlink == 3


async def test_missing_names_and_inodes_are_enoent() -> None:
    async with devfs() as (fs, _):
        for call in (
            fs.lookup(R, b"nope", ROOT),  # type: ignore[arg-type]
            fs.getattr(999, ROOT),  # type: ignore[arg-type]
            fs.readlink(999, ROOT),  # type: ignore[arg-type]
            fs.unlink(R, b"nope", ROOT),  # type: ignore[arg-type]
            fs.rmdir(R, b"nope", ROOT),  # type: ignore[arg-type]
            fs.getxattr(999, b"user.devfsd.type", ROOT),  # type: ignore[arg-type]
            fs.listxattr(999, ROOT),  # type: ignore[arg-type]
            fs.open(999, os.O_RDONLY, ROOT),  # type: ignore[arg-type]
            fs.setattr(999, pyfuse3.EntryAttributes(), Fields(), None, ROOT),  # type: ignore[arg-type]
            fs.opendir(999, ROOT),  # type: ignore[arg-type]
            fs.link(999, R, b"x", ROOT),  # type: ignore[arg-type]
            fs.rename(R, b"nope", R, b"x", 0, ROOT),  # type: ignore[arg-type]
        ):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await call
            assert fuse_errno(ei) == errno.ENOENT
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.mkdir(999, b"x", 0o755, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOENT
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.symlink(999, b"x", b"t", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOENT
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await mknod(fs, b"x", parent=999)
        assert fuse_errno(ei) == errno.ENOENT


async def test_setattr_changes_only_the_fields_asked_and_stamps_ctime() -> None:
    async with devfs() as (fs, clock):
        a = await mknod(fs, b"n")
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = stat.S_IFDIR | 0o4600  # the type bits are the node's
        attr.st_uid, attr.st_gid = 7, 8
        attr.st_atime_ns, attr.st_mtime_ns = 11, 12
        r = await fs.setattr(a.st_ino, attr, Fields(update_mode=True), None, ROOT)  # type: ignore[arg-type]
        assert r.st_mode == stat.S_IFREG | 0o4600 and (r.st_uid, r.st_gid) == (0, 0)
        assert r.st_ctime_ns == clock.now and r.st_mtime_ns < clock.now
        r = await fs.setattr(a.st_ino, attr, Fields(update_uid=True), None, ROOT)  # type: ignore[arg-type]
        assert (r.st_uid, r.st_gid) == (7, 0)
        r = await fs.setattr(a.st_ino, attr, Fields(update_gid=True), None, ROOT)  # type: ignore[arg-type]
        assert (r.st_uid, r.st_gid) == (7, 8)
        assert (r.st_atime_ns, r.st_mtime_ns) != (11, 12)
        r = await fs.setattr(a.st_ino, attr, Fields(update_atime=True), None, ROOT)  # type: ignore[arg-type]
        assert r.st_atime_ns == 11 and r.st_mtime_ns != 12
        r = await fs.setattr(a.st_ino, attr, Fields(update_mtime=True), None, ROOT)  # type: ignore[arg-type]
        assert (r.st_atime_ns, r.st_mtime_ns) == (11, 12)
        # Truncating a device node (open O_TRUNC) does nothing; a directory refuses.
        r = await fs.setattr(a.st_ino, attr, Fields(update_size=True), None, ROOT)  # type: ignore[arg-type]
        assert r.st_size == 0 and r.st_mode == stat.S_IFREG | 0o4600
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.setattr(R, attr, Fields(update_size=True), None, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EISDIR


async def test_every_change_is_handed_to_on_change_and_a_failed_write_undoes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with devfs() as (fs, _):
        journals: list[list[tuple[str, object, object, object]]] = []
        failing = [0]

        def on_change(journal: list[tuple[str, object, object, object]]) -> None:
            if failing[0]:
                raise DeviceError(failing[0], "state: disk full")
            journals.append(journal)

        fs.on_change = on_change
        a = await mknod(fs, b"n")
        assert any(op == "link" and b == b"n" for op, _a, b, _c in journals[-1])
        await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        assert any(op == "link" and b == b"d" for op, _a, b, _c in journals[-1])
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = 0o600
        await fs.setattr(a.st_ino, attr, Fields(update_mode=True), None, ROOT)  # type: ignore[arg-type]
        assert journals[-1] and journals[-1][0][0] == "put"
        n = len(journals)
        caplog.set_level(logging.WARNING, logger="devfsd.fs")
        failing[0] = errno.ENOSPC
        for name in (b"x", b"y"):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await mknod(fs, name)
            assert fuse_errno(ei) == errno.ENOSPC
            with pytest.raises(pyfuse3.FUSEError):
                await fs.lookup(R, name, ROOT)  # type: ignore[arg-type]  # undone
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.unlink(R, b"n", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOSPC
        assert (await fs.lookup(R, b"n", ROOT)).st_ino == a.st_ino  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.setattr(a.st_ino, attr, Fields(update_uid=True), None, ROOT)  # type: ignore[arg-type]
        assert (await fs.getattr(a.st_ino, ROOT)).st_uid == 0  # type: ignore[arg-type]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1  # once per stretch
        undone = "; the call is undone, and the calls after it until writes succeed"
        assert errors[0].getMessage() == f"{DeviceError(errno.ENOSPC, 'state: disk full')}{undone}"
        failing[0] = errno.EROFS  # another errno: logged again
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await mknod(fs, b"z")
        assert fuse_errno(ei) == errno.EROFS
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
        failing[0] = 0
        await mknod(fs, b"z")
        assert len(journals) == n + 1
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
            "state writes succeed again"
        ]
        await mknod(fs, b"w")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


async def test_an_errno_out_of_range_from_the_state_is_eio() -> None:
    async with devfs() as (fs, _):

        def on_change(journal: object) -> None:
            raise DeviceError(600, "odd")

        fs.on_change = on_change
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await mknod(fs, b"n")
        assert fuse_errno(ei) == errno.EIO


async def test_a_stray_exception_in_a_handler_is_eio_not_the_loop_s_end() -> None:
    async with devfs() as (fs, _):

        def on_change(journal: object) -> None:
            raise ZeroDivisionError

        fs.on_change = on_change
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EIO


async def test_link_unlink_rmdir_rename_and_who_may_use_the_reserve() -> None:
    async with devfs() as (fs, _):
        a = await mknod(fs, b"a")
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        b = await fs.link(a.st_ino, d.st_ino, b"b", ROOT)  # type: ignore[arg-type]
        assert b.st_ino == a.st_ino and b.st_nlink == 2
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.link(d.st_ino, R, b"d2", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EPERM
        await fs.unlink(R, b"a", ROOT)  # type: ignore[arg-type]
        assert (await fs.getattr(a.st_ino, ROOT)).st_nlink == 1  # type: ignore[arg-type]
        await fs.rename(d.st_ino, b"b", R, b"c", 0, ROOT)  # type: ignore[arg-type]
        assert (await fs.lookup(R, b"c", ROOT)).st_ino == a.st_ino  # type: ignore[arg-type]
        await mknod(fs, b"e")
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.rename(R, b"c", R, b"e", RENAME_NOREPLACE, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EEXIST
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.unlink(R, b"d", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EISDIR
        await fs.rmdir(R, b"d", ROOT)  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.lookup(R, b"d", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOENT
        # root's reserve: with the tree full to the users' share, root may
        # still link and rename over it, a user may not.
        fs.table.limits = Limits(nr_inodes=0, size=fs.table.bytes_used + 4096, reserve=90)
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.link(a.st_ino, R, b"f", USER)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOSPC
        await fs.link(a.st_ino, R, b"f", ROOT)  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.rename(R, b"f", R, b"a-longer-name", 0, USER)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOSPC
        await fs.rename(R, b"f", R, b"a-longer-name", 0, ROOT)  # type: ignore[arg-type]


async def test_only_device_nodes_fifos_directories_and_links_are_made() -> None:
    async with devfs() as (fs, _):
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.create(R, b"f", stat.S_IFREG | 0o644, os.O_CREAT | os.O_WRONLY, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EOPNOTSUPP
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.mknod(R, b"f", stat.S_IFREG | 0o644, 0, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EOPNOTSUPP
        p = await fs.mknod(R, b"p", stat.S_IFIFO | 0o644, 0, ROOT)  # type: ignore[arg-type]
        assert stat.S_ISFIFO(p.st_mode) and p.st_rdev == 0


async def test_opendir_lists_dot_dotdot_and_entries_and_readdir_needs_its_handle() -> None:
    async with devfs() as (fs, _):
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        fh1 = await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        fh2 = await fs.opendir(d.st_ino, ROOT)  # type: ignore[arg-type]
        assert fh1 != fh2
        a = await mknod(fs, b"a")
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.opendir(a.st_ino, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOTDIR
        # A file handle of a device and one of a directory are never the same.
        f = await fs.open(a.st_ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
        assert f.fh not in (fh1, fh2)
        await fs.release(f.fh)
        await fs.releasedir(fh1)
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.readdir(fh1, 0, None)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EBADF
        # A handle of a directory is not a device's (reads and polls refuse it).
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.read(fh2, 0, 1)
        assert fuse_errno(ei) == errno.EBADF


class Listing:
    """pyfuse3.readdir_reply for a request's token (the kernel's buffer):
    records each entry a READDIR hands the kernel, and says the buffer is
    full (False, entry not taken) after ``room`` of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.token = object()
        self.room = 1 << 20
        self.batch: list[tuple[bytes, int, int, int]] = []
        monkeypatch.setattr(pyfuse3, "readdir_reply", self.reply)

    def reply(self, token: object, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        assert token is self.token
        if len(self.batch) >= self.room:
            return False
        self.batch.append((name, attr.st_ino, stat.S_IFMT(attr.st_mode), next_id))
        return True

    async def read(self, fs: DevFs, fh: int, start_id: int = 0) -> list[tuple[bytes, int, int, int]]:
        """One READDIR from ``start_id``: the entries the kernel got."""
        self.batch = []
        await fs.readdir(fh, start_id, self.token)  # type: ignore[arg-type]
        return self.batch

    async def read_all(self, fs: DevFs, fh: int, room: int) -> list[tuple[bytes, int, int, int]]:
        """READDIRs of ``room`` entries each, each from the last one's next id, as getdents(2) does."""
        got: list[tuple[bytes, int, int, int]] = []
        self.room, start = room, 0
        for _ in range(100):  # bounded: a READDIR that never ends the listing fails
            batch = await self.read(fs, fh, start)
            if not batch:
                self.room = 1 << 20
                return got
            got += batch
            start = batch[-1][3]
        pytest.fail(f"READDIR of {room} entries at a time never reached the end: {got[:10]}...")


async def test_readdir_lists_entries_with_attributes_and_resumable_offsets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listing = Listing(monkeypatch)
    DIR, NODE, LNK = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK  # a device node looks like a file
    async with devfs() as (fs, _):
        a = await mknod(fs, b"a")
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        b = await mknod(fs, b"b")
        ln = await fs.symlink(R, b"l", b"a", ROOT)  # type: ignore[arg-type]
        c = await mknod(fs, b"c")
        fh = await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        want = [
            (b".", R, DIR, 1),
            (b"..", R, DIR, 2),
            (b"a", a.st_ino, NODE, 3),
            (b"d", d.st_ino, DIR, 4),
            (b"b", b.st_ino, NODE, 5),
            (b"l", ln.st_ino, LNK, 6),
            (b"c", c.st_ino, NODE, 7),
        ]
        assert await listing.read(fs, fh) == want
        # A full buffer: the next READDIR goes on from the last entry's id.
        for room in (1, 2, 3):
            assert await listing.read_all(fs, fh, room) == want, room
        assert await listing.read(fs, fh, 5) == want[5:]
        assert await listing.read(fs, fh, 7) == []
        # A subdirectory lists itself and its parent.
        sub = await fs.opendir(d.st_ino, ROOT)  # type: ignore[arg-type]
        assert await listing.read(fs, sub) == [(b".", d.st_ino, DIR, 1), (b"..", R, DIR, 2)]
        # The entries as they are now: an entry removed since opendir is not
        # listed, one added is, after the rest; the others keep their ids.
        e = await mknod(fs, b"e")
        await fs.unlink(R, b"b", ROOT)  # type: ignore[arg-type]
        await fs.forget([(b.st_ino, 1)])
        now = [*want[:4], *want[5:], (b"e", e.st_ino, NODE, 8)]
        assert await listing.read(fs, fh) == now
        assert await listing.read_all(fs, fh, 1) == now
        await fs.releasedir(fh)
        await fs.releasedir(sub)


async def test_a_listing_in_many_reads_returns_every_entry_that_stays_exactly_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POSIX readdir: entries added or removed while a directory is read
    may or may not be listed, every other entry is listed once, however
    the reads are cut. Here names are removed before and after the
    reader's place, added, renamed (onto a name, keeping it) and
    exchanged between each two reads of 3 entries."""
    listing = Listing(monkeypatch)
    async with devfs() as (fs, _):
        for i in range(40):
            await mknod(fs, b"n%02d" % i)
        fh = await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        stay = {b"n%02d" % i for i in range(40) if i % 4 != 1} | {b".", b".."}
        churn = iter(range(1, 40, 4))
        seen: list[bytes] = []
        listing.room, start = 3, 0
        for _ in range(200):  # bounded
            batch = await listing.read(fs, fh, start)
            if not batch:
                break
            seen += [name for name, *_ in batch]
            start = batch[-1][3]
            k = next(churn, None)
            if k is not None:
                await fs.unlink(R, b"n%02d" % k, ROOT)  # type: ignore[arg-type]
                await mknod(fs, b"new%02d" % k)
                # rename onto an entry that stays: its name keeps its place
                await mknod(fs, b"tmp")
                await fs.rename(R, b"tmp", R, b"n%02d" % (k + 1), 0, ROOT)  # type: ignore[arg-type]
        else:
            pytest.fail("the listing never ended")
        kept = [n for n in seen if n in stay]
        assert sorted(kept) == sorted(stay)  # each once: none lost, none twice
        assert len(seen) == len(set(seen))
        await fs.releasedir(fh)


async def test_open_files_and_directories_count_against_nr_files() -> None:
    async with devfs() as (fs, _):
        a = await mknod(fs, b"a")
        fs.table.limits = Limits(nr_files=4, reserve=50, share=100)  # users: 2 open files, one user all
        f = await fs.open(a.st_ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        d = await fs.opendir(R, USER)  # type: ignore[arg-type]
        for attempt in (fs.open(a.st_ino, os.O_RDONLY, USER), fs.opendir(R, USER)):  # type: ignore[arg-type]
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await attempt
            assert fuse_errno(ei) == errno.ENFILE
        # Root's reserve, then nobody.
        f2 = await fs.open(a.st_ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
        d2 = await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENFILE
        # A refused open reached no driver and left the node unopened.
        assert fs.table.get(a.st_ino).nopen == 2
        # The share counts every open file, root's too: closes make room.
        await fs.release(f.fh)
        await fs.releasedir(d)
        with pytest.raises(pyfuse3.FUSEError):
            await fs.open(a.st_ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        await fs.releasedir(d2)
        f3 = await fs.open(a.st_ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        for fh in (f2.fh, f3.fh):
            await fs.release(fh)


USER2 = Ctx(uid=1001, gid=1001, pid=os.getpid())
USER3 = Ctx(uid=1002, gid=1002, pid=os.getpid())


async def test_one_user_holds_at_most_its_share_of_nr_files() -> None:
    """``share``: one user past its share of the users' open files gets
    ``EMFILE`` (another user still opens); the users' part full, ``ENFILE``
    (root still opens); a close gives the place back, and the counts drop
    a uid that holds nothing."""
    async with devfs() as (fs, _):
        a = await mknod(fs, b"a")
        fs.table.limits = Limits(nr_files=10, reserve=20, share=50)  # users: 8, one user 4
        mine = [(await fs.open(a.st_ino, os.O_RDONLY, USER)).fh for _ in range(2)]  # type: ignore[arg-type]
        mine += [await fs.opendir(R, USER) for _ in range(2)]  # type: ignore[arg-type]
        for attempt in (fs.open(a.st_ino, os.O_RDONLY, USER), fs.opendir(R, USER)):  # type: ignore[arg-type]
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await attempt
            assert fuse_errno(ei) == errno.EMFILE
        assert fs._uid_files == {USER.uid: 4}
        theirs = [(await fs.open(a.st_ino, os.O_RDONLY, USER2)).fh for _ in range(4)]  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.open(a.st_ino, os.O_RDONLY, USER3)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENFILE  # the users' part is full: no share of it left
        roots = [(await fs.open(a.st_ino, os.O_RDONLY, ROOT)).fh for _ in range(2)]  # type: ignore[arg-type]
        assert fs._uid_files == {USER.uid: 4, USER2.uid: 4}  # root's are not counted
        for fh in roots:
            await fs.release(fh)
        # A close gives one back to its user.
        await fs.release(mine.pop(0))
        await fs.releasedir(mine.pop())
        assert fs._uid_files == {USER.uid: 2, USER2.uid: 4}
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.open(a.st_ino, os.O_RDONLY, USER2)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EMFILE
        mine.append((await fs.open(a.st_ino, os.O_RDONLY, USER)).fh)  # type: ignore[arg-type]
        for fh in mine[:1] + theirs + mine[2:]:
            await fs.release(fh)
        await fs.releasedir(mine[1])
        assert fs._uid_files == {} and fs._owner == {}
        assert fs.table.get(a.st_ino).nopen == 0
        # No nr_files: nothing counted, no share.
        fs.table.limits = Limits(nr_files=0, share=1)
        fhs = [(await fs.open(a.st_ino, os.O_RDONLY, USER)).fh for _ in range(20)]  # type: ignore[arg-type]
        assert fs._uid_files == {} and fs._owner == {}
        for fh in fhs:
            await fs.release(fh)


async def test_an_open_refused_or_cancelled_in_its_driver_gives_its_share_back() -> None:
    """The place a user's open takes in its share while the driver opens
    goes back when the driver refuses, and when the open is cancelled
    (the daemon stopping) while the driver waits: none leaks."""
    async with recorder() as (fs, r, ino):
        fs.table.limits = Limits(nr_files=10, reserve=0, share=20)  # one user: 2
        r.refuse = True
        for _ in range(3):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
            assert fuse_errno(ei) == errno.EBUSY
        assert fs._uid_files == {} and fs._owner == {}
        r.refuse = False
        r.hold = trio.Event()
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                for _ in range(2):
                    n.start_soon(fs.open, ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
                await trio.testing.wait_all_tasks_blocked()
                # Both in the driver, counted: a third is past the share.
                assert fs._uid_files == {USER.uid: 2}
                with pytest.raises(pyfuse3.FUSEError) as ei:
                    await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
                assert fuse_errno(ei) == errno.EMFILE
                cs.cancel()
        assert fs._uid_files == {} and fs._owner == {} and not fs.files
        assert (await fs.getattr(ino, ROOT)).st_nlink == 1  # type: ignore[arg-type]
        r.hold = None
        fhs = [(await fs.open(ino, os.O_RDONLY, USER)).fh for _ in range(2)]  # type: ignore[arg-type]
        for fh in fhs:
            await fs.release(fh)
        assert fs._uid_files == {}


async def test_opens_still_in_their_driver_count_against_nr_files() -> None:
    """Opens a driver keeps waiting (a d_open that sleeps) are open files
    for ``nr_files``: many users' opens in flight together cannot pass it."""
    async with recorder() as (fs, r, ino):
        fs.table.limits = Limits(nr_files=3, reserve=0, share=50)  # one user: 1
        r.hold = trio.Event()
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as n:
                for who in (USER, USER2, USER3):
                    n.start_soon(fs.open, ino, os.O_RDONLY, who)  # type: ignore[arg-type]
                await trio.testing.wait_all_tasks_blocked()
                assert not fs.files  # all three still in the driver
                with pytest.raises(pyfuse3.FUSEError) as ei:
                    await fs.open(ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
                assert fuse_errno(ei) == errno.ENFILE
                cs.cancel()
        assert fs._opening == 0 and not fs.files
        r.hold = None
        fhs = [(await fs.open(ino, os.O_RDONLY, who)).fh for who in (USER, USER2, ROOT)]  # type: ignore[arg-type]
        for fh in fhs:
            await fs.release(fh)


async def test_open_directories_cost_no_copy_of_their_entries() -> None:
    """Opening a large directory many times (any user who may read it can)
    does not copy its entries per open: 500 opens of a 2,000-entry
    directory take well under what one copy per open would (~80 MB)."""
    async with devfs() as (fs, _):
        for i in range(2000):
            await mknod(fs, b"node-%04d" % i)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            fhs = [await fs.opendir(R, ROOT) for _ in range(500)]  # type: ignore[arg-type]
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 200_000, grown
        for fh in fhs:
            await fs.releasedir(fh)


async def test_statfs_without_and_with_limits() -> None:
    async with devfs() as (fs, _):
        await mknod(fs, b"a")
        s = await fs.statfs(ROOT)  # type: ignore[arg-type]
        assert (s.f_bsize, s.f_frsize, s.f_namemax) == (4096, 4096, 255)
        assert (s.f_blocks, s.f_bfree, s.f_bavail) == (0, 0, 0)
        assert (s.f_files, s.f_ffree, s.f_favail) == (2, 1 << 20, 1 << 20)
        t = fs.table
        t.limits = Limits(nr_inodes=100, size=4096 * 100, reserve=10)
        s = await fs.statfs(ROOT)  # type: ignore[arg-type]
        assert s.f_blocks == 100
        assert s.f_bfree == (4096 * 100 - t.bytes_used) // 4096
        assert s.f_bavail == (4096 * 90 - t.bytes_used) // 4096
        assert (s.f_files, s.f_ffree, s.f_favail) == (100, 100 - t.inodes_used, 90 - t.inodes_used)
        t.limits = Limits(nr_inodes=2, size=4096, reserve=50)  # users are over their share
        s = await fs.statfs(ROOT)  # type: ignore[arg-type]
        assert (s.f_blocks, s.f_bfree, s.f_bavail) == (1, (4096 - t.bytes_used) // 4096, 0)
        assert (s.f_files, s.f_ffree, s.f_favail) == (2, 0, 0)
        t.limits = Limits(nr_inodes=0, size=0, reserve=50)  # no limits: as without
        s = await fs.statfs(ROOT)  # type: ignore[arg-type]
        assert (s.f_blocks, s.f_files, s.f_ffree) == (0, 2, 1 << 20)


async def test_extended_attributes_name_the_driver_and_are_read_only() -> None:
    async with devfs() as (fs, _):
        a = await mknod(fs, b"zero", DEV_ZERO)
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        ctl = CONTROL_XATTR.encode()
        assert await fs.listxattr(a.st_ino, ROOT) == [  # type: ignore[arg-type]
            ctl,
            b"user.devfsd.type",
            b"user.devfsd.driver",
            b"user.devfsd.major",
            b"user.devfsd.minor",
        ]
        got = {n: await fs.getxattr(a.st_ino, n, ROOT) for n in await fs.listxattr(a.st_ino, ROOT)}  # type: ignore[arg-type]
        assert got[ctl] == b"/run/devfsd.sock"
        assert got[b"user.devfsd.type"] == b"c"
        assert got[b"user.devfsd.driver"] == b"mm"
        assert (got[b"user.devfsd.major"], got[b"user.devfsd.minor"]) == (b"2", str(DEV_ZERO).encode())
        assert await fs.listxattr(d.st_ino, ROOT) == [ctl]  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.getxattr(d.st_ino, b"user.devfsd.type", ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENODATA
        for name, set_e, remove_e in (
            (b"user.devfsd.major", errno.EPERM, errno.EPERM),
            (b"user.other", errno.ENOTSUP, errno.ENODATA),
        ):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.setxattr(a.st_ino, name, b"1", ROOT)  # type: ignore[arg-type]
            assert fuse_errno(ei) == set_e
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.removexattr(a.st_ino, name, ROOT)  # type: ignore[arg-type]
            assert fuse_errno(ei) == remove_e
        # A node whose major has no driver names none; no control socket: no attribute.
        orphan = await fs.mknod(R, b"o", stat.S_IFCHR | 0o600, makedev(200, 3), ROOT)  # type: ignore[arg-type]
        fs.control = b""
        assert await fs.getxattr(orphan.st_ino, b"user.devfsd.driver", ROOT) == b""  # type: ignore[arg-type]
        assert await fs.getxattr(orphan.st_ino, b"user.devfsd.minor", ROOT) == b"3"  # type: ignore[arg-type]
        assert ctl not in await fs.listxattr(orphan.st_ino, ROOT)  # type: ignore[arg-type]


async def test_device_io_through_the_handlers() -> None:
    async with devfs() as (fs, _):
        z = await mknod(fs, b"zero", DEV_ZERO)
        full = await mknod(fs, b"full", DEV_FULL)
        f = await fs.open(z.st_ino, os.O_RDWR, USER)  # type: ignore[arg-type]
        assert f.direct_io and not f.keep_cache
        assert bytes(await fs.read(f.fh, 0, 5)) == b"\0" * 5
        assert await fs.write(f.fh, 0, b"abc") == 3
        assert await fs.poll(z.st_ino, f.fh, None, USER) & 1  # type: ignore[arg-type]  # POLLIN
        await fs.flush(f.fh)
        await fs.fsync(f.fh, True)
        g = await fs.open(full.st_ino, os.O_WRONLY, USER)  # type: ignore[arg-type]
        assert g.fh != f.fh
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.write(g.fh, 0, b"x")
        assert fuse_errno(ei) == errno.ENOSPC
        await fs.release(f.fh)
        await fs.release(f.fh)  # a second release of the handle is nothing
        for call in (fs.read(f.fh, 0, 1), fs.write(f.fh, 0, b"x"), fs.poll(z.st_ino, f.fh, None, USER)):  # type: ignore[arg-type]
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await call
            assert fuse_errno(ei) == errno.EBADF
        await fs.release(g.fh)


async def test_open_of_what_is_not_a_device() -> None:
    async with devfs() as (fs, _):
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        p = await fs.mknod(R, b"p", stat.S_IFIFO | 0o644, 0, ROOT)  # type: ignore[arg-type]
        s = await fs.symlink(R, b"s", b"d", ROOT)  # type: ignore[arg-type]
        for ino, e in ((d.st_ino, errno.EISDIR), (p.st_ino, errno.ENXIO), (s.st_ino, errno.ENXIO)):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.open(ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
            assert fuse_errno(ei) == e
        # A node whose driver is not there: ENXIO, and the node is no more
        # held open (unlinked and forgotten, it is freed).
        n = await fs.mknod(R, b"n", stat.S_IFCHR | 0o600, makedev(200, 0), ROOT)  # type: ignore[arg-type]
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.open(n.st_ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENXIO
        await fs.unlink(R, b"n", ROOT)  # type: ignore[arg-type]
        await fs.forget([(n.st_ino, 1)])
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.getattr(n.st_ino, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOENT


async def test_an_unlinked_node_lives_while_open_or_looked_up() -> None:
    async with devfs() as (fs, _):
        a = await mknod(fs, b"a")  # one lookup (the MKNOD reply)
        f = await fs.open(a.st_ino, os.O_RDONLY, ROOT)  # type: ignore[arg-type]
        await fs.unlink(R, b"a", ROOT)  # type: ignore[arg-type]
        await fs.forget([(a.st_ino, 1)])
        assert (await fs.getattr(a.st_ino, ROOT)).st_nlink == 0  # type: ignore[arg-type]  # still open
        await fs.release(f.fh)
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.getattr(a.st_ino, ROOT)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.ENOENT
        # Each lookup counts: two lookups need two forgets.
        b = await mknod(fs, b"b")
        await fs.lookup(R, b"b", ROOT)  # type: ignore[arg-type]
        await fs.unlink(R, b"b", ROOT)  # type: ignore[arg-type]
        await fs.forget([(b.st_ino, 1)])
        assert (await fs.getattr(b.st_ino, ROOT)).st_nlink == 0  # type: ignore[arg-type]
        await fs.forget([(b.st_ino, 1)])
        with pytest.raises(pyfuse3.FUSEError):
            await fs.getattr(b.st_ino, ROOT)  # type: ignore[arg-type]


async def test_resolve_walks_the_tree_without_fuse() -> None:
    async with devfs() as (fs, _):
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        a = await mknod(fs, b"a", parent=d.st_ino)
        await fs.symlink(R, b"s", b"d", ROOT)  # type: ignore[arg-type]
        assert fs.resolve("/dev", "/dev").inode == R
        assert fs.resolve("/dev", "/dev/").inode == R
        assert fs.resolve("/dev", "/dev/d/a").inode == a.st_ino
        assert fs.resolve("/dev", "/dev/d/../d/./a").inode == a.st_ino
        for path, e in (
            ("/devx/a", errno.EXDEV),
            ("/dev/../etc", errno.EXDEV),
            ("/dev/s/a", errno.ELOOP),
            ("/dev/s", errno.ELOOP),
            ("/dev/nope", errno.ENOENT),
            ("/dev/d/a/b", errno.ENOTDIR),
        ):
            with pytest.raises(DeviceError) as ei:
                fs.resolve("/dev", path)
            assert ei.value.errno == e, path


class Recorder:
    """A driver that shows what devfsd handed it: its callers, each read's
    offset, its polls' handles, its last close."""

    def __init__(self) -> None:
        self.callers: list[tuple[int | None, int, int]] = []
        self.closes = 0
        self.chan = WaitChannel("recorder")
        self.refuse = False
        self.open_errno = errno.EBUSY  # d_open's refusal while refuse is set
        self.poll_errno = 0  # d_poll's refusal, if not 0
        self.hold: trio.Event | None = None  # d_open waits for it, if set

    async def d_open(self, dev: int, flag: int, mode: int, l: Lwp) -> None:
        if self.refuse:
            raise DeviceError(self.open_errno)
        if self.hold is not None:
            await self.hold.wait()
        self.callers.append((l.pid, l.uid, l.gid))

    async def d_close(self, dev: int, flag: int, mode: int, l: Lwp) -> None:
        self.closes += 1

    async def d_read(self, dev: int, uio: Uio, ioflag: int) -> None:
        if uio.offset == 99:
            raise DeviceError(errno.EAGAIN)
        uio.uiomove(str(uio.offset).encode())

    async def d_write(self, dev: int, uio: Uio, ioflag: int) -> None:
        if uio.offset == 99:
            raise DeviceError(errno.EFBIG)
        uio.uiomove(bytearray(uio.offset))

    async def d_poll(self, dev: int, events: int, l: Lwp) -> int:
        if self.poll_errno:
            raise DeviceError(self.poll_errno)
        self.chan.selrecord(l)
        return 0


@asynccontextmanager
async def recorder() -> AsyncIterator[tuple[DevFs, Recorder, int]]:
    """A DevFs with the Recorder attached and one node of it (its inode)."""
    async with devfs() as (fs, _):
        r = Recorder()
        maj = devsw.attach(
            "recorder",
            Cdevsw(d_open=r.d_open, d_close=r.d_close, d_read=r.d_read, d_write=r.d_write, d_poll=r.d_poll),
        )
        a = await fs.mknod(R, b"rec", stat.S_IFCHR | 0o666, makedev(maj, 0), ROOT)  # type: ignore[arg-type]
        yield fs, r, a.st_ino


async def test_the_driver_sees_the_caller_the_offset_and_the_last_close() -> None:
    async with recorder() as (fs, r, ino):
        f = await fs.open(ino, os.O_RDWR, USER)  # type: ignore[arg-type]
        assert r.callers == [(USER.pid, USER.uid, USER.gid)]
        assert bytes(await fs.read(f.fh, 7, 10)) == b"7"  # pread(2) at 7
        assert await fs.write(f.fh, 5, b"x" * 10) == 5  # pwrite(2) at 5
        for call, e in ((fs.read(f.fh, 99, 1), errno.EAGAIN), (fs.write(f.fh, 99, b"x"), errno.EFBIG)):
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await call
            assert fuse_errno(ei) == e
        await fs.release(f.fh)
        assert r.closes == 1


async def test_a_poll_s_handle_reaches_the_driver() -> None:
    class Handle:
        notified = 0

        def notify(self) -> None:
            self.notified += 1

    async with recorder() as (fs, r, ino):
        f = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        h = Handle()
        assert await fs.poll(ino, f.fh, h, USER) == 0  # type: ignore[arg-type]
        r.chan.wakeup()
        assert h.notified == 1
        await fs.release(f.fh)


async def test_the_interrupt_watch_is_told_the_file_of_each_handle() -> None:
    # _fuseintr watches a FUSE request's INTERRUPT only when the request's
    # file handle is the sleeping file's: DevFs answers which file that is.
    async with recorder() as (fs, _, ino):
        f1 = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        f2 = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        file_of = _fuseintr.file_of
        assert file_of is not None
        assert file_of(f1.fh) is fs.files[f1.fh][0]
        assert file_of(f2.fh) is fs.files[f2.fh][0]
        assert file_of(f1.fh) is not file_of(f2.fh)
        await fs.release(f1.fh)
        assert file_of(f1.fh) is None
        assert file_of(f2.fh + 1000) is None
        await fs.release(f2.fh)


async def test_file_handles_stay_distinct_and_each_open_holds_the_node() -> None:
    async with recorder() as (fs, r, ino):
        f1 = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        d = await fs.opendir(R, ROOT)  # type: ignore[arg-type]
        f2 = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        assert len({f1.fh, d, f2.fh}) == 3
        await fs.unlink(R, b"rec", ROOT)  # type: ignore[arg-type]
        await fs.forget([(ino, 1)])
        await fs.release(f1.fh)
        assert (await fs.getattr(ino, ROOT)).st_nlink == 0  # type: ignore[arg-type]  # f2 holds it
        assert bytes(await fs.read(f2.fh, 3, 1)) == b"3"
        await fs.release(f2.fh)
        assert r.closes == 1
        with pytest.raises(pyfuse3.FUSEError):
            await fs.getattr(ino, ROOT)  # type: ignore[arg-type]


async def test_a_failed_open_does_not_unbalance_the_open_count() -> None:
    async with recorder() as (fs, r, ino):
        r.refuse = True
        with pytest.raises(pyfuse3.FUSEError) as ei:
            await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        assert fuse_errno(ei) == errno.EBUSY
        r.refuse = False
        f = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        await fs.unlink(R, b"rec", ROOT)  # type: ignore[arg-type]
        await fs.forget([(ino, 1)])
        assert (await fs.getattr(ino, ROOT)).st_nlink == 0  # type: ignore[arg-type]  # still open
        await fs.release(f.fh)


async def test_enosys_from_open_or_poll_is_enodev_and_other_errnos_pass() -> None:
    # FUSE takes ENOSYS from OPEN or POLL as "no such operation" and stops
    # sending it for the whole mount: a driver's ENOSYS there costs its node only.
    async with recorder() as (fs, r, ino):
        r.refuse = True
        for e, want in ((errno.ENOSYS, errno.ENODEV), (errno.ENXIO, errno.ENXIO)):
            r.open_errno = e
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
            assert fuse_errno(ei) == want
        r.refuse = False
        f = await fs.open(ino, os.O_RDONLY, USER)  # type: ignore[arg-type]
        for e, want in ((errno.ENOSYS, errno.ENODEV), (errno.EIO, errno.EIO)):
            r.poll_errno = e
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await fs.poll(ino, f.fh, None, USER)  # type: ignore[arg-type]
            assert fuse_errno(ei) == want
        r.poll_errno = 0
        assert await fs.poll(ino, f.fh, None, USER) == 0  # type: ignore[arg-type]
        await fs.release(f.fh)


async def test_errnos_out_of_range_become_eio() -> None:
    for e, want in ((0, errno.EIO), (511, 511), (512, errno.EIO)):
        async with devfs() as (fs, _):

            def on_change(journal: object, e: int = e) -> None:
                raise DeviceError(e, "x")

            fs.on_change = on_change
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await mknod(fs, b"n")
            assert fuse_errno(ei) == want


async def test_no_control_socket_no_control_attribute() -> None:
    async with devfs() as (fs, _):
        fs.control = DevFs(fs.spec).control
        assert await fs.listxattr(R, ROOT) == []  # type: ignore[arg-type]


async def test_changes_reach_the_state_store(tmp_path: Path) -> None:
    async with devfs() as (fs, clock):
        store = StateStore(str(tmp_path))
        fs.on_change = store.apply
        d = await fs.mkdir(R, b"d", 0o755, ROOT)  # type: ignore[arg-type]
        a = await mknod(fs, b"a")
        attr = pyfuse3.EntryAttributes()
        attr.st_mode = 0o600
        await fs.setattr(a.st_ino, attr, Fields(update_mode=True), None, ROOT)  # type: ignore[arg-type]
        await fs.rmdir(R, b"d", ROOT)  # type: ignore[arg-type]
        assert (await fs.getattr(R, ROOT)).st_mtime_ns == clock.now  # type: ignore[arg-type]
        store.close()
        store = StateStore(str(tmp_path))
        t = store.load_tree(clock())
        assert t.lookup(R, b"a").mode == stat.S_IFCHR | 0o600
        assert [n for n, _ in t.entries(R)] == [b"a"] and d.st_ino not in t.nodes
        assert t.root.mtime_ns == clock.now - 1
        store.close()


async def test_statfs_rounds_down_to_whole_blocks() -> None:
    async with devfs() as (fs, _):
        t = fs.table
        t.limits = Limits(nr_inodes=0, size=4096 * 10000 + 100, reserve=10)
        s = await fs.statfs(ROOT)  # type: ignore[arg-type]
        assert (s.f_blocks, s.f_bfree) == (10000, (4096 * 10000 + 100 - t.bytes_used) // 4096)
        assert s.f_bavail == ((4096 * 10000 + 100) * 90 // 100 - t.bytes_used) // 4096
        assert all(type(v) is int for v in (s.f_blocks, s.f_bfree, s.f_bavail))


async def test_resolve_s_refusals_say_why() -> None:
    async with devfs() as (fs, _):
        await fs.symlink(R, b"s", b"x", ROOT)  # type: ignore[arg-type]
        for path, text in (
            ("/devx/a", "/devx/a is not on /dev"),
            ("/dev/s", "symbolic links are not followed here"),
        ):
            with pytest.raises(DeviceError) as ei:
                fs.resolve("/dev", path)
            assert str(ei.value) == str(DeviceError(ei.value.errno, text))
