"""mm(4), reduced: the memory driver's /dev/null, /dev/zero and /dev/full.

Imports only the driver API (``devfsd.cdevsw``, ``devfsd.errors``) and the
standard library. After NetBSD's ``sys/dev/mm.c``; the minor numbers are
NetBSD's ``DEV_NULL``, ``DEV_FULL`` and ``DEV_ZERO`` from ``sys/sys/conf.h``
(1.161; ``sys/dev/mm.h`` declares only the machine-dependent hooks).
``DEV_MEM`` (0) and ``DEV_KMEM`` (1) have no meaning in userland and, like
every other minor, are refused with ``ENXIO`` at open.

=========  =====  =======================  ===========================
node       minor  read                     write
=========  =====  =======================  ===========================
null       2      end of file              takes everything
full       11     zeros, the whole buffer  ``ENOSPC``
zero       12     zeros, the whole buffer  takes everything
=========  =====  =======================  ===========================

/dev/zero is the daemon's cheapest read, so it is what benchmarks of the
I/O path measure: a read hands ``uiomove`` the one preallocated zero buffer,
which ``uiomove`` slices to the request (a memoryview, no copy, no
allocation of the data). A write is "taken" by setting ``uio.resid`` to 0,
as NetBSD does, without copying the caller's bytes.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw import D_MPSAFE, Cdevsw, Minor, minor, nullclose, seltrue
from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from devfsd.cdevsw import Dev, Lwp, Uio

__all__ = ["DEV_FULL", "DEV_NULL", "DEV_ZERO", "ZERO_SIZE", "mm_cdevsw"]

#: Minor 2: reads end of file, writes vanish (NetBSD ``DEV_NULL``).
DEV_NULL: Final = Minor(2)
#: Minor 11: reads zeros, writes fail ``ENOSPC`` (NetBSD ``DEV_FULL``).
DEV_FULL: Final = Minor(11)
#: Minor 12: reads zeros, writes vanish (NetBSD ``DEV_ZERO``).
DEV_ZERO: Final = Minor(12)

#: Bytes of the shared zero buffer: the largest read FUSE sends by default
#: (256 pages of 4 KiB, ``FUSE_MAX_MAX_PAGES``), so a real read is one slice.
#: Larger reads (the in-process harness, a raised ``fs.fuse.max_pages_limit``)
#: take several, joined into one reply.
ZERO_SIZE: Final = 1 << 20

# NetBSD's dev_zero_page: read-only, made once, shared by every read.
_zero: Final = memoryview(bytes(ZERO_SIZE))


async def mm_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    """Open null, zero or full.

    Raises:
        DeviceError: ``ENXIO`` for any other minor.
    """
    if minor(dev) not in (DEV_NULL, DEV_ZERO, DEV_FULL):
        raise DeviceError(errno.ENXIO)


async def mm_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Read: zeros up to ``uio.resid`` (zero, full), or end of file (null).

    Raises:
        DeviceError: ``ENXIO`` for a minor ``mm_open`` refuses (not reached
            through the switch).
    """
    m = minor(dev)
    if m in (DEV_ZERO, DEV_FULL):
        while uio.resid > 0:
            uio.uiomove(_zero)
    elif m != DEV_NULL:
        raise DeviceError(errno.ENXIO)


async def mm_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Write: take the whole count (null, zero) or refuse (full).

    Raises:
        DeviceError: ``ENOSPC`` on full; ``ENXIO`` for a minor ``mm_open``
            refuses (not reached through the switch).
    """
    m = minor(dev)
    if m in (DEV_NULL, DEV_ZERO):
        # NetBSD: uio->uio_resid = 0. The bytes are never looked at.
        uio.offset += uio.resid
        uio.resid = 0
    elif m == DEV_FULL:
        raise DeviceError(errno.ENOSPC)
    else:
        raise DeviceError(errno.ENXIO)


#: mm's entry points. No ioctl (``ENODEV``), as the rest of this reduction.
mm_cdevsw: Final = Cdevsw(
    d_open=mm_open,
    d_close=nullclose,
    d_read=mm_read,
    d_write=mm_write,
    d_poll=seltrue,
    d_flag=D_MPSAFE,
)
