"""Which module code root may run, and running only the bytes that were checked.

Touches the world (opens files and directories). The rule: module code is
trusted when it is as trusted as devfsd's own code and nobody else can
change it. An object (a file, or a directory on the way to it) passes when

- its owner is root, or the owner of the installed ``devfsd`` package, or
  the daemon's own user (*trusted users*: ``trusted_uids()``);
- it is not writable by its group unless that group is root (gid 0);
- it is not writable by others;
- except that a *sticky* directory (``/tmp``, mode 1777) may be writable by
  group and others: only an entry's owner (checked in turn), the
  directory's owner (checked) or root may rename or remove what is in it.

Every directory from ``/`` down to the code passes, and so does the code:
whoever could change any of them could put other code in its place.

Race-free by construction. ``TrustedDir.walk`` opens ``/`` and then each
component of the real path with ``O_NOFOLLOW`` relative to the directory
opened before (``openat``), and checks each by ``fstat`` of what it opened;
a component that is swapped for a symbolic link meanwhile fails to open,
and one swapped for another directory is that other directory, checked as
itself. Source is read from the descriptor that was checked, and those
bytes are compiled: nothing is opened again by name between the check and
the run (issue 13, point 6: swapping two package directories with
``renameat2(RENAME_EXCHANGE)`` while root loads one can only swap which
checked directory is read, never let unchecked bytes in).

A package keeps its directory open while it is loaded (``_Finder``): its
submodules, imported at load or later, are opened relative to that
descriptor and checked the same way, file and subdirectories, and no other
importer is asked for them (the package's ``__path__`` is empty).

Refusals are ``Untrusted`` (``EPERM``), whose text names the path and why,
in one line (``/srv/mods/crandom: owned by uid 1000, not root or devfsd's
owner``); it reaches ``modload`` over the control socket.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.machinery
import os
import stat
import sys
import threading
from typing import TYPE_CHECKING, Final, final

from devfsd.errors import DeviceError

if TYPE_CHECKING:
    import types
    from collections.abc import Collection, Sequence

__all__ = [
    "MAX_SOURCE",
    "TrustedDir",
    "Untrusted",
    "check_code",
    "check_path",
    "check_stat",
    "devfsd_owner",
    "forget_package",
    "install_finder",
    "load_code",
    "trust_daemon_user",
    "trusted_uids",
]

#: Largest source file read (bytes): module code, not data.
MAX_SOURCE: Final = 16 << 20

_O_DIR: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_LINKS: Final = 40  # as the kernel's ELOOP limit


class Untrusted(DeviceError):
    """Module code refused by the trust rule: ``EPERM``; ``str()`` is the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EPERM, reason)


def devfsd_owner() -> int:
    """The owner of the installed ``devfsd`` package (its directory)."""
    import devfsd

    return os.stat(os.path.dirname(os.path.abspath(devfsd.__file__))).st_uid


#: In a module host run as another user (``modload -I -s user=NAME``): the
#: daemon's user, trusted in place of the host's own (``trust_daemon_user``).
_daemon_uid: int | None = None


def trust_daemon_user(uid: int) -> None:
    """In a module host: trust ``uid`` (the daemon's), not this process's user."""
    global _daemon_uid
    _daemon_uid = uid


def trusted_uids() -> frozenset[int]:
    """Root, the owner of devfsd's own code, and the daemon's user."""
    return frozenset({0, devfsd_owner(), os.geteuid() if _daemon_uid is None else _daemon_uid})


def _owner_words(trusted: Collection[int]) -> str:
    return "not root" if set(trusted) <= {0} else "not root or devfsd's owner"


def check_stat(path: str, st: os.stat_result, trusted: Collection[int]) -> str | None:
    """Why ``st`` (of ``path``) fails the trust rule, or ``None`` if it passes. Pure."""
    mode = st.st_mode
    if st.st_uid not in trusted:
        return f"{path}: owned by uid {st.st_uid}, {_owner_words(trusted)}"
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return None
    if mode & stat.S_IWOTH:
        return f"{path}: mode {stat.S_IMODE(mode):04o}, writable by others"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"{path}: mode {stat.S_IMODE(mode):04o}, writable by group {st.st_gid}"
    return None


def check_path(path: str, st: os.stat_result, trusted: Collection[int]) -> str | None:
    """Why ``path`` (whose ``stat`` is ``st``) or a directory above it
    (of its real path) fails the trust rule, or ``None``: a file that
    names what root runs (modules.conf) or serves (the state directory),
    checked as module code is. Not race-free by itself: whoever passes
    could not have swapped what was checked."""
    why = check_stat(path, st, trusted)
    here = os.path.realpath(path)
    while why is None and (parent := os.path.dirname(here)) != here:
        why = check_stat(parent, os.stat(parent), trusted)
        here = parent
    return why


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


@final
class TrustedDir:
    """An open directory (``O_PATH``) that passed the rule, as did all above it.

    Use as a context manager, or ``close()``.
    """

    __slots__ = ("fd", "path", "trusted")

    def __init__(self, fd: int, path: str, trusted: frozenset[int]) -> None:
        self.fd = fd
        self.path = path
        self.trusted = trusted

    def __enter__(self) -> TrustedDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @classmethod
    def walk(cls, path: str, trusted: frozenset[int] | None = None) -> TrustedDir:
        """Open the directory ``path`` (absolute) from ``/`` down, checking each step.

        Symbolic links on the way are followed by reading them from the
        checked directory that holds them (the link itself must pass too).

        Raises:
            Untrusted: a step fails the rule.
            DeviceError: ``ENOENT``, ``ENOTDIR``, ``ELOOP``..., with the path.
        """
        if not path.startswith("/"):
            raise DeviceError(errno.EINVAL, f"{path}: not an absolute path")
        trusted = trusted_uids() if trusted is None else trusted
        cur = cls(os.open("/", _O_DIR), "/", trusted)
        try:
            cur.recheck()
            todo = [p for p in path.split("/") if p]
            links = 0
            while todo:
                name = todo.pop(0)
                if name == ".":
                    continue
                if name == "..":
                    # Lexically, from the path walked so far: a checked prefix.
                    parent = os.path.dirname(cur.path.rstrip("/")) or "/"
                    nxt = cls.walk(parent, trusted)
                    cur.close()
                    cur = nxt
                    continue
                target = cur._readlink(name)
                if target is not None:
                    links += 1
                    if links > _MAX_LINKS:
                        raise DeviceError(errno.ELOOP, f"{_join(cur.path, name)}: too many links")
                    todo[:0] = [p for p in target.split("/") if p]
                    if target.startswith("/"):
                        nxt = cls(os.open("/", _O_DIR), "/", trusted)
                        cur.close()
                        cur = nxt
                        cur.recheck()
                    continue
                nxt = cur.subdir(name)
                cur.close()
                cur = nxt
            return cur
        except BaseException:
            cur.close()
            raise

    def _readlink(self, name: str) -> str | None:
        """The target of ``name`` if it is a symbolic link that passes, else ``None``."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError as exc:
            raise DeviceError(exc.errno or errno.EIO, f"{_join(self.path, name)}: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            return None
        if st.st_uid not in self.trusted:  # a link's own mode means nothing; its owner does
            path = _join(self.path, name)
            raise Untrusted(f"{path}: owned by uid {st.st_uid}, {_owner_words(self.trusted)}")
        return os.readlink(name, dir_fd=self.fd)

    def recheck(self) -> None:
        """Check this directory again, by its descriptor.

        Raises:
            Untrusted: it no longer passes.
        """
        why = check_stat(self.path, os.fstat(self.fd), self.trusted)
        if why is not None:
            raise Untrusted(why)

    def subdir(self, name: str) -> TrustedDir:
        """Open the directory ``name`` in this one (no link followed) and check it.

        Raises:
            Untrusted, DeviceError: as ``walk``.
        """
        path = _join(self.path, name)
        try:
            fd = os.open(name, _O_DIR, dir_fd=self.fd)
        except OSError as exc:
            raise DeviceError(exc.errno or errno.EIO, f"{path}: {exc.strerror}") from None
        sub = TrustedDir(fd, path, self.trusted)
        try:
            sub.recheck()
        except BaseException:
            sub.close()
            raise
        return sub

    def has(self, name: str, *, directory: bool = False) -> bool:
        """Whether ``name`` exists here as a regular file (or a directory); no check."""
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)

    def read(self, name: str) -> bytes:
        """The bytes of the regular file ``name`` here, read from the descriptor checked.

        Raises:
            Untrusted: the file fails the rule.
            DeviceError: it cannot be opened, is not a regular file
                (``ENOEXEC``) or is larger than ``MAX_SOURCE`` (``EFBIG``).
        """
        path = _join(self.path, name)
        try:
            fd = os.open(name, _O_FILE, dir_fd=self.fd)
        except OSError as exc:
            raise DeviceError(exc.errno or errno.EIO, f"{path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise DeviceError(errno.ENOEXEC, f"{path}: not a regular file")
            why = check_stat(path, st, self.trusted)
            if why is not None:
                raise Untrusted(why)
            if st.st_size > MAX_SOURCE:
                raise DeviceError(errno.EFBIG, f"{path}: larger than {MAX_SOURCE} bytes")
            chunks = []
            total = 0
            while chunk := os.read(fd, 1 << 16):
                total += len(chunk)
                if total > MAX_SOURCE:
                    raise DeviceError(errno.EFBIG, f"{path}: larger than {MAX_SOURCE} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)


@final
class _BytesLoader(importlib.abc.Loader):
    """Runs source already read and checked; never a bytecode cache."""

    def __init__(self, source: bytes, path: str) -> None:
        self.source = source
        self.path = path

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        code = compile(self.source, self.path, "exec", dont_inherit=True)
        exec(code, module.__dict__)

    def get_source(self, fullname: str) -> str:
        """For tracebacks and ``inspect`` (PEP 302)."""
        return self.source.decode("utf-8", "replace")


def _spec(qual: str, where: TrustedDir, name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``name`` (a package directory or ``name.py``) in ``where``, checked."""
    if where.has(name, directory=True):
        sub = where.subdir(name)
        try:
            if not sub.has("__init__.py"):
                sub.close()
                return None
            source = sub.read("__init__.py")
        except BaseException:
            sub.close()
            raise
        path = _join(sub.path, "__init__.py")
        spec = importlib.machinery.ModuleSpec(qual, _BytesLoader(source, path), origin=path, is_package=True)
        spec.submodule_search_locations = []  # only _Finder finds its submodules
        spec.has_location = True
        _finder.hold(qual, sub)
        return spec
    fname = f"{name}.py"
    if not where.has(fname):
        return None
    path = _join(where.path, fname)
    spec = importlib.machinery.ModuleSpec(qual, _BytesLoader(where.read(fname), path), origin=path)
    spec.has_location = True
    return spec


@final
class _Finder(importlib.abc.MetaPathFinder):
    """Finds the submodules of the packages ``load_code`` loaded, and only those."""

    def __init__(self) -> None:
        self._dirs: dict[str, TrustedDir] = {}
        self._lock = threading.Lock()

    def hold(self, qual: str, d: TrustedDir) -> None:
        with self._lock:
            old = self._dirs.pop(qual, None)
            self._dirs[qual] = d
        if old is not None:
            old.close()

    def forget(self, qual: str) -> None:
        with self._lock:
            gone = [k for k in self._dirs if k == qual or k.startswith(qual + ".")]
            dirs = [self._dirs.pop(k) for k in gone]
        for d in dirs:
            d.close()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        parent, _, name = fullname.rpartition(".")
        with self._lock:
            where = self._dirs.get(parent)
        if where is None:
            return None
        where.recheck()
        return _spec(fullname, where, name)


_finder: Final = _Finder()


def install_finder() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def forget_package(qual: str) -> None:
    """Close the directories held for ``qual`` and its subpackages (on unload)."""
    _finder.forget(qual)


def _follow(where: TrustedDir, name: str) -> tuple[TrustedDir, str]:
    """Follow ``name`` in ``where`` while it is a symbolic link, checking each; where it ends.

    Takes ``where`` over (closed on error, or replaced).
    """
    try:
        for _ in range(_MAX_LINKS):
            target = where._readlink(name)
            if target is None:
                return where, name
            head, name = os.path.split(target.rstrip("/") or "/")
            if not target.startswith("/"):
                head = _join(where.path, head) if head else where.path
            nxt = TrustedDir.walk(head or "/", where.trusted)
            where.close()
            where = nxt
        raise DeviceError(errno.ELOOP, f"{_join(where.path, name)}: too many links")
    except BaseException:
        where.close()
        raise


def check_code(path: str, *, package: bool) -> bytes:
    """Check module code at ``path`` as ``load_code`` would, and keep nothing.

    For a caller that does not run the code itself (an isolated module's
    host runs it, and checks it again): a refusal here carries the reason.

    Returns:
        The source checked (a package's ``__init__.py``), for a caller
        that reads what it declares without running it.

    Raises:
        Untrusted, DeviceError: as ``load_code``.
    """
    qual = f"devfsd_trust_check_{os.getpid()}"
    spec = load_code(qual, path, package=package)
    forget_package(qual)
    loader = spec.loader
    return loader.source if isinstance(loader, _BytesLoader) else b""


def load_code(qual: str, path: str, *, package: bool) -> importlib.machinery.ModuleSpec:
    """A spec for module code at ``path`` (absolute), checked from ``/`` down.

    ``path`` is a package directory (``package``) or a ``.py`` file. The
    spec's loader runs exactly the bytes that were checked; a package's
    submodules are found through its held directory.

    Raises:
        Untrusted: a step fails the trust rule.
        DeviceError: ``ENOENT`` and the like, with the path in the text.
    """
    install_finder()
    parent, name = os.path.split(path.rstrip("/"))
    where, name = _follow(TrustedDir.walk(parent or "/"), name)
    with where:
        if package:
            if not where.has(name, directory=True):
                raise DeviceError(errno.ENOENT, f"{path}: not a directory")
            spec = _spec(qual, where, name)
        else:
            real = _join(where.path, name)
            spec = importlib.machinery.ModuleSpec(qual, _BytesLoader(where.read(name), real), origin=real)
            spec.has_location = True
    if spec is None:
        raise DeviceError(errno.ENOENT, f"{path}: no __init__.py")
    return spec
