"""badinit: attaches a cdevsw and starts a thread, then fails INIT (ENOSPC)
unless loaded with ``-b ok=true``. The loader must leave nothing behind."""

from __future__ import annotations

import errno

import trio
import trio.lowlevel

from devfsd.cdevsw import Cdevsw, DeviceError, devsw_attach, devsw_detach, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, kthread_create

MODULE = ModuleInfo(name="badinit", cls=ModuleClass.DRIVER)

cdevsw = Cdevsw(d_open=nullopen)
thread_running = False


async def spin() -> None:
    global thread_running
    thread_running = True
    try:
        await trio.sleep_forever()
    finally:
        thread_running = False


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("badinit", cdevsw)
        kthread_create(spin, name="spin")
        await trio.lowlevel.checkpoint()
        if not (props or {}).get("ok"):
            raise DeviceError(errno.ENOSPC)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
