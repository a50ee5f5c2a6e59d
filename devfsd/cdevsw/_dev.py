"""Device numbers: ``Major``, ``Minor``, ``Dev`` and ``makedev``.

Pure: imports nothing outside the standard library's ``typing``.

A ``Dev`` is encoded exactly as Linux (and, for majors below 4096 and minors
below 2**20, NetBSD) encode ``dev_t``: minor bits 0-7 and 20-31, major bits
8-19 and 32-43. ``os.makedev`` gives the same numbers, so ``st_rdev`` from
``mknod(2)`` on the mount decodes here unchanged.
"""

from __future__ import annotations

from typing import Final, NewType

__all__ = ["MAXDEVSW", "MAXMINOR", "Dev", "Major", "Minor", "major", "makedev", "minor"]

Major = NewType("Major", int)
Minor = NewType("Minor", int)
Dev = NewType("Dev", int)

#: Majors are 0 .. MAXDEVSW - 1, as NetBSD's ``MAXDEVSW``.
MAXDEVSW: Final = 512
#: Largest minor Linux's dev_t carries (20 bits).
MAXMINOR: Final = (1 << 20) - 1


def makedev(maj: int, mnr: int) -> Dev:
    """Encode a major and a minor as a ``Dev`` (Linux ``makedev``)."""
    return Dev(((maj & 0xFFFFF000) << 32) | ((maj & 0xFFF) << 8) | ((mnr & 0xFFFFFF00) << 12) | (mnr & 0xFF))


# major() and minor() run on every read and write (the switch's liveness
# check, drivers' minor dispatch). The plain version wraps the result,
# ``return Major(...)``; calling a NewType costs a call (~40 ns on CPython
# 3.11) for nothing at run time, so the hot path returns the int unwrapped.


def major(dev: int) -> Major:
    """The major number of ``dev``."""
    return ((dev >> 32) & 0xFFFFF000) | ((dev >> 8) & 0xFFF)  # type: ignore[return-value]


def minor(dev: int) -> Minor:
    """The minor number of ``dev``."""
    return ((dev >> 12) & 0xFFFFFF00) | (dev & 0xFF)  # type: ignore[return-value]
