"""The tree's limits against a user filling it, through a real mount:
user nobody, in a 1777 directory, makes symbolic links with 4,095-byte
targets (or FIFOs) until ENOSPC; root can still make nodes; the daemon's
memory, descriptors and state stay bounded. And ``nr_files``: nobody
opening files until ENFILE, the daemon's memory bounded."""

from __future__ import annotations

import errno
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
from devfsd.testing.mount import DevfsdMount, wait_for
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


#: Opens argv[2:] over and over (directories with O_DIRECTORY), up to
#: argv[1] files, until an error; prints how many and the errno, then
#: holds them open until its stdin ends.
OPENER = textwrap.dedent(
    """
    import errno, os, resource, sys
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    most, paths = int(sys.argv[1]), sys.argv[2:]
    fds, err = [], "none"
    while len(fds) < most:
        p = paths[len(fds) % len(paths)]
        try:
            fds.append(os.open(p, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(p) else 0)))
        except OSError as e:
            err = errno.errorcode[e.errno]
            break
    print(len(fds), err, flush=True)
    sys.stdin.read()
    """
)


def test_a_user_cannot_spend_the_daemons_memory_on_open_files(figures: dict[str, Any]) -> None:
    """nobody opens a 3,000-entry directory and a device node over and
    over: ENFILE at the users' part of ``nr_files`` (``share=100``: one
    user may hold all of it, for the most the daemon holds; tests/integration/
    test_user_shares.py has one user stopped at its share); root still opens; the
    daemon's memory stays within a few MB (an open directory used to
    copy its entries: ~64 B an entry per open, ~300 MB here)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        with DevfsdMount(base, args=["-o", "nr_files=3000,share=100"]) as m:
            big = m.path / "big"
            big.mkdir()
            for i in range(3000):
                os.mkfifo(big / f"p{i:04d}", 0o600)
            m.client().modload("mm")
            null = m.path / "null"
            os.mknod(null, stat.S_IFCHR | 0o666, makedev(2, 2))
            rss0, _ = daemon_usage(m)
            with subprocess.Popen(
                [*AS_NOBODY, os.path.realpath(sys.executable), "-c", OPENER, "100000", str(big), str(null)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as nobody:
                try:
                    assert nobody.stdout is not None
                    n, err = nobody.stdout.readline().split()
                    rss1, _ = daemon_usage(m)
                    assert (int(n), err) == (3000 * 95 // 100, "ENFILE")
                    # Root's reserve: root still opens, to the limit.
                    fds = [os.open(big, os.O_RDONLY | os.O_DIRECTORY)]
                    fds += [os.open(null, os.O_RDONLY) for _ in range(3000 - int(n) - 1)]
                    with pytest.raises(OSError) as ei:
                        os.open(null, os.O_RDONLY)
                    assert ei.value.errno == errno.ENFILE
                    os.close(fds.pop())
                    assert len(os.listdir(big)) == 3000  # the directory is read whole
                    for fd in fds:
                        os.close(fd)
                finally:
                    nobody.communicate(timeout=30)
            # Closed: room again for nobody.
            r = subprocess.run(
                [*AS_NOBODY, os.path.realpath(sys.executable), "-c", OPENER, "10", str(null)],
                input="",
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert r.stdout.split() == ["10", "none"]
            figures.update({"opened_by_nobody": int(n), "rss_kb_before": rss0, "rss_kb_after": rss1})
            assert rss1 - rss0 < 16 * 1024, (rss0, rss1)  # kB


def test_a_tree_restored_over_smaller_limits_is_served_whole(tmp_path: Path) -> None:
    """A state made under larger limits (50 FIFOs), started with
    ``nr_inodes=20,size=8k``: nothing is lost, the log says once which
    limits the tree passes, ``df`` shows it full, nothing adds to it, not
    even root's mkfifo, until unlinks bring it back under; then it grows."""
    with DevfsdMount(tmp_path) as m:
        for i in range(50):
            os.mkfifo(m.path / f"f{i:02d}")
    with DevfsdMount(tmp_path, args=["-o", "nr_inodes=20,size=8k"]) as m:
        said = (
            "the tree restored is over its limits, nr_inodes=20 (51 used), size=8192 (16406 bytes used):"
            " every node is kept; calls that add to it fail ENOSPC until it is back under"
        )
        assert said in m.log_text(), m.log_text()
        assert len(os.listdir(m.path)) == 50
        vfs = os.statvfs(m.path)
        assert (vfs.f_files, vfs.f_ffree, vfs.f_blocks, vfs.f_bfree, vfs.f_bavail) == (20, 0, 2, 0, 0)
        for i in range(31):
            with pytest.raises(OSError) as ei:
                os.mkfifo(m.path / "new")
            assert ei.value.errno == errno.ENOSPC
            os.unlink(m.path / f"f{i:02d}")
        assert os.statvfs(m.path).f_ffree == 0  # 20 of 20
        with pytest.raises(OSError):
            os.mkfifo(m.path / "new")
        os.unlink(m.path / "f31")
        # Freed at the kernel's FORGET of the unlinked inodes, which may come later.
        wait_for(lambda: os.statvfs(m.path).f_ffree == 1, 5, "room for one inode")
        os.mkfifo(m.path / "new")
        assert m.log_text().count("the tree restored is over its limits") == 1
