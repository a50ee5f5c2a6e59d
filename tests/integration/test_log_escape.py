"""No path or name can forge a line of the daemon's log.

What the log prints that someone else chose (a module path a control
client sends, a state's rows, a modules.conf line) goes through
``devfsd.errors.printable``: a line break or a terminal's escape sequence
in it is written as Python escapes it (``\\n``, ``\\x1b``), so a name with
a newline cannot start a line that looks like the daemon's own, and one
with ESC cannot retitle or clear the terminal of whoever reads the log.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import ControlError
from devfsd.state import DB_NAME
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.integration.test_state import MODS

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

#: A line as the daemon writes them, and a terminal's clear screen.
FORGED = "2026-12-07 00:00:00,000 devfsd[1] ERROR devfsd: forged"
EVIL = f"m\n{FORGED}\x1b[2J"
ESCAPED = "m\\n" + FORGED + "\\x1b[2J"


def forged(log: str) -> list[str]:
    """Lines that begin with the forged text, or carry ESC."""
    return [line for line in log.splitlines() if line.startswith(FORGED) or "\x1b" in line]


def rewrite(m: DevfsdMount, *sql: tuple[str, tuple[object, ...]]) -> None:
    c = sqlite3.connect(m.state / DB_NAME, isolation_level=None)
    for q, args in sql:
        c.execute(q, args)
    c.close()


def test_a_module_path_sent_over_the_control_socket_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """A control client's modload of a directory named with a newline, a
    line of the log's own shape and ESC: refused (others may write it),
    and the refusal's log line carries the name escaped."""
    mod = tmp_path / "mods" / EVIL
    shutil.copytree(MODS / "msgq", mod)
    os.chmod(mod, 0o777)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        with pytest.raises(ControlError):
            m.client().modload(str(mod))
        wait_for(lambda: "; refused" in m.log_text(), 5, "the refusal in the log")
        log = m.log_text()
        assert not forged(log), log
        said = f"module {ESCAPED}: {tmp_path}/mods/{ESCAPED}: mode 0777, writable by others; refused"
        assert said in log, log


def test_a_states_rows_and_modules_conf_cannot_forge_a_log_line(tmp_path: Path) -> None:
    """Rows a state may hold (an absolute path, a quarantined module's
    name, a loading mark) and a modules.conf line, each with ESC, a
    newline and a line of the log's shape: each logged escaped."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        pass
    rewrite(
        m,
        ("INSERT INTO modules VALUES ('gone', ?, '{}', 0)", (f"/nonexistent/{EVIL}",)),
        ("INSERT INTO modules VALUES (?, ?, '{}', 1)", (EVIL, f"/srv/{EVIL}")),
        ("INSERT INTO loading VALUES (?, ?)", (f"/srv/x{EVIL}", f"x{EVIL}")),
    )
    conf = tmp_path / "modules.conf"
    conf.write_text("ev\x1b[2Jil\n")
    args = ["--reload-modules", "--modules-conf", str(conf)]
    with DevfsdMount(tmp_path, modpath=[MODS], args=args) as m:
        wait_for(lambda: "reloading module" in m.log_text(), 5, "the reload in the log")
        log = m.log_text()
        assert not forged(log), log
        for said in (
            f"reloading module /nonexistent/{ESCAPED}: ",
            f"module {ESCAPED} is quarantined: not reloaded (modunload {ESCAPED} lifts it)",
            f"module x{ESCAPED} (/srv/x{ESCAPED}) was loading when devfsd last died",
            f"{conf}:1: ev\\x1b[2Jil: ",
        ):
            assert said in log, (said, log)
