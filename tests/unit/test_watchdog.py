"""The stall watchdog in process: driver code that never yields is interrupted, other code is not."""

from __future__ import annotations

import signal
import sys
import time
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
    """Call ``fn`` from a trio task under a watchdog; what it raised and how long it took."""
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
