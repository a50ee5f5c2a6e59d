"""Whatever a driver raises or returns, through a real mount: an errno, never the daemon's end.

tests/modules/raiser raises what it is told (a property, or ``raise.json``
beside it for the import). For each kind of exception at import, in INIT
and in ``d_read``, the caller sees the errno (``EIO``, ``ENOEXEC`` for an
import, the driver's own for a ``DeviceError``), another driver's node
(msgq) keeps working, and the daemon is still the same live process. Its
own SIGINT still ends it cleanly (``test_sigint_still_stops_the_daemon``).

Every test on the shared daemon runs both ways: with the drivers in
process, and isolated (``devfsd --isolate``: each in a module host, where
the host contains the fault and answers the errno). A driver's ``ENOSYS``
from ``d_open`` or ``d_poll`` must not reach FUSE as such: the kernel would
take it for "no such operation" and stop sending OPEN or POLL for the
whole mount (``assert_serving`` sees that on the bystander's node).
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, is_mounted, wait_for
from tests.reliability.test_load import daemon_usage

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"

#: Each kind of fault, and the errno it gives outside an import.
KINDS = {
    "SystemExit": errno.EIO,
    "KeyboardInterrupt": errno.EIO,
    "GeneratorExit": errno.EIO,
    "BaseExceptionGroup": errno.EIO,
    "ExceptionGroup-EPERM": errno.EPERM,
    "BaseException": errno.EIO,
    "RecursionError": errno.EIO,
    "BadErrno": errno.EIO,
    "DeviceError-EPERM": errno.EPERM,
    "DeviceError-ENOSYS": errno.ENOSYS,
    "Cancelled": errno.EIO,
}


class Daemon:
    """One devfsd with a msgq node (the bystander) and a raiser node."""

    def __init__(self, m: DevfsdMount) -> None:
        self.m = m
        assert m.proc is not None
        self.pid = m.proc.pid
        c = m.client()
        c.modload("msgq")
        majors = {n: mj for n, mj, _ in c.drivers()}
        self.q = m.path / "q0"
        os.mknod(self.q, stat.S_IFCHR | 0o666, makedev(majors["msgq"], 0))

    def node(self) -> Path:
        """The raiser node (its major exists once raiser attached once)."""
        p = self.m.path / "r0"
        if not p.exists():
            majors = {n: mj for n, mj, _ in self.m.client().drivers()}
            os.mknod(p, stat.S_IFCHR | 0o666, makedev(majors["raiser"], 0))
        return p

    def assert_serving(self) -> None:
        """The same daemon, and another driver's node and the tree still work."""
        assert self.m.proc is not None and self.m.proc.poll() is None, self.m.log_text()[-3000:]
        assert self.m.proc.pid == self.pid
        with open(self.q, "r+b", buffering=0) as f:
            # Its poll still reaches msgq: nothing queued is not ready.
            p = select.poll()
            p.register(f, select.POLLIN)
            assert p.poll(0) == []
            f.write(b"still")
            assert p.poll(0) == [(f.fileno(), select.POLLIN)]
            assert f.read(10) == b"still"
        self.m.client().ping()
        assert is_mounted(self.m.path)


@pytest.fixture(scope="module", params=["in-process", "isolated"])
def daemon(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    base = tmp_path_factory.mktemp("contain")
    mods = base / "mods"
    shutil.copytree(MODS / "raiser", mods / "raiser")
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(base, modpath=[mods, MODS], args=isolate) as m:
        d = Daemon(m)
        before = daemon_usage(m)
        yield d
        # Every fault above, and no descriptor kept (RSS only reported).
        # An isolated module's host is reaped just after its modunload
        # returns (its socket, pidfd, stderr pipe and shared buffer close then).
        wait_for(lambda: daemon_usage(m)[1] <= before[1] + 1, 10, "the last host's descriptors closed")
        after = daemon_usage(m)
        print(f"\ncontainment: daemon (VmRSS kB, fds) before {before}, after {after}")
        assert after[1] <= before[1] + 1


def load_errno(d: Daemon, props: dict[str, str | int | bool] | None = None) -> int | None:
    try:
        d.m.client().modload("raiser", props)
    except ControlError as exc:
        return exc.errno
    return None


def loaded(d: Daemon) -> set[str]:
    return {r["name"] for r in d.m.client().modstat()["modules"]}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_import(daemon: Daemon, kind: str) -> None:
    conf = daemon.m.base / "mods" / "raiser" / "raise.json"
    conf.write_text(json.dumps({"import": kind}))
    try:
        want = KINDS[kind] if KINDS[kind] != errno.EIO else errno.ENOEXEC
        assert load_errno(daemon) == want
        assert "raiser" not in loaded(daemon)
        daemon.assert_serving()
    finally:
        conf.unlink()
    if kind != "DeviceError-EPERM":
        assert f"module raiser: import of {conf.parent}/__init__.py raised" in daemon.m.log_text()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_init(daemon: Daemon, kind: str) -> None:
    assert load_errno(daemon, {"init": kind}) == KINDS[kind]
    assert "raiser" not in loaded(daemon)
    daemon.assert_serving()
    # Nothing was left behind: it loads again, and works.
    assert load_errno(daemon) is None
    with open(daemon.node(), "rb", buffering=0) as f:
        assert f.read(10) == b"ok\n"
    daemon.m.client().modunload("raiser")


def read_errno(p: Path) -> int | None:
    try:
        with open(p, "rb", buffering=0) as f:
            f.read(10)
    except OSError as exc:
        return exc.errno
    return None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_d_read(daemon: Daemon, kind: str) -> None:
    assert load_errno(daemon, {"d_read": kind}) is None
    try:
        node = daemon.node()
        assert read_errno(node) == KINDS[kind]
        daemon.assert_serving()
        assert read_errno(node) == KINDS[kind]  # again: the driver is still there
    finally:
        daemon.m.client().modunload("raiser")
    if KINDS[kind] == errno.EIO:
        logged = {"BaseException": "WeirdBase", "Cancelled": "Cancelled"}.get(kind, kind)
        assert f"driver d_read raised {logged}" in daemon.m.log_text()


#: Other entry points and wrong returns: (property, value, what the caller sees).
ENTRIES = [
    ("d_open", "SystemExit", errno.EIO),
    ("d_open", "ret:1", errno.EIO),
    ("d_open", "DeviceError-ENOSYS", errno.ENODEV),  # not FUSE's "no OPEN" for the mount
    ("d_write", "KeyboardInterrupt", errno.EIO),
    ("d_write", "resid:-5", errno.EIO),
    ("d_read", 'ret:"text"', errno.EIO),
    ("d_read", "overmove", errno.EIO),
    ("d_read", "resid:-1", None),  # moves nothing: an empty read, harmless
    ("d_close", "SystemExit", None),  # close(2) has returned; logged only
]


def _io(node: Path, entry: str) -> int | None:
    try:
        with open(node, "r+b", buffering=0) as f:
            if entry == "d_write":
                f.write(b"abc")
            else:
                f.read(10)
    except OSError as exc:
        return exc.errno
    return None


@pytest.mark.parametrize(("entry", "value", "want"), ENTRIES)
def test_other_entry_points(daemon: Daemon, entry: str, value: str, want: int | None) -> None:
    assert load_errno(daemon, {entry: value}) is None
    try:
        assert _io(daemon.node(), entry) == want
        daemon.assert_serving()
    finally:
        daemon.m.client().modunload("raiser")


@pytest.mark.parametrize(
    "value", ["ret:-1", "ret:4294967296", "ret:true", 'ret:"x"', "SystemExit", "DeviceError-ENOSYS"]
)
def test_d_poll(daemon: Daemon, value: str) -> None:
    assert load_errno(daemon, {"d_poll": value}) is None
    try:
        with open(daemon.node(), "rb", buffering=0) as f:
            p = select.poll()
            p.register(f, select.POLLIN)
            ((_, revents),) = p.poll(5000)
            assert revents & select.POLLERR
        daemon.assert_serving()
    finally:
        daemon.m.client().modunload("raiser")


@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", "BaseExceptionGroup"])
def test_thread(daemon: Daemon, kind: str) -> None:
    assert load_errno(daemon, {"thread": kind}) is None
    try:
        logged = f"thread faulty died, raised {kind}"
        wait_for(lambda: logged in daemon.m.log_text(), 5, "the thread's fault logged")
        daemon.assert_serving()
        with open(daemon.node(), "rb", buffering=0) as f:
            assert f.read(10) == b"ok\n"
    finally:
        daemon.m.client().modunload("raiser")


@pytest.mark.parametrize("isolate", [[], ["--isolate"]], ids=["in-process", "isolated"])
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt", 'ret:"no"'])
def test_fini(tmp_path: Path, kind: str, isolate: list[str]) -> None:
    """FINI's fault keeps the module (its errno is EIO); shutdown still ends cleanly."""
    with DevfsdMount(tmp_path, modpath=[MODS], args=isolate) as m:
        d = Daemon(m)
        assert load_errno(d, {"fini": kind}) is None
        with pytest.raises(ControlError) as ei:
            m.client().modunload("raiser")
        assert ei.value.errno == errno.EIO
        assert "raiser" in loaded(d)  # FINI's error keeps the module
        d.assert_serving()
        assert m.stop() == 0
    assert "shutdown: module raiser refused to unload" in m.log_text()


def test_ioctl(daemon: Daemon) -> None:
    assert load_errno(daemon, {"d_ioctl": "GeneratorExit"}) is None
    try:
        with pytest.raises(ControlError) as ei:
            daemon.m.client().ioctl(str(daemon.node()), 0x20006D02)
        assert ei.value.errno == errno.EIO
        daemon.assert_serving()
    finally:
        daemon.m.client().modunload("raiser")


def test_sigint_still_stops_the_daemon(tmp_path: Path) -> None:
    """The daemon's own SIGINT is not a driver's KeyboardInterrupt: it stops."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload("raiser", {"d_read": "KeyboardInterrupt"})
        assert m.proc is not None
        m.proc.send_signal(signal.SIGINT)
        assert m.proc.wait(20) == 0
        assert "signal 2: shutting down" in m.log_text()
        wait_for(lambda: not is_mounted(m.path), 10, "the unmount")
