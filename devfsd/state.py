"""The state directory: nodes, the name-to-major table and loaded modules.

Touches the world (an SQLite database). What a successful call changed is
committed before its reply goes out, in one transaction per call, so a
``kill -9`` at any moment leaves either the whole change or none of it: no
half-made node, no rename that lost both names. The database runs in WAL
mode with ``synchronous=NORMAL``: a committed transaction survives the
daemon's death (the kernel has the WAL file); only a power loss may take
the last transactions, which is what tmpfs would lose too, and more.

Tried first: a JSON snapshot written with temporary file, fsync and rename
after each change. Atomic, but it rewrites every node on every mknod: 10,000
nodes made one by one wrote ~5 GB. SQLite writes what changed.

XXX: the store is called on the trio thread; a commit without fsync takes
tens of microseconds, on the order of a FUSE round trip.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from typing import TYPE_CHECKING, Final, final

from devfsd.nodes import Node, NodeTable

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DEFAULT_STATE_ROOT", "StateStore", "default_state_dir"]

DEFAULT_STATE_ROOT: Final = "/var/lib/devfsd"
DB_NAME: Final = "devfsd.sqlite"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS inodes (
    ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    rdev INTEGER NOT NULL, atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
    target BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (parent, name));
CREATE TABLE IF NOT EXISTS majors (name TEXT PRIMARY KEY, major INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS modules (name TEXT PRIMARY KEY, spec TEXT NOT NULL, props TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS isolated (name TEXT PRIMARY KEY);
"""


def default_state_dir(mountpoint: str) -> str:
    """``/var/lib/devfsd/<mountpoint, %-escaped>``: one state per mountpoint."""
    return os.path.join(DEFAULT_STATE_ROOT, urllib.parse.quote(mountpoint, safe=""))


@final
class StateStore:
    """One daemon's state database in ``directory`` (made 0700 if missing).

    Raises:
        OSError: the directory cannot be made.
        sqlite3.Error: the database cannot be opened (corrupt, not ours).
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.path = os.path.join(directory, DB_NAME)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self._seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    # -- nodes ------------------------------------------------------------------

    def load_tree(self, now: int) -> NodeTable:
        """The tree as the last committed call left it (empty if new)."""
        inodes = self.db.execute(
            "SELECT ino, mode, uid, gid, rdev, atime, mtime, ctime, target FROM inodes"
        ).fetchall()
        entries = self.db.execute("SELECT parent, name, ino FROM entries ORDER BY seq").fetchall()
        if not inodes:
            t = NodeTable(now)
            self.apply(t.take_journal())
            return t
        return NodeTable.restore(inodes, entries, now)

    def apply(self, journal: Iterable[tuple[str, object, object, object]]) -> None:
        """Commit one call's changes (``NodeTable.take_journal()``) atomically."""
        db = self.db
        db.execute("BEGIN")
        try:
            for op, a, b, c in journal:
                if op == "put":
                    assert isinstance(a, Node)
                    db.execute(
                        "INSERT OR REPLACE INTO inodes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (a.inode, a.mode, a.uid, a.gid, a.rdev, a.atime_ns, a.mtime_ns, a.ctime_ns, a.target),
                    )
                elif op == "link":
                    self._seq += 1
                    db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", (a, b, c, self._seq))
                elif op == "unlink":
                    db.execute("DELETE FROM entries WHERE parent = ? AND name = ?", (a, b))
                elif op == "drop":
                    db.execute("DELETE FROM inodes WHERE ino = ?", (a,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- majors -------------------------------------------------------------------

    def majors(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, major FROM majors").fetchall())

    def put_major(self, name: str, major: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO majors VALUES (?, ?)", (name, major))

    # -- modules ------------------------------------------------------------------

    def modules(self) -> list[tuple[str, dict[str, str | int | bool]]]:
        """(spec, props) of the modules modload'ed and not modunload'ed."""
        return [
            (s, json.loads(p)) for s, p in self.db.execute("SELECT spec, props FROM modules ORDER BY rowid")
        ]

    def put_module(self, name: str, spec: str, props: dict[str, str | int | bool]) -> None:
        self.db.execute("INSERT OR REPLACE INTO modules VALUES (?, ?, ?)", (name, spec, json.dumps(props)))

    def drop_module(self, name: str) -> None:
        self.db.execute("DELETE FROM modules WHERE name = ?", (name,))

    def isolated(self) -> set[str]:
        """Names of modules last loaded isolated (``modload -I``)."""
        return {n for (n,) in self.db.execute("SELECT name FROM isolated")}

    def set_isolated(self, name: str, on: bool) -> None:
        if on:
            self.db.execute("INSERT OR REPLACE INTO isolated VALUES (?)", (name,))
        else:
            self.db.execute("DELETE FROM isolated WHERE name = ?", (name,))
