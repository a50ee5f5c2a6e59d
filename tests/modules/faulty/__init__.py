"""faulty: a test driver with bugs. Minor 0 raises in read; minor 1 returns
a wrong type from poll; writes always work; unload is always allowed."""

from __future__ import annotations

import errno

from devfsd.cdevsw import (
    Cdevsw,
    Dev,
    DeviceError,
    Lwp,
    Uio,
    devsw_attach,
    devsw_detach,
    minor,
    nullclose,
    nullopen,
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="faulty", cls=ModuleClass.DRIVER)


async def faulty_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    if minor(dev) == 0:
        raise ZeroDivisionError("a driver bug")
    uio.uiomove(b"fine\n")


async def faulty_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.getbytes()


async def faulty_poll(dev: Dev, events: int, l: Lwp) -> int:
    return "ready"  # type: ignore[return-value]


cdevsw = Cdevsw(
    d_open=nullopen, d_close=nullclose, d_read=faulty_read, d_write=faulty_write, d_poll=faulty_poll
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("faulty", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
