"""Notice the daemon's own unmount from its mount namespace's mount table.

FUSE ends a session (pyfuse3.main returns) only when the kernel drops the
connection, and the kernel keeps it while any mount namespace holds a copy
of the mount: anything started with ``ip netns exec`` or ``unshare -m``, a
service with ``PrivateTmp=``, a container. ``umount`` in the daemon's own
namespace then removes the mount here and nothing else happens. So the
daemon watches ``/proc/self/mountinfo``: the kernel marks the open file
with ``POLLPRI`` whenever the namespace's mount table changes, and the
daemon then looks whether its mount (by mount ID, which a mount on top of
it or a ``mount --move`` does not change) is still there.

trio's ``wait_readable`` waits for ``EPOLLIN``, which mountinfo always
reports, so the file is put in an epoll set of its own that asks for
``EPOLLPRI`` only, and trio waits on that set's descriptor, which is
readable exactly when the table has changed.

``find_mount`` is pure (mountinfo text in, mount ID out).
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
from typing import Final

import trio

__all__ = ["MOUNTINFO", "find_mount", "mount_ids", "read_mountinfo", "wait_unmounted"]

log = logging.getLogger(__name__)

MOUNTINFO: Final = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_mount(text: str, mountpoint: str, fstype: str | None = None) -> int | None:
    """The ID of the last mount at ``mountpoint`` (of ``fstype``, if given) in ``text``.

    The last one is the one on top, the one a path lookup reaches.
    """
    found = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or _unescape(fields[4]) != mountpoint:
            continue
        if fstype is not None:
            try:
                sep = fields.index("-", 6)
            except ValueError:
                continue
            if fields[sep + 1 : sep + 2] != [fstype]:
                continue
        with contextlib.suppress(ValueError):
            found = int(fields[0])
    return found


def mount_ids(text: str) -> set[int]:
    """Every mount ID in mountinfo ``text``."""
    ids = set()
    for line in text.splitlines():
        with contextlib.suppress(ValueError, IndexError):
            ids.add(int(line.split(maxsplit=1)[0]))
    return ids


def read_mountinfo() -> str:
    """This namespace's mountinfo, undecodable bytes as ``os`` paths carry them."""
    with open(MOUNTINFO, "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


async def wait_unmounted(mount_id: int) -> None:
    """Return once mount ``mount_id`` has left this namespace's mount table."""
    # A procfs file: opening and reading it never blocks.
    with open(MOUNTINFO, "rb") as f, select.epoll() as ep:  # noqa: ASYNC230
        ep.register(f.fileno(), select.EPOLLPRI)
        while True:
            # Read after registering: a change between the two is seen
            # here, one after it wakes the wait.
            f.seek(0)
            if mount_id not in mount_ids(f.read().decode(errors="replace")):
                return
            await trio.lowlevel.wait_readable(ep.fileno())
            ep.poll(0)  # take the event, if the wake-up left it there
