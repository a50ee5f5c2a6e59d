"""The tree's limits against a user filling it, through a real mount:
user nobody, in a 1777 directory, makes symbolic links with 4,095-byte
targets (or FIFOs) until ENOSPC; root can still make nodes; the daemon's
memory, descriptors and state stay bounded."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.cdevsw import makedev
from devfsd.limits import DEFAULT_SIZE
from devfsd.testing.mount import DevfsdMount
from tests.reliability.test_load import daemon_usage

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
#: Makes nodes in argv[1] until an error; prints how many and the errno.
FILLER = textwrap.dedent(
    """
    import errno, os, sys
    d, kind, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    target = "t" * 4095
    n = 0
    while n < 1_000_000:
        try:
            if kind == "symlink":
                os.symlink(target, f"{d}/s{prefix}{n}")
            else:
                os.mkfifo(f"{d}/f{prefix}{n}")
        except OSError as e:
            print(n, errno.errorcode[e.errno])
            break
        n += 1
    """
)


def state_size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def fill_as_nobody(pub: Path, kind: str, prefix: str) -> tuple[int, str]:
    r = subprocess.run(
        [*AS_NOBODY, os.path.realpath(sys.executable), "-c", FILLER, str(pub), kind, prefix],
        capture_output=True,
        timeout=120,
        check=True,
    )
    n, err = r.stdout.split()
    return int(n), err.decode()


@pytest.mark.parametrize(
    ("args", "kind"),
    [([], "symlink"), (["-o", "nr_inodes=3000"], "fifo")],
    ids=["default-size-symlinks", "nr_inodes-fifos"],
)
def test_a_user_cannot_fill_the_tree(args: list[str], kind: str, figures: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        with DevfsdMount(base, args=args) as m:
            assert m.proc is not None
            pub = m.path / "pub"
            pub.mkdir()
            os.chmod(pub, 0o1777)
            rss0, fds0 = daemon_usage(m)
            st0 = state_size(m.state)
            n, err = fill_as_nobody(pub, kind, "a")
            assert err == "ENOSPC" and n > 100
            rss1, fds1 = daemon_usage(m)
            st1 = state_size(m.state)
            # Still full for users; root still makes nodes (its reserve).
            assert fill_as_nobody(pub, kind, "b") == (0, "ENOSPC")
            os.mknod(pub / "root-node", stat.S_IFCHR | 0o600, makedev(2, 2))
            os.mknod(m.path / "root-null", stat.S_IFCHR | 0o666, makedev(2, 2))
            os.mkdir(m.path / "root-dir")
            vfs = os.statvfs(m.path)
            if kind == "symlink":
                os.symlink("t" * 4095, m.path / "root-link")
                assert vfs.f_blocks == DEFAULT_SIZE // 4096 and vfs.f_bavail == 0 < vfs.f_bfree
            else:
                # FUSE carries no f_favail (statvfs copies f_ffree): the reserve shows free.
                assert vfs.f_files == 3000 and 0 < vfs.f_ffree <= 150
            m.client().ping()
            # Users freeing their nodes make room again.
            for name in sorted(os.listdir(pub))[:10]:
                if name.startswith(("s", "f")):
                    os.unlink(pub / name)
            n2, _ = fill_as_nobody(pub, kind, "c")
            assert 1 <= n2 <= 10
            figures.update(
                {
                    "nodes_made_by_nobody": n,
                    "rss_mb_before": round(rss0 / 1024, 1),
                    "rss_mb_after": round(rss1 / 1024, 1),
                    "fds_before": fds0,
                    "fds_after": fds1,
                    "state_kb_before": st0 // 1024,
                    "state_kb_after": st1 // 1024,
                }
            )
            assert fds1 <= fds0 + 2
            assert rss1 - rss0 < 48 * 1024, (rss0, rss1)  # kB; 20,000 such links took 91 MB
            assert st1 < 32 << 20
