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

Refused, with a clear error, rather than served: a database that is empty
(0 bytes), not ours (another ``application_id`` or schema version) or
whose rows do not make a tree (``check_tree``), or hold what no call
could have recorded: a driver name or major ``devsw_attach`` refuses
(``check_name``, ``check_major``), a module name, path or properties
modload's checks refuse (``validate_module_name``, ``check_props``; a
recorded path is absolute). What a row is for is checked where it is used,
as modload's is: ``--reload-modules`` loads through the loader's checks (the
code's trust, a host's user, caps and memlimit). Refused too: a
directory, one above it, or a file of it that someone but root or the
daemon's user owns or may write (``EPERM``: the trust rule of module
code, ``trust.check_path``), since whoever may write it chooses what root
loads and who may open which node. One daemon per directory:
``lock`` is ``flock``'ed for the store's life. A write that fails
(``ENOSPC``, ``EROFS``, ``EIO``) is rolled back and raised as
``StateError`` with that errno; the caller undoes its own change.

Modules are marked ``loading`` (durably) before their code runs and the
mark cleared after; a mark found at start means the daemon died loading
that module: it is quarantined (``quarantine``), and ``--reload-modules``
leaves it out until ``modunload NAME`` or a ``modload`` of it.

XXX: the store is called on the trio thread; a commit without fsync takes
tens of microseconds, on the order of a FUSE round trip.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Final, final

from devfsd.cdevsw._table import check_major, check_name
from devfsd.errors import DeviceError
from devfsd.kern.module import validate_module_name
from devfsd.kern.props import MAXPROPSLEN, check_props
from devfsd.kern.trust import check_path, check_stat
from devfsd.nodes import NAME_MAX, ROOT_INODE, SYMLINK_MAX, Node, NodeTable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "DEFAULT_STATE_ROOT",
    "SCHEMA_VERSION",
    "StateError",
    "StateStore",
    "check_tree",
    "default_state_dir",
]

DEFAULT_STATE_ROOT: Final = "/var/lib/devfsd"
DB_NAME: Final = "devfsd.sqlite"
LOCK_NAME: Final = "lock"

#: ``PRAGMA application_id``: "devf". A database without it (and without the
#: version-0 tables) is not ours.
APPLICATION_ID: Final = 0x64657666
#: ``PRAGMA user_version`` this code writes. 0: the first layout (no
#: application id, no quarantine), migrated on open.
SCHEMA_VERSION: Final = 1

_TABLES_V0: Final = frozenset({"inodes", "entries", "majors", "modules"})
_SCHEMA_V0: Final = """
CREATE TABLE inodes (
    ino INTEGER PRIMARY KEY, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    rdev INTEGER NOT NULL, atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
    target BLOB NOT NULL);
CREATE TABLE entries (
    parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (parent, name));
CREATE TABLE majors (name TEXT PRIMARY KEY, major INTEGER NOT NULL);
CREATE TABLE modules (name TEXT PRIMARY KEY, spec TEXT NOT NULL, props TEXT NOT NULL);
"""
#: Version 0 (with or without ``isolated``) to 1: quarantined modules,
#: loading marks.
_MIGRATE_V1: Final = (
    "ALTER TABLE modules ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE loading (spec TEXT PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS isolated (name TEXT PRIMARY KEY)",
)

_UINT32: Final = 1 << 32
_INT64: Final = 1 << 63
_TYPES: Final = frozenset({stat.S_IFDIR, stat.S_IFCHR, stat.S_IFIFO, stat.S_IFLNK})
#: sqlite3 result codes (low byte of the extended code) and the errno a
#: failed write becomes.
_ERRNO_OF: Final = {13: errno.ENOSPC, 8: errno.EROFS, 3: errno.EROFS, 10: errno.EIO}


class StateError(DeviceError):
    """The state directory refused a read or a write; ``errno`` says how
    (``ENOSPC``, ``EROFS``, ``EIO``; ``EBUSY``: locked by another daemon;
    ``EINVAL``: a database that is not a valid devfsd tree)."""


def default_state_dir(mountpoint: str) -> str:
    """``/var/lib/devfsd/<mountpoint, %-escaped>``: one state per mountpoint."""
    return os.path.join(DEFAULT_STATE_ROOT, urllib.parse.quote(mountpoint, safe=""))


def _errno_of(exc: sqlite3.Error) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    return _ERRNO_OF.get(code & 0xFF, errno.EIO) if isinstance(code, int) else errno.EIO


def _bad(what: str) -> StateError:
    return StateError(errno.EINVAL, f"{DB_NAME}: {what}; refusing to serve it (move it away to start afresh)")


def _refusal(exc: Exception, what: str) -> StateError:
    """A failed read of the database: its errno if the disk failed (full,
    read-only, I/O), else ``EINVAL`` (what SQLite found is not ours)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _ERRNO_OF:
        return StateError(_ERRNO_OF[code & 0xFF], f"{DB_NAME}: {exc}")
    return _bad(f"{what} ({exc})")


def _int(v: object, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v < hi


def _check_inode(row: tuple[Any, ...]) -> None:
    ino, mode, uid, gid, rdev, atime, mtime, ctime, target = row
    where = f"inode {ino!r}"
    if not _int(ino, 1, _INT64):
        raise _bad(f"{where}: invalid inode number")
    if not _int(mode, 0, 1 << 16) or stat.S_IFMT(mode) not in _TYPES or mode & ~(stat.S_IFMT(mode) | 0o7777):
        raise _bad(f"{where}: invalid mode {mode!r}")
    if not _int(uid, 0, _UINT32 - 1) or not _int(gid, 0, _UINT32 - 1):
        raise _bad(f"{where}: invalid owner {uid!r}:{gid!r}")
    if not _int(rdev, 0, _UINT32) or (rdev and not stat.S_ISCHR(mode)):
        raise _bad(f"{where}: invalid device number {rdev!r}")
    if not all(_int(t, -_INT64, _INT64) for t in (atime, mtime, ctime)):
        raise _bad(f"{where}: invalid time")
    if type(target) is not bytes:
        raise _bad(f"{where}: target is not a blob")
    if stat.S_ISLNK(mode):
        if not 0 < len(target) <= SYMLINK_MAX or b"\0" in target:
            raise _bad(f"{where}: invalid symbolic link target")
    elif target:
        raise _bad(f"{where}: a target on a node that is not a symbolic link")


def _check_name(name: object) -> bool:
    return (
        type(name) is bytes
        and 0 < len(name) <= NAME_MAX
        and name not in (b".", b"..")
        and b"/" not in name
        and b"\0" not in name
    )


def check_tree(inodes: list[tuple[Any, ...]], entries: list[tuple[Any, ...]]) -> None:
    """Refuse rows that are not one tree a ``NodeTable`` can serve.

    Args:
        inodes: (inode, mode, uid, gid, rdev, atime, mtime, ctime, target).
        entries: (parent, name, inode).

    Raises:
        StateError: ``EINVAL``, saying which row and why: a bad inode
            number, mode, type, owner, device number, time or target; a
            bad name; an entry whose parent is missing or not a directory,
            or that names a missing inode or the root; a directory with more
            than one name; a node no path from the root reaches (cycles
            included); no root directory.
    """
    modes: dict[int, int] = {}
    for row in inodes:
        if len(row) != 9:
            raise _bad("an inode row of the wrong shape")
        _check_inode(row)
        modes[row[0]] = row[1]
    if not stat.S_ISDIR(modes.get(ROOT_INODE, 0)):
        raise _bad("no root directory")
    children: dict[int, list[int]] = {}
    dir_named: set[int] = set()
    for row in entries:
        if len(row) != 3:
            raise _bad("an entry row of the wrong shape")
        parent, name, ino = row
        where = f"entry {name!r} in directory {parent!r}"
        if not _check_name(name):
            raise _bad(f"{where}: invalid name")
        if type(parent) is not int or not stat.S_ISDIR(modes.get(parent, 0)):
            raise _bad(f"{where}: the parent is not a directory")
        if type(ino) is not int or ino not in modes or ino == ROOT_INODE:
            raise _bad(f"{where}: names inode {ino!r}, which is missing or the root")
        if stat.S_ISDIR(modes[ino]):
            if ino in dir_named:
                raise _bad(f"{where}: directory {ino} has two names")
            dir_named.add(ino)
        children.setdefault(parent, []).append(ino)
    seen = {ROOT_INODE}
    todo = [ROOT_INODE]
    while todo:
        for ino in children.get(todo.pop(), ()):
            if ino not in seen:
                seen.add(ino)
                if stat.S_ISDIR(modes[ino]):
                    todo.append(ino)
    lost = set(modes) - seen
    if lost:
        raise _bad(f"inode {min(lost)} is not reachable from the root (a cycle or a lost node)")


def _check_module(name: object, spec: object, where: str, *, loaded: bool) -> None:
    """A module row's (or a loading mark's) name and spec, as a load
    records them: a module name (``validate_module_name``, as modload's),
    the row's name; or a path and a name of the load's. A ``loaded`` row
    (one ``--reload-modules`` loads) has an absolute path (``caller_path``
    made it so) and the name its ``MODULE`` declared, checked as any; a
    mark, or a row it quarantined, has the path as given (modules.conf's
    may be relative) and its last component.

    Raises:
        StateError: ``EINVAL`` naming the row (``where``) and why.
    """
    try:
        if type(spec) is not str or not spec or "\0" in spec:
            raise DeviceError(errno.EINVAL, "the module is not a name or a path")
        if "/" not in spec:
            if validate_module_name(spec) != name:
                raise DeviceError(errno.EINVAL, f"module {spec!r} recorded as {name!r:.80}")
        elif not loaded:
            if type(name) is not str or "/" in name or "\0" in name:
                raise DeviceError(errno.EINVAL, "invalid module name")
        elif not spec.startswith("/"):
            raise DeviceError(errno.EINVAL, "the module's path is not absolute")
        else:
            validate_module_name(name)
    except DeviceError as exc:
        raise _bad(f"{where} ({exc})") from None


def _check_owners(directory: str) -> None:
    """Refuse a state that someone but root or the daemon's user could have
    written: its rows name the modules root loads again and the owners and
    modes of the nodes it serves. The trust rule of module code and
    modules.conf (``trust.check_path``): the directory, every directory
    above it, and its files.

    Raises:
        StateError: ``EPERM``, saying which and why.
    """
    owners = frozenset({0, os.geteuid()})
    why = check_path(directory, os.stat(directory), owners)
    for name in (LOCK_NAME, DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        path = os.path.join(directory, name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        why = why or check_stat(path, st, owners)
    if why is not None:
        raise StateError(errno.EPERM, f"{why}; refusing a state others could have written")


def _lock(directory: str) -> int:
    """``flock`` ``directory/lock`` for the process's life (its descriptor).

    Raises:
        StateError: ``EBUSY`` naming the holder's pid.
        OSError: the file cannot be opened.
    """
    path = os.path.join(directory, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateError(errno.EBUSY, f"in use by another devfsd (pid {holder})") from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is only for the message
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@final
class StateStore:
    """One daemon's state database in ``directory`` (made 0700 if missing).

    Raises:
        OSError: the directory cannot be made or the lock file opened.
        StateError: others could have written it (``EPERM``, see
            ``_check_owners``), another daemon holds the directory (``EBUSY``), the
            database is empty, not ours or not a valid tree (``EINVAL``), or
            it cannot be written (``EROFS``, ``ENOSPC``, ``EIO``).
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _check_owners(directory)
        self._lock_fd = _lock(directory)
        try:
            self._open(directory)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, directory: str) -> None:
        self.path = os.path.join(directory, DB_NAME)
        try:
            size: int | None = os.lstat(self.path).st_size
        except FileNotFoundError:
            size = None
        if size == 0:
            raise _bad("the database is empty (0 bytes)")
        uri = "file:" + urllib.parse.quote(self.path) + ("?mode=rwc" if size is None else "?mode=rw")
        try:
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StateError(_errno_of(exc), f"{DB_NAME}: {exc}") from None
        try:
            self._prepare(fresh=size is None)
        except (sqlite3.Error, ValueError) as exc:  # ValueError: text that is not UTF-8
            self.db.close()
            raise _refusal(exc, "not a devfsd state database") from None
        except BaseException:
            self.db.close()
            raise
        try:
            seq = self._read("SELECT COALESCE(MAX(seq), 0) FROM entries")[0][0]
            self._seq: int = seq if type(seq) is int else 0
            #: (name, spec) of the modules found marked loading: quarantined now.
            self.crashed: list[tuple[str, str]] = self._quarantine_marks()
        except BaseException:
            self.db.close()
            raise

    def _prepare(self, *, fresh: bool) -> None:
        db = self.db
        # Exclusive: the wal-index lives in the heap, not in a shared mapping
        # of a -shm file (SIGBUS when its disk is full or it is made
        # immutable); the lock already keeps every other daemon out.
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if fresh:
            with self._transaction():
                for sql in _SCHEMA_V0.split(";"):
                    db.execute(sql)
                for sql in _MIGRATE_V1:
                    db.execute(sql)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                self._apply(NodeTable(time.time_ns()).take_journal())
            return
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app == 0 and version == 0 and _TABLES_V0 <= tables <= _TABLES_V0 | {"isolated"}:
            with self._transaction():  # the first layout: migrate
                for sql in _MIGRATE_V1:
                    db.execute(sql)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        if app != APPLICATION_ID:
            raise _bad(f"not a devfsd state database (application id {app:#x})")
        if version != SCHEMA_VERSION:
            raise _bad(f"schema version {version}, this devfsd reads {SCHEMA_VERSION}")
        if not _TABLES_V0 | {"loading", "isolated"} <= tables:
            raise _bad("tables are missing")

    def close(self) -> None:
        self.db.close()
        os.close(self._lock_fd)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE .. COMMIT; a failure rolls back and raises as is."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
            db.execute("COMMIT")
        except BaseException:
            # A failed write may have ended the transaction already (SQLite
            # rolls back by itself on a full disk or an I/O error).
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _write(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in one transaction.

        Raises:
            StateError: the write failed (``ENOSPC``, ``EROFS``, ``EIO``);
                nothing of it is on disk.
        """
        try:
            with self._transaction():
                fn()
        except sqlite3.Error as exc:
            raise StateError(_errno_of(exc), f"state {self.path}: {exc}") from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        """Rows of a query; a database SQLite cannot read is refused.

        Raises:
            StateError: ``EINVAL`` (malformed), or the read's errno.
        """
        try:
            return self.db.execute(sql, args).fetchall()
        except (sqlite3.Error, ValueError) as exc:
            raise _refusal(exc, "unreadable") from None

    # -- nodes ------------------------------------------------------------------

    def load_tree(self, now: int) -> NodeTable:
        """The tree as the last committed call left it.

        Raises:
            StateError: ``EINVAL`` if the rows are not a valid tree.
        """
        inodes = self._read("SELECT ino, mode, uid, gid, rdev, atime, mtime, ctime, target FROM inodes")
        entries = self._read("SELECT parent, name, ino FROM entries ORDER BY seq")
        check_tree(inodes, entries)
        return NodeTable.restore(inodes, entries, now)

    def apply(self, journal: Iterable[tuple[str, object, object, object]]) -> None:
        """Commit one call's changes (``NodeTable.take_journal()``) atomically.

        Raises:
            StateError: nothing was written; the caller undoes the call.
        """
        seq = self._seq
        try:
            self._write(lambda: self._apply(journal))
        except BaseException:
            self._seq = seq
            raise

    def _apply(self, journal: Iterable[tuple[str, object, object, object]]) -> None:
        db = self.db
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

    # -- majors -------------------------------------------------------------------

    def majors(self) -> dict[str, int]:
        """The remembered name -> major table.

        Raises:
            StateError: ``EINVAL`` for a name or a major that ``devsw_attach``
                would refuse (``check_name``, ``check_major``), or one twice.
        """
        rows = self._read("SELECT name, major FROM majors")
        out: dict[str, int] = {}
        for name, maj in rows:
            try:
                check_name(name)
                check_major(maj)
            except DeviceError as exc:
                raise _bad(f"invalid major row {name!r:.80}: {maj!r:.40} ({exc})") from None
            if name in out or maj in out.values():
                raise _bad(f"invalid major row {name!r}: {maj!r} (a name or a major twice)")
            out[name] = maj
        return out

    def put_major(self, name: str, major: int) -> None:
        self._write(lambda: self.db.execute("INSERT OR REPLACE INTO majors VALUES (?, ?)", (name, major)))

    # -- modules ------------------------------------------------------------------

    def _module_rows(self, quarantined: int) -> Iterator[tuple[str, str, dict[str, str | int | bool]]]:
        sql = "SELECT name, spec, props FROM modules WHERE quarantined = ? ORDER BY rowid"
        for name, spec, text in self._read(sql, (quarantined,)):
            where = f"invalid module row {name!r:.80}"
            _check_module(name, spec, where, loaded=not quarantined)
            if type(text) is not str:
                raise _bad(f"{where} (properties are not text)")
            if len(text) > MAXPROPSLEN:  # more than check_props lets a modload give
                raise _bad(f"{where} (properties larger than {MAXPROPSLEN} bytes)")
            try:
                props = check_props(json.loads(text))
            except (ValueError, RecursionError):  # RecursionError: nested deeper than json goes
                raise _bad(f"{where} (properties are not JSON)") from None
            except DeviceError as exc:  # as modload's: check_props
                raise _bad(f"{where} ({exc})") from None
            yield name, spec, props

    def modules(self) -> list[tuple[str, dict[str, str | int | bool]]]:
        """(spec, props) of the modules modload'ed and not modunload'ed, but
        not the quarantined ones.

        Raises:
            StateError: ``EINVAL`` for a row that does not validate (see
                ``recorded``).
        """
        return [(spec, props) for _, spec, props in self._module_rows(0)]

    def recorded(self) -> list[tuple[str, str, dict[str, str | int | bool]]]:
        """(name, spec, props) of the modules ``modules`` lists.

        Raises:
            StateError: ``EINVAL`` for a row a modload could not have
                recorded: a name ``validate_module_name`` refuses (a
                terminal's escape sequences), a spec that is neither that
                name nor an absolute path (``caller_path`` makes a path
                absolute), properties ``check_props`` refuses (not an
                int64, str or bool, past ``MAXPROPSLEN``).
        """
        return list(self._module_rows(0))

    def quarantined(self) -> list[str]:
        """Names of the quarantined modules."""
        return [name for name, _, _ in self._module_rows(1)]

    def module_row(self, name: str) -> tuple[str, dict[str, str | int | bool]] | None:
        """(spec, props) of loaded module ``name``'s row, if it has one."""
        for n, spec, props in self._module_rows(0):
            if n == name:
                return spec, props
        return None

    def mark_loading(self, spec: str, name: str, *, only: bool = False) -> None:
        """Record, durably, that ``spec`` (module ``name``) is about to run
        code; ``only``: in place of every other mark."""

        def mark() -> None:
            if only:
                self.db.execute("DELETE FROM loading")
            self.db.execute("INSERT OR REPLACE INTO loading VALUES (?, ?)", (spec, name))

        self._write(mark)

    def clear_loading(self, spec: str | None = None) -> None:
        """Remove the mark of ``spec``'s load (it failed, or its grace is
        over), or every mark (``None``: the daemon stops cleanly)."""
        if spec is None:
            self._write(lambda: self.db.execute("DELETE FROM loading"))
        else:
            self._write(lambda: self.db.execute("DELETE FROM loading WHERE spec = ?", (spec,)))

    def put_module(
        self,
        name: str,
        spec: str,
        props: dict[str, str | int | bool],
        *,
        isolated: bool = False,
        keep_mark: bool = False,
    ) -> None:
        """Record a loaded module, whether it runs isolated (``modload -I``),
        and clear its loading mark (unless ``keep_mark``), in one transaction."""

        def put() -> None:
            self.db.execute(
                "INSERT OR REPLACE INTO modules VALUES (?, ?, ?, 0)", (name, spec, json.dumps(props))
            )
            if not keep_mark:
                self.db.execute("DELETE FROM loading WHERE spec = ?", (spec,))
            if isolated:
                self.db.execute("INSERT OR REPLACE INTO isolated VALUES (?)", (name,))
            else:
                self.db.execute("DELETE FROM isolated WHERE name = ?", (name,))

        self._write(put)

    def drop_module(self, name: str) -> bool:
        """Forget module ``name`` (loaded or quarantined); whether it had a row."""
        had = self.db.execute("SELECT 1 FROM modules WHERE name = ?", (name,)).fetchone() is not None

        def drop() -> None:
            self.db.execute("DELETE FROM modules WHERE name = ?", (name,))
            self.db.execute("DELETE FROM loading WHERE name = ?", (name,))
            self.db.execute("DELETE FROM isolated WHERE name = ?", (name,))

        self._write(drop)
        return had

    def isolated(self) -> set[str]:
        """Names of modules last loaded isolated (``modload -I``).

        Raises:
            StateError: ``EINVAL`` for a name ``validate_module_name`` refuses.
        """
        names = set()
        for (name,) in self._read("SELECT name FROM isolated"):
            try:
                names.add(validate_module_name(name))
            except DeviceError as exc:
                raise _bad(f"invalid isolated row {name!r:.80} ({exc})") from None
        return names

    def _quarantine_marks(self) -> list[tuple[str, str]]:
        """Turn the loading marks left by a dead daemon into quarantined rows."""
        marks = self._read("SELECT spec, name FROM loading ORDER BY rowid")
        if not marks:
            return []
        for spec, name in marks:
            _check_module(name, spec, f"invalid loading mark {spec!r:.200}", loaded=False)

        def quarantine() -> None:
            for spec, name in marks:
                self.db.execute(
                    "INSERT INTO modules VALUES (?, ?, '{}', 1)"
                    " ON CONFLICT (name) DO UPDATE SET quarantined = 1",
                    (name, spec),
                )
            self.db.execute("DELETE FROM loading")

        self._write(quarantine)
        return [(name, spec) for spec, name in marks]
