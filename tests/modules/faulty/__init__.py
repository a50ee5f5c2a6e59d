"""faulty: a test driver with bugs, one per minor; unload is always allowed.

====  ==================================================================
minor read(2)
====  ==================================================================
0     raises ZeroDivisionError
1     works: ``fine``
2     hangs: awaits an event nobody sets (not a WaitChannel sleep)
3     returns 42 from ``d_read`` instead of None
4     ``uiomove`` of a str, not a buffer
5     sleeps on a WaitChannel for ``NAP`` seconds, then ``slept``
====  ==================================================================

Minor 6 returns garbage from ``d_open``. Minor 1 also returns a wrong type
(a str) from poll. Writes always work.
"""

from __future__ import annotations

import errno

import trio

from devfsd.cdevsw import (
    Cdevsw,
    Dev,
    DeviceError,
    Lwp,
    Uio,
    WaitChannel,
    devsw_attach,
    devsw_detach,
    minor,
    nullclose,
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="faulty", cls=ModuleClass.DRIVER)

#: Seconds minor 5 sleeps on its channel (tests run with a shorter
#: ``--entry-timeout``, to show that sleeping does not count).
NAP = 1.0

nap = WaitChannel("faulty")


async def faulty_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if minor(dev) == 6:
        return "garbage"  # type: ignore[return-value]
    return None


async def faulty_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    m = minor(dev)
    if m == 0:
        raise ZeroDivisionError("a driver bug")
    if m == 2:
        await trio.Event().wait()
    if m == 3:
        uio.uiomove(b"lost\n")
        return 42  # type: ignore[return-value]
    if m == 4:
        uio.uiomove("not a buffer")  # type: ignore[arg-type]
    if m == 5:
        try:
            await nap.sleep(uio.lwp, NAP)
        except DeviceError as exc:
            if exc.errno != errno.EWOULDBLOCK:
                raise
        uio.uiomove(b"slept\n")
        return None
    uio.uiomove(b"fine\n")
    return None


async def faulty_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.getbytes()


async def faulty_poll(dev: Dev, events: int, l: Lwp) -> int:
    return "ready"  # type: ignore[return-value]


cdevsw = Cdevsw(
    d_open=faulty_open, d_close=nullclose, d_read=faulty_read, d_write=faulty_write, d_poll=faulty_poll
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("faulty", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
