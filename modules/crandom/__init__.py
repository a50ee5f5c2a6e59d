"""The crandom module: rperm's string permuter (see crandom(4)).

Imports only the driver and module API. Load, make a node, use it::

    modload crandom                 # or: modload -i maxlen=4096 -b oneshot=true crandom
    devfs-mknod /dev/crandom c crandom 0
    echo hello > /dev/crandom
    head -c 6 /dev/crandom          # e.g. "lohel\n"

crandom takes major 420, rperm's, reserved for it in the major table. FINI
refuses (``EBUSY``) while any crandom node is open; AUTOUNLOAD vetoes while
any string is stored, since unloading drops the strings.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from devfsd.errors import DeviceError
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

from .crandom import crandom_attach, crandom_autounload, crandom_detach

if TYPE_CHECKING:
    from devfsd.kern import Props

__all__ = ["MODULE", "modcmd"]

MODULE: Final = ModuleInfo(name="crandom", cls=ModuleClass.DRIVER)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    """crandom's module command.

    Args:
        cmd: ``INIT`` checks ``props`` and attaches; ``FINI`` detaches and
            drops every string; ``AUTOUNLOAD`` allows unless a string is
            stored.
        props: ``maxlen`` (int, 1 to ``MAX_READ``, 1 MiB - 4095, the
            default), ``oneshot`` (bool, default false); other names are
            ignored.

    Returns:
        None (success).

    Raises:
        DeviceError: ``EINVAL`` (INIT: bad property), attach's error (INIT),
            ``EBUSY`` (FINI while a node is open; AUTOUNLOAD while a string
            is stored), ``ENOTTY`` (STAT).
    """
    if cmd == ModCmd.INIT:
        crandom_attach(props)
    elif cmd == ModCmd.FINI:
        crandom_detach()
    elif cmd == ModCmd.AUTOUNLOAD:
        crandom_autounload()
    else:
        raise DeviceError(errno.ENOTTY)
