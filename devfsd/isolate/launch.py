"""Starting a host as another user with a bounding set no wider than its module's.

``python -m devfsd.isolate.launch --user=UID:GID:GROUPS --caps=MASK
--status=FD -- HOST ARGV...``: started by the daemon as root (``hostproc``)
for a host that runs as another user (``-s user=NAME``). Still root, it
narrows its bounding set to ``MASK`` (its module's declared capabilities:
``confine.host_caps``), then sets its groups, gid and uid, and executes
the host's program as that user: the host's interpreter starts as the user
from its first instruction, as ``subprocess``'s ``user=`` would start it,
but with a bounding set it cannot widen (which takes ``CAP_SETPCAP``,
which root loses with its uid). Nothing but this module (``os``, ``sys``,
``ctypes``) runs as root here: nothing of the module's, nor the host's.

What fails is told the daemon as ``subprocess`` tells it a failed
``exec``: the launcher writes the errno (decimal) on descriptor ``FD``,
which the daemon reads to its end (an ``exec`` that succeeds closes it:
``O_CLOEXEC``), and exits 127. A daemon without ``CAP_SETPCAP`` cannot
narrow a bounding set: the host then keeps the one it has (it holds no
capability and has ``no_new_privs``, so it can gain none from it), as
before this launcher existed.

Also the bounding set's primitives (``last_cap``, ``bounding``,
``narrow_bounding``), which ``confine.drop_capabilities`` uses for root
hosts: here, so that the launcher imports nothing heavier than ``ctypes``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import Final

__all__ = ["bounding", "last_cap", "libc", "main", "narrow_bounding"]

PR_CAPBSET_READ: Final = 23
PR_CAPBSET_DROP: Final = 24


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def last_cap() -> int:
    """The kernel's highest capability number (``CAP_LAST_CAP``)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):  # no /proc: ask the bounding set, which knows every cap
        c, n = libc(), 0
        while n < 63 and c.prctl(PR_CAPBSET_READ, n + 1, 0, 0, 0) >= 0:
            n += 1
        return n


def bounding() -> int:
    """This thread's bounding set, as a mask."""
    c, mask = libc(), 0
    for i in range(last_cap() + 1):
        if c.prctl(PR_CAPBSET_READ, i, 0, 0, 0) == 1:
            mask |= 1 << i
    return mask


def narrow_bounding(keep: int) -> None:
    """Drop from this thread's bounding set every capability but ``keep``
    (a mask); it takes ``CAP_SETPCAP``.

    Raises:
        OSError: the errno of the first drop that failed (``EPERM``:
            no ``CAP_SETPCAP``).
    """
    c, have = libc(), bounding()
    for i in range(last_cap() + 1):
        if have >> i & 1 and not keep >> i & 1 and c.prctl(PR_CAPBSET_DROP, i, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"PR_CAPBSET_DROP cap {i}: {os.strerror(code)}")


def _become(user: str) -> None:
    """Set groups, gid and uid (``UID:GID:G1,G2``), in that order."""
    uid, gid, groups = user.split(":")
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setresgid(int(gid), int(gid), int(gid))
    os.setresuid(int(uid), int(uid), int(uid))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts = dict(a.removeprefix("--").split("=", 1) for a in args[: args.index("--")] if "=" in a)
    host = args[args.index("--") + 1 :]
    status = int(opts["status"])
    try:
        try:
            narrow_bounding(int(opts["caps"], 16))
        except OSError as exc:
            if exc.errno != errno.EPERM:  # EPERM: no CAP_SETPCAP; the host gains nothing all the same
                raise
        _become(opts["user"])
        os.set_inheritable(status, False)  # closed by the exec that succeeds
        os.execv(host[0], host)
    except OSError as exc:
        os.write(status, str(exc.errno or errno.EIO).encode())
        print(f"devfsd: host launcher: {exc}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
