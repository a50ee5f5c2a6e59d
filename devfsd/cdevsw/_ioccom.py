"""ioctl command encoding, as NetBSD's ``sys/sys/ioccom.h``.

Pure. ``IOW(ord("t"), 90, 4)`` is ``_IOW('t', 90, int)``. The size in a
command is how many bytes ``data`` holds when ``d_ioctl`` is called.
"""

from __future__ import annotations

from typing import Final

__all__ = ["IO", "IOCPARM_LEN", "IOC_IN", "IOC_OUT", "IOC_VOID", "IOR", "IOW", "IOWR"]

IOCPARM_MASK: Final = 0x1FFF
IOC_VOID: Final = 0x20000000
IOC_OUT: Final = 0x40000000
IOC_IN: Final = 0x80000000


def _ioc(inout: int, group: int, num: int, length: int) -> int:
    if not 0 <= length <= IOCPARM_MASK:
        raise ValueError(f"ioctl parameter length {length} out of range")
    return inout | ((length & IOCPARM_MASK) << 16) | ((group & 0xFF) << 8) | (num & 0xFF)


def IO(group: int, num: int) -> int:
    return _ioc(IOC_VOID, group, num, 0)


def IOR(group: int, num: int, length: int) -> int:
    return _ioc(IOC_OUT, group, num, length)


def IOW(group: int, num: int, length: int) -> int:
    return _ioc(IOC_IN, group, num, length)


def IOWR(group: int, num: int, length: int) -> int:
    return _ioc(IOC_IN | IOC_OUT, group, num, length)


def IOCPARM_LEN(cmd: int) -> int:
    """The parameter size encoded in ``cmd``."""
    return (cmd >> 16) & IOCPARM_MASK
