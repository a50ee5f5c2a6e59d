"""One user cannot take every other user's sleepers or open files (``-o share``).

Through a real mount, as real users: nobody (uid 65534) parks blocking
reads on a msgq node until ``EAGAIN`` (in process, and isolated: the
daemon's side of each call sleeps as its caller), or opens a node until
``EMFILE``, and stops at its share; uid 65533 and root still sleep and
open; when nobody's process is killed (its reads interrupted, its files
closed), its share comes back whole.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.deadline import deadline

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "modules")
NOBODY, OTHER, ROOT = 65534, 65533, 0
#: ``-o share=1``: a user's sleepers, 1 % of 4,000 less root's 200.
SLEEPER_SHARE = 38
#: ``-o nr_files=1000,share=2``: a user's open files, 2 % of 950.
FILE_SHARE = 19
WAIT = 60.0

#: Opens argv[2] argv[1] times and reads each in a thread of its own; a
#: read that fails prints its errno's name (one that sleeps prints nothing).
READERS = textwrap.dedent(
    """
    import errno, os, sys, threading
    n, path = int(sys.argv[1]), sys.argv[2]
    fds = [os.open(path, os.O_RDONLY) for _ in range(n)]
    threading.stack_size(256 * 1024)
    def read(fd):
        try:
            os.read(fd, 64)
            print("read", flush=True)
        except OSError as e:
            print(errno.errorcode[e.errno], flush=True)
    for fd in fds:
        threading.Thread(target=read, args=(fd,), daemon=True).start()
    sys.stdin.read()
    """
)
#: Opens argv[1] until open(2) fails; prints how many and the errno's name.
OPENER = textwrap.dedent(
    """
    import errno, os, sys
    fds, err = [], "none"
    while len(fds) < 100000:
        try:
            fds.append(os.open(sys.argv[1], os.O_RDONLY))
        except OSError as e:
            err = errno.errorcode[e.errno]
            break
    print(len(fds), err, flush=True)
    sys.stdin.read()
    """
)


@contextlib.contextmanager
def run_as(uid: int, *argv: str) -> Iterator[subprocess.Popen[str]]:
    """This Python running ``argv`` as ``uid`` (and gid), killed on exit."""
    who = [] if uid == ROOT else ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    with subprocess.Popen(
        [*who, os.path.realpath(sys.executable), "-c", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            yield p
        finally:
            kill(p)


def kill(p: subprocess.Popen[str]) -> None:
    """SIGKILL ``p``: its reads asleep are interrupted, its files closed."""
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGKILL)
    p.wait(timeout=WAIT)


def line(p: subprocess.Popen[str], what: str) -> str:
    assert p.stdout is not None
    with deadline(WAIT, what):
        return p.stdout.readline().strip()


@pytest.fixture(params=["in-process", "isolated"])
def isolate(request: pytest.FixtureRequest) -> list[str]:
    return ["--isolate"] if request.param == "isolated" else []


def msgq_node(m: DevfsdMount) -> Path:
    c = m.client()
    c.modload("msgq")
    maj = {n: mj for n, mj, _ in c.drivers()}["msgq"]
    q = m.path / "q"
    os.mknod(q, stat.S_IFCHR | 0o666, makedev(maj, 0))
    return q


@pytest.fixture
def base() -> Iterator[str]:
    """A directory for the mount other users can reach (pytest's tmp_path is 0700)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        os.chmod(d, 0o755)
        yield d


def test_one_user_cannot_take_every_sleeper(base: str, isolate: list[str]) -> None:
    """nobody's reads stop at its share with ``EAGAIN``; uid 65533's and
    root's still sleep; killed, nobody's sleeps give their places back."""
    with DevfsdMount(base, modpath=[MODS], args=["-o", "share=1", *isolate]) as m:
        q = msgq_node(m)
        c = m.client()

        def asleep(n: int) -> None:
            wait_for(lambda: c.status()["sleepers"] == n, WAIT, f"{n} readers asleep", 0.05)

        with run_as(NOBODY, READERS, str(SLEEPER_SHARE + 1), str(q)) as a:
            assert line(a, "nobody's read past its share") == "EAGAIN"
            asleep(SLEEPER_SHARE)
            with run_as(OTHER, READERS, "5", str(q)) as b, run_as(ROOT, READERS, "3", str(q)) as r:
                asleep(SLEEPER_SHARE + 8)
                kill(a)  # its reads interrupted: its places back
                asleep(8)
                with run_as(NOBODY, READERS, str(SLEEPER_SHARE + 1), str(q)) as a2:
                    assert line(a2, "nobody's read past its share again") == "EAGAIN"
                    asleep(SLEEPER_SHARE + 8)
                for p in (b, r):
                    kill(p)
                asleep(0)


def test_one_user_cannot_take_every_open_file(base: str) -> None:
    """nobody opens a node until ``EMFILE`` at its share of ``nr_files``;
    uid 65533 still opens its share, root more; killed, nobody's files
    are closed and its share is whole again."""
    with DevfsdMount(base, args=["-o", "nr_files=1000,share=2"]) as m:
        c = m.client()
        c.modload("mm")
        null = m.path / "null"
        os.mknod(null, stat.S_IFCHR | 0o666, makedev(2, 2))
        with run_as(NOBODY, OPENER, str(null)) as a:
            assert line(a, "nobody's opens") == f"{FILE_SHARE} EMFILE"
            with run_as(OTHER, OPENER, str(null)) as b:
                assert line(b, "uid 65533's opens") == f"{FILE_SHARE} EMFILE"
                fds = [os.open(null, os.O_RDONLY) for _ in range(100)]  # root: no share
                for fd in fds:
                    os.close(fd)
                kill(a)
                wait_for(lambda: c.status()["open_files"] == FILE_SHARE, WAIT, "nobody's files closed")
                with run_as(NOBODY, OPENER, str(null)) as a2:
                    assert line(a2, "nobody's opens again") == f"{FILE_SHARE} EMFILE"
        wait_for(lambda: c.status()["open_files"] == 0, WAIT, "every file closed")
