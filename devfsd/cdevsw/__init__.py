"""The device switch: what a driver module uses to be a character device.

The driver API (with ``devfsd.kern``); see devfsd-module(9). Everything a
driver needs is importable from here::

    from devfsd.cdevsw import Cdevsw, DeviceError, Uio, devsw_attach, minor
"""

from __future__ import annotations

from devfsd.cdevsw._dev import MAXDEVSW, MAXMINOR, Dev, Major, Minor, major, makedev, minor
from devfsd.cdevsw._ioccom import IO, IOC_IN, IOC_OUT, IOCPARM_LEN, IOR, IOW, IOWR
from devfsd.cdevsw._switch import (
    D_MPSAFE,
    D_OTHER,
    D_TTY,
    FNONBLOCK,
    FREAD,
    FWRITE,
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    Cdevsw,
    File,
    Lwp,
    noclose,
    noioctl,
    noopen,
    noread,
    nowrite,
    nullclose,
    nullioctl,
    nullopen,
    nullpoll,
    nullread,
    nullwrite,
    seltrue,
)
from devfsd.cdevsw._table import RESERVED_MAJORS, DevswTable, devsw
from devfsd.cdevsw._uio import IO_NDELAY, UIO_READ, UIO_WRITE, Uio
from devfsd.cdevsw._wait import WaitChannel
from devfsd.errors import DeviceError

__all__ = [
    "D_MPSAFE",
    "D_OTHER",
    "D_TTY",
    "FNONBLOCK",
    "FREAD",
    "FWRITE",
    "IO",
    "IOCPARM_LEN",
    "IOC_IN",
    "IOC_OUT",
    "IOR",
    "IOW",
    "IOWR",
    "IO_NDELAY",
    "MAXDEVSW",
    "MAXMINOR",
    "POLLIN",
    "POLLOUT",
    "POLLRDNORM",
    "POLLWRNORM",
    "RESERVED_MAJORS",
    "UIO_READ",
    "UIO_WRITE",
    "Cdevsw",
    "Dev",
    "DeviceError",
    "DevswTable",
    "File",
    "Lwp",
    "Major",
    "Minor",
    "Uio",
    "WaitChannel",
    "devsw",
    "devsw_attach",
    "devsw_detach",
    "major",
    "makedev",
    "minor",
    "noclose",
    "noioctl",
    "noopen",
    "noread",
    "nowrite",
    "nullclose",
    "nullioctl",
    "nullopen",
    "nullpoll",
    "nullread",
    "nullwrite",
    "seltrue",
]


def devsw_attach(name: str, cdevsw: Cdevsw, major: int = -1) -> Major:
    """Attach a driver's entry points under ``name`` (NetBSD ``devsw_attach``).

    Args:
        name: driver name; ``mknod`` and autoload find the driver by it.
        cdevsw: the entry points.
        major: -1 (default) for the name's remembered or reserved major, or
            the lowest free one; or an explicit major.

    Returns:
        The major now serving ``name``.

    Raises:
        DeviceError: ``EINVAL``, ``EEXIST``, ``ENOMEM`` (see ``DevswTable.attach``).
    """
    return devsw.attach(name, cdevsw, major)


def devsw_detach(cdevsw: Cdevsw) -> None:
    """Detach ``cdevsw``; its sleepers wake with ``ENXIO``; the name keeps its major.

    Later calls on files opened through it fail with ``ENXIO``.
    """
    from devfsd.cdevsw._wait import abort_sleepers

    for m in devsw.names_of(cdevsw):
        abort_sleepers(m)
    devsw.detach(cdevsw)
