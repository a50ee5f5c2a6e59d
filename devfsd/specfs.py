"""The I/O path from an open file to a driver (NetBSD ``spec_vnops.c``).

Imports trio-free device-switch code and the loader, never pyfuse3: the file
system (``fs.py``) and the in-process test harness both call it, so a driver
sees the same calls under pytest as behind a real mount.

What it guarantees to drivers and callers (../shared/reference/netbsd.md 4.4):

- ``d_open`` on every open; ``d_close`` only on the last close of a ``dev``
  (counted over every node and open file with that ``dev``).
- Opening a ``dev`` whose major has a name but no driver autoloads the
  module of that name and retries; no driver at all is ``ENXIO``. The
  autoload is part of the open, so it is bounded: not loaded within
  ``AUTOLOAD_FACTOR`` times ``entry_timeout`` (the lock's wait, a host's
  start and INIT included), it is cancelled and undone and the open gets
  ``ETIMEDOUT``; the opener's signal ends its own wait with ``EINTR``
  (``ModuleLoader.autoload``). An open of a node whose autoload is under
  way waits for it, even once INIT has attached the driver.
- A file keeps the ``Cdevsw`` it was opened through; once that is detached
  (module unloaded), read, write and ioctl give ``ENXIO`` and poll
  ``POLLERR``; the last close still runs no driver code.
- A 0-byte read returns ``b""`` without calling the driver; a read never
  returns more than asked (``Uio`` enforces it).
- An exception other than ``DeviceError`` from a driver, ``BaseException``
  included (``SystemExit``, ``KeyboardInterrupt``, groups: see
  ``devfsd.contain``), is logged with its traceback and becomes ``EIO`` for
  that call only; so does a wrong return (``d_open``/``d_read``/``d_write``/
  ``d_ioctl``/``d_close`` return ``None``, ``d_poll`` a mask of poll bits),
  with a log line naming the value, and a uio left with more moved than
  asked for.
- An entry point awake for longer than ``entry_timeout`` seconds is
  cancelled, the stack it was stuck in is logged and the caller gets
  ``ETIMEDOUT``, also when it waits inside cancel scopes of its own (time
  asleep in ``WaitChannel.sleep`` does not count; see
  ``devfsd.cdevsw._wait``). XXX: only an ``await`` can be cancelled, and
  not inside a shielded scope of the driver's until that ends. A driver
  that never yields (a synchronous loop, blocking code) is interrupted by
  the stall watchdog (``devfsd.watchdog``) with ``DriverStall``, which
  becomes ``ETIMEDOUT`` here.

Tracing (``devfsd trace``, ``devfsd.trace``): ``trace`` is ``None`` unless a
tracer is attached (``tracing``), and each entry point's call tests it once
to choose between the bare call and the same call through the hub. That
test is all an untraced daemon pays; keep it the only one on the read path.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import time
import types
from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

from trio.lowlevel import current_task

from devfsd import _trioloop
from devfsd.cdevsw._dev import Dev, major
from devfsd.cdevsw._ioccom import IOC_IN, IOC_OUT, IOCPARM_LEN
from devfsd.cdevsw._switch import FNONBLOCK, FREAD, FWRITE, File, Lwp
from devfsd.cdevsw._table import devsw
from devfsd.cdevsw._uio import IO_NDELAY, UIO_READ, Uio
from devfsd.cdevsw._wait import call_limited, finish_limited
from devfsd.contain import contain
from devfsd.errors import DeviceError
from devfsd.trace import TraceHub
from devfsd.watchdog import DriverStall

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator

    from devfsd.cdevsw._switch import Cdevsw
    from devfsd.cdevsw._uio import Buffer
    from devfsd.kern.loader import ModuleLoader
    from devfsd.trace import Tracer

__all__ = [
    "AUTOLOAD_FACTOR",
    "DEFAULT_ENTRY_TIMEOUT",
    "SYNC_DONE",
    "S_IFCHR_MODE",
    "SpecFs",
    "open_flags_to_fflag",
]

log = logging.getLogger(__name__)

S_IFCHR_MODE: Final = 0o020000
_POLLERR: Final = select.POLLERR
_ALL_EVENTS: Final = select.POLLIN | select.POLLOUT | select.POLLRDNORM | select.POLLWRNORM
#: The largest mask ``d_poll`` may answer (poll(2)'s ``short revents``).
_POLL_BITS: Final = 0xFFFF
#: The attribute that marks a ``d_read``/``d_write`` (a function) as one
#: that may finish without a coroutine: it returns ``None`` when it has
#: done its work, else an awaitable for the rest, which runs as any
#: entry point's. Not for drivers (their entry points are coroutines): an
#: isolated module's proxy, whose read mostly ends at once (the host's
#: reply read in the same step), spares its coroutine that way. Unmarked,
#: ``None`` is what a driver's forgotten ``async`` returns: its bug (EIO).
SYNC_DONE: Final = "devfsd_sync_done"
#: Seconds an entry point may stay awake (not asleep on a WaitChannel).
DEFAULT_ENTRY_TIMEOUT: Final = 10.0
#: An autoload's limit, in entry-point limits: it starts a module (an
#: isolated one's host is a new interpreter: 0.15-0.7 s measured on a
#: loaded 2-CPU machine), not one call; 20 s by default.
AUTOLOAD_FACTOR: Final = 2


def open_flags_to_fflag(flags: int) -> int:
    """Linux open(2) flags to NetBSD ``FREAD|FWRITE|FNONBLOCK``."""
    acc = flags & os.O_ACCMODE
    f = {os.O_RDONLY: FREAD, os.O_WRONLY: FWRITE, os.O_RDWR: FREAD | FWRITE}.get(acc, FREAD)
    if flags & os.O_NONBLOCK:
        f |= FNONBLOCK
    return f


@final
class SpecFs:
    """Open files on device numbers, and the calls into their drivers.

    Args:
        loader: the module list, for autoload (``None``: no autoload).
        entry_timeout: seconds an entry point may run awake before it is
            cancelled with ``ETIMEDOUT`` (``None``: no limit).
    """

    def __init__(
        self, loader: ModuleLoader | None = None, entry_timeout: float | None = DEFAULT_ENTRY_TIMEOUT
    ) -> None:
        self.loader = loader
        self.entry_timeout = entry_timeout
        self.opens: Counter[Dev] = Counter()
        self.files: set[File] = set()
        self._hub = TraceHub(time.time_ns, time.perf_counter_ns)
        #: The hub while a tracer is attached, else ``None`` (the one test
        #: the I/O path makes for tracing).
        self.trace: TraceHub | None = None
        if loader is not None:
            loader.open_count = self.open_count
        devsw.on_detach(self._detached)

    def _detached(self, cdev: Cdevsw) -> None:
        """``cdev`` left the switch: the files opened through it are dead
        (``ENXIO``), even if it, or another, is attached at the major again."""
        for fp in self.files:
            if fp.cdevsw is cdev:
                fp.cdevsw = None

    @contextmanager
    def tracing(self, tracer: Tracer) -> Iterator[None]:
        """Attach ``tracer`` for the ``with`` block; detached however it ends."""
        self._hub.attach(tracer)
        self.trace = self._hub
        try:
            yield
        finally:
            self._hub.detach(tracer)
            self.trace = self._hub if self._hub.tracers else None

    @property
    def tracers(self) -> int:
        """Tracers attached (``devfsd trace`` clients; status reports it)."""
        return len(self._hub.tracers)

    def open_count(self, maj: int) -> int:
        """Open files on any ``dev`` of major ``maj``."""
        return sum(n for d, n in self.opens.items() if major(d) == maj)

    def _hung(self, what: str) -> None:
        # Called with the Cancelled in flight: its traceback is the stack
        # the driver was stuck in.
        # (None on the public path when the driver caught it and answered.)
        stack = sys.exc_info()[0] is not None
        log.error("driver %s still running after %g s: cancelled", what, self.entry_timeout, exc_info=stack)

    async def _call(self, what: str, coro: Awaitable[object]) -> object:
        """Await one entry point under the time limit.

        Raises:
            DeviceError: the driver's, ``EIO`` for any other exception,
                ``ETIMEDOUT`` past ``entry_timeout``.
        """
        try:
            rv, hung = await call_limited(coro, self.entry_timeout, self._hung, what)
        except DriverStall:  # the watchdog interrupted it (and logged where)
            raise DeviceError(errno.ETIMEDOUT) from None
        except BaseException as exc:
            raise contain(exc, f"driver {what}") from None
        if hung:
            raise DeviceError(errno.ETIMEDOUT)
        return rv

    async def _call_none(self, what: str, coro: Awaitable[object]) -> None:
        """``_call`` for an entry point that must return ``None``."""
        rv = await self._call(what, coro)
        if rv is not None:
            _wrong_return(what, rv)

    async def open(self, dev: Dev, flags: int, pid: int, uid: int, gid: int) -> File:
        """Open ``dev`` for a caller; ``flags`` are open(2)'s.

        Raises:
            DeviceError: ``ENXIO`` (no driver), ``ETIMEDOUT`` (its autoload
                past its limit), ``EINTR`` (a signal for the caller while
                it waits for the autoload), or ``d_open``'s error.
        """
        maj = major(dev)
        cdev = devsw.lookup(maj)
        loader = self.loader
        if loader is not None and (cdev is None or loader.autoloads):
            # No driver, or one whose autoload is under way (in process, INIT
            # may attach it before it returns): wait for that load's end.
            name = devsw.getname(maj)
            if name is not None and (cdev is None or name in loader.autoloads):
                limit = AUTOLOAD_FACTOR * self.entry_timeout if self.entry_timeout else None
                await loader.autoload(name, Lwp(pid, uid, gid), limit)
                cdev = devsw.lookup(maj)
        if cdev is None:
            raise DeviceError(errno.ENXIO)
        fp = File(dev, open_flags_to_fflag(flags), pid, uid, gid)
        fp.cdevsw = cdev
        # Count the open before d_open sleeps, so a racing last close of
        # another file does not run d_close under it.
        self.opens[dev] += 1
        try:
            call = self._call_none("d_open", cdev.d_open(dev, fp.flag, S_IFCHR_MODE, fp.lwp))
            if self.trace is None:
                await call
            else:
                await self.trace.call(call, "open", dev, pid, fp.flag)
        except BaseException:
            self._drop(dev)
            raise
        if devsw.lookup(maj) is not cdev:
            fp.cdevsw = None  # detached while d_open ran: the file is dead
        self.files.add(fp)
        if self.loader is not None:
            self.loader.note_use(maj)
        return fp

    def _drop(self, dev: Dev) -> bool:
        n = self.opens[dev] - 1
        if n <= 0:
            del self.opens[dev]
            return True
        self.opens[dev] = n
        return False

    def _live(self, fp: File) -> Cdevsw:
        cdev = fp.cdevsw  # None once detached (_detached)
        if cdev is None:
            raise DeviceError(errno.ENXIO)
        return cdev

    async def read(self, fp: File, size: int, offset: int = 0) -> Buffer:
        """One read(2) of at most ``size`` bytes.

        Raises:
            DeviceError: ``ENXIO`` after detach, or ``d_read``'s error;
                bytes already moved win over ``EINTR``/``EWOULDBLOCK``.
        """
        if size <= 0:
            return b""
        # self._live(fp), inlined: this is the path every read(2) takes.
        cdev = fp.cdevsw
        if cdev is None:
            raise DeviceError(errno.ENXIO)
        uio = Uio(UIO_READ, offset, size, fp.lwp, IO_NDELAY if fp.flag & FNONBLOCK else 0)
        if self.trace is None:
            rest = self._rw("d_read", cdev.d_read, fp, uio)
            if rest is not None:
                await rest
        else:
            await self.trace.rw(self._rw_traced("d_read", cdev.d_read, fp, uio), "read", fp.dev, fp.pid, uio)
        out = uio.moved()
        if len(out) > size or (out.__class__ is not memoryview and out.__class__ is not bytes):
            _bad_uio("d_read", f"moved {len(out)} bytes as {type(out).__name__} for a read of {size}")
        return out

    def read_now(self, fp: File, size: int, offset: int = 0) -> Buffer | Coroutine[Any, Any, Buffer]:
        """``read``, as a plain function: its data when the driver finished
        in its first step (most do; taken inline only on the fast path,
        ``_rw``), else a coroutine to await for it (the rest of the call,
        or all of it while a tracer is attached). For a
        module host, which answers a ``READ`` without a coroutine of its own
        around it; the daemon's ``DevFs.read`` awaits ``read``.

        Raises:
            DeviceError: as ``read``.
        """
        if size <= 0:
            return b""
        if self.trace is not None:
            return self.read(fp, size, offset)
        cdev = fp.cdevsw
        if cdev is None:
            raise DeviceError(errno.ENXIO)
        uio = Uio(UIO_READ, offset, size, fp.lwp, IO_NDELAY if fp.flag & FNONBLOCK else 0)
        rest = self._rw("d_read", cdev.d_read, fp, uio)
        if rest is not None:
            return self._read_rest(rest, uio, size)
        out = uio.moved()
        if len(out) > size or (out.__class__ is not memoryview and out.__class__ is not bytes):
            _bad_uio("d_read", f"moved {len(out)} bytes as {type(out).__name__} for a read of {size}")
        return out

    async def _read_rest(self, rest: Awaitable[None], uio: Uio, size: int) -> Buffer:
        """``read_now``'s call whose driver did not finish in its first step."""
        await rest
        out = uio.moved()
        if len(out) > size or (out.__class__ is not memoryview and out.__class__ is not bytes):
            _bad_uio("d_read", f"moved {len(out)} bytes as {type(out).__name__} for a read of {size}")
        return out

    async def write(self, fp: File, data: Buffer, offset: int = 0) -> int:
        """One write(2); returns the bytes the driver took.

        Raises:
            DeviceError: ``ENXIO`` after detach, or ``d_write``'s error;
                bytes already taken win over ``EINTR``/``EWOULDBLOCK``.
        """
        cdev = self._live(fp)
        uio = Uio.for_write(data, fp.lwp, offset, IO_NDELAY if fp.flag & FNONBLOCK else 0)
        size = uio.resid
        if self.trace is None:
            rest = self._rw("d_write", cdev.d_write, fp, uio)
            if rest is not None:
                await rest
        else:
            traced = self._rw_traced("d_write", cdev.d_write, fp, uio)
            await self.trace.rw(traced, "write", fp.dev, fp.pid, uio)
        resid = uio.resid
        if resid.__class__ is not int or not 0 <= resid <= size:
            # Checked before any arithmetic: a driver's resid may be anything.
            _bad_uio("d_write", f"left resid {resid!r:.40} of {size}")
        return size - resid

    def _rw(
        self, what: str, fn: Callable[[Dev, Uio, int], Awaitable[object] | None], fp: File, uio: Uio
    ) -> Awaitable[None] | None:
        """Run ``d_read``/``d_write``: ``_call_none``, but bytes already
        moved win over ``EINTR``, ``EWOULDBLOCK`` and ``ETIMEDOUT``.

        Not a coroutine, for speed: the driver's first step runs here, and
        most drivers finish in it (this runs on every read(2) and write(2);
        a coroutine of ours around it cost ~0.4 us a call). Returns ``None``
        when the call is over, else what the caller must await for the
        rest (``_rw_rest``).
        """
        size = uio.resid
        timeout = self.entry_timeout
        try:
            coro = fn(fp.dev, uio, uio.ioflag)
            if timeout is None or _trioloop.PRIVATE is None or coro.__class__ is not _COROUTINE:
                # (Also an entry point that is not an ``async def``, whose
                # awaitable has no first step to take here; or one marked
                # ``SYNC_DONE`` that has finished without one: ``None``.)
                if coro is None and getattr(fn, SYNC_DONE, False):
                    return None
                return self._rw_rest(what, coro, None, None, uio, size)  # type: ignore[arg-type]
            # call_limited(coro, ...), its first step inlined (a fast path).
            status = current_task()._cancel_status
            first = coro.send(None)
        except StopIteration as stop:
            if stop.value is not None:
                _wrong_return(what, stop.value)
            return None
        except BaseException as exc:
            _rw_failed(exc, what, uio.resid != size, fp)
            return None
        return self._rw_rest(what, coro, first, status, uio, size)

    async def _rw_rest(
        self, what: str, coro: Coroutine[Any, Any, object], first: object, status: object, uio: Uio, size: int
    ) -> None:
        """The rest of ``_rw`` once the driver's first step yielded ``first``
        (or, with no time limit or no fast paths, all of it: ``status`` is ``None``)."""
        try:
            if status is None:
                if self.entry_timeout is None:
                    rv, hung = await coro, False
                else:
                    rv, hung = await call_limited(coro, self.entry_timeout, self._hung, what)
            else:
                timeout = self.entry_timeout or 0.0
                rv, hung = await finish_limited(coro, first, status, timeout, self._hung, what)
        except BaseException as exc:
            _rw_failed(exc, what, uio.resid != size, uio.lwp.fp)
            return
        if hung:
            if uio.resid == size:
                raise DeviceError(errno.ETIMEDOUT)
        elif rv is not None:
            _wrong_return(what, rv)

    async def _rw_traced(
        self, what: str, fn: Callable[[Dev, Uio, int], Awaitable[object]], fp: File, uio: Uio
    ) -> None:
        rest = self._rw(what, fn, fp, uio)
        if rest is not None:
            await rest

    async def poll(self, fp: File, events: int = _ALL_EVENTS, poll_handle: object = None) -> int:
        """Readiness of ``fp``; ``POLLERR`` once its driver is gone."""
        try:
            cdev = self._live(fp)
        except DeviceError:
            return _POLLERR
        l = Lwp(fp.pid, fp.uid, fp.gid, fp, poll_handle)
        call = self._call("d_poll", cdev.d_poll(fp.dev, events, l))
        if self.trace is None:
            rv = await call
        else:
            rv = await self.trace.call(call, "poll", fp.dev, fp.pid, events)
        if rv.__class__ is not int or not 0 <= rv <= _POLL_BITS:
            log.error("driver d_poll returned %.100r, not an int mask of poll bits", rv)
            return _POLLERR
        # Answered without selrecord (something is ready): keep the handle
        # for the next EWOULDBLOCK on this file (``_poll_again``), else an
        # EPOLLET poller that drains the file never hears of the next
        # arrival (devfsd-module(9), EPOLLET).
        if poll_handle is not None:
            fp.poll_kept = l.poll_handle
        return rv

    async def ioctl(self, dev: Dev, cmd: int, data: bytes, l: Lwp, flag: int = FREAD | FWRITE) -> bytes:
        """``d_ioctl`` on ``dev``, with NetBSD's parameter rules (sys_ioctl).

        The driver gets a ``bytearray`` of exactly the size ``cmd`` encodes:
        ``data`` copied in (cut or zero-padded) for ``IOC_IN`` commands,
        zeros otherwise; the caller gets it back only for ``IOC_OUT``.

        Raises:
            DeviceError: ``ENXIO`` (no driver), or ``d_ioctl``'s error.
        """
        cdev = devsw.lookup(major(dev))
        if cdev is None:
            raise DeviceError(errno.ENXIO)
        size = IOCPARM_LEN(cmd)
        buf = bytearray(data[:size].ljust(size, b"\0")) if cmd & IOC_IN else bytearray(size)
        caller = Lwp(l.pid, l.uid, l.gid, l.fp, dev=dev)
        call = self._call_none("d_ioctl", cdev.d_ioctl(dev, cmd, buf, flag, caller))
        if self.trace is None:
            await call
        else:
            await self.trace.call(call, "ioctl", dev, l.pid, cmd, size)
        return bytes(buf[:size]) if cmd & IOC_OUT else b""

    async def close(self, fp: File) -> None:
        """Release ``fp``; the last close of its ``dev`` runs ``d_close``.

        Errors from ``d_close`` are logged: close(2) has already returned.
        """
        if fp not in self.files:
            return
        self.files.discard(fp)
        chans = fp.selchans
        if chans is not None:  # its recorded polls go with it
            fp.selchans = None
            for chan in chans:
                chan.seldrain(fp)
        if not self._drop(fp.dev):
            return
        cdev = fp.cdevsw  # None once detached (_detached): no driver code
        if cdev is None:
            return
        try:
            call = self._call_none("d_close", cdev.d_close(fp.dev, fp.flag, S_IFCHR_MODE, fp.lwp))
            if self.trace is None:
                await call
            else:
                await self.trace.call(call, "close", fp.dev, fp.pid, fp.flag)
        except DeviceError as exc:
            log.debug("d_close of %#x: %s", fp.dev, exc)


def _rw_failed(exc: BaseException, what: str, moved: bool, fp: File | None) -> None:
    """What a ``d_read``/``d_write`` exception on ``fp`` becomes; call in its ``except``.

    Returns (the call succeeds with what it moved) only if bytes were
    already ``moved`` and the error is ``EINTR``, ``EWOULDBLOCK`` or the
    watchdog's interruption; raises the ``DeviceError`` the caller gets
    otherwise (``EIO`` for a driver's bug, logged with its traceback).
    """
    if isinstance(exc, DriverStall):  # the watchdog interrupted it (and logged where)
        if moved:
            return
        raise DeviceError(errno.ETIMEDOUT) from None
    err = contain(exc, f"driver {what}")  # re-raises the daemon's own cancellation
    if moved and err.errno in (errno.EINTR, errno.EWOULDBLOCK):
        return
    if err.errno == errno.EWOULDBLOCK and fp is not None and fp.poll_kept is not None:
        _poll_again(fp)
    raise err from None


def _poll_again(fp: File) -> None:
    """Notify ``fp``'s kept poll handle: the file just stopped being ready.

    A driver records a poll (``selrecord``) only when its condition is not
    ready, and the kernel polls a file again only when notified. An
    edge-triggered epoll is notified once per edge and then, after the
    consumer has read to ``EAGAIN``, waits without polling: the driver
    never saw a poll it could record, and the next arrival would go
    unannounced. Notifying here, before the ``EAGAIN`` reply leaves, puts
    the file back on epoll's ready list; its next ``epoll_wait`` polls the
    driver, which finds nothing ready and records the poll, so the next
    ``wakeup()`` makes the next edge. Level-triggered pollers are polled
    once more, harmlessly.
    """
    h, fp.poll_kept = fp.poll_kept, None
    try:
        h.notify()
    except (OSError, RuntimeError) as exc:  # the poller is gone
        log.debug("poll notify failed: %s", exc)


_COROUTINE: Final = types.CoroutineType


def _wrong_return(what: str, rv: object) -> NoReturn:
    log.error("driver %s returned %.100r, not None", what, rv)
    raise DeviceError(errno.EIO)


def _bad_uio(what: str, how: str) -> NoReturn:
    log.error("driver %s %s", what, how)
    raise DeviceError(errno.EIO)
