"""The state store: a tree written call by call comes back whole."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from devfsd.nodes import ROOT_INODE, NodeTable
from devfsd.state import StateError, StateStore

if TYPE_CHECKING:
    from pathlib import Path

CHR = stat.S_IFCHR | 0o640


def shape(t: NodeTable, ino: int = ROOT_INODE, path: bytes = b"") -> dict[bytes, tuple[object, ...]]:
    out: dict[bytes, tuple[object, ...]] = {}
    for name, n in t.entries(ino):
        p = path + b"/" + name
        out[p] = (n.inode, n.mode, n.uid, n.gid, n.rdev, n.nlink, n.mtime_ns, n.target)
        if n.is_dir:
            out.update(shape(t, n.inode, p))
    return out


def test_tree_round_trips_through_the_store(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)

    def step(fn: object, *args: object) -> None:
        assert callable(fn)
        fn(*args)
        store.apply(t.take_journal())

    d = t.mkdir(ROOT_INODE, b"d", 0o755, 0, 0, 2)
    store.apply(t.take_journal())
    step(t.mknod, d.inode, b"c", CHR, 0x1234, 5, 6, 3)
    step(t.mknod, ROOT_INODE, b"fifo", stat.S_IFIFO | 0o600, 0, 0, 0, 4)
    step(t.symlink, ROOT_INODE, b"l", b"d/c", 0, 0, 5)
    c = t.lookup(d.inode, b"c")
    step(t.link, c.inode, ROOT_INODE, b"hard", 6)
    step(t.rename, ROOT_INODE, b"fifo", d.inode, b"fifo2", 0, 7)
    e = t.mkdir(ROOT_INODE, b"e", 0o700, 0, 0, 8)
    store.apply(t.take_journal())
    step(t.rename, ROOT_INODE, b"e", d.inode, b"e", 0, 9)
    step(t.mknod, ROOT_INODE, b"gone", CHR, 1, 0, 0, 10)
    step(t.unlink, ROOT_INODE, b"gone", 11)
    x = t.mknod(ROOT_INODE, b"x", CHR, 7, 0, 0, 12)
    y = t.mknod(ROOT_INODE, b"y", CHR, 8, 0, 0, 12)
    store.apply(t.take_journal())
    step(t.rename, ROOT_INODE, b"x", ROOT_INODE, b"y", 2, 13)  # exchange
    c.mode = stat.S_IFCHR | 0o600
    t.touch(c)
    store.apply(t.take_journal())
    store.close()

    again = StateStore(str(tmp_path)).load_tree(99)
    assert shape(again) == shape(t)
    assert again.lookup(ROOT_INODE, b"y").rdev == x.rdev and again.lookup(ROOT_INODE, b"x").rdev == y.rdev
    assert again.lookup(d.inode, b"e").inode == e.inode
    assert again.root.nlink == t.root.nlink
    # New inodes never reuse a stored number.
    assert again.mknod(ROOT_INODE, b"new", CHR, 1, 0, 0, 100).inode > max(t.nodes)


def test_uncommitted_changes_are_not_there(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    t = store.load_tree(1)
    t.mknod(ROOT_INODE, b"kept", CHR, 1, 0, 0, 2)
    store.apply(t.take_journal())
    t.mknod(ROOT_INODE, b"lost", CHR, 1, 0, 0, 3)  # the daemon died before committing
    store.close()
    assert [n for n, _ in StateStore(str(tmp_path)).load_tree(4).entries(ROOT_INODE)] == [b"kept"]


def test_unreachable_rows_are_refused(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.load_tree(1)
    store.db.execute("INSERT INTO inodes VALUES (50, ?, 0, 0, 0, 0, 0, 0, x'')", (CHR,))
    store.db.execute("INSERT INTO entries VALUES (49, x'6f727068616e', 50, 1)")  # parent 49 does not exist
    with pytest.raises(StateError, match="parent is not a directory"):
        store.load_tree(2)


def test_majors_and_modules(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.put_major("msgq", 256)
    store.put_module("crandom", "crandom", {"oneshot": True})
    store.put_module("x", "/path/x", {})
    store.drop_module("x")
    store.close()
    store = StateStore(str(tmp_path))
    assert store.majors() == {"msgq": 256}
    assert store.modules() == [("crandom", {"oneshot": True})]
