"""The stall watchdog: driver code that keeps the trio thread without yielding.

The entry-point time limit (``devfsd.cdevsw._wait``) cancels a driver at an
``await``; a driver that never awaits (``while True: pass``, a synchronous
``time.sleep(3600)``, a blocking ``os.read``) holds the one thread every
node is served from, and no cancel scope can reach it. This module can.

A thread of its own asks the trio loop for a heartbeat
(``TrioToken.run_sync_soon``) every quarter of the limit; a loop that is
free answers within microseconds. When a request has gone unanswered for
longer than the limit, the loop is stuck in somebody's synchronous code:
the watchdog sends ``SIGNAL`` to the trio thread. Its
handler runs there, at the next bytecode boundary or when the blocking
call returns ``EINTR`` (Python runs signal handlers then, and ``time.sleep``
and ``os.read`` raise what the handler raises). If a frame of a loaded
module (``devfsd_modules.*``) is on the stack and the loop still has not
answered, the handler raises ``DriverStall`` there: the entry point ends
with that exception, which the switch turns into ``ETIMEDOUT`` for the
caller and a log line with the stack; a module thread dies with it, logged.
Stuck anywhere else (devfsd's own code, trio), the stack is logged and
nothing is interrupted.
Inside code trio protects from ``KeyboardInterrupt`` that a driver called
(``Event.set``, ``send_nowait``, a cancel) or in a finalizer, nothing is
raised either (trio's state would be left half changed): the next signal,
a quarter limit later, tries again.

``DriverStall`` is an ``Exception``, so every handler that already keeps a
driver's bug from reaching the daemon keeps this one too. A driver that
catches it and goes on stalling is interrupted again every quarter limit.

Touches the world (a thread, a signal handler). Costs nothing per request:
a heartbeat every ``limit / 4`` seconds.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Final, final

from devfsd.errors import Verbatim

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    import trio

__all__ = ["SIGNAL", "DriverStall", "Watchdog", "driver_frame"]

log = logging.getLogger(__name__)

#: The signal the watchdog sends to the trio thread.
SIGNAL: Final = signal.SIGUSR2
#: Where loaded modules live in ``sys.modules`` (``devfsd.kern.loader._PKG``).
_MODULES_PREFIX: Final = "devfsd_modules."


class DriverStall(Exception):
    """Raised in driver code that held the trio thread past the limit."""


def driver_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame of a loaded module's code on ``frame``'s stack, if any."""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_MODULES_PREFIX):
            return frame
        frame = frame.f_back
    return None


@final
class Watchdog:
    """Interrupts driver code that keeps the trio thread past ``limit`` seconds.

    ``start()`` from the trio thread (it installs the signal handler and
    takes the trio token); ``stop()`` ends the thread and restores the
    handler.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.period = max(limit / 4, 0.01)
        #: When the unanswered heartbeat request was made (``time.monotonic``;
        #: ``inf`` while none is outstanding).
        self.asked_at = math.inf
        #: Stalls found; drivers interrupted.
        self.stalls = 0
        self.interrupted = 0
        self._fired = False
        self._told = False  # a stall outside drivers was logged
        self._handling = False  # _on_signal is running (its next signal must not re-enter it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._target = 0
        self._old_handler: object = None
        self._protected: Callable[[], bool] = lambda: False

    def start(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._protected = trio.lowlevel.currently_ki_protected
        self._target = threading.get_ident()
        self.asked_at = math.inf
        self._old_handler = signal.signal(SIGNAL, self._on_signal)
        self._thread = threading.Thread(target=self._run, name="devfsd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._old_handler is not None:
            signal.signal(SIGNAL, self._old_handler)  # type: ignore[arg-type]
            self._old_handler = None

    # -- the watchdog thread -----------------------------------------------------

    def _beat(self) -> None:
        """Run by the trio loop: it is alive."""
        self.asked_at = math.inf
        self._told = False

    def stalled(self) -> float:
        """Seconds the trio loop has left a heartbeat request unanswered (negative: none)."""
        return time.monotonic() - self.asked_at

    def _run(self) -> None:
        assert self._token is not None
        while not self._stop.wait(self.period):
            if self.asked_at == math.inf:
                self.asked_at = time.monotonic()
                try:
                    self._token.run_sync_soon(self._beat)
                except RuntimeError:  # the loop has ended
                    return
            if self.stalled() > self.limit:
                if not self._fired:
                    self.stalls += 1
                self._fired = True
                signal.pthread_kill(self._target, SIGNAL)
            else:
                self._fired = False

    # -- in the trio thread ----------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The watchdog signals every quarter limit while the stall lasts; a
        # handler still at work when the next one comes (a slow log handler,
        # a loaded machine) would run again inside itself and interrupt the
        # same stall again from within the first one's log.error (where a
        # stream or file handler swallows that DriverStall), and so on at
        # every signal while the log stays slow, until RecursionError.
        if self._handling:
            return
        self._handling = True
        try:
            self._check(frame)
        finally:
            self._handling = False

    def _check(self, frame: FrameType | None) -> None:
        stalled = self.stalled()
        if not self._fired or stalled <= self.limit:
            return  # not ours, or the loop has answered since
        where = driver_frame(frame)
        stack = Verbatim("".join(traceback.format_stack(frame)))
        if where is None:
            if not self._told:  # once per stall: it may last
                self._told = True
                log.error("the daemon has been busy for %.1f s outside any driver:\n%s", stalled, stack)
            return
        module = where.f_globals.get("__name__", "?")
        if self._protected():
            # In trio's own bookkeeping that the driver called (Event.set,
            # send_nowait, a cancel: code trio protects from KeyboardInterrupt),
            # or in a finalizer: an exception there could leave trio's state
            # half changed, or be ignored. The next signal tries again.
            if not self._told:
                self._told = True
                log.error(
                    "driver code (%s) has held the daemon for %.1f s, now inside trio's protected code:"
                    " interrupted once out of it\n%s",
                    module,
                    stalled,
                    stack,
                )
            return
        self.interrupted += 1
        log.error(
            "driver code (%s) has held the daemon for %.1f s without yielding: interrupted\n%s",
            module,
            stalled,
            stack,
        )
        raise DriverStall(f"{module}: held the daemon for {stalled:.1f} s")
