"""Behaviour of devfsd's core that the mutation run (issue 18, ``python -m
tests.mutate``) found no test for: each test here fails with one or more of
the surviving mutants named in docs/reliability.md applied, and passes
without them."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from devfsd.cdevsw import (
    FREAD,
    IO,
    IO_NDELAY,
    IOCPARM_LEN,
    MAXDEVSW,
    UIO_READ,
    Lwp,
    Uio,
    WaitChannel,
    makedev,
)
from devfsd.cdevsw._switch import noclose, noopen, nowrite, nullpoll
from devfsd.cdevsw._table import DevswTable
from devfsd.cdevsw._wait import signal_pending, sleepers
from devfsd.errors import DeviceError
from devfsd.nodes import NAME_MAX, ROOT_INODE, SYMLINK_MAX
from devfsd.state import _SCHEMA_V0, DB_NAME, LOCK_NAME, StateError, StateStore, check_tree, default_state_dir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


# -- state ------------------------------------------------------------------------

CHR = stat.S_IFCHR | 0o640


def test_default_state_dir_is_one_escaped_name_per_mountpoint() -> None:
    assert default_state_dir("/dev") == "/var/lib/devfsd/%2Fdev"
    assert default_state_dir("/mnt/my dev") == "/var/lib/devfsd/%2Fmnt%2Fmy%20dev"


def raw(tmp_path: Path, *sql: str) -> None:
    c = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for s in sql:
        c.execute(s)
    c.close()


@contextmanager
def immutable(tmp_path: Path) -> Iterator[None]:
    """The state database made immutable (``chattr +i``): every write, and
    opening it for writing, fails in the file system, as on a failing disk."""
    files = [str(p) for p in tmp_path.glob(DB_NAME + "*")]
    if shutil.which("chattr") is None:
        pytest.skip("needs chattr")
    if subprocess.run(["chattr", "+i", *files], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *files], capture_output=True, check=True)


def test_a_database_the_disk_will_not_open_is_its_errno_not_not_ours(tmp_path: Path) -> None:
    """EIO says 'the disk', EINVAL says 'move it away': a state directory on
    a failing disk must not be called another program's database."""
    StateStore(str(tmp_path)).close()
    with immutable(tmp_path), pytest.raises(StateError) as ei:
        StateStore(str(tmp_path))
    assert ei.value.errno == errno.EIO
    assert str(ei.value) == f"{DB_NAME}: disk I/O error"
    store = StateStore(str(tmp_path))  # and it opens again once the disk does
    with immutable(tmp_path), pytest.raises(StateError) as ei:
        store.put_major("x", 300)
    path = tmp_path / DB_NAME
    assert (ei.value.errno, str(ei.value)) == (errno.EIO, f"state {path}: disk I/O error")
    store.close()


def test_a_write_refused_by_the_database_for_another_reason_is_eio(tmp_path: Path) -> None:
    StateStore(str(tmp_path)).close()
    # A trigger (a hostile or damaged state directory) refuses the write
    # with SQLITE_CONSTRAINT, a code with no errno of its own.
    raw(tmp_path, "CREATE TRIGGER no BEFORE INSERT ON majors BEGIN SELECT RAISE(ABORT, 'no'); END")
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError) as ei:
        store.put_major("x", 300)
    assert ei.value.errno == errno.EIO
    assert store.majors() == {}
    store.close()
    # A closed store's write is a StateError too, not a stray exception.
    with pytest.raises(StateError) as ei:
        store.put_major("x", 300)
    assert ei.value.errno == errno.EIO


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("majors", "('', 5)"),  # no name
        ("majors", "(x'61', 5)"),  # a name that is not text
        ("majors", "('big', 1048576)"),  # past the 20 bits of a major
        ("modules", "('m', x'6d', '{}', 0)"),  # a spec that is not text
        ("modules", "('m', 'm', x'7b7d', 0)"),  # props '{}' as a blob, not text
        ("modules", "('m', 'm', 5, 0)"),  # props a number
    ],
)
def test_majors_and_module_rows_refused(tmp_path: Path, table: str, row: str) -> None:
    StateStore(str(tmp_path)).close()
    raw(tmp_path, f"INSERT INTO {table} VALUES {row}")
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError, match=f"invalid {table[:-1]} row"):
        store.majors() if table == "majors" else store.modules()
    store.close()


def test_majors_zero_and_the_largest_come_back(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.put_major("zero", 0)
    store.put_major("top", MAXDEVSW - 1)
    store.close()
    store = StateStore(str(tmp_path))
    assert store.majors() == {"zero": 0, "top": MAXDEVSW - 1}
    store.close()


def test_module_row_isolated_and_marks(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.mark_loading("/m/a.py", "a")
    store.put_module("a", "/m/a.py", {"k": 1})  # not isolated, its mark cleared
    store.mark_loading("b", "b")
    store.put_module("b", "b", {}, isolated=True, keep_mark=True)
    assert store.module_row("a") == ("/m/a.py", {"k": 1})
    assert store.module_row("b") == ("b", {})
    assert store.module_row("c") is None
    assert store.isolated() == {"b"}
    store.put_module("b", "b", {}, keep_mark=True)  # loaded again, not isolated
    assert store.isolated() == set()
    store.put_module("b", "b", {}, isolated=True, keep_mark=True)
    store.close()
    store = StateStore(str(tmp_path))  # b's mark was kept: quarantined; a's was not
    assert store.crashed == [("b", "b")]
    assert store.module_row("b") is None  # a quarantined module has no loaded row
    assert store.quarantined() == ["b"]
    assert store.isolated() == {"b"}
    store.mark_loading("c", "c")
    store.mark_loading("d", "d")
    store.clear_loading("c")  # only c's
    store.close()
    store = StateStore(str(tmp_path))
    assert store.crashed == [("d", "d")]
    store.mark_loading("e", "e")
    store.mark_loading("f", "f")
    store.clear_loading()  # every mark: a clean stop
    store.close()
    store = StateStore(str(tmp_path))
    assert store.crashed == []
    store.close()


def test_isolated_names_that_are_not_module_names_are_refused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.put_module("a", "a", {}, isolated=True)
    store.close()
    raw(tmp_path, "INSERT INTO isolated VALUES (x'62')")
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError) as ei:
        store.isolated()
    store.close()
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value) == f"{DB_NAME}: invalid isolated row b'b' (module name must be a string){TAIL}"


def test_check_tree_says_which_row_and_why() -> None:
    root = (1, 0o40755, 0, 0, 0, 0, 0, 0, b"")
    tail = "; refusing to serve it (move it away to start afresh)"
    for inodes, entries, why in (
        ([root[:8]], [], "an inode row of the wrong shape"),
        ([root], [(1, b"x")], "an entry row of the wrong shape"),
        ([], [], "no root directory"),
        ([root], [(1, b"..", 1)], "entry b'..' in directory 1: invalid name"),
    ):
        with pytest.raises(StateError) as ei:
            check_tree(inodes, entries)
        assert (ei.value.errno, str(ei.value)) == (errno.EINVAL, f"{DB_NAME}: {why}{tail}")


TAIL = "; refusing to serve it (move it away to start afresh)"


def refusal(tmp_path: Path) -> str:
    with pytest.raises(StateError) as ei:
        StateStore(str(tmp_path)).close()
    assert ei.value.errno == errno.EINVAL
    return str(ei.value)


def test_refusals_say_exactly_why(tmp_path: Path) -> None:
    StateStore(str(tmp_path)).close()
    (tmp_path / DB_NAME).write_bytes(b"")
    assert refusal(tmp_path) == f"{DB_NAME}: the database is empty (0 bytes){TAIL}"
    (tmp_path / DB_NAME).write_bytes(b"x" * 8192)
    assert refusal(tmp_path) == f"{DB_NAME}: not a devfsd state database (file is not a database){TAIL}"
    (tmp_path / DB_NAME).unlink()
    StateStore(str(tmp_path)).close()
    raw(tmp_path, "DROP TABLE loading")
    assert refusal(tmp_path) == f"{DB_NAME}: tables are missing{TAIL}"


def first_layout(tmp_path: Path, *more: str) -> None:
    raw(
        tmp_path,
        *_SCHEMA_V0.split(";"),
        f"INSERT INTO inodes VALUES (1, {0o40755}, 0, 0, 0, 1, 1, 1, x'')",
        *more,
    )


def test_only_the_first_layout_is_migrated(tmp_path: Path) -> None:
    first_layout(tmp_path, "CREATE TABLE isolated (name TEXT PRIMARY KEY)")  # with modload -I's table
    StateStore(str(tmp_path)).close()
    for i, pragma in enumerate(("application_id = 1234", "user_version = 3")):
        d = tmp_path / str(i)
        d.mkdir()
        first_layout(d, f"PRAGMA {pragma}")  # not ours, or not version 0
        assert "refusing to serve it" in refusal(d)


def test_a_directory_the_state_cannot_open_is_eio(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).mkdir()
    with pytest.raises(StateError) as ei:
        StateStore(str(tmp_path))
    assert (ei.value.errno, str(ei.value)) == (errno.EIO, f"{DB_NAME}: unable to open database file")


def names(store: StateStore) -> list[bytes]:
    return [n for n, _ in store.load_tree(9).entries(ROOT_INODE)]


def test_creation_order_survives_restarts(tmp_path: Path) -> None:
    """Directory order is creation order, across restarts too (each entry's
    sequence number goes on from the largest stored)."""
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)
    for n in (b"a", b"b", b"c"):
        t.mknod(ROOT_INODE, n, CHR, 1, 0, 0, 2)
        store.apply(t.take_journal())
    store.close()
    store = StateStore(str(tmp_path))
    t = store.load_tree(3)
    t.mknod(ROOT_INODE, b"d", CHR, 1, 0, 0, 4)
    store.apply(t.take_journal())
    store.close()
    store = StateStore(str(tmp_path))
    assert names(store) == [b"a", b"b", b"c", b"d"]
    store.close()


def test_a_sequence_number_that_is_not_a_number_does_not_stop_changes(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)
    t.mknod(ROOT_INODE, b"a", CHR, 1, 0, 0, 2)
    store.apply(t.take_journal())
    store.close()
    raw(tmp_path, "UPDATE entries SET seq = 'x'")
    store = StateStore(str(tmp_path))
    t = store.load_tree(3)
    t.mknod(ROOT_INODE, b"b", CHR, 1, 0, 0, 4)
    store.apply(t.take_journal())
    assert sorted(names(store)) == [b"a", b"b"]
    store.close()


def test_the_state_directory_and_lock_are_root_s_alone(tmp_path: Path) -> None:
    d = tmp_path / "state"
    StateStore(str(d)).close()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / LOCK_NAME).st_mode) == 0o600


def test_a_symlink_for_the_lock_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    d = tmp_path / "state"
    d.mkdir()
    (d / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError) as ei:
        StateStore(str(d))
    assert ei.value.errno == errno.ELOOP
    assert not target.exists()


@pytest.mark.parametrize(
    ("held", "shown"),
    [(None, str(os.getpid())), (b"", "?"), (b"\xff\xfe 12\n", "\ufffd\ufffd 12")],
)
def test_the_lock_refusal_names_the_holder(tmp_path: Path, held: bytes | None, shown: str) -> None:
    """The holder is a devfsd (its pid) or something else holding the lock
    (what it wrote, made printable, or "?")."""
    if held is None:
        holder = StateStore(str(tmp_path))
    else:
        fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, held)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StateError) as ei:
            StateStore(str(tmp_path))
        assert (ei.value.errno, str(ei.value)) == (errno.EBUSY, f"in use by another devfsd (pid {shown})")
    finally:
        if held is None:
            holder.close()
        else:
            os.close(fd)


@pytest.mark.parametrize(
    ("row", "ok"),
    [
        ((2, CHR, 4294967294, 0, 0, 0, 0, 0, b""), True),  # uid_t's largest but (uid_t)-1
        ((2, CHR, 4294967295, 0, 0, 0, 0, 0, b""), False),
        ((2, CHR, 0, 4294967294, 0, 0, 0, 0, b""), True),
        ((2, CHR, 0, 4294967295, 0, 0, 0, 0, b""), False),
        ((2, stat.S_IFLNK | 0o777, 0, 0, 0, 0, 0, 0, b"x"), True),
        ((2, stat.S_IFLNK | 0o777, 0, 0, 0, 0, 0, 0, b"x" * SYMLINK_MAX), True),
        ((2, stat.S_IFLNK | 0o777, 0, 0, 0, 0, 0, 0, b"x" * (SYMLINK_MAX + 1)), False),
        ((2, stat.S_IFLNK | 0o777, 0, 0, 0, 0, 0, 0, b"a\0b"), False),
    ],
)
def test_inode_row_limits(row: tuple[object, ...], ok: bool) -> None:
    root = (1, 0o40755, 0, 0, 0, 0, 0, 0, b"")
    if ok:
        check_tree([root, row], [(1, b"n", 2)])
    else:
        with pytest.raises(StateError) as ei:
            check_tree([root, row], [(1, b"n", 2)])
        assert str(ei.value).startswith(f"{DB_NAME}: inode 2: invalid ")


@pytest.mark.parametrize(
    ("name", "ok"), [(b"x" * NAME_MAX, True), (b"x" * (NAME_MAX + 1), False), (b"a\0b", False)]
)
def test_entry_name_limits(name: bytes, ok: bool) -> None:
    root = (1, 0o40755, 0, 0, 0, 0, 0, 0, b"")
    node = (2, CHR, 0, 0, 0, 0, 0, 0, b"")
    if ok:
        check_tree([root, node], [(1, name, 2)])
    else:
        with pytest.raises(StateError, match="invalid name"):
            check_tree([root, node], [(1, name, 2)])


def test_an_invalid_inode_number_is_named() -> None:
    root = (1, 0o40755, 0, 0, 0, 0, 0, 0, b"")
    with pytest.raises(StateError) as ei:
        check_tree([root, (0, CHR, 0, 0, 0, 0, 0, 0, b"")], [])
    assert str(ei.value) == f"{DB_NAME}: inode 0: invalid inode number{TAIL}"


# -- cdevsw -----------------------------------------------------------------------


def test_io_is_netbsd_s_void_command() -> None:
    assert IO(ord("t"), 1) == 0x20007401  # _IO('t', 1): IOC_VOID, no parameter
    assert IOCPARM_LEN(IO(ord("t"), 1)) == 0


async def test_the_no_entry_points_are_enodev_and_nullpoll_is_nothing_ready() -> None:
    l = Lwp(os.getpid(), 0, 0)
    for call in (
        noopen(makedev(1, 0), FREAD, 0, l),
        noclose(makedev(1, 0), FREAD, 0, l),
        nowrite(makedev(1, 0), Uio.for_write(b"x", l), 0),
    ):
        with pytest.raises(DeviceError) as ei:
            await call
        assert ei.value.errno == errno.ENODEV
    assert await nullpoll(makedev(1, 0), select.POLLIN, l) == 0


def test_a_remembered_major_is_not_given_to_another_driver() -> None:
    from devfsd.cdevsw import Cdevsw, nullopen

    t = DevswTable(reserved={}, dynamic_base=100)
    t.restore({"old": 100, "older": 101, "clash": 101})  # a major named twice: the first name keeps it
    assert t.attach("new", Cdevsw(d_open=nullopen)) == 102
    assert t.attach("old", Cdevsw(d_open=nullopen)) == 100
    assert t.getmajor("clash") is None
    assert t.getname(101) == "older"  # an open of 101 autoloads "older"
    t.restore({"old": 300})  # a name already known keeps its major
    assert t.getmajor("old") == 100
    assert t.entries() == [("old", 100, True), ("older", 101, False), ("new", 102, True)]


def test_no_free_major_is_enomem() -> None:
    from devfsd.cdevsw import Cdevsw, nullopen

    t = DevswTable(reserved={}, dynamic_base=MAXDEVSW - 2)
    t.attach("a", Cdevsw(d_open=nullopen))
    t.attach("b", Cdevsw(d_open=nullopen))
    with pytest.raises(DeviceError) as ei:
        t.attach("c", Cdevsw(d_open=nullopen))
    assert (ei.value.errno, str(ei.value)) == (errno.ENOMEM, str(DeviceError(errno.ENOMEM, "no free major")))


def test_uio_for_read_is_the_caller_s_blocking_read() -> None:
    l = Lwp(os.getpid(), 0, 0)
    u = Uio.for_read(10, l)
    assert (u.rw, u.resid, u.offset, u.lwp, u.nonblock) == (UIO_READ, 10, 0, l, False)
    assert Uio.for_read(10, l, 5, IO_NDELAY).nonblock


class Handle:
    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


async def test_a_poll_recorded_on_two_channels_is_notified_by_the_first_only() -> None:
    """selrecord takes the poll's handle: a second channel of the same poll
    records nothing, and its wakeup notifies nobody (and does not fail)."""
    h = Handle()
    l = Lwp(os.getpid(), 0, 0, poll_handle=h)
    rd, wr = WaitChannel("rd"), WaitChannel("wr")
    rd.selrecord(l)
    wr.selrecord(l)
    wr.wakeup()
    assert h.notified == 0
    rd.wakeup()
    assert h.notified == 1


async def test_wakeup_one_with_a_sleeper_notifies_the_polls_too() -> None:
    chan = WaitChannel("one")
    h = Handle()
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(chan.sleep, Lwp(os.getpid(), 0, 0))
            await trio.testing.wait_all_tasks_blocked()
            chan.selrecord(Lwp(os.getpid(), 0, 0, poll_handle=h))
            chan.wakeup_one()
    assert h.notified == 1


async def test_a_cancelled_timed_sleep_is_forgotten_by_the_clock() -> None:
    """A sleep with a timeout that its caller cancels must not be woken
    later by the sleep clock (its task has gone on): the run goes on and
    the next sleep times out normally."""
    chan = WaitChannel("t")
    l = Lwp(os.getpid(), 0, 0)
    with trio.fail_after(5):
        with trio.move_on_after(0.05):
            await chan.sleep(l, 0.2)
        assert sleepers() == 0
        await trio.sleep(0.4)  # past the cancelled sleep's timeout and checks
        with pytest.raises(DeviceError) as ei:
            await chan.sleep(l, 0.1)
        assert ei.value.errno == errno.EWOULDBLOCK


# -- signal_pending: what /proc says of a caller -----------------------------------

_STOPPED_CHILD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # not ignored, whoever started the test
if sys.argv[1] == "block":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.kill(os.getpid(), signal.SIGSTOP)
"""


def _state(pid: int) -> bytes:
    with open(f"/proc/{pid}/status", "rb") as f:
        return next(line for line in f if line.startswith(b"State:"))


def _wait_state(pid: int, letter: bytes) -> None:
    deadline = time.monotonic() + 5
    while letter not in _state(pid):
        assert time.monotonic() < deadline, _state(pid)
        time.sleep(0.01)


@contextmanager
def stopped_child(how: str) -> Iterator[int]:
    p = subprocess.Popen([sys.executable, "-c", _STOPPED_CHILD, how])
    try:
        _wait_state(p.pid, b"T (stopped)")
        yield p.pid
    finally:
        p.kill()
        p.wait(5)


def test_signal_pending_reads_the_caller_s_signals() -> None:
    assert not signal_pending(0) and not signal_pending(-1)  # no caller (in-process calls)
    with stopped_child("plain") as pid:
        assert not signal_pending(pid)  # stopped, nothing pending
        os.kill(pid, signal.SIGUSR1)  # to the process: ShdPnd
        assert signal_pending(pid)
    with stopped_child("block") as pid:
        os.kill(pid, signal.SIGUSR1)  # pending, but blocked: it will not be taken now
        assert not signal_pending(pid)
        os.kill(pid, signal.SIGINT)  # and one it will take
        assert signal_pending(pid)
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "tgkill"):
        pytest.skip("no tgkill in the C library")
    with stopped_child("plain") as pid:
        assert libc.tgkill(pid, pid, signal.SIGUSR1) == 0  # to the thread: SigPnd
        assert signal_pending(pid)


def test_signal_pending_of_a_dead_caller() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    _wait_state(p.pid, b"Z (zombie)")
    assert signal_pending(p.pid)  # dying: gone as far as its read is concerned
    p.wait(5)
    assert signal_pending(p.pid)  # gone


def test_a_loading_mark_that_is_not_text_is_refused(tmp_path: Path) -> None:
    StateStore(str(tmp_path)).close()
    raw(tmp_path, "INSERT INTO loading VALUES ('s', x'6e')")
    assert refusal(tmp_path) == f"{DB_NAME}: invalid loading mark 's' (module 's' recorded as b'n'){TAIL}"


def test_a_row_sqlite_cannot_read_is_refused_as_unreadable(tmp_path: Path) -> None:
    StateStore(str(tmp_path)).close()
    raw(tmp_path, "INSERT INTO majors VALUES (CAST(x'ff' AS TEXT), 300)")  # not UTF-8
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError) as ei:
        store.majors()
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value).startswith(f"{DB_NAME}: unreadable (")
    store.close()
