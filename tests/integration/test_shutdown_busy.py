"""The daemon stops while a modload waits in an INIT that never ends.

At umount or SIGTERM the daemon unloads every module under the loader's
lock; a modload in tests/modules/slowinit's INIT held that lock, so the
daemon said "shutting down" and never ended (systemd would have killed it
after its stop timeout). Now the control requests in flight are cancelled
first (the load undone, as when its client goes), then the modules
unload. In process and isolated.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount, tool, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
WAIT = 20.0


@pytest.fixture(params=["in-process", "isolated"])
def mnt(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevfsdMount]:
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path / "d", modpath=[MODS], args=isolate) as m:
        yield m


@pytest.mark.parametrize("how", ["umount", "SIGTERM"])
def test_the_daemon_stops_with_a_modload_in_an_init_that_never_ends(
    mnt: DevfsdMount, tmp_path: Path, how: str
) -> None:
    marker = tmp_path / "in-init"
    daemon = mnt.proc
    assert daemon is not None
    argv = [tool("modload"), "-s", f"marker={marker}", "slowinit"]
    with subprocess.Popen(argv, env=mnt.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        try:
            wait_for(marker.exists, WAIT, "slowinit's INIT")
            host = int(marker.read_text())
            if how == "umount":
                subprocess.run(["umount", str(mnt.path)], check=True)
            else:
                daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(WAIT) == 0, mnt.log_text()
            # Its client is told, not left waiting: the load failed.
            assert p.wait(WAIT) == 1
            assert p.stderr is not None
            assert p.stderr.read() == b"modload: slowinit: Operation canceled\n"
        finally:
            if p.poll() is None:
                p.kill()
    assert not Path(f"/proc/{host}").exists() or host == daemon.pid  # an isolated INIT's host is gone
    log = mnt.log_text()
    assert f"control request 'modload' of 'slowinit' (pid {p.pid}) cancelled: devfsd is stopping" in log
    assert "devfsd stopped" in log
