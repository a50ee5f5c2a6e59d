"""slowinit: a test driver whose INIT waits, for ever unless told otherwise.

INIT attaches its cdevsw (driver ``slowinit``, which does nothing),
starts a thread of the module's, writes its process id to the file the
string property ``marker`` names (the daemon's, or its host's: a test then
knows INIT runs, and in which process), and waits: while the file the
string property ``hold`` names exists, or, without ``hold``, for ever
(``trio.sleep_forever``). Only a cancellation ends that wait: a modload
whose client goes (tests/integration/test_control_hangup.py). With the
string property ``fini``, FINI writes its process id to that file and
waits while ``hold`` exists, before it detaches.
"""

from __future__ import annotations

import errno
import os

import trio

from devfsd.cdevsw import Cdevsw, DeviceError, devsw_attach, devsw_detach, nullclose, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, kthread_create

MODULE = ModuleInfo(name="slowinit", cls=ModuleClass.DRIVER)

#: INIT's properties, for FINI.
given: Props = {}


cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose)


async def mark(path: object) -> None:
    """Write this process's id to ``path``, whole or not at all."""
    if isinstance(path, str):
        await trio.Path(path + ".tmp").write_text(str(os.getpid()))
        await trio.Path(path + ".tmp").rename(path)


async def hold_while(path: object) -> None:
    """Wait while the file ``path`` exists; for ever if it is not a string."""
    if not isinstance(path, str):
        await trio.sleep_forever()
    while await trio.Path(path).exists():  # noqa: ASYNC110 - a file, no event
        await trio.sleep(0.02)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global given
    if cmd == ModCmd.INIT:
        given = props = props or {}
        devsw_attach("slowinit", cdevsw)
        kthread_create(trio.sleep_forever, name="idle")
        await mark(props.get("marker"))
        await hold_while(props.get("hold"))
    elif cmd == ModCmd.FINI:
        if "fini" in given:
            await mark(given["fini"])
            await hold_while(given.get("hold"))
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
