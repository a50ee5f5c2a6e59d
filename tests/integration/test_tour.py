"""The README's tour, command by command, with the real tools on a real mount.

Mounts come from the ``devfsd_mount`` fixture of devfsd's pytest plugin and
commands run through its ``devfsd_run`` (``devfs`` is a plain mount). The
tests of crandom and mm run both ways: in process, and with every module
isolated (the plugin's ``devfsd_isolated``; modstat's FLAG then has ``i``).
``test_a_driver_crashes_tour`` is the README's second tour, "a driver crashes".
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from devfsd.testing.plugin import MountFactory, RunFn

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"

#: In process, and every module in a host of its own (``devfsd --isolate``).
both_ways = pytest.mark.parametrize("devfsd_isolated", [False, True], ids=["in-process", "isolated"])


def sh(m: DevfsdMount, cmd: str) -> subprocess.CompletedProcess[bytes]:
    env = {**m.env, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", cmd], capture_output=True, env=env, timeout=60, check=False)


def ok(r: subprocess.CompletedProcess[bytes]) -> bytes:
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    return r.stdout


@both_ways
def test_tour(devfsd_mount: MountFactory, devfsd_run: RunFn, devfsd_isolated: bool) -> None:
    devfs = devfsd_mount(args=["--debug"])
    d = devfs.path

    def sh(m: DevfsdMount, cmd: str) -> subprocess.CompletedProcess[bytes]:
        return devfsd_run(cmd, m)

    assert ok(sh(devfs, "modload crandom")) == b""
    assert ok(sh(devfs, f"devfs-mknod {d}/crandom c crandom 0")) == b""
    st = (d / "crandom").stat()
    assert stat.S_IMODE(st.st_mode) == 0o666 & ~_umask()
    assert os.getxattr(d / "crandom", "user.devfsd.driver") == b"crandom"
    assert os.getxattr(d / "crandom", "user.devfsd.major") == b"420"
    assert ok(sh(devfs, f"echo -n 'hello' > {d}/crandom")) == b""
    seen = {ok(sh(devfs, f"head -c 5 {d}/crandom")) for _ in range(30)}
    assert all(sorted(s) == sorted(b"hello") for s in seen)
    assert len(seen) > 1  # 60 orders; 30 reads all alike would be a broken RNG
    out = ok(sh(devfs, "modstat crandom")).decode()
    lines = out.splitlines()
    assert lines[0] == "NAME             CLASS    SOURCE   FLAG  REFS    SIZE REQUIRES "
    flag = "i" if devfsd_isolated else "-"
    assert re.fullmatch(rf"crandom          driver   filesys  {flag}        0 +\d+ -", lines[1]), lines[1]
    # dd reads exactly one permutation per read(2).
    assert len(ok(sh(devfs, f"dd if={d}/crandom bs=5 count=3 status=none"))) == 15
    assert ok(sh(devfs, "modunload crandom")) == b""
    assert ok(sh(devfs, "modstat")).decode().splitlines()[1:] == []


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_tool_errors(devfs: DevfsdMount) -> None:
    r = sh(devfs, "modload crandom && modload crandom")
    assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"modload: crandom: File exists\n")
    r = sh(devfs, "modload nosuchmodule")
    assert (r.returncode, r.stderr) == (1, b"modload: nosuchmodule: No such file or directory\n")
    r = sh(devfs, "modunload nosuchmodule")
    assert (r.returncode, r.stderr) == (1, b"modunload: nosuchmodule: No such file or directory\n")
    r = sh(devfs, "modload -b oneshot=maybe crandom")
    assert (r.returncode, r.stderr) == (1, b"modload: Invalid boolean value `maybe'\n")
    ok(sh(devfs, f"devfs-mknod {devfs.path}/c0 c crandom 0"))
    fd = os.open(devfs.path / "c0", os.O_RDONLY)
    try:
        r = sh(devfs, "modunload crandom")
        assert (r.returncode, r.stderr) == (1, b"modunload: crandom: Device or resource busy\n")
    finally:
        os.close(fd)
    ok(sh(devfs, "modunload crandom"))
    r = sh(devfs, f"devfs-mknod {devfs.path}/x c nosuchdriver 0")
    assert (r.returncode, r.stderr) == (1, b"devfs-mknod: unknown driver: nosuchdriver\n")
    r = sh(devfs, f"devfs-mknod {devfs.path}/c0 c crandom 0")
    assert (r.returncode, r.stderr) == (1, f"devfs-mknod: {devfs.path}/c0: File exists\n".encode())
    r = sh(devfs, f"DEVFSD_CONTROL={devfs.base}/nope.sock modload crandom")
    assert (r.returncode, r.stderr) == (
        1,
        f"modload: {devfs.base}/nope.sock: No such file or directory\n".encode(),
    )


@both_ways
def test_mknod_list_and_autoload_on_open(devfs: DevfsdMount, devfsd_isolated: bool) -> None:
    lines = ok(sh(devfs, "devfs-mknod -l")).decode().splitlines()
    assert "crandom character major 420" in lines and "mm character major 2" in lines
    # The node can be made before the driver is loaded; opening it autoloads.
    ok(sh(devfs, f"devfs-mknod {devfs.path}/zero c mm 12"))
    assert ok(sh(devfs, f"head -c 4 {devfs.path}/zero")) == b"\0\0\0\0"
    rows = ok(sh(devfs, "modstat mm")).decode().splitlines()[1:]
    assert [r.split()[:4] for r in rows] == [["mm", "driver", "filesys", "ai" if devfsd_isolated else "a"]]


@pytest.mark.parametrize("isolate", [[], ["--isolate"]], ids=["in-process", "isolated"])
def test_autoloaded_module_goes_after_a_quiet_period(tmp_path: Path, isolate: list[str]) -> None:
    with DevfsdMount(tmp_path, args=["--autotime", "0.5", *isolate]) as m:
        ok(sh(m, f"devfs-mknod {m.path}/null c mm 2"))
        with open(m.path / "null", "wb", buffering=0) as f:
            f.write(b"x")
            flags = "ai" if isolate else "a"
            assert [r.split()[3] for r in ok(sh(m, "modstat mm")).decode().splitlines()[1:]] == [flags]
            # Open: not quiet, whatever the time.
            time.sleep(1.0)  # a quiet period passes while the node is open
            assert "mm" in m.client().status()["modules"]
        wait_for(lambda: "mm" not in m.client().status()["modules"], 20, "mm to be autounloaded")
        # A modload'ed module never goes by itself.
        ok(sh(m, "modload crandom"))
        time.sleep(1.5)
        assert "crandom" in m.client().status()["modules"]


@both_ways
def test_oneshot_property_reaches_init(devfs: DevfsdMount) -> None:
    ok(sh(devfs, "modload -b oneshot=true crandom"))
    ok(sh(devfs, f"devfs-mknod {devfs.path}/c c crandom 0 && echo -n abc > {devfs.path}/c"))
    out = ok(sh(devfs, f"cat {devfs.path}/c"))
    assert sorted(out) == sorted(b"abc")


@both_ways
def test_cat_file_into_node_stores_it_whole(devfs: DevfsdMount, tmp_path: Path) -> None:
    ok(sh(devfs, "modload crandom"))
    ok(sh(devfs, f"devfs-mknod {devfs.path}/c c crandom 0"))
    data = os.urandom(300_000)
    (tmp_path / "f").write_bytes(data)
    ok(sh(devfs, f"cat {tmp_path}/f > {devfs.path}/c"))
    out = ok(sh(devfs, f"dd if={devfs.path}/c bs=1M count=1 status=none"))
    assert len(out) == len(data) and sorted(out) == sorted(data)


@both_ways
def test_modules_and_nodes_from_the_fixture(devfsd_mount: MountFactory, devfsd_run: RunFn) -> None:
    m = devfsd_mount(modules=["crandom"], nodes={"c0": ("crandom", 0)})
    r = devfsd_run('echo -n abc > "$DEV/c0" && head -c 3 "$DEV/c0" && modstat crandom', m)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout[:3]) == sorted(b"abc")
    assert r.stdout[3:].decode().splitlines()[1].split()[:2] == ["crandom", "driver"]
    r = devfsd_run(["cat", str(m.path / "nosuch")], m, timeout=10)
    assert (r.returncode, r.stdout) == (1, b"")
    assert b"No such file or directory" in r.stderr


def test_a_driver_crashes_tour(tmp_path: Path) -> None:
    """The README's "a driver crashes" tour: crashy isolated segfaults
    under a write; mm goes on; crashy is back; the log and modstat say so."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        d = m.path
        assert ok(sh(m, "modload -I crashy; modload mm")) == b""
        assert ok(sh(m, f"devfs-mknod {d}/crashy c crashy 0; devfs-mknod {d}/zero c mm 12")) == b""
        r = sh(m, f"echo segv > {d}/crashy")
        assert r.returncode != 0
        assert b"I/O error" in r.stderr or b"Input/output error" in r.stderr, r.stderr
        assert ok(sh(m, f"head -c 4 {d}/zero | od -An -c")) == b"  \\0  \\0  \\0  \\0\n"
        # Restarted within a moment (until then, ENXIO: the README says so).
        wait_for(lambda: sh(m, f"head -c 3 {d}/crashy").stdout == b"ok\n", 20, "crashy's restart")
        log = ok(sh(m, f"grep -A3 'killed by' {m.log}")).decode()
        assert re.search(
            r" ERROR devfsd\.isolate: module crashy: host \d+ killed by signal 11 \(SIGSEGV\)"
            r" \((closed its pipe|exited)\); its last output:\n",
            log,
        ), log
        assert "Fatal Python error: Segmentation fault" in m.log_text()
        lines = ok(sh(m, "modstat crashy")).decode().splitlines()
        assert lines[0] == "NAME             CLASS    SOURCE   FLAG  REFS    SIZE REQUIRES "
        assert re.fullmatch(r"crashy           driver   filesys  i        0 +\d+ -", lines[1]), lines[1]
