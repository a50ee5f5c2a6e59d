"""k_helper2: after NetBSD's ``tests/modules/k_helper2/k_helper2.c``.

A MISC module with nothing but presence, for k_helper's ``prop_recurse``
(t_modctl.c ``cmd_load_recurse``): loaded, it reports
``vendor.k_helper2.present = 1`` through a ``k_helper2`` node.
"""

from __future__ import annotations

import errno

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="k_helper2", cls=ModuleClass.MISC)

REPORT = b"vendor.k_helper2.present = 1\n"


async def k_helper2_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if l.fp is not None:
        l.fp.data = 0  # this open's offset into the report


async def k_helper2_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    fp = uio.lwp.fp
    pos = fp.data if fp is not None and isinstance(fp.data, int) else 0
    n = uio.uiomove(REPORT[pos : pos + uio.resid])
    if fp is not None:
        fp.data = pos + n


k_helper2_cdevsw = Cdevsw(d_open=k_helper2_open, d_read=k_helper2_read)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        devsw_attach("k_helper2", k_helper2_cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(k_helper2_cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
