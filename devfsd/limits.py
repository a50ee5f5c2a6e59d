"""Size limits of the tree, as tmpfs has them: ``-o nr_inodes=N,size=BYTES``.

Pure. devfsd runs as root and every user may make nodes in a world-writable
directory of its mount, so what the tree may hold is bounded: a number of
inodes and a number of bytes, where each inode counts ``INODE_COST`` bytes
plus its symbolic link target and each directory entry ``ENTRY_COST`` plus
its name (roughly what they cost the daemon in memory and the state on
disk). A part of each, ``reserve`` percent, only root may use, as ext4's
reserved blocks: when users have filled the tree root can still make
nodes. Past a limit a call fails with ``ENOSPC``. A tree restored from a
state made under larger limits is kept whole (``over`` says which it
passes, for the log): calls that add to it fail until it is back under.

Open files are bounded too (``nr_files``: devices and directories open
through the mount, each ~450 bytes of daemon memory), as NetBSD's
``kern.maxfiles`` bounds the system's file table: past it an open fails
with ``ENFILE``, a user's stopping short of root's reserve. Without it
a user may hold as many files open as the kernel lets one process have
(a hard ``RLIMIT_NOFILE`` of up to 1,048,576) in as many processes as it
likes, each costing the daemon memory the OOM killer charges to it.

Nor may one user take the whole of what is left to users: ``share``
percent of it (``share_of``) is the most one uid other than root may hold,
of open files past ``EMFILE`` and of sleepers
(``devfsd.cdevsw._wait.USER_SLEEPERS``) past ``EAGAIN``, as Linux bounds a
process's descriptors (``RLIMIT_NOFILE``) and a user's processes
(``RLIMIT_NPROC``) below the system's tables. Half by default: a user may
still park 1,900 reads asleep and hold 31,000 files, while the user who
does leaves the other half to everyone else.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Final, final

from devfsd.errors import DeviceError

__all__ = [
    "DEFAULT_NR_FILES",
    "DEFAULT_NR_INODES",
    "DEFAULT_RESERVE",
    "DEFAULT_SHARE",
    "DEFAULT_SIZE",
    "ENTRY_COST",
    "INODE_COST",
    "Limits",
    "split_options",
]

#: Defaults: about 40 MB of daemon memory at most, far above any real /dev.
DEFAULT_NR_INODES: Final = 32768
DEFAULT_SIZE: Final = 8 << 20
DEFAULT_RESERVE: Final = 5
#: Open files: about 30 MB of daemon memory at most.
DEFAULT_NR_FILES: Final = 65536
#: The most of the users' part of open files and sleepers one user may
#: hold, in percent.
DEFAULT_SHARE: Final = 50
INODE_COST: Final = 256
ENTRY_COST: Final = 64

_NUMBER: Final = re.compile(r"([0-9]+)([kmg]?)", re.IGNORECASE)
_SCALE: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@final
@dataclass(frozen=True, slots=True)
class Limits:
    """What the tree may hold and how many files may be open (0: no
    limit), root's reserve and one user's share, in percent."""

    nr_inodes: int = DEFAULT_NR_INODES
    size: int = DEFAULT_SIZE
    reserve: int = DEFAULT_RESERVE
    nr_files: int = DEFAULT_NR_FILES
    share: int = DEFAULT_SHARE

    def share_of(self, users: int) -> int:
        """The most of ``users`` (what root's reserve leaves) one user may hold."""
        return max(1, users * self.share // 100)

    def room(self, privileged: bool) -> tuple[int, int]:
        """(inodes, bytes) a caller may fill up to; 0 for no limit."""
        if privileged:
            return self.nr_inodes, self.size
        keep = 100 - self.reserve
        return (
            self.nr_inodes and max(1, self.nr_inodes * keep // 100),
            self.size and max(1, self.size * keep // 100),
        )

    def check(self, inodes: int, nbytes: int, more_inodes: int, more_bytes: int, privileged: bool) -> None:
        """Whether ``more_*`` fit beside what is used.

        Raises:
            DeviceError: ``ENOSPC``.
        """
        max_i, max_b = self.room(privileged)
        if (max_i and more_inodes > 0 and inodes + more_inodes > max_i) or (
            max_b and more_bytes > 0 and nbytes + more_bytes > max_b
        ):
            raise DeviceError(errno.ENOSPC)

    def over(self, inodes: int, nbytes: int) -> list[str]:
        """Which limits ``inodes`` and ``nbytes`` pass (a tree restored from
        a state written under larger ones), as ``"nr_inodes=N (M used)"``;
        empty if none. Root's reserve is not a limit passed: a full tree is
        usual."""
        over = []
        if self.nr_inodes and inodes > self.nr_inodes:
            over.append(f"nr_inodes={self.nr_inodes} ({inodes} used)")
        if self.size and nbytes > self.size:
            over.append(f"size={self.size} ({nbytes} bytes used)")
        return over

    def check_open(self, open_now: int, privileged: bool, mine: int = 0) -> None:
        """Whether one more file fits beside ``open_now``, ``mine`` of them
        the caller's (its uid's; counted for users only).

        Raises:
            DeviceError: ``ENFILE`` past ``nr_files`` (less root's reserve
                for a user), ``EMFILE`` past a user's share.
        """
        n = self.nr_files
        if not n:
            return
        if privileged:
            if open_now >= n:
                raise DeviceError(errno.ENFILE)
            return
        users = max(1, n * (100 - self.reserve) // 100)
        if open_now >= users:
            raise DeviceError(errno.ENFILE)
        if mine >= self.share_of(users):
            raise DeviceError(errno.EMFILE, "this user's share of nr_files")


def _number(key: str, text: str) -> int:
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise ValueError(f"{key}={text}")
    return int(m.group(1)) * _SCALE[m.group(2).lower()]


def split_options(options: list[str]) -> tuple[Limits, list[str]]:
    """Take ``nr_inodes=``, ``size=``, ``reserve=``, ``nr_files=`` and ``share=`` out of ``-o`` options.

    Args:
        options: the ``-o`` arguments, each comma-separated.

    Returns:
        The limits and the remaining options (for FUSE).

    Raises:
        ValueError: a bad value; ``str()`` is the ``key=value``.
    """
    vals = {
        "nr_inodes": DEFAULT_NR_INODES,
        "size": DEFAULT_SIZE,
        "reserve": DEFAULT_RESERVE,
        "nr_files": DEFAULT_NR_FILES,
        "share": DEFAULT_SHARE,
    }
    rest: list[str] = []
    for o in options:
        kept = []
        for x in o.split(","):
            key, eq, value = x.partition("=")
            if eq and key in vals:
                vals[key] = _number(key, value)
            else:
                kept.append(x)
        if any(kept):
            rest.append(",".join(k for k in kept if k))
    if vals["reserve"] > 50:
        raise ValueError(f"reserve={vals['reserve']}")
    if not 1 <= vals["share"] <= 100:
        raise ValueError(f"share={vals['share']}")
    return Limits(vals["nr_inodes"], vals["size"], vals["reserve"], vals["nr_files"], vals["share"]), rest
