"""crandom: write a string, read uniformly random permutations of it.

Imports the driver API (``devfsd.cdevsw``, ``devfsd.kern``,
``devfsd.errors``), the standard library, numpy and randomgen; nothing else
of devfsd. After rperm, the example driver of S. Sachidanand's "Writing a
NetBSD kernel module" (../shared/reference/netbsd.md, section 1).

Theory of operation
-------------------

*State.* While loaded, the driver holds one ``Crandom``: the load
properties, one string per minor (a ``bytearray``; a minor with no string
has no entry, so a stored string is never empty) and the set of devs with
open files. The per-open state (``OpenState``: has this open written? has it
read?) lives in the open file's ``data`` (NetBSD ``f_data``), set in
``d_open``. The strings outlive every close and are dropped only with the
``Crandom`` at unload; rperm drops its one global buffer at each last close
instead, which makes ``echo hi > node; cat node`` fail.

*Write.* The first write on an open replaces the minor's string, later
writes on the same open append to whatever the minor holds then (so
``cat file > node`` stores the whole file however the kernel splits it).
A first write of 0 bytes clears the string, as rperm's 0-byte write leaves
nothing to read. A write that would make the string longer than
``maxlen`` fails ``EFBIG`` and changes nothing; what earlier writes of the
same open stored stays (as a regular file keeps what was written before the
write that hit ``RLIMIT_FSIZE``).

*Read.* Each read permutes the minor's string afresh (rperm permutes its
last result; both are uniform) and moves all of it, or fails ``EINVAL``
when there is no string or the caller's buffer is shorter (rperm gives no
partial reads). A read never reaches end of file, unless ``oneshot`` is set,
when the second and later reads of an open get end of file. Entry points
run on one trio thread and a read does not await between taking the string
and permuting it, so each read permutes a consistent snapshot; no lock.

*Permutation.* It must be exactly uniform over all n! orders and drawn
from a CSPRNG. ``permute_plain`` is the textbook Fisher-Yates with
``secrets.randbelow`` (the OS CSPRNG, unbiased by rejection); it is
obviously right, and fine for short strings (about 1.2 us a byte), but
takes ~1 s for 1 MiB, as ``random.SystemRandom().shuffle`` does.
``permute_fast`` runs the same Fisher-Yates in C: numpy's
``Generator.shuffle`` (indices by masked rejection sampling, unbiased) over
randomgen's ``ChaCha`` bit generator with 20 rounds, keyed with 32 fresh
bytes of ``os.urandom`` on every read. That bit generator's output is the
RFC 8439 ChaCha20 keystream (a unit test checks it against the
``cryptography`` package's ChaCha20), so the indices come from a CSPRNG
seeded from the OS, as arc4random(3) does. ~25 ms for 1 MiB here.

Tried first: sorting random keys with numpy (exact if ties are re-shuffled):
one comparison sort of 1M 64-bit keys is ~55 ms here, and two stable 16-bit
radix passes over 32-bit keys ~45-57 ms with ``os.urandom``: both miss the
50 ms target that the C shuffle meets with room to spare.

Strings of ``THREAD_MIN`` bytes or more are permuted in a worker thread
(``devfsd.kern.run_in_thread``) on a snapshot, so a 1 MiB read (~25 ms)
does not hold up other requests.
XXX: nothing bounds the total memory of the strings: ``maxlen`` bytes per
minor, and any minor of major 420 may be used.
"""

from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, final

import numpy as np
from randomgen import ChaCha

from devfsd.cdevsw import Cdevsw, devsw_attach, devsw_detach, minor, seltrue
from devfsd.errors import DeviceError
from devfsd.kern import run_in_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from devfsd.cdevsw import Dev, Lwp, Major, Minor, Uio

__all__ = [
    "DEFAULT_MAXLEN",
    "MAX_READ",
    "PLAIN_MAX",
    "Config",
    "Crandom",
    "OpenState",
    "chacha20_generator",
    "crandom_attach",
    "crandom_autounload",
    "crandom_cdevsw",
    "crandom_detach",
    "parse_props",
    "permute",
    "permute_fast",
    "permute_plain",
]

#: What the permutations take: any bytes-like object.
Buffer: TypeAlias = bytes | bytearray | memoryview

#: The kernel's largest FUSE request, in pages: libfuse asks for
#: FUSE_MAX_MAX_PAGES (256), the default of Linux's
#: ``/proc/sys/fs/fuse/max_pages_limit``.
FUSE_MAX_PAGES: Final = 256
#: The memory page size: a read(2) buffer is cut into FUSE requests by pages.
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
#: The longest string a read of its size returns whole through a mount,
#: whatever the buffer's alignment: the kernel carries a read in requests of
#: at most ``FUSE_MAX_PAGES`` pages of the caller's buffer, and a buffer
#: starting one byte before a page boundary spends the first page on one
#: byte. 256 pages of 4 KiB: 1,044,481 bytes (1 MiB - 4095). A longer string
#: could be stored but a read of it would come as two requests, and crandom
#: gives no partial reads (EINVAL): the limit on ``maxlen``. Measured on
#: Linux 6.18: 1,044,481 bytes read whole from buffers at page offsets 0,
#: 1 and 4095; 1,044,482 failed from offset 4095.
MAX_READ: Final = FUSE_MAX_PAGES * PAGE_SIZE - (PAGE_SIZE - 1)
#: Longest string by default (load property ``maxlen``): ``MAX_READ``.
DEFAULT_MAXLEN: Final = MAX_READ
#: Strings up to this many bytes use ``permute_plain``: below it the plain
#: loop (~1.2 us a byte) beats the fast one's fixed ~28 us for a fresh key
#: and generator.
PLAIN_MAX: Final = 24
#: Strings this long or longer are permuted in a worker thread.
THREAD_MIN: Final = 64 * 1024
#: ChaCha20: 20 rounds (randomgen allows fewer; fewer is not ChaCha20).
CHACHA_ROUNDS: Final = 20

# -- permutations -------------------------------------------------------------


def permute_plain(data: Buffer, randbelow: Callable[[int], int] = secrets.randbelow) -> bytes:
    """A uniformly random permutation of ``data``'s bytes: Fisher-Yates.

    The plain version: each of the n! orders comes out with probability
    exactly 1/n! when ``randbelow(k)`` is uniform on ``0 .. k-1``, as
    ``secrets.randbelow`` is (rejection sampling, no modulo bias).

    Args:
        data: the bytes to permute (not changed).
        randbelow: the index source; tests pass a seeded one.

    Returns:
        A new ``bytes`` of the same length.
    """
    buf = bytearray(data)
    for i in range(len(buf) - 1, 0, -1):
        j = randbelow(i + 1)
        buf[i], buf[j] = buf[j], buf[i]
    return bytes(buf)


def chacha20_generator(key: bytes | None = None) -> np.random.Generator:
    """A numpy ``Generator`` drawing from the ChaCha20 keystream of ``key``.

    Args:
        key: 32 bytes; ``None`` (the default, and what the driver uses) for
            32 fresh bytes of ``os.urandom``. The counter starts at 0.

    Returns:
        The generator; its raw 64-bit words are the RFC 8439 keystream with
        an all-zero nonce, read as little-endian words.

    Raises:
        ValueError: ``key`` is not 32 bytes long.
    """
    if key is None:
        key = os.urandom(32)
    if len(key) != 32:
        raise ValueError("a ChaCha20 key is 32 bytes")
    bitgen = ChaCha(key=int.from_bytes(key, "little"), counter=0, rounds=CHACHA_ROUNDS)
    # randomgen's stubs do not derive ChaCha from numpy's BitGenerator, but
    # it has the capsule numpy's Generator takes (randomgen's documented use).
    return np.random.Generator(bitgen)  # type: ignore[arg-type]


def permute_fast(data: Buffer, gen: np.random.Generator | None = None) -> bytes:
    """``permute_plain``'s Fisher-Yates, in C: numpy's ``Generator.shuffle``.

    Args:
        data: the bytes to permute (not changed).
        gen: the generator to draw from; ``None`` (what the driver uses) for
            a fresh ``chacha20_generator()`` keyed from ``os.urandom``.

    Returns:
        A new ``bytes`` of the same length.
    """
    if gen is None:
        gen = chacha20_generator()
    # The frombuffer view is dropped at once: a later in-place append to a
    # stored bytearray must not find it still exported (BufferError).
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    gen.shuffle(arr)
    return arr.tobytes()


def permute(data: Buffer) -> bytes:
    """A uniformly random permutation of ``data`` from the OS's CSPRNG.

    ``permute_plain`` up to ``PLAIN_MAX`` bytes, else ``permute_fast``.
    """
    if len(data) <= PLAIN_MAX:
        return permute_plain(data)
    return permute_fast(data)


# -- the driver's state (pure) ------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The load properties.

    Attributes:
        maxlen: longest string, in bytes (``-i maxlen=N``,
            ``1 <= N <= MAX_READ``).
        oneshot: end of file after one permutation per open
            (``-b oneshot=true``).
    """

    maxlen: int = DEFAULT_MAXLEN
    oneshot: bool = False


def parse_props(props: Mapping[str, str | int | bool] | None) -> Config:
    """Check the load properties; unknown names are ignored, as NetBSD's do.

    Args:
        props: what modload passed (``None`` or a mapping).

    Returns:
        The configuration.

    Raises:
        DeviceError: ``EINVAL`` if ``maxlen`` is not an int (a bool is not
            one) or is below 1 or above ``MAX_READ``, or if ``oneshot`` is
            not a bool.
    """
    if not props:
        return Config()
    maxlen = props.get("maxlen", DEFAULT_MAXLEN)
    if not isinstance(maxlen, int) or isinstance(maxlen, bool) or not 1 <= maxlen <= MAX_READ:
        raise DeviceError(errno.EINVAL)
    oneshot = props.get("oneshot", False)
    if not isinstance(oneshot, bool):
        raise DeviceError(errno.EINVAL)
    return Config(maxlen=maxlen, oneshot=oneshot)


@final
class OpenState:
    """One open's state, kept in its file's ``data``.

    Attributes:
        written: a write on this open succeeded (later ones append).
        read: a read on this open moved a permutation (for ``oneshot``).
    """

    __slots__ = ("read", "written")

    def __init__(self) -> None:
        self.written = False
        self.read = False


@final
class Crandom:
    """Everything crandom holds while loaded.

    Args:
        config: the load properties.
        permute: the permutation (tests may pass another).

    Attributes:
        strings: each minor's string; never empty (no string: no entry).
        open_devs: the devs with open files (``d_open`` adds, the last
            close's ``d_close`` removes).
    """

    def __init__(self, config: Config, permute: Callable[[Buffer], bytes] = permute) -> None:
        self.config = config
        self.permute = permute
        self.strings: dict[Minor, bytearray] = {}
        self.open_devs: set[Dev] = set()

    def write(self, unit: Minor, data: bytes, *, append: bool) -> None:
        """Set (``append`` false) or extend the string of ``unit``.

        Setting it to ``b""`` clears it; appending to a minor with no string
        sets it.

        Raises:
            DeviceError: ``EFBIG`` if the string would be longer than
                ``maxlen``; nothing changes.
        """
        old = self.strings.get(unit)
        if append and old is not None:
            if len(old) + len(data) > self.config.maxlen:
                raise DeviceError(errno.EFBIG)
            old += data
            return
        if len(data) > self.config.maxlen:
            raise DeviceError(errno.EFBIG)
        if data:
            self.strings[unit] = bytearray(data)
        else:
            self.strings.pop(unit, None)

    def permutation(self, unit: Minor, resid: int) -> bytes:
        """A fresh permutation of ``unit``'s string, for a read of ``resid``.

        Raises:
            DeviceError: ``EINVAL`` if ``unit`` has no string or ``resid``
                is shorter than it.
        """
        return self.permute(self._checked(unit, resid))

    def _checked(self, unit: Minor, resid: int) -> bytearray:
        s = self.strings.get(unit)
        if s is None or resid < len(s):
            raise DeviceError(errno.EINVAL)
        return s

    async def permutation_async(self, unit: Minor, resid: int) -> bytes:
        """``permutation``, computed in a worker thread for long strings.

        A long permutation would hold the trio thread (and every other
        request) for tens of milliseconds; from ``THREAD_MIN`` bytes on it
        runs on a snapshot in a worker thread (numpy releases the GIL).
        """
        s = self._checked(unit, resid)
        if len(s) < THREAD_MIN:
            return self.permute(s)
        return await run_in_thread(self.permute, bytes(s))


# -- entry points ---------------------------------------------------------------

_sc: Crandom | None = None


def _softc() -> Crandom:
    if _sc is None:  # not reached through the switch: it detaches us first
        raise DeviceError(errno.ENXIO)
    return _sc


def _open_state(l: Lwp) -> OpenState:
    """The caller's open's state; a throwaway one for a call with no file."""
    fp = l.fp
    if fp is None:
        return OpenState()
    if not isinstance(fp.data, OpenState):
        fp.data = OpenState()
    st: OpenState = fp.data
    return st


async def crandom_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    """Any minor opens; the open gets a fresh ``OpenState``."""
    sc = _softc()
    if l.fp is not None:
        l.fp.data = OpenState()
    sc.open_devs.add(dev)


async def crandom_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    """The last close of ``dev``: it no longer keeps the module loaded.

    The string stays (unlike rperm's).
    """
    _softc().open_devs.discard(dev)


async def crandom_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Move one new permutation of the minor's string, whole.

    Moves nothing (end of file) on an open's second read with ``oneshot``.

    Raises:
        DeviceError: ``EINVAL`` (no string, or ``uio.resid`` too short).
    """
    sc = _softc()
    st = _open_state(uio.lwp)
    if sc.config.oneshot and st.read:
        return
    uio.uiomove(await sc.permutation_async(minor(dev), uio.resid))
    st.read = True


async def crandom_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    """Take the whole write: replace the string (first write on this open)
    or append to it (later writes).

    Raises:
        DeviceError: ``EFBIG`` past ``maxlen`` (the string is unchanged).
    """
    sc = _softc()
    st = _open_state(uio.lwp)
    sc.write(minor(dev), uio.getbytes(), append=st.written)
    st.written = True


#: crandom's entry points; no ioctl (``ENODEV``), as rperm.
crandom_cdevsw: Final = Cdevsw(
    d_open=crandom_open,
    d_close=crandom_close,
    d_read=crandom_read,
    d_write=crandom_write,
    d_poll=seltrue,
)


# -- module glue ------------------------------------------------------------------


def crandom_attach(props: Mapping[str, str | int | bool] | None) -> Major:
    """INIT: check the properties, attach as ``crandom`` (major 420).

    Returns:
        The major.

    Raises:
        DeviceError: ``EINVAL`` (bad property), or attach's error.
    """
    global _sc
    config = parse_props(props)
    maj = devsw_attach("crandom", crandom_cdevsw, -1)
    _sc = Crandom(config)
    return maj


def crandom_detach() -> None:
    """FINI: detach and drop every string.

    Raises:
        DeviceError: ``EBUSY`` while any crandom node is open.
    """
    global _sc
    if _sc is not None and _sc.open_devs:
        raise DeviceError(errno.EBUSY)
    devsw_detach(crandom_cdevsw)
    _sc = None


def crandom_autounload() -> None:
    """AUTOUNLOAD: allow it unless a string is stored (unloading drops it).

    Raises:
        DeviceError: ``EBUSY`` while any minor holds a string.
    """
    if _sc is not None and _sc.strings:
        raise DeviceError(errno.EBUSY)
