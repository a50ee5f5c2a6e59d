"""Tracing in process: the tracer's buffer, the hub, and every entry point
through the real I/O path (``SpecFs``), with no FUSE and no socket."""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import FREAD, FWRITE, makedev
from devfsd.errors import DeviceError
from devfsd.trace import MAX_BATCH, TraceEvent, TraceHub, Tracer

if TYPE_CHECKING:
    from devfsd.specfs import SpecFs
    from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"
PID = 4242


def ev(n: int, dev: int = 1) -> TraceEvent:
    return TraceEvent(n, PID, dev, "read", 1, 1, 0, 0)


def pending(t: Tracer) -> bool:
    return t.pending  # a call: mypy does not narrow it across asserts


def tracing_on(spec: SpecFs) -> bool:
    return spec.trace is not None


def test_tracer_takes_exactly_one_filter() -> None:
    for bad in ({}, {"dev": 1, "major": 2}):
        with pytest.raises(ValueError, match="exactly one"):
            Tracer(**bad)
    with pytest.raises(ValueError, match="buffer"):
        Tracer(dev=1, buffer=0)
    with pytest.raises(ValueError, match="count"):
        Tracer(dev=1, count=0)


def test_filter_by_dev_or_major() -> None:
    by_dev = Tracer(dev=makedev(2, 12))
    assert by_dev.wants(makedev(2, 12)) and not by_dev.wants(makedev(2, 11))
    by_major = Tracer(major=420)
    assert by_major.wants(makedev(420, 0)) and by_major.wants(makedev(420, 1 << 19))
    assert not by_major.wants(makedev(2, 12)) and not by_major.wants(makedev(420 + 4096, 0))


def test_full_buffer_drops_and_counts() -> None:
    woken: list[int] = []
    t = Tracer(dev=1, buffer=3)
    t.on_ready = lambda: woken.append(1)
    for n in range(5):
        t.push(ev(n))
    assert len(woken) == 5 and pending(t)
    assert t.take() == ([ev(0), ev(1), ev(2)], 2)
    assert not pending(t)
    t.push(ev(5))
    assert t.take() == ([ev(5)], 0)
    assert (t.seen, t.total_dropped) == (6, 2)


def test_take_hands_out_batches_oldest_first() -> None:
    t = Tracer(dev=1, buffer=MAX_BATCH + 10)
    for n in range(MAX_BATCH + 10):
        t.push(ev(n))
    first, _ = t.take()
    assert [e.time_ns for e in first] == list(range(MAX_BATCH))
    rest, _ = t.take()
    assert [e.time_ns for e in rest] == list(range(MAX_BATCH, MAX_BATCH + 10))


def test_count_stops_taking_dropped_included() -> None:
    t = Tracer(dev=1, buffer=1, count=3)
    for n in range(10):
        t.push(ev(n))
    assert t.done and (t.seen, t.total_dropped) == (3, 2)
    assert t.take() == ([ev(0)], 2)


class FakeClock:
    """Wall clock and timer: each reading is 1500 ns after the last."""

    def __init__(self) -> None:
        self.now = 10**18

    def __call__(self) -> int:
        self.now += 1500
        return self.now


@pytest.fixture
def hub() -> TraceHub:
    clock = FakeClock()
    return TraceHub(clock, clock)


async def test_hub_records_result_errno_and_duration(hub: TraceHub) -> None:
    t = Tracer(dev=7)
    hub.attach(t)

    async def ok() -> int:
        return select.POLLIN

    async def fails() -> None:
        raise DeviceError(errno.EINVAL)

    assert await hub.call(ok(), "poll", 7, PID, select.POLLIN | select.POLLOUT) == select.POLLIN
    with pytest.raises(DeviceError):
        await hub.call(fails(), "open", 7, PID, FREAD)
    await hub.call(ok(), "open", 8, PID, FREAD)  # another dev: not recorded
    events, dropped = t.take()
    start = 10**18 + 1500
    # Stamped at the return: start + 1500 ns.
    assert events == [
        TraceEvent(start + 1500, PID, 7, "poll", select.POLLIN | select.POLLOUT, select.POLLIN, 0, 1),
        TraceEvent(start + 6000, PID, 7, "open", FREAD, 0, errno.EINVAL, 1),
    ]
    assert dropped == 0


async def test_each_tracer_gets_each_event(hub: TraceHub) -> None:
    a, b, other = Tracer(dev=7), Tracer(major=0), Tracer(dev=9)
    for t in (a, b, other):
        hub.attach(t)

    async def ok() -> None:
        return None

    await hub.call(ok(), "close", 7, PID, FWRITE)
    assert len(a.take()[0]) == len(b.take()[0]) == 1
    assert other.take() == ([], 0)
    hub.detach(a)
    hub.detach(a)  # twice is harmless
    assert hub.tracers == [b, other]


@pytest.mark.devfsd_modpath(MODS)
async def test_every_entry_point_through_specfs(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("msgq")
    spec = k.spec
    dev = k.dev("msgq", 0)
    t = Tracer(dev=dev)
    assert not tracing_on(spec)
    with spec.tracing(t):
        assert tracing_on(spec)
        f = await k.open("msgq", 0, os.O_RDWR | os.O_NONBLOCK, pid=PID)
        assert await f.write(b"hello") == 5
        assert await f.read(3) == b"hel"
        with pytest.raises(DeviceError):
            await f.read(3)  # empty, non-blocking: EAGAIN
        assert await f.read(0) == b""  # never reaches the driver
        assert await f.poll(select.POLLIN | select.POLLOUT) & select.POLLOUT
        await k.ioctl("msgq", 0, 0x40046D01)  # MSGQ_COUNT
        await f.close()
    assert not tracing_on(spec)
    events, dropped = t.take()
    assert dropped == 0
    got = [(e.call, e.a, e.b, e.errno) for e in events]
    assert got == [
        ("open", FREAD | FWRITE | os.O_NONBLOCK, 0, 0),
        ("write", 5, 5, 0),
        ("read", 3, 3, 0),
        ("read", 3, 0, errno.EAGAIN),
        ("poll", select.POLLIN | select.POLLOUT, select.POLLOUT, 0),
        ("ioctl", 0x40046D01, 4, 0),
        ("close", FREAD | FWRITE | os.O_NONBLOCK, 0, 0),
    ]
    assert {e.dev for e in events} == {dev}
    assert [e.pid for e in events] == [PID] * 5 + [os.getpid(), PID]
    assert all(e.usec >= 0 for e in events)


@pytest.mark.devfsd_modpath(MODS)
async def test_driver_bug_is_traced_as_eio(devfsd_kernel: Kernel, caplog: pytest.LogCaptureFixture) -> None:
    k = devfsd_kernel
    await k.modload("faulty")
    t = Tracer(major=k.dev("faulty", 0) >> 8)
    with k.spec.tracing(t):
        f = await k.open("faulty", 0, pid=PID)
        with pytest.raises(DeviceError):
            await f.read(10)  # ZeroDivisionError in the driver
        await f.close()
    assert [(e.call, e.errno) for e in t.take()[0]] == [("open", 0), ("read", errno.EIO), ("close", 0)]
    assert "a driver bug" in caplog.text


@pytest.mark.devfsd_modpath(MODS)
async def test_detached_when_the_block_fails(devfsd_kernel: Kernel) -> None:
    t1, t2 = Tracer(dev=1), Tracer(dev=2)
    with devfsd_kernel.spec.tracing(t1):
        with pytest.raises(RuntimeError), devfsd_kernel.spec.tracing(t2):
            raise RuntimeError
        assert tracing_on(devfsd_kernel.spec)  # t1 still attached
    assert not tracing_on(devfsd_kernel.spec)
