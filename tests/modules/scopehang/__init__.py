"""scopehang: a test driver whose reads wait inside trio cancel scopes of their own.

The time limit's scope is added only once an entry point is past its first
step, and must then go *under* whatever scopes the driver is inside (see
``devfsd.cdevsw._wait.call_limited``). One case per minor; unload is
always allowed.

====  ==================================================================
minor read(2)
====  ==================================================================
0     hangs inside ``with trio.move_on_after(3600)``
1     hangs inside ``with trio.CancelScope()``
2     hangs inside three nested scopes
3     sleeps on a WaitChannel for ``NAP`` seconds, then hangs (not asleep)
4     in a shielded scope: a ``trio.sleep(SHIELD)``, then hangs outside it
5     hangs in a scope, catches the ``Cancelled`` and answers ``caught``
6     awaits in scopes held across several awaits, and in one of its own
      that times out after ``OWN`` seconds; then answers ``own``
7     in a scope of its own, sleeps on a WaitChannel for ``NAP`` seconds;
      then answers ``slept``
8     hangs in a scope, catches the ``Cancelled``, then hangs again
9     in a nursery, waits for a child task that hangs
10    sleeps on a WaitChannel for ``NAP`` seconds (its first step, so the
      limit's scope is not in yet), then does so again inside a scope of
      its own, then hangs inside that scope
11    sleeps on a WaitChannel for ``NAP`` seconds, then answers ``slept``
====  ==================================================================

Writes always work.
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
    nullopen,
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="scopehang", cls=ModuleClass.DRIVER)

#: Seconds minors 3 and 7 sleep on their channel, and minor 4 is shielded;
#: tests run with a shorter limit.
NAP = 1.0
SHIELD = 1.0
#: Minor 6's own timeout; tests run with a longer limit.
OWN = 0.1

nap = WaitChannel("scopehang")


async def _nap(l: Lwp) -> None:
    try:
        await nap.sleep(l, NAP)
    except DeviceError as exc:
        if exc.errno != errno.EWOULDBLOCK:
            raise


async def scopehang_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    m = minor(dev)
    if m == 0:
        with trio.move_on_after(3600):
            await trio.sleep_forever()
    elif m == 1:
        with trio.CancelScope():
            await trio.sleep_forever()
    elif m == 2:
        with trio.CancelScope(), trio.move_on_after(3600), trio.CancelScope():
            await trio.sleep_forever()
    elif m == 3:
        await _nap(uio.lwp)
        await trio.Event().wait()
    elif m == 4:
        with trio.CancelScope(shield=True):
            await trio.sleep(SHIELD)
        await trio.sleep_forever()
    elif m == 5:
        with trio.CancelScope():
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                uio.uiomove(b"caught\n")
                return
    elif m == 6:
        with trio.move_on_after(3600):
            for _ in range(3):
                await trio.lowlevel.checkpoint()
        with trio.CancelScope():
            await trio.lowlevel.checkpoint()
            with trio.move_on_after(OWN):
                await trio.sleep_forever()
        uio.uiomove(b"own\n")
    elif m == 7:
        with trio.CancelScope():
            await _nap(uio.lwp)
        uio.uiomove(b"slept\n")
    elif m == 8:
        try:
            with trio.CancelScope():
                await trio.sleep_forever()
        except trio.Cancelled:
            pass
        await trio.sleep_forever()
    elif m == 9:
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep_forever)
    elif m == 10:
        await _nap(uio.lwp)
        with trio.move_on_after(3600):
            await _nap(uio.lwp)
            await trio.sleep_forever()
    elif m == 11:
        await _nap(uio.lwp)
        uio.uiomove(b"slept\n")
    else:
        raise DeviceError(errno.ENXIO)


async def scopehang_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.getbytes()


cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose, d_read=scopehang_read, d_write=scopehang_write)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("scopehang", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
