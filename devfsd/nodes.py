"""The /dev tree: inodes, directory entries, modes, owners, times. Pure.

No trio, no pyfuse3, no clock: callers pass ``now`` (nanoseconds since the
epoch). Errors are ``DeviceError(errno)``; the file system turns them into
FUSE errors. Semantics follow a tmpfs ``/dev``: directories, character
nodes, FIFOs and symbolic links; hard links to non-directories; ``rename``
with ``RENAME_NOREPLACE`` and ``RENAME_EXCHANGE``. Permission checks are the
kernel's (``default_permissions``); only ownership rules the kernel leaves
to the file system (a new node's owner) are applied here.

An inode lives while it has a name, an open file or a kernel lookup
reference (``nlookup``, dropped by FORGET), as FUSE requires.

Every change is also written down in ``journal`` as small records that a
state store can replay in one transaction (``take_journal``): ``("put",
node)`` (its attributes changed), ``("link", parent, name, inode)``,
``("unlink", parent, name)`` and ``("drop", inode)`` (its last name went).
Only named inodes are state: an unlinked inode still open is dropped from
the journal's point of view at once, as it would be gone after a restart.

What the tree holds is counted (``inodes_used``, ``bytes_used``: each
inode ``INODE_COST`` plus its link target, each entry ``ENTRY_COST`` plus
its name) and, with ``limits``, bounded: a call that would pass them is
``ENOSPC`` and changes nothing; callers other than root stop short of
root's reserve (``devfsd.limits``).

Each change can be taken back (``rollback``) until the next one begins: a
call whose state write failed leaves the tree as it was before the call.

A directory's entries (``Entries``) carry stable cookies, the offsets
``readdir`` resumes from, so that an open directory costs the daemon
nothing but its number (a copy of the entries per open directory let any
user who may read a large directory spend the daemon's memory by opening
it many times).
"""

from __future__ import annotations

import errno
import itertools
import stat
from bisect import bisect_right
from typing import TYPE_CHECKING, Final, final

from devfsd.errors import DeviceError
from devfsd.limits import ENTRY_COST, INODE_COST, Limits

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DOTDOT_COOKIE", "DOT_COOKIE", "NAME_MAX", "ROOT_INODE", "Entries", "Node", "NodeTable"]

ROOT_INODE: Final = 1
NAME_MAX: Final = 255
SYMLINK_MAX: Final = 4095

RENAME_NOREPLACE: Final = 1
RENAME_EXCHANGE: Final = 2

#: The fields ``rollback`` restores (not the kernel's references).
_UNDONE: Final = ("mode", "uid", "gid", "rdev", "atime_ns", "mtime_ns", "ctime_ns", "nlink", "parent")

#: ``readdir`` offsets of ``.`` and ``..``; a directory's first entry's
#: cookie is one more.
DOT_COOKIE: Final = 1
DOTDOT_COOKIE: Final = 2


class Entries(dict[bytes, int]):
    """A directory's entries, name -> inode, in creation order, each with
    a cookie: a number that only grows, given when the name is added and
    kept while it stays (a rename onto it, an exchange keep it; a name
    removed and added again gets a new one). Entries that stay are listed
    from any cookie exactly once, whatever is added or removed meanwhile,
    as POSIX wants of ``readdir``, with no copy of the directory per
    reader. Only ``[name] = inode`` and ``del`` change it."""

    __slots__ = ("cookies", "next_cookie")

    def __init__(self) -> None:
        super().__init__()
        #: name -> cookie, in the same (creation) order, so rising.
        self.cookies: dict[bytes, int] = {}
        self.next_cookie = DOTDOT_COOKIE + 1

    def __setitem__(self, name: bytes, inode: int) -> None:
        if name not in self.cookies:
            self.cookies[name] = self.next_cookie
            self.next_cookie += 1
        super().__setitem__(name, inode)

    def __delitem__(self, name: bytes) -> None:
        super().__delitem__(name)
        del self.cookies[name]

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("Entries change only by [name] = inode and del")

    pop = popitem = setdefault = update = clear = __ior__ = _refuse  # type: ignore[assignment]

    def copy(self) -> Entries:
        """A copy with the same cookies (``rollback``)."""
        new = Entries()
        dict.update(new, self)
        new.cookies = dict(self.cookies)
        new.next_cookie = self.next_cookie
        return new

    def after(self, cookie: int) -> Iterator[tuple[int, bytes, int]]:
        """(cookie, name, inode) of each entry whose cookie is past
        ``cookie``, in order. Finds the first in C (one pass over the
        cookies, no Python loop), so a long directory read in many calls
        costs each call little."""
        cookies = self.cookies
        start = bisect_right(list(cookies.values()), cookie)
        for name, c in itertools.islice(cookies.items(), start, None):
            yield c, name, self[name]


@final
class Node:
    """One inode."""

    __slots__ = (
        "atime_ns",
        "children",
        "ctime_ns",
        "gid",
        "inode",
        "mode",
        "mtime_ns",
        "nlink",
        "nlookup",
        "nopen",
        "parent",
        "rdev",
        "target",
        "uid",
    )

    def __init__(self, inode: int, mode: int, uid: int, gid: int, now: int, rdev: int = 0) -> None:
        self.inode = inode
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev
        self.atime_ns = self.mtime_ns = self.ctime_ns = now
        self.nlink = 0
        self.nlookup = 0
        self.nopen = 0
        self.parent = 0
        self.target = b""
        self.children: Entries | None = Entries() if stat.S_ISDIR(mode) else None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def is_chr(self) -> bool:
        return stat.S_ISCHR(self.mode)

    def __repr__(self) -> str:
        return f"<Node {self.inode} mode={self.mode:o} nlink={self.nlink}>"


def _check_name(name: bytes) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise DeviceError(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > NAME_MAX:
        raise DeviceError(errno.ENAMETOOLONG)


@final
class NodeTable:
    """All inodes of one mount."""

    def __init__(self, now: int, root_mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.nodes: dict[int, Node] = {}
        #: None: no limit (the daemon sets one).
        self.limits: Limits | None = None
        self.inodes_used = 0
        self.bytes_used = 0
        self._next = ROOT_INODE
        self.journal: list[tuple[str, object, object, object]] = []
        #: What the call under way changed: inode -> (node, its fields before
        #: or None if the call made it, whether it was in ``nodes``).
        self._undo: dict[int, tuple[Node, tuple[object, ...] | None, bool]] = {}
        self._undo_next = self._next
        self._undo_used = (0, 0)
        root = self._new(stat.S_IFDIR | root_mode, uid, gid, now)
        root.nlink = 2
        root.parent = ROOT_INODE
        self.root = root
        self.journal.append(("put", root, None, None))

    # -- undo -----------------------------------------------------------------

    def begin(self, *nodes: Node) -> None:
        """Start a call: forget the last one's undo record; ``keep`` ``nodes``."""
        self._undo.clear()
        self._undo_next = self._next
        self._undo_used = (self.inodes_used, self.bytes_used)
        for n in nodes:
            self.keep(n)

    def keep(self, node: Node) -> None:
        """Remember ``node``'s fields before the call under way changes them."""
        if node.inode not in self._undo:
            children = node.children
            saved = (
                *(getattr(node, f) for f in _UNDONE),
                node.target,
                None if children is None else children.copy(),
            )
            self._undo[node.inode] = (node, saved, node.inode in self.nodes)

    def rollback(self) -> None:
        """Take back every change since ``begin`` (the state write failed)."""
        for ino, (node, saved, present) in self._undo.items():
            if saved is None:
                self.nodes.pop(ino, None)
                continue
            for f, v in zip(_UNDONE, saved, strict=False):
                setattr(node, f, v)
            node.target = saved[-2]  # type: ignore[assignment]
            node.children = saved[-1]  # type: ignore[assignment]
            if present:
                self.nodes[ino] = node
        self._next = self._undo_next
        self.inodes_used, self.bytes_used = self._undo_used
        self._undo.clear()
        self.journal.clear()

    def _room(self, inodes: int, nbytes: int, privileged: bool) -> None:
        """``ENOSPC`` unless ``inodes`` and ``nbytes`` more fit the limits."""
        if self.limits is not None:
            self.limits.check(self.inodes_used, self.bytes_used, inodes, nbytes, privileged)

    def take_journal(self) -> list[tuple[str, object, object, object]]:
        """The changes since the last call, oldest first; clears them."""
        j, self.journal = self.journal, []
        return j

    def touch(self, node: Node) -> None:
        """Record that ``node``'s attributes changed (setattr)."""
        self.journal.append(("put", node, None, None))

    @classmethod
    def restore(
        cls,
        inodes: list[tuple[int, int, int, int, int, int, int, int, bytes]],
        entries: list[tuple[int, bytes, int]],
        now: int,
    ) -> NodeTable:
        """Rebuild a tree from a state store's rows.

        Args:
            inodes: (inode, mode, uid, gid, rdev, atime, mtime, ctime, target).
            entries: (parent, name, inode) in creation order.

        Entries naming a missing inode or parent, and inodes no entry
        reaches, are left out (nothing half-made survives).
        """
        t = cls(now)
        t.journal.clear()
        rows = {r[0]: r for r in inodes}
        if ROOT_INODE in rows:
            r = rows[ROOT_INODE]
            root = t.root
            root.mode, root.uid, root.gid = r[1], r[2], r[3]
            root.atime_ns, root.mtime_ns, root.ctime_ns = r[5], r[6], r[7]
        by_parent: dict[int, list[tuple[bytes, int]]] = {}
        for parent, name, ino in entries:
            by_parent.setdefault(parent, []).append((name, ino))
        # Walk from the root so that only reachable inodes come back.
        todo = [ROOT_INODE]
        while todo:
            d = t.nodes[todo.pop()]
            for name, ino in by_parent.get(d.inode, ()):
                row = rows.get(ino)
                if row is None or (d.children is not None and name in d.children):
                    continue
                node = t.nodes.get(ino)
                if node is None:
                    node = Node(ino, row[1], row[2], row[3], row[5], row[4])
                    node.atime_ns, node.mtime_ns, node.ctime_ns = row[5], row[6], row[7]
                    node.target = row[8]
                    t.nodes[ino] = node
                    if node.is_dir:
                        node.nlink = 1
                        todo.append(ino)
                elif node.is_dir:
                    continue  # a directory has one name
                assert d.children is not None
                d.children[name] = ino
                node.nlink += 1
                if node.is_dir:
                    node.parent = d.inode
                    d.nlink += 1
        t._next = max(t.nodes) + 1
        t.inodes_used = len(t.nodes)
        t.bytes_used = sum(INODE_COST + len(n.target) for n in t.nodes.values()) + sum(
            ENTRY_COST + len(name) for n in t.nodes.values() if n.children for name in n.children
        )
        return t

    def _new(self, mode: int, uid: int, gid: int, now: int, rdev: int = 0) -> Node:
        node = Node(self._next, mode, uid, gid, now, rdev)
        self.nodes[self._next] = node
        self._undo[node.inode] = (node, None, False)
        self._next += 1
        self.inodes_used += 1
        self.bytes_used += INODE_COST
        return node

    def get(self, inode: int) -> Node:
        """The node ``inode``; ``ENOENT`` if it is gone."""
        node = self.nodes.get(inode)
        if node is None:
            raise DeviceError(errno.ENOENT)
        return node

    def dir(self, inode: int) -> Node:
        node = self.get(inode)
        if node.children is None:
            raise DeviceError(errno.ENOTDIR)
        return node

    def lookup(self, parent: int, name: bytes) -> Node:
        """The node called ``name`` in ``parent`` (``.`` and ``..`` too)."""
        d = self.dir(parent)
        if name == b".":
            return d
        if name == b"..":
            return self.get(d.parent)
        assert d.children is not None
        ino = d.children.get(name)
        if ino is None:
            if len(name) > NAME_MAX:
                raise DeviceError(errno.ENAMETOOLONG)
            raise DeviceError(errno.ENOENT)
        return self.nodes[ino]

    def entries(self, parent: int) -> Iterator[tuple[bytes, Node]]:
        """(name, node) of each entry of ``parent``, in creation order."""
        d = self.dir(parent)
        assert d.children is not None
        for name, ino in d.children.items():
            yield name, self.nodes[ino]

    def _link_in(self, d: Node, name: bytes, node: Node, now: int) -> None:
        assert d.children is not None
        self.keep(d)
        self.keep(node)
        d.children[name] = node.inode
        self.bytes_used += ENTRY_COST + len(name)
        node.nlink += 1
        if node.is_dir:
            node.parent = d.inode
            d.nlink += 1
        d.mtime_ns = d.ctime_ns = now
        j = self.journal
        j.append(("put", node, None, None))
        j.append(("put", d, None, None))
        j.append(("link", d.inode, name, node.inode))

    def _check_new(self, parent: int, name: bytes) -> Node:
        _check_name(name)
        d = self.dir(parent)
        assert d.children is not None
        if name in d.children:
            raise DeviceError(errno.EEXIST)
        return d

    def _owner_gid(self, d: Node, gid: int) -> int:
        # A setgid directory hands its group down, as on tmpfs.
        return d.gid if d.mode & stat.S_ISGID else gid

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int, now: int) -> Node:
        """Make a character node or a FIFO.

        Raises:
            DeviceError: ``EEXIST``, ``ENOENT``, ``ENOTDIR``, ``EINVAL``,
                ``ENAMETOOLONG``; ``EOPNOTSUPP`` for block devices, regular
                files and sockets (devfsd serves character devices).
        """
        self.begin()
        fmt = stat.S_IFMT(mode)
        if fmt not in (stat.S_IFCHR, stat.S_IFIFO):
            raise DeviceError(errno.EOPNOTSUPP)
        d = self._check_new(parent, name)
        self._room(1, INODE_COST + ENTRY_COST + len(name), uid == 0)
        node = self._new(mode, uid, self._owner_gid(d, gid), now, rdev if fmt == stat.S_IFCHR else 0)
        self._link_in(d, name, node, now)
        return node

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int, now: int) -> Node:
        self.begin()
        d = self._check_new(parent, name)
        self._room(1, INODE_COST + ENTRY_COST + len(name), uid == 0)
        perm = stat.S_IMODE(mode) | (d.mode & stat.S_ISGID)
        node = self._new(stat.S_IFDIR | perm, uid, self._owner_gid(d, gid), now)
        node.nlink = 1  # "." ; the entry in the parent adds one
        self._link_in(d, name, node, now)
        return node

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int, now: int) -> Node:
        self.begin()
        if not target or b"\0" in target:
            raise DeviceError(errno.EINVAL if target else errno.ENOENT)
        if len(target) > SYMLINK_MAX:
            raise DeviceError(errno.ENAMETOOLONG)
        d = self._check_new(parent, name)
        self._room(1, INODE_COST + len(target) + ENTRY_COST + len(name), uid == 0)
        node = self._new(stat.S_IFLNK | 0o777, uid, self._owner_gid(d, gid), now)
        node.target = target
        self.bytes_used += len(target)
        self._link_in(d, name, node, now)
        return node

    def link(self, inode: int, parent: int, name: bytes, now: int, *, privileged: bool = True) -> Node:
        self.begin()
        node = self.get(inode)
        if node.is_dir:
            raise DeviceError(errno.EPERM)
        d = self._check_new(parent, name)
        self._room(0, ENTRY_COST + len(name), privileged)
        self._link_in(d, name, node, now)
        node.ctime_ns = now
        return node

    def _unlink_entry(self, d: Node, name: bytes, node: Node, now: int) -> None:
        assert d.children is not None
        self.keep(d)
        self.keep(node)
        del d.children[name]
        self.bytes_used -= ENTRY_COST + len(name)
        node.nlink -= 1
        if node.is_dir:
            node.nlink -= 1  # its "."
            d.nlink -= 1
        d.mtime_ns = d.ctime_ns = now
        node.ctime_ns = now
        j = self.journal
        j.append(("unlink", d.inode, name, None))
        j.append(("put", d, None, None))
        j.append(("drop", node.inode, None, None) if node.nlink <= 0 else ("put", node, None, None))
        self.maybe_free(node)

    def unlink(self, parent: int, name: bytes, now: int) -> Node:
        self.begin()
        d = self.dir(parent)
        node = self.lookup(parent, name)
        if name in (b".", b".."):
            raise DeviceError(errno.EINVAL)
        if node.is_dir:
            raise DeviceError(errno.EISDIR)
        self._unlink_entry(d, name, node, now)
        return node

    def rmdir(self, parent: int, name: bytes, now: int) -> Node:
        self.begin()
        d = self.dir(parent)
        if name == b".":
            raise DeviceError(errno.EINVAL)
        if name == b"..":
            raise DeviceError(errno.ENOTEMPTY)
        node = self.lookup(parent, name)
        if not node.is_dir:
            raise DeviceError(errno.ENOTDIR)
        if node.children:
            raise DeviceError(errno.ENOTEMPTY)
        self._unlink_entry(d, name, node, now)
        return node

    def _is_ancestor(self, anc: int, ino: int) -> bool:
        while True:
            if ino == anc:
                return True
            if ino == ROOT_INODE:
                return False
            ino = self.nodes[ino].parent

    def rename(
        self,
        old_parent: int,
        old: bytes,
        new_parent: int,
        new: bytes,
        flags: int,
        now: int,
        *,
        privileged: bool = True,
    ) -> None:
        """rename(2) / renameat2(2) with ``RENAME_NOREPLACE``, ``RENAME_EXCHANGE``.

        Raises:
            DeviceError: ``ENOENT``, ``EEXIST``, ``EISDIR``, ``ENOTDIR``,
                ``ENOTEMPTY``, ``EINVAL`` (a directory into itself, bad flags).
        """
        self.begin()
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise DeviceError(errno.EINVAL)
        if old in (b".", b"..") or new in (b".", b".."):
            raise DeviceError(errno.EBUSY)
        _check_name(new)
        od = self.dir(old_parent)
        nd = self.dir(new_parent)
        src = self.lookup(old_parent, old)
        assert od.children is not None and nd.children is not None
        dst_ino = nd.children.get(new)
        dst = self.nodes[dst_ino] if dst_ino is not None else None
        if flags & RENAME_EXCHANGE:
            if dst is None:
                raise DeviceError(errno.ENOENT)
            for n, d in ((src, nd), (dst, od)):
                if n.is_dir and self._is_ancestor(n.inode, d.inode):
                    raise DeviceError(errno.EINVAL)
            for n in (od, nd, src, dst):
                self.keep(n)
            od.children[old], nd.children[new] = dst.inode, src.inode
            for n, d, other in ((src, nd, od), (dst, od, nd)):
                if n.is_dir and d is not other:
                    n.parent = d.inode
                    d.nlink += 1
                    other.nlink -= 1
                n.ctime_ns = now
            od.mtime_ns = od.ctime_ns = nd.mtime_ns = nd.ctime_ns = now
            self._journal_rename(od, old, dst, nd, new, src)
            return
        if dst is src:
            return  # same inode: nothing to do, as POSIX says
        if src.is_dir and self._is_ancestor(src.inode, nd.inode):
            raise DeviceError(errno.EINVAL)
        if dst is not None:
            if flags & RENAME_NOREPLACE:
                raise DeviceError(errno.EEXIST)
            if src.is_dir and not dst.is_dir:
                raise DeviceError(errno.ENOTDIR)
            if dst.is_dir and not src.is_dir:
                raise DeviceError(errno.EISDIR)
            if dst.is_dir and dst.children:
                raise DeviceError(errno.ENOTEMPTY)
        else:
            self._room(0, len(new) - len(old), privileged)
        if dst is not None:
            self._unlink_entry(nd, new, dst, now)
        for n in (od, nd, src):
            self.keep(n)
        del od.children[old]
        nd.children[new] = src.inode
        self.bytes_used += len(new) - len(old)
        if src.is_dir and od is not nd:
            src.parent = nd.inode
            od.nlink -= 1
            nd.nlink += 1
        src.ctime_ns = now
        od.mtime_ns = od.ctime_ns = nd.mtime_ns = nd.ctime_ns = now
        self.journal.append(("unlink", od.inode, old, None))
        self._journal_rename(None, old, None, nd, new, src)
        self.journal.append(("put", od, None, None))

    def _journal_rename(
        self, od: Node | None, old: bytes, dst: Node | None, nd: Node, new: bytes, src: Node
    ) -> None:
        j = self.journal
        if od is not None and dst is not None:
            j.append(("link", od.inode, old, dst.inode))
            j.append(("put", dst, None, None))
            j.append(("put", od, None, None))
        j.append(("link", nd.inode, new, src.inode))
        j.append(("put", src, None, None))
        j.append(("put", nd, None, None))

    def maybe_free(self, node: Node) -> None:
        """Drop ``node`` once it has no name, no open file and no lookup."""
        if (
            node.nlink <= 0
            and node.nlookup <= 0
            and node.nopen <= 0
            and node.inode != ROOT_INODE
            and self.nodes.pop(node.inode, None) is not None
        ):
            self.inodes_used -= 1
            self.bytes_used -= INODE_COST + len(node.target)

    def forget(self, inode: int, n: int) -> None:
        node = self.nodes.get(inode)
        if node is not None:
            node.nlookup = max(0, node.nlookup - n)
            self.maybe_free(node)
