"""The tree's limits (-o nr_inodes=, size=, reserve=): counted, enforced
with ENOSPC, root's reserve kept, nothing changed by a refused call."""

from __future__ import annotations

import errno
import stat
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devfsd.errors import DeviceError
from devfsd.limits import (
    DEFAULT_NR_FILES,
    DEFAULT_NR_INODES,
    DEFAULT_SHARE,
    DEFAULT_SIZE,
    ENTRY_COST,
    INODE_COST,
    Limits,
    split_options,
)
from devfsd.nodes import ROOT_INODE, NodeTable
from devfsd.state import StateStore

if TYPE_CHECKING:
    from pathlib import Path

CHR = stat.S_IFCHR | 0o600
USER = 1000


def recount(t: NodeTable) -> tuple[int, int]:
    """What the counters must say, from scratch."""
    nbytes = sum(INODE_COST + len(n.target) for n in t.nodes.values())
    nbytes += sum(ENTRY_COST + len(name) for n in t.nodes.values() if n.children for name in n.children)
    return len(t.nodes), nbytes


def test_options_are_taken_out_of_the_fuse_ones() -> None:
    lim, rest = split_options(["nr_inodes=10k,size=2m,allow_other", "reserve=10", "debug"])
    assert lim == Limits(10240, 2 << 20, 10)
    assert rest == ["allow_other", "debug"]
    assert split_options([]) == (Limits(DEFAULT_NR_INODES, DEFAULT_SIZE, 5), [])
    assert split_options(["size=0,nr_inodes=0"])[0] == Limits(0, 0, 5)  # no limit, as tmpfs
    assert split_options(["nr_files=1k"])[0] == Limits(DEFAULT_NR_INODES, DEFAULT_SIZE, 5, 1024)
    assert split_options([])[0].nr_files == DEFAULT_NR_FILES
    assert split_options(["share=25,nr_files=1k"])[0] == Limits(DEFAULT_NR_INODES, DEFAULT_SIZE, 5, 1024, 25)
    assert split_options([])[0].share == DEFAULT_SHARE == 50
    for bad in (
        "size=abc",
        "nr_inodes=-1",
        "size=1%",
        "reserve=51",
        "size=",
        "nr_files=x",
        "share=0",
        "share=101",
    ):
        with pytest.raises(ValueError, match=bad.split(",")[0]):
            split_options([bad])


def test_open_files_limit_and_roots_reserve() -> None:
    lim = Limits(nr_files=100, reserve=10)
    lim.check_open(89, privileged=False)
    with pytest.raises(DeviceError) as ei:
        lim.check_open(90, privileged=False)  # a user's share: 90
    assert ei.value.errno == errno.ENFILE
    lim.check_open(99, privileged=True)
    with pytest.raises(DeviceError):
        lim.check_open(100, privileged=True)
    Limits(nr_files=0).check_open(1 << 30, privileged=False)  # 0: no limit
    Limits(nr_files=1, reserve=50).check_open(0, privileged=False)  # a user may open one at least


def test_one_users_share_of_open_files() -> None:
    """``share`` percent of the users' part (``nr_files`` less root's
    reserve) is the most one user may hold: ``EMFILE`` past it, ``ENFILE``
    past the users' part whatever the user holds; root has no share."""
    lim = Limits(nr_files=1000, reserve=10, share=50)  # users: 900, one user 450
    assert lim.share_of(900) == 450
    lim.check_open(10, privileged=False, mine=449)
    with pytest.raises(DeviceError) as ei:
        lim.check_open(10, privileged=False, mine=450)
    assert ei.value.errno == errno.EMFILE
    with pytest.raises(DeviceError) as ei:
        lim.check_open(900, privileged=False, mine=0)
    assert ei.value.errno == errno.ENFILE
    lim.check_open(999, privileged=True, mine=999)
    assert Limits(nr_files=1000, reserve=10, share=100).share_of(900) == 900  # the old bound: no share
    assert Limits(nr_files=3, reserve=50, share=1).share_of(1) == 1  # a user may open one at least
    Limits(nr_files=0, share=1).check_open(10**6, privileged=False, mine=10**6)  # no limit, no share


def test_the_default_share_is_devfsd_8s_figure() -> None:
    """devfsd(8), share=: "Half lets a user ... hold 31129 open files with
    the defaults" (nr_files 65536, reserve 5: 62259 for users)."""
    lim = split_options([])[0]
    lim.check_open(100, privileged=False, mine=31128)
    with pytest.raises(DeviceError) as ei:
        lim.check_open(100, privileged=False, mine=31129)
    assert ei.value.errno == errno.EMFILE


def test_inodes_limit_and_roots_reserve() -> None:
    t = NodeTable(0)
    t.limits = Limits(nr_inodes=10, size=0, reserve=20)  # users: 8 inodes, the root one included
    for i in range(7):
        t.mknod(ROOT_INODE, b"u%d" % i, CHR, 1, USER, USER, 1)
    before = recount(t), sorted(t.nodes)
    with pytest.raises(DeviceError) as ei:
        t.mkdir(ROOT_INODE, b"full", 0o755, USER, USER, 2)
    assert ei.value.errno == errno.ENOSPC
    assert (recount(t), sorted(t.nodes)) == before and (t.inodes_used, t.bytes_used) == before[0]
    t.mknod(ROOT_INODE, b"r0", CHR, 1, 0, 0, 3)  # root: the reserve
    t.mkdir(ROOT_INODE, b"r1", 0o755, 0, 0, 3)
    with pytest.raises(DeviceError):
        t.mknod(ROOT_INODE, b"r2", CHR, 1, 0, 0, 3)
    t.unlink(ROOT_INODE, b"u0", 4)
    t.unlink(ROOT_INODE, b"u1", 4)
    t.unlink(ROOT_INODE, b"u2", 4)
    t.symlink(ROOT_INODE, b"u9", b"x", USER, USER, 5)  # room again below the reserve
    assert (t.inodes_used, t.bytes_used) == recount(t)


def test_size_counts_names_targets_and_entries() -> None:
    t = NodeTable(0)
    t.limits = Limits(nr_inodes=0, size=30000, reserve=5)
    n = 0
    err = 0
    while not err:
        try:
            t.symlink(ROOT_INODE, b"l%d" % n, b"t" * 4095, USER, USER, 1)
            n += 1
        except DeviceError as exc:
            err = exc.errno
    assert err == errno.ENOSPC
    assert n == (30000 * 95 // 100 - INODE_COST) // (INODE_COST + 4095 + ENTRY_COST + 2)
    assert (t.inodes_used, t.bytes_used) == recount(t)
    # A longer name by rename, a hard link: refused past the limit too.
    t.limits = Limits(nr_inodes=0, size=t.bytes_used + 10, reserve=0)
    with pytest.raises(DeviceError):
        t.rename(ROOT_INODE, b"l0", ROOT_INODE, b"l0" + b"x" * 20, 0, 3, privileged=False)
    t.rename(ROOT_INODE, b"l0", ROOT_INODE, b"l0" + b"x" * 10, 0, 3, privileged=False)
    with pytest.raises(DeviceError):
        t.link(t.lookup(ROOT_INODE, b"l1").inode, ROOT_INODE, b"h", 4, privileged=False)
    assert t.bytes_used == t.limits.size
    t.rename(ROOT_INODE, b"l1", ROOT_INODE, b"l2", 0, 5, privileged=False)  # over another: frees
    assert (t.inodes_used, t.bytes_used) == recount(t)


def test_a_tree_restored_over_its_limits_is_kept_whole_and_counted(tmp_path: Path) -> None:
    """A state written under larger limits: every node comes back, the
    counters count them all (as made one by one), ``over`` says which
    limits they pass, nothing adds to the tree, even root's, until unlinks
    bring it back under; then it grows again."""
    store = StateStore(str(tmp_path))
    try:
        t = store.load_tree(0)
        t.mkdir(ROOT_INODE, b"d", 0o755, 0, 0, 1)
        for i in range(20):
            t.mknod(ROOT_INODE, b"n%d" % i, CHR, 1, 0, 0, 1)
        t.symlink(ROOT_INODE, b"l", b"t" * 100, 0, 0, 1)
        t.link(t.lookup(ROOT_INODE, b"n0").inode, ROOT_INODE, b"h", 1)
        made = (t.inodes_used, t.bytes_used)
        store.apply(t.take_journal())
        r = store.load_tree(2)
    finally:
        store.close()
    assert (
        (r.inodes_used, r.bytes_used)
        == recount(r)
        == made
        == (23, 23 * INODE_COST + 100 + 23 * ENTRY_COST + 53)
    )
    r.limits = Limits(nr_inodes=10, size=4096, reserve=5)
    assert r.limits.over(r.inodes_used, r.bytes_used) == [
        "nr_inodes=10 (23 used)",
        f"size=4096 ({made[1]} bytes used)",
    ]
    assert Limits(nr_inodes=23, size=made[1]).over(*made) == []  # at the limit is not over it
    assert Limits(nr_inodes=0, size=0).over(*made) == []  # no limit
    for call in (
        lambda: r.mknod(ROOT_INODE, b"new", CHR, 1, 0, 0, 3),
        lambda: r.mkdir(ROOT_INODE, b"new", 0o755, 0, 0, 3),
        lambda: r.link(r.lookup(ROOT_INODE, b"n1").inode, ROOT_INODE, b"h2", 3),
        lambda: r.rename(ROOT_INODE, b"n1", ROOT_INODE, b"n1-longer", 0, 3),
    ):
        with pytest.raises(DeviceError) as ei:
            call()
        assert ei.value.errno == errno.ENOSPC
    r.rename(ROOT_INODE, b"n19", ROOT_INODE, b"x", 0, 3)  # shorter: no more room needed
    r.limits = Limits(nr_inodes=10, size=0, reserve=5)
    for i in range(1, 14):
        r.unlink(ROOT_INODE, b"n%d" % i, 4)
        assert (r.inodes_used, r.bytes_used) == recount(r)
    with pytest.raises(DeviceError):
        r.mknod(ROOT_INODE, b"new", CHR, 1, 0, 0, 5)  # 10 used: no room for an 11th
    r.unlink(ROOT_INODE, b"n14", 5)
    r.mknod(ROOT_INODE, b"new", CHR, 1, 0, 0, 5)  # 10 of 10: root's reserve
    assert (r.inodes_used, r.bytes_used) == recount(r) and r.inodes_used == 10


NAMES = st.sampled_from([b"a", b"bb", b"c" * 30, b"d" * 255])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["mknod", "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "forget"]),
            st.integers(0, 9),
            NAMES,
            st.integers(0, 9),
            NAMES,
            st.sampled_from([0, 1, 2]),
            st.booleans(),
        ),
        max_size=50,
    ),
    st.integers(1, 12),
    st.integers(1, 8000),
)
def test_counters_match_the_tree_and_the_limits_hold(
    ops: list[tuple[str, int, bytes, int, bytes, int, bool]], nr: int, size: int
) -> None:
    t = NodeTable(0)
    t.limits = lim = Limits(nr_inodes=nr, size=size, reserve=25)
    for op, p1, n1, p2, n2, flags, root in ops:
        inos = sorted(t.nodes)
        a, b = inos[p1 % len(inos)], inos[p2 % len(inos)]
        uid = 0 if root else USER
        before = (t.inodes_used, t.bytes_used)
        try:
            if op == "mknod":
                t.mknod(a, n1, CHR, 1, uid, uid, 1)
            elif op == "mkdir":
                t.mkdir(a, n1, 0o755, uid, uid, 1)
            elif op == "symlink":
                t.symlink(a, n1, b"t" * (p2 * 400 + 1), uid, uid, 1)
            elif op == "link":
                t.link(b, a, n1, 1, privileged=root)
            elif op == "unlink":
                t.unlink(a, n1, 1)
            elif op == "rmdir":
                t.rmdir(a, n1, 1)
            elif op == "rename":
                t.rename(a, n1, b, n2, flags, 1, privileged=root)
            else:
                node = t.get(a)
                node.nlookup += 1  # the kernel looked it up, and forgets it
                t.forget(a, 1)
        except DeviceError as exc:
            assert (t.inodes_used, t.bytes_used) == before
            if exc.errno == errno.ENOSPC:
                continue
        t.take_journal()
        assert (t.inodes_used, t.bytes_used) == recount(t)
        mi, mb = lim.room(root)
        # A call may only pass the caller's room by shrinking.
        assert t.inodes_used <= max(mi, before[0]) and t.bytes_used <= max(mb, before[1])


@pytest.mark.parametrize("bad", ["share=0", "share=101", "share=half"])
def test_the_daemon_refuses_a_bad_share_before_anything(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    from devfsd import daemon

    assert daemon.main(["-f", "-o", f"nr_files=100,{bad}", "/nonexistent"]) == 1
    assert capsys.readouterr().err == f"devfsd: {bad}: Invalid argument\n"
