"""One module host as the daemon sees it: the process, its pipes, its calls.

Touches the world: starts ``python -m devfsd.isolate.host``, reads its
pipe and its stderr, waits for it, kills it. ``supervisor`` decides when
to start one and what to do when one dies; ``proxy`` turns entry-point
calls into ``call``\\ s.

Two pipes. Requests go down one pipe, replies and ``NOTIFY``\\ s come
back up another (``_channel.pipe``). They were two ``AF_UNIX`` socket
pairs, and one pair before that: on one, the host waiting for its next
request in a blocking ``recv`` was woken each time the daemon read a
reply (a stream socket has one wait queue for readers and writers), two
more process switches per call (bench/README.md, "Isolated modules": with
two and the yield below, ~7 us less CPU time per 1-byte read); pipes then
took ~4 us more off a round trip (``_channel``). A host that closes its
end of the requests' pipe is dead (``call`` finds its ``Sender``
closed), as one that closes the replies' pipe (the reader sees its end).

A call sends its request and sleeps on a ``WaitChannel`` of its own until
the reply (``InFlight``): a sleep, so the daemon's entry-point time limit does
not count a read the host keeps asleep for hours, while the host applies
the limit to the driver itself; and a sleep whose ``Lwp`` has no pid, so
the daemon does not look for signals: the host's sleep does, and answers
``EINTR`` (a daemon that gave up first could lose data the host had
already taken). A call cancelled in the daemon (shutdown, unload) sends
``CANCEL``.

The waiting call reads its own reply. Most replies come within tens of
microseconds (mm's zero: ~60 us a round trip); waking the reader task,
which then wakes the call, costs two more turns of the daemon's loop than
the reply itself. So a call first waits for the pipe in ``select(2)``
(``_trioloop.wait_idle_readable``) and reads what came itself; it sleeps
as above only if its own reply has not come. The thread is blocked only
while trio has nothing else to do (the wait ends as soon as anything trio
waits for is ready), for at most ``SYNC_WAIT`` per call; a call of a kind
on a dev whose reply did not come in time (a read that sleeps in its
driver) keeps its calls of that kind on that dev off the synchronous wait
for ``SYNC_BACKOFF``, doubling (lifted when the reply comes within
``SYNC_LATE`` after all: a busy CPU, not a driver asleep); and waits that did not get their reply,
all hosts together, stop after ``SYNC_WASTE`` of every ``SYNC_WINDOW``.
Never for ``LOAD`` and ``MODCMD`` (INIT may take seconds), nor with the
fast paths off. One reader at a time: callers resume in the order the
host answered them, so the waiting call finishes at most its own call,
and only if its reply is the first in what it read that finishes one;
from the first that finishes another call on, it leaves the messages to
the reader task (``_deferred``), which hands them out in order, and no
call reads the pipe while the reader has messages to hand out. The
call first yields the CPU (``sched_yield``): where the host shares the
daemon's CPU (one CPU, or a busy machine), the host, woken by the
request, answers at once, and the call reads the reply without
``select`` at all (rather than sleeping in it, its timer armed and
disarmed, until the reply comes); it waits in ``select`` only if nothing
came (a host on another CPU: one more system call and a ``recv`` that
finds nothing). For an error reply read that way it first reads what the
host wrote on stderr, as ``select`` would have shown it (a driver's
traceback before its EIO).

Death. The end of the pipe, the end of the process or a malformed
message makes the host dead (``_die``): every call in flight returns
``EIO`` at once, every poll it remembered is notified (the poller then
sees ``POLLERR`` from the switch), and ``died`` is set. ``reap`` then
makes sure the process is gone, kills its process group and its cgroup
(what its driver started), and collects its status and the last lines it wrote
(faulthandler's traceback, for a crash in C).

Heartbeat. With ``timeout`` set, once the host has answered its first
``PING`` (within ``START_TIMEOUT``), a ``PING`` goes every ``timeout / 4``; its
reply comes from the host's loop itself. Unanswered for ``1.5 * timeout``
(the host's own stall watchdog, at ``timeout``, gets the first chance to
end a Python loop and answer), the loop is stuck (a spin in C, a blocking
call, SIGSTOP): every call in flight gets ``ETIMEDOUT``. Unanswered for
twice ``timeout``, the host is killed, which is a death as above.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import logging
import math
import mmap
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd import _trioloop
from devfsd.cdevsw._switch import Lwp
from devfsd.cdevsw._wait import WaitChannel
from devfsd.errors import DeviceError
from devfsd.isolate import protocol as P
from devfsd.isolate._channel import ENDED, MORE, RECV_SIZE, Sender, more, pipe, receive_now
from devfsd.isolate.confine import HostCgroup, HostUser, cap_list, host_env, launch_argv

if TYPE_CHECKING:
    from devfsd.cdevsw._dev import Dev

__all__ = ["HostDied", "HostProcess", "InFlight", "Payload"]

log = logging.getLogger("devfsd.isolate")

#: Lines of the host's stderr kept for the report of its death.
TAIL_LINES: Final = 40
#: Seconds the launcher of a host as another user may take to execute the
#: host (``confine.launch_argv``): an interpreter's start; past it, ``ETIMEDOUT``.
LAUNCH_WAIT: Final = 30.0
#: What the daemon takes of a host's stderr (the host is not trusted: a
#: host that writes without end must not fill the daemon's log or take its
#: CPU time from other nodes): bytes read a second (past them the pipe
#: fills and the host's writes wait), lines logged a second (past them
#: counted, then summed up in one line; the last TAIL_LINES are kept for
#: the report of a death all the same), and the longest line (cut there).
STDERR_RATE: Final = 256 << 10
STDERR_LINES: Final = 200
STDERR_LINE_MAX: Final = 4096
#: Messages taken from the host's pipe in one step of the daemon's loop:
#: one read of 256 KiB may hold 29,000 of them (empty NOTIFYs), which took
#: 30 ms to parse and 8 ms more to take up to STRAY_RATE (the second's
#: strays at once), every second, while no other node was answered. Past
#: this many, the reader lets the loop turn (``MORE``).
TAKE_BATCH: Final = 256
#: Messages a host may send a second that answer nothing (a REPLY for no
#: call in flight, a NOTIFY for no armed poll: an honest host sends them
#: only in races, a few at a time). Past them its pipe is not read for
#: the rest of the second: a host that floods the daemon slows its own
#: calls, not the daemon's other nodes.
STRAY_RATE: Final = 10_000
#: The largest LOAD reply taken (bytes): an honest one (a name, a class,
#: a few requirements and drivers) is a few hundred; 4 MiB of JSON took
#: the daemon's thread a quarter of a second to parse and check.
LOAD_REPLY_MAX: Final = 64 << 10
#: Seconds a host that closed its pipe gets to exit before SIGKILL.
EXIT_GRACE: Final = 2.0
#: Seconds a new host gets to answer its first PING (start the interpreter,
#: import trio and devfsd) before the heartbeat's limit applies.
START_TIMEOUT: Final = 60.0

#: The longest one call blocks the daemon's thread waiting for its reply
#: (seconds; see "The waiting call reads its own reply" above).
SYNC_WAIT: Final = 0.0005
#: After a reply that did not come within SYNC_WAIT, calls of its kind on
#: its dev skip the synchronous wait for this long, doubled for each such
#: call in a row up to SYNC_BACKOFF_MAX.
SYNC_BACKOFF: Final = 0.1
SYNC_BACKOFF_MAX: Final = 1.0
#: ... unless the reply comes within SYNC_LATE of the wait's start after
#: all: then the CPU was busy with other programs, the driver did not
#: sleep, and the backoff is lifted (on a loaded machine the wait runs out
#: now and then, and each backoff sent a thousand fast calls the slow way).
SYNC_LATE: Final = 0.005
#: Synchronous waits that ended without their reply, all hosts together,
#: take at most SYNC_WASTE seconds of every SYNC_WINDOW.
SYNC_WINDOW: Final = 1.0
SYNC_WASTE: Final = 0.02
#: The kinds a call may wait for synchronously (not LOAD or MODCMD: INIT
#: and FINI may take seconds).
SYNC_KINDS: Final = frozenset(
    {P.Kind.OPEN, P.Kind.CLOSE, P.Kind.READ, P.Kind.WRITE, P.Kind.POLL, P.Kind.IOCTL}
)
_REPLY: Final = int(P.Kind.REPLY)
_REPLY_SHM: Final = int(P.Kind.REPLY_SHM)
_REPLY_HEAD: Final = P.REPLY_HEAD
_HEAD: Final = P.HEADER.size
_pack_head: Final = P.HEADER.pack
_MAX_BODY: Final = P.MAX_BODY
_SHM_MIN: Final = P.SHM_MIN
_SHM_REPLY: Final = P.SHM_REPLY
#: The clock of the synchronous waits (``time.perf_counter``: trio's
#: default clock plus its offset, so ``wait_idle_readable`` needs no call
#: to trio's clock).
_clock: Final = time.perf_counter
#: A reply up to this size is copied out of its message, a larger one viewed.
_SMALL: Final = 4096
#: Most (kind, dev) pairs a host keeps a backoff for; past it they are forgotten.
_SYNC_KEYS: Final = 256
#: The largest request id (the header's field is 32 bits). Past it, ids
#: start again at 1, skipping those still in use (``_rid_again``): until the
#: ninth session the 2**32nd request of a host failed to pack, and every one
#: after it, so a user reading an isolated node for a few days (tunwg: two
#: calls a packet) left its module answering nothing but EIO.
RID_MAX: Final = 0xFFFFFFFF
#: The largest file id (32 bits in every message that names a file).
#: Past it, ids start again at 1, skipping those the host may still hold
#: (``new_fid``): until the ninth session a host's 2**32nd open failed to
#: pack, and every later one (EIO), for good.
FID_MAX: Final = 0xFFFFFFFF


class HostDied(DeviceError):
    """The host died before answering (``EOWNERDEAD``)."""

    def __init__(self, msg: str | None = None) -> None:
        super().__init__(errno.EOWNERDEAD, msg)


#: A reply's payload.
Payload = bytes | memoryview


@final
class InFlight:
    """One request awaiting its reply (``call_now``, ``reply``).

    Its fields start as the class's (no ``__init__`` to run for each call:
    on this VM every distinct Python function a call runs costs about a
    microsecond, bench/README.md "Isolated modules"); most calls never
    make one (``call_now`` takes their reply at once)."""

    #: Its request's id, kind and dev.
    rid = 0
    kind = 0
    dev: Dev | None = None
    #: Made when the call sleeps (not for a reply it read itself).
    chan: WaitChannel | None = None
    done = False
    err = 0
    payload: Payload = b""
    #: When its synchronous wait began, if it ran out (``SYNC_LATE``), else 0.
    late = 0.0

    def finish(self, err: int, payload: Payload = b"") -> None:
        if not self.done:
            self.done = True
            self.err = err
            self.payload = payload
            if self.chan is not None:
                self.chan.wakeup()


@final
class _SyncWaste:
    """Time lost to synchronous waits that did not get their reply, per window."""

    __slots__ = ("spent", "start")

    def __init__(self) -> None:
        self.start = -math.inf
        self.spent = 0.0

    def allows(self, now: float) -> bool:
        if now - self.start >= SYNC_WINDOW:
            self.start = now
            self.spent = 0.0
        return self.spent < SYNC_WASTE


#: The daemon's, for all its hosts.
_waste = _SyncWaste()


@final
class HostProcess:
    """A module host process and the daemon's end of its pipe.

    Args:
        name: the module's name (for the log).
        timeout: the heartbeat limit (``devfsd --entry-timeout``), or ``None``.
    """

    def __init__(
        self,
        name: str,
        timeout: float | None,
        *,
        user: HostUser | None = None,
        memlimit: int | None = None,
        caps: int = 0,
    ) -> None:
        self.name = name
        self.timeout = timeout
        #: The user it runs as (``None``: the daemon's).
        self.user = user
        #: The capabilities it keeps, as a mask (it drops every other: confine).
        self.caps = caps
        #: Its memory limit in bytes, and the cgroup that holds it to it
        #: (``None``: the host sets ``RLIMIT_AS``, see ``rlimit_as``).
        self.memlimit = memlimit
        self.cgroup: HostCgroup | None = None
        #: Killed by the kernel for want of memory (its cgroup says so).
        self.oom = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        #: The pipe end it reads (the host's replies and NOTIFYs), and the one
        #: its requests go down (``out``); -1 when closed.
        self.rfd = -1
        self._wfd = -1
        self.out: Sender | None = None
        self.rx = P.Receiver()
        #: The pipe's receive buffer (the reader's, and a call's that reads its own reply).
        self._buf = bytearray(RECV_SIZE)
        self._bufs = (self._buf,)
        #: The reader task, and whether it is handing out messages (it
        #: awaits between two callers it wakes: nobody reads meanwhile).
        self._reader: trio.lowlevel.Task | None = None
        self._delivering = False
        #: Messages a waiting call read and left for the reader, in order:
        #: they came before anything still in the pipe.
        self._deferred: list[P.Message] = []
        #: Per (kind, dev) whose last synchronous wait ran out: the time
        #: before which its calls sleep at once, and how many ran out in a row.
        self._sync_off: dict[tuple[int, int], tuple[float, int]] = {}
        #: What a call waits for in ``_sync_wait`` (the pipe, stderr, the
        #: pidfd), while they are open (from ``start`` to ``reap``).
        self._sync_fds: tuple[int, int, int] | None = None
        #: Replies read by the call that waited for them (for tests and the bench).
        self.sync_replies = 0
        #: The shared buffer (``protocol``, "Shared memory"), mapped read-only
        #: a slot per mapping (and a mapping's reference count with nothing
        #: but this list holding it): its free slots, and the slot and size
        #: of each read that lent one.
        self._slots: list[mmap.mmap] = []
        self._slot_refs = 0
        self._free: deque[int] = deque()
        self._lent: dict[int, tuple[int, int]] = {}
        #: Reads whose data came through the shared buffer (for tests).
        self.shm_replies = 0
        self.pending: dict[int, InFlight] = {}
        #: File ids the daemon dropped (``release``, from a finaliser) whose
        #: ``RELEASE`` has not gone yet, and the loop's token that sends them.
        self._released: deque[int] = deque()
        self._token: trio.lowlevel.TrioToken | None = None
        #: Armed polls: per file id, the kernel's poll handle of its last
        #: poll (``arm_poll``), until the host's ``NOTIFY`` for it.
        self.polls: dict[int, Any] = {}
        self._rids = itertools.count(1)
        #: Ids past this go through ``_rid_again`` (0 once ids have wrapped:
        #: from then on each is checked against those in use).
        self._rid_max = RID_MAX
        #: The last file id handed out (ids only grow, until FID_MAX).
        self.newest_fid = 0
        #: Ids handed out that the host may still hold (not yet closed or
        #: released), and whether ids have started again at 1 (``new_fid``).
        self.fids: set[int] = set()
        self.fids_wrapped = False
        self.dead = False
        #: Why it died (empty while alive); ``closing``: the daemon ended it.
        self.why = ""
        self.closing = False
        self.died = trio.Event()
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._errbuf = b""
        #: The current second of its stderr (``_stderr_chunk``): its start,
        #: bytes read and lines it may still log in it, lines not logged,
        #: and whether reading waits for the next second (``STDERR_RATE``).
        self._err_since = -math.inf
        self._err_read = 0
        self._err_lines = STDERR_LINES
        self._err_dropped = 0
        self._err_paused = False
        #: Bytes read of its stderr in all (for tests).
        self.err_bytes = 0
        #: Messages that answered nothing (``_stray``): in all, and in the
        #: second from ``_stray_since`` (the first of them since the last
        #: window ended); at ``STRAY_RATE`` in it, reading waits for the
        #: rest of it (``_stray_paused``).
        self.strays = 0
        self._strays = 0
        self._stray_since = -math.inf
        self._stray_paused = False
        self._waiting = False
        self._exited = trio.Event()
        self._ping_at = math.inf
        #: The host has answered a PING: its loop runs.
        self.up = trio.Event()
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    # -- starting ------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the process; its reader, stderr, sender and heartbeat tasks
        run in ``nursery`` until it dies.

        Raises:
            DeviceError: the errno of a host that could not be started (no
                process is left), e.g. ``EACCES`` for a user who may not
                run the daemon's interpreter.
        """
        # Two pipes, one each way (see "Two pipes" above).
        theirs, mine = pipe()  # requests
        back, theirs_back = pipe()  # replies
        shm = _shared_buffer()
        passed = (theirs, theirs_back, *((shm,) if shm >= 0 else ()))
        # As another user: the launcher's errno, if it fails (confine.launch_argv).
        status = os.pipe2(os.O_CLOEXEC) if self.user is not None else None
        try:
            # Started from the trio thread itself, not trio.lowlevel.open_process
            # (which forks in a worker thread): the host's PR_SET_PDEATHSIG fires
            # when the thread that forked it ends, and trio's idle worker
            # threads end after ten seconds, killing the host with them.
            # -P -s: nothing from the working directory or a user's site;
            # the environment is host_env's; as ``user`` from its first
            # instruction, its bounding set narrowed (confine.launch_argv).
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - see above
                [
                    *launch_argv(self.user, self.caps, status[1] if status else -1),
                    sys.executable,
                    "-P",
                    "-s",
                    "-m",
                    "devfsd.isolate.host",
                    f"--caps={self.caps:x}",
                    *map(str, passed),
                ],
                pass_fds=(*passed, status[1]) if status else passed,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a ^C to the daemon's group is not the host's
                cwd="/",
                env=host_env(),
            )
            self._pidfd = os.pidfd_open(self.proc.pid)
            self._contain(self.memlimit)
            if status is not None:  # the launcher's exec closes it; a failure writes its errno
                os.close(status[1])
                status = (status[0], -1)
                with trio.move_on_after(LAUNCH_WAIT):
                    await trio.lowlevel.wait_readable(status[0])
                told = os.read(status[0], 16) if _readable(status[0]) else str(errno.ETIMEDOUT).encode()
                if told:
                    code = int(told) if told.isdigit() else errno.EIO
                    raise OSError(code, os.strerror(code))
        except BaseException as exc:
            for fd in (mine, back, theirs, theirs_back):
                os.close(fd)
            if status is not None:
                for fd in status:
                    if fd >= 0:
                        os.close(fd)
                status = None
            if shm >= 0:
                os.close(shm)
            if self.proc is not None:
                self.kill()
                self.proc.wait()
                if self.proc.stderr is not None:
                    self.proc.stderr.close()
                self.proc = None  # nothing for reap
            if isinstance(exc, OSError):  # e.g. its user may not run the interpreter
                who = f" as {self.user.name}" if self.user is not None else ""
                why = f"module {self.name}: cannot start a host{who}: {exc}"
                log.error("%s", why)
                raise DeviceError(exc.errno or errno.EIO, why) from None
            raise
        os.close(theirs)
        os.close(theirs_back)
        if status is not None:
            os.close(status[0])
        if shm >= 0:
            self._map_shared(shm)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        os.set_blocking(mine, False)
        os.set_blocking(back, False)
        self.rfd = back
        self._wfd = mine
        self._sync_fds = (back, self.proc.stderr.fileno(), self._pidfd)
        self.out = Sender(mine)
        self.started_at = trio.current_time()
        self._token = trio.lowlevel.current_trio_token()
        kept = cap_list(self.caps)
        if self.user is not None:
            kept = f"none (as {self.user.name}), bounding set {kept}"
        log.debug("module %s: host %d started, keeping capabilities %s", self.name, self.pid, kept)
        nursery.start_soon(self._read)
        nursery.start_soon(self._stderr)
        nursery.start_soon(self._wait)
        nursery.start_soon(self.out.run)
        if self.timeout is not None:
            nursery.start_soon(self._heartbeat, self.timeout)

    def _map_shared(self, fd: int) -> None:
        """Map the shared buffer read-only, a mapping per slot, and close
        ``fd`` (the host has its own)."""
        try:
            self._slots = [
                mmap.mmap(fd, P.SHM_SLOT, mmap.MAP_SHARED, mmap.PROT_READ, offset=i * P.SHM_SLOT)
                for i in range(P.SHM_SLOTS)
            ]
            self._slot_refs = sys.getrefcount(self._slots[0])
            self._free.extend(range(P.SHM_SLOTS))
        except (OSError, ValueError) as exc:  # reads take the pipe
            self._close_slots()
            log.debug("module %s: no shared buffer: %s", self.name, exc)
        finally:
            os.close(fd)

    def _lendable(self) -> int:
        """A free slot that no view of an earlier read's data still holds
        (taken off ``_free``), or -1. A read's data is a view of its slot
        (``_from_slot``) until FUSE has been answered and everything that
        held it is gone; only then may the host write there again. A view
        holds its slot's mapping, so the mapping's reference count says
        whether one is left (``sys.getrefcount``, as when it was made)."""
        free, slots = self._free, self._slots
        for _ in range(len(free)):
            slot = free.popleft()
            if sys.getrefcount(slots[slot]) <= self._slot_refs:
                return slot
            free.append(slot)
        return -1

    def _close_slots(self) -> None:
        """Unmap the slots; one a view still holds is unmapped with the last view."""
        slots, self._slots = self._slots, []
        self._free.clear()
        for m in slots:
            with contextlib.suppress(BufferError):
                m.close()

    def _contain(self, limit: int | None) -> None:
        """A cgroup of its own, before it has loaded anything: it holds
        every process its driver starts (killed with it: ``reap``), and its
        memory limit if it has one; without a cgroup, a limit is the
        ``RLIMIT_AS`` it sets itself (``rlimit_as``), and only its process
        group dies with it."""
        assert self.proc is not None
        got = HostCgroup.make(self.proc.pid, limit)
        if isinstance(got, HostCgroup):
            self.cgroup = got
            if got.limit is not None:
                log.info("module %s: host %d: memory limit %d bytes by %s", self.name, self.pid, limit, got)
            elif limit is not None:
                log.info(
                    "module %s: host %d: memory limit %d bytes by RLIMIT_AS, in %s (no memory controller)",
                    self.name,
                    self.pid,
                    limit,
                    got,
                )
            else:
                log.debug("module %s: host %d: in %s", self.name, self.pid, got)
        elif limit is not None:
            log.info(
                "module %s: host %d: memory limit %d bytes by RLIMIT_AS (no memory cgroup: %s)",
                self.name,
                self.pid,
                limit,
                got,
            )
        else:
            log.debug(
                "module %s: host %d: no cgroup (%s): only its process group ends with it",
                self.name,
                self.pid,
                got,
            )

    @property
    def rlimit_as(self) -> int | None:
        """The ``RLIMIT_AS`` the host sets itself: its limit when no cgroup holds it to it."""
        return self.memlimit if self.cgroup is None or self.cgroup.limit is None else None

    # -- calls -------------------------------------------------------------------

    def new_fid(self) -> int:
        """An id for a new open file, held (``fids``) until ``drop_fid``.
        Past ``FID_MAX`` ids start again at 1, skipping those still held."""
        fid = self.newest_fid + 1
        if fid > FID_MAX or self.fids_wrapped:
            while True:
                if fid > FID_MAX:
                    self.fids_wrapped = True
                    fid = 1
                if fid not in self.fids:
                    break
                fid += 1
        self.newest_fid = fid
        self.fids.add(fid)
        return fid

    def drop_fid(self, fid: int) -> None:
        """File ``fid``'s CLOSE or RELEASE has gone (or its open failed):
        its id may be handed out again once ids start again."""
        self.fids.discard(fid)

    @property
    def close_newest(self) -> int:
        """A CLOSE's newest file id: the host closes every other file of
        the dev up to it (see ``proxy``). Once ids have started again, an
        older file may have a larger id: every file the host holds of the
        dev then (none was opened after the CLOSE was sent: the pipe keeps
        the order)."""
        return FID_MAX if self.fids_wrapped else self.newest_fid

    def arm_poll(self, fid: int, handle: Any) -> bool:
        """Remember ``handle`` for file ``fid``'s polls: the host's
        ``NOTIFY`` names it by the file id (its poll token), and notifies
        it once. One entry per file, whatever the polls and whatever the
        host keeps or never notifies: the kernel has one poll handle per
        open file, and notifying it wakes every poller of the file, which
        polls again. True if it was not armed yet."""
        fresh = fid not in self.polls
        self.polls[fid] = handle
        return fresh

    def post(self, data: bytes) -> None:
        """Send a message that gets no reply (``CANCEL``, ``INTERRUPT``)."""
        if not self.dead and self.out is not None:
            self.out.send(data)

    def release(self, fid: int) -> None:
        """File ``fid`` is gone from the daemon (not its dev's last close):
        its ``RELEASE`` goes soon, from the loop, not from here.

        Called from a finaliser (``proxy._HostFile``), which the cyclic GC
        runs at any allocation: also in the middle of a send on the
        requests' pipe, between a partial write and the queueing of its
        rest. A ``RELEASE`` sent from there went into the pipe (or the
        backlog) inside the other message, and the host, finding garbage,
        died: a user who could make the pipe fill and files be collected
        at such a moment killed the module, and the restart limit then kept
        it down. So this only notes ``fid`` and asks the loop
        (``run_sync_soon``, which is safe from a finaliser, a signal
        handler or another thread: the GC may run in a worker thread too)
        to send what is noted, between messages."""
        if self.dead or self._token is None:
            return
        self._released.append(fid)
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send_released, idempotent=True)

    def _send_released(self) -> None:
        released = self._released
        while released:  # (a deque: a finaliser in another thread may append meanwhile)
            fid = released.popleft()
            self.post(P.encode(P.Kind.RELEASE, 0, P.FID.pack(fid)))
            self.fids.discard(fid)

    async def call(
        self, kind: int, body: bytes, dev: Dev | None = None, caller: Lwp | None = None, *, read: int = 0
    ) -> bytes | memoryview:
        """Send one request and sleep until its reply.

        ``read``: for a ``READ``, the bytes it asks; from ``SHM_MIN`` on, it
        lends a slot of the shared buffer when one is free.

        ``caller``: who the call is for. A signal for it (the INTERRUPT of
        the FUSE request on its open file, else one seen in /proc as for
        any sleep) is passed on to the host (``INTERRUPT``), whose sleep
        for it ends with ``EINTR``; the host looks for no signals itself.

        ``call_now`` then ``reply``, for an entry point that would rather
        not be a coroutine more (``proxy``'s ``d_read``).

        Returns:
            The reply's payload.

        Raises:
            DeviceError: the host's errno; ``EIO`` if the host died
                meanwhile, ``ETIMEDOUT`` if it stopped answering, ``ENXIO``
                if it is already dead.
        """
        got = self.call_now(kind, body, dev, read)
        if got.__class__ is InFlight:
            return await self.reply(got, caller)
        return got  # type: ignore[return-value]

    def call_now(self, kind: int, body: bytes, dev: Dev | None = None, read: int = 0) -> Payload | InFlight:
        """Send one request (``call``'s arguments) and, where it may
        (``_sync_wait``), take its reply at once: its payload, or the call
        in flight (``InFlight``, maybe already answered) for ``reply``.

        The ordinary call goes a lean way, the way most of a host's calls
        on this CPU go (the proxy's every read comes here): one ``write``,
        the yield, one ``read``, and its own reply alone in the pipe taken
        inline: no ``InFlight``, no entry in ``pending``, no parse loop.
        The clock is read and the waste window rolled only once a wait
        has been wasted or a backoff is pending (``_waste.spent``,
        ``_sync_off``), or when the reply is not there after the yield;
        the shared buffer's slots only for a read of ``SHM_MIN`` bytes or
        more (bench/README.md, "Isolated modules", eighth and ninth
        sessions). Anything else goes the general way (``_sync_wait``).

        Raises:
            DeviceError: the host's errno (a reply taken here); ``ENXIO``
                if the host is already dead.
        """
        out = self.out
        if self.dead or out is None:
            raise DeviceError(errno.ENXIO)
        rid = next(self._rids)
        if rid > self._rid_max:
            rid = self._rid_again(rid)
        if read >= _SHM_MIN and read <= P.SHM_SLOT and self._free:
            # _lendable(), inline while its first try finds the slot free.
            free = self._free
            slot = free[0]
            if sys.getrefcount(self._slots[slot]) <= self._slot_refs:
                free.popleft()
            else:
                slot = self._lendable()
            if slot >= 0:
                self._lent[rid] = (slot, read)  # until its reply, whatever becomes of the call
                body += P.READ_SLOT.pack(slot)
        n = len(body)
        msg = _pack_head(n, kind, rid) + body if n <= _MAX_BODY else P.encode(kind, rid, body)
        if out._backlog or out.closed:
            out.send(msg)
        else:
            # out.send(msg), inline while the pipe takes it whole.
            try:
                sent = os.write(out.fd, msg)
            except BlockingIOError:
                sent = 0
            except OSError:
                out.closed = True
                sent = -1
            if 0 <= sent < len(msg):
                out.send(msg[sent:])  # (into its backlog, or what the pipe takes now)
        if out.closed:  # its end of the requests' pipe is gone: nothing reaches it
            c = self._in_flight(rid, kind, dev)
            self._die("closed its pipe")
            return c
        fds = self._sync_fds
        if (
            kind not in SYNC_KINDS
            or _trioloop.PRIVATE is None
            or out._backlog  # (out.backlog)
            or self._delivering
            or self._deferred
            or fds is None
            or self._stray_paused
        ):
            return self._in_flight(rid, kind, dev)
        off = None
        now = 0.0
        waste = _waste
        if self._sync_off or waste.spent:
            # Out of the ordinary: a backoff or a wasted wait pending.
            now = _clock()
            off = self._sync_off.get((kind, dev or 0))
            if off is not None and now < off[0]:
                return self._in_flight(rid, kind, dev)
            if now - waste.start >= SYNC_WINDOW:  # waste.allows(now), inline
                waste.start = now
                waste.spent = 0.0
            if waste.spent >= SYNC_WASTE:
                return self._in_flight(rid, kind, dev)
        # Where the host shares this CPU, it answers while this thread
        # yields: its reply is most likely there already, and the first
        # read goes without select(2); only if nothing came does the call
        # wait (_sync_wait).
        os.sched_yield()
        buf = self._buf
        try:
            got = os.readv(fds[0], self._bufs)
        except BlockingIOError:
            got = -1
        except OSError as exc:
            if exc.errno not in ENDED:
                raise
            got = 0
        rx = self.rx
        if got >= _REPLY_HEAD.size and rx._view is None and not rx._buf:
            size, mkind, mrid, e = _REPLY_HEAD.unpack_from(buf)
            if mrid == rid and size + _HEAD == got:
                # Its own reply, alone (Receiver.whole, _take, parse_reply, finish; inline).
                if mkind == _REPLY and e >= 0:
                    if self._lent:
                        self._give_back(rid)
                    if e and not self._err_paused:
                        # What select(2) would have seen first: a driver's
                        # traceback before its EIO.
                        self._stderr_chunk(fds[1])
                    self.sync_replies += 1
                    if off is not None:
                        del self._sync_off[(kind, dev or 0)]
                    if got <= _SMALL:
                        data = bytes(buf[_REPLY_HEAD.size : got])
                    else:
                        with memoryview(buf) as view:
                            data = bytes(view[_REPLY_HEAD.size : got])
                    if e:
                        raise P.reply_error(e, data)
                    return data
                if mkind == _REPLY_SHM and size == _SHM_REPLY.size and self._slots:
                    lent = self._lent.get(rid)  # (_from_slot, finish)
                    if lent is not None and 0 <= e <= lent[1]:  # (e: the count)
                        del self._lent[rid]
                        self._free.append(lent[0])
                        self.shm_replies += 1
                        self.sync_replies += 1
                        if off is not None:
                            del self._sync_off[(kind, dev or 0)]
                        return memoryview(self._slots[lent[0]])[:e]
        # Not its own reply alone: the general way, from what came. Its
        # wait begins now (the window rolled first, as above).
        if not now:
            now = _clock()
            if now - waste.start >= SYNC_WINDOW:
                waste.start = now
                waste.spent = 0.0
        c = self._in_flight(rid, kind, dev)
        c.late = self._sync_wait(c, rid, kind, dev, now, off, got)
        return c

    def _rid_again(self, rid: int) -> int:
        """A request id for a new call, ``rid`` being the counter's next once
        past ``_rid_max``: from ``RID_MAX`` on, ids start again at 1, and
        each is one no call in flight and no lent slot holds (0 is the
        heartbeat's)."""
        while True:
            if rid > RID_MAX:
                self._rids = itertools.count(1)
                self._rid_max = 0
                rid = next(self._rids)
            if rid not in self.pending and rid not in self._lent:
                return rid
            rid = next(self._rids)

    def _in_flight(self, rid: int, kind: int, dev: Dev | None) -> InFlight:
        """Request ``rid`` (of ``kind`` on ``dev``), sent, now in ``pending``."""
        c = self.pending[rid] = InFlight()
        c.rid = rid
        c.kind = kind
        c.dev = dev
        return c

    async def reply(self, c: InFlight, caller: Lwp | None = None) -> bytes | memoryview:
        """Sleep until the reply to ``c`` (``call_now``'s); ``call``'s ``caller``.

        Raises:
            DeviceError: as ``call``.
        """
        rid = c.rid
        dev = c.dev
        try:
            if not c.done:
                chan = c.chan = WaitChannel("host")
                if caller is None:
                    lwp = Lwp(0, 0, 0, dev=dev)
                    while not c.done:
                        await chan.sleep(lwp)
                elif self.timeout is None:
                    lwp = Lwp(caller.pid, caller.uid, caller.gid, caller.fp, dev=dev)
                    intr = functools.partial(self._interrupt, rid)
                    while not c.done:
                        await chan.sleep(lwp, interrupt=intr)
                else:
                    # The caller's uid: its sleep here counts against its share
                    # (_wait.USER_SLEEPERS) and stops short of root's reserve.
                    lwp = Lwp(caller.pid, caller.uid, caller.gid, caller.fp, dev=dev)
                    await self._sleep_until_answered(c, chan, lwp, rid)
        except BaseException:
            if not c.done:
                self.pending.pop(rid, None)
                self.post(P.encode(P.Kind.CANCEL, rid))
            raise
        late = c.late
        if late and _clock() - late < SYNC_LATE:
            # Its reply missed the wait but came soon after: a busy CPU (other
            # programs' turns), not a driver asleep: no backoff for it.
            self._sync_off.pop((c.kind, dev or 0), None)
        if c.err:
            raise P.reply_error(c.err, c.payload)
        return c.payload

    def _interrupt(self, rid: int) -> None:
        self.post(P.encode(P.Kind.INTERRUPT, rid))

    async def _sleep_until_answered(self, c: InFlight, chan: WaitChannel, lwp: Lwp, rid: int) -> None:
        """Sleep until ``c``'s reply (request ``rid``), passing the caller's
        signals on (``INTERRUPT``); if the host has not answered twice
        ``timeout`` after the first, give up with ``EINTR``. An honest host
        answers an interrupted sleep at once, and a call awake in its driver
        by its own time limit; one that answers its heartbeat but ignores
        INTERRUPT (a driver that sleeps again after its EINTR) would keep
        the caller in the kernel's FUSE wait, unkillable, for ever.

        Raises:
            DeviceError: ``EINTR``, given up.
        """
        assert self.timeout is not None
        grace = 2 * self.timeout
        with trio.CancelScope() as giveup:

            def interrupted() -> None:
                self._interrupt(rid)
                if giveup.deadline == math.inf:
                    giveup.deadline = trio.current_time() + grace

            while not c.done:
                await chan.sleep(lwp, interrupt=interrupted)
        if not c.done:  # (only its own deadline ends the scope early)
            log.warning(
                "module %s: host %d did not answer an interrupted call in %g s: given up (EINTR)",
                self.name,
                self.pid,
                grace,
            )
            raise DeviceError(errno.EINTR)

    def _sync_wait(
        self,
        c: InFlight,
        rid: int,
        kind: int,
        dev: Dev | None,
        now: float,
        off: tuple[float, int] | None,
        got: int,
    ) -> float:
        """Go on waiting for ``c``'s reply (request ``rid`` of ``kind`` on
        ``dev``) where ``call_now`` left it (its wait began at ``now``,
        ``off`` the backoff it found, ``got`` what its first ``recv``
        read into the receive buffer: bytes, -1 nothing, 0 the end), with
        the thread blocked while the loop is idle, up to ``SYNC_WAIT``,
        taking what comes meanwhile. Returns with ``c`` done, or not (then
        the call sleeps); the time the wait began if it ran out (and set a
        backoff), else 0."""
        # What the host writes on stderr comes before its reply (a driver's
        # traceback before its EIO), and its death ends the wait.
        fds = self._sync_fds
        assert fds is not None  # (call_now's caller checked)
        fd, err, pidfd = fds
        # Its stderr, unless that waits for the next second (_stderr).
        waited: tuple[int, ...] = (fd, pidfd) if self._err_paused else fds
        end = now + SYNC_WAIT
        t = _clock()
        left = end - t
        first = True
        timed_out = False
        while True:
            if not first:
                ready = _trioloop.wait_idle_readable(waited, left, t)
                if not ready:
                    timed_out = _clock() >= end
                    break
                if err in ready and self._stderr_chunk(err):  # the end of its stderr: it is exiting
                    break
                if pidfd in ready:  # it has ended: _wait says so, at once
                    break
            if first or fd in ready:
                try:
                    msgs = self._messages(got) if first else receive_now(fd, self.rx, self._buf, TAKE_BATCH)
                    if msgs is None:  # the end: the reader task sees it too, and says so
                        break
                    if first and msgs and not self._err_paused:
                        self._stderr_chunk(err)  # (what select(2) would have seen first)
                    self._take_own(msgs, rid)
                except P.ProtocolError as exc:
                    self._die(f"protocol error: {exc}", kill=True)
            first = False
            if c.done or self.dead or self._deferred or self._stray_paused:
                break
            t = _clock()
            left = end - t
            if left <= 0:
                timed_out = True
                break
        key = (kind, dev or 0)
        if c.done:
            if not self.dead:
                self.sync_replies += 1
            if off is not None:
                del self._sync_off[key]
        elif timed_out:
            # Its reply did not come in time: not this host's fault alone
            # (the CPU may be busy), but this kind on this dev waits the
            # trio way for a while, and the time counts as wasted.
            later = _clock()
            _waste.spent += later - now
            n = off[1] + 1 if off is not None else 1
            if len(self._sync_off) >= _SYNC_KEYS:
                self._sync_off.clear()
            self._sync_off[key] = (later + min(SYNC_BACKOFF * 2 ** (n - 1), SYNC_BACKOFF_MAX), n)
            return now
        return 0.0

    def _messages(self, got: int) -> list[P.Message] | None:
        """The whole messages the ``got`` bytes ``call_now`` read complete
        (``receive_now``'s after its ``recv``)."""
        if got < 0:
            return []
        if not got:
            return None
        buf = self._buf
        m = self.rx.whole(buf, got)
        if m is not None:
            return [m]
        with memoryview(buf) as view:
            self.rx.feed(view[:got])
        return more(self.rx, TAKE_BATCH)

    def _take_own(self, msgs: list[P.Message], rid: int) -> None:
        """Take ``msgs`` (read by the call waiting for request ``rid``) up
        to the first reply that finishes a call: that one too if it is
        ``rid``'s; the rest go to the reader, in order.

        Raises:
            ProtocolError: a message a host must not send.
        """
        for i, m in enumerate(msgs):
            if m is MORE:  # more in the receiver: the reader's, after a turn
                self._defer(msgs[i:])
                return
            if (m.kind == P.Kind.REPLY or m.kind == P.Kind.REPLY_SHM) and m.rid in self.pending:
                if m.rid == rid:
                    self._take(m)
                    i += 1
                self._defer(msgs[i:])
                return
            self._take(m)
            if self._stray_paused:  # the rest waits out the second
                self._defer(msgs[i + 1 :])
                return

    def _defer(self, msgs: list[P.Message]) -> None:
        """Leave ``msgs``, read by a waiting call, to the reader task."""
        if msgs:
            self._deferred.extend(msgs)
            reader = self._reader
            if reader is not None and self.rfd >= 0:
                _trioloop.wake_reader(self.rfd, reader)

    # -- the tasks -----------------------------------------------------------------

    def _take(self, m: P.Message) -> bool:
        """Hand one message from the host to whom it is for; True if it
        finished a call.

        Raises:
            ProtocolError: a message a host must not send.
        """
        if m.kind == P.Kind.REPLY:
            if self._lent:
                self._give_back(m.rid)
            c = self.pending.pop(m.rid, None)
            if c is not None:
                try:
                    err, payload = P.parse_reply(m.body)
                except P.ProtocolError:
                    # Out of ``pending``, so ``_die`` would not fail it: its
                    # caller slept for ever on a host already dead.
                    c.finish(errno.EIO)
                    raise
                c.finish(err, payload)
                return True
            if m.rid == 0 and self._ping_at != math.inf:
                self._ping_at = math.inf
                self.up.set()
            else:
                self._stray()
        elif m.kind == P.Kind.REPLY_SHM:
            data = self._from_slot(m, m.rid in self.pending)  # a bad one fails the call with the host
            c = self.pending.pop(m.rid, None)
            if c is not None:
                self.shm_replies += 1
                c.finish(0, data)
                return True
            self._stray()
        elif m.kind == P.Kind.NOTIFY:
            h = self.polls.pop(m.rid, None)
            if h is not None:
                _notify(h)
            else:
                self._stray()
        else:
            raise P.ProtocolError(errno.EBADMSG, f"host sent {P.Kind(m.kind).name}")
        return False

    def _stray(self) -> None:
        """One more message that answered nothing. A second's window opens
        at the first of them; the ``STRAY_RATE``-th within it makes reading
        the pipe wait for the rest of that second."""
        self.strays += 1
        now = time.monotonic()
        if now - self._stray_since >= 1.0:  # the first of a new window
            self._stray_since = now
            self._strays = 0
        self._strays += 1
        if self._strays >= STRAY_RATE:
            self._stray_paused = True

    async def _stray_pause(self) -> None:
        """Wait out the second whose ``STRAY_RATE`` the host has used up."""
        log.warning(
            "module %s: host %d sent %d messages that answer nothing within a second:"
            " its pipe waits for the rest of it",
            self.name,
            self.pid,
            self._strays,
        )
        await trio.sleep(max(0.0, self._stray_since + 1.0 - time.monotonic()))
        self._stray_since = -math.inf  # the next stray opens the next window
        self._strays = 0
        self._stray_paused = False

    def _give_back(self, rid: int) -> tuple[int, int] | None:
        """The slot request ``rid`` lent, if any, free again (its reply came)."""
        lent = self._lent.pop(rid, None)
        if lent is not None:
            self._free.append(lent[0])
        return lent

    def _from_slot(self, m: P.Message, want: bool) -> bytes | memoryview:
        """A ``REPLY_SHM``'s data (if ``want``: its call still waits): a
        view of the slot its read lent, not a copy. FUSE is answered from
        the slot itself; ``_lendable`` lends it again only once no view of
        it is left. The host can write there meanwhile only by breaking
        the protocol, and then changes its own node's data, as it could
        by answering other bytes.

        Raises:
            ProtocolError: no slot lent for it, or more bytes than the read asked.
        """
        (n,) = P.unpack(P.SHM_REPLY, m.body)
        lent = self._give_back(m.rid)
        if lent is None or not self._slots:
            raise P.ProtocolError(errno.EBADMSG, "REPLY_SHM for a read that lent no slot")
        slot, size = lent
        if n > size:
            raise P.ProtocolError(errno.EBADMSG, f"REPLY_SHM of {n} bytes for a read of {size}")
        return memoryview(self._slots[slot])[:n] if want else b""

    async def _read(self) -> None:
        fd = self.rfd
        assert fd >= 0
        self._reader = trio.lowlevel.current_task()
        try:
            while True:
                if self._stray_paused:
                    await self._stray_pause()
                if not self._deferred:
                    await trio.lowlevel.wait_readable(fd)
                if self._deferred:  # left by a waiting call: older than the pipe's
                    msgs, self._deferred = self._deferred, []
                else:
                    got = receive_now(fd, self.rx, self._buf, TAKE_BATCH)
                    if got is None:
                        break
                    msgs = got
                self._delivering = True
                try:
                    woke = False
                    for i, m in enumerate(msgs):
                        if m is MORE:  # (the last) the rest of what was read: after a turn
                            await trio.lowlevel.cancel_shielded_checkpoint()
                            self._deferred = more(self.rx, TAKE_BATCH)
                            break
                        if woke:
                            # Callers resume in the order the host answered them
                            # (trio runs tasks woken together in any order):
                            # a read woken by a write returns after it, in a
                            # trace too. Only when one recv brought several.
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        woke = self._take(m)
                        if self._stray_paused:  # the rest waits out the second
                            self._deferred = msgs[i + 1 :]
                            break
                finally:
                    self._delivering = False
        except P.ProtocolError as exc:
            self._die(f"protocol error: {exc}", kill=True)
        else:
            self._die("closed its pipe")

    async def _stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while not self._stderr_chunk(fd):
            if self._err_paused:  # this second's bytes are read: the next one
                await trio.sleep(max(0.0, self._err_since + 1.0 - time.monotonic()))
            else:
                await trio.lowlevel.wait_readable(fd)

    def _stderr_chunk(self, fd: int, budget: int = 1 << 20, *, paced: bool = True) -> bool:
        """Log what the host has written (up to ``budget`` bytes: a child
        of the host could write for ever; ``paced``: up to what is left of
        this second's ``STDERR_RATE``, else ``_err_paused``); True at the
        end of its stderr."""
        now = time.monotonic()
        if now - self._err_since >= 1.0:
            self._err_summary()
            self._err_since = now
            self._err_read = 0
            self._err_lines = STDERR_LINES
            self._err_paused = False
        while budget > 0:
            if paced and self._err_read >= STDERR_RATE:
                self._err_paused = True
                return False
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return False
            if not chunk:
                if self._errbuf:
                    self._err_log([self._errbuf])
                    self._errbuf = b""
                self._err_summary()
                return True
            budget -= len(chunk)
            self._err_read += len(chunk)
            self.err_bytes += len(chunk)
            *lines, rest = (self._errbuf + chunk).split(b"\n")
            while len(rest) > STDERR_LINE_MAX:  # no end of line: cut, not kept growing
                lines.append(rest[:STDERR_LINE_MAX])
                rest = rest[STDERR_LINE_MAX:]
            self._errbuf = rest
            self._err_log(lines)
        return False

    def _err_log(self, lines: list[bytes]) -> None:
        """Log ``lines`` of the host's stderr, up to this second's
        ``STDERR_LINES``; count the rest, keeping its last in ``tail``."""
        n = min(len(lines), self._err_lines)
        for raw in lines[:n]:
            self._log_line(raw)
        self._err_lines -= n
        if n < len(lines):
            self._err_dropped += len(lines) - n
            for raw in lines[max(n, len(lines) - TAIL_LINES) :]:
                line = P.printable(raw.decode(errors="replace").rstrip())
                if line:
                    self.tail.append(line)

    def _err_summary(self) -> None:
        if self._err_dropped:
            log.warning(
                "module %s[%d]: %d lines of its output not logged (more than %d a second)",
                self.name,
                self.pid,
                self._err_dropped,
                STDERR_LINES,
            )
            self._err_dropped = 0

    def _log_line(self, raw: bytes) -> None:
        line = P.printable(raw.decode(errors="replace").rstrip())
        if not line:
            return
        self.tail.append(line)
        level = logging.INFO
        for word, lv in (("ERROR ", logging.ERROR), ("WARNING ", logging.WARNING), ("DEBUG ", logging.DEBUG)):
            if line.startswith(word):
                level = lv
                break
        log.log(level, "module %s[%d]: %s", self.name, self.pid, line)

    async def _wait(self) -> None:
        self._waiting = True
        try:
            await trio.lowlevel.wait_readable(self._pidfd)  # readable: the process has ended
        finally:
            self._waiting = False
        self._exited.set()
        self._die("exited")

    async def _ended(self) -> None:
        """Until the process has ended (``_wait`` may be watching already)."""
        if self._waiting:
            await self._exited.wait()
        else:
            await trio.lowlevel.wait_readable(self._pidfd)

    async def _heartbeat(self, timeout: float) -> None:
        assert self.out is not None
        # Starting (the interpreter, trio, the module's imports) is not a
        # hang: the limit counts from the first PING answered, and a host
        # that answers none within START_TIMEOUT is killed.
        self._ping_at = trio.current_time()
        self.out.send(P.encode(P.Kind.PING, 0))
        with trio.move_on_after(START_TIMEOUT):
            await self.up.wait()
        if not self.up.is_set() and not self.dead:
            log.error("module %s: host %d did not start in %g s: killed", self.name, self.pid, START_TIMEOUT)
            self._die("did not start", kill=True)
        while not self.dead:
            await trio.sleep(timeout / 4)
            now = trio.current_time()
            if self._ping_at == math.inf:
                self._ping_at = now
                self.out.send(P.encode(P.Kind.PING, 0))
                continue
            late = now - self._ping_at
            if late > 2 * timeout:
                log.error("module %s: host %d has not answered for %.1f s: killed", self.name, self.pid, late)
                self._die(f"hung for {late:.1f} s", kill=True)
            elif late > 1.5 * timeout and self.pending:
                log.error(
                    "module %s: host %d has not answered for %.1f s: %d calls get ETIMEDOUT",
                    self.name,
                    self.pid,
                    late,
                    len(self.pending),
                )
                self._fail_pending(errno.ETIMEDOUT)

    # -- death ------------------------------------------------------------------

    def _fail_pending(self, err: int) -> None:
        pending, self.pending = self.pending, {}
        for rid, c in pending.items():
            c.finish(err)
            self.post(P.encode(P.Kind.CANCEL, rid))

    def _die(self, why: str, *, kill: bool = False) -> None:
        """The host is gone (or must go): fail everything in flight with
        ``EIO``, wake every remembered poll, set ``died``."""
        if self.dead:
            return
        self.why = why
        if kill:
            self.kill()
        self._fail_pending(errno.EIO)
        self.dead = True
        polls, self.polls = self.polls, {}
        for h in polls.values():
            _notify(h)
        self.died.set()

    def refuse(self, exc: P.ProtocolError) -> DeviceError:
        """A reply that came whole but is malformed for its request (a
        WRITE's count, a POLL's fields missing): the host is broken or
        hostile, as for any malformed message (``_die``). The caller's
        error: ``EIO``, as for every call in flight."""
        self._die(f"protocol error: {exc}", kill=True)
        return DeviceError(errno.EIO)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)  # a no-op once reaped

    def close(self) -> None:
        """End the requests' pipe: a healthy host exits (``reap`` waits for
        it, and closes the replies' pipe). Nothing is sent after this."""
        self.closing = True
        if self._wfd >= 0:
            if self.out is not None:  # its sends fail (EBADF: closed) from now on
                self.out.closed = True
                self.out.fd = -1
            trio.lowlevel.notify_closing(self._wfd)
            os.close(self._wfd)
            self._wfd = -1

    async def reap(self) -> int | None:
        """Make sure the process is gone; its exit status (negative: the
        signal), after the rest of its stderr has been read.

        Shielded: runs to the end (bounded) even in a cancelled task.
        """
        proc = self.proc
        if proc is None:
            return None
        self._sync_fds = None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(EXIT_GRACE):
                await self._ended()
            self.kill()
            await self._ended()
            # Its group (it leads a session of its own): the processes its
            # driver started go with it, before the restart's INIT; while
            # it is not yet reaped, no other group can have its pid. Those
            # that left the group (setsid) go with its cgroup, below.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()  # it has ended: this only collects the status
            if proc.stderr is not None:  # the rest: faulthandler's traceback
                self._stderr_chunk(proc.stderr.fileno(), paced=False)
            for fd in (self._pidfd, proc.stderr.fileno() if proc.stderr else -1):
                if fd >= 0:
                    trio.lowlevel.notify_closing(fd)
            os.close(self._pidfd)
            self._pidfd = -1
            if proc.stderr is not None:
                proc.stderr.close()
            for fd in (self._wfd, self.rfd):
                if fd >= 0:
                    trio.lowlevel.notify_closing(fd)
                    os.close(fd)
            self.rfd = self._wfd = -1
            self._close_slots()
            if self.cgroup is not None:
                self.oom = self.cgroup.oom_kills() > 0
                await self._remove_cgroup(self.cgroup)
                self.cgroup = None
        self.dead = True
        return proc.returncode

    async def _remove_cgroup(self, cg: HostCgroup) -> None:
        """Its cgroup, and what its children left in it (killed), bounded."""
        for _ in range(int(EXIT_GRACE / 0.01)):  # a sysfs state, no event to wait on
            if cg.remove():
                return
            await trio.sleep(0.01)
        log.warning("module %s: %s still busy: left for the next devfsd to remove", self.name, cg)

    def describe_status(self, rc: int | None) -> str:
        """``killed by signal 11 (SIGSEGV)`` or ``exited with status 3``."""
        if rc is None:
            return "status unknown"
        if rc < 0:
            try:
                sig = signal.Signals(-rc).name
            except ValueError:
                sig = "?"
            oom = ""
            if self.oom:
                oom = " by the OOM killer"
                if self.memlimit is not None:
                    oom += f" (its cgroup's limit: {self.memlimit} bytes)"
            return f"killed by signal {-rc} ({sig}){oom}"
        return f"exited with status {rc}"


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data or its end (no wait)."""
    return bool(select.select([fd], [], [], 0)[0])


def _shared_buffer() -> int:
    """A memfd of ``SHM_SLOTS`` slots for a new host, sealed so that it can
    neither shrink (a mapping's page past the end is SIGBUS) nor grow, nor
    be sealed further; -1 where there is none (the pipe carries all)."""
    try:
        fd = os.memfd_create("devfsd-host", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):
        return -1
    try:
        os.ftruncate(fd, P.SHM_SLOTS * P.SHM_SLOT)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _notify(handle: Any) -> None:
    try:
        handle.notify()
    except OSError as exc:  # the poller is gone
        log.debug("poll notify failed: %s", exc)


def check_reply_json(payload: bytes | memoryview) -> dict[str, Any]:
    """The ``LOAD`` reply, checked (the host is not trusted).

    Raises:
        ProtocolError: ``EMSGSIZE`` past ``LOAD_REPLY_MAX`` bytes;
            ``EBADMSG`` unless it has a valid name, class and majors list
            of [name, major] pairs.
    """
    if len(payload) > LOAD_REPLY_MAX:
        raise P.ProtocolError(errno.EMSGSIZE, f"LOAD reply of {len(payload)} bytes, past {LOAD_REPLY_MAX}")
    obj = P.decode_json(payload)
    ok = isinstance(obj, dict) and isinstance(obj.get("name"), str) and isinstance(obj.get("cls"), int)
    majors = obj.get("majors") if ok else None
    if not ok or not isinstance(majors, list):
        raise P.ProtocolError(errno.EBADMSG, "malformed LOAD reply")
    for pair in majors:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and isinstance(pair[1], int)
            and not isinstance(pair[1], bool)
        ):
            raise P.ProtocolError(errno.EBADMSG, "malformed LOAD reply")
    checked: dict[str, Any] = obj
    return checked
