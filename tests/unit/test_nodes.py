"""The pure /dev tree."""

from __future__ import annotations

import errno
import stat

import pytest

from devfsd.errors import DeviceError
from devfsd.nodes import ROOT_INODE, NodeTable

CHR = stat.S_IFCHR | 0o600


def names(t: NodeTable, ino: int = ROOT_INODE) -> list[bytes]:
    return [n for n, _ in t.entries(ino)]


def err(fn: object, *args: object) -> int:
    assert callable(fn)
    with pytest.raises(DeviceError) as ei:
        fn(*args)
    return ei.value.errno


def test_mknod_kinds() -> None:
    t = NodeTable(0)
    n = t.mknod(ROOT_INODE, b"c", CHR, 1234, 0, 0, 5)
    assert n.is_chr and n.rdev == 1234 and n.nlink == 1 and n.mtime_ns == 5
    f = t.mknod(ROOT_INODE, b"p", stat.S_IFIFO | 0o644, 99, 0, 0, 5)
    assert f.rdev == 0
    assert err(t.mknod, ROOT_INODE, b"b", stat.S_IFBLK | 0o600, 1, 0, 0, 5) == errno.EOPNOTSUPP
    assert err(t.mknod, ROOT_INODE, b"r", stat.S_IFREG | 0o600, 0, 0, 0, 5) == errno.EOPNOTSUPP
    assert err(t.mknod, ROOT_INODE, b"c", CHR, 1, 0, 0, 5) == errno.EEXIST
    assert err(t.mknod, ROOT_INODE, b"x" * 256, CHR, 1, 0, 0, 5) == errno.ENAMETOOLONG
    assert names(t) == [b"c", b"p"]


def test_dirs_nlink_and_rmdir() -> None:
    t = NodeTable(0)
    d = t.mkdir(ROOT_INODE, b"d", 0o755, 0, 0, 1)
    assert d.nlink == 2 and t.root.nlink == 3
    t.mkdir(d.inode, b"e", 0o755, 0, 0, 1)
    assert err(t.rmdir, ROOT_INODE, b"d", 2) == errno.ENOTEMPTY
    assert err(t.unlink, ROOT_INODE, b"d", 2) == errno.EISDIR
    assert err(t.rmdir, d.inode, b".", 2) == errno.EINVAL
    t.rmdir(d.inode, b"e", 2)
    t.rmdir(ROOT_INODE, b"d", 2)
    assert t.root.nlink == 2
    assert d.inode not in t.nodes


def test_setgid_directory_hands_down_group() -> None:
    t = NodeTable(0)
    d = t.mkdir(ROOT_INODE, b"d", 0o2775, 0, 5, 1)
    n = t.mknod(d.inode, b"c", CHR, 1, 1000, 1000, 1)
    assert n.gid == 5
    sub = t.mkdir(d.inode, b"s", 0o755, 1000, 1000, 1)
    assert sub.gid == 5 and sub.mode & stat.S_ISGID


def test_unlinked_node_lives_while_open_or_looked_up() -> None:
    t = NodeTable(0)
    n = t.mknod(ROOT_INODE, b"c", CHR, 1, 0, 0, 0)
    n.nopen = 1
    n.nlookup = 1
    t.unlink(ROOT_INODE, b"c", 1)
    assert n.inode in t.nodes
    n.nopen = 0
    t.maybe_free(n)
    assert n.inode in t.nodes
    t.forget(n.inode, 1)
    assert n.inode not in t.nodes


def test_hard_links() -> None:
    t = NodeTable(0)
    n = t.mknod(ROOT_INODE, b"a", CHR, 1, 0, 0, 0)
    t.link(n.inode, ROOT_INODE, b"b", 1)
    assert n.nlink == 2
    t.unlink(ROOT_INODE, b"a", 2)
    assert t.lookup(ROOT_INODE, b"b") is n
    d = t.mkdir(ROOT_INODE, b"d", 0o755, 0, 0, 0)
    assert err(t.link, d.inode, ROOT_INODE, b"dd", 1) == errno.EPERM


def test_rename_rules() -> None:
    t = NodeTable(0)
    a = t.mkdir(ROOT_INODE, b"a", 0o755, 0, 0, 0)
    b = t.mkdir(a.inode, b"b", 0o755, 0, 0, 0)
    c = t.mknod(ROOT_INODE, b"c", CHR, 1, 0, 0, 0)
    assert err(t.rename, ROOT_INODE, b"a", b.inode, b"x", 0, 1) == errno.EINVAL  # into itself
    assert err(t.rename, ROOT_INODE, b"c", ROOT_INODE, b"a", 0, 1) == errno.EISDIR
    assert err(t.rename, ROOT_INODE, b"a", ROOT_INODE, b"c", 0, 1) == errno.ENOTDIR
    t.mkdir(ROOT_INODE, b"e", 0o755, 0, 0, 0)
    assert err(t.rename, ROOT_INODE, b"e", ROOT_INODE, b"a", 0, 1) == errno.ENOTEMPTY
    assert err(t.rename, ROOT_INODE, b"missing", ROOT_INODE, b"z", 0, 1) == errno.ENOENT
    d = t.mknod(ROOT_INODE, b"d", CHR, 2, 0, 0, 0)
    assert err(t.rename, ROOT_INODE, b"c", ROOT_INODE, b"d", 1, 1) == errno.EEXIST  # NOREPLACE
    t.rename(ROOT_INODE, b"c", ROOT_INODE, b"d", 0, 1)  # replaces d
    assert t.lookup(ROOT_INODE, b"d") is c and d.inode not in t.nodes
    # Move a directory: link counts follow.
    t.rename(a.inode, b"b", ROOT_INODE, b"b2", 0, 2)
    assert b.parent == ROOT_INODE and a.nlink == 2 and t.lookup(b.inode, b"..") is t.root


def test_rename_exchange() -> None:
    t = NodeTable(0)
    a = t.mkdir(ROOT_INODE, b"a", 0o755, 0, 0, 0)
    c = t.mknod(ROOT_INODE, b"c", CHR, 1, 0, 0, 0)
    n = t.mknod(a.inode, b"n", CHR, 2, 0, 0, 0)
    t.rename(ROOT_INODE, b"c", a.inode, b"n", 2, 1)
    assert t.lookup(ROOT_INODE, b"c") is n and t.lookup(a.inode, b"n") is c
    assert err(t.rename, ROOT_INODE, b"c", ROOT_INODE, b"nope", 2, 1) == errno.ENOENT
    assert err(t.rename, ROOT_INODE, b"c", ROOT_INODE, b"a", 3, 1) == errno.EINVAL


def test_symlink_limits() -> None:
    t = NodeTable(0)
    s = t.symlink(ROOT_INODE, b"l", b"target", 0, 0, 0)
    assert s.target == b"target" and stat.S_ISLNK(s.mode)
    assert err(t.symlink, ROOT_INODE, b"m", b"x" * 5000, 0, 0, 0) == errno.ENAMETOOLONG
