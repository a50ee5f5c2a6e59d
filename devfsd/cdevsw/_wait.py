"""Sleeping and waking: ``WaitChannel`` (tsleep/wakeup plus selinfo).

Imports trio, never pyfuse3. Theory of operation:

A driver with nothing to give sleeps on a channel until another entry point
(or a background task) calls ``wakeup()``, then re-checks its condition, as
NetBSD's ``tsleep``/``wakeup`` loop does::

    while not sc.queue:
        if uio.nonblock:
            raise DeviceError(errno.EWOULDBLOCK)
        await sc.rchan.sleep(uio.lwp)

FUSE makes sleeping harder than in a kernel in three ways (see
../shared/reference/fuse.md, section 2):

1. pyfuse3 does not pass FUSE_INTERRUPT on, so a process blocked in a
   read would not die on SIGINT until the driver answered. At a sleep's
   first check (``CHECK_FIRST``; one clock task per trio run does the
   checks of all sleeps, so a sleep and its wakeup cost no timer of their
   own) the clock registers with libfuse for the INTERRUPT of the FUSE
   request the sleeper serves (``devfsd._fuseintr``); from then on the
   INTERRUPT ends the sleep with ``EINTR`` and nothing is polled (bench/
   bench_sleepers.py: the idle daemon's CPU time with thousands of
   sleepers). Where that cannot be done (guards, in-process calls), the
   caller is looked at every so often (50 ms at first, backing off to
   400 ms) for pending signals in ``/proc/TID/status``; if one is
   deliverable (pending and not blocked) the sleep raises ``EINTR``. A
   fatal signal shows as a pending SIGKILL. Either way the kernel returns
   EINTR to the caller and delivers the signal; coreutils, dd, Python and
   Go retry EINTR when the signal's handler returns. XXX: on the /proc
   path the caller on read/write is the *opener* (FUSE gives no context
   there), so a reader that inherited the descriptor from a still-living
   opener is not seen.
2. The task that reads a FUSE request holds it until the reply; a sleeper
   holds a task. The daemon runs thousands of tasks, and ``sleep`` refuses
   with ``EAGAIN`` beyond ``MAX_SLEEPERS`` so one always stays free. A
   caller other than root stops ``ROOT_SLEEPERS`` short of it, as a user
   does short of root's reserve of ``nr_files``: any user who may open a
   node whose reads block can park reads asleep (each ~10 kB of daemon
   memory, bench/bench_sleeper_memory.py), and without the reserve one
   user holding them all made root's blocking reads fail ``EAGAIN`` too.
   Nor may one uid other than root hold more than ``USER_SLEEPERS`` of
   what is left (``-o share``, half by default: ``devfsd.limits``), or it
   would make every other user's blocking reads fail ``EAGAIN``. The
   count is kept per uid in ``_by_uid`` from the ``_sleeping.add`` to the
   sleep's end (``_Sleeper.wake`` or ``abort``, whichever comes first,
   every way a sleep can end going through one of them), and a uid's
   entry goes at zero. A caller's uid is its fsuid, the opener's on
   read/write (``Lwp``), and the daemon's side of an isolated call sleeps
   as its caller (``devfsd.isolate.hostproc``), so a user's reads into
   module hosts count too; a host counts no shares of its own
   (``no_shares``).
3. A detach (module unload) or daemon shutdown must end every sleep: they
   raise ``ENXIO`` in the sleepers (``abort_sleepers``).

``selrecord(l)`` remembers the poll handle of a poll that found nothing
ready; ``wakeup()`` notifies it once, after which the kernel polls again.

Entry points have a time limit (``call_limited``, set by ``SpecFs`` from
``devfsd --entry-timeout``): one that awaits anything but a ``sleep`` here
for longer is cancelled and its caller gets ``ETIMEDOUT``, so a driver
awaiting a socket or an event that never comes ties up one request, not the
node for ever; that holds too when it waits inside cancel scopes of its own
(``with trio.move_on_after(3600)``, a nursery, a ``sleep``): the limit's
scope goes in under them. Time asleep in ``WaitChannel.sleep`` does not
count: a read on an empty queue may legitimately wait for hours. ``sleep``
finds the call's limit in a context variable (or, for a sleep begun before
the limit was set up, the limit finds the sleep in ``_asleep``), lifts its
deadline to infinity while asleep and re-arms it with what was left when
it wakes. Trio cancels only at an ``await``: a driver spinning in a
synchronous loop (or calling blocking code) is not reached from here but
by the stall watchdog (``devfsd.watchdog``), which raises into it from a
signal handler once the loop has been held past the same limit. XXX: a
shielded scope in the driver
(``trio.CancelScope(shield=True)``) keeps the limit out until it ends, as
it keeps out every outer cancellation; a hang inside one is not caught.

Fast paths: the sleep clock, ``sleep(fd=...)`` and ``call_limited`` take
shortcuts through trio's private state (``devfsd._trioloop``) when
``_trioloop.PRIVATE`` says they may, and otherwise do the same with trio's
public API: the clock's scope moved by ``CancelScope.deadline``, a
readiness wait by ``trio.lowlevel.wait_readable`` in a cancel scope a
wakeup cancels, and the limit's scope entered around the whole call. On
that path a driver that catches the limit's ``Cancelled`` and answers is
logged without the stack it was caught in.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import math
import types
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, final

import outcome
import trio

from devfsd import _trioloop
from devfsd._fuseintr import unwatch, watch
from devfsd._trioloop import move_deadline, register_reader, unregister_reader
from devfsd.cdevsw._dev import major
from devfsd.errors import DeviceError
from devfsd.limits import DEFAULT_SHARE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Generator
    from socket import socket

    from devfsd.cdevsw._switch import File, Lwp

__all__ = [
    "MAX_SLEEPERS",
    "ROOT_SLEEPERS",
    "USER_SLEEPERS",
    "WaitChannel",
    "abort_sleepers",
    "call_limited",
    "finish_limited",
    "share_sleepers",
    "signal_pending",
    "sleepers",
    "sleepers_of",
]

log = logging.getLogger(__name__)

#: Most entry points asleep at once, daemon-wide; the FUSE loop must keep
#: more tasks than this (``devfsd.fs.MAX_TASKS``).
MAX_SLEEPERS: Final = 4000
#: The last of them only root's callers may take (5 %, ``-o reserve``'s default).
ROOT_SLEEPERS: Final = 200
#: The most of the rest one uid other than root may hold (``-o share``,
#: set by ``share_sleepers``): 1,900 by default.
USER_SLEEPERS = (MAX_SLEEPERS - ROOT_SLEEPERS) * DEFAULT_SHARE // 100
#: First and longest interval between signal checks of a sleeper (seconds).
CHECK_FIRST: Final = 0.05
CHECK_MAX: Final = 0.4

_SIGKILL_BIT: Final = 1 << (9 - 1)


@final
class _Sleeper:
    """One ``WaitChannel.sleep`` under way: its task sleeps in
    ``wait_task_rescheduled`` until ``wake`` reschedules it, once."""

    __slots__ = (
        "chan",
        "check_at",
        "deadline",
        "done",
        "entry",
        "error",
        "fd",
        "fp",
        "interval",
        "intr",
        "maj",
        "on_intr",
        "pid",
        "scope",
        "task",
        "uid",
    )

    def __init__(
        self,
        chan: WaitChannel,
        maj: int | None,
        entry: _Entry | None,
        task: trio.lowlevel.Task,
        pid: int,
        deadline: float,
        now: float,
    ) -> None:
        self.chan = chan
        self.maj = maj
        self.task = task
        self.pid = pid
        self.deadline = deadline
        self.interval = CHECK_FIRST
        #: When ``_SleepClock`` next looks at the caller's signals and the
        #: deadline.
        self.check_at = min(now + CHECK_FIRST, deadline)
        self.done = False
        self.error = 0
        #: For a sleep that also waits for a file descriptor
        #: (``sleep(fd=...)``): the descriptor, in whose trio epoll record
        #: the task waits (``devfsd._trioloop.register_reader``).
        self.fd = -1
        #: The same on the public path: the cancel scope around its
        #: ``wait_readable``, which a wakeup cancels.
        self.scope: trio.CancelScope | None = None
        #: The limit whose clock this sleep stops; ``finish_limited`` sets it
        #: on a sleep begun in an entry point's first step, before the limit.
        self.entry = entry
        #: The open file the caller sleeps for (``None`` outside a file's call).
        self.fp: object = None
        #: 0 before the first check; then the ``_fuseintr.watch`` key when
        #: the FUSE request's INTERRUPT will end the sleep (no /proc
        #: checks), or -1 when signals must be looked for in /proc.
        self.intr = 0
        #: What the INTERRUPT does instead of ``wake(EINTR)`` (``sleep``'s ``interrupt``).
        self.on_intr: Callable[[], None] | None = None
        #: The uid this sleep counts against in ``_by_uid`` (0: none, or given back).
        self.uid = 0

    def wake(self, err: int = 0) -> None:
        """End the sleep: it returns (``err`` 0) or raises ``DeviceError(err)``."""
        if not self.done:
            self.done = True
            self.error = err
            if self.intr > 0:
                unwatch(self.intr)
            _sleeping.discard(self)
            if self.uid:
                _uncount(self)
            self.chan._sleepers.pop(self, None)
            if self.fd < 0:
                if self.scope is None:
                    trio.lowlevel.reschedule(self.task)
                else:  # the public path's sleep(fd=...)
                    self.scope.cancel()
            elif unregister_reader(self.fd, self.task):  # else the descriptor's event has rescheduled it
                # False: woken (the descriptor's readiness sends what unwraps to None).
                trio.lowlevel.reschedule(self.task, outcome.Value(False))

    def abort(self, raise_cancel: object) -> trio.lowlevel.Abort:
        """``wait_task_rescheduled``'s abort: a cancellation ends the sleep."""
        self.done = True
        if self.intr > 0:
            unwatch(self.intr)
        _sleeping.discard(self)
        if self.uid:
            _uncount(self)
        self.chan._sleepers.pop(self, None)
        if self.fd >= 0:
            unregister_reader(self.fd, self.task)
        return trio.lowlevel.Abort.SUCCEEDED


_sleeping: set[_Sleeper] = set()
#: How many of ``_sleeping`` each uid other than root holds; a uid with
#: none has no entry.
_by_uid: dict[int, int] = {}


def _uncount(s: _Sleeper) -> None:
    """Give ``s``'s place in its uid's count back (once: ``s.uid`` goes 0)."""
    uid, s.uid = s.uid, 0
    n = _by_uid[uid] - 1
    if n:
        _by_uid[uid] = n
    else:
        del _by_uid[uid]


#: The sleep each task is in, for ``finish_limited`` to find.
_asleep: dict[trio.lowlevel.Task, _Sleeper] = {}


@final
class _SleepClock:
    """The signal checks and timeouts of every sleep in one trio run.

    One system task, asleep until the earliest sleeper's ``check_at``, so a
    sleep itself needs no cancel scope of its own: a ``wakeup`` reschedules
    the sleeper and nothing else (this is on the path of every packet a
    tunwg reader waits for). A sleeper woken before its check stays in the
    heap until it comes to the top, and is skipped (``done``). The clock's
    deadline moves at each new sleep, to the earliest check of a sleeper
    not yet woken, so a reader woken every few milliseconds never wakes it.
    """

    __slots__ = ("heap", "scope", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Sleeper]] = []
        self.seq = itertools.count()
        #: The clock task's sleep, while it sleeps.
        self.scope: trio.CancelScope | None = None

    def add(self, s: _Sleeper) -> None:
        heap = self.heap
        heapq.heappush(heap, (s.check_at, next(self.seq), s))
        while heap[0][2].done:  # woken since: no reason to wake the clock for them
            heapq.heappop(heap)
        cs = self.scope
        if cs is not None:
            if _trioloop.PRIVATE is None:
                if cs.deadline != heap[0][0]:
                    cs.deadline = heap[0][0]
            elif cs._deadline != heap[0][0]:
                move_deadline(cs, heap[0][0])

    async def run(self) -> None:
        heap = self.heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as cs:
                self.scope = cs
                await trio.sleep_forever()
            self.scope = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                s = heapq.heappop(heap)[2]
                if s.done:
                    continue
                if now >= s.deadline:
                    s.wake(errno.EWOULDBLOCK)
                elif (s.intr == 0 and _watch_interrupt(s)) or s.pid <= 0 or not _proc_checks:
                    if s.deadline != math.inf:  # only the deadline is left to check
                        s.check_at = s.deadline
                        heapq.heappush(heap, (s.check_at, next(self.seq), s))
                elif signal_pending(s.pid):
                    if s.on_intr is None:
                        s.wake(errno.EINTR)
                    else:  # passed on once; the answer ends the sleep
                        s.on_intr()
                        if s.deadline != math.inf and not s.done:
                            s.check_at = s.deadline
                            heapq.heappush(heap, (s.check_at, next(self.seq), s))
                else:
                    s.interval = min(s.interval * 2, CHECK_MAX)
                    s.check_at = min(now + s.interval, s.deadline)
                    heapq.heappush(heap, (s.check_at, next(self.seq), s))


def _watch_interrupt(s: _Sleeper) -> bool:
    """Have the FUSE request's INTERRUPT end ``s`` with ``EINTR`` (``devfsd._fuseintr``).

    True if it will (or already has: the INTERRUPT came first); False, and
    ``s`` is checked in /proc from now on, if the request cannot be watched.
    """
    s.intr = -1
    if s.fp is None:
        return False
    key = watch(s.task.coro, s.fp, s.on_intr or (lambda: s.wake(errno.EINTR)))
    if key == 0:
        return False
    if s.done:  # woken at once: interrupted before
        unwatch(key)
    else:
        s.intr = key
    return True


_clock: trio.lowlevel.RunVar[_SleepClock] = trio.lowlevel.RunVar("devfsd_sleep_clock")


def _sleep_clock() -> _SleepClock:
    """This trio run's ``_SleepClock``, started on first use."""
    # _clock.get() without RunVar.get's two Python calls (one a typing.cast):
    # the run's RunVar values are in its runner's ``_locals`` (trio-private).
    p = _trioloop.PRIVATE
    clock: _SleepClock | None
    if p is not None:
        clock = p.run_context.runner._locals.get(_clock)
    else:
        try:
            clock = _clock.get()
        except LookupError:
            clock = None
    if clock is None:
        clock = _SleepClock()
        _clock.set(clock)
        trio.lowlevel.spawn_system_task(clock.run, name="devfsd sleep clock")
    return clock


@final
class _Entry:
    """The time limit of one entry point call (see ``call_limited``)."""

    __slots__ = ("armed", "asleep", "left", "scope", "status", "struck", "task")

    def __init__(self, timeout: float, task: trio.lowlevel.Task, status: object) -> None:
        self.task = task
        #: The cancel status the call began in: the limit's scope goes in there.
        self.status = status
        self.scope: trio.CancelScope | None = None
        #: ``arm`` has run (the scope is in, or could not go in).
        self.armed = False
        self.asleep = 0
        self.left = timeout
        #: The limit's ``Cancelled``, once trio has delivered it.
        self.struck: BaseException | None = None

    def arm(self) -> bool:
        """Put the limit's scope in, with the time left; False if it cannot go in.

        Must run while the task is not blocked (``_enter_at``).
        """
        self.armed = True
        cs = trio.CancelScope(deadline=trio.current_time() + self.left)
        if not _enter_at(cs, self.task, self.status):
            return False
        self.scope = cs
        return True


#: The limit of the entry point this task is running, if any.
_entry: ContextVar[_Entry | None] = ContextVar("devfsd_entry", default=None)


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, Any], yielded: Any, entry: _Entry | None = None
) -> Generator[Any, Any, Any]:
    """Go on awaiting ``coro``, which has already yielded ``yielded`` once.

    What ``await coro`` does after its first step: every value ``coro``
    yields goes up to trio, every value or exception trio sends back goes
    down to ``coro``, and its return value is ours. With ``entry``, puts
    the limit's scope in (``entry.arm``) when ``coro`` first blocks outside
    a ``WaitChannel.sleep``, and notes in ``entry.struck`` the limit's
    ``Cancelled`` when trio delivers it (the entry point may catch it).
    """
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            # Trio sends a blocked checkpoint its outcome: a cancellation
            # is an ``outcome.Error`` holding the ``Cancelled``.
            if entry is not None and entry.struck is None:
                err = getattr(sent, "error", None)
                sc = entry.scope
                # type() is: Cancelled is final, and isinstance would run ABCMeta's check.
                if type(err) is trio.Cancelled and sc is not None and sc.cancel_called:
                    entry.struck = err
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
        if entry is not None and not entry.armed and not entry.asleep:
            entry.arm()  # woke, and now blocks on something else: the clock runs


@trio.lowlevel.enable_ki_protection  # no KeyboardInterrupt half-way through
def _enter_at(cs: trio.CancelScope, task: trio.lowlevel.Task, status: Any) -> bool:
    """Enter ``cs`` as if ``task`` were still at cancel status ``status``.

    ``task`` may have entered cancel scopes of its own since (an entry
    point stopped inside ``with trio.move_on_after(...)`` or a ``sleep``):
    then ``cs`` goes in between, as the parent of the outermost of them,
    exactly where ``with cs:`` around the whole call would have put it. The
    task's scopes then exit into ``cs`` and ``cs`` into ``status``, in
    order, and a cancellation of ``cs`` reaches into them as any outer
    one would (a shielded scope among them keeps it out until it ends).
    Trio re-parents cancel statuses the same way in ``TaskStatus.started``.
    Must run while ``task`` is not blocked (its step has not yet reached
    trio).

    Returns:
        False, entering nothing, if ``status`` does not enclose the task's
        status (misnested scopes in the driver).
    """
    cur = task._cancel_status
    if cur is status:
        cs.__enter__()
        return True
    child = cur  # the task's outermost status inside ``status``
    while (parent := child.parent) is not status:
        if parent is None:
            return False
        child = parent
    task._activate_cancel_status(status)
    try:
        cs.__enter__()
    finally:
        task._activate_cancel_status(cur)
    child.parent = cs._cancel_status
    return True


async def call_limited(
    coro: Awaitable[Any],
    timeout: float | None,
    on_hang: Callable[[str], None] | None = None,
    what: str = "",
) -> tuple[Any, bool]:
    """Await an entry point's coroutine under a limit of ``timeout`` seconds awake.

    Theory: most entry points (mm, crandom) never wait for anything; they
    run to the end at their first step. Opening a trio cancel scope for
    each would cost several microseconds on every read(2), more than the
    rest of devfsd's read path. So the first step runs bare, and only an
    entry point that is still running after it (it awaits something) gets
    its cancel scope, with the deadline counted from then. The plain
    version is ``with trio.move_on_after(timeout): return await coro``.

    Trio's scopes must nest, and at its first ``await`` the entry point may
    be inside cancel scopes of its own (``with trio.move_on_after(...)``,
    or the one in ``WaitChannel.sleep``). Entered then, our scope would
    nest inside theirs and corrupt trio's scope stack when they exit; so
    it goes in *under* them instead (``_enter_at``, on trio's private
    ``Task._cancel_status``), where the plain version would have put it.

    Time asleep in ``WaitChannel.sleep`` stops the clock: ``sleep`` finds
    this call's ``_Entry`` in a context variable, lifts the scope's deadline
    while asleep and re-arms it with what was left when it wakes; a sleep
    already under way at the end of the first step is found in ``_asleep``
    and the scope starts with no deadline until it ends.

    Args:
        coro: the entry point's coroutine, not yet started.
        timeout: seconds awake, or ``None`` for no limit.
        on_hang: called with ``what`` (and the ``Cancelled`` in flight, so a
            logger can show the stack it was stuck in) when the limit strikes.
        what: the entry point's name, for ``on_hang``.

    Returns:
        (what the entry point returned, False), or (None, True) when it was
        cancelled for running too long. An entry point that catches the
        ``Cancelled`` and returns has its answer returned (and ``on_hang``
        is called when it returns).
    """
    if timeout is None:
        return await coro, False
    if _trioloop.PRIVATE is None:
        return await _limited_public(coro, timeout, on_hang, what)
    if not isinstance(coro, types.CoroutineType):  # not an ``async def``: the plain way
        return await _limited_public(coro, timeout, on_hang, what)
    task = trio.lowlevel.current_task()
    status = task._cancel_status
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return stop.value, False
    return await finish_limited(coro, first, status, timeout, on_hang, what)


async def finish_limited(
    coro: Coroutine[Any, Any, Any],
    first: Any,
    status: object,
    timeout: float,
    on_hang: Callable[[str], None] | None = None,
    what: str = "",
) -> tuple[Any, bool]:
    """The rest of ``call_limited`` once ``coro``'s first step yielded ``first``.

    For callers on the hot path that run the first step inline: ``status``
    is ``trio.lowlevel.current_task()._cancel_status`` from before it.
    Only with the fast paths on (``_trioloop.PRIVATE``).
    """
    if _trioloop.PRIVATE is None:
        raise RuntimeError("finish_limited needs devfsd's fast paths; use call_limited")
    task = trio.lowlevel.current_task()
    entry = _Entry(timeout, task, status)
    sleeper = _asleep.get(task)
    if sleeper is not None and sleeper.entry is None:
        # The first step went to sleep: no clock until it wakes, and no
        # scope until the entry point blocks on anything else (``_resume``
        # arms it then); most never do: a read takes what woke it and
        # returns. (A sleep that already stops an outer call's clock, were
        # entry points ever to call each other through call_limited, stops
        # only that one.)
        sleeper.entry = entry
        entry.asleep = 1
    elif not entry.arm():
        # XXX: the entry point exited a scope it had not entered (its
        # status is outside the caller's); trio reports that misnesting
        # itself. No limit for such a call.
        return await _resume(coro, first), False
    _adopt_children(task, status, entry)
    token = _entry.set(entry)
    try:
        try:
            rv = await _resume(coro, first, entry)
        except BaseException as exc:
            cs = entry.scope
            if cs is None:
                raise
            # ``with cs:`` by hand (``_enter_at`` entered it).
            swallowed = cs.__exit__(type(exc), exc, exc.__traceback__)
            if on_hang is not None and cs.cancel_called:
                if swallowed or isinstance(exc, trio.Cancelled):
                    on_hang(what)  # exc in flight: its traceback is the driver's stack
                else:
                    _hang_caught(entry, on_hang, what)
            if swallowed:
                return None, True
            raise
        cs = entry.scope
        if cs is not None:
            cs.__exit__(None, None, None)
            _hang_caught(entry, on_hang, what)
        return rv, False
    finally:
        entry.struck = None
        _entry.reset(token)


def _adopt_children(task: trio.lowlevel.Task, status: Any, entry: _Entry) -> None:
    """Put ``entry`` in the context of the tasks the entry point's first step started.

    On the public path (``_limited_public``) the call's ``_Entry`` is in the
    context before the entry point runs, so the tasks it starts inherit it
    and their ``WaitChannel.sleep`` stops its clock. Here the first step ran
    before ``_entry.set``: tasks it started (in nurseries it opened, whose
    cancel status is below ``status``, the call's) copied a context without
    it. Only when the first step blocked, so off the path of calls that
    finish in it.
    """
    for nursery in reversed(task.child_nurseries):  # inner ones last: the call's
        st = nursery.cancel_scope._cancel_status
        if st is status:
            return  # the call runs right inside it: not the call's, nor those before
        while st is not None and st is not status:
            st = st.parent
        if st is None:
            return  # a nursery the call runs inside
        for child in nursery.child_tasks:
            child.context.run(_entry.set, entry)


async def _limited_public(
    coro: Awaitable[Any], timeout: float, on_hang: Callable[[str], None] | None, what: str
) -> tuple[Any, bool]:
    """``call_limited`` with trio's public API only: the limit's scope goes
    around the whole call, so it nests under any the entry point enters."""
    entry = _Entry(timeout, trio.lowlevel.current_task(), None)
    entry.armed = True
    with trio.CancelScope(deadline=trio.current_time() + timeout) as cs:
        entry.scope = cs
        token = _entry.set(entry)
        try:
            rv = await coro
        except BaseException:
            if on_hang is not None and cs.cancel_called:
                on_hang(what)  # the Cancelled (or what the driver raised after it) in flight
            raise
        finally:
            _entry.reset(token)
    if cs.cancelled_caught:
        return None, True
    if on_hang is not None and cs.cancel_called:
        on_hang(what)  # the entry point caught the Cancelled and answered
    return rv, False


def _hang_caught(entry: _Entry, on_hang: Callable[[str], None] | None, what: str) -> None:
    """Log a hang whose ``Cancelled`` the entry point caught, where it caught it."""
    struck = entry.struck
    if struck is not None and on_hang is not None:
        try:
            raise struck
        except BaseException:
            on_hang(what)


def sleepers() -> int:
    """How many entry points are asleep now."""
    return len(_sleeping)


def sleepers_of(uid: int) -> int:
    """How many of them count against ``uid``'s share (0 for root)."""
    return _by_uid.get(uid, 0)


def share_sleepers(percent: int) -> None:
    """One uid other than root may hold ``percent`` of the sleepers root's
    reserve leaves (``-o share``, ``devfsd.limits.Limits.share``)."""
    global USER_SLEEPERS
    USER_SLEEPERS = max(1, (MAX_SLEEPERS - ROOT_SLEEPERS) * percent // 100)


def abort_sleepers(maj: int | None = None, err: int = errno.ENXIO) -> int:
    """End every sleep on ``maj`` (every sleep if ``None``) with ``err``.

    Returns:
        How many sleepers were woken.
    """
    n = 0
    for s in list(_sleeping):
        if maj is None or s.maj == maj:
            s.wake(err)
            n += 1
    return n


#: Whether sleeps look for their caller's signals in /proc. A module host
#: turns it off (``no_proc_checks``): the daemon looks for them (its
#: FUSE_INTERRUPT, else /proc) and passes them on (``interrupt_sleep``).
_proc_checks = True
#: Tasks interrupted (``interrupt_sleep``) while not asleep: their next
#: sleep ends at once, as libfuse calls an INTERRUPT that came first back
#: when the sleep registers for it.
_interrupted: set[trio.lowlevel.Task] = set()


def no_proc_checks() -> None:
    """Sleeps look for no signals in /proc from now on (a module host)."""
    global _proc_checks
    _proc_checks = False


def no_shares() -> None:
    """No uid's share is counted from now on (a module host: each of its
    sleepers is a call the daemon's side sleeps on, counted there against
    the caller's share; a host counting too would apply the default share
    where the daemon's ``-o share`` is larger)."""
    share_sleepers(100)


def interrupt_sleep(task: trio.lowlevel.Task) -> None:
    """End the sleep ``task`` is in with ``EINTR``, as a signal for its
    caller would (a module host's ``INTERRUPT``); if it is not asleep, its
    next sleep ends so, until ``forget_interrupt``."""
    s = _asleep.get(task)
    if s is None or s.done:
        _interrupted.add(task)
    else:
        s.wake(errno.EINTR)


def forget_interrupt(task: trio.lowlevel.Task) -> None:
    """The call ``task`` made for an interrupted caller is over."""
    _interrupted.discard(task)


def signal_pending(tid: int) -> bool:
    """True if thread ``tid`` has a signal it will take, or is gone.

    Reads ``SigPnd`` (the thread's), ``ShdPnd`` (the process's) and ``SigBlk``
    from ``/proc/TID/status``. A fatal signal appears as SIGKILL pending.
    """
    if tid <= 0:
        return False
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    pnd = blk = ign = 0
    for line in text.splitlines():
        if line.startswith((b"SigPnd:", b"ShdPnd:")):
            pnd |= int(line.split()[1], 16)
        elif line.startswith(b"SigBlk:"):
            blk = int(line.split()[1], 16)
        elif line.startswith(b"SigIgn:"):
            ign = int(line.split()[1], 16)
        elif line.startswith(b"State:") and b"zombie" in line:
            return True
    return bool(pnd & _SIGKILL_BIT) or bool(pnd & ~blk & ~ign)


@final
class WaitChannel:
    """Something entry points sleep on and pollers wait for.

    ``wakeup()`` ends every current ``sleep`` and notifies every recorded
    poll; sleepers must re-check their condition (another caller may have
    taken what woke them).
    """

    __slots__ = ("_polls", "_sleepers", "name")

    def __init__(self, name: str = "wchan") -> None:
        self.name = name
        #: The sleepers, oldest first (a dict: ordered, O(1) removal).
        self._sleepers: dict[_Sleeper, None] = {}
        #: Recorded polls: per open file (its ``File``; a poll with no file:
        #: its handle), the kernel's handle of its last poll.
        self._polls: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<WaitChannel {self.name} sleepers={len(self._sleepers)}>"

    def wakeup(self) -> None:
        """Wake all sleepers and notify recorded polls (``wakeup`` + ``selnotify``)."""
        if self._sleepers:
            sleepers, self._sleepers = self._sleepers, {}
            for s in sleepers:
                s.wake()
        if self._polls:
            self._notify_polls()

    def wakeup_one(self) -> None:
        """Wake the longest asleep sleeper only, and notify recorded polls.

        NetBSD's ``wakeup_one(9)``: for a resource only one sleeper can
        take (one slot, one token), so the rest sleep on instead of waking
        to find it gone. A woken sleeper that then does not take it must
        call ``wakeup_one()`` again, or the next sleeper sleeps on. Polls
        are all notified, as ``wakeup`` does: a poll takes nothing.
        """
        for s in self._sleepers:
            s.wake()  # takes it out of _sleepers
            break
        if self._polls:
            self._notify_polls()

    def _notify_polls(self) -> None:
        polls, self._polls = self._polls, {}
        for h in polls.values():
            try:
                h.notify()
            except OSError as exc:  # the poller is gone: nothing to tell
                log.debug("poll notify failed: %s", exc)

    def selrecord(self, l: Lwp) -> None:
        """Remember ``l``'s poll handle; the next ``wakeup`` notifies it.

        One per open file, its last (the kernel has one poll handle per
        file: notifying it wakes every poller of the file), forgotten when
        the file closes (``seldrain``). Until the ninth session each poll
        added one, kept until a wakeup: a user polling an idle node (a
        msgq nobody writes) grew the daemon, or an isolated driver's host,
        by ~56 bytes a poll of one file, ~450 a file opened, polled and
        closed, without end.
        """
        h = l.poll_handle
        if h is not None:
            l.poll_handle = None
            fp = l.fp
            if fp is None:
                self._polls[h] = h
                return
            self._polls[fp] = h
            chans = fp.selchans
            if chans is None:
                fp.selchans = {self}
            else:
                chans.add(self)

    def seldrain(self, fp: File) -> None:
        """``fp`` is closed: forget its recorded poll (NetBSD ``seldrain``)."""
        self._polls.pop(fp, None)

    async def sleep(
        self,
        l: Lwp,
        timo: float | None = None,
        *,
        fd: int | socket | None = None,
        interrupt: Callable[[], None] | None = None,
    ) -> bool:
        """Sleep until ``wakeup()``, a signal for the caller, or ``timo`` seconds.

        Args:
            l: the caller (its pid is checked for pending signals).
            timo: give up after this many seconds (``None``: never).
            fd: a file descriptor (or socket) the sleeper's data comes from:
                the sleep also ends when it is readable (or closed, by
                ``trio.lowlevel.notify_closing``). A driver that fills its
                queue from a socket can then read the socket in the task of
                the caller that waits, and answer it in the same step (see
                tunwg's ``Interface.wait_packet``). No other task may wait
                on ``fd`` meanwhile.
            interrupt: for ``devfsd.isolate``'s calls into a host: what a
                signal for the caller (the INTERRUPT of its FUSE request,
                else one seen in /proc) does instead of ending the sleep
                with ``EINTR``: the host is told, and its answer ends the
                sleep, so nothing it took is lost.

        Returns:
            True if ``fd`` is readable or closed, False if woken.

        Raises:
            DeviceError: ``EINTR`` if the caller has a signal to take,
                ``EWOULDBLOCK`` when ``timo`` runs out (as ``tsleep``),
                ``ENXIO`` if the driver was detached or the daemon stops,
                ``EAGAIN`` if ``MAX_SLEEPERS`` entry points already sleep
                (``MAX_SLEEPERS`` - ``ROOT_SLEEPERS`` for a caller other
                than root), or ``USER_SLEEPERS`` of the caller's uid.
        """
        uid = l.uid
        if uid:
            mine = _by_uid.get(uid, 0)
            if len(_sleeping) >= MAX_SLEEPERS - ROOT_SLEEPERS or mine >= USER_SLEEPERS:
                raise DeviceError(errno.EAGAIN, "too many sleepers")
        elif len(_sleeping) >= MAX_SLEEPERS:
            raise DeviceError(errno.EAGAIN, "too many sleepers")
        # Stop the entry point's clock (see call_limited) while asleep.
        entry = _entry.get()
        task = trio.lowlevel.current_task()
        if _interrupted and task in _interrupted:
            _interrupted.discard(task)
            raise DeviceError(errno.EINTR)
        p = _trioloop.PRIVATE
        # trio.current_time(), less two calls.
        now = p.run_context.runner.clock.current_time() if p is not None else trio.current_time()
        s = _Sleeper(
            self,
            major(l.dev) if l.dev is not None else None,
            entry,
            task,
            l.pid,
            now + timo if timo is not None else math.inf,
            now,
        )
        s.fp = l.fp
        if interrupt is not None:
            s.on_intr = interrupt
            _sleep_clock().add(s)
        elif l.pid > 0 or timo is not None:  # else the clock has nothing to look at
            _sleep_clock().add(s)
        _sleeping.add(s)
        if uid:  # given back where it leaves _sleeping (_Sleeper.wake, abort)
            _by_uid[uid] = mine + 1
            s.uid = uid
        self._sleepers[s] = None
        _asleep[task] = s
        if entry is not None:
            entry.asleep += 1
            sc = entry.scope
            if sc is not None and not sc.cancel_called and sc.deadline != math.inf:
                entry.left = max(sc.deadline - now, 0.0)
                sc.deadline = math.inf
        readable = False
        try:
            if fd is None:
                await trio.lowlevel.wait_task_rescheduled(s.abort)
            elif p is None:
                # The public path: a wakeup cancels the wait.
                with trio.CancelScope() as s.scope:
                    with contextlib.suppress(trio.ClosedResourceError):  # notify_closing(fd)
                        await trio.lowlevel.wait_readable(fd)
                    readable = True
            else:
                # trio.lowlevel.wait_readable(fd) (trio's _epoll_wait) that
                # a wakeup also ends, without the cancel scope, wrappers and
                # deadline bookkeeping around it that ending it by
                # cancellation would take: this is on the path of every
                # packet a tunwg reader waits for.
                n = fd if isinstance(fd, int) else fd.fileno()
                register_reader(n, task)
                s.fd = n
                try:
                    readable = await trio.lowlevel.wait_task_rescheduled(s.abort) is None
                except trio.ClosedResourceError:  # notify_closing(fd)
                    readable = True
        finally:
            if not s.done:  # not woken nor cancelled: fd readable or closed, or an exception
                s.abort(None)
            _asleep.pop(task, None)
            entry = s.entry  # finish_limited may have set it since
            if entry is not None:
                entry.asleep -= 1
                sc = entry.scope
                if sc is not None and not entry.asleep and not sc.cancel_called:
                    sc.deadline = trio.current_time() + entry.left
        if s.error:
            raise DeviceError(s.error)
        return readable
