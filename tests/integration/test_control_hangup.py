"""A control request whose client goes is cancelled, behind a real mount.

tests/modules/slowinit's INIT never ends: a modload of it held the
loader's lock for ever, and every later modload, modunload and autoload
waited, even after the admin's ^C. Now ^C ends modload(8) (killed by
SIGINT, as NetBSD's), the daemon cancels the request (and says so), and
nothing of the module is left: no modstat row, no driver attached, no
loading mark in the state, no host process, no cgroup. A client that only
half-closed, or that sends its next request meanwhile, is answered. Every
test runs in process and with ``--isolate`` (each module in a host).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import termios
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.cdevsw import IO, makedev
from devfsd.control.client import Client
from devfsd.control.protocol import Framer, encode
from devfsd.state import StateStore
from devfsd.testing.mount import DevfsdMount, tool, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: Bound on every wait (a modload, a host's end, a log line).
WAIT = 20.0
CANCELLED = "control request 'modload' of 'slowinit' (pid {}) cancelled: its client went"


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    """A daemon whose modules run in process, or each in a host of its own
    (``--isolate``; with a memory limit, so a cgroup where the machine has one)."""
    isolate = ["--isolate", "--host-memlimit", "300m"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path / "d", modpath=[MODS], args=["--debug", *isolate]) as m:
        yield m


def isolated(m: DevfsdMount) -> bool:
    return "--isolate" in m.args


def in_init(marker: Path) -> int:
    """Wait until slowinit's INIT runs (it writes ``marker``); its process id."""
    wait_for(marker.exists, WAIT, "slowinit's INIT")
    return int(marker.read_text())


@contextlib.contextmanager
def running(m: DevfsdMount, name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Tool ``name`` running against ``m``; killed, if it still runs, at the end."""
    argv = [tool(name), *args]
    with subprocess.Popen(argv, env=m.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()


def interrupt(p: subprocess.Popen[bytes]) -> None:
    """The admin's ^C: the tool is killed by SIGINT, with no traceback (as NetBSD's)."""
    p.send_signal(signal.SIGINT)
    assert p.wait(WAIT) == -signal.SIGINT
    assert p.stderr is not None
    assert p.stderr.read() == b""


def modstat_names(m: DevfsdMount) -> list[str]:
    return [r["name"] for r in Client(m.control, timeout=WAIT).modstat()["modules"]]


def attached(m: DevfsdMount, driver: str) -> bool:
    return any(a for n, _, a in Client(m.control, timeout=WAIT).drivers() if n == driver)


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_modload_interrupted_in_an_init_that_never_ends_leaves_nothing(
    mnt: DevfsdMount, tmp_path: Path
) -> None:
    marker = tmp_path / "in-init"
    with running(mnt, "modload", "-s", f"marker={marker}", "slowinit") as p:
        pid = in_init(marker)
        assert (pid != mnt.proc.pid) if isolated(mnt) else (pid == mnt.proc.pid)  # type: ignore[union-attr]
        cgroup = rf"module slowinit: host {pid}: memory limit \d+ bytes by cgroup v\d (\S+)"
        cg = re.search(cgroup, mnt.log_text())
        # INIT's attach, before its wait (isolated: in its host; the daemon
        # attaches a proxy once INIT has returned).
        assert attached(mnt, "slowinit") is not isolated(mnt)
        interrupt(p)
    wait_for(lambda: CANCELLED.format(p.pid) in mnt.log_text(), WAIT, "the daemon to log the cancel")
    # The loader's lock is free: another module loads, and unloads, at once.
    c = Client(mnt.control, timeout=WAIT)
    c.modload("msgq")
    assert "msgq" in modstat_names(mnt)
    c.modunload("msgq")
    assert "slowinit" not in modstat_names(mnt)
    assert not attached(mnt, "slowinit")
    if isolated(mnt):
        assert gone(pid), "the host outlived its cancelled load"  # reaped before the lock went
        if cg is not None:
            assert not Path(cg[1]).exists(), "the host's cgroup outlived it"
    # Nothing in the way of loading it again.
    hold = tmp_path / "hold"
    hold.touch()
    again = tmp_path / "again"
    with running(mnt, "modload", "-s", f"marker={again}", "-s", f"hold={hold}", "slowinit") as p:
        in_init(again)
        hold.unlink()
        assert p.wait(WAIT) == 0
    assert "slowinit" in modstat_names(mnt)


def test_a_cancelled_modload_is_remembered_nowhere(mnt: DevfsdMount, tmp_path: Path) -> None:
    # No loading mark left behind (the next start would quarantine the
    # module), no module row: seen after kill -9, which clears nothing.
    marker = tmp_path / "in-init"
    with running(mnt, "modload", "-s", f"marker={marker}", "slowinit") as p:
        in_init(marker)
        interrupt(p)
    wait_for(lambda: CANCELLED.format(p.pid) in mnt.log_text(), WAIT, "the daemon to log the cancel")
    assert_nothing_remembered(mnt)


def assert_nothing_remembered(m: DevfsdMount) -> None:
    """Kill ``m``'s daemon (kill -9 clears nothing) and check its state
    directory: no module row, no loading mark, nothing quarantined."""
    assert m.proc is not None
    m.proc.kill()
    m.proc.wait(WAIT)
    store = StateStore(str(m.state))
    try:
        assert store.crashed == []
        assert store.quarantined() == []
        assert store.modules() == []
    finally:
        store.close()


def test_a_modload_waiting_behind_a_hung_one_can_be_interrupted_too(mnt: DevfsdMount, tmp_path: Path) -> None:
    marker = tmp_path / "in-init"
    with running(mnt, "modload", "-s", f"marker={marker}", "slowinit") as hung:
        in_init(marker)
        with raw(mnt) as s:  # a second modload: waits for the loader's lock
            s.sendall(encode({"op": "modload", "module": "msgq", "props": {}}))
            wait_for(lambda: unread(s) == 0, WAIT, "the daemon to read the second modload")
        said = CANCELLED.replace("slowinit", "msgq").format(os.getpid())
        wait_for(lambda: said in mnt.log_text(), WAIT, "its cancel")
        assert hung.poll() is None  # the first still waits, in INIT
        interrupt(hung)
    wait_for(lambda: CANCELLED.format(hung.pid) in mnt.log_text(), WAIT, "the first's cancel")
    assert "msgq" not in modstat_names(mnt)
    Client(mnt.control, timeout=WAIT).modload("msgq")


def test_modunload_interrupted_in_fini_keeps_the_module(mnt: DevfsdMount, tmp_path: Path) -> None:
    fini, hold = tmp_path / "in-fini", tmp_path / "hold"
    c = Client(mnt.control, timeout=WAIT)
    c.modload("slowinit", {"hold": str(hold), "fini": str(fini)})  # no hold yet: INIT returns
    hold.touch()
    with running(mnt, "modunload", "slowinit") as p:
        in_init(fini)
        interrupt(p)
    said = f"control request 'modunload' of 'slowinit' (pid {p.pid}) cancelled: its client went"
    wait_for(lambda: said in mnt.log_text(), WAIT, "the daemon to log the cancel")
    assert "slowinit" in modstat_names(mnt)  # kept, as when FINI fails
    assert attached(mnt, "slowinit")
    c.modload("msgq")  # the lock is free
    hold.unlink()
    c.modunload("slowinit")  # its FINI runs again, to the end this time
    assert "slowinit" not in modstat_names(mnt)


def unread(s: socket.socket) -> int:
    """Bytes ``s`` sent that its peer has not read yet (``SIOCOUTQ``)."""
    got = fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4)
    return int(struct.unpack("i", got)[0])


def raw(m: DevfsdMount) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT)
    s.connect(m.control)
    return s


def read_replies(s: socket.socket, n: int) -> list[dict[str, Any]]:
    framer, out = Framer(), list[dict[str, Any]]()
    while len(out) < n:
        while (msg := framer.next_message()) is not None:
            out.append(msg)
        if len(out) < n:
            data = s.recv(65536)
            assert data, f"the daemon closed the connection after {out}"
            framer.feed(data)
    return out


def slow_request(tmp_path: Path) -> tuple[bytes, Path, Path]:
    """A modload of slowinit whose INIT waits while ``hold`` exists; (request, marker, hold)."""
    marker, hold = tmp_path / "in-init", tmp_path / "hold"
    hold.touch()
    req = encode({"op": "modload", "module": "slowinit", "props": {"marker": str(marker), "hold": str(hold)}})
    return req, marker, hold


def test_a_half_closed_client_still_gets_its_reply(mnt: DevfsdMount, tmp_path: Path) -> None:
    req, marker, hold = slow_request(tmp_path)
    with raw(mnt) as s:
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)  # said all it has to say; waits for the answer
        in_init(marker)
        hold.unlink()
        assert read_replies(s, 1) == [{"ok": True, "result": None}]
    assert "slowinit" in modstat_names(mnt)
    assert "its client went" not in mnt.log_text()


def test_a_pipelined_request_is_answered(mnt: DevfsdMount, tmp_path: Path) -> None:
    req, marker, hold = slow_request(tmp_path)
    with raw(mnt) as s:
        s.sendall(req + encode({"op": "modstat", "module": "slowinit"}))
        in_init(marker)
        hold.unlink()
        got = read_replies(s, 2)
    assert got[0] == {"ok": True, "result": None}
    rows = got[1]["result"]["modules"]
    assert [r["name"] for r in rows] == ["slowinit"], json.dumps(got)
    assert "its client went" not in mnt.log_text()


def test_an_ioctl_asleep_in_its_driver_ends_with_its_client(mnt: DevfsdMount) -> None:
    # msgq's MSGQ_WAIT sleeps until a message waits: its caller, gone, no
    # longer keeps a sleeper in the driver.
    c = Client(mnt.control, timeout=WAIT)
    c.modload("msgq")
    maj = {n: mj for n, mj, _ in c.drivers()}["msgq"]
    q = mnt.path / "q"
    os.mknod(q, stat.S_IFCHR | 0o666, makedev(maj, 0))
    with raw(mnt) as s:
        s.sendall(encode({"op": "ioctl", "path": str(q), "cmd": IO(ord("m"), 3), "data": ""}))
        wait_for(lambda: c.status()["sleepers"] >= 1, WAIT, "the ioctl to sleep in msgq")
    said = f"control request 'ioctl' (pid {os.getpid()}) cancelled: its client went"
    wait_for(lambda: said in mnt.log_text(), WAIT, "the daemon to log the cancel")
    wait_for(lambda: c.status()["sleepers"] == 0, WAIT, "the sleeper to go")
    with open(q, "r+b", buffering=0) as f:  # the queue works on
        f.write(b"after")
        assert f.read(10) == b"after"
    c.modunload("msgq")
