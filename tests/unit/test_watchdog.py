"""The stall watchdog in process: driver code that never yields is interrupted, other code is not."""

from __future__ import annotations

import logging
import signal
import sys
import time
import traceback
import types
from typing import TYPE_CHECKING

import pytest
import trio
import trio.lowlevel

from devfsd.watchdog import DriverStall, Watchdog, driver_frame

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LIMIT = 0.2
SOURCE = """
import time

def spin():
    while True:
        pass

def block():
    time.sleep(3600)

def caller(fn):
    return fn()

def spin_after(fn):
    fn()
    while True:
        pass
"""


@pytest.fixture
def fake_driver() -> Iterator[types.ModuleType]:
    """A module that looks loaded by devfsd (``devfsd_modules.*``), with code that stalls."""
    mod = types.ModuleType("devfsd_modules.fakestall")
    exec(compile(SOURCE, "<fakestall>", "exec"), mod.__dict__)
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def run_with_watchdog(fn: Callable[[], object]) -> tuple[BaseException | None, float, Watchdog]:
    """Call ``fn`` from a trio task under a watchdog; what it raised and how long the loop was held.

    Held from the call, or from the heartbeat request the watchdog fired on
    if that came first: a trio thread preempted between ``wd.start()`` and
    the call (a loaded machine) finds the first request already made, and
    trio may run this task before the one that answers it.
    """
    wd = Watchdog(LIMIT)
    got: list[BaseException | None] = [None]
    took = [0.0]

    async def main() -> None:
        wd.start()
        try:
            await trio.lowlevel.checkpoint()
            t0 = time.monotonic()
            try:
                fn()
            except DriverStall as exc:
                got[0] = exc
                t0 = min(t0, wd.asked_at)  # the loop has not run since: still unanswered
            took[0] = time.monotonic() - t0
        finally:
            wd.stop()

    trio.run(main)
    return got[0], took[0], wd


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail, not hang, if the watchdog does not interrupt: SIGALRM after 5 s."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError("the watchdog did not interrupt within 5 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.usefixtures("alarm")
@pytest.mark.parametrize("what", ["spin", "block"])
def test_driver_code_that_never_yields_is_interrupted(fake_driver: types.ModuleType, what: str) -> None:
    exc, took, wd = run_with_watchdog(getattr(fake_driver, what))
    assert isinstance(exc, DriverStall)
    assert "devfsd_modules.fakestall" in str(exc)
    assert LIMIT * 0.9 <= took < LIMIT + 5
    assert (wd.stalls, wd.interrupted) == (1, 1)


@pytest.fixture
def signals_sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many signals the watchdog has sent (``[n]``, counted as they go)."""
    sent = [0]
    kill = signal.pthread_kill

    def counting_kill(thread_id: int, signum: int) -> None:
        sent[0] += 1
        kill(thread_id, signum)

    monkeypatch.setattr(signal, "pthread_kill", counting_kill)
    return sent


@pytest.mark.usefixtures("alarm")
def test_a_handler_outlasting_the_next_signal_interrupts_once(
    fake_driver: types.ModuleType, signals_sent: list[int]
) -> None:
    """The handler's log is still being written when the watchdog signals again (a slow
    log, a loaded machine): that signal does not re-enter the handler."""

    class SlowLog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            until = signals_sent[0] + 2
            while signals_sent[0] < until:  # two more signals, each taken in here (bounded: alarm)
                pass

    logger = logging.getLogger("devfsd.watchdog")
    slow = SlowLog()
    logger.addHandler(slow)
    try:
        exc, _took, wd = run_with_watchdog(fake_driver.spin)
    finally:
        logger.removeHandler(slow)
    assert isinstance(exc, DriverStall)
    assert signals_sent[0] >= 3
    assert (wd.stalls, wd.interrupted) == (1, 1)


@pytest.mark.usefixtures("alarm")
def test_a_driver_inside_trio_protected_code_is_interrupted_once_out_of_it(
    fake_driver: types.ModuleType, signals_sent: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    """Trio's synchronous calls (Event.set, send_nowait, a cancel) are protected from
    KeyboardInterrupt: an exception half-way through would break trio's state."""
    left: list[int] = []

    @trio.lowlevel.enable_ki_protection
    def protected() -> None:  # trio's bookkeeping, called by the driver, while signals come
        while signals_sent[0] < 2:  # bounded: alarm
            pass
        left.append(signals_sent[0])

    exc, _took, wd = run_with_watchdog(lambda: fake_driver.spin_after(protected))
    assert isinstance(exc, DriverStall)
    assert left, "interrupted inside protected code"
    frames = [f.f_code.co_name for f, _ in traceback.walk_tb(exc.__traceback__)]
    assert frames[frames.index("_on_signal") - 1] == "spin_after"  # where the signal was taken
    assert (wd.stalls, wd.interrupted) == (1, 1)
    assert sum("inside trio's protected code" in r.message for r in caplog.records) == 1


def test_a_stall_outside_drivers_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    deadline = time.monotonic() + LIMIT * 3

    def busy() -> None:  # devfsd's own code: not a loaded module's
        while time.monotonic() < deadline:
            pass

    exc, _took, wd = run_with_watchdog(busy)
    assert exc is None
    assert wd.stalls == 1 and wd.interrupted == 0
    assert sum("outside any driver" in r.message for r in caplog.records) == 1  # once, not per signal


def test_code_that_yields_is_never_interrupted() -> None:
    wd = Watchdog(LIMIT)

    async def main() -> None:
        wd.start()
        try:
            with trio.move_on_after(LIMIT * 4):
                while True:
                    time.sleep(LIMIT / 10)  # noqa: ASYNC251 - busy in bursts shorter than the limit
                    await trio.lowlevel.checkpoint()
        finally:
            wd.stop()

    trio.run(main)
    assert (wd.stalls, wd.interrupted) == (0, 0)


def test_driver_frame_finds_the_innermost_module_frame(fake_driver: types.ModuleType) -> None:
    assert driver_frame(sys._getframe()) is None
    frame = fake_driver.caller(sys._getframe)  # sys._getframe() called from caller()
    found = driver_frame(frame)
    assert found is not None and found.f_code.co_name == "caller"
