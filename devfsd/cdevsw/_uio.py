"""``Uio``: one read(2) or write(2) as a driver sees it.

Pure: no trio, no pyfuse3. A ``Uio`` is made by the file system for each
READ or WRITE request and handed to ``d_read``/``d_write``. As NetBSD's
``struct uio`` it knows its direction (``rw``), the caller's ``offset``,
how much is left to move (``resid``) and the caller (``lwp``). Drivers move
data only through ``uiomove`` (or ``getbytes`` on a write), which never
moves more than ``resid``: the kernel refuses a READ reply longer than the
request, so this is the one place that guarantees it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from devfsd.cdevsw._switch import Lwp

#: What ``uiomove`` accepts: anything with the buffer protocol of bytes.
Buffer = bytes | bytearray | memoryview

__all__ = ["IO_NDELAY", "UIO_READ", "UIO_WRITE", "Buffer", "Uio"]

UIO_READ: Final = 0
UIO_WRITE: Final = 1

#: ``ioflag`` bit: the file is non-blocking (``O_NONBLOCK`` at open).
IO_NDELAY: Final = 0x10

#: The data of a read uio: never written (a read moves nothing in), so one
#: empty view serves them all instead of a new one per READ.
_NO_DATA: Final = memoryview(b"")


class Uio:
    """One transfer between a caller's buffer and a driver.

    Attributes:
        rw: ``UIO_READ`` (driver to caller) or ``UIO_WRITE`` (caller to driver).
        offset: the file position the caller is at (devices may ignore it).
        resid: bytes still to move; starts at the caller's size.
        ioflag: ``IO_NDELAY`` when the open file is non-blocking.
        lwp: the caller (pid, uid, gid of the opener; the open file).
    """

    __slots__ = ("_chunks", "_data", "_pos", "ioflag", "lwp", "offset", "resid", "rw")

    def __init__(
        self,
        rw: int,
        offset: int,
        resid: int,
        lwp: Lwp,
        ioflag: int = 0,
        data: Buffer | None = None,
    ) -> None:
        self.rw = rw
        self.offset = offset
        self.resid = resid
        self.lwp = lwp
        self.ioflag = ioflag
        self._chunks: list[Buffer] = []
        self._data = memoryview(data).cast("B") if data is not None else _NO_DATA
        self._pos = 0

    @classmethod
    def for_read(cls, size: int, lwp: Lwp, offset: int = 0, ioflag: int = 0) -> Uio:
        """A uio for a read(2) of ``size`` bytes."""
        return cls(UIO_READ, offset, size, lwp, ioflag)

    @classmethod
    def for_write(cls, data: Buffer, lwp: Lwp, offset: int = 0, ioflag: int = 0) -> Uio:
        """A uio for a write(2) of ``data``."""
        n = memoryview(data).nbytes
        return cls(UIO_WRITE, offset, n, lwp, ioflag, data)

    @property
    def nonblock(self) -> bool:
        """True if the caller must not sleep (``IO_NDELAY``)."""
        return bool(self.ioflag & IO_NDELAY)

    def uiomove(self, buf: Buffer) -> int:
        """Move bytes between ``buf`` and the caller, never past ``resid``.

        On a read, copies ``min(len(buf), resid)`` bytes of ``buf`` to the
        caller. ``buf`` is referenced, not copied, until the reply is sent:
        the caller must not change it before the entry point returns. On a
        write, fills ``buf`` (which must be writable) from the caller's data.

        Returns:
            The number of bytes moved.
        """
        # Plain: mv = memoryview(buf).cast("B"); n = min(mv.nbytes, self.resid).
        # bytes, bytearray and views of them are already flat bytes: casting
        # them anyway made a second view on every READ.
        mv = memoryview(buf)
        if mv.itemsize != 1 or mv.ndim != 1:
            mv = mv.cast("B")
        n = len(mv)
        if n > self.resid:
            n = self.resid
            mv = mv[:n]
        if n <= 0:
            return 0
        if self.rw == UIO_READ:
            self._chunks.append(mv)
        else:
            mv[:n] = self._data[self._pos : self._pos + n]
            self._pos += n
        self.resid -= n
        self.offset += n
        return n

    def getbytes(self, n: int | None = None) -> bytes:
        """On a write: take up to ``n`` (default: all remaining) bytes.

        Returns:
            The bytes taken, at most ``resid`` of them.

        Raises:
            ValueError: on a read uio.
        """
        if self.rw != UIO_WRITE:
            raise ValueError("getbytes() on a read uio")
        if n is None or n > self.resid:
            n = self.resid
        if n <= 0:
            return b""
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        self.resid -= n
        self.offset += n
        return out

    def moved(self) -> Buffer:
        """On a read: everything ``uiomove`` sent, as one buffer (for the reply)."""
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)
