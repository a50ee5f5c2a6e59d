"""A root host keeps only the capabilities its module needs (issue 14, Security).

Behind a real mount, with tests/modules/probe in the host reporting its
capability sets (``/proc/self/status``) and opening an ``AF_PACKET``
socket, which takes ``CAP_NET_RAW`` and changes nothing: isolated, a
module that declares none runs with none (every set empty, ``EPERM``);
one that declares ``net_raw`` (``ModuleInfo(caps=...)``), or is given it
with ``-s caps=net_raw``, holds that one alone, in every set but the
ambient one, and a restarted host holds the same. Still uid 0, it may
signal the daemon but not ptrace it. In process nothing changes (the
module is the daemon). A host as another user holds none. A host that
cannot drop what it must fails the load with that errno, leaving nothing.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import ControlError
from devfsd.kern.caps import cap_number
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.integration.test_isolation_confine import (
    MODS,
    NOBODY,
    WAIT,
    ask,
    ask_ok,
    daemon_pid,
    needs_nobody,
    proc_status,
)
from tests.integration.test_isolation_confine import base as base  # its fixtures
from tests.integration.test_isolation_confine import mnt as mnt
from tests.nobody import modload_on

if TYPE_CHECKING:
    import subprocess

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

NONE = "0" * 16
NET_RAW = f"{1 << cap_number('net_raw'):016x}"


def caps(m: DevfsdMount) -> dict[str, str]:
    """The probe's host's capability sets, as it reads them itself."""
    return dict(zip(("Inh", "Prm", "Eff", "Bnd", "Amb"), ask(m, "caps").split(), strict=True))


def sets(pid: int) -> dict[str, str]:
    """``pid``'s capability sets, as another process sees them."""
    st = proc_status(pid)
    return {k: st[f"Cap{k}"] for k in ("Inh", "Prm", "Eff", "Bnd", "Amb")}


def probe_declaring(d: Path, declaration: str) -> Path:
    """A copy of probe whose MODULE line is ``declaration``."""
    mod = d / "probe.py"
    src = (MODS / "probe" / "__init__.py").read_text()
    line = 'MODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER)'
    assert line in src
    mod.write_text(src.replace(line, declaration))
    os.chmod(mod, 0o644)
    return mod


def modload(m: DevfsdMount, *args: str, member: bool = False) -> subprocess.CompletedProcess[str]:
    return modload_on(m, *args, member=member)  # nobody may not read the checkout (a clone under /root)


def test_a_root_host_keeps_no_capability_its_module_does_not_declare(mnt: DevfsdMount) -> None:
    mnt.client().modload("probe", isolated=True)
    pid = int(ask(mnt, "pid"))
    assert proc_status(pid)["Uid"].split() == ["0"] * 4
    want = {"Inh": NONE, "Prm": NONE, "Eff": NONE, "Bnd": NONE, "Amb": NONE}
    assert caps(mnt) == want
    assert sets(pid) == want
    assert ask(mnt, "packet") == "EPERM"
    # Still uid 0: root's files and root's processes, the daemon's included
    # (devfsd-module(9), ISOLATION), but no ptrace of one with more capabilities.
    assert ask(mnt, f"kill {daemon_pid(mnt)}") == "ok"
    assert ask(mnt, f"ptrace {daemon_pid(mnt)}") == "EPERM"
    # Not dumpable: another root host (as capable as it) cannot trace it.
    assert ask(mnt, "dumpable") == "0"
    assert f"module probe: host {pid} started, keeping capabilities none" in mnt.log_text()


def test_caps_given_at_load_are_kept_and_only_they(mnt: DevfsdMount) -> None:
    r = modload(mnt, "-I", "-s", "caps=CAP_NET_RAW", "probe")
    assert (r.returncode, r.stderr) == (0, ""), mnt.log_text()
    pid = int(ask(mnt, "pid"))
    want = {"Inh": NONE, "Prm": NET_RAW, "Eff": NET_RAW, "Bnd": NET_RAW, "Amb": NONE}
    assert caps(mnt) == want
    assert ask(mnt, "packet") == "ok"
    assert ask(mnt, f"ptrace {daemon_pid(mnt)}") == "EPERM"
    # A restarted host keeps the same, and INIT never saw the property.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ask_ok(mnt) and int(ask(mnt, "pid")) != pid, WAIT, "the restart")
    assert caps(mnt) == want
    assert sets(int(ask(mnt, "pid"))) == want


def test_caps_the_module_declares_are_kept(mnt: DevfsdMount, base: Path) -> None:
    mod = probe_declaring(
        base, 'MODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER, caps=("net_raw",))'
    )
    mnt.client().modload(str(mod), isolated=True)
    assert caps(mnt) == {"Inh": NONE, "Prm": NET_RAW, "Eff": NET_RAW, "Bnd": NET_RAW, "Amb": NONE}
    assert ask(mnt, "packet") == "ok"
    assert "keeping capabilities net_raw" in mnt.log_text()


def test_caps_declared_other_than_as_a_literal_are_refused(mnt: DevfsdMount, base: Path) -> None:
    c = mnt.client()
    mod = probe_declaring(
        base, 'NEEDS = ("net_raw",)\nMODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER, caps=NEEDS)'
    )
    with pytest.raises(ControlError) as ei:  # before any host starts
        c.modload(str(mod), isolated=True)
    assert ei.value.errno == errno.EINVAL
    assert "write caps as a literal" in str(ei.value)
    # Declared where the daemon does not look: the host refuses it before INIT.
    mod = probe_declaring(
        base, 'if True:\n    MODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER, caps=("net_raw",))'
    )
    with pytest.raises(ControlError) as ei:
        c.modload(str(mod), isolated=True)
    assert ei.value.errno == errno.EPERM
    assert "declares capability net_raw, which its host was not given" in str(ei.value)
    assert c.modstat()["modules"] == []
    c.modload(str(mod))  # in process: the daemon's own, as ever
    assert ask(mnt, "packet") == "ok"


def test_in_process_a_module_has_the_daemons_capabilities(mnt: DevfsdMount) -> None:
    mnt.client().modload("probe")
    assert int(ask(mnt, "pid")) == daemon_pid(mnt)
    assert ask(mnt, "dumpable") == "1"
    assert caps(mnt) == sets(daemon_pid(mnt))
    assert caps(mnt)["Eff"] != NONE
    assert ask(mnt, "packet") == "ok"


def test_caps_property_rules(base: Path) -> None:
    with DevfsdMount(base, modpath=[MODS], args=["--control-group", "65534"]) as m:
        r = modload(m, "-I", "-s", "caps=net_raw", "probe", member=True)
        assert (r.returncode, r.stderr) == (1, "modload: probe: Operation not permitted\n")
        assert "may not give property caps: root's alone" in m.log_text()
        for args in (
            ["-I", "-s", "caps=net_raw,no_such_cap", "probe"],  # not a capability
            ["-s", "caps=net_raw", "probe"],  # in process: the daemon's, all of them
            ["-I", "-s", "caps=net_raw", "-s", "user=nobody", "probe"],  # another user holds none
        ):
            r = modload(m, *args)
            assert (r.returncode, r.stderr) == (1, "modload: probe: Invalid argument\n"), args
        assert m.client().modstat()["modules"] == []


@needs_nobody
def test_a_host_as_another_user_holds_no_capability(mnt: DevfsdMount, base: Path) -> None:
    # Not even those its module declares (the log says so).
    mod = probe_declaring(base, 'MODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER, caps="net_raw")')
    r = modload(mnt, "-I", "-s", "user=nobody", str(mod))
    assert (r.returncode, r.stderr) == (0, ""), mnt.log_text()
    assert "module probe declares caps net_raw: a host run as nobody holds none" in mnt.log_text()
    assert "keeping capabilities none (as nobody), bounding set net_raw" in mnt.log_text()
    got = caps(mnt)
    # Its bounding set is what its module declares (the launcher narrowed
    # it as root); with no_new_privs and nothing permitted, it can gain
    # nothing from it.
    assert got == {"Inh": NONE, "Prm": NONE, "Eff": NONE, "Bnd": NET_RAW, "Amb": NONE}
    assert sets(int(ask(mnt, "pid"))) == got  # as another process sees it
    assert ask(mnt, "packet") == "EPERM"
    assert ask(mnt, "dumpable") == "0"


@needs_nobody
def test_a_host_as_another_user_has_the_bounding_set_its_module_declares(mnt: DevfsdMount) -> None:
    """Not the daemon's whole one: probe declares nothing, so its host as
    nobody has an empty bounding set, in its /proc/PID/status, from its
    start, and so has a restarted host."""
    c = mnt.client()
    c.modload("probe", {"user": "nobody"}, isolated=True)
    pid = int(ask(mnt, "pid"))
    assert proc_status(pid)["Uid"].split() == [str(NOBODY.pw_uid)] * 4
    assert sets(pid) == {"Inh": NONE, "Prm": NONE, "Eff": NONE, "Bnd": NONE, "Amb": NONE}
    assert sets(daemon_pid(mnt))["Bnd"] != NONE  # the daemon's own is untouched
    assert "keeping capabilities none (as nobody), bounding set none" in mnt.log_text()
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: _alive_again(mnt, pid), WAIT, "the host to be restarted")
    again = int(ask(mnt, "pid"))
    assert again != pid and sets(again)["Bnd"] == NONE


def _alive_again(m: DevfsdMount, old: int) -> bool:
    try:
        return int(ask(m, "pid")) != old
    except OSError:
        return False


@needs_nobody
def test_a_host_that_cannot_drop_them_fails_the_load_and_leaves_nothing(base: Path) -> None:
    """A daemon without CAP_SETPCAP starts root hosts that cannot narrow
    their bounding set: the load fails with EPERM and says why; the host
    runs none of the module's code and is gone."""
    wrapper = ["setpriv", "--bounding-set=-setpcap", "--inh-caps=-all"]
    with DevfsdMount(base, modpath=[MODS], args=["--debug"], wrapper=wrapper) as m:
        r = modload(m, "-I", "probe")
        assert (r.returncode, r.stderr) == (1, "modload: probe: Operation not permitted\n"), m.log_text()
        with pytest.raises(ControlError) as ei:
            m.client().modload("probe", isolated=True)
        assert ei.value.errno == errno.EPERM
        why = "host: cannot drop capabilities: cannot narrow the bounding set without CAP_SETPCAP"
        assert why in str(ei.value)
        assert why in m.log_text()  # the host's own line
        assert m.client().modstat()["modules"] == []
        assert m.proc is not None
        children = Path(f"/proc/{m.proc.pid}/task/{m.proc.pid}/children")
        wait_for(lambda: not children.read_text().split(), WAIT, "the host to be gone")
        # As another user it holds nothing to drop: it loads.
        r = modload(m, "-I", "-s", "user=nobody", "probe")
        assert (r.returncode, r.stderr) == (0, ""), m.log_text()
        assert ask(m, "packet") == "EPERM"
