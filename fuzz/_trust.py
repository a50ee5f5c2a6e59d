"""The module trust check's fuzz target, shared by fuzz/fuzz_trust.py and the tests.

``trust_one_input(data)`` reads a small tree from the bytes (a chain of
directories and symbolic links under a fresh root-owned base, each with an
owner, a group and mode bits, then a module file), builds it on disk (as
root: it chowns), asks ``devfsd.kern.trust.load_code`` for the module, and
compares the answer with an oracle written another way: the set of users
who could change each object (its owner; its group's members if
group-writable, where group 0 is root alone; everyone if writable by
others), which must hold only trusted users, sticky directories aside.
A refusal must name the first object that fails; an acceptance must run
exactly the bytes written. It raises only on a disagreement (a bug).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Final

from devfsd.errors import DeviceError
from devfsd.kern import trust

__all__ = ["Obj", "build", "decode", "trust_one_input", "trust_seeds", "writers_ok"]

UIDS: Final = (0, 65534, 1000)
GIDS: Final = (0, 65534)
EVERYONE: Final = -1


@dataclass(frozen=True, slots=True)
class Obj:
    """One step on the way: a directory, a link to a directory, or the module file."""

    kind: str  # "dir", "link" or "file"
    uid: int
    gid: int
    mode: int  # permission bits, with the sticky bit for directories
    target_uid: int = 0  # a link's target directory
    target_gid: int = 0
    target_mode: int = 0o755


def decode(data: bytes) -> list[Obj]:
    """A chain of up to 5 steps then the file, from any bytes (4 bytes a step)."""
    steps: list[Obj] = []
    i = 0
    while i + 4 <= len(data) and len(steps) < 6:
        a, b, c, d = data[i : i + 4]
        i += 4
        last = i + 4 > len(data) or len(steps) == 5
        kind = "file" if last else ("link" if a & 0x80 else "dir")
        mode = ((b << 8) | c) & (0o777 if kind == "file" else 0o1777)
        steps.append(
            Obj(
                kind,
                UIDS[a % 3],
                GIDS[(a >> 2) & 1],
                mode,
                target_uid=UIDS[d % 3],
                target_gid=GIDS[(d >> 2) & 1],
                target_mode=((d << 4) | (c & 0xF)) & 0o1777,
            )
        )
    if not steps or steps[-1].kind != "file":
        steps.append(Obj("file", 0, 0, 0o644))
    return steps


def writers_ok(uid: int, gid: int, mode: int, *, is_dir: bool, trusted: frozenset[int]) -> bool:
    """The oracle: whoever could change this object is trusted (sticky directories aside)."""
    writers = {uid}
    if mode & 0o020:
        writers.add(0 if gid == 0 else EVERYONE)
    if mode & 0o002:
        writers.add(EVERYONE)
    if is_dir and mode & 0o1000:
        writers = {uid}  # others may add entries, but not touch what is not theirs
    return writers <= trusted


def build(base: str, steps: list[Obj], source: bytes) -> tuple[str, list[tuple[str, bool]]]:
    """Make the chain under ``base``; returns the module path and, per object, (path, passes)."""
    trusted = trust.trusted_uids()
    verdicts: list[tuple[str, bool]] = []
    cur = base  # the real path: what a refusal names
    via = base  # the path asked for, through the links
    for n, o in enumerate(steps):
        name = f"s{n}"
        path = os.path.join(cur, name)
        via = os.path.join(via, name)
        if o.kind == "file":
            with open(path + ".py", "wb") as f:
                f.write(source)
            os.chown(path + ".py", o.uid, o.gid)
            os.chmod(path + ".py", o.mode)
            verdicts.append((path + ".py", writers_ok(o.uid, o.gid, o.mode, is_dir=False, trusted=trusted)))
            return via + ".py", verdicts
        if o.kind == "link":
            real = os.path.join(cur, f"r{n}")
            os.mkdir(real)
            os.symlink(f"r{n}", path)
            os.lchown(path, o.uid, o.gid)
            verdicts.append((path, o.uid in trusted))
            os.chown(real, o.target_uid, o.target_gid)
            os.chmod(real, o.target_mode)
            ok = writers_ok(o.target_uid, o.target_gid, o.target_mode, is_dir=True, trusted=trusted)
            verdicts.append((real, ok))
            cur = real
        else:
            os.mkdir(path)
            os.chown(path, o.uid, o.gid)
            os.chmod(path, o.mode)
            verdicts.append((path, writers_ok(o.uid, o.gid, o.mode, is_dir=True, trusted=trusted)))
            cur = path
    raise AssertionError("no file step")


_base: str | None = None


def _fresh_base() -> str:
    """A root-owned 0755 directory, under a chain that passes (``/tmp`` is sticky).

    Under ``$DEVFSD_TRUST_FUZZ_DIR`` when set (libFuzzer ends the process
    without Python's exit handlers, so an atheris run's caller cleans up).
    """
    global _base
    if _base is None:
        where = os.environ.get("DEVFSD_TRUST_FUZZ_DIR", "/tmp")
        _base = tempfile.mkdtemp(prefix="devfsd-trust-fuzz-", dir=where)
        os.chmod(_base, 0o755)
        atexit.register(shutil.rmtree, _base, ignore_errors=True)
    return tempfile.mkdtemp(dir=_base)


def trust_one_input(data: bytes) -> None:
    """Build the tree ``data`` describes and check ``load_code``'s answer against the oracle."""
    steps = decode(data)
    source = b"X = %d\n" % int.from_bytes(data[-4:] or b"\0", "big")
    base = _fresh_base()
    try:
        path, verdicts = build(base, steps, source)
        first_bad = next((p for p, ok in verdicts if not ok), None)
        try:
            spec = trust.load_code("devfsd_fuzz_trust", path, package=False)
        except trust.Untrusted as exc:
            if first_bad is None:
                raise AssertionError(f"refused, though every step passes: {exc}") from None
            why = str(exc)
            if not why.startswith(first_bad + ": ") or "\n" in why:
                raise AssertionError(f"refusal names {why!r}, expected {first_bad}") from None
            return
        except DeviceError as exc:
            raise AssertionError(f"unexpected error {exc!r}") from None
        if first_bad is not None:
            raise AssertionError(f"accepted, though {first_bad} fails the rule")
        loader = spec.loader
        assert isinstance(loader, trust._BytesLoader)
        if loader.source != source:
            raise AssertionError("the bytes to run are not the bytes checked")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def trust_seeds() -> list[bytes]:
    """A trusted chain, an other-writable directory, a sticky one, a link, a foreign file."""
    return [
        bytes([0, 0x01, 0xED, 0, 0, 0x01, 0xA4, 0]),  # 0755 dir, 0644 file: passes
        bytes([0, 0x01, 0xFF, 0, 0, 0x01, 0xA4, 0]),  # 0777 dir: refused
        bytes([0, 0x03, 0xFF, 0, 0, 0x01, 0xA4, 0]),  # 1777 dir: passes
        bytes([0x80, 0x01, 0xED, 0x0D, 0, 0x01, 0xA4, 0]),  # a link to a 0755 dir
        bytes([0, 0x01, 0xED, 0, 1, 0x01, 0xA4, 0]),  # the file is nobody's
        bytes([4, 0x01, 0xFD, 0, 0, 0x01, 0xA4, 0]),  # group-writable, group nobody
    ]
