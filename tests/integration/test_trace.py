"""``devfsd trace`` on a real mount: real processes, real tracers.

Every tracer is a ``TraceRun`` (stopped on the way out, also on failure);
waits are on state with a deadline: the daemon's tracer count, the lines
that have arrived.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from typing import TYPE_CHECKING

import pytest

from devfsd.control.protocol import StreamEnded, StreamItems, decode_trace_event
from devfsd.testing.mount import run, wait_for
from devfsd.testing.trace import DROPPED, TraceRun

if TYPE_CHECKING:
    from collections.abc import Callable

    from devfsd.testing.mount import DevfsdMount
    from devfsd.testing.plugin import MountFactory

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

DEADLINE = 20.0
#: mm's zero and full minors; crandom's reserved major.
ZERO, FULL = 12, 11


@pytest.fixture(params=["in-process", "isolated"])
def mnt(devfsd_mount: MountFactory, request: pytest.FixtureRequest) -> DevfsdMount:
    """mm and crandom in process, or each in a host of its own (``--isolate``)."""
    return devfsd_mount(
        modules=["mm", "crandom"],
        nodes={"zero": ("mm", ZERO), "full": ("mm", FULL), "crandom": ("crandom", 0)},
        args=["--isolate"] if request.param == "isolated" else [],
    )


def calls(t: TraceRun, pid: int) -> list[tuple[str, dict[str, str], str]]:
    return [(e.call, e.args, e.result) for e in t.parsed() if e.pid == pid]


def has_close(pid: int) -> Callable[[TraceRun], bool]:
    return lambda t: any(e.call == "close" and e.pid == pid for e in t.parsed())


def sh(cmd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    out, err = p.communicate(timeout=DEADLINE)
    return p.returncode, out, err


def test_echo_and_head_on_crandom(mnt: DevfsdMount) -> None:
    node = mnt.path / "crandom"
    with TraceRun(mnt, [str(node)]) as t:
        w = sh(f"printf hello > {node}")
        assert finish(w)[0] == 0
        r = subprocess.Popen(["head", "-c", "5", str(node)], stdout=subprocess.PIPE)
        out, _ = r.communicate(timeout=DEADLINE)
        assert sorted(out) == sorted(b"hello")
        t.wait(has_close(r.pid), DEADLINE, "head's close")
        t.wait(has_close(w.pid), DEADLINE, "sh's close")
        assert t.stop() == 0
    assert calls(t, w.pid) == [
        ("open", {"flags": "FWRITE"}, "0"),
        ("write", {"asked": "5", "moved": "5"}, "0"),
        ("close", {"flags": "FWRITE"}, "0"),
    ]
    got = calls(t, r.pid)
    assert got[0] == ("open", {"flags": "FREAD"}, "0")
    assert got[1][0] == "read" and got[1][1]["moved"] == "5" and int(got[1][1]["asked"]) >= 5
    assert got[-1] == ("close", {"flags": "FREAD"}, "0")
    lines = t.parsed()
    assert {(e.major, e.minor) for e in lines} == {(420, 0)}
    assert {e.pid for e in lines} == {w.pid, r.pid}
    assert t.errors == []


def test_failing_calls_show_their_errno(mnt: DevfsdMount) -> None:
    crandom, full = mnt.path / "crandom", mnt.path / "full"
    with TraceRun(mnt, ["-m", "mm", "-c", mnt.control]) as tm, TraceRun(mnt, [str(crandom)]) as tc:
        r = subprocess.run(["head", "-c", "1", str(crandom)], capture_output=True, check=False)
        assert r.returncode == 1  # nothing written yet: EINVAL
        w = sh(f"printf abc > {full}")
        rc, _, err = finish(w)
        assert rc != 0, err
        tm.wait(has_close(w.pid), DEADLINE, "the close of full")
        tc.wait(lambda t: any(e.result == "EINVAL" for e in t.parsed()), DEADLINE, "crandom's EINVAL")
    (failed_read,) = [e for e in tc.parsed() if e.call == "read"]
    assert failed_read.args["moved"] == "0" and failed_read.result == "EINVAL"
    writes = [e for e in tm.parsed() if e.call == "write"]
    assert [(e.pid, e.minor, e.args, e.result) for e in writes] == [
        (w.pid, FULL, {"asked": "3", "moved": "0"}, "ENOSPC")
    ]
    # Each tracer saw its own device only.
    assert {e.major for e in tm.parsed()} == {2}
    assert {e.major for e in tc.parsed()} == {420}


def test_poll_and_open_flags(mnt: DevfsdMount) -> None:
    zero = mnt.path / "zero"
    with TraceRun(mnt, ["-n", "2", str(zero)]) as t:
        fd = os.open(zero, os.O_RDONLY | os.O_NONBLOCK)
        try:
            p = select.poll()
            p.register(fd, select.POLLIN)
            assert p.poll(DEADLINE * 1000) == [(fd, select.POLLIN)]
        finally:
            os.close(fd)
        assert t.join() == 0
    opened, polled = t.parsed()
    assert (opened.call, opened.args) == ("open", {"flags": "FREAD|FNONBLOCK"})
    assert polled.call == "poll" and polled.result == "0"
    assert "POLLIN" in polled.args["events"].split("|")
    assert "POLLIN" in polled.args["revents"].split("|")


def test_count_ends_the_trace(mnt: DevfsdMount) -> None:
    zero = mnt.path / "zero"
    with TraceRun(mnt, ["-n", "3", str(zero)]) as t:
        fd = os.open(zero, os.O_RDONLY)
        try:
            for size in (1, 2, 3, 4):
                assert os.read(fd, size) == bytes(size)
        finally:
            os.close(fd)
        assert t.join() == 0  # by itself, after the third event
    assert [(e.call, e.args) for e in t.parsed()] == [
        ("open", {"flags": "FREAD"}),
        ("read", {"asked": "1", "moved": "1"}),
        ("read", {"asked": "2", "moved": "2"}),
    ]
    assert all(e.pid == os.getpid() for e in t.parsed())
    wait_for(lambda: mnt.client().status()["tracers"] == 0, DEADLINE, "the tracer detached")


def test_stuck_tracer_drops_and_says_how_many(mnt: DevfsdMount) -> None:
    zero = mnt.path / "zero"
    n = 10000
    fd = os.open(zero, os.O_RDONLY)
    try:
        with TraceRun(mnt, ["-b", "16", str(zero)]) as t:
            assert t.proc is not None
            os.kill(t.proc.pid, signal.SIGSTOP)  # a tracer that does not read
            try:
                for _ in range(n):
                    os.read(fd, 1)  # never blocked by the stuck tracer
            finally:
                os.kill(t.proc.pid, signal.SIGCONT)

            def dropped(t: TraceRun) -> int:
                return sum(int(m[1]) for s in list(t.errors) if (m := DROPPED.match(s)))

            t.wait(lambda t: len(t.lines) + dropped(t) == n, DEADLINE, f"{n} reads shown or dropped")
            assert dropped(t) > 0
            assert t.stop() == 0
    finally:
        os.close(fd)
    reads = t.parsed()
    assert all(e.call == "read" and e.args == {"asked": "1", "moved": "1"} for e in reads)
    assert all(DROPPED.match(s) for s in t.errors), t.errors


def test_stream_accounting_when_the_client_never_reads(mnt: DevfsdMount) -> None:
    zero = mnt.path / "zero"
    n = 10000
    fd = os.open(zero, os.O_RDONLY)
    try:
        with mnt.client().trace(path=str(zero), buffer=8) as stream:
            stream.timeout = DEADLINE
            for _ in range(n):
                os.read(fd, 1)
            stream.stop()  # only now is anything read
            shown, dropped, end = [], 0, None
            for msg in stream:
                if isinstance(msg, StreamItems):
                    shown += [decode_trace_event(i) for i in msg.items]
                    dropped += msg.dropped
                else:
                    assert isinstance(msg, StreamEnded)
                    end = msg.result
    finally:
        os.close(fd)
    assert end == {"seen": n, "dropped": dropped}
    assert len(shown) + dropped == n and dropped > 0
    assert [e.time_ns for e in shown] == sorted(e.time_ns for e in shown)


def test_several_tracers_and_disconnect_leaves_the_daemon_serving(mnt: DevfsdMount) -> None:
    zero = mnt.path / "zero"
    with TraceRun(mnt, [str(zero)]) as a, TraceRun(mnt, ["-m", "mm", "-c", mnt.control]) as b:
        assert mnt.client().status()["tracers"] == 2
        r = subprocess.run(["head", "-c", "7", str(zero)], capture_output=True, check=False)
        assert r.stdout == bytes(7)
        for t in (a, b):
            t.wait(lambda t: any(e.call == "read" for e in t.parsed()), DEADLINE, "the read")
        assert a.stop(signal.SIGKILL) == -signal.SIGKILL  # gone without a word
        wait_for(lambda: mnt.client().status()["tracers"] == 1, DEADLINE, "the killed tracer detached")
        assert b.stop() == 0  # SIGINT: a clean end
    wait_for(lambda: mnt.client().status()["tracers"] == 0, DEADLINE, "both detached")
    with open(zero, "rb", buffering=0) as f:
        assert f.read(3) == bytes(3)
    mnt.client().modunload("crandom")


def test_errors(mnt: DevfsdMount, tmp_path: os.PathLike[str]) -> None:
    off = os.path.join(tmp_path, "plain")
    with open(off, "w"):
        pass
    cases = [
        ([off], f"devfsd trace: {off}: No such device"),
        ([str(mnt.path / "nope")], f"devfsd trace: {mnt.path}/nope: No such file or directory"),
        ([str(mnt.path)], f"devfsd trace: {mnt.path}: No such device"),
        (["-c", mnt.control, "-m", "nodriver"], "devfsd trace: nodriver: No such device or address"),
        (["-c", "/no.sock", "-m", "mm"], "devfsd trace: /no.sock: No such file or directory"),
        (["-c", mnt.control, off], f"devfsd trace: {off}: Invalid cross-device link"),
    ]
    for args, text in cases:
        r = run(["devfsd", "trace", *args], timeout=DEADLINE)
        assert (r.returncode, r.stdout, r.stderr.decode()) == (1, b"", text + "\n"), args
    for args in ([], ["-m", "mm", "x"], ["-n", "0", "x"], ["-b", "0", "x"], ["-x"]):
        r = run(["devfsd", "trace", *args], timeout=DEADLINE)
        assert r.returncode == 1 and "Usage: devfsd trace" in r.stderr.decode(), args
