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

1. pyfuse3 does not pass FUSE_INTERRUPT, so a process blocked in a read
   would not die on SIGINT until the driver answered. ``sleep`` therefore
   wakes on its own every so often (50 ms at first, backing off to 400 ms)
   and looks at the caller's pending signals in ``/proc/TID/status``; if one
   is deliverable (pending and not blocked) it raises ``EINTR``, the kernel
   returns EINTR to the caller, and the signal is delivered. A fatal signal
   shows as a pending SIGKILL. coreutils, dd, Python and Go retry EINTR when
   the signal's handler returns. XXX: on read/write the caller is the
   *opener* (FUSE gives no context there), so a reader that inherited the
   descriptor from a still-living opener is not seen.
2. The task that reads a FUSE request holds it until the reply; a sleeper
   holds a task. The daemon runs thousands of tasks, and ``sleep`` refuses
   with ``EAGAIN`` beyond ``MAX_SLEEPERS`` so one always stays free.
3. A detach (module unload) or daemon shutdown must end every sleep: they
   raise ``ENXIO`` in the sleepers (``abort_sleepers``).

``selrecord(l)`` remembers the poll handle of a poll that found nothing
ready; ``wakeup()`` notifies it once, after which the kernel polls again.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd.cdevsw._dev import major
from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from devfsd.cdevsw._switch import Lwp

__all__ = ["MAX_SLEEPERS", "WaitChannel", "abort_sleepers", "signal_pending", "sleepers"]

log = logging.getLogger(__name__)

#: Most entry points asleep at once, daemon-wide; the FUSE loop must keep
#: more tasks than this (``devfsd.fs.MAX_TASKS``).
MAX_SLEEPERS: Final = 4000
#: First and longest interval between signal checks of a sleeper (seconds).
CHECK_FIRST: Final = 0.05
CHECK_MAX: Final = 0.4

_SIGKILL_BIT: Final = 1 << (9 - 1)


@final
class _Sleeper:
    __slots__ = ("chan", "error", "event", "maj")

    def __init__(self, chan: WaitChannel, maj: int | None) -> None:
        self.chan = chan
        self.maj = maj
        self.event = trio.Event()
        self.error = 0


_sleeping: set[_Sleeper] = set()


def sleepers() -> int:
    """How many entry points are asleep now."""
    return len(_sleeping)


def abort_sleepers(maj: int | None = None, err: int = errno.ENXIO) -> int:
    """End every sleep on ``maj`` (every sleep if ``None``) with ``err``.

    Returns:
        How many sleepers were woken.
    """
    n = 0
    for s in list(_sleeping):
        if maj is None or s.maj == maj:
            s.error = err
            s.event.set()
            n += 1
    return n


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
        self._sleepers: set[_Sleeper] = set()
        self._polls: list[Any] = []

    def __repr__(self) -> str:
        return f"<WaitChannel {self.name} sleepers={len(self._sleepers)}>"

    def wakeup(self) -> None:
        """Wake all sleepers and notify recorded polls (``wakeup`` + ``selnotify``)."""
        if self._sleepers:
            for s in self._sleepers:
                s.event.set()
            self._sleepers.clear()
        if self._polls:
            polls, self._polls = self._polls, []
            for h in polls:
                try:
                    h.notify()
                except OSError as exc:  # the poller is gone: nothing to tell
                    log.debug("poll notify failed: %s", exc)

    def selrecord(self, l: Lwp) -> None:
        """Remember ``l``'s poll handle; the next ``wakeup`` notifies it."""
        h = l.poll_handle
        if h is not None:
            l.poll_handle = None
            self._polls.append(h)

    async def sleep(self, l: Lwp, timo: float | None = None) -> None:
        """Sleep until ``wakeup()``, a signal for the caller, or ``timo`` seconds.

        Args:
            l: the caller (its pid is checked for pending signals).
            timo: give up after this many seconds (``None``: never).

        Raises:
            DeviceError: ``EINTR`` if the caller has a signal to take,
                ``EWOULDBLOCK`` when ``timo`` runs out (as ``tsleep``),
                ``ENXIO`` if the driver was detached or the daemon stops,
                ``EAGAIN`` if ``MAX_SLEEPERS`` entry points already sleep.
        """
        if len(_sleeping) >= MAX_SLEEPERS:
            raise DeviceError(errno.EAGAIN, "too many sleepers")
        s = _Sleeper(self, major(l.dev) if l.dev is not None else None)
        _sleeping.add(s)
        self._sleepers.add(s)
        deadline = trio.current_time() + timo if timo is not None else float("inf")
        interval = CHECK_FIRST
        try:
            while True:
                with trio.move_on_at(min(deadline, trio.current_time() + interval)):
                    await s.event.wait()
                if s.event.is_set():
                    if s.error:
                        raise DeviceError(s.error)
                    return
                if trio.current_time() >= deadline:
                    raise DeviceError(errno.EWOULDBLOCK)
                if signal_pending(l.pid):
                    raise DeviceError(errno.EINTR)
                interval = min(interval * 2, CHECK_MAX)
        finally:
            _sleeping.discard(s)
            self._sleepers.discard(s)
