"""The mm module: /dev/null, /dev/zero and /dev/full (see mm(4)).

Imports only the driver and module API. Nodes, once loaded::

    modload mm
    devfs-mknod /dev/null c mm 2
    devfs-mknod /dev/full c mm 11
    devfs-mknod /dev/zero c mm 12

mm takes major 2, NetBSD's, reserved for it in the major table. It may be
unloaded while its nodes are open (NetBSD's mm is never unloaded at all):
I/O on those files then fails with ``ENXIO`` from the switch, and nothing
of the driver's is left to go stale.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw import devsw_attach, devsw_detach
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

from .mm import mm_cdevsw

if TYPE_CHECKING:
    from devfsd.kern import Props

__all__ = ["MODULE", "modcmd"]

MODULE: Final = ModuleInfo(name="mm", cls=ModuleClass.DRIVER)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    """mm's module command.

    Args:
        cmd: ``INIT`` attaches the driver (major 2), ``FINI`` detaches it
            (even while nodes are open), ``AUTOUNLOAD`` always allows.
        props: ignored: mm has no load properties.

    Returns:
        None (success).

    Raises:
        DeviceError: ``ENOTTY`` for ``STAT``; from ``INIT``, attach's error
            (``EEXIST`` if the major is taken).
    """
    if cmd == ModCmd.INIT:
        devsw_attach("mm", mm_cdevsw, -1)
    elif cmd == ModCmd.FINI:
        devsw_detach(mm_cdevsw)
    elif cmd == ModCmd.AUTOUNLOAD:
        return None
    else:
        raise DeviceError(errno.ENOTTY)
    return None
