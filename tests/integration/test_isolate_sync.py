"""A call that reads its own reply (``HostProcess._sync_wait``), against a real host.

The daemon's side of a module host (``HostProcess``) runs in the test's
trio loop and talks to a real host process (``python -m
devfsd.isolate.host``) that has loaded tests/modules/hostile, whose
driver makes its own host misbehave: answer slowly, flood the daemon,
answer another call first, die or send garbage in the middle of a call.
Every test runs on the fast paths, where a call first waits for its reply
in ``select(2)``, and on trio's public API, where it never does; the
answers must be the same.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from devfsd import _trioloop
from devfsd.cdevsw import FREAD, Dev, Uio, _wait, makedev
from devfsd.cdevsw._switch import File, Lwp
from devfsd.cdevsw._wait import sleepers
from devfsd.errors import DeviceError
from devfsd.isolate import _channel, hostproc
from devfsd.isolate import protocol as P
from devfsd.isolate.hostproc import HostProcess, check_reply_json
from devfsd.isolate.proxy import _HostFile, make_proxy
from devfsd.kern.caps import cap_number
from tests.unit.conftest import trio_path  # noqa: F401 - the fixture, both ways

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = [pytest.mark.usefixtures("trio_path")]

HOSTILE = Path(__file__).resolve().parent.parent / "modules" / "hostile"
MSGQ = HOSTILE.parent / "msgq"
#: Bound on every call (a loaded machine).
WAIT = 20.0


class Hosted:
    """A host with hostile loaded, and calls into it."""

    def __init__(self, host: HostProcess, major: int) -> None:
        self.host = host
        self.major = major

    def dev(self, unit: int) -> Dev:
        return makedev(self.major, unit)

    async def open(self, unit: int) -> int:
        fid = self.host.new_fid()
        with trio.fail_after(WAIT):
            body = P.OPEN.pack(self.dev(unit), FREAD, os.getpid(), 0, 0, fid)
            await self.host.call(P.Kind.OPEN, body, self.dev(unit))
        return fid

    async def read(self, unit: int, fid: int, size: int = 64, offset: int = 0) -> bytes:
        with trio.fail_after(WAIT):
            body = P.READ.pack(fid, size, offset)
            return bytes(await self.host.call(P.Kind.READ, body, self.dev(unit), read=size))


@contextlib.asynccontextmanager
async def hosted(props: dict[str, Any] | None = None, caps: int = 0) -> AsyncIterator[Hosted]:
    host = HostProcess("hostile", None, caps=caps)
    async with trio.open_nursery() as nursery:
        await host.start(nursery)
        try:
            req = {"spec": str(HOSTILE), "props": props or {}, "modpath": [], "majors": {}, "uid": 0}
            with trio.fail_after(WAIT):
                info = check_reply_json(await host.call(P.Kind.LOAD, P.encode_json(req)))
            yield Hosted(host, dict(info["majors"])["hostile"])
        finally:
            host.close()
            with trio.fail_after(WAIT):
                await host.reap()
            nursery.cancel_scope.cancel()


def fast_paths() -> bool:
    """On the fast paths (``trio_path``'s "fast"), else on trio's public API."""
    return _trioloop.PRIVATE is not None


async def test_a_call_reads_its_own_reply() -> None:
    async with hosted() as h:
        fid = await h.open(0)
        for _ in range(200):
            assert await h.read(0, fid) == b"fast\n"
        if fast_paths():
            # Most of them, unless the machine is very busy: one is enough to
            # prove the path, and every answer above went through it or not.
            assert h.host.sync_replies > 0
        else:
            assert h.host.sync_replies == 0


@pytest.mark.parametrize("pinned", [True, False])
async def test_a_call_yields_to_its_host_then_reads_its_reply(
    pinned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # A call yields the CPU, then reads its reply: on one CPU (the host
    # inherits the daemon's affinity) the host has answered meanwhile and
    # the reply is read without select(2); on more, it may not have. The
    # answers are the same either way.
    cpus = os.sched_getaffinity(0)
    if not pinned and len(cpus) < 2:
        pytest.skip("one CPU only")
    if pinned:
        os.sched_setaffinity(0, {min(cpus)})
    try:
        async with hosted() as h:
            assert os.sched_getaffinity(h.host.pid) == os.sched_getaffinity(0)
            fid, buggy = await h.open(0), await h.open(15)
            for _ in range(50):
                assert await h.read(0, fid) == b"fast\n"
            if fast_paths():
                assert h.host.sync_replies > 0
            # A driver's traceback is logged before its EIO returns (read
            # off its stderr first, with or without select(2)).
            for i in range(3):
                with pytest.raises(DeviceError) as ei:
                    await h.read(15, buggy)
                assert ei.value.errno == errno.EIO
                assert caplog.text.count("ZeroDivisionError") == i + 1
    finally:
        os.sched_setaffinity(0, cpus)


async def test_the_proxys_read_takes_its_reply_at_once_or_sleeps_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The proxy's d_read calls call_now, and returns an awaitable (of
    # reply()) only when the reply was not taken at once (a slow driver,
    # the fast paths off): the bytes and errors are the same either way,
    # through the socket and through the shared buffer.
    async with hosted({"slow_ms": 10}) as h:
        proxy = make_proxy(h.host)

        files: dict[int, File] = {}  # (one each: a _HostFile dropped sends RELEASE)

        async def read(unit: int, fid: int, size: int, offset: int = 0) -> bytes:
            fp = files.get(fid)
            if fp is None:
                fp = files[fid] = File(h.dev(unit), FREAD, os.getpid(), 0, 0)
                fp.data = _HostFile(h.host, fid)
            uio = Uio.for_read(size, Lwp(os.getpid(), 0, 0, fp), offset)
            with trio.fail_after(WAIT):
                rest = proxy.d_read(h.dev(unit), uio, 0)  # (specfs.SYNC_DONE: None when done)
                if rest is not None:
                    await rest
            return bytes(uio.moved())

        fast, slow, big, buggy = await h.open(0), await h.open(3), await h.open(7), await h.open(15)
        before = h.host.sync_replies
        for _ in range(20):
            assert await read(0, fast, 64) == b"fast\n"
        # Most of them at once, on the fast paths (unless the machine is very busy).
        assert (h.host.sync_replies > before) == fast_paths()
        assert await read(3, slow, 64) == b"slow\n"  # past SYNC_WAIT: it slept
        for size in (100, 128 * 1024):
            shm = h.host.shm_replies
            assert await read(7, big, size, 5) == bytes((5 + i) * 7 % 251 for i in range(size))
            assert h.host.shm_replies - shm == (size >= P.SHM_MIN)
        with pytest.raises(DeviceError) as ei:
            await read(15, buggy, 64)
        assert ei.value.errno == errno.EIO
        assert "ZeroDivisionError" in caplog.text  # logged before its EIO returned
        assert not h.host.pending
        assert len(h.host._free) == P.SHM_SLOTS


async def test_a_host_that_takes_no_more_requests_is_dead() -> None:
    # Requests and replies take two sockets: a host whose end of the
    # requests' one is gone (the daemon's sends fail, its Sender is closed)
    # cannot answer, even with its replies' socket open. The next call gets
    # EIO at once, not a wait for a reply that cannot come.
    async with hosted() as h:
        fid = await h.open(0)
        assert h.host.out is not None
        h.host.out.closed = True
        with pytest.raises(DeviceError) as ei, trio.fail_after(WAIT):
            await h.host.call(P.Kind.READ, P.READ.pack(fid, 64, 0), h.dev(0), read=64)
        assert ei.value.errno == errno.EIO
        assert h.host.dead and h.host.why == "closed its pipe"


async def test_a_reply_for_another_call_arrives_meanwhile() -> None:
    async with hosted() as h:
        sleeper, waker = await h.open(1), await h.open(2)
        for _ in range(20):
            got: list[bytes] = []
            async with trio.open_nursery() as n:
                n.start_soon(_read_into, h, sleeper, got)
                await _wait_pending(h.host, 1)
                # The host answers the sleeper first, while this call waits:
                # the sleeper's caller resumes first, as the host answered.
                got.append(await h.read(2, waker))
            assert got == [b"woken\n", b"waker\n"]
        assert not h.host.pending


async def _read_into(h: Hosted, fid: int, out: list[bytes]) -> None:
    out.append(await h.read(1, fid))


async def _wait_pending(host: HostProcess, n: int) -> None:
    """Until ``n`` calls are in flight (polled: the host has no event for it)."""
    with trio.fail_after(WAIT):
        while len(host.pending) < n:  # noqa: ASYNC110
            await trio.sleep(0.001)


async def test_a_slow_host_gets_the_trio_wait_and_a_backoff() -> None:
    async with hosted({"slow_ms": 10}) as h:
        fid = await h.open(3)
        key = (int(P.Kind.READ), h.dev(3))
        spent = hostproc._waste.spent
        start = trio.current_time()
        assert await h.read(3, fid) == b"slow\n"
        assert trio.current_time() - start >= 0.01
        if not fast_paths():
            assert key not in h.host._sync_off
            return
        # It waited SYNC_WAIT at most, then slept the trio way; calls of
        # this kind on this dev skip the wait for a while.
        until, strikes = h.host._sync_off[key]
        assert strikes == 1
        assert until - time.monotonic() <= hostproc.SYNC_BACKOFF
        assert 0 < hostproc._waste.spent - spent <= hostproc.SYNC_WAIT + 0.005
        spent = hostproc._waste.spent
        assert await h.read(3, fid) == b"slow\n"
        assert hostproc._waste.spent == spent  # backed off: no wait at all
        assert h.host._sync_off[key][1] == 1
        # Other devs of the host are not held back by this one.
        fast = await h.open(0)
        before = h.host.sync_replies
        for _ in range(50):
            assert await h.read(0, fast) == b"fast\n"
        assert h.host.sync_replies > before


def test_wasted_waits_are_capped_per_window() -> None:
    w = hostproc._SyncWaste()
    assert w.allows(100.0)
    w.spent += hostproc.SYNC_WASTE
    assert not w.allows(100.0 + hostproc.SYNC_WINDOW / 2)
    assert w.allows(100.0 + hostproc.SYNC_WINDOW)  # a new window
    assert w.spent == 0


async def test_a_flood_during_a_wait_is_taken_and_the_reply_found() -> None:
    async with hosted({"flood": 20000}) as h:
        fid, fast = await h.open(4), await h.open(0)
        assert await h.read(4, fid) == b"flood\n"
        assert await h.read(0, fast) == b"fast\n"
        assert not h.host.dead


async def test_host_death_during_a_wait_is_eio_at_once() -> None:
    async with hosted() as h:
        fid = await h.open(5)
        start = trio.current_time()
        with pytest.raises(DeviceError) as ei:
            await h.read(5, fid)
        assert ei.value.errno == errno.EIO
        assert trio.current_time() - start < 2.0
        with trio.fail_after(WAIT):
            await h.host.died.wait()


async def assert_read_kills_the_host(h: Hosted, unit: int, size: int, why: str) -> None:
    """A read of ``unit`` fails EIO, and its host is dead for ``why``."""
    fid = await h.open(unit)
    with pytest.raises(DeviceError) as ei:
        await h.read(unit, fid, size)
    assert ei.value.errno == errno.EIO
    assert h.host.dead
    assert why in h.host.why


async def test_garbage_during_a_wait_kills_the_host() -> None:
    async with hosted() as h:
        await assert_read_kills_the_host(h, 6, 64, "protocol error")


async def test_large_reads_carry_the_drivers_bytes() -> None:
    async with hosted() as h:
        fid = await h.open(7)
        for size, offset in ((1, 0), (4096, 3), (P.SHM_MIN, 5), (128 * 1024, 12345), (1 << 20, 7)):
            before = h.host.shm_replies
            got = await h.read(7, fid, size, offset)
            assert got == bytes((offset + i) * 7 % 251 for i in range(size))
            # From SHM_MIN on, through the shared buffer; under it, the socket.
            assert h.host.shm_replies - before == (size >= P.SHM_MIN)
        assert len(h.host._free) == P.SHM_SLOTS  # every slot back


async def test_concurrent_large_reads_each_get_their_own_bytes() -> None:
    # More readers than slots: some take the socket; none gets another's data.
    async with hosted() as h:
        fids = [await h.open(7) for _ in range(2 * P.SHM_SLOTS)]
        got: dict[int, bytes] = {}

        async def one(i: int, fid: int) -> None:
            for k in range(5):
                off = 1000 * i + k
                data = await h.read(7, fid, 64 * 1024, off)
                assert data == bytes((off + j) * 7 % 251 for j in range(64 * 1024))
                got[i] = data

        async with trio.open_nursery() as n:
            for i, fid in enumerate(fids):
                n.start_soon(one, i, fid)
        assert len(got) == len(fids)
        assert len(h.host._free) == P.SHM_SLOTS


@pytest.mark.parametrize("size", [100, P.SHM_MIN])
async def test_a_shared_buffer_reply_that_lent_no_slot_or_too_much_kills_the_host(size: int) -> None:
    async with hosted() as h:
        await assert_read_kills_the_host(h, 8, size, "REPLY_SHM")


async def test_the_shared_buffer_can_neither_shrink_nor_grow() -> None:
    # A host that keeps CAP_SYS_ADMIN (declared or given) may open its
    # mapping of the buffer through /proc/self/map_files, and ftruncate it.
    async with hosted(caps=1 << cap_number("sys_admin")) as h:
        fid = await h.open(9)
        if os.geteuid() != 0:
            pytest.skip("/proc/self/map_files needs CAP_SYS_ADMIN")
        assert await h.read(9, fid) == b"0:EPERM 67108864:EPERM\n"
        assert not h.host.dead
        assert await h.read(7, await h.open(7), 128 * 1024) == bytes(i * 7 % 251 for i in range(128 * 1024))


async def test_a_read_of_an_unknown_file_or_with_a_short_body_fails_and_the_host_goes_on() -> None:
    # The host answers READ on its own path (Host._handle): a file id it
    # does not hold is EBADF, a body too short for READ's fields EBADMSG,
    # and neither harms the host.
    async with hosted() as h:
        fid = await h.open(0)
        for body, err in (
            (P.READ.pack(fid + 100, 64, 0), errno.EBADF),
            (P.READ.pack(fid, 64, 0)[:-1], errno.EBADMSG),
        ):
            with pytest.raises(DeviceError) as ei, trio.fail_after(WAIT):
                await h.host.call(P.Kind.READ, body, h.dev(0), read=64)
            assert ei.value.errno == err
        assert await h.read(0, fid) == b"fast\n"
        assert not h.host.dead


async def test_a_slot_is_not_lent_again_while_a_view_of_its_data_lives() -> None:
    # A large read's data is a view of its slot (FUSE is answered from it):
    # however many large reads follow, none is given that slot while the
    # view lives, so its bytes stay the driver's; once it is gone, the slot
    # is lent again.
    async with hosted() as h:
        fid = await h.open(7)
        size = 64 * 1024
        with trio.fail_after(WAIT):
            held = await h.host.call(P.Kind.READ, P.READ.pack(fid, size, 1), h.dev(7), read=size)
        assert h.host.shm_replies == 1
        want = bytes((1 + i) * 7 % 251 for i in range(size))
        assert held == want
        for k in range(3 * P.SHM_SLOTS):
            assert await h.read(7, fid, size, 100 + k) == bytes((100 + k + i) * 7 % 251 for i in range(size))
        assert h.host.shm_replies == 1 + 3 * P.SHM_SLOTS  # the other slots took them all
        assert held == want

        def lendable() -> set[int]:
            got = {h.host._lendable() for _ in range(P.SHM_SLOTS)} - {-1}
            h.host._free.extend(got)
            return got

        assert len(lendable()) == P.SHM_SLOTS - 1
        del held
        assert len(lendable()) == P.SHM_SLOTS


async def test_a_reply_that_misses_the_wait_by_little_leaves_no_backoff() -> None:
    # The driver takes 1 ms (past SYNC_WAIT, well within SYNC_LATE): the
    # wait runs out, but the reply comes soon after, as when other programs
    # hold the CPU; the next call waits again (no backoff), as it would not
    # after a driver that sleeps (test_a_slow_host_gets_the_trio_wait_and_a_backoff).
    # (A read the loaded machine delays past SYNC_LATE does back off: the
    # test then waits for that backoff to run out and reads again.)
    async with hosted({"slow_ms": 1}) as h:
        fid = await h.open(3)
        key = (int(P.Kind.READ), h.dev(3))
        if not fast_paths():
            assert await h.read(3, fid) == b"slow\n"
            assert key not in h.host._sync_off
            return
        with trio.fail_after(WAIT):
            while True:
                off = h.host._sync_off.get(key)
                if off is not None:
                    await trio.sleep(max(0.0, off[0] - time.monotonic()) + 0.001)
                spent = hostproc._waste.spent
                start = time.monotonic()
                assert await h.read(3, fid) == b"slow\n"
                ran_out = hostproc._waste.spent > spent  # its wait ran out
                if ran_out and time.monotonic() - start < hostproc.SYNC_LATE / 2:
                    assert key not in h.host._sync_off
                    break


async def test_a_stderr_flood_is_paced_and_summed_up(caplog: pytest.LogCaptureFixture) -> None:
    # A host that writes lines without end (minor 10): the daemon reads at
    # most STDERR_RATE a second of them and logs at most STDERR_LINES a
    # second, summing up the rest in one line; its calls answer meanwhile.
    caplog.set_level(logging.INFO, logger="devfsd.isolate")
    async with hosted() as h:
        start = time.monotonic()
        assert await h.read(10, await h.open(10)) == b"chatter\n"
        fast = await h.open(0)
        with trio.fail_after(WAIT):
            while "lines of its output not logged" not in caplog.text:
                assert await h.read(0, fast) == b"fast\n"
                await trio.sleep(0.01)
        # Seconds counted from the host's first output, before ``start``:
        # the time since spans at most elapsed + 2 of them.
        seconds = time.monotonic() - start + 2
        logged = [r for r in caplog.records if f"hostile[{h.host.pid}]: chatter" in r.getMessage()]
        assert 0 < len(logged) <= hostproc.STDERR_LINES * seconds
        assert h.host.err_bytes <= (hostproc.STDERR_RATE + 65536) * seconds
        assert h.host.tail[-1].startswith("chatter ")
        assert not h.host.dead


async def test_a_line_without_end_is_cut_not_kept_growing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devfsd.isolate")
    async with hosted() as h:
        assert await h.read(11, await h.open(11)) == b"babble\n"
        with trio.fail_after(WAIT):
            while h.host.err_bytes < 2 * hostproc.STDERR_LINE_MAX:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.01)
        assert len(h.host._errbuf) <= hostproc.STDERR_LINE_MAX
        cut = [r.getMessage() for r in caplog.records if f"hostile[{h.host.pid}]: yyy" in r.getMessage()]
        assert cut and all(m.endswith("y" * hostproc.STDERR_LINE_MAX) for m in cut)
        assert all(len(m) < hostproc.STDERR_LINE_MAX + 100 for m in cut)


async def test_a_notify_flood_is_paced(caplog: pytest.LogCaptureFixture) -> None:
    # 3 * STRAY_RATE NOTIFYs for polls nobody armed, before one reply: the
    # daemon takes STRAY_RATE of them a second (without pacing, all of them
    # took a fraction of a second of its time, and nodes of in-process
    # drivers answered ~30 times slower while a host kept it up); the host's
    # own call waits, and the host goes on.
    # The window opens at the first stray: within a second of ``start``
    # (before the first) at most STRAY_RATE are taken (once it opened at
    # the STRAY_RATE-th, and twice as many were).
    caplog.set_level(logging.WARNING, logger="devfsd.isolate")
    async with hosted({"flood": 3 * hostproc.STRAY_RATE}) as h:
        fid, fast = await h.open(4), await h.open(0)
        most = 0

        async def count() -> None:
            nonlocal most
            while time.monotonic() < start + 0.9:
                most = max(most, h.host.strays)
                await trio.sleep(0.005)

        start = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            assert await h.read(4, fid) == b"flood\n"
        assert time.monotonic() - start >= 2.0
        assert 0 < most <= hostproc.STRAY_RATE
        assert h.host.strays >= 3 * hostproc.STRAY_RATE
        assert "messages that answer nothing within a second" in caplog.text
        assert await h.read(0, fast) == b"fast\n"
        assert not h.host.dead


async def test_a_reply_too_short_for_an_errno_fails_its_call_at_once() -> None:
    # The call was taken out of the calls in flight before its reply was
    # parsed: the host died of the protocol error, but that call was not
    # among those it failed, and slept for ever (found by the fuzz below).
    async with hosted() as h:
        await assert_read_kills_the_host(h, 13, 64, "short REPLY")


@pytest.mark.parametrize("kind", ["write", "poll"])
async def test_a_reply_too_short_for_its_request_kills_the_host(kind: str) -> None:
    # Minor 13 answers a WRITE with a 1-byte count, a POLL with 2 bytes of
    # its 8: a malformed reply, as a short REPLY is. The proxy's call got
    # EIO, but the host lived on, free to do it again (its ProtocolError
    # went up as a driver's bug would).
    async with hosted() as h:
        fid = await h.open(13)
        proxy = make_proxy(h.host)
        fp = File(h.dev(13), FREAD, os.getpid(), 0, 0)
        fp.data = _HostFile(h.host, fid)
        lwp = Lwp(os.getpid(), 0, 0, fp)
        call = (
            proxy.d_write(h.dev(13), Uio.for_write(b"data", lwp), 0)
            if kind == "write"
            else proxy.d_poll(h.dev(13), 1, lwp)
        )
        with pytest.raises(DeviceError) as ei, trio.fail_after(WAIT):
            await call
        assert ei.value.errno == errno.EIO
        assert h.host.dead
        assert "protocol error" in h.host.why


@pytest.mark.parametrize("seed", range(8))
async def test_a_host_that_sends_random_messages_costs_only_itself(seed: int) -> None:
    # Minor 14 sends up to 40 messages made at random from the seed (the
    # read's offset) before its reply: whatever they are, the daemon's
    # side of that host ends each call with data or an errno (never
    # another exception, which would end the test's nursery), and either
    # kills the host for a protocol error (later calls: ENXIO) or the host
    # goes on answering; another host's node answers all along. (A forged
    # reply may answer the host's next request too: its own nodes'
    # answers are its own business.)
    async with hosted() as other, hosted() as h:
        bystander = await other.open(0)
        fuzzed, fast = await h.open(14), await h.open(0)
        for offset in range(seed * 5, seed * 5 + 5):
            size = 64 if offset % 2 else 64 * 1024  # this one lends a slot
            with contextlib.suppress(DeviceError):  # (data of any size: the proxy's uiomove cuts it)
                await h.read(14, fuzzed, size, offset)
            assert await other.read(0, bystander) == b"fast\n"
            ok = False
            for _ in range(3):
                with contextlib.suppress(DeviceError):
                    ok = await h.read(0, fast) == b"fast\n"
                if ok or h.host.dead:
                    break
            if h.host.dead:
                assert "protocol error" in h.host.why
                with pytest.raises(DeviceError) as ei:
                    await h.read(0, fast)
                assert ei.value.errno == errno.ENXIO
                break
            assert ok
        assert await other.read(0, bystander) == b"fast\n"
        assert not other.host.dead


def test_a_hosts_output_is_logged_without_control_characters(caplog: pytest.LogCaptureFixture) -> None:
    # A host (as another user, say) writes escape sequences and carriage
    # returns to its stderr: the daemon's log, and the tail kept for the
    # report of its death, get them escaped, not as terminal controls or
    # a forged line of their own.
    caplog.set_level(logging.INFO, logger="devfsd.isolate")
    host = HostProcess("hostile", None)
    host._err_log([b"\x1b[2J\rmodule mm: forged\x07", b"plain"])
    logged = [r.getMessage() for r in caplog.records]
    assert logged == ["module hostile[0]: \\x1b[2J\\rmodule mm: forged\\x07", "module hostile[0]: plain"]
    assert list(host.tail) == ["\\x1b[2J\\rmodule mm: forged\\x07", "plain"]


async def test_a_call_asleep_on_its_host_counts_as_its_callers_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read asleep in an isolated driver holds a sleep on the daemon's
    side too, counted against its caller's share (``_wait.ROOT_SLEEPERS``):
    the daemon's side slept as uid 0, so a user's reads into isolated
    modules (each host with 4,000 of its own) could take root's reserve."""
    monkeypatch.setattr(_wait, "MAX_SLEEPERS", 3)
    monkeypatch.setattr(_wait, "ROOT_SLEEPERS", 1)
    host = HostProcess("msgq", None)
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        await host.start(nursery)
        try:
            req = {"spec": str(MSGQ), "props": {}, "modpath": [], "majors": {}, "uid": 0}
            with trio.fail_after(WAIT):
                info = check_reply_json(await host.call(P.Kind.LOAD, P.encode_json(req)))
                h = Hosted(host, dict(info["majors"])["msgq"])
                fid = await h.open(0)

            async def read(who: Lwp) -> None:
                body = P.READ.pack(fid, 64, 0)
                try:
                    await host.call(P.Kind.READ, body, h.dev(0), caller=who, read=64)
                except DeviceError as exc:
                    got.append(exc.errno)

            user, root = Lwp(os.getpid(), 65534, 65534), Lwp(os.getpid(), 0, 0)
            for _ in range(2):
                nursery.start_soon(read, user)
            with trio.fail_after(WAIT):
                while sleepers() < 2:  # noqa: ASYNC110 - a count, no event
                    await trio.sleep(0.01)
                await read(user)  # past the user's share: refused at once
                assert got == [errno.EAGAIN]
                nursery.start_soon(read, root)  # root's reserve
                while sleepers() < 3:  # noqa: ASYNC110 - a count, no event
                    await trio.sleep(0.01)
            assert got == [errno.EAGAIN]
        finally:
            host.close()
            with trio.fail_after(WAIT):
                await host.reap()
            nursery.cancel_scope.cancel()
    assert sleepers() == 0


async def test_a_small_read_goes_the_lean_way_unless_something_is_out_of_the_ordinary(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HostProcess.call_now (the proxy's every read): a small read, nothing
    # out of the ordinary, is sent and yielded for without reading the
    # clock (no window to roll, no backoff to check; the clock is read
    # only if its reply is not there after the yield). A wasted wait
    # pending makes each call read it first, and past SYNC_WASTE sends
    # calls the slow way until the window has rolled; so does a backoff
    # pending, until a reply that came within its wait lifts it. An error reply
    # logs its driver's traceback before its EIO. Bytes and errors the
    # same every way.
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # (the host inherits it: it answers during the yield)
    try:
        async with hosted() as h:
            clocked = 0
            before_yield = -1

            def clock() -> float:
                nonlocal clocked
                clocked += 1
                return time.perf_counter()

            sched_yield = os.sched_yield

            def counted_yield() -> None:
                nonlocal before_yield
                before_yield = clocked
                sched_yield()

            monkeypatch.setattr(hostproc, "_clock", clock)
            monkeypatch.setattr(os, "sched_yield", counted_yield)
            waste = hostproc._waste
            monkeypatch.setattr(waste, "spent", 0.0)  # (another test's wasted waits: all hosts')
            monkeypatch.setattr(waste, "start", -math.inf)

            async def read(fid: int, unit: int) -> tuple[bytes, bool, bool]:
                """The data; whether it was taken at once; whether the call
                read the clock before its yield (or at all, if it did not
                yield)."""
                nonlocal clocked, before_yield
                clocked, before_yield = 0, -1
                with trio.fail_after(WAIT):
                    got = h.host.call_now(P.Kind.READ, P.READ.pack(fid, 64, 0), h.dev(unit), 64)
                    checked = (before_yield if before_yield >= 0 else clocked) > 0
                    now = not isinstance(got, hostproc.InFlight)
                    if isinstance(got, hostproc.InFlight):
                        got = await h.host.reply(got)
                return bytes(got), now, checked

            fast, buggy = await h.open(0), await h.open(15)
            h.host._sync_off.clear()  # (an OPEN's wait that ran out on a busy machine)
            waste.spent = 0.0
            got = [await read(fast, 0) for _ in range(20)]
            assert {data for data, _, _ in got} == {b"fast\n"}
            if not fast_paths():  # never at once, never the clock
                assert {(now, checked) for _, now, checked in got} == {(False, False)}
                assert h.host.sync_replies == 0
            else:
                # The first at least (more, unless a wait ran out on a busy
                # machine: a backoff and wasted time, checked from then on).
                assert not got[0][2]
                assert h.host.sync_replies > 0
                # And taken at once, inline, once the host answers during
                # the yield (not always at first: a new host may be ahead of
                # this process in the scheduler's count, and the yield then
                # gives it nothing).
                with trio.fail_after(WAIT):
                    while (await read(fast, 0)) != (b"fast\n", True, False):
                        h.host._sync_off.clear()  # (a busy machine's)
                        waste.spent = 0.0
            with pytest.raises(DeviceError) as ei:
                await read(buggy, 15)
            assert ei.value.errno == errno.EIO
            assert "ZeroDivisionError" in caplog.text  # logged before its EIO returned
            if not fast_paths():
                return
            # A wasted wait pending: the clock is read (the window checked), and
            # past SYNC_WASTE in the window the call goes the slow way.
            h.host._sync_off.clear()  # (a wait that ran out above, on a busy machine)
            monkeypatch.setattr(waste, "spent", hostproc.SYNC_WAIT)
            monkeypatch.setattr(waste, "start", time.perf_counter())
            assert (await read(fast, 0))[::2] == (b"fast\n", True)
            monkeypatch.setattr(waste, "spent", hostproc.SYNC_WASTE)
            before = h.host.sync_replies
            assert await read(fast, 0) == (b"fast\n", False, True)
            assert h.host.sync_replies == before  # (no wait: the reader's)
            # Its window over: rolled (the waste forgotten), then the lean way again.
            h.host._sync_off.clear()
            start = time.perf_counter() - hostproc.SYNC_WINDOW
            monkeypatch.setattr(waste, "start", start)
            assert (await read(fast, 0))[::2] == (b"fast\n", True)
            assert waste.start > start
            h.host._sync_off.clear()
            monkeypatch.setattr(waste, "spent", 0.0)
            assert (await read(fast, 0))[::2] == (b"fast\n", False)
            # A wait that runs out (a driver asleep past SYNC_WAIT) in a
            # window long over: the window rolled before the waste counts,
            # and a backoff for its kind on its dev.
            slow = await h.open(3)
            h.host._sync_off.clear()
            monkeypatch.setattr(waste, "spent", 0.0)
            monkeypatch.setattr(waste, "start", -math.inf)
            assert await read(slow, 3) == (b"slow\n", False, False)
            assert waste.spent > 0
            assert time.perf_counter() - waste.start < hostproc.SYNC_WINDOW
            assert list(h.host._sync_off) == [(int(P.Kind.READ), h.dev(3))]
            # A backoff pending for this kind on this dev: the slow way, and
            # the clock read, until it runs out and a reply that comes within
            # the wait lifts it; then the lean way again.
            monkeypatch.setattr(waste, "spent", 0.0)
            h.host._sync_off.clear()
            key = (int(P.Kind.READ), h.dev(0))
            h.host._sync_off[key] = (time.perf_counter() + 60, 1)
            before = h.host.sync_replies
            assert await read(fast, 0) == (b"fast\n", False, True)
            assert h.host.sync_replies == before
            h.host._sync_off[key] = (time.perf_counter(), 1)
            with trio.fail_after(WAIT):
                while key in h.host._sync_off:  # (a wait that runs out on a busy machine backs off again)
                    assert (await read(fast, 0))[::2] == (b"fast\n", True)
            monkeypatch.setattr(waste, "spent", 0.0)
            assert (await read(fast, 0))[::2] == (b"fast\n", False)
            assert not h.host.pending
            assert not h.host._lent
    finally:
        os.sched_setaffinity(0, cpus)


async def test_a_file_dropped_in_the_middle_of_a_send_is_released_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The cyclic GC runs a daemon File's finaliser (_HostFile: the file's
    # RELEASE) at any allocation: also right after a write on the requests'
    # pipe took part of a request that does not fit (1 MiB; the pipe holds
    # 256 KiB), before the rest was queued. The RELEASE went into the pipe
    # inside that request, and the host, finding garbage, died: a user who
    # could time it killed the module (and its restarts). Here the
    # finaliser runs exactly there, every time a write on that pipe does
    # not take a whole message; the RELEASE now goes after it.
    async with hosted() as h:
        fast, dropped = await h.open(0), await h.open(0)
        files = [_HostFile(h.host, dropped)]
        out = h.host.out
        assert out is not None
        real = os.write
        dropped_at: list[int] = []

        def write(fd: int, data: Any) -> int:
            done = 0
            try:
                done = real(fd, data)
                return done
            finally:
                if fd == out.fd and done < len(data) and files:
                    dropped_at.append(done)
                    files.clear()  # its finaliser runs now, as the GC's would

        class Os:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

        patched = Os()
        patched.write = write  # type: ignore[attr-defined]
        monkeypatch.setattr(_channel, "os", patched)
        monkeypatch.setattr(hostproc, "os", patched)
        data = b"x" * (1 << 20)
        with trio.fail_after(WAIT):
            reply = await h.host.call(P.Kind.WRITE, P.WRITE.pack(fast, 0) + data, h.dev(0))
        assert dropped_at, "no write on the pipe was partial"
        assert P.COUNT.unpack(reply) == (len(data),)
        assert await h.read(0, fast) == b"fast\n"
        assert not h.host.dead

        async def released() -> bool:
            with contextlib.suppress(DeviceError):
                await h.read(0, dropped)
                return False
            return True

        # Its RELEASE reached the host (a read of it: EBADF there).
        with trio.fail_after(WAIT):
            while not await released():  # noqa: ASYNC110 - the host's table, no event
                await trio.sleep(0.01)
        assert not h.host.dead


async def test_request_ids_start_again_past_32_bits_skipping_those_in_use() -> None:
    # A request id is 32 bits in the header. The 2**32nd request of a host
    # failed to pack, and every one after it: a user who read an isolated
    # node for a few days left its module answering EIO to everyone. Ids
    # now start again at 1, skipping a call still in flight (the sleeper's).
    async with hosted() as h:
        fast, sleeper, waker = await h.open(0), await h.open(1), await h.open(2)
        got: list[bytes] = []
        async with trio.open_nursery() as n:
            n.start_soon(_read_into, h, sleeper, got)
            await _wait_pending(h.host, 1)
            (asleep,) = h.host.pending
            h.host._rids = itertools.count((1 << 32) - 3)  # (the last 3 ids of 32 bits)
            for _ in range(asleep + 5):  # past RID_MAX, then past the sleeper's id again
                assert await h.read(0, fast) == b"fast\n"
                assert list(h.host.pending) == [asleep]
            got.append(await h.read(2, waker))
        assert got == [b"woken\n", b"waker\n"]
        assert await h.read(0, fast) == b"fast\n"
        assert not h.host.pending
        assert not h.host.dead


async def test_a_flood_of_small_messages_is_taken_a_batch_a_turn() -> None:
    # One read of the pipe (256 KiB) holds 29,000 empty NOTIFYs: the daemon
    # parsed them all, then took up to STRAY_RATE of them, in one step of
    # its loop (~40 ms of its thread's CPU time, every second of a flood,
    # during which no other node was answered). Now at most TAKE_BATCH a
    # step: measured as the thread's CPU time between two turns of another
    # task (CPU time, not the clock: other programs' turns do not count).
    async with hosted({"flood": 3 * hostproc.STRAY_RATE}) as h:
        fid = await h.open(4)
        worst = 0.0
        done = False

        async def turns() -> None:
            nonlocal worst
            last = time.thread_time()
            while not done:
                await trio.lowlevel.checkpoint()
                now = time.thread_time()
                worst = max(worst, now - last)
                last = now

        async with trio.open_nursery() as nursery:
            nursery.start_soon(turns)
            assert await h.read(4, fid) == b"flood\n"
            done = True
        assert h.host.strays >= 3 * hostproc.STRAY_RATE
        assert not h.host.dead
        assert worst < 0.010, f"{worst * 1e3:.1f} ms of CPU time in one step"


async def test_file_ids_start_again_past_32_bits_skipping_those_in_use() -> None:
    # A file id is 32 bits in every message that names a file: the 2**32nd
    # open of a host failed to pack, and every later one (EIO), until root
    # reloaded the module. Ids now start again at 1, skipping a file still
    # open (held: id 1), through the proxy's d_open and d_close.
    async with hosted() as h:
        proxy = make_proxy(h.host)
        dev = h.dev(0)

        async def open_file() -> File:
            fp = File(dev, FREAD, os.getpid(), 0, 0)
            with trio.fail_after(WAIT):
                await proxy.d_open(dev, FREAD, 0, Lwp(os.getpid(), 0, 0, fp))
            return fp

        def fid(fp: File) -> int:
            assert isinstance(fp.data, _HostFile)
            return fp.data.fid

        held = await open_file()
        h.host.newest_fid = (1 << 32) - 3  # (the last ids of 32 bits)
        files = [await open_file() for _ in range(4)]
        assert [fid(f) for f in files] == [(1 << 32) - 2, (1 << 32) - 1, 2, 3]
        for fp in [held, *files]:
            assert await h.read(0, fid(fp)) == b"fast\n"
        for fp in [*files, held]:  # the last close: CLOSE, every file of the dev
            fp.data.closed = True
            with trio.fail_after(WAIT):
                await proxy.d_close(dev, FREAD, 0, Lwp(os.getpid(), 0, 0, fp))
        assert not h.host.fids
        again = await open_file()
        assert fid(again) == 4  # (on from the last)
        assert await h.read(0, fid(again)) == b"fast\n"
        assert not h.host.dead
