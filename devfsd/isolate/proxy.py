"""The daemon's stand-in for an isolated driver: a ``Cdevsw`` that forwards.

Imports ``hostproc`` (``InFlight``: a reply not taken at once). ``make_proxy``
builds one ``Cdevsw`` per host (per restart: a new host gets a new proxy,
so the switch marks the files opened through the old one dead, ``ENXIO``)
and the supervisor attaches it at every major the module's INIT attached
in the host. specfs and fs call it as any driver: the entry-point time
limit, tracing, ``d_close`` on the last close and ``ENXIO`` after detach
all happen in the daemon as for an in-process driver.

Files. ``d_open`` gives each open a file id and keeps it in the daemon's
``File.data`` (a ``_HostFile``); the host keeps its own ``File`` under that
id. The last close of a dev reaches ``d_close``, which sends ``CLOSE``;
every other close reaches no driver code in the daemon, so the
``_HostFile``'s finaliser has ``RELEASE`` sent when the daemon drops the
``File`` (late: a ``File`` and its ``Lwp`` refer to each other, so the
cyclic GC frees them; and from the loop, not the finaliser, which may run
in the middle of another send: ``HostProcess.release``), and the host
forgets its copy. So that a late
``RELEASE`` does not keep the host from seeing the last close, ``CLOSE``
closes every file of the dev the host still holds that was opened before
it (none of them can still be open in the daemon, or this would not be
the last close; a file opened since has a larger id, until ids start
again at 1 past 32 bits: then every file of the dev it holds, none of
which can have been opened since, the pipe keeping the order:
``HostProcess.new_fid``, ``close_newest``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Final, final

from devfsd.cdevsw._switch import Cdevsw
from devfsd.errors import DeviceError
from devfsd.isolate import protocol as P
from devfsd.isolate.hostproc import InFlight
from devfsd.specfs import SYNC_DONE

if TYPE_CHECKING:
    import struct
    from collections.abc import Awaitable

    from devfsd.cdevsw._dev import Dev
    from devfsd.cdevsw._switch import Lwp
    from devfsd.cdevsw._uio import Uio
    from devfsd.isolate.hostproc import HostProcess

__all__ = ["make_proxy"]


@final
class _HostFile:
    """A daemon ``File``'s ``data``: the id its host knows it by."""

    __slots__ = ("closed", "fid", "host")

    def __init__(self, host: HostProcess, fid: int) -> None:
        self.host = host
        self.fid = fid
        self.closed = False

    def __del__(self) -> None:
        self.host.polls.pop(self.fid, None)
        if not self.closed:
            self.host.release(self.fid)  # (sent from the loop: see release)


_READ: Final = int(P.Kind.READ)
_pack_read: Final = P.READ.pack


def _fields(host: HostProcess, st: struct.Struct, payload: bytes | memoryview) -> tuple[Any, ...]:
    """``st``'s fields at the start of a reply's payload; a payload too
    short for them is a malformed reply: the host is killed (``EIO``)."""
    try:
        return P.unpack(st, payload)
    except P.ProtocolError as exc:
        raise host.refuse(exc) from None


def make_proxy(host: HostProcess) -> Cdevsw:
    """A ``Cdevsw`` whose every entry point is a call into ``host``."""

    def fid_of(l: Lwp) -> int:
        fp = l.fp
        hf = fp.data if fp is not None else None
        if not isinstance(hf, _HostFile) or hf.host is not host:
            raise DeviceError(errno.ENXIO)
        return hf.fid

    async def d_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        fid = host.new_fid()
        try:
            await host.call(P.Kind.OPEN, P.OPEN.pack(dev, flag, l.pid, l.uid, l.gid, fid), dev, l)
        except DeviceError as exc:
            if exc.errno not in (errno.ETIMEDOUT, errno.EINTR):  # (the host may open it yet)
                host.drop_fid(fid)
            raise
        hf = _HostFile(host, fid)
        if l.fp is not None:
            l.fp.data = hf
        # else: dropped at once, and its finaliser releases the host's file

    async def d_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
        fp = l.fp
        hf = fp.data if fp is not None else None
        if isinstance(hf, _HostFile) and hf.host is host:
            hf.closed = True
            host.polls.pop(hf.fid, None)
            try:
                await host.call(P.Kind.CLOSE, P.CLOSE.pack(hf.fid, host.close_newest), dev, l)
            finally:
                host.drop_fid(hf.fid)

    def d_read(dev: Dev, uio: Uio, ioflag: int) -> Awaitable[None] | None:
        # A function, not a coroutine (specfs.SYNC_DONE): most reads end
        # here, their reply taken at once (host.call_now); the others
        # return what awaits it.
        l = uio.lwp
        fp = l.fp  # fid_of(l), inline: every read(2) comes here
        hf = fp.data if fp is not None else None
        if hf.__class__ is not _HostFile or hf.host is not host:
            raise DeviceError(errno.ENXIO)
        n = uio.resid
        got = host.call_now(_READ, _pack_read(hf.fid, n, uio.offset), dev, n)
        if got.__class__ is InFlight:
            return _read_reply(uio, got, l)
        uio.uiomove(got)  # type: ignore[arg-type]
        return None

    setattr(d_read, SYNC_DONE, True)

    async def _read_reply(uio: Uio, c: InFlight, l: Lwp) -> None:
        uio.uiomove(await host.reply(c, l))

    async def d_write(dev: Dev, uio: Uio, ioflag: int) -> None:
        fid = fid_of(uio.lwp)
        off = uio.offset
        data = uio.getbytes()
        try:
            reply = await host.call(P.Kind.WRITE, P.WRITE.pack(fid, off) + data, dev, uio.lwp)
        except BaseException:
            # Nothing was taken (the host's SpecFs answers what its driver
            # took, or an error, never both): as in process, the switch must
            # not see moved bytes, which would turn EINTR/EAGAIN into success.
            uio.resid += len(data)
            uio.offset = off
            raise
        (n,) = _fields(host, P.COUNT, reply)
        left = len(data) - min(n, len(data))  # what the driver did not take
        uio.resid += left
        uio.offset -= left

    async def d_poll(dev: Dev, events: int, l: Lwp) -> int:
        fid = fid_of(l)
        h = l.poll_handle
        fresh = host.arm_poll(fid, h) if h is not None else False
        token = fid if h is not None else 0
        revents, kept = _fields(
            host, P.POLLED, await host.call(P.Kind.POLL, P.POLL.pack(fid, events, token), dev)
        )
        if fresh and not kept and host.polls.get(fid) is h:
            # No selrecord, and no earlier poll of the file armed: no NOTIFY will come.
            del host.polls[fid]
        return int(revents)

    async def d_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
        fp = l.fp
        hf = fp.data if fp is not None else None
        fid = hf.fid if isinstance(hf, _HostFile) and hf.host is host else 0
        body = P.IOCTL.pack(dev, cmd, flag, l.pid, l.uid, l.gid, fid) + bytes(data)
        out = await host.call(P.Kind.IOCTL, body, dev, l)
        n = min(len(out), len(data))
        data[:n] = out[:n]

    return Cdevsw(
        d_open=d_open,
        d_close=d_close,
        d_read=d_read,  # type: ignore[arg-type]
        d_write=d_write,
        d_ioctl=d_ioctl,
        d_poll=d_poll,
    )
