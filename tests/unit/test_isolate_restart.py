"""The restart rule of an isolated module, in devfsd(8)'s words: "a host
that lived 30 seconds or more starts a new row" of deaths, and past
``--host-restarts`` deaths in a row the module stays down. Here the 30 s
are made 1 s (``supervisor.STABLE_AFTER``) and the limit 1, with
tests/modules/crashy dying on a write of ``exit``; the backoff and the
limit themselves are test_isolation's, on a real mount.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
import trio

from devfsd.errors import DeviceError
from devfsd.isolate import supervisor
from devfsd.isolate.supervisor import Supervisor
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"
#: Bound on each wait (a host starts a Python interpreter; a loaded machine).
WAIT = 30.0


async def reads_ok(k: Kernel) -> bool:
    try:
        f = await k.open("crashy", 0)
    except DeviceError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: down, or not restarted yet
            raise
        return False
    try:
        return await f.read(3) == b"ok\n"
    finally:
        await f.close()


async def crash(k: Kernel) -> None:
    f = await k.open("crashy", 0)
    with pytest.raises(DeviceError) as ei:
        await f.write(b"exit")  # os._exit(3) in the host
    assert ei.value.errno == errno.EIO
    await f.close()


async def wait_up(k: Kernel) -> None:
    while not await reads_ok(k):  # noqa: ASYNC110 - a restart sets no event a test may see
        await trio.sleep(0.02)


def is_down(sup: Supervisor) -> bool:
    """modstat's ``d`` (a call, so that a type checker does not take it as constant)."""
    return sup.down


def deaths_logged(caplog: pytest.LogCaptureFixture, n: int) -> int:
    return sum(f"(death {n} in a row)" in r.getMessage() for r in caplog.records)


async def test_a_host_that_lived_long_enough_starts_a_new_row(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "STABLE_AFTER", 1.0)
    caplog.set_level(logging.WARNING, logger="devfsd.isolate")
    async with Kernel.running([MODS], isolate=True) as k:
        k.loader.host_restarts = 1
        with trio.fail_after(WAIT):
            await k.modload("crashy")
            sup: object = k.loader.modules["crashy"].pymod  # the loader's module object, when isolated
            assert isinstance(sup, Supervisor)
            await crash(k)
            await wait_up(k)
            assert deaths_logged(caplog, 1) == 1
            # The new host lives past STABLE_AFTER: its death is the first of a new row.
            assert sup.host is not None
            await trio.sleep_until(sup.host.started_at + 1.05)
            await crash(k)
            await wait_up(k)
            assert deaths_logged(caplog, 1) == 2
            assert deaths_logged(caplog, 2) == 0
            assert not is_down(sup)
            # One dying at once is the second in a row: past the limit of 1, down.
            await crash(k)
            while not is_down(sup):  # noqa: ASYNC110 - nor does going down
                await trio.sleep(0.02)
        assert any("crashy: 2 deaths in a row: stays down" in r.getMessage() for r in caplog.records)
        assert not await reads_ok(k)
