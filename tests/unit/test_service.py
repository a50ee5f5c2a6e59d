"""The service pieces one by one: sd_notify on a real datagram socket,
modules.conf parsing, journald's log form, mountinfo watching on a real
mount, and the systemd unit checked by systemd-analyze."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.daemon import main as devfsd_main
from devfsd.errors import Verbatim
from devfsd.service import modconf, notify, unit
from devfsd.service.logs import EscapeArgs, JournalFormatter, journal_priority, under_journal
from devfsd.service.modconf import BadLine, Entry
from devfsd.service.mountwatch import find_mount, mount_ids, read_mountinfo, wait_unmounted
from devfsd.tools.modload import parse_args

if TYPE_CHECKING:
    from pathlib import Path

# -- sd_notify ---------------------------------------------------------------------------


def test_message_is_newline_separated_assignments() -> None:
    assert notify.message(ready=1, mainpid=42, status="serving\n/dev") == (
        b"READY=1\nMAINPID=42\nSTATUS=serving /dev\n"
    )


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@abc", b"\0abc"),
        ("", None),
        ("@", None),
        ("rel/path", None),
        ("vsock:2:1234", None),
    ],
)
def test_address(text: str, addr: str | bytes | None) -> None:
    assert notify.address(text) == addr


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notifier_sends_datagrams_and_hides_the_variable(tmp_path: Path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        if abstract:
            name = f"devfsd-unit-{uuid.uuid4().hex}"
            rx.bind("\0" + name)
            value = "@" + name
        else:
            rx.bind(str(tmp_path / "n.sock"))
            value = str(tmp_path / "n.sock")
        rx.settimeout(5)
        env = {"NOTIFY_SOCKET": value, "OTHER": "x"}
        n = notify.Notifier.from_environ(env)
        assert env == {"OTHER": "x"}
        assert n.enabled
        n.status("loading")
        n.ready("serving")
        n.stopping("bye")
        n.close()
        got = [rx.recv(4096) for _ in range(3)]
    assert got == [
        b"STATUS=loading\n",
        f"READY=1\nMAINPID={os.getpid()}\nSTATUS=serving\n".encode(),
        b"STOPPING=1\nSTATUS=bye\n",
    ]


def test_notifier_without_socket_or_with_a_dead_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notify.Notifier.from_environ({}).ready("x")  # nothing to do, nothing raised
    n = notify.Notifier(str(tmp_path / "gone"))
    with caplog.at_level(logging.WARNING):
        n.ready("x")
        n.stopping("y")
    n.close()
    assert len(caplog.records) == 1  # one warning, not one per message
    assert "No such file or directory" in caplog.records[0].getMessage()


# -- modules.conf --------------------------------------------------------------------------


def test_modconf_parse_lines_comments_and_a_bad_line_in_the_middle() -> None:
    text = (
        "# modules at boot\n"
        "crandom -i maxlen=4096 -b oneshot=yes   # rperm\n"
        "\n"
        "   mm\n"
        "tunwg -i port=notanumber\n"
        "-i x=1 crandom\n"
        "msgq -s greeting=hello -f -P\n"
        "a b\n"
        "mm -c /tmp/sock\n"
        "mm -p\n"
        "mm -z\n"
    )
    assert modconf.parse(text) == [
        Entry(2, "crandom", {"maxlen": 4096, "oneshot": True}),
        Entry(4, "mm", {}),
        BadLine(5, "Invalid integer value `notanumber': Invalid argument"),
        BadLine(6, "-i: a line starts with the module's name"),
        Entry(7, "msgq", {"greeting": "hello"}),
        BadLine(8, modconf._SHAPE),
        BadLine(9, "-c and -p are not for modules.conf"),
        BadLine(10, "-c and -p are not for modules.conf"),
        BadLine(11, "unknown option -- z"),
    ]


@pytest.mark.parametrize(
    "options", [["-i", "maxlen=4k"], ["-s", "a=b", "-s", "a=c"], ["-b", "x=0", "-i", "x=1"]]
)
def test_modconf_means_what_modload_means(options: list[str]) -> None:
    (entry,) = modconf.parse(" ".join(["crandom", *options]))
    assert isinstance(entry, Entry)
    assert entry.props == parse_args([*options, "crandom"]).props


def test_modconf_minus_i_asks_for_an_isolated_load() -> None:
    assert modconf.parse("msgq -I\ncrandom -I -i maxlen=4k\nmm\n") == [
        Entry(1, "msgq", {}, isolated=True),
        Entry(2, "crandom", {"maxlen": 4096}, isolated=True),
        Entry(3, "mm", {}),
    ]


def test_modconf_read(tmp_path: Path) -> None:
    assert modconf.read(str(os.devnull)) == (os.devnull, [])
    f = tmp_path / "m.conf"
    f.write_text("mm\n")
    os.chmod(f, 0o644)
    assert modconf.read(str(f)) == (str(f), [Entry(1, "mm", {})])
    for mode in (0o666, 0o646):
        os.chmod(f, mode)
        with pytest.raises(PermissionError):
            modconf.read(str(f))
    os.chmod(f, 0o664)
    os.chown(f, 0, 0)  # group root may write: root's group
    assert modconf.read(str(f))[1] == [Entry(1, "mm", {})]
    os.chown(f, 65534, 0)
    os.chmod(f, 0o644)
    with pytest.raises(PermissionError):
        modconf.read(str(f))
    with pytest.raises(FileNotFoundError):
        modconf.read(str(tmp_path / "missing"))
    # A directory above that others may write: they could swap the file.
    d = tmp_path / "open"
    d.mkdir()
    (d / "m.conf").write_text("mm\n")
    os.chmod(d / "m.conf", 0o644)
    os.chmod(d, 0o777)
    with pytest.raises(PermissionError) as pe:
        modconf.read(str(d / "m.conf"))
    assert pe.value.strerror == f"{d}: mode 0777, writable by others"
    os.chmod(d, 0o1777)  # sticky, as /tmp: others cannot replace root's file
    assert modconf.read(str(d / "m.conf"))[1] == [Entry(1, "mm", {})]
    big = tmp_path / "big.conf"
    big.write_bytes(b"#" * (modconf.MAX_SIZE + 1))
    with pytest.raises(OSError) as ei:
        modconf.read(str(big))
    assert ei.value.errno == 27  # EFBIG
    with pytest.raises(OSError) as ei:
        modconf.read(str(tmp_path))
    assert ei.value.errno == 22  # EINVAL: a directory


# -- logs --------------------------------------------------------------------------------


def test_journal_priorities() -> None:
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [journal_priority(level) for level in levels] == [7, 6, 4, 3, 2]


def test_journal_formatter_prefixes_every_line_and_no_timestamp() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
        rec = logging.LogRecord("devfsd.x", logging.ERROR, __file__, 1, "failed %s", ("here",), info)
    lines = JournalFormatter().format(rec).split("\n")
    assert lines[0] == "<3>ERROR devfsd.x: failed here"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


def test_a_messages_arguments_are_escaped_and_its_format_is_not() -> None:
    # Text others chose reaches the log as an argument: it cannot forge a
    # line or drive a terminal. devfsd's own format string keeps its lines.
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    h = Keep()
    h.addFilter(EscapeArgs())
    log = logging.getLogger("devfsd.test-escape")
    log.propagate = False
    log.addHandler(h)
    try:
        log.warning("module %s: %d in %r", "m\n2026 devfsd[1] ERROR forged\x1b[2J", 7, OSError(2, "a\rb"))
        log.warning("%(path)s at %(n)d", {"path": "/x\ny", "n": 3})
        log.warning("its last output:\n%s", "plain")
        log.warning("a stack:\n%s", Verbatim("line 1\nline 2"))
        log.warning("nothing to escape %s %s", "ok", None)
    finally:
        log.removeHandler(h)
    assert lines == [
        "module m\\n2026 devfsd[1] ERROR forged\\x1b[2J: 7 in '[Errno 2] a\\\\rb'",
        "/x\\ny at 3",
        "its last output:\nplain",
        "a stack:\nline 1\nline 2",
        "nothing to escape ok None",
    ]


def test_under_journal_matches_the_stream(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        assert under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, f.fileno())
        assert not under_journal({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, f.fileno())
        assert not under_journal({"JOURNAL_STREAM": "junk"}, f.fileno())
        assert not under_journal({}, f.fileno())


# -- mountinfo ------------------------------------------------------------------------------

_MOUNTINFO = (
    "22 1 0:21 / / rw shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 0:40 / /tmp/a\\040b rw,nosuid shared:20 - fuse.devfsd devfsd rw,user_id=0\n"
    "41 40 0:41 / /tmp/a\\040b rw - tmpfs x rw\n"
)


def test_find_mount_takes_the_top_one_and_unescapes() -> None:
    assert find_mount(_MOUNTINFO, "/tmp/a b") == 41
    assert find_mount(_MOUNTINFO, "/tmp/a b", "fuse.devfsd") == 40
    assert find_mount(_MOUNTINFO, "/tmp/a") is None
    assert mount_ids(_MOUNTINFO + "junk\n\n") == {22, 40, 41}


def _mount(path: Path) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "devfsd-test", str(path)], check=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")
def test_wait_unmounted_wakes_on_umount_and_not_before(tmp_path: Path) -> None:
    mp = tmp_path / "m"
    other = tmp_path / "other"
    mp.mkdir()
    other.mkdir()
    _mount(mp)

    async def scenario() -> None:
        mid = find_mount(read_mountinfo(), str(mp))
        assert mid is not None
        done = trio.Event()

        async def watch() -> None:
            await wait_unmounted(mid)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            await trio.lowlevel.checkpoint()
            # Another mount changes the table but not ours: still waiting.
            await trio.to_thread.run_sync(_mount, other)
            await trio.to_thread.run_sync(_umount, other)
            with trio.move_on_after(0.2):
                await done.wait()
            assert not done.is_set()
            await trio.to_thread.run_sync(_umount, mp)
            with trio.fail_after(5):
                await done.wait()

    try:
        trio.run(scenario)
    finally:
        for p in (mp, other):
            subprocess.run(["umount", str(p)], check=False, capture_output=True)


# -- unit and logrotate -----------------------------------------------------------------------


def test_unit_names_this_installation_and_passes_systemd_analyze(tmp_path: Path) -> None:
    text = unit.unit_text("/srv/dev")
    assert "Type=notify\n" in text
    assert "ExecStart=" + unit.installed_devfsd() + " -f $DEVFSD_OPTIONS /srv/dev\n" in text
    assert os.access(unit.installed_devfsd(), os.X_OK)
    for forbidden in ("PrivateTmp=", "ProtectSystem=", "PrivateDevices=", "ProtectHome=", "MountFlags="):
        assert forbidden not in text.replace("# No PrivateTmp=, ProtectSystem=", "")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("needs systemd-analyze")
    f = tmp_path / "devfsd.service"
    f.write_text(text)
    r = subprocess.run(
        # --man=no: the man page is where the package put it, maybe not on man's path.
        ["systemd-analyze", "verify", "--man=no", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_devfsd_unit_and_logrotate_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert devfsd_main(["unit"]) == 0
    assert capsys.readouterr().out == unit.unit_text()
    assert devfsd_main(["logrotate", "/var/log/x.log"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# logrotate for devfsd --log /var/log/x.log")
    assert "/var/log/x.log {\n" in out and "HUP" in out
    assert devfsd_main(["unit", "relative"]) == 1
    assert "not an absolute path" in capsys.readouterr().err
    assert devfsd_main(["unit", "/a b"]) == 1
    assert devfsd_main(["unit", "/a", "/b"]) == 1
    assert devfsd_main(["unit", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: devfsd unit")


def test_logrotate_snippet_is_valid(tmp_path: Path) -> None:
    if shutil.which("logrotate") is None:
        pytest.skip("needs logrotate")
    log = tmp_path / "devfsd.log"
    log.write_text("x\n")
    conf = tmp_path / "devfsd.logrotate"
    conf.write_text(unit.logrotate_text(str(log)))
    r = subprocess.run(
        ["logrotate", "-d", "-s", str(tmp_path / "status"), str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "error" not in r.stderr.lower(), r.stderr
