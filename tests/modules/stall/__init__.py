"""stall: a test driver whose code never yields, one way per minor.

====  ==================================================================
minor read(2)
====  ==================================================================
0     spins: ``while True: pass``
1     blocks in a synchronous ``time.sleep(3600)``
2     works: ``fine``
====  ==================================================================

A write to minor 3 starts a module thread that spins after its first
``await``. No ``await`` can be cancelled in any of them: only the stall
watchdog (``devfsd.watchdog``) gets the daemon back.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

import trio

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, devsw_attach, devsw_detach, minor, nullclose
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, current_module, kthread_create

if TYPE_CHECKING:
    from devfsd.kern.loader import LoadedModule

MODULE = ModuleInfo(name="stall", cls=ModuleClass.DRIVER)

#: This module, saved at INIT: entry points start its threads.
me: LoadedModule | None = None


def spin() -> None:
    while True:
        pass


async def stall_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return None


async def stall_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    m = minor(dev)
    if m == 0:
        spin()
    if m == 1:
        time.sleep(3600)  # noqa: ASYNC251 - the bug this minor is for
    uio.uiomove(b"fine\n")


async def spinner() -> None:
    await trio.lowlevel.checkpoint()
    spin()


async def stall_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.getbytes()
    if minor(dev) == 3:
        kthread_create(spinner, name="spinner", module=me)


cdevsw = Cdevsw(d_open=stall_open, d_close=nullclose, d_read=stall_read, d_write=stall_write)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global me
    if cmd == ModCmd.INIT:
        me = current_module()
        devsw_attach("stall", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
