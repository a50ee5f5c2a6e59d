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

from devfsd.cdevsw import Lwp, WaitChannel, _wait, devsw
from devfsd.cdevsw._wait import call_limited, sleepers
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


# Entry points that wait inside cancel scopes of their own (the limit's
# scope must go under them): tests/modules/scopehang, one case per minor.
SHORT = 0.25  # shorter than scopehang's NAP and SHIELD, longer than its OWN


async def _scoped_read(k: Kernel, unit: int) -> tuple[bytes | int, float]:
    """Read ``scopehang`` ``unit``: (its data or errno, how long it took).

    Also checks that trio's cancel scope stack is as it was."""
    task = trio.lowlevel.current_task()
    status = getattr(task, "_cancel_status", None)  # (trio-private: None on a trio without it)
    f = await k.open("scopehang", unit)
    t0 = trio.current_time()
    try:
        got: bytes | int = await f.read(10)
    except DeviceError as exc:
        got = exc.errno
    took = trio.current_time() - t0
    assert getattr(task, "_cancel_status", None) is status
    await f.close()
    return got, took


@pytest.mark.parametrize(
    ("unit", "expect", "took"),
    [
        (0, errno.ETIMEDOUT, SHORT),  # in move_on_after(3600)
        (1, errno.ETIMEDOUT, SHORT),  # in CancelScope()
        (2, errno.ETIMEDOUT, SHORT),  # in three nested scopes
        (3, errno.ETIMEDOUT, 1.0 + SHORT),  # asleep 1 s (not counted), then hangs
        (4, errno.ETIMEDOUT, 1.0),  # a shield is honoured, then cut at once
        (5, b"caught\n", SHORT),  # caught the Cancelled and answered
        (6, b"own\n", 0.1),  # its own timeout, scopes held across awaits
        (7, b"slept\n", 1.0),  # asleep in a scope of its own: not counted
        (8, errno.ETIMEDOUT, SHORT),  # caught the Cancelled, hung again
        (9, errno.ETIMEDOUT, SHORT),  # in a nursery, on a child task
        (10, errno.ETIMEDOUT, 2.0 + SHORT),  # asleep twice, the second time in its scope, then hangs
        (11, b"slept\n", 1.0),  # asleep in its first step: the limit never goes in
    ],
)
async def test_hang_inside_the_drivers_own_scope(
    unit: int,
    expect: bytes | int,
    took: float,
    trio_path: str,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Kernel.running([MODS], entry_timeout=SHORT) as k:
        await k.modload("scopehang")
        got, t = await _scoped_read(k, unit)
        assert got == expect
        assert t == pytest.approx(took)
        if expect == errno.ETIMEDOUT or unit == 5:
            assert "driver d_read still running after 0.25 s: cancelled" in caplog.text
            if unit != 5 or trio_path == "fast":  # (public: a caught Cancelled's stack is lost)
                assert "in scopehang_read" in caplog.text  # the stack it hung in
        else:
            assert "still running" not in caplog.text
        assert "corrupted" not in caplog.text
        assert "raised" not in caplog.text
        # The module still answers and unloads.
        assert (await _scoped_read(k, 6))[0] == b"own\n"
        await k.modunload("scopehang")
        assert [s.name for s in k.loader.stat()] == []


@pytest.mark.usefixtures("trio_path")
async def test_hang_in_own_scope_while_unloaded_still_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Kernel.running([MODS], entry_timeout=SHORT) as k:
        await k.modload("scopehang")
        result: list[bytes | int] = []

        async def reader() -> None:
            result.append((await _scoped_read(k, 0))[0])

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            await k.modunload("scopehang")
        assert result == [errno.ETIMEDOUT]


async def _hang_in_scope() -> None:
    with trio.move_on_after(3600):
        await trio.sleep_forever()


@pytest.mark.usefixtures("trio_path")
async def test_callers_cancellation_is_not_a_hang(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The caller's own scope (a FUSE interrupt, a shutdown) still reaches
    # through the limit's scope to the driver's, and is the caller's to catch.
    with trio.move_on_after(1.0) as outer:
        await call_limited(_hang_in_scope(), 5.0, lambda what: pytest.fail(what), "d_read")
    assert outer.cancelled_caught
    assert trio.current_time() == pytest.approx(1.0)
    assert "corrupted" not in caplog.text


@pytest.mark.usefixtures("trio_path")
@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_sleep_registry_is_left_empty(
    timeout: float | None, autojump_clock: trio.testing.MockClock
) -> None:
    chan = WaitChannel("t")
    lwp = Lwp(0, 0, 0)

    async def sleeper() -> str:
        with trio.CancelScope():
            await chan.sleep(lwp)
        return "woke"

    async with trio.open_nursery() as n:
        got: list[object] = []

        async def run() -> None:
            got.append(await call_limited(sleeper(), timeout))

        n.start_soon(run)
        await trio.sleep(60)  # asleep far past the limit: not counted
        assert sleepers() == 1
        chan.wakeup()
    assert got == [("woke", False)]
    assert sleepers() == 0
    assert _wait._asleep == {}
