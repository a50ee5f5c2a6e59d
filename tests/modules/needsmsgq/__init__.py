"""needsmsgq: a misc module that requires msgq."""

from __future__ import annotations

import errno

from devfsd.cdevsw import DeviceError
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="needsmsgq", cls=ModuleClass.MISC, required=("msgq",))


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd not in (ModCmd.INIT, ModCmd.FINI):
        raise DeviceError(errno.ENOTTY)
