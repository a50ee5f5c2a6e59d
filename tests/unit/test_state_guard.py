"""The state directory as hostile input and as a disk that fails: refused
databases, the lock, failed writes undone, loading marks and quarantine."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devfsd.cdevsw import MAXDEVSW, devsw
from devfsd.cdevsw._table import check_major
from devfsd.errors import DeviceError
from devfsd.modstate import load_recorded, unload_recorded
from devfsd.nodes import ROOT_INODE, Node, NodeTable
from devfsd.state import _SCHEMA_V0, DB_NAME, SCHEMA_VERSION, StateError, StateStore
from devfsd.testing.harness import Kernel

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

CHR = stat.S_IFCHR | 0o640
TEST_MODULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules")


def made(tmp_path: Path) -> Path:
    """A state directory holding /d/c, /l -> d/c and /fifo; closed."""
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)
    d = t.mkdir(ROOT_INODE, b"d", 0o755, 0, 0, 2)
    t.mknod(d.inode, b"c", CHR, 0x1234, 0, 0, 3)
    t.symlink(ROOT_INODE, b"l", b"d/c", 0, 0, 4)
    t.mknod(ROOT_INODE, b"fifo", stat.S_IFIFO | 0o600, 0, 0, 0, 5)
    store.apply(t.take_journal())
    store.close()
    return tmp_path / DB_NAME


def raw(db: Path, *sql: str) -> None:
    c = sqlite3.connect(db, isolation_level=None)
    for s in sql:
        c.execute(s)
    c.close()


def _open_and_load(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    try:
        store.load_tree(9)
    finally:
        store.close()


def refused(tmp_path: Path) -> StateError:
    with pytest.raises(StateError) as ei:
        _open_and_load(tmp_path)
    assert ei.value.errno == errno.EINVAL
    return ei.value


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("UPDATE entries SET name = x'612f62' WHERE name = x'63'", "invalid name"),  # a/b
        ("UPDATE entries SET name = x'2e2e' WHERE name = x'63'", "invalid name"),  # ..
        ("UPDATE entries SET name = x'2e' WHERE name = x'63'", "invalid name"),
        ("UPDATE entries SET name = x'' WHERE name = x'63'", "invalid name"),
        ("UPDATE entries SET name = 'c' WHERE name = x'63'", "invalid name"),  # text, not a blob
        (f"UPDATE entries SET name = x'{'61' * 256}' WHERE name = x'63'", "invalid name"),
        ("UPDATE inodes SET mode = 'abc' WHERE ino = 3", "invalid mode"),
        (f"UPDATE inodes SET mode = {stat.S_IFREG | 0o644} WHERE ino = 3", "invalid mode"),
        (f"UPDATE inodes SET mode = {stat.S_IFBLK | 0o644} WHERE ino = 3", "invalid mode"),
        (f"UPDATE inodes SET mode = {CHR | 0o100000000} WHERE ino = 3", "invalid mode"),
        ("UPDATE inodes SET mode = 1099511627776 WHERE ino = 3", "invalid mode"),  # found by fuzz_state
        ("UPDATE entries SET name = CAST(x'ff' AS TEXT) WHERE name = x'63'", "unreadable"),  # not UTF-8
        ("UPDATE inodes SET rdev = -1 WHERE ino = 3", "invalid device number"),
        ("UPDATE inodes SET rdev = 4294967296 WHERE ino = 3", "invalid device number"),
        ("UPDATE inodes SET rdev = 5 WHERE ino = 5", "invalid device number"),  # on a FIFO
        ("UPDATE inodes SET uid = -3 WHERE ino = 3", "invalid owner"),
        ("UPDATE inodes SET mtime = 1.5 WHERE ino = 3", "invalid time"),
        ("UPDATE inodes SET target = x'' WHERE ino = 4", "symbolic link target"),
        ("UPDATE inodes SET target = 'd/c' WHERE ino = 4", "not a blob"),
        ("UPDATE inodes SET target = x'78' WHERE ino = 3", "not a symbolic link"),
        ("DELETE FROM inodes WHERE ino = 1", "no root directory"),
        ("UPDATE inodes SET mode = 8576 WHERE ino = 1", "no root directory"),  # root a node
        ("DELETE FROM inodes WHERE ino = 3", "missing or the root"),
        ("INSERT INTO entries VALUES (2, x'72', 1, 99)", "missing or the root"),
        ("INSERT INTO entries VALUES (1, x'6432', 2, 99)", "two names"),  # a directory twice
        ("INSERT INTO entries VALUES (3, x'78', 5, 99)", "not a directory"),  # parent a node
        ("DELETE FROM entries WHERE name = x'64'", "not reachable"),  # /d lost
        ("INSERT INTO inodes VALUES (77, 8576, 0, 0, 0, 0, 0, 0, x'')", "not reachable"),  # an orphan
    ],
)
def test_rows_that_do_not_validate_are_refused(tmp_path: Path, sql: str, why: str) -> None:
    raw(made(tmp_path), sql)
    assert why in str(refused(tmp_path))


def test_a_directory_cycle_is_refused(tmp_path: Path) -> None:
    db = made(tmp_path)
    # /d/e/f and then e moved under f: e and f reach each other, not the root.
    raw(
        db,
        f"INSERT INTO inodes VALUES (10, {stat.S_IFDIR | 0o755}, 0, 0, 0, 0, 0, 0, x'')",
        f"INSERT INTO inodes VALUES (11, {stat.S_IFDIR | 0o755}, 0, 0, 0, 0, 0, 0, x'')",
        "INSERT INTO entries VALUES (11, x'65', 10, 100)",
        "INSERT INTO entries VALUES (10, x'66', 11, 101)",
    )
    assert "not reachable" in str(refused(tmp_path))


def test_bad_majors_and_module_rows_are_refused(tmp_path: Path) -> None:
    made(tmp_path)
    raw(tmp_path / DB_NAME, "INSERT INTO majors VALUES ('a', 300)", "INSERT INTO majors VALUES ('b', 300)")
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError, match="invalid major"):
        store.majors()
    store.close()
    raw(tmp_path / DB_NAME, "DELETE FROM majors", "INSERT INTO modules VALUES ('m', 'm', '[1]', 0)")
    store = StateStore(str(tmp_path))
    with pytest.raises(StateError, match="invalid module row"):
        store.modules()
    store.close()


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (["('\x1b[2J\x1b]0;pwned\x07', 300)"], "invalid driver name '\\x1b[2J\\x1b]0;pwned\\x07'"),
        (["('a/b', 300)"], "invalid driver name 'a/b'"),
        (["('a b', 300)"], "invalid driver name 'a b'"),
        (["('', 300)"], "driver name must be a non-empty string"),
        ([f"('{'x' * 32}', 300)"], "driver name of 32 characters (at most 31)"),
        (["('9p', 300)"], "invalid driver name '9p'"),
        (["('caf\u00e9', 300)"], "invalid driver name"),
        (["(x'6d', 300)"], "driver name must be a non-empty string"),  # a blob, not text
        (["('big', 512)"], "major 512 out of range 0..511"),
        (["('big', 1048575)"], "major 1048575 out of range"),
        (["('neg', -1)"], "major -1 out of range"),
        (["('half', 300.5)"], "major 300.5 is not an int"),
        (["('text', 'abc')"], "major 'abc' is not an int"),
        (["('null', NULL)"], "major None is not an int"),
        (["('a', 300)", "('b', 300)"], "a name or a major twice"),
    ],
)
def test_major_rows_devsw_attach_would_refuse_are_refused(tmp_path: Path, rows: list[str], why: str) -> None:
    """A majors row goes through devsw_attach's rules (``check_name``,
    ``check_major``): a name that would print a terminal's escape sequences
    in modstat and mknod -l, or a major past the switch's, never reaches the
    table; the daemon refuses the directory, naming the row."""
    made(tmp_path)
    # No affinity (a hostile file's schema is its own): 300.5, 'abc', NULL kept as given.
    raw(
        tmp_path / DB_NAME,
        "DROP TABLE majors",
        "CREATE TABLE majors (name, major)",
        *(f"INSERT INTO majors VALUES {r}" for r in rows),
    )
    store = StateStore(str(tmp_path))
    try:
        with pytest.raises(StateError) as ei:
            store.majors()
    finally:
        store.close()
    assert ei.value.errno == errno.EINVAL
    text = str(ei.value)
    assert text.startswith(f"{DB_NAME}: invalid major row ") and why in text, text
    assert text.endswith("; refusing to serve it (move it away to start afresh)")
    assert text.isprintable()  # the row's text, escaped


def test_a_bool_major_is_refused_by_the_same_rule() -> None:
    """SQLite has no bool (True is stored as 1): the rule itself refuses one."""
    for bad in (True, False, 1.0, "1", None, -1, MAXDEVSW):
        with pytest.raises(DeviceError) as ei:
            check_major(bad)
        assert ei.value.errno == errno.EINVAL
    assert check_major(0) == 0 and check_major(MAXDEVSW - 1) == MAXDEVSW - 1


ESC = "\x1b]0;pwned\x07\x1b[2J"  # a terminal's title and a clear screen


@pytest.mark.parametrize(
    ("row", "why"),
    [
        # Names and specs as modload records them (validate_module_name, caller_path).
        ((ESC, ESC, "{}", 0), "invalid module row '\\x1b]0;pwned\\x07\\x1b[2J' (invalid module name"),
        ((ESC, ESC, "{}", 1), "invalid module row '\\x1b]0;pwned"),  # quarantined: logged
        ((ESC, "/srv/m", "{}", 0), "(invalid module name '\\x1b]0;pwned"),  # MODULE's name
        (("m", "crandom", "{}", 0), "module 'crandom' recorded as 'm'"),
        (("m", "mods/m", "{}", 0), "the module's path is not absolute"),  # the daemon's cwd
        (("m", "/srv/m\0.py", "{}", 0), "the module is not a name or a path"),
        (("m", b"m", "{}", 0), "the module is not a name or a path"),  # a blob
        (("m", "m", b"{}", 0), "properties are not text"),
        # Properties as check_props takes them from the control socket.
        (("m", "m", '{"memlimit": 1208925819614629174706176}', 0), "property memlimit: value must be"),
        (("m", "m", '{"memlimit": 1.5}', 0), "property memlimit: value must be"),
        (("m", "m", '{"user": null}', 0), "property user: value must be"),
        (("m", "m", '{"caps": ["net_admin"]}', 0), "property caps: value must be"),
        (("m", "m", f'{{"{"k" * 129}": 1}}', 0), "property name longer than 128 bytes"),
        (("m", "m", f'{{"k": "{"v" * 4090}"}}', 0), "properties larger than 4096 bytes"),
        (("m", "m", "[1]", 0), "properties must be a dictionary"),
        (("m", "m", "[" * 2000 + "]" * 2000, 0), "properties are not JSON"),  # json's recursion
        (("m", "m", "{", 0), "properties are not JSON"),
    ],
)
def test_module_rows_a_modload_could_not_record_are_refused(
    tmp_path: Path, row: tuple[object, ...], why: str
) -> None:
    """What ``--reload-modules`` loads and the log names goes through the
    control path's own checks; the daemon refuses the directory at start."""
    made(tmp_path)
    c = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    c.execute("INSERT INTO modules VALUES (?, ?, ?, ?)", row)
    c.close()
    store = StateStore(str(tmp_path))
    try:
        with pytest.raises(StateError) as ei:
            store.recorded() if row[3] == 0 else store.quarantined()
    finally:
        store.close()
    assert ei.value.errno == errno.EINVAL
    text = str(ei.value)
    assert text.startswith(f"{DB_NAME}: invalid module row ") and why in text, text
    assert text.isprintable()


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        (f"INSERT INTO isolated VALUES ('{ESC}')", "invalid isolated row '\\x1b]0;pwned"),
        ("INSERT INTO isolated VALUES ('a b')", "invalid isolated row 'a b' (invalid module name"),
        (f"INSERT INTO loading VALUES ('{ESC}', '{ESC}')", "invalid loading mark '\\x1b]0;pwned"),
        (
            "INSERT INTO loading VALUES ('/srv/x.py', 'a/b')",
            "invalid loading mark '/srv/x.py' (invalid module",
        ),
    ],
)
def test_isolated_rows_and_marks_a_load_could_not_record_are_refused(
    tmp_path: Path, sql: str, why: str
) -> None:
    made(tmp_path)
    raw(tmp_path / DB_NAME, sql)
    with pytest.raises(StateError) as ei:
        _open_isolated(tmp_path)  # marks: quarantined at the open
    assert ei.value.errno == errno.EINVAL and why in str(ei.value), ei.value
    assert str(ei.value).isprintable()


def _open_isolated(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    try:
        store.isolated()
    finally:
        store.close()


def test_rows_the_daemon_writes_pass(tmp_path: Path) -> None:
    """A mark of modules.conf's relative path, and the row it quarantines,
    are the daemon's own: they pass (the start after a crash is not refused)."""
    store = StateStore(str(tmp_path))
    store.mark_loading("./mods/x.py", "x")
    store.put_module("tunwg", "/srv/mods/tunwg", {"memlimit": 1 << 30, "user": "nobody", "caps": "net_admin"})
    store.put_module("mm", "mm", {"k" * 128: "v" * 3900}, isolated=True)
    store.close()
    store = StateStore(str(tmp_path))
    try:
        assert store.quarantined() == ["x"] and store.isolated() == {"mm"}
        assert [(n, s) for n, s, _ in store.recorded()] == [("tunwg", "/srv/mods/tunwg"), ("mm", "mm")]
    finally:
        store.close()


def test_an_empty_database_is_refused_not_served_empty(tmp_path: Path) -> None:
    made(tmp_path).write_bytes(b"")
    assert "empty (0 bytes)" in str(refused(tmp_path))


def test_not_a_database_and_another_schema_are_refused(tmp_path: Path) -> None:
    db = made(tmp_path)
    db.write_bytes(b"x" * 8192)
    (tmp_path / (DB_NAME + "-wal")).unlink(missing_ok=True)
    assert "not a devfsd state database" in str(refused(tmp_path))
    db.unlink()
    raw(db, "CREATE TABLE notes (t TEXT)")
    assert "not a devfsd state database" in str(refused(tmp_path))
    db.unlink()
    made(tmp_path)
    raw(db, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert f"schema version {SCHEMA_VERSION + 1}" in str(refused(tmp_path))


def test_the_first_layout_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    raw(
        db,
        "PRAGMA journal_mode=WAL",
        *_SCHEMA_V0.split(";"),
        f"INSERT INTO inodes VALUES (1, {stat.S_IFDIR | 0o751}, 0, 0, 0, 1, 1, 1, x'')",
        f"INSERT INTO inodes VALUES (2, {CHR}, 0, 0, 7, 1, 1, 1, x'')",
        "INSERT INTO entries VALUES (1, x'6e', 2, 1)",
        "INSERT INTO modules VALUES ('crandom', 'crandom', '{}')",
    )
    store = StateStore(str(tmp_path))
    t = store.load_tree(2)
    assert t.lookup(ROOT_INODE, b"n").rdev == 7 and t.root.mode == stat.S_IFDIR | 0o751
    assert store.modules() == [("crandom", {})]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_one_store_per_directory(tmp_path: Path) -> None:
    first = StateStore(str(tmp_path))
    with pytest.raises(StateError) as ei:
        StateStore(str(tmp_path))
    assert ei.value.errno == errno.EBUSY
    assert "in use by another devfsd" in str(ei.value)
    first.close()
    StateStore(str(tmp_path)).close()  # free again once the first is closed


def test_a_failed_write_is_an_errno_and_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)
    t.mknod(ROOT_INODE, b"kept", CHR, 1, 0, 0, 2)
    store.apply(t.take_journal())
    store.db.execute("PRAGMA query_only = 1")  # every write now fails (SQLITE_READONLY)
    t.mknod(ROOT_INODE, b"lost", CHR, 1, 0, 0, 3)
    with pytest.raises(StateError) as ei:
        store.apply(t.take_journal())
    assert ei.value.errno == errno.EROFS
    t.rollback()
    assert [n for n, _ in t.entries(ROOT_INODE)] == [b"kept"]
    with pytest.raises(StateError):
        store.put_major("x", 300)
    store.db.execute("PRAGMA query_only = 0")
    t.mknod(ROOT_INODE, b"after", CHR, 1, 0, 0, 4)  # the store goes on
    store.apply(t.take_journal())
    store.close()
    again = StateStore(str(tmp_path))
    assert [n for n, _ in again.load_tree(5).entries(ROOT_INODE)] == [b"kept", b"after"]
    assert again.majors() == {}


# -- undo -----------------------------------------------------------------------


def snapshot(t: NodeTable) -> dict[int, tuple[object, ...]]:
    def one(n: Node) -> tuple[object, ...]:
        kids = dict(n.children) if n.children is not None else None
        return (
            n.mode,
            n.uid,
            n.gid,
            n.rdev,
            n.atime_ns,
            n.mtime_ns,
            n.ctime_ns,
            n.nlink,
            n.parent,
            n.target,
            kids,
        )

    return {ino: one(n) for ino, n in t.nodes.items()}


NAMES = st.sampled_from([b"a", b"b", b"c", b"d"])
OPS = st.lists(
    st.tuples(
        st.sampled_from(["mknod", "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "setattr"]),
        st.integers(0, 6),
        NAMES,
        st.integers(0, 6),
        NAMES,
        st.sampled_from([0, 1, 2]),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_rollback_restores_the_tree_before_the_call(
    ops: list[tuple[str, int, bytes, int, bytes, int, bool]],
) -> None:
    """Any call, taken back, leaves every inode, name and count as before;
    the calls kept still make a consistent tree (its journal replays)."""
    t = NodeTable(0)
    now = 1
    for op, p1, n1, p2, n2, flags, undo in ops:
        inos = sorted(t.nodes)
        a, b = inos[p1 % len(inos)], inos[p2 % len(inos)]
        before, next_before = snapshot(t), t._next
        now += 1
        try:
            if op == "mknod":
                t.mknod(a, n1, CHR, 1, 0, 0, now)
            elif op == "mkdir":
                t.mkdir(a, n1, 0o755, 0, 0, now)
            elif op == "symlink":
                t.symlink(a, n1, b"t" * (p2 + 1), 0, 0, now)
            elif op == "link":
                t.link(b, a, n1, now)
            elif op == "unlink":
                t.unlink(a, n1, now)
            elif op == "rmdir":
                t.rmdir(a, n1, now)
            elif op == "rename":
                t.rename(a, n1, b, n2, flags, now)
            else:
                node = t.get(a)
                t.begin(node)
                node.mode = stat.S_IFMT(node.mode) | 0o600
                node.ctime_ns = now
                t.touch(node)
        except DeviceError:
            t.take_journal()
            assert snapshot(t) == before  # a refused call changed nothing
            continue
        t.take_journal()
        if undo:
            t.rollback()
            assert snapshot(t) == before
            assert t._next == next_before


# -- modules --------------------------------------------------------------------


def test_a_loading_mark_quarantines_at_the_next_open(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.put_module("msgq", "msgq", {})
    store.put_module("crandom", "crandom", {"oneshot": True})
    store.mark_loading("crandom", "crandom")  # and the daemon died
    store.mark_loading("./t/newmod.py", "newmod")
    store.close()
    store = StateStore(str(tmp_path))
    assert store.crashed == [("crandom", "crandom"), ("newmod", "./t/newmod.py")]
    assert store.modules() == [("msgq", {})]
    assert sorted(store.quarantined()) == ["crandom", "newmod"]
    store.close()
    store = StateStore(str(tmp_path))  # logged once; still quarantined
    assert store.crashed == []
    assert sorted(store.quarantined()) == ["crandom", "newmod"]


async def test_modunload_lifts_a_quarantine(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.mark_loading("msgq", "msgq")
    store.close()
    store = StateStore(str(tmp_path))
    async with Kernel.running([]) as k:
        await unload_recorded(k.loader, store, "msgq")
        assert store.quarantined() == []
        with pytest.raises(DeviceError) as ei:
            await unload_recorded(k.loader, store, "msgq")  # neither loaded nor quarantined
        assert ei.value.errno == errno.ENOENT


async def test_a_load_whose_record_fails_is_not_loaded(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    put = store.put_module

    def failing_put(name: str, spec: str, props: dict[str, str | int | bool], **kw: bool) -> None:
        store.db.execute("PRAGMA query_only = 1")  # the disk refuses from here on
        put(name, spec, props, **kw)

    async with Kernel.running([]) as k:
        store.put_module = failing_put  # type: ignore[method-assign]
        with pytest.raises(StateError) as ei:
            await load_recorded(k.loader, store, "crandom", None)
        assert ei.value.errno == errno.EROFS
        assert "crandom" not in k.loader.modules
        assert devsw.lookup(devsw.getmajor("crandom") or 420) is None
        store.db.execute("PRAGMA query_only = 0")
        store.put_module = put  # type: ignore[method-assign]
        # The mark was left (the clear failed too): the next start would
        # quarantine it, never load it twice. A good load clears it.
        await load_recorded(k.loader, store, "crandom", None)
        assert store.db.execute("SELECT COUNT(*) FROM loading").fetchone()[0] == 0
        assert store.modules() == [("crandom", {})]


async def test_a_load_whose_mark_fails_runs_no_code(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.db.execute("PRAGMA query_only = 1")
    async with Kernel.running([]) as k:
        with pytest.raises(StateError):
            await load_recorded(k.loader, store, "crandom", None)
        assert "crandom" not in k.loader.modules


async def test_an_unload_whose_write_fails_keeps_the_module(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    async with Kernel.running([]) as k:
        await load_recorded(k.loader, store, "crandom", None)
        store.db.execute("PRAGMA query_only = 1")
        with pytest.raises(StateError):
            await unload_recorded(k.loader, store, "crandom")
        assert "crandom" in k.loader.modules
        store.db.execute("PRAGMA query_only = 0")
        await unload_recorded(k.loader, store, "crandom")
        assert "crandom" not in k.loader.modules and store.modules() == []


def test_a_major_whose_record_fails_is_not_given(tmp_path: Path) -> None:
    """A new driver name's major is recorded before it is given out: if the
    write fails the attach fails, and the next attach records it."""
    from devfsd.cdevsw import Cdevsw, nullopen

    store = StateStore(str(tmp_path))
    hook = devsw.on_new_name
    devsw.on_new_name = store.put_major
    try:
        store.db.execute("PRAGMA query_only = 1")
        with pytest.raises(StateError):
            devsw.attach("fullstate", Cdevsw(d_open=nullopen))
        assert devsw.getmajor("fullstate") is None
        store.db.execute("PRAGMA query_only = 0")
        cdev = Cdevsw(d_open=nullopen)
        maj = devsw.attach("fullstate", cdev)
        devsw.detach(cdev)
        assert store.majors() == {"fullstate": maj}
    finally:
        devsw.on_new_name = hook
        devsw.reset()


async def test_the_mark_outlives_the_load_by_its_grace(tmp_path: Path) -> None:
    """A daemon dying within the grace after INIT returned (a thread of the
    module's, say) leaves the mark: the module is quarantined."""
    import trio

    store = StateStore(str(tmp_path))

    def marks() -> int:
        n: int = store.db.execute("SELECT COUNT(*) FROM loading").fetchone()[0]
        return n

    async with Kernel.running([TEST_MODULES]) as k:
        await load_recorded(k.loader, store, "crandom", None, grace=0.2)
        assert store.modules() == [("crandom", {})] and marks() == 1
        await trio.sleep(0.5)
        assert marks() == 0  # the grace is over
        await load_recorded(k.loader, store, "mm", None, grace=60)
        await unload_recorded(k.loader, store, "mm")  # an unload drops its mark too
        assert marks() == 0
        await load_recorded(k.loader, store, "mm", None, grace=60)
        await load_recorded(k.loader, store, "msgq", None, grace=60)  # the next load: its mark only
        assert marks() == 1
    store.close()  # and the daemon died: the next open quarantines msgq only
    store = StateStore(str(tmp_path))
    assert store.crashed == [("msgq", "msgq")]
    assert store.modules() == [("crandom", {}), ("mm", {})]
    store.clear_loading()


# -- a state others could write ------------------------------------------------------


def _group_writable(d: Path, gid: int) -> None:
    d.chmod(0o770)
    os.chown(d, 0, gid)


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns to nobody")
@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: d.chmod(0o777), "{d}: mode 0777, writable by others"),
        (lambda d: _group_writable(d, 65534), "{d}: mode 0770, writable by group 65534"),
        (lambda d: os.chown(d, 65534, 0), "{d}: owned by uid 65534, not root"),
        (lambda d: d.parent.chmod(0o777), "{p}: mode 0777, writable by others"),  # it could be renamed
        (lambda d: (d / DB_NAME).chmod(0o666), "{d}/devfsd.sqlite: mode 0666, writable by others"),
        (lambda d: os.chown(d / DB_NAME, 65534, 65534), "{d}/devfsd.sqlite: owned by uid 65534, not root"),
        (lambda d: os.chown(d / "lock", 65534, 65534), "{d}/lock: owned by uid 65534, not root"),
    ],
)
def test_a_state_others_could_write_is_refused(
    tmp_path: Path, damage: Callable[[Path], object], why: str
) -> None:
    """Whoever may write the state chooses the modules root loads again,
    their properties (caps=, user=), and the owners and modes of the nodes
    served: a directory, one above it, or a file others may write (or own)
    is refused (EPERM), as module code and modules.conf are."""
    d = tmp_path / "p" / "state"
    d.mkdir(parents=True)
    StateStore(str(d)).close()
    damage(d)
    with pytest.raises(StateError) as ei:
        StateStore(str(d)).close()
    assert ei.value.errno == errno.EPERM
    assert str(ei.value) == why.format(d=d, p=d.parent) + "; refusing a state others could have written"


def test_a_sticky_directory_above_the_state_is_not_others(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir(mode=0o1777)
    (tmp_path / "tmp").chmod(0o1777)  # as /tmp: only an entry's owner may rename it
    d = tmp_path / "tmp" / "state"
    StateStore(str(d)).close()
    StateStore(str(d)).close()
