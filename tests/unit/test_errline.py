"""``prog: arg: strerror`` on stderr is one line whatever the argument holds.

A path is anyone's to name (``mkdir $'a\\nb'``), and a root-given one reaches
devfsd's start-up errors: a line break in it would print a second line that
looks like devfsd's own, an escape sequence would command the terminal.
``devfsd.tools.errline`` writes every such line, the tools' and the
daemon's, with the argument through ``devfsd.errors.printable``, as the log
escapes its messages' arguments.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from devfsd import daemon
from devfsd.service import unit
from devfsd.tools import err, errline, modload, warnx

if TYPE_CHECKING:
    from pathlib import Path

#: A line break, a carriage return and a terminal escape (clear the screen).
HOSTILE = "a\nforged: line\r\x1b[2J"
#: What it prints as.
SHOWN = "a\\nforged: line\\r\\x1b[2J"


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert "\x1b" not in text and "\r" not in text, repr(text)
    return text


def test_errline_escapes_the_argument_and_the_text() -> None:
    assert errline("modload", HOSTILE, errno.ENOENT) == f"modload: {SHOWN}: No such file or directory\n"
    assert errline("devfsd", "/x", f"state: {HOSTILE}") == f"devfsd: /x: state: {SHOWN}\n"
    assert errline("modstat", HOSTILE) == f"modstat: {SHOWN}\n"
    assert errline("modload", "plain", errno.EEXIST) == "modload: plain: File exists\n"  # as before
    assert errline("modload", "caf\u00e9 \u2603", errno.EEXIST) == "modload: caf\u00e9 \u2603: File exists\n"


def test_err_and_warnx_write_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert err("modunload", HOSTILE, errno.EBUSY) == 1
    warnx("trace", f"{HOSTILE} events dropped")
    assert capsys.readouterr().err == (
        f"modunload: {SHOWN}: Device or resource busy\ntrace: {SHOWN} events dropped\n"
    )


def test_a_tool_names_a_hostile_socket_path_on_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sock = str(tmp_path / HOSTILE / "control.sock")
    assert modload.main(["-c", sock, "crandom"]) == 1
    shown = str(tmp_path / SHOWN / "control.sock")
    assert one_line(capsys.readouterr().err) == f"modload: {shown}: No such file or directory\n"


def test_the_daemon_names_a_hostile_mountpoint_on_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert daemon.main(["-f", str(tmp_path / HOSTILE)]) == 1
    assert one_line(capsys.readouterr().err) == f"devfsd: {tmp_path / SHOWN}: No such file or directory\n"


def test_argparse_complaints_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own complaint quotes the argument it refuses."""
    with pytest.raises(SystemExit) as ei:
        daemon.main(["--control-group", HOSTILE, "/nonexistent"])
    assert ei.value.code == 2
    usage, complaint = capsys.readouterr().err.rstrip("\n").rsplit("\n", 1)
    assert usage.startswith("usage: devfsd ") and usage.endswith("mountpoint")
    want = f"devfsd: error: argument --control-group: {SHOWN}: invalid group name\n"
    assert one_line(complaint + "\n") == want


def test_devfsd_unit_refuses_a_hostile_mountpoint_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert unit.main("unit", [f"/mnt/{HOSTILE}"]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"devfsd unit: /mnt/{SHOWN}: not an absolute path without spaces, quotes, % or $\n"
    )


def test_a_start_up_error_through_the_ready_pipe_is_one_line(tmp_path: Path) -> None:
    """Detached (no ``-f``), the daemon's child reports a start-up error
    through a pipe to the parent, which prints it: a ``--log`` whose
    directory does not exist, with a hostile name. Nothing is mounted: the
    log is opened before the mount."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / HOSTILE / "devfsd.log"
    r = subprocess.run(
        [sys.executable, "-m", "devfsd", "--log", str(log), "--control", str(tmp_path / "c.sock"), str(mnt)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert r.returncode == 1
    assert one_line(r.stderr) == f"devfsd: {tmp_path / SHOWN / 'devfsd.log'}: No such file or directory\n"
