"""mknod(8) ``-F`` formats: major/minor numbers packed into a ``dev_t``.

Pure: the standard library's ``typing`` and ``collections.abc`` only.

NetBSD's ``sbin/mknod/pack_dev.c`` again: each format packs the numbers,
unpacks the result and compares, so a number too wide for its field is an
error rather than a silently truncated device. The numbers are C
``u_long`` (64-bit) and the unpacked fields ``int32_t``, so a field whose
top bit is set fails the comparison too; ``_field`` keeps that.

- ``native`` is the host's ``makedev``: on Linux (glibc) a 32-bit major and
  a 32-bit minor, encoded as ``devfsd.cdevsw.makedev`` does, so
  ``os.major``/``os.minor`` decode it. (Not ``os.makedev`` itself: CPython
  3.11 takes a C ``int`` there and overflows past 2**31 - 1. Nor
  ``devfsd.cdevsw``: importing it brings in trio.)
- ``netbsd`` is NetBSD's own: major bits 8-19, minor bits 0-7 and 20-31.
- ``linux`` is NetBSD's table entry, the old 8:8 Linux ``dev_t`` (as
  ``386bsd``, ``4bsd``, ``isc``, ``sco``, ``sunos``, ``svr3``, ``ultrix``);
  today's Linux encoding is ``native`` here.
- ``bsdos`` alone takes three numbers (major, unit, subunit: 12:12:8).

Which complaint a doubly bad pair gets is pack_dev.c's too: ``native`` and
``netbsd`` test the major first and stop (``else if``); every other format
tests all fields and keeps the last failure, so ``-F 386bsd`` with major
and minor both too wide says ``invalid minor number``, and ``bsdos`` with
three bad fields ``invalid subunit number``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

__all__ = ["FORMATS", "Pack", "PackError", "makedev", "pack_find", "pack_native"]

#: ``strtoul`` gives at most this (C ``ULONG_MAX`` on LP64).
ULONG_MAX: Final = (1 << 64) - 1

_MAJOR_ERROR: Final = "invalid major number"
_MINOR_ERROR: Final = "invalid minor number"
_UNIT_ERROR: Final = "invalid unit number"
_SUBUNIT_ERROR: Final = "invalid subunit number"
_TOO_MANY: Final = "too many fields for format"


class PackError(ValueError):
    """Numbers that do not fit a format; ``str()`` is mknod's message."""


#: Packs two (``bsdos``: two or three) numbers into a ``dev_t``.
Pack = Callable[[Sequence[int]], int]


def _field(dev: int, mask: int, shift: int) -> int:
    """``(u_long)(int32_t)((dev & mask) >> shift)``, as the C macros compute it."""
    v = ((dev & mask) >> shift) & 0xFFFFFFFF
    if v & 0x80000000:
        v -= 1 << 32
    return v & ULONG_MAX


def _pack_2(maj_mask: int, maj_shift: int, min_mask: int) -> Pack:
    """A format with the major at ``maj_shift`` and the minor at bit 0."""

    def pack(numbers: Sequence[int]) -> int:
        if len(numbers) != 2:
            raise PackError(_TOO_MANY)
        maj, mnr = numbers
        dev = ((maj << maj_shift) & maj_mask) | (mnr & min_mask)
        # pack_dev.c checks both and keeps the last complaint: a bad
        # minor is reported even when the major is bad too.
        if _field(dev, min_mask, 0) != mnr:
            raise PackError(_MINOR_ERROR)
        if _field(dev, maj_mask, maj_shift) != maj:
            raise PackError(_MAJOR_ERROR)
        return dev

    return pack


_pack_8_8: Final = _pack_2(0x0000FF00, 8, 0x000000FF)
_pack_12_20: Final = _pack_2(0xFFF00000, 20, 0x000FFFFF)
_pack_14_18: Final = _pack_2(0xFFFC0000, 18, 0x0003FFFF)
_pack_8_24: Final = _pack_2(0xFF000000, 24, 0x00FFFFFF)
_pack_freebsd: Final = _pack_2(0x0000FF00, 8, 0xFFFF00FF)


def makedev(maj: int, mnr: int) -> int:
    """glibc's ``makedev`` for a 32-bit major and minor (Linux's ``dev_t``).

    Minor bits 0-7 and 20-31, major bits 8-19 and 32-43 of the result.
    """
    return (
        ((maj & 0xFFFFF000) << 32)
        | ((maj & 0x00000FFF) << 8)
        | ((mnr & 0xFFFFFF00) << 12)
        | (mnr & 0x000000FF)
    )


def pack_native(numbers: Sequence[int]) -> int:
    """The host's ``makedev``: glibc takes ``unsigned int`` major and minor."""
    if len(numbers) != 2:
        raise PackError(_TOO_MANY)
    maj, mnr = numbers
    if maj > 0xFFFFFFFF:
        raise PackError(_MAJOR_ERROR)
    if mnr > 0xFFFFFFFF:
        raise PackError(_MINOR_ERROR)
    return makedev(maj, mnr)


def _pack_netbsd(numbers: Sequence[int]) -> int:
    if len(numbers) != 2:
        raise PackError(_TOO_MANY)
    maj, mnr = numbers
    dev = ((maj << 8) & 0x000FFF00) | ((mnr << 12) & 0xFFF00000) | (mnr & 0x000000FF)
    if _field(dev, 0x000FFF00, 8) != maj:
        raise PackError(_MAJOR_ERROR)
    if (_field(dev, 0xFFF00000, 12) | _field(dev, 0x000000FF, 0)) != mnr:
        raise PackError(_MINOR_ERROR)
    return dev


def _pack_bsdos(numbers: Sequence[int]) -> int:
    if len(numbers) == 2:
        return _pack_12_20(numbers)
    if len(numbers) != 3:
        raise PackError(_TOO_MANY)
    maj, unit, subunit = numbers
    dev = ((maj << 20) & 0xFFF00000) | ((unit << 8) & 0x000FFF00) | (subunit & 0x000000FF)
    # Last complaint wins, as in pack_dev.c: subunit, then unit, then major.
    if _field(dev, 0x000000FF, 0) != subunit:
        raise PackError(_SUBUNIT_ERROR)
    if _field(dev, 0x000FFF00, 8) != unit:
        raise PackError(_UNIT_ERROR)
    if _field(dev, 0xFFF00000, 20) != maj:
        raise PackError(_MAJOR_ERROR)
    return dev


#: NetBSD's format table, name for name.
FORMATS: Final[Mapping[str, Pack]] = {
    "386bsd": _pack_8_8,
    "4bsd": _pack_8_8,
    "bsdos": _pack_bsdos,
    "freebsd": _pack_freebsd,
    "hpux": _pack_8_24,
    "isc": _pack_8_8,
    "linux": _pack_8_8,
    "native": pack_native,
    "netbsd": _pack_netbsd,
    "osf1": _pack_12_20,
    "sco": _pack_8_8,
    "solaris": _pack_14_18,
    "sunos": _pack_8_8,
    "svr3": _pack_8_8,
    "svr4": _pack_14_18,
    "ultrix": _pack_8_8,
}


def pack_find(name: str) -> Pack | None:
    """The format called ``name`` (exact, case-sensitive), or ``None``."""
    return FORMATS.get(name)
