"""The state loader's fuzz target: any bytes, as a state database, either
refused with ``StateError`` or served as a tree that holds together.

``state_one_input(data)``: an even first byte makes the rest into rows
(``inodes``, ``entries``, ``majors``, ``modules``, ``loading``; one per
line, fields split on ``,``; a field of digits is an integer, ``x`` and hex
digits a blob, anything else text) written into a fresh state database; an
odd one writes the rest as the database file itself (the seeds are real
databases, so mutations reach SQLite's pages). Then the daemon's start:
``StateStore``, ``majors``, ``modules``, ``quarantined``, ``load_tree``,
and the majors given to a device switch (``DevswTable.restore``). Anything
but ``StateError`` out of it is a bug, and so is a tree served with a name
or a link count that is wrong, a reservation a row overrode, or a new
driver given a major a row named.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import tempfile
from typing import Final

from devfsd.cdevsw import Cdevsw, DevswTable
from devfsd.cdevsw._table import RESERVED_MAJORS
from devfsd.errors import DeviceError
from devfsd.nodes import NAME_MAX, ROOT_INODE, NodeTable
from devfsd.state import DB_NAME, StateError, StateStore

__all__ = ["state_one_input", "state_seeds"]

#: A tmpfs if there is one: SQLite's syncs cost nothing there.
_TMP: Final = "/dev/shm" if os.path.isdir("/dev/shm") else None
_TABLES: Final = {b"i": "inodes", b"e": "entries", b"j": "majors", b"m": "modules", b"l": "loading"}
_WIDTH: Final = {"inodes": 9, "entries": 4, "majors": 2, "modules": 4, "loading": 2}


def _field(f: bytes) -> int | bytes | str:
    if f.lstrip(b"-").isdigit() and len(f) <= 18:
        return int(f)
    if f[:1] == b"x":
        try:
            return bytes.fromhex(f[1:].decode("ascii"))
        except ValueError:
            pass
    return f.decode("utf-8", "replace")


def _rows_db(path: str, data: bytes) -> None:
    """A fresh state database, then ``data``'s rows written into it raw."""
    StateStore(os.path.dirname(path)).close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for line in data.split(b"\n"):
            table = _TABLES.get(line[:1])
            if table is None:
                continue
            fields = [_field(f) for f in line[1:].split(b",")][: _WIDTH[table]]
            fields += [0] * (_WIDTH[table] - len(fields))
            marks = ", ".join("?" * len(fields))
            with contextlib.suppress(sqlite3.Error):  # a constraint: the row cannot be there
                db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", fields)
    finally:
        db.close()


def _check_served(t: NodeTable) -> None:
    """What a tree the loader accepted must hold."""
    assert stat.S_ISDIR(t.root.mode)
    subdirs: dict[int, int] = {}
    names: dict[int, int] = {}
    for node in list(t.nodes.values()):
        if node.children is None:
            continue
        for name, ino in node.children.items():
            assert 0 < len(name) <= NAME_MAX and b"/" not in name and name not in (b".", b".."), name
            child = t.nodes[ino]
            names[ino] = names.get(ino, 0) + 1
            if child.is_dir:
                assert child.parent == node.inode
                subdirs[node.inode] = subdirs.get(node.inode, 0) + 1
            assert stat.S_IFMT(child.mode) in (stat.S_IFDIR, stat.S_IFCHR, stat.S_IFIFO, stat.S_IFLNK)
    for ino, node in t.nodes.items():
        if node.is_dir:
            assert node.nlink == 2 + subdirs.get(ino, 0), (ino, node.nlink)
            assert ino == ROOT_INODE or names.get(ino) == 1
        else:
            assert node.nlink == names.get(ino, 0) > 0
    # The served tree takes calls.
    t.mknod(ROOT_INODE, b"fuzz-new", stat.S_IFCHR | 0o600, 0, 0, 0, 1)
    assert t.take_journal()


def state_one_input(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="devfsd-fuzz-", dir=_TMP) as d:
        path = os.path.join(d, DB_NAME)
        if data[:1] and data[0] % 2:
            with open(path, "wb") as f:
                f.write(data[1:])
        else:
            _rows_db(path, data[1:])
        try:
            store = StateStore(d)
        except StateError:
            return
        try:
            majors = store.majors()
            store.modules()
            store.quarantined()
            store.isolated()
            t = store.load_tree(1)
        except StateError:
            return
        finally:
            store.close()
        _check_served(t)
        _check_majors(majors)


def _check_majors(majors: dict[str, int]) -> None:
    """What a switch given the rows ``majors`` accepted must hold: the
    reservations as they are, every row they do not override as recorded,
    each left out said, and a new name given no major a row named."""
    t = DevswTable()
    left = {name for name, *_ in t.restore(majors)}
    for name, maj in RESERVED_MAJORS.items():
        assert t.getmajor(name) == maj and t.getname(maj) == name
    for name, maj in majors.items():
        if name in left:
            assert name in RESERVED_MAJORS or maj in RESERVED_MAJORS.values(), (name, maj)
        else:
            assert t.getmajor(name) == maj and t.getname(maj) == name, (name, maj)
    new = "new"
    while new in majors:
        new += "x"
    try:
        got = t.attach(new, Cdevsw())
    except DeviceError:  # ENOMEM: every major taken or held
        return
    assert got not in majors.values() and got not in RESERVED_MAJORS.values(), got


def state_seeds() -> list[bytes]:
    """Rows of a small tree (valid, and with a bad name), and that tree's database file."""
    rows = (
        b"i1,16877,0,0,0,1,1,1,x\n"
        b"i2,16877,0,0,0,1,1,1,x\n"
        b"i3,8576,0,0,1026,1,1,1,x\n"
        b"i4,41471,0,0,0,1,1,1,x642f63\n"
        b"i5,4480,0,0,0,1,1,1,x\n"
        b"e1,x64,2,1\ne2,x63,3,2\ne1,x6c,4,3\ne1,x6669666f,5,4\ne1,x68,3,5\n"
        b"jmsgq,256\nmcrandom,crandom,{},0\nlx/y/z.py,z\n"
    )
    out = [b"\0" + rows, b"\0" + rows.replace(b"e2,x63,", b"e2,x612f62,")]
    out.append(b"\0" + rows + b"jmm,257\njbar,40\n")  # rows a reservation overrides
    with tempfile.TemporaryDirectory(prefix="devfsd-fuzz-", dir=_TMP) as d:
        path = os.path.join(d, DB_NAME)
        _rows_db(path, rows)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=DELETE")  # one file, whole
        db.close()
        with open(path, "rb") as f:
            out.append(b"\1" + f.read())
    return out
