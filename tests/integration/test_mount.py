"""devfsd behind a real mount, driven by real processes."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.control.client import Client
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, is_mounted, run, wait_for
from tests.deadline import deadline
from tests.nobody import python_as_nobody

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    """A daemon whose modules run in process, or each in a host of its own
    (``--isolate``, devfsd.isolate): every test here runs both ways."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--debug", *isolate]) as m:
        yield m


def msgq_node(m: DevfsdMount, name: str = "q", unit: int = 0, mode: int = 0o666) -> Path:
    c = m.client()
    try:
        c.modload("msgq")
    except ControlError as exc:
        if exc.errno != errno.EEXIST:
            raise
    maj = {n: mj for n, mj, _ in c.drivers()}["msgq"]
    p = m.path / name
    os.mknod(p, stat.S_IFCHR | mode, makedev(maj, unit))
    os.chmod(p, mode)
    return p


def test_root_directory_listing(mnt: DevfsdMount) -> None:
    out = subprocess.run(["ls", "-a", str(mnt.path)], capture_output=True, check=True, text=True)
    assert out.stdout.split() == [".", ".."]


def test_tree_operations(mnt: DevfsdMount) -> None:
    d = mnt.path / "sub"
    d.mkdir(mode=0o750)
    assert stat.S_IMODE(d.stat().st_mode) == 0o750 & ~_umask()
    os.mkfifo(d / "fifo")
    assert stat.S_ISFIFO((d / "fifo").stat().st_mode)
    os.symlink("fifo", d / "link")
    assert os.readlink(d / "link") == "fifo"
    os.rename(d / "fifo", mnt.path / "moved")
    assert sorted(os.listdir(d)) == ["link"]
    os.chown(mnt.path / "moved", 65534, 65534)
    st = (mnt.path / "moved").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    os.utime(mnt.path / "moved", ns=(1_000_000_000, 2_000_000_000))
    assert (mnt.path / "moved").stat().st_mtime_ns == 2_000_000_000
    with pytest.raises(OSError) as ei:
        os.rmdir(mnt.path)
    with pytest.raises(OSError) as ei:
        os.rmdir(d)
    assert ei.value.errno == errno.ENOTEMPTY
    os.unlink(d / "link")
    os.rmdir(d)
    with pytest.raises(OSError) as ei:
        (mnt.path / "regular").write_text("x")
    assert ei.value.errno == errno.EOPNOTSUPP


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_coreutils_mknod_echo_cat(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("msgq")
    maj = {n: mj for n, mj, _ in c.drivers()}["msgq"]
    r = run(["mknod", "-m", "666", str(mnt.path / "q"), "c", str(maj), "0"])
    assert r.returncode == 0, r.stderr
    st = (mnt.path / "q").stat()
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    assert os.getxattr(mnt.path / "q", "user.devfsd.driver") == b"msgq"
    assert os.getxattr(mnt.path / "q", "user.devfsd.major") == str(maj).encode()
    assert os.getxattr(mnt.path / "q", "user.devfsd.minor") == b"0"
    assert os.getxattr(mnt.path / "q", "user.devfsd.control") == mnt.control.encode()
    r = subprocess.run(["sh", "-c", f"echo hello > {mnt.path / 'q'}"], capture_output=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["head", "-c", "6", str(mnt.path / "q")], capture_output=True, timeout=10)
    assert r.stdout == b"hello\n"


def test_dd_reads_one_message_per_read(mnt: DevfsdMount) -> None:
    q = msgq_node(mnt)
    fd = os.open(q, os.O_RDWR)
    try:
        for i in range(3):
            os.write(fd, f"message {i}".encode())
        r = subprocess.run(
            ["dd", f"if={q}", "bs=4", "count=3", "status=none"], capture_output=True, timeout=10
        )
        assert r.returncode == 0, r.stderr
        # One read(2) per message, each cut to 4 bytes (the rest dropped).
        assert r.stdout == b"messmessmess"
    finally:
        os.close(fd)


def test_nonblocking_and_select(mnt: DevfsdMount) -> None:
    q = msgq_node(mnt)
    fd = os.open(q, os.O_RDWR | os.O_NONBLOCK)
    try:
        with deadline(5, "read(2) of an empty queue opened O_NONBLOCK"), pytest.raises(BlockingIOError):
            os.read(fd, 10)
        with deadline(5, "select(2) with a zero timeout"):
            r, w, _ = select.select([fd], [fd], [], 0)
        assert (r, w) == ([], [fd])
        p = select.poll()
        p.register(fd, select.POLLIN)
        with deadline(5, "poll(2) with a zero timeout"):
            assert p.poll(0) == []
        # A writer in another process wakes the poller.
        subprocess.run(["sh", "-c", f"printf ping > {q}"], check=True, timeout=10)
        assert p.poll(5000) == [(fd, select.POLLIN)]
        with deadline(5, "read(2) of a queued message"):
            assert os.read(fd, 10) == b"ping"
    finally:
        os.close(fd)


def test_epoll_wakes_on_write(mnt: DevfsdMount) -> None:
    q = msgq_node(mnt)
    fd = os.open(q, os.O_RDONLY | os.O_NONBLOCK)
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
        with deadline(5, "epoll_wait(2) with a zero timeout"):
            assert ep.poll(0) == []
        writer = subprocess.Popen(["sh", "-c", f"printf x > {q}"])
        assert ep.poll(5) == [(fd, select.EPOLLIN)]
        writer.wait(10)
        with deadline(5, "read(2) of a queued message"):
            assert os.read(fd, 10) == b"x"
    finally:
        ep.close()
        os.close(fd)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_blocked_reader_wakes_and_a_signal_kills_it(mnt: DevfsdMount, sig: int) -> None:
    q = msgq_node(mnt)
    cat = subprocess.Popen(["cat", str(q)], stdout=subprocess.PIPE)
    try:
        wait_for(lambda: mnt.client().status()["sleepers"] == 1, 10, "cat to block")
        with open(q, "wb", buffering=0) as w:
            w.write(b"woken\n")
        assert cat.stdout is not None
        assert cat.stdout.readline() == b"woken\n"
        wait_for(lambda: mnt.client().status()["sleepers"] == 1, 10, "cat to block again")
        t0 = time.monotonic()
        cat.send_signal(sig)
        assert cat.wait(5) == -sig
        assert time.monotonic() - t0 < 1.0
        wait_for(lambda: mnt.client().status()["sleepers"] == 0, 5, "the sleeper to go")
    finally:
        cat.kill()
        cat.wait()
        assert cat.stdout is not None
        cat.stdout.close()


def test_python_reader_with_handler_sees_eintr_retry(mnt: DevfsdMount) -> None:
    q = msgq_node(mnt)
    code = (
        "import os, signal, sys\n"
        "hits = []\n"
        "signal.signal(signal.SIGUSR1, lambda *a: hits.append(1))\n"
        f"fd = os.open({str(q)!r}, os.O_RDONLY)\n"
        "print('ready', flush=True)\n"
        "data = os.read(fd, 100)\n"  # PEP 475: retried after the handler runs
        "print(len(hits), data.decode(), flush=True)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        wait_for(lambda: mnt.client().status()["sleepers"] == 1, 10, "the reader to block")
        p.send_signal(signal.SIGUSR1)
        wait_for(lambda: mnt.client().status()["sleepers"] == 1, 10, "the retried read to block")
        with open(q, "wb", buffering=0) as w:
            w.write(b"after")
        out, _ = p.communicate(timeout=10)
        assert out == "1 after\n"
    finally:
        p.kill()
        p.communicate()


def test_thousand_sleepers_do_not_stop_other_requests(mnt: DevfsdMount) -> None:
    q = msgq_node(mnt)
    fds = [os.open(q, os.O_RDONLY) for _ in range(50)]
    readers = [
        subprocess.Popen(["dd", f"if={q}", "bs=64", "count=1", "status=none"], stdout=subprocess.PIPE)
        for _ in range(150)
    ]
    try:
        wait_for(lambda: mnt.client().status()["sleepers"] == 150, 30, "150 readers to block")
        os.mkdir(mnt.path / "still-serving")
        assert (mnt.path / "still-serving").is_dir()
        with open(q, "wb", buffering=0) as w:
            for _ in range(150):
                w.write(b"m")
        outs = [r.communicate(timeout=30)[0] for r in readers]
        assert outs == [b"m"] * 150
    finally:
        for r in readers:
            r.kill()
            r.wait()
        for fd in fds:
            os.close(fd)


def test_ioctl_through_the_control_socket(mnt: DevfsdMount) -> None:
    from devfsd.cdevsw import IO, IOR

    q = msgq_node(mnt)
    for m in (b"a", b"b"):
        _write(q, m)
    c = mnt.client()
    assert c.ioctl(str(q), IOR(ord("m"), 1, 4)) == struct.pack("<I", 2)
    assert c.ioctl(str(q), IO(ord("m"), 2)) == b""
    assert c.ioctl(str(q), IOR(ord("m"), 1, 4)) == struct.pack("<I", 0)
    with pytest.raises(ControlError) as ei:
        c.ioctl(str(q), IO(ord("m"), 9))
    assert ei.value.errno == errno.ENOTTY
    with pytest.raises(ControlError) as ei:
        c.ioctl(str(mnt.path / "missing"), IO(ord("m"), 2))
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(ControlError) as ei:
        c.ioctl("/etc/passwd", IO(ord("m"), 2))
    assert ei.value.errno == errno.EXDEV
    # ioctl(2) itself cannot pass through FUSE: the kernel answers ENOTTY.
    import fcntl

    fd = os.open(q, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as oi:
            fcntl.ioctl(fd, IOR(ord("m"), 1, 4), b"\0" * 4)
        assert oi.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


def test_driver_exception_gives_eio_and_daemon_survives(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("faulty")
    maj = {n: mj for n, mj, _ in c.drivers()}["faulty"]
    os.mknod(mnt.path / "bad", stat.S_IFCHR | 0o666, makedev(maj, 0))
    os.mknod(mnt.path / "good", stat.S_IFCHR | 0o666, makedev(maj, 1))
    with open(mnt.path / "bad", "rb", buffering=0) as f, pytest.raises(OSError) as ei:
        f.read(10)
    assert ei.value.errno == errno.EIO
    assert "ZeroDivisionError" in mnt.log_text()
    with open(mnt.path / "good", "rb", buffering=0) as f:
        assert f.read(10) == b"fine\n"
    c.modunload("faulty")


def test_open_without_driver_is_enxio(mnt: DevfsdMount) -> None:
    os.mknod(mnt.path / "nothing", stat.S_IFCHR | 0o666, makedev(300, 0))
    with pytest.raises(OSError) as ei:
        os.open(mnt.path / "nothing", os.O_RDONLY)
    assert ei.value.errno == errno.ENXIO


def test_d_close_on_the_last_close_only(mnt: DevfsdMount) -> None:
    # msgq's d_close forgets its dev, and its FINI refuses (EBUSY) while it
    # remembers one: so unloading says whether d_close has run.
    q = msgq_node(mnt)
    c = mnt.client()

    def unload_errno() -> int | None:
        try:
            c.modunload("msgq")
        except ControlError as exc:
            return exc.errno
        return None

    a, b = os.open(q, os.O_RDWR), os.open(q, os.O_RDWR)
    d = os.dup(b)
    try:
        os.close(a)
        assert unload_errno() == errno.EBUSY  # b is open
        os.close(b)
        assert unload_errno() == errno.EBUSY  # its file is, through d
        os.write(d, b"kept")
        assert os.read(d, 10) == b"kept"
    finally:
        os.close(d)
    # The last close reaches d_close (its RELEASE may come a moment after close(2)).
    wait_for(lambda: unload_errno() is None, 10, "msgq to unload after the last close")


def test_unload_while_open_enxio(mnt: DevfsdMount) -> None:
    c = mnt.client()
    c.modload("faulty")
    maj = {n: mj for n, mj, _ in c.drivers()}["faulty"]
    os.mknod(mnt.path / "good", stat.S_IFCHR | 0o666, makedev(maj, 1))
    with open(mnt.path / "good", "rb", buffering=0) as f:
        c.modunload("faulty")
        with pytest.raises(OSError) as ei:
            f.read(10)
        assert ei.value.errno == errno.ENXIO


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_modes_enforced_for_other_users() -> None:
    # Under a directory every user may enter (pytest's tmp_path is 0700).
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        with DevfsdMount(base, modpath=[MODS]) as m:
            q = msgq_node(m, "private", mode=0o600)
            pub = msgq_node(m, "public", 1, mode=0o666)
            _write(pub, b"hi")
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            r = subprocess.run([*as_nobody, "head", "-c", "2", str(q)], capture_output=True, timeout=10)
            assert r.returncode == 1 and b"Permission denied" in r.stderr
            r = subprocess.run([*as_nobody, "head", "-c", "2", str(pub)], capture_output=True, timeout=10)
            assert r.returncode == 0 and r.stdout == b"hi", r.stderr
            os.chmod(q, 0o666)
            _write(q, b"ok")
            r = subprocess.run([*as_nobody, "head", "-c", "2", str(q)], capture_output=True, timeout=10)
            assert r.stdout == b"ok", r.stderr


def test_control_socket_is_root_only() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        with DevfsdMount(base, modpath=[MODS]) as m:
            assert stat.S_IMODE(os.stat(m.control).st_mode) == 0o600
            os.chmod(m.control, 0o666)  # let nobody reach it, to see the credential check
            code = (
                "from devfsd.control.client import Client\n"
                "from devfsd.errors import ControlError\n"
                "try:\n"
                f"    Client({m.control!r}).modload('msgq')\n"
                "except ControlError as e:\n"
                "    print(e.errno)\n"
            )
            python, env = python_as_nobody(Path(base))  # nobody may not read the checkout
            r = subprocess.run(
                [*python, "-c", code],
                capture_output=True,
                text=True,
                timeout=30,
                cwd="/",
                env=env,
            )
            assert r.stdout.strip() == str(errno.EPERM), r.stderr
            assert m.client().modstat()["modules"] == []


def test_malformed_control_requests(mnt: DevfsdMount) -> None:
    cases = [
        struct.pack(">I", 5) + b"nope!",
        struct.pack(">I", 2) + b"[]",
        struct.pack(">I", 1 << 30),
        struct.pack(">I", 14) + b'{"op":"boom"}\n',
        struct.pack(">I", 16) + b'{"op":"modload"}',
    ]
    for raw in cases:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(mnt.control)
            s.sendall(raw)
            hdr = s.recv(4)
            assert len(hdr) == 4
            body = b""
            (n,) = struct.unpack(">I", hdr)
            while len(body) < n:
                body += s.recv(n - len(body))
            assert b'"ok":false' in body
    mnt.client().ping()


def test_umount_ends_daemon(tmp_path: Path) -> None:
    m = DevfsdMount(tmp_path)
    m.start()
    try:
        assert m.proc is not None
        subprocess.run(["umount", str(m.path)], check=True)
        assert m.proc.wait(20) == 0
        assert not os.path.exists(m.control)
        assert not is_mounted(m.path)
    finally:
        m.stop()


def test_fusermount_u_ends_daemon(tmp_path: Path) -> None:
    m = DevfsdMount(tmp_path)
    m.start()
    try:
        assert m.proc is not None
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
        assert m.proc.wait(20) == 0
        assert not os.path.exists(m.control)
    finally:
        m.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_daemon_cleanly(tmp_path: Path, sig: int) -> None:
    m = DevfsdMount(tmp_path, modpath=[MODS])
    m.start()
    try:
        q = msgq_node(m)
        cat = subprocess.Popen(["cat", str(q)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: m.client().status()["sleepers"] == 1, 10, "cat to block")
        assert m.proc is not None
        m.proc.send_signal(sig)
        assert m.proc.wait(20) == 0
        assert not is_mounted(m.path)
        assert not os.path.exists(m.control)
        cat.wait(10)
    finally:
        m.stop()


def test_stale_mount_is_cleared_at_start(tmp_path: Path) -> None:
    m = DevfsdMount(tmp_path)
    m.start()
    assert m.proc is not None
    m.proc.kill()
    m.proc.wait(10)
    with pytest.raises(OSError) as ei:
        os.stat(m.path)
    assert ei.value.errno == errno.ENOTCONN
    m2 = DevfsdMount(tmp_path)
    try:
        m2.start()
        assert os.listdir(m2.path) == []
    finally:
        m2.stop()
        m.stop()


def test_detaches_when_ready(tmp_path: Path) -> None:
    mp = tmp_path / "dev"
    mp.mkdir()
    ctl = str(tmp_path / "c.sock")
    r = run(
        [
            "devfsd",
            "--control",
            ctl,
            "--state",
            str(tmp_path / "state"),
            "--log",
            str(tmp_path / "log"),
            str(mp),
        ],
        timeout=30,
    )
    try:
        assert r.returncode == 0 and r.stdout == b"" and r.stderr == b""
        assert is_mounted(mp)
        Client(ctl).ping()  # ready the moment the command returned
    finally:
        subprocess.run(["umount", str(mp)], check=False)
        wait_for(lambda: not os.path.exists(ctl), 20, "the daemon to exit")


def test_start_errors(tmp_path: Path) -> None:
    r = run(["devfsd", "--control", str(tmp_path / "c"), str(tmp_path / "missing")])
    assert r.returncode == 1
    assert r.stderr.decode() == f"devfsd: {tmp_path / 'missing'}: No such file or directory\n"
    m = DevfsdMount(tmp_path)
    with m:
        r = run(["devfsd", "--control", str(tmp_path / "c2"), str(m.path)])
        assert r.returncode == 1
        assert r.stderr.decode() == f"devfsd: {m.path}: Device or resource busy\n"
        (tmp_path / "dev2").mkdir()
        state = tmp_path / "state2"
        r = run(["devfsd", "--control", m.control, "--state", str(state), str(tmp_path / "dev2")])
        assert r.returncode == 1
        assert r.stderr.decode().startswith(f"devfsd: {m.control}: Address already in use: pid ")
        assert not is_mounted(tmp_path / "dev2")
        # The failed start closed its state: no write-ahead log left behind.
        assert sorted(p.name for p in state.iterdir()) == ["devfsd.sqlite", "lock"]


def test_control_group_members_may_use_the_socket() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)
        with DevfsdMount(base, modpath=[MODS], args=["--control-group", "65534"]) as m:
            st = os.stat(m.control)
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, 65534)
            code = (
                "from devfsd.control.client import Client\n"
                f"Client({m.control!r}).modload('msgq')\n"
                "print('ok')\n"
            )
            member, env = python_as_nobody(Path(base))  # nobody may not read the checkout
            r = subprocess.run([*member, "-c", code], capture_output=True, text=True, timeout=30, env=env)
            assert r.stdout == "ok\n", r.stderr
            outsider = [a.replace("--regid=65534", "--regid=65533") for a in member]
            r = subprocess.run(
                [*outsider, "-c", code.replace("modload", "modunload")],
                capture_output=True,
                text=True,
                timeout=30,
                env=env,
            )
            assert "Permission denied" in r.stderr  # the socket's mode keeps others out
            assert [row["name"] for row in m.client().modstat()["modules"]] == ["msgq"]
