"""The module host: an isolated module's own process.

``python -m devfsd.isolate.host FD REPLYFD [SHMFD]``: the daemon starts
it with the read end of the pipe its requests come down as descriptor
FD, the write end of another its replies go up as REPLYFD (``hostproc``,
"Two pipes"), and its shared buffer (a sealed memfd, ``protocol``'s
"Shared memory") as SHMFD (and nothing else but stdin on /dev/null and
stderr on a pipe the daemon logs), sends ``LOAD``, and from then on the
host is a small devfsd of one module: its own trio loop, its own device
switch, module loader, ``SpecFs`` (the entry-point time limit, EIO for a
driver's bug), sleep clock and stall watchdog. The module runs its usual
code against the usual ``devfsd.cdevsw``/``devfsd.kern`` API, unchanged.

Touches the world: the pipes, stderr, rlimits, prctl (``_confine``), its
capabilities (``main`` drops all but those the daemon lets it keep,
before it serves: ``confine.drop_capabilities``). The task reading
the pipe answers each request itself; when one waits (a read may sleep
for hours), another task takes over the pipe (``_Handoff``), so
requests never queue behind one that sleeps; ``CANCEL`` cancels it (the
cancel scope of the task that kept it: a request that does not wait never
enters one). Having answered, the reader waits for the next request
without leaving its step while trio's loop has nothing to do: with no
deadline in trio's heap (mm, crandom), in one ``epoll_wait(2)`` on a
set of its own (made once: ``_idle_waiter``) holding the pipe and
trio's own epoll descriptor, with no timeout (nothing trio could
wake for comes meanwhile but through that descriptor, which ends the
wait: a worker thread's end, a signal, a driver's socket); with one, in
``select(2)`` up to ``SYNC_WAIT`` or the deadline
(``_trioloop.wait_idle_readable``): a daemon reading a node in a loop
sends its next request within tens of microseconds, and the host's loop
does not turn between two requests. A ``READ`` alone in what either
wait reads (the usual request) is answered from the reader's buffer,
without a ``Message``, and, when its driver finishes in its first step
(mm, crandom), without a coroutine of the host's either (``_read_now``,
``SpecFs.read_now``).
``PING`` is answered by the loop itself, at once: the daemon's heartbeat
proves the loop is not stuck. The host exits when the requests' pipe
ends (the daemon unloaded the module, or died: ``PR_SET_PDEATHSIG``
kills a host stuck in C then too).
"""

from __future__ import annotations

import ctypes
import errno
import faulthandler
import functools
import logging
import mmap
import os
import resource
import select
import signal
import struct
import sys
import types
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd import _trioloop
from devfsd.cdevsw._dev import Dev
from devfsd.cdevsw._switch import FNONBLOCK, Lwp
from devfsd.cdevsw._table import devsw
from devfsd.cdevsw._wait import forget_interrupt, interrupt_sleep, no_proc_checks, no_shares
from devfsd.errors import DevfsdError, DeviceError
from devfsd.isolate import confine
from devfsd.isolate import protocol as P
from devfsd.isolate._channel import ENDED, RECV_SIZE, Sender, receive, split
from devfsd.kern import trust
from devfsd.kern.loader import ModuleLoader, _loading_in
from devfsd.kern.module import ModCmd
from devfsd.kern.props import check_props
from devfsd.specfs import SpecFs
from devfsd.watchdog import Watchdog

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from devfsd.cdevsw._switch import File
    from devfsd.cdevsw._uio import Buffer
    from devfsd.kern.loader import LoadedModule

__all__ = ["Host", "main"]

log = logging.getLogger("devfsd.host")

_PR_SET_PDEATHSIG: Final = 1
_PR_SET_DUMPABLE: Final = 4
_PR_SET_NO_NEW_PRIVS: Final = 38
#: The longest the reader blocks the host's thread waiting for the next
#: request after answering one (seconds), while the loop is idle but has
#: a deadline (with none, it waits as long as it takes: see above).
SYNC_WAIT: Final = 0.0005
#: Requests the reader takes that way in a row before it lets trio's loop
#: turn once all the same (a checkpoint: it then goes on waiting as before).
SYNC_RUN: Final = 64


@final
class _PollToken:
    """What the host's ``SpecFs.poll`` passes as the poll handle: a
    ``selrecord`` then ``wakeup`` sends ``NOTIFY`` with the daemon's token,
    once per ``POLL`` that armed it (``Host.armed``): the daemon keeps one
    armed poll per file (the token is the file id) and forgets it at its
    first ``NOTIFY``; the kernel then polls again, which arms it again.
    Other handles of the file a driver recorded meanwhile send nothing."""

    __slots__ = ("__weakref__", "host", "token")

    def __init__(self, host: Host, token: int) -> None:
        self.host = host
        self.token = token

    def notify(self) -> None:
        armed = self.host.armed
        if self.token in armed:
            armed.discard(self.token)
            self.host.out.send(P.encode(P.Kind.NOTIFY, self.token))


_READ: Final = int(P.Kind.READ)
_READ_ARGS: Final = P.READ
_READ_SIZE: Final = P.READ.size
_REPLY: Final = int(P.Kind.REPLY)
_REPLY_SHM: Final = int(P.Kind.REPLY_SHM)
_READ_SLOT: Final = P.READ_SLOT
#: A ``READ`` that lends a slot of the shared buffer: its fields, then the slot's.
_READ_SLOTTED: Final = P.READ.size + P.READ_SLOT.size
_HEADER: Final = P.HEADER
_HEADER_SIZE: Final = P.HEADER.size
#: Whole ``READ`` messages, header and body, without a slot and with one.
_READ_WHOLE: Final = _HEADER_SIZE + _READ_SIZE
_READ_SLOTTED_WHOLE: Final = _HEADER_SIZE + _READ_SLOTTED
_READ_LENGTHS: Final = frozenset({_READ_WHOLE, _READ_SLOTTED_WHOLE})
#: Where a whole ``READ``'s slot is.
_SLOT_AT: Final = _HEADER_SIZE + _READ_SIZE
#: A whole ``REPLY_SHM``: the header, then its count (``SHM_REPLY``).
_SHM_HEAD: Final = struct.Struct("<IBII")
_SHM_REPLY_SIZE: Final = P.SHM_REPLY.size
_REPLY_HEAD: Final = P.REPLY_HEAD
_ERRNO_SIZE: Final = P.ERRNO.size
_COROUTINE: Final = types.CoroutineType

#: Kinds the reader handles at once, without a task (no reply, or PING's).
_INLINE_KINDS: Final = frozenset(
    {P.Kind.PING, P.Kind.CANCEL, P.Kind.INTERRUPT, P.Kind.RELEASE, P.Kind.REPLY, P.Kind.NOTIFY}
)


@final
class _Handoff(trio.abc.Instrument):
    """Sees the reader's request wait (its task step ends while it answers
    one) and has another task take over the pipe at once; and keeps
    ``Host.due``: the tasks trio has scheduled and not yet stepped, in its
    run queue or in the batch it is running (which no public or private
    object shows: trio takes a batch out of its run queue before it runs
    it). The reader waits for a request without a bound only while that
    is empty: else a task of its own batch would wait behind it."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.due = host.due

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        self.due.add(task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.due.discard(task)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.host._inline:
            self.host._hand_off()


@final
class Host:
    """Serves one module's entry points to the daemon: its requests come
    down the pipe end ``fd``, its replies go up ``reply``."""

    def __init__(
        self,
        fd: int,
        reply: int,
        shm: int = -1,
        *,
        caps: int = 0,
        refused: DeviceError | None = None,
    ) -> None:
        #: The requests' pipe end (non-blocking, as ``reply``).
        self.fd = fd
        os.set_blocking(fd, False)
        #: The daemon's shared buffer (``protocol``, "Shared memory"), if it gave one.
        self.shm: mmap.mmap | None = None
        if shm >= 0:
            try:
                self.shm = mmap.mmap(shm, P.SHM_SLOTS * P.SHM_SLOT)
            except (OSError, ValueError) as exc:  # reads answer on the pipe
                log.warning("no shared buffer: %s", exc)
            finally:
                os.close(shm)
        os.set_blocking(reply, False)
        self.out = Sender(reply)
        self.rx = P.Receiver()
        self.files: dict[int, File] = {}
        #: Poll tokens armed by a ``POLL`` and not yet notified (``_PollToken``).
        self.armed: set[int] = set()
        #: Each request being answered: its cancel scope and task.
        self.tasks: dict[int, tuple[trio.CancelScope, trio.lowlevel.Task]] = {}
        self.loader: ModuleLoader | None = None
        self.spec: SpecFs | None = None
        self.module: LoadedModule | None = None
        self.watchdog: Watchdog | None = None
        self._nursery: trio.Nursery | None = None
        self._buf = bytearray(RECV_SIZE)
        #: Messages read but not yet dispatched (the reader's, in order).
        self._todo: deque[P.Message] = deque()
        #: Tasks scheduled and not yet stepped (``_Handoff``).
        self.due: set[trio.lowlevel.Task] = set()
        #: The task reading the pipe (None: being handed off).
        self._reading: trio.lowlevel.Task | None = None
        #: The reader while it answers a request itself, the request's id,
        #: and the reader's cancel scope (which a CANCEL of it cancels, once
        #: it waits).
        self._inline: trio.lowlevel.Task | None = None
        self._inline_rid = 0
        self._inline_scope: trio.CancelScope | None = None
        #: The capabilities the daemon let it keep (a mask), and why the
        #: host could not drop the others (``LOAD`` then fails with it).
        self.caps = caps
        self.refused = refused
        #: The readers' wait while trio is idle (``_idle_waiter``).
        self._idle: select.epoll | None = None

    async def run(self) -> None:
        """Serve until the daemon closes the requests' pipe."""
        _trioloop.fast_instruments()
        _trioloop.fast_io_wakeups()
        handoff = _Handoff(self)
        trio.lowlevel.add_instrument(handoff)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.out.run)
                nursery.start_soon(self._reader)
        finally:
            trio.lowlevel.remove_instrument(handoff)
            if self._idle is not None:
                self._idle.close()
            if self.watchdog is not None:
                self.watchdog.stop()

    async def _reader(self) -> None:
        """Read the pipe and answer requests in this task, one after the
        other, while they answer without waiting (a read of mm's zero). The
        first that waits (a sleep, a lock, a checkpoint) makes ``_Handoff``
        start another reader; this task then finishes its request and ends.
        No task per request, no loop turn between a request and its reply,
        nor, while requests keep coming, between a reply and the next request."""
        me = trio.lowlevel.current_task()
        self._reading = me
        todo = self._todo
        fd = self.fd
        due = self.due
        rx = self.rx
        buf = self._buf
        bufs = (buf,)
        fds = (fd,)
        # The loop's state, tested here between two requests (None: the fast
        # paths are off), and the wait on the pipe and trio's epoll
        # descriptor while trio has nothing to do.
        parts = _trioloop.idle_parts()
        if parts is not None:
            runq, jobs, jobs_once, deadlines = parts.runq, parts.jobs, parts.jobs_once, parts.deadlines
            wait_idle = self._idle_waiter(parts.epoll_fd)
        run = 0
        # The request being answered: its id, and its Message, or None for a
        # READ and its fields (taken from the buffer, or from its Message).
        taken = False  # a READ taken straight from the buffer, below
        rid = fid = size = off = 0
        slot = -1
        m: P.Message | None
        with trio.CancelScope() as scope:
            while True:
                answered = False
                while taken or todo:
                    if taken:
                        taken, m = False, None
                    else:
                        m = todo.popleft()
                        if m.kind in _INLINE_KINDS:
                            self._dispatch(m)
                            continue
                        rid, body = m.rid, m.body
                        if m.kind == _READ and len(body) >= _READ_SIZE:
                            fid, size, off = _READ_ARGS.unpack_from(body)
                            slot = (
                                _READ_SLOT.unpack_from(body, _READ_SIZE)[0]
                                if len(body) >= _READ_SLOTTED
                                else -1
                            )
                            m = None
                    rest = None
                    if m is None:  # a READ: answered here if its driver needs no second step
                        rest = self._read_now(rid, fid, size, off, slot)
                        if rest is None:
                            answered = True
                            continue
                    self._inline = me
                    self._inline_rid = rid
                    self._inline_scope = scope
                    try:
                        await self._answer(rid, m, slot, rest)
                    finally:
                        if self._inline is me:
                            self._inline = None
                    if self._reading is not me:  # handed off while it waited
                        return
                    answered = True
                if answered and run >= SYNC_RUN:
                    run = 0
                    await trio.lowlevel.checkpoint()  # the loop turns once, then on as before
                msgs: list[P.Message] | None = []
                if answered:
                    ready = False  # whether the next request may be taken at once
                    if due:  # a task waits to run (in this batch, or the next)
                        pass
                    elif parts is not None and not (runq or jobs or jobs_once or deadlines._heap):
                        # Nothing for trio to do until its epoll descriptor
                        # says so: wait for that or the pipe, however long.
                        woke = wait_idle()
                        ready = len(woke) == 1 and woke[0][0] == fd
                    elif _trioloop.wait_idle_readable(fds, SYNC_WAIT):
                        ready = True
                    if ready:  # receive_now(fd, rx, buf), inline
                        run += 1
                        try:
                            n = os.readv(fd, bufs)
                        except BlockingIOError:
                            n = -1
                        except OSError as exc:
                            if exc.errno not in ENDED:
                                raise
                            n = 0
                        if n in _READ_LENGTHS:
                            # A READ alone, the usual request: answered from
                            # the buffer, no Message (its fields are read
                            # before it may wait: another reader then reuses buf).
                            length, kind, rid = _HEADER.unpack_from(buf)
                            if kind == _READ and length + _HEADER_SIZE == n and not rx.pending:
                                fid, size, off = _READ_ARGS.unpack_from(buf, _HEADER_SIZE)
                                slot = -1 if n == _READ_WHOLE else _READ_SLOT.unpack_from(buf, _SLOT_AT)[0]
                                taken = True
                                continue
                        if n > 0:
                            one = rx.whole(buf, n)
                            if one is not None:
                                todo.append(one)
                                continue
                            msgs = split(rx, buf, n)
                        elif n == 0:
                            msgs = None
                if msgs == []:
                    run = 0
                    msgs = await receive(fd, rx, buf)
                if msgs is None:
                    assert self._nursery is not None
                    self._nursery.cancel_scope.cancel()
                    return
                todo.extend(msgs)

    def _idle_waiter(self, trio_fd: int) -> Callable[[], list[tuple[int, int]]]:
        """The wait for the pipe or trio's epoll descriptor ``trio_fd``,
        unbounded: the descriptors ready. An epoll set of the host's own,
        made once and shared by its readers (one at a time waits): a
        ``poll(2)`` would add and remove a wait on both at every request."""
        if self._idle is None:
            self._idle = select.epoll(2)
            self._idle.register(self.fd, select.EPOLLIN)
            self._idle.register(trio_fd, select.EPOLLIN)
        # maxevents 2: with the default, each call allocates a 1023-event array.
        return functools.partial(self._idle.poll, -1, 2)

    def _hand_off(self) -> None:
        """The request being answered in the reader waits: a CANCEL of it
        now cancels the reader's scope (the reader ends with the request),
        and another reader takes the pipe."""
        if self._inline_scope is not None and self._inline is not None:
            self.tasks[self._inline_rid] = (self._inline_scope, self._inline)
        self._inline = None
        self._inline_scope = None
        self._reading = None
        assert self._nursery is not None
        self._nursery.start_soon(self._reader)

    def _dispatch(self, m: P.Message) -> None:
        kind = m.kind
        if kind == P.Kind.PING:
            self.out.send(P.reply(m.rid))
        elif kind == P.Kind.CANCEL:
            req = self.tasks.get(m.rid)
            if req is not None:
                req[0].cancel()
        elif kind == P.Kind.INTERRUPT:
            # Not asleep now (not yet, or between sleeps): its next sleep ends.
            req = self.tasks.get(m.rid)
            if req is not None:
                interrupt_sleep(req[1])
        elif kind == P.Kind.RELEASE:
            fid = P.unpack(P.FID, m.body)[0]
            self.armed.discard(fid)
            fp = self.files.pop(fid, None)
            if fp is not None and self.spec is not None:
                assert self._nursery is not None
                self._nursery.start_soon(self.spec.close, fp)
        else:
            raise P.ProtocolError(errno.EBADMSG, f"{P.Kind(kind).name} sent to a host")

    def _read_now(
        self, rid: int, fid: int, size: int, off: int, slot: int
    ) -> Coroutine[Any, Any, Buffer] | None:
        """Answer request ``rid``, a ``READ`` of ``size`` bytes at ``off`` of
        file ``fid`` (``slot``: the shared buffer's slot it lent, or -1),
        without a coroutine of the host's when its driver finishes in its
        first step (``SpecFs.read_now``), as most do; else the rest of the
        read, for ``_answer`` to await (None: answered)."""
        more: Buffer = b""
        try:
            spec = self.spec
            if spec is None:
                raise DeviceError(errno.ENXIO, "no module loaded")
            fp = self.files.get(fid)
            if fp is None:
                raise DeviceError(errno.EBADF)
            data = spec.read_now(fp, size, off)
            if data.__class__ is _COROUTINE:
                return data
            n = len(data)  # type: ignore[arg-type]
            if n < P.SHM_MIN:  # (_read_reply's first case, inline)
                out = _REPLY_HEAD.pack(_ERRNO_SIZE + n, _REPLY, rid, 0) + data  # type: ignore[operator]
            else:
                out, more = self._read_reply(rid, data, slot)  # type: ignore[arg-type]
        except DevfsdError as exc:
            out = P.error_reply(rid, exc)
        except Exception:
            log.exception("request READ failed")
            out = P.reply(rid, errno.EIO)
        except trio.Cancelled:  # (a driver's first step that saw the end: as _answer)
            self.out.send(P.reply(rid, errno.EINTR))
            raise
        self.out.send(out, more)
        return None

    def _read_reply(self, rid: int, data: Buffer, slot: int) -> tuple[bytes, Buffer]:
        """The reply to ``READ`` ``rid`` whose driver gave ``data`` (``slot``
        as ``_read_now``'s): what to send, and a payload to send after it."""
        n = len(data)
        if n < P.SHM_MIN:  # reply_head's, joined to the data: one buffer to send
            return _REPLY_HEAD.pack(_ERRNO_SIZE + n, _REPLY, rid, 0) + data, b""
        if self.shm is not None and 0 <= slot < P.SHM_SLOTS and n <= P.SHM_SLOT:
            # Into the slot it lent: REPLY_SHM with the count.
            start = slot * P.SHM_SLOT
            self.shm[start : start + n] = data
            return _SHM_HEAD.pack(_SHM_REPLY_SIZE, _REPLY_SHM, rid, n), b""
        return P.reply_head(rid, n), data  # the header, then the data as it is

    async def _answer(
        self, rid: int, m: P.Message | None, slot: int = -1, rest: Awaitable[Buffer] | None = None
    ) -> None:
        """Answer request ``rid``: ``m``, or (``None``) a ``READ`` whose
        driver did not finish in its first step, ``rest`` (``_read_now``'s;
        ``slot`` as there)."""
        more: Buffer = b""
        try:
            if m is not None:
                out = await self._do(m)
            else:
                assert rest is not None
                out, more = self._read_reply(rid, await rest, slot)
        except DevfsdError as exc:
            out = P.error_reply(rid, exc)
        except Exception:
            log.exception("request %s failed", P.Kind(_READ if m is None else m.kind).name)
            out = P.reply(rid, errno.EIO)
        except trio.Cancelled:  # CANCEL (the daemon gave up on it: it ignores this), or the end
            self.out.send(P.reply(rid, errno.EINTR))
            raise
        finally:
            req = self.tasks.pop(rid, None)
            if req is not None:  # it waited: an INTERRUPT may be left for it
                forget_interrupt(req[1])
        self.out.send(out, more)

    def _file(self, fid: int) -> File:
        fp = self.files.get(fid)
        if fp is None:
            raise DeviceError(errno.EBADF)
        return fp

    async def _do(self, m: P.Message) -> bytes:
        """The reply to ``m`` (a ``READ`` too short for its fields: the
        reader answers the others: ``_read_now``)."""
        kind, rid, body = m.kind, m.rid, m.body
        if kind == P.Kind.LOAD:
            return P.reply(rid, 0, P.encode_json(await self._load(P.decode_json(body))))
        spec = self.spec
        if spec is None:
            raise DeviceError(errno.ENXIO, "no module loaded")
        if kind == P.Kind.READ:
            P.unpack(P.READ, body)  # too short: raises EBADMSG
        if kind == P.Kind.WRITE:
            fid, off = P.unpack(P.WRITE, body)
            n = await spec.write(self._file(fid), body[P.WRITE.size :], off)
            return P.reply(rid, 0, P.COUNT.pack(n))
        if kind == P.Kind.POLL:
            fid, events, token = P.unpack(P.POLL, body)
            handle = _PollToken(self, token) if token else None
            if token:
                self.armed.add(token)
            kept = weakref.ref(handle) if handle is not None else None
            revents = await spec.poll(self._file(fid), events, handle)
            del handle  # now only a selrecord keeps it alive
            return P.reply(rid, 0, P.POLLED.pack(revents, kept is not None and kept() is not None))
        if kind == P.Kind.OPEN:
            a = P.parse_open(body)
            if a.fid == 0 or a.fid in self.files:
                raise DeviceError(errno.EINVAL, "bad file id")
            flags = P.fflag_to_open_flags(a.flag, FNONBLOCK)
            self.files[a.fid] = await spec.open(Dev(a.dev), flags, a.pid, a.uid, a.gid)
            return P.reply(rid)
        if kind == P.Kind.CLOSE:
            # The last close of a dev in the daemon: every other file of the
            # dev opened before it (a file id up to ``newest``) is closed
            # there too, though its RELEASE may still be on the way (a File
            # is freed when the cyclic GC gets to it), so they go first, and
            # this close is the last here too (d_close). Files opened since
            # have larger ids.
            fid, newest = P.unpack(P.CLOSE, body)
            fp = self.files.pop(fid, None)
            self.armed.discard(fid)
            if fp is not None:
                for f in [f for f, o in self.files.items() if o.dev == fp.dev and f <= newest]:
                    self.armed.discard(f)
                    await spec.close(self.files.pop(f))
                await spec.close(fp)
            return P.reply(rid)
        if kind == P.Kind.IOCTL:
            io = P.parse_ioctl(body)
            l = Lwp(io.pid, io.uid, io.gid, self.files.get(io.fid))
            return P.reply(rid, 0, await spec.ioctl(Dev(io.dev), io.cmd, io.data, l, io.flag))
        if kind == P.Kind.MODCMD:
            await self._modcmd(ModCmd(P.unpack(P.CMD, body)[0]))
            return P.reply(rid)
        raise DeviceError(errno.EOPNOTSUPP)

    async def _load(self, req: Any) -> dict[str, Any]:
        """``LOAD``: set up as the daemon says, then load the module (INIT).

        Returns:
            What the daemon needs: the module's name, class, and the
            (name, major) of every cdevsw its INIT attached.
        """
        if self.loader is not None or not isinstance(req, dict):
            raise DeviceError(errno.EINVAL, "bad LOAD")
        level = req.get("log_level", logging.INFO)
        logging.basicConfig(
            stream=sys.stderr,
            level=level if isinstance(level, int) else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        if self.refused is not None:
            log.error("%s: the module's code is not run", self.refused)
            raise self.refused
        daemon_uid = req.get("daemon_uid")
        if type(daemon_uid) is int:
            trust.trust_daemon_user(daemon_uid)  # not this host's user, if it is another
        memlimit = req.get("memlimit")
        if isinstance(memlimit, int) and memlimit > 0:
            resource.setrlimit(resource.RLIMIT_AS, (memlimit, memlimit))
        devsw.restore({str(k): int(v) for k, v in dict(req.get("majors", {})).items()})
        devsw.hold(int(m) for m in req.get("held", ()))
        timeout = req.get("entry_timeout")
        timeout = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None
        self.loader = ModuleLoader(
            [str(p) for p in req.get("modpath", [])],
            autoload=False,
            autotime=0,
            include_project_modules=False,
        )
        self.loader.host_caps = frozenset(confine.cap_names(self.caps))
        assert self._nursery is not None
        # No autounload timer (autotime 0): no deadline in trio's heap, so
        # the reader waits for requests with no timeout (_idle_waiter).
        await self._nursery.start(functools.partial(self.loader.run, autounload=False))
        self.spec = SpecFs(None, entry_timeout=timeout)
        if timeout is not None:
            self.watchdog = Watchdog(timeout)
            self.watchdog.start()
        props = dict(req.get("props") or {})
        try:
            mod = await self._load_module(str(req["spec"]), props, int(req.get("uid", 0)))
        except OSError as exc:  # a host run as a user who cannot reach the code (EACCES)
            raise DeviceError(exc.errno or errno.EIO, str(exc)) from None
        self.module = mod
        return {
            "name": mod.name,
            "cls": int(mod.info.cls),
            "requires": list(mod.info.required),
            "majors": [[devsw.getname(m), int(m)] for m in mod.majors],
        }

    async def _load_module(self, path: str, props: dict[str, Any], uid: int) -> LoadedModule:
        """``ModuleLoader.load`` of ``path`` on behalf of ``uid``.

        The daemon located the module (and refused a path from anyone but
        root); what is left of ``uid``'s rules is its check of
        ``privileged`` properties, which runs in ``_load`` (``load`` would
        refuse the path itself from anyone but root).
        """
        loader = self.loader
        assert loader is not None
        if uid == 0:
            return await loader.load(path, props)
        async with loader._lock:
            token = _loading_in.set(loader)
            try:
                return await loader._load(path, check_props(props), autoload=False, brought=[], uid=uid)
            finally:
                _loading_in.reset(token)

    async def _modcmd(self, cmd: ModCmd) -> None:
        mod, loader = self.module, self.loader
        if mod is None or loader is None:
            raise DeviceError(errno.ENXIO)
        if cmd == ModCmd.FINI:
            await loader.unload(mod.name)
            self.module = None
        else:
            await mod.modcmd(cmd, None)


def _confine() -> None:
    """SIGKILL this process when the daemon dies, even stuck in C; gain
    no privilege by exec (set-user-ID files, file capabilities); not
    dumpable (no ptrace, no /proc/PID/mem or fd for its user's other
    processes without CAP_SYS_PTRACE: as root, once it has dropped its
    capabilities, other root hosts would otherwise be such processes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _drop_capabilities(keep: int) -> DeviceError | None:
    """Keep only the capabilities ``keep`` (a mask); what failed, if it did
    (``LOAD`` fails with it: the module's code never runs)."""
    try:
        confine.drop_capabilities(keep)
    except OSError as exc:
        return DeviceError(exc.errno or errno.EPERM, f"host: cannot drop capabilities: {exc.strerror}")
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    keep = 0
    if args and args[0].startswith("--caps="):
        try:
            keep = int(args.pop(0).removeprefix("--caps="), 16)
        except ValueError:
            args = []
    if len(args) not in (2, 3) or not all(a.isdigit() for a in args):
        print(
            "usage: python -m devfsd.isolate.host [--caps=MASK] FD REPLYFD [SHMFD] (started by devfsd)",
            file=sys.stderr,
        )
        return 2
    _confine()
    if os.getppid() == 1:  # the daemon died before prctl: nobody to serve
        return 1
    # Alone in its process still (capabilities are a thread's): before
    # trio's loop, or any thread of a module's, starts.
    refused = _drop_capabilities(keep)
    os.dup2(2, 1)  # a module's print() reaches the daemon's log too
    faulthandler.enable(file=sys.stderr, all_threads=True)
    no_proc_checks()  # the daemon looks for its callers' signals (INTERRUPT)
    no_shares()  # and counts their sleeps against their uids' shares
    fd, reply = int(args[0]), int(args[1])
    for end in (fd, reply):  # not to a driver's subprocess
        os.set_inheritable(end, False)
    trio.run(Host(fd, reply, int(args[2]) if len(args) > 2 else -1, caps=keep, refused=refused).run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
