"""slowimport: a test module whose import takes as long as the test wants.

Its import writes ``started`` in ``$DEVFSD_TEST_SLOWIMPORT`` (a directory)
and then waits, without yielding to anything, until ``go`` appears there
(at most 30 s), as an import reading a large library from a cold disk
would. Its driver reads ``loaded``.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Uio, devsw_attach, devsw_detach, nullclose, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="slowimport", cls=ModuleClass.DRIVER)

_dir = os.environ.get("DEVFSD_TEST_SLOWIMPORT")
if _dir:
    (Path(_dir) / "started").write_text("")
    _deadline = time.monotonic() + 30
    while not (Path(_dir) / "go").exists() and time.monotonic() < _deadline:
        time.sleep(0.01)


async def slowimport_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.uiomove(b"loaded\n")


cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose, d_read=slowimport_read)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("slowimport", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
