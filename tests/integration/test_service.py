"""devfsd as a service, with real daemons: sd_notify readiness, modules.conf,
umount with copies of the mount in other namespaces, daemonizing, log
rotation, faulthandler on fatal signals, a control socket already served."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.control.client import Client
from devfsd.errors import ControlError
from devfsd.service import detach
from devfsd.testing.mount import DevfsdMount, is_mounted, run, tool, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: What a stop must take at most, from umount's return or the signal to the daemon's exit.
STOP_WITHIN = 1.0


class NotifySocket:
    """A datagram socket playing systemd's notify socket (a path or an abstract name)."""

    def __init__(self, base: Path, *, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"devfsd-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = str(base / "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(20)
        self.seen: list[dict[str, str]] = []

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096)
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        self.seen.append(fields)
        return fields

    def until(self, key: str) -> dict[str, str]:
        while True:
            fields = self.next()
            if key in fields:
                return fields

    def close(self) -> None:
        self.sock.close()


class Daemon:
    """``devfsd -f`` started by hand (environment, options), always torn down."""

    def __init__(
        self,
        base: Path,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        *,
        argv: list[str] | None = None,
    ) -> None:
        self.base = base
        self.path = base / "dev"
        self.path.mkdir(exist_ok=True)
        self.control = str(base / "control.sock")
        self.log = base / "devfsd.log"
        if argv is None:  # else a whole command line, with these paths
            argv = [tool("devfsd"), "-f", "-c", self.control, "--log", str(self.log)]
            argv += ["--state", str(base / "state"), "--modpath", str(MODS), *args, str(self.path)]
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait_ready(self) -> None:
        """Until the mount and the socket answer and the daemon has said it serves.

        The daemon checks itself (a stat, a ping) from a worker thread before
        that line; a fatal signal while the thread still runs Python leaves a
        dump that walks its changing frames (faulthandler), truncated by a
        second fault in the dump on a loaded machine, without the main thread.
        """

        def ready() -> bool:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"devfsd exited {self.proc.returncode}: {err}{self.log_text()}")
            if not is_mounted(self.path):
                return False
            with contextlib.suppress(ControlError):
                Client(self.control).ping()
                return "serving" in self.log_text()
            return False

        wait_for(ready, 20, "devfsd to serve")

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        if self.proc.stderr:
            self.proc.stderr.close()
        if is_mounted(self.path) or _stale(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False, capture_output=True)


def _stale(path: Path) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


@pytest.fixture
def copy_holder() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes holding private mount namespaces (``unshare -m``), killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait(10)


def hold_copy(procs: list[subprocess.Popen[bytes]], mountpoint: Path) -> None:
    """Start a process in a new mount namespace that holds a copy of ``mountpoint``'s mount."""
    p = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sleep", "600"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    procs.append(p)

    def has_copy() -> bool:
        try:
            ns = os.readlink(f"/proc/{p.pid}/ns/mnt")
            with open(f"/proc/{p.pid}/mountinfo") as f:
                return ns != os.readlink("/proc/self/ns/mnt") and f" {mountpoint} " in f.read()
        except OSError:
            return False

    wait_for(has_copy, 10, "unshare -m to hold a copy of the mount")


def loaded(control: str) -> list[str]:
    return sorted(row["name"] for row in Client(control).modstat()["modules"])


def write_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


# -- readiness (sd_notify) ---------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_only_when_serving_and_stopping_on_umount(
    tmp_path: Path, daemons: list[Daemon], abstract: bool
) -> None:
    ns = NotifySocket(tmp_path, abstract=abstract)
    conf = write_conf(tmp_path / "modules.conf", "crandom -i maxlen=4096\nmsgq\n")
    try:
        env = {**os.environ, "NOTIFY_SOCKET": ns.env_value}
        d = Daemon(tmp_path, ["--modules-conf", str(conf)], env=env)
        daemons.append(d)
        ready = ns.until("READY")
        # At READY, and not a moment later: the mount answers, the control
        # socket answers, and modules.conf's modules are loaded.
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(d.proc.pid)
        assert os.listdir(d.path) == []
        assert loaded(d.control) == ["crandom", "msgq"]
        assert ready["STATUS"] == f"serving {d.path}, 2 modules loaded"
        earlier = [f for f in ns.seen[:-1] if "STATUS" in f]
        assert earlier == [{"STATUS": f"loading modules from {conf}"}]
        subprocess.run(["umount", str(d.path)], check=True)
        stopping = ns.until("STOPPING")
        assert stopping == {"STOPPING": "1", "STATUS": "stopping: unloading modules"}
        assert d.proc.wait(10) == 0
    finally:
        ns.close()


def test_notify_stopping_on_sigterm(tmp_path: Path, daemons: list[Daemon]) -> None:
    ns = NotifySocket(tmp_path, abstract=False)
    try:
        d = Daemon(tmp_path, env={**os.environ, "NOTIFY_SOCKET": ns.env_value})
        daemons.append(d)
        assert ns.until("READY")["STATUS"] == f"serving {d.path}, 0 modules loaded"
        d.proc.send_signal(signal.SIGTERM)
        assert ns.until("STOPPING")["STOPPING"] == "1"
        assert d.proc.wait(10) == 0
        assert not is_mounted(d.path)
    finally:
        ns.close()


def test_a_lost_notify_socket_does_not_stop_the_daemon(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    daemons.append(d)
    d.wait_ready()
    wait_for(lambda: "serving" in d.log_text(), 10, "the daemon to say it serves")
    assert f"notify '{tmp_path / 'nobody-listens'}': [Errno 2] No such file or directory" in d.log_text()
    Client(d.control).ping()


# -- stopping --------------------------------------------------------------------------


def test_umount_ends_the_daemon_within_a_second_despite_a_copy_elsewhere(
    tmp_path: Path, daemons: list[Daemon], copy_holder: list[subprocess.Popen[bytes]]
) -> None:
    d = Daemon(tmp_path, ["--modules-conf", os.devnull])
    daemons.append(d)
    d.wait_ready()
    hold_copy(copy_holder, d.path)
    subprocess.run(["umount", str(d.path)], check=True)
    t0 = time.monotonic()
    assert d.proc.wait(10) == 0
    took = time.monotonic() - t0
    assert took < STOP_WITHIN, f"took {took:.2f}s"
    assert not os.path.exists(d.control)
    assert "unmounted: shutting down" in d.log_text()
    # A new daemon takes the same socket and mountpoint at once.
    d2 = Daemon(tmp_path)
    daemons.append(d2)
    d2.wait_ready()


def test_sigterm_ends_the_daemon_within_a_second_despite_a_copy_elsewhere(
    tmp_path: Path, daemons: list[Daemon], copy_holder: list[subprocess.Popen[bytes]]
) -> None:
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    hold_copy(copy_holder, d.path)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    took = time.monotonic() - t0
    assert took < STOP_WITHIN, f"took {took:.2f}s"
    assert not is_mounted(d.path)
    assert not os.path.exists(d.control)


def test_a_live_control_socket_is_refused_naming_its_pid(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    other = tmp_path / "other"
    other.mkdir()
    (other / "dev").mkdir()
    r = run(["devfsd", "-f", "-c", d.control, "--state", str(other / "state"), str(other / "dev")])
    assert r.returncode == 1
    assert r.stderr.decode() == (
        f"devfsd: {d.control}: Address already in use: pid {d.proc.pid} (devfsd) is serving it\n"
    )
    assert not is_mounted(other / "dev")
    Client(d.control).ping()  # the first one is untouched


def test_a_stale_control_socket_is_replaced(tmp_path: Path, daemons: list[Daemon]) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # the file stays, nobody listens
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    assert detach.holder(d.control) == (d.proc.pid, "devfsd")


# -- daemonizing ---------------------------------------------------------------------------


def test_detached_daemon_leaves_cwd_umask_and_inherited_descriptors(tmp_path: Path) -> None:
    mp = tmp_path / "dev"
    mp.mkdir()
    ctl = str(tmp_path / "c.sock")
    inherited_r, inherited_w = os.pipe()
    inherited = os.fstat(inherited_r).st_ino

    def launch() -> None:
        os.umask(0o077)

    try:
        r = subprocess.run(
            [tool("devfsd"), "-c", ctl, "--log", "devfsd.log", "--state", "state", "dev"],
            cwd=tmp_path,
            pass_fds=(inherited_r, inherited_w),
            preexec_fn=launch,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert (r.returncode, r.stderr) == (0, b"")
        who = detach.holder(ctl)
        assert who is not None
        pid = who[0]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        assert re.search(r"^Umask:\s+0022$", status, re.M), status
        assert os.getsid(pid) == pid  # its own session, no terminal
        fds = open_files(pid)
        assert [fds[0], fds[1], fds[2]] == ["/dev/null"] * 3
        assert f"pipe:[{inherited}]" not in fds.values()
        # Relative paths were the caller's: the log and the state are in tmp_path.
        assert (tmp_path / "devfsd.log").exists() and (tmp_path / "state").is_dir()
    finally:
        os.close(inherited_r)
        os.close(inherited_w)
        subprocess.run(["umount", str(mp)], check=False)
        wait_for(lambda: not os.path.exists(ctl), 20, "the daemon to exit")


def open_files(pid: int) -> dict[int, str]:
    """What each of ``pid``'s descriptors names, but those it closes while they are read.

    A daemon that serves has connections coming and going (``detach.holder``'s
    own, its readiness ping), and each can close between the listing and
    its readlink(2), the later on a loaded machine.
    """
    fds = {}
    for n in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            fds[int(n)] = os.readlink(f"/proc/{pid}/fd/{n}")
    return fds


# -- logs ------------------------------------------------------------------------------


def test_sighup_reopens_a_renamed_log(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    rotated = tmp_path / "devfsd.log.1"
    os.rename(d.log, rotated)
    d.proc.send_signal(signal.SIGHUP)
    wait_for(d.log.exists, 10, "a new log file")
    Client(d.control).modload("msgq")
    wait_for(lambda: "msgq" in d.log_text(), 10, "the new log to get the next message")
    assert "msgq" not in rotated.read_text()
    assert "log reopened" in d.log_text()
    # faulthandler follows the log: SIGUSR1's stack dump lands in the new file.
    d.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "Current thread" in d.log_text() or "Thread 0x" in d.log_text(), 10, "a stack dump")
    assert "Thread 0x" not in rotated.read_text() and "Current thread" not in rotated.read_text()
    Client(d.control).ping()


def test_foreground_under_journald_prefixes_priorities(tmp_path: Path) -> None:
    mp = tmp_path / "dev"
    mp.mkdir()
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        argv = [tool("devfsd"), "-f", "-c", str(tmp_path / "c.sock"), "--state", str(tmp_path / "s")]
        proc = subprocess.Popen([*argv, "--modpath", str(MODS), str(mp)], env=env, stderr=f)
    try:
        wait_for(lambda: "serving" in err.read_text(), 20, "the serving line")
        Client(str(tmp_path / "c.sock")).modload("faulty")
    except ControlError:
        pass
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    lines = err.read_text().splitlines()
    assert lines, "nothing logged"
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    serving = next(line for line in lines if "serving" in line)
    assert serving.startswith("<6>INFO devfsd: devfsd ")
    assert not re.search(r"\d\d:\d\d:\d\d", serving)  # journald keeps the time


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT])
def test_a_fatal_signal_leaves_a_traceback_in_the_log(
    tmp_path: Path, daemons: list[Daemon], sig: signal.Signals
) -> None:
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    os.kill(d.proc.pid, sig)
    assert d.proc.wait(10) == -sig
    text = d.log_text()
    assert f"Fatal Python error: {'Segmentation fault' if sig == signal.SIGSEGV else 'Aborted'}" in text
    assert 'File "' in text and "daemon.py" in text, text


def test_fatal_signal_after_rotation_goes_to_the_new_log(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tmp_path)
    daemons.append(d)
    d.wait_ready()
    os.rename(d.log, tmp_path / "old.log")
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "log reopened" in d.log_text(), 10, "the log to be reopened")
    os.kill(d.proc.pid, signal.SIGSEGV)
    assert d.proc.wait(10) == -signal.SIGSEGV
    assert "Fatal Python error: Segmentation fault" in d.log_text()
    assert "Fatal Python error" not in (tmp_path / "old.log").read_text()


# -- modules.conf ------------------------------------------------------------------------------


def test_modules_conf_bad_line_in_the_middle(tmp_path: Path, daemons: list[Daemon]) -> None:
    conf = write_conf(
        tmp_path / "modules.conf",
        "# boot modules\n"
        "\n"
        "msgq            # a comment after the name\n"
        "crandom -i maxlen=x\n"
        "nosuchmodule\n"
        "crandom -i maxlen=4k\n",
    )
    d = Daemon(tmp_path, ["--modules-conf", str(conf)])
    daemons.append(d)
    d.wait_ready()
    assert loaded(d.control) == ["crandom", "msgq"]
    log = d.log_text()
    assert f"{conf}:4: Invalid integer value `x'" in log
    assert f"{conf}:5: nosuchmodule: " in log
    assert f"{conf}:3:" not in log and f"{conf}:6:" not in log


def test_modules_conf_errors_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    base = ["devfsd", "-f", "-c", str(tmp_path / "c"), "--state", str(tmp_path / "s")]
    r = run([*base, "--modules-conf", str(tmp_path / "missing.conf"), str(tmp_path / "dev")])
    assert (r.returncode, r.stderr.decode()) == (
        1,
        f"devfsd: {tmp_path / 'missing.conf'}: No such file or directory\n",
    )
    unsafe = write_conf(tmp_path / "unsafe.conf", "msgq\n")
    os.chmod(unsafe, 0o666)
    r = run([*base, "--modules-conf", str(unsafe), str(tmp_path / "dev")])
    assert r.returncode == 1
    assert r.stderr.decode() == f"devfsd: {unsafe}: mode 0666, writable by others\n"
    assert not is_mounted(tmp_path / "dev")


def test_modules_conf_wins_over_reload_modules_for_a_module_loaded_by_path(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A module loaded by a path whose last part is not its MODULE name
    (msgq's code in a directory called othername): modules.conf's load of
    it wins, and --reload-modules does not try it again (it used to, and
    logged EEXIST)."""
    code = tmp_path / "code"
    code.mkdir(mode=0o755)
    shutil.copytree(MODS / "msgq", code / "othername", ignore=shutil.ignore_patterns("__pycache__"))
    path = str(code / "othername")
    with DevfsdMount(tmp_path) as m:
        m.client().modload(path)
    conf = write_conf(tmp_path / "modules.conf", f"{path}\n")
    d = Daemon(tmp_path, ["--modules-conf", str(conf), "--reload-modules"])
    daemons.append(d)
    d.wait_ready()
    assert loaded(d.control) == ["msgq"]
    log = d.log_text()
    assert "modules.conf loaded it already" in log
    assert "File exists" not in log and "EEXIST" not in log, log


def test_modules_conf_wins_over_reload_modules(tmp_path: Path, daemons: list[Daemon]) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload("crandom", {"maxlen": 100})
        m.client().modload("msgq")
    conf = write_conf(tmp_path / "modules.conf", "crandom -i maxlen=200\n")
    d = Daemon(tmp_path, ["--modules-conf", str(conf), "--reload-modules"])
    daemons.append(d)
    d.wait_ready()
    assert loaded(d.control) == ["crandom", "msgq"]
    assert "modules.conf loaded it already" in d.log_text()
    # crandom has modules.conf's properties (maxlen 200), not the state's (100).
    node = d.path / "r"
    r = run(["devfs-mknod", "-c", d.control, str(node), "c", "crandom", "0"], timeout=10)
    assert r.returncode == 0, r.stderr
    fd = os.open(node, os.O_WRONLY)
    try:
        assert os.write(fd, b"x" * 150) == 150
    finally:
        os.close(fd)
    fd = os.open(node, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as ei:
            os.write(fd, b"x" * 201)
        assert ei.value.errno == errno.EFBIG
    finally:
        os.close(fd)


def test_the_units_command_runs_and_notifies(tmp_path: Path, daemons: list[Daemon]) -> None:
    """ExecStart= of `devfsd unit`, its $DEVFSD_OPTIONS filled in, started as systemd would."""
    from devfsd.service.unit import unit_text

    mp = tmp_path / "dev"
    (exec_start,) = [line for line in unit_text(str(mp)).splitlines() if line.startswith("ExecStart=")]
    options = f"-c {tmp_path}/control.sock --state {tmp_path}/state --log {tmp_path}/devfsd.log"
    argv = exec_start.removeprefix("ExecStart=").replace("$DEVFSD_OPTIONS", options).split()
    assert argv[0] == tool("devfsd") and argv[1] == "-f" and argv[-1] == str(mp)
    ns = NotifySocket(tmp_path, abstract=True)
    try:
        d = Daemon(tmp_path, env={**os.environ, "NOTIFY_SOCKET": ns.env_value}, argv=argv)
        daemons.append(d)
        ready = ns.until("READY")
        assert ready["MAINPID"] == str(d.proc.pid)
        Client(d.control).ping()
    finally:
        ns.close()
