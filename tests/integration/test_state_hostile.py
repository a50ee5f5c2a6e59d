"""The modules the state directory gives back go through modload's checks.

``--reload-modules`` loads what the state's rows say as root would with
modload: a row a modload could not have recorded (a name with a terminal's
escape sequences, a relative path, properties ``check_props`` refuses)
refuses the directory at start, as a bad node row does; a row whose load
modload would refuse today (a user the machine no longer has, a capability
it does not know, a memory limit that is none, code the trust rule
refuses) is not loaded, and the log says why, in modload's words. A module
loaded isolated by path comes back isolated.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import stat
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError
from devfsd.state import DB_NAME
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.integration.test_isolation_caps import NET_RAW, NONE, caps
from tests.integration.test_isolation_confine import ask
from tests.integration.test_state import MODS

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

RELOAD = ["--reload-modules"]


def flags(m: DevfsdMount) -> dict[str, str]:
    return {r["name"]: r["flags"] for r in m.client().modstat()["modules"]}


def rewrite(m: DevfsdMount, sql: str, *args: object) -> None:
    """Change the stopped daemon's state as an attacker with the file would."""
    c = sqlite3.connect(m.state / DB_NAME, isolation_level=None)
    c.execute(sql, args)
    c.close()


def test_a_module_loaded_isolated_by_path_comes_back_isolated(tmp_path: Path) -> None:
    """It came back in process (the daemon's root, every capability): the
    reload asked ``isolated_names`` by its path, which holds names."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload(str(MODS / "msgq"), isolated=True)
        assert flags(m) == {"msgq": "i"}
    with DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD) as m:
        assert flags(m) == {"msgq": "i"}


@pytest.mark.parametrize(
    ("props", "said"),
    [
        ({"user": "devfsd-no-such-user"}, "property user: no user 'devfsd-no-such-user'"),
        ({"caps": "net_admin,no_such_cap"}, "property caps: no capability 'no_such_cap'"),
        ({"user": "nobody", "caps": "net_raw"}, "property caps: a host run as another user holds none"),
        ({"memlimit": -1}, "property memlimit: -1 is not a number of bytes above 0"),
        ({"memlimit": 0}, "property memlimit: 0 is not a number of bytes above 0"),
        ({"memlimit": "1g"}, "property memlimit: '1g' is not a number of bytes above 0"),
    ],
)
def test_host_properties_come_back_checked_as_modload_checks_them(
    tmp_path: Path, props: dict[str, Any], said: str
) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        c = m.client()
        with pytest.raises(ControlError) as ei:
            c.modload(str(MODS / "msgq"), props, isolated=True)
        assert said in str(ei.value)  # modload's answer
        c.modload(str(MODS / "msgq"), isolated=True)
    rewrite(m, "UPDATE modules SET props = ? WHERE name = 'msgq'", json.dumps(props))
    with DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD) as m:
        wait_for(lambda m=m: f"reloading module {MODS / 'msgq'}: {said}" in m.log_text(), 5, "the log")
        assert flags(m) == {}  # not loaded, in process or isolated
        m.client().modload("mm")  # the daemon serves


def test_a_reloaded_path_is_checked_as_modload_checks_it(tmp_path: Path) -> None:
    """A row naming code in a directory others may write is refused by the
    trust rule, as modload is, and the log says why."""
    shared = tmp_path / "shared"
    shutil.copytree(MODS / "msgq", shared / "msgq")
    os.chmod(shared, 0o777)
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        c = m.client()
        with pytest.raises(ControlError) as ei:
            c.modload(str(shared / "msgq"))
        said = str(ei.value)
        assert said == f"{shared}: mode 0777, writable by others"
        c.modload("msgq")
    rewrite(m, "UPDATE modules SET spec = ? WHERE name = 'msgq'", str(shared / "msgq"))
    with DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD) as m:
        wait_for(lambda m=m: f"reloading module {shared / 'msgq'}: {said}" in m.log_text(), 5, "the log")
        assert flags(m) == {}


@pytest.mark.parametrize(
    ("sql", "args", "said"),
    [
        (
            "INSERT INTO modules VALUES (?, ?, '{}', 1)",
            ("\x1b]0;pwned\x07", "\x1b]0;pwned\x07"),
            "invalid module row '\\x1b]0;pwned\\x07' (invalid module name",
        ),
        ("UPDATE modules SET spec = ?", ("tests/modules/msgq",), "the module's path is not absolute"),
        # Nested deeper than json reads: it crashed the daemon after it mounted.
        ("UPDATE modules SET props = ?", ("[" * 2000 + "]" * 2000,), "(properties are not JSON)"),
        ("UPDATE modules SET props = ?", ('{"memlimit": 1208925819614629174706176}',), "int64"),
        ("INSERT INTO isolated VALUES (?)", ("a\nb",), "invalid isolated row 'a\\nb'"),
    ],
)
def test_a_module_row_no_modload_records_refuses_the_start(
    tmp_path: Path, sql: str, args: tuple[object, ...], said: str
) -> None:
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload(str(MODS / "msgq"))
    rewrite(m, sql, *args)
    with pytest.raises(RuntimeError) as ei:
        DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD).start()
    text = str(ei.value)
    assert "devfsd exited with 1" in text and f"devfsd: {m.state}: {DB_NAME}: " in text
    assert said in text and "; refusing to serve it" in text, text
    assert "\x1b" not in text and "Traceback" not in text
    assert not os.path.ismount(m.path)


def test_a_state_others_may_write_refuses_the_start(tmp_path: Path) -> None:
    """Whoever may write it chooses what root reloads and who may open
    which node: refused, as module code others may write is."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload("msgq")
    os.chmod(m.state, 0o777)
    with pytest.raises(RuntimeError) as ei:
        DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD).start()
    text = str(ei.value)
    assert "devfsd exited with 1" in text
    why = f"devfsd: {m.state}: {m.state}: mode 0777, writable by others; refusing a state others could"
    assert why in text, text
    assert not os.path.ismount(m.path)
    os.chmod(m.state, 0o700)
    with DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD) as m:
        assert flags(m) == {"msgq": "-"}


def test_a_reloaded_host_gets_the_capabilities_recorded_and_no_more(tmp_path: Path) -> None:
    """The state gives back what root gave, through the same checks:
    caps=net_raw to a root host loaded by path comes back isolated with
    that capability alone (it came back in process, with every one)."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload(str(MODS / "probe"), {"caps": "net_raw"}, isolated=True)
        assert caps(m)["Eff"] == NET_RAW
    with DevfsdMount(tmp_path, modpath=[MODS], args=RELOAD) as m:
        assert flags(m) == {"probe": "i"}
        assert caps(m) == {"Inh": NONE, "Prm": NET_RAW, "Eff": NET_RAW, "Bnd": NET_RAW, "Amb": NONE}
        assert ask(m, "packet") == "ok"


def test_a_major_row_a_reservation_overrides_is_logged_and_the_reservation_wins(tmp_path: Path) -> None:
    """A state an older devfsd wrote may give a name this one reserves
    another major, or a reserved major to another name: the daemon starts
    (an upgrade must not fail on it), the reservation wins, and the log
    names the row and what becomes of the nodes made with its major. The
    major a reservation took the name from is given to no other driver
    (it was 256 for the next new one, isolated or not, and the state then
    held it twice: the next start was refused)."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        os.mknod(m.path / "old", stat.S_IFCHR | 0o666, makedev(256, 0))
        os.mknod(m.path / "null", stat.S_IFCHR | 0o666, makedev(2, 2))
    rewrite(m, "INSERT INTO majors VALUES ('mm', 256), ('bar', 2)")
    for _ in range(2):  # and again: the rows stay, the warning too, nothing is refused
        with DevfsdMount(tmp_path, modpath=[MODS]) as m:
            log = m.log_text()
            assert (
                f"devfsd: {DB_NAME}: major row 'mm': 256 left out: mm has major 2 reserved;"
                " 1 node with major 256 reaches no driver (remake them with devfs-mknod);"
                " 256 is given to no other name"
            ) in log, log
            assert (
                f"devfsd: {DB_NAME}: major row 'bar': 2 left out: major 2 is reserved for mm;"
                " 1 node with major 2 reaches mm now; bar gets a new major when its driver attaches"
            ) in log, log
            c = m.client()
            assert (m.path / "null").read_bytes() == b""  # mm's null, autoloaded at 2
            with pytest.raises(OSError) as ei:
                (m.path / "old").read_bytes()
            assert ei.value.errno == errno.ENXIO
            if "msgq" not in {n for n, _, _ in c.drivers()}:
                c.modload("msgq", isolated=True)  # its host picks the major
            drivers = {n: maj for n, maj, _ in c.drivers()}
            assert drivers["mm"] == 2 and drivers["msgq"] == 257 and "bar" not in drivers
