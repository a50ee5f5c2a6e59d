"""Driver faults in process: hangs, wrong returns, sleeping that is not a hang.

Runs on trio's autojump clock, so the entry-point time limit passes in no
real time.
"""

from __future__ import annotations

import errno
import select
from pathlib import Path

import pytest
import trio
import trio.testing

from devfsd.cdevsw import devsw
from devfsd.errors import DeviceError
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"
LIMIT = 5.0


async def _read_errno(k: Kernel, unit: int) -> int:
    f = await k.open("faulty", unit)
    try:
        with pytest.raises(DeviceError) as ei:
            await f.read(10)
        return ei.value.errno
    finally:
        await f.close()


async def test_hang_is_etimedout_after_limit(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with Kernel.running([MODS], entry_timeout=LIMIT) as k:
        await k.modload("faulty")
        t0 = trio.current_time()
        assert await _read_errno(k, 2) == errno.ETIMEDOUT
        assert trio.current_time() - t0 == pytest.approx(LIMIT)
        assert "driver d_read still running after 5 s: cancelled" in caplog.text
        assert "faulty_read" in caplog.text  # the stack it hung in
        f = await k.open("faulty", 1)
        assert await f.read(10) == b"fine\n"
        await f.close()
        await k.modunload("faulty")
        assert devsw.getmajor("faulty") is not None  # the name keeps its major
        assert [s.name for s in k.loader.stat()] == []


async def test_sleep_on_wait_channel_does_not_count(autojump_clock: trio.testing.MockClock) -> None:
    # Minor 5 sleeps 1 s on a WaitChannel; a 0.25 s limit must not cut it.
    async with Kernel.running([MODS], entry_timeout=0.25) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 5)
        assert await f.read(10) == b"slept\n"
        await f.close()


async def test_no_limit_when_none(autojump_clock: trio.testing.MockClock) -> None:
    async with Kernel.running([MODS], entry_timeout=None) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 2)
        with trio.move_on_after(3600) as cs:
            await f.read(10)
        assert cs.cancelled_caught
        await f.close()


async def test_hang_while_unloaded_still_times_out(autojump_clock: trio.testing.MockClock) -> None:
    # faulty allows unload while open; the hung read still ends, by the limit.
    async with Kernel.running([MODS], entry_timeout=LIMIT) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 2)
        result: list[int] = []

        async def reader() -> None:
            with pytest.raises(DeviceError) as ei:
                await f.read(10)
            result.append(ei.value.errno)

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await k.modunload("faulty")
        assert result == [errno.ETIMEDOUT]
        with pytest.raises(DeviceError) as ei:
            await f.read(10)
        assert ei.value.errno == errno.ENXIO
        await f.close()


@pytest.mark.parametrize(("unit", "text"), [(3, "returned 42, not None"), (4, "TypeError")])
async def test_wrong_return_is_eio_and_logged(unit: int, text: str, caplog: pytest.LogCaptureFixture) -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("faulty")
        assert await _read_errno(k, unit) == errno.EIO
        assert text in caplog.text


async def test_open_returning_garbage_is_eio(caplog: pytest.LogCaptureFixture) -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("faulty")
        with pytest.raises(DeviceError) as ei:
            await k.open("faulty", 6)
        assert ei.value.errno == errno.EIO
        assert "driver d_open returned 'garbage', not None" in caplog.text
        assert k.spec.opens == {}  # the failed open is not counted
        await k.modunload("faulty")


async def test_poll_wrong_type_is_pollerr(caplog: pytest.LogCaptureFixture) -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 1)
        assert await f.poll() == select.POLLERR
        assert "driver d_poll returned 'ready', not an int" in caplog.text
        await f.close()
