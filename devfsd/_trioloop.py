"""Making trio's run loop cheaper for a daemon that handles every request in it.

A Python daemon woken after a pause pays for every distinct function its
wake-up runs, about a microsecond each on this VM (bench/README.md, tunwg,
"Round-trip time, fourth session"), so what counts on the path of a packet
is how many different functions run, not only how many calls. This module
takes some of trio's off that path.

Instruments
-----------

Trio checks for instruments (``trio.abc.Instrument``) at every task step,
every reschedule and every I/O wait, with ``"hook" in runner.instruments``.
``runner.instruments`` is a ``collections.UserDict``, so each of those
checks is a Python-level ``__contains__`` call: about 30 calls for every
packet a tunwg node moves, on a path where a Python daemon woken after a
pause pays for every call several times over (bench/README.md, tunwg,
"Round-trip time"). ``fast_instruments`` swaps in a ``dict`` subclass with
the same contents and methods, whose ``in`` is the C one: one packet's trip
through two cold tunwg daemons (``bench/bench_oneway.py``) 0.94-0.96x.

Waking a task whose descriptor is ready
---------------------------------------
trio's epoll manager wakes such a task through ``trio.lowlevel.reschedule``
with a fresh ``outcome.Value(None)``, which the task then unwraps: four
Python functions (the public wrapper, the ``Value``'s ``__init__``,
``unwrap`` and ``_set_unwrapped``) on every wake-up of the daemon.
``fast_io_wakeups`` swaps in a subclass of the manager whose
``process_events`` calls the runner's ``reschedule`` with ``READY``,
whose ``unwrap()`` is ``None`` in C.

Waiting for a descriptor without trio's wrappers
-----------------------------------------------
``register_reader`` and ``unregister_reader`` do what
trio's ``wait_readable`` does (``EpollIOManager._epoll_wait``): the task
goes in trio's epoll record of the descriptor as its ``read_task``, and
trio's ``process_events`` reschedules it when the descriptor is readable,
or ``notify_closing`` with ``ClosedResourceError``. Doing it here lets a
task be put there without running (``TurnReaders``), or taken out of it
by a wakeup rather than a cancellation (``WaitChannel.sleep(fd=...)``).

pyfuse3's worker loop
---------------------
pyfuse3 runs its requests in worker tasks that take turns waiting for the
FUSE descriptor under a ``trio.Lock``: the worker woken by a request
releases the lock, which wakes the next worker, which runs in a second
pass of trio's loop only to wait for the descriptor in turn; and the
first, done with the request, parks on the lock. Per request that is two
passes of trio's loop and a dozen functions of ``trio.Lock`` and
``ParkingLot``. ``lean_fuse_loop`` gives pyfuse3 (through its
``pyfuse3.trio`` module global, the hook ``pyfuse3.asyncio`` uses too) a
lock that is never contended and a ``wait_readable`` that queues its
waiters (``TurnReaders``): the worker woken by a request puts the next one
in trio's epoll record itself, without waking it, so a request takes one
pass.

Blocking the thread while the loop is idle
------------------------------------------
``wait_idle_readable(fd, timeout)`` lets a task that expects ``fd`` to be
readable within microseconds (a module host's reply, bench/README.md,
"Isolated modules") wait for it in ``select(2)`` without leaving its step,
instead of going round trio's loop twice (the task that reads ``fd``, then
the task that waits for what it read). Only while trio has nothing else to
do: no task in the run queue, no deadline before ``timeout``, and the wait
ends as soon as trio's own epoll descriptor is readable (I/O another task
waits for, ``run_sync_soon``, a signal's wakeup byte): what trio would have
woken for ends the wait. A task of the batch trio is running may still
wait behind it, at most ``timeout``.

The guard
---------
All of the above, and the fast paths of ``devfsd.cdevsw._wait`` (the sleep
clock, ``WaitChannel.sleep(fd=...)``, ``call_limited``), touch trio's and
pyfuse3's private state, which any release may change. So nothing private
is imported when this module is: ``choose`` (run once at import, again by
the daemon for ``-o public_only``) imports it only for the versions it
was written against (``KNOWN_TRIO``, ``KNOWN_PYFUSE3``), and only if
``$DEVFSD_PUBLIC_ONLY`` is not set; ``PRIVATE`` then holds it, else
``None``, and every fast path falls back to trio's public API
(``trio.lowlevel``, cancel scopes, ``trio.current_time``): devfsd runs on
a newer trio, only slower (bench/README.md, "Fast paths off").
"""

from __future__ import annotations

import collections
import logging
import math
import os
import select
import types
from typing import TYPE_CHECKING, Any, Final, final

import outcome
import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "ENV_PUBLIC_ONLY",
    "KNOWN_PYFUSE3",
    "KNOWN_TRIO",
    "PRIVATE",
    "READY",
    "IdleParts",
    "Private",
    "TurnReaders",
    "choose",
    "fast_instruments",
    "fast_io_wakeups",
    "idle_parts",
    "lean_fuse_loop",
    "move_deadline",
    "register_reader",
    "unregister_reader",
    "wait_idle_readable",
    "wake_reader",
]

log = logging.getLogger(__name__)

#: Set (to anything but ``""``): every fast path off (``devfsd._fuseintr``'s too).
ENV_PUBLIC_ONLY: Final = "DEVFSD_PUBLIC_ONLY"
#: The releases whose private state the fast paths know (version prefixes).
KNOWN_TRIO: Final = "0.35."
KNOWN_PYFUSE3: Final = "3.5."

# What the fast paths read and write of trio's private classes (checked
# by ``choose`` beside the version, so a patch release that renames one
# turns them off rather than breaking them).
_TASK_PRIVATE: Final = ("_cancel_status", "_activate_cancel_status")
_SCOPE_PRIVATE: Final = ("_deadline", "_registered_deadline", "_cancel_status", "_cancel_called")
_EPOLL_PRIVATE: Final = (
    "_registered",
    "_force_wakeup",
    "_force_wakeup_fd",
    "_update_registrations",
    "_epoll",
)
_RUNNER_PRIVATE: Final = (
    "instruments",
    "io_manager",
    "entry_queue",
    "deadlines",
    "clock",
    "_locals",
    "reschedule",
    "is_guest",
    "runq",
)
_DEADLINES_PRIVATE: Final = ("next_deadline", "_heap")
_CLOCK_PRIVATE: Final = ("offset", "current_time")
_ENTRY_QUEUE_PRIVATE: Final = ("queue", "idempotent_queue", "wakeup")


@final
class Private:
    """trio's private pieces the fast paths use (``PRIVATE`` when they are on)."""

    __slots__ = ("dict_instruments", "epoll", "instruments", "lean_epoll", "run_context", "system_clock")

    def __init__(self) -> None:
        from trio._core._entry_queue import EntryQueue
        from trio._core._instrumentation import Instruments
        from trio._core._io_epoll import EpollIOManager
        from trio._core._run import GLOBAL_RUN_CONTEXT, Deadlines, Runner, SystemClock, Task

        for cls, names in (
            (Deadlines, _DEADLINES_PRIVATE),
            (EntryQueue, _ENTRY_QUEUE_PRIVATE),
            (Task, _TASK_PRIVATE),
            (trio.CancelScope, _SCOPE_PRIVATE),
            (EpollIOManager, _EPOLL_PRIVATE),
            (Runner, _RUNNER_PRIVATE),
            (SystemClock, _CLOCK_PRIVATE),
        ):
            have = set(dir(cls)) | {a.name for a in getattr(cls, "__attrs_attrs__", ())}
            missing = [n for n in names if n not in have]
            if missing:
                raise AttributeError(f"{cls.__qualname__} has no {', '.join(missing)}")
        #: trio's ``GLOBAL_RUN_CONTEXT``: ``.runner`` is the running loop's.
        self.run_context: Any = GLOBAL_RUN_CONTEXT
        self.instruments: Any = Instruments
        self.dict_instruments = _dict_instruments(Instruments)
        self.epoll = EpollIOManager
        self.lean_epoll = _lean_epoll(EpollIOManager, GLOBAL_RUN_CONTEXT)
        #: trio's default clock: its time is ``offset + time.perf_counter()``.
        self.system_clock: Any = SystemClock


#: The private pieces when the fast paths are on, else ``None`` (``choose``).
PRIVATE: Private | None = None


def _public_only_env() -> bool:
    return bool(os.environ.get(ENV_PUBLIC_ONLY))


def choose(public_only: bool | None = None) -> bool:
    """Turn the fast paths on or off (``PRIVATE``); True if on.

    On only if ``public_only`` is false (``None``: ``$DEVFSD_PUBLIC_ONLY``
    unset), trio is a ``KNOWN_TRIO`` release and its private pieces are
    where they were. Call outside ``trio.run``, or before anything in the
    run has used them (the daemon does, for ``-o public_only``). pyfuse3 is
    checked by ``lean_fuse_loop``, its only user.
    """
    global PRIVATE
    PRIVATE = None
    if _public_only_env() if public_only is None else public_only:
        log.debug("fast paths off: public-only asked for")
        return False
    if not trio.__version__.startswith(KNOWN_TRIO):
        log.info("fast paths off: trio %s is not %sx", trio.__version__, KNOWN_TRIO)
        return False
    try:
        PRIVATE = Private()
    except (ImportError, AttributeError, TypeError) as exc:
        log.warning("fast paths off: trio %s is not as expected: %s", trio.__version__, exc)
        return False
    return True


def describe(installed: Sequence[str] = ()) -> str:
    """For the daemon's log: whether the fast paths are on, the versions, and
    which of them the caller ``installed`` (``fast_instruments`` & co. said True)."""
    import pyfuse3

    state = "on" if PRIVATE is not None else "off"
    text = f"fast paths {state} (trio {trio.__version__}, pyfuse3 {pyfuse3.__version__})"
    return f"{text}: {', '.join(installed)}" if installed else text


def _dict_instruments(instruments: type) -> type[dict[str, dict[Any, None]]]:
    class _DictInstruments(dict[str, dict[Any, None]]):
        """``trio._core._instrumentation.Instruments`` on a plain ``dict``."""

        __slots__ = ()

        @property
        def data(self) -> dict[str, dict[Any, None]]:
            return self

        add_instrument = instruments.add_instrument  # type: ignore[attr-defined]
        remove_instrument = instruments.remove_instrument  # type: ignore[attr-defined]
        call = instruments.call  # type: ignore[attr-defined]

    return _DictInstruments


def fast_instruments() -> bool:
    """Give the running trio loop C-speed instrument checks; True if done.

    Call from inside ``trio.run``. Instruments added before or after keep
    working (``trio.lowlevel.add_instrument`` goes to the new object).
    False, leaving trio as it is, with the fast paths off.
    """
    trio.lowlevel.current_task()  # RuntimeError outside trio.run
    p = PRIVATE
    if p is None:
        return False
    runner: Any = getattr(p.run_context, "runner", None)
    old: Any = getattr(runner, "instruments", None)
    if type(old) is not p.instruments:
        log.debug("trio's instruments are %r: left as they are", type(old))
        return False
    runner.instruments = p.dict_instruments(old.data)
    return True


# -- waking a task whose descriptor is ready -----------------------------------------


@final
class _Ready:
    """What a task woken by its descriptor is sent: as ``outcome.Value(None)``
    to the task, whose ``unwrap()`` is ``NoneType()``, in C; and reusable."""

    __slots__ = ()
    unwrap = type(None)

    def __repr__(self) -> str:
        return "READY"


READY: Final = _Ready()

_EPOLLIN: Final = select.EPOLLIN
_EPOLLOUT: Final = select.EPOLLOUT


def _lean_epoll(epoll_io_manager: type, run_context: Any) -> type:
    class _LeanEpollIOManager(epoll_io_manager):  # type: ignore[misc]
        """trio's ``EpollIOManager`` whose ``process_events`` sends ``READY``."""

        __slots__ = ()

        def process_events(self, events: list[tuple[int, int]]) -> None:
            reschedule = run_context.runner.reschedule
            for fd, flags in events:
                if fd == self._force_wakeup_fd:
                    self._force_wakeup.drain()
                    continue
                waiters = self._registered[fd]
                # EPOLLONESHOT always clears the flags when an event is delivered;
                # an event with EPOLLHUP or EPOLLERR wakes both (as trio's).
                waiters.current_flags = 0
                if flags & ~_EPOLLIN and waiters.write_task is not None:
                    reschedule(waiters.write_task, READY)
                    waiters.write_task = None
                if flags & ~_EPOLLOUT and waiters.read_task is not None:
                    reschedule(waiters.read_task, READY)
                    waiters.read_task = None
                self._update_registrations(fd)

    return _LeanEpollIOManager


def fast_io_wakeups() -> bool:
    """Wake tasks whose descriptors are ready with ``READY``; True if done.

    Call from inside ``trio.run``. Leaves the loop as it is if its I/O
    manager is not exactly trio's ``EpollIOManager``, or the fast paths are off.
    """
    trio.lowlevel.current_task()  # RuntimeError outside trio.run
    p = PRIVATE
    if p is None:
        return False
    runner = p.run_context.runner
    io = runner.io_manager
    if type(io) is not p.epoll or runner.is_guest:
        log.debug("trio's I/O manager is %r: left as it is", type(io))
        return False
    io.__class__ = p.lean_epoll
    return True


# -- deadlines ---------------------------------------------------------------------


def move_deadline(cs: trio.CancelScope, deadline: float) -> None:
    """``cs.deadline = deadline``, for a scope with an absolute deadline.

    trio's setter wraps the same bookkeeping in a ``@contextmanager``: a
    generator and four ``contextlib`` functions for each move, where a
    sleep moves one (``devfsd.cdevsw._wait._SleepClock.add``). Not for
    a run in guest mode (``trio.lowlevel.start_guest_run``), whose host
    loop trio's setter also tells; devfsd never runs one.
    """
    p = PRIVATE
    if p is None:
        cs.deadline = deadline
        return
    cs._deadline = deadline
    old = cs._registered_deadline
    new = math.inf if cs._cancel_status is None or cs._cancel_called else deadline
    if old != new:
        cs._registered_deadline = new
        deadlines = p.run_context.runner.deadlines
        if old != math.inf:
            deadlines.remove(old, cs)
        if new != math.inf:
            deadlines.add(new, cs)


# -- waiting for a descriptor ------------------------------------------------------


def _private() -> Private:
    p = PRIVATE
    if p is None:
        raise RuntimeError("devfsd's fast paths are off")
    return p


def register_reader(fd: int, task: trio.lowlevel.Task) -> None:
    """Make ``task`` the one trio reschedules when ``fd`` is readable.

    ``task`` must be, or be about to be, parked in ``wait_task_rescheduled``
    with an abort function that calls ``unregister_reader``. trio sends it
    an outcome whose ``unwrap()`` is ``None`` when ``fd`` is readable
    (``Value(None)``, or ``READY`` after ``fast_io_wakeups``), and
    ``Error(ClosedResourceError)`` on ``notify_closing(fd)``.

    Only with the fast paths on (``PRIVATE``).

    Raises:
        trio.BusyResourceError: another task waits to read ``fd``.
    """
    io = _private().run_context.runner.io_manager
    waiters = io._registered[fd]
    if waiters.read_task is not None:
        raise trio.BusyResourceError("another task is already reading from this fd")
    waiters.read_task = task
    io._update_registrations(fd)


def unregister_reader(fd: int, task: trio.lowlevel.Task) -> bool:
    """Take ``task`` out of ``fd``'s epoll record; False if it is not in it
    (readiness or ``notify_closing`` has rescheduled it already)."""
    io = _private().run_context.runner.io_manager
    waiters = io._registered.get(fd)
    if waiters is None or waiters.read_task is not task:
        return False
    waiters.read_task = None
    io._update_registrations(fd)
    return True


#: ``select(2)`` takes descriptors below this (glibc's ``FD_SETSIZE``).
_FD_SETSIZE: Final = 1024


def wait_idle_readable(fds: tuple[int, ...], timeout: float, now: float | None = None) -> list[int]:
    """Block the thread until one of ``fds`` is readable, while trio has
    nothing else to do, for at most ``timeout`` seconds; those readable.
    ``now``: ``time.perf_counter()`` read just before, if the caller has
    it (with trio's default clock, trio's time is then known without a
    call to the clock).

    Empty at once with the fast paths off, in a guest run, with a task in
    trio's run queue, a deadline due, or a descriptor ``select(2)`` cannot
    take; empty when ``timeout`` or trio's next deadline comes first, or
    when trio's epoll descriptor becomes readable (something trio waits for
    is ready) and none of ``fds`` is. Call from a task's step, between
    awaits; the caller then reads without blocking (a task trio wakes for
    the same readiness finds nothing and waits again). See "Blocking the
    thread while the loop is idle" above.
    """
    p = PRIVATE
    if p is None:
        return []
    runner = p.run_context.runner
    if runner.runq or runner.is_guest:
        return []
    io = runner.io_manager
    if not isinstance(io, p.epoll):
        return []
    heap = runner.deadlines._heap
    left = timeout
    if heap:  # none at all (a module host): no clock to read either
        # next_deadline(), inline unless the first entry is stale (moved or
        # gone: then trio's own method drops it).
        deadline, _, cs = heap[0]
        if deadline != cs._registered_deadline:
            deadline = runner.deadlines.next_deadline()
        clock = runner.clock
        if now is not None and clock.__class__ is p.system_clock:
            left = min(timeout, deadline - clock.offset - now)  # (clock.current_time())
        else:
            left = min(timeout, deadline - clock.current_time())
    ep = io._epoll.fileno()
    if left <= 0 or ep >= _FD_SETSIZE or max(fds) >= _FD_SETSIZE or min(fds) < 0:
        return []
    ready, _, _ = select.select((*fds, ep), (), (), left)
    if ep in ready:
        ready.remove(ep)
    return ready


@final
class IdleParts:
    """The pieces of the running loop a module host's reader tests between
    two requests (``host.py``), without a call and a dozen attribute
    lookups each time: nothing in ``runq``, ``jobs`` or ``jobs_once``, no
    deadline in ``deadlines._heap``; and trio's epoll descriptor, readable
    when anything trio waits for is ready (a descriptor of a task's, trio's
    wakeup one: a thread's ``run_sync_soon``, a signal), so that a thread
    waiting on it (``poll``, ``epoll``) while trio is idle wakes for whatever
    trio would wake for. The objects are trio's own and stay the same for
    the whole run."""

    __slots__ = ("deadlines", "epoll_fd", "jobs", "jobs_once", "runq")

    def __init__(self, runner: Any) -> None:
        self.runq: collections.deque[Any] = runner.runq
        queue = runner.entry_queue
        self.jobs: collections.deque[Any] = queue.queue
        self.jobs_once: dict[Any, None] = queue.idempotent_queue
        self.deadlines: Any = runner.deadlines
        self.epoll_fd: int = runner.io_manager._epoll.fileno()


def idle_parts() -> IdleParts | None:
    """The running loop's ``IdleParts``; None with the fast paths off, in a
    guest run, or on another I/O manager. Call from a task."""
    p = PRIVATE
    if p is None:
        return None
    runner = p.run_context.runner
    if runner.is_guest or not isinstance(runner.io_manager, p.epoll):
        return None
    return IdleParts(runner)


def wake_reader(fd: int, task: trio.lowlevel.Task) -> bool:
    """End ``task``'s ``trio.lowlevel.wait_readable(fd)`` as if ``fd`` were
    readable (the task then finds what was left for it, or nothing, and
    waits again); False if ``task`` is not waiting there (it runs, or trio
    has rescheduled it already). Only with the fast paths on (``PRIVATE``)."""
    if not unregister_reader(fd, task):
        return False
    trio.lowlevel.reschedule(task, outcome.Value(None))
    return True


@final
class TurnReaders:
    """Tasks waiting for descriptors in turn, the next one registered by
    the one before as it wakes (see "pyfuse3's worker loop" above)."""

    __slots__ = ("queues",)

    def __init__(self) -> None:
        #: Per descriptor, the tasks after the one in trio's epoll record, in order.
        self.queues: dict[int, collections.deque[trio.lowlevel.Task]] = {}

    async def wait(self, fd: int) -> None:
        """Wait until ``fd`` is readable and it is this task's turn.

        Raises:
            trio.ClosedResourceError: ``close(fd)`` (or ``notify_closing``) was called.
        """
        task = trio.lowlevel.current_task()
        try:
            register_reader(fd, task)
        except trio.BusyResourceError:
            self.queues.setdefault(fd, collections.deque()).append(task)
        try:
            await trio.lowlevel.wait_task_rescheduled(lambda _: self._abort(fd, task))
        finally:
            # The next waiter goes in trio's record, not woken (inline: this
            # runs for every FUSE request).
            queue = self.queues.get(fd)
            if queue:
                try:
                    register_reader(fd, queue[0])
                except trio.BusyResourceError:
                    pass
                else:
                    queue.popleft()

    def _abort(self, fd: int, task: trio.lowlevel.Task) -> trio.lowlevel.Abort:
        if not unregister_reader(fd, task):
            self.queues[fd].remove(task)
        return trio.lowlevel.Abort.SUCCEEDED

    def close(self, fd: int) -> None:
        """End every wait on ``fd`` with ``ClosedResourceError``, as ``notify_closing(fd)``."""
        for task in self.queues.pop(fd, ()):
            trio.lowlevel.reschedule(task, outcome.Error(trio.ClosedResourceError("fd closed")))
        trio.lowlevel.notify_closing(fd)


# -- pyfuse3's worker loop ------------------------------------------------------------


@final
class _UncontendedLock:
    """pyfuse3's ``read_lock``: ``TurnReaders`` orders the workers instead."""

    __slots__ = ()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_turns = TurnReaders()


def lean_fuse_loop() -> bool:
    """Give pyfuse3's worker loop one pass of trio's loop per request; True if done.

    Call before ``pyfuse3.main``. Leaves pyfuse3 as it is (and returns
    False) with the fast paths off, if its ``trio`` global is not trio
    (already replaced, or ``pyfuse3.asyncio`` is on), or if it is not a
    ``KNOWN_PYFUSE3`` release, whose worker loop (``internal.pxi``) uses
    exactly what is replaced here.
    """
    import pyfuse3

    if PRIVATE is None:
        return False
    if getattr(pyfuse3, "trio", None) is not trio or not pyfuse3.__version__.startswith(KNOWN_PYFUSE3):
        log.debug("pyfuse3 %s: worker loop left as it is", pyfuse3.__version__)
        return False
    lowlevel = types.SimpleNamespace(
        current_trio_token=trio.lowlevel.current_trio_token,
        current_task=trio.lowlevel.current_task,
        wait_readable=_turns.wait,
        notify_closing=_turns.close,
    )
    pyfuse3.trio = types.SimpleNamespace(  # type: ignore[attr-defined]
        Lock=_UncontendedLock,
        open_nursery=trio.open_nursery,
        ClosedResourceError=trio.ClosedResourceError,
        from_thread=trio.from_thread,
        lowlevel=lowlevel,
    )
    return True


choose()
