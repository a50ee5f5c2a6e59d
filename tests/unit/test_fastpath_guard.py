"""The guard around devfsd's fast paths (``devfsd._trioloop.choose``): an
unknown trio or pyfuse3, a trio whose private pieces moved, or
``$DEVFSD_PUBLIC_ONLY`` turns them off, and devfsd then works on the public API."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pyfuse3
import pytest
import trio
import trio.testing

from devfsd import _trioloop
from devfsd.cdevsw import Lwp, WaitChannel
from devfsd.cdevsw._wait import call_limited, sleepers
from devfsd.errors import DeviceError
from devfsd.testing.harness import Kernel
from tests.unit.conftest import needs_fast_paths
from tests.unit.sockets import assert_fd_free, socket_pair
from tests.unit.test_faults import _scoped_read

if TYPE_CHECKING:
    from collections.abc import Iterator

MODS = Path(__file__).resolve().parent.parent / "modules"
ROOT = Path(__file__).resolve().parent.parent.parent
LIMIT = 0.25


@pytest.fixture
def newer_trio(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """trio claims a release the fast paths do not know; ``choose`` runs again."""
    monkeypatch.setattr(trio, "__version__", "0.99.0")
    try:
        yield
    finally:
        monkeypatch.undo()
        _trioloop.choose()


@pytest.mark.usefixtures("newer_trio")
def test_an_unknown_trio_turns_the_fast_paths_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="devfsd._trioloop")
    assert not _trioloop.choose(public_only=False)
    assert _trioloop.PRIVATE is None
    assert "fast paths off: trio 0.99.0 is not 0.35.x" in caplog.text
    assert _trioloop.describe().startswith("fast paths off (trio 0.99.0, ")


@pytest.mark.usefixtures("newer_trio")
def test_the_public_path_runs_devfsd_on_an_unknown_trio() -> None:
    _trioloop.choose()

    async def main() -> None:
        # Nothing of trio's or pyfuse3's is touched...
        assert not _trioloop.fast_instruments()
        assert not _trioloop.fast_io_wakeups()
        assert not _trioloop.lean_fuse_loop()
        assert pyfuse3.trio is trio  # type: ignore[attr-defined]
        # ...and sleeps, wakeups, waits on a descriptor and the limit work.
        chan, me = WaitChannel("t"), Lwp(os.getpid(), 0, 0)
        with socket_pair() as (r, w):
            got: list[bool] = []

            async def sleeper() -> None:
                got.append(await chan.sleep(me, fd=r))

            async with trio.open_nursery() as n:
                n.start_soon(sleeper)
                await trio.testing.wait_all_tasks_blocked()
                chan.wakeup()
                await trio.testing.wait_all_tasks_blocked()
                n.start_soon(sleeper)
                await trio.testing.wait_all_tasks_blocked()
                w.send(b"x")
            assert got == [False, True]
            await assert_fd_free(r)
        with pytest.raises(DeviceError) as ei:
            await chan.sleep(me, 0.5)
        assert ei.value.errno == errno.EWOULDBLOCK
        assert sleepers() == 0

        async def hang() -> None:
            with trio.move_on_after(3600):
                await trio.sleep_forever()

        hung: list[str] = []
        t0 = trio.current_time()
        assert await call_limited(hang(), 1.0, hung.append, "d_read") == (None, True)
        assert trio.current_time() - t0 == pytest.approx(1.0)
        assert hung == ["d_read"]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.usefixtures("newer_trio")
@pytest.mark.parametrize(
    ("unit", "expect", "took"),
    [
        (0, errno.ETIMEDOUT, LIMIT),  # hangs in move_on_after(3600)
        (3, errno.ETIMEDOUT, 1.0 + LIMIT),  # asleep 1 s (not counted), then hangs
        (4, errno.ETIMEDOUT, 1.0),  # a shield is honoured, then cut at once
        (7, b"slept\n", 1.0),  # asleep in a scope of its own: not counted
        (9, errno.ETIMEDOUT, LIMIT),  # in a nursery, on a child task
    ],
)
def test_the_hang_limit_on_an_unknown_trio(
    unit: int, expect: bytes | int, took: float, caplog: pytest.LogCaptureFixture
) -> None:
    # --entry-timeout through the harness's SpecFs, as the daemon's: the
    # read path (SpecFs._rw) takes call_limited's public path.
    _trioloop.choose()

    async def main() -> None:
        assert _trioloop.PRIVATE is None
        async with Kernel.running([MODS], entry_timeout=LIMIT) as k:
            await k.modload("scopehang")
            got, t = await _scoped_read(k, unit)
            assert got == expect
            assert t == pytest.approx(took)
            await k.modunload("scopehang")

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    if expect == errno.ETIMEDOUT:
        assert f"driver d_read still running after {LIMIT:g} s: cancelled" in caplog.text
        assert "in scopehang_read" in caplog.text
    else:
        assert "still running" not in caplog.text


@needs_fast_paths
def test_moved_private_state_turns_the_fast_paths_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A known version whose private pieces are not where they were.
    monkeypatch.setattr(_trioloop, "_SCOPE_PRIVATE", (*_trioloop._SCOPE_PRIVATE, "_gone"))
    try:
        assert not _trioloop.choose()
        assert "CancelScope has no _gone" in caplog.text
    finally:
        monkeypatch.undo()
        _trioloop.choose()
    assert _trioloop.PRIVATE is not None


@needs_fast_paths
def test_public_only_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        for value, on in (("1", False), ("yes", False), ("0", False), ("", True)):
            monkeypatch.setenv(_trioloop.ENV_PUBLIC_ONLY, value)
            assert _trioloop.choose() is on
            assert (_trioloop.PRIVATE is not None) is on
        assert not _trioloop.choose(public_only=True)  # the daemon's -o public_only
    finally:
        monkeypatch.undo()
        _trioloop.choose()


@needs_fast_paths
def test_an_unknown_pyfuse3_keeps_its_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyfuse3, "__version__", "3.6.0")
    try:
        assert not _trioloop.lean_fuse_loop()
        assert pyfuse3.trio is trio  # type: ignore[attr-defined]
    finally:
        pyfuse3.trio = trio  # type: ignore[attr-defined]


def test_import_needs_nothing_private_from_trio() -> None:
    # A trio without the private modules the fast paths use (as a future
    # release may be): devfsd imports, chooses the public path, and serves
    # a sleep and a time limit.
    code = textwrap.dedent(
        """
        import sys
        import trio
        trio.__version__ = "0.35.0"  # a known version, and still:
        for name in ("trio._core._instrumentation", "trio._core._io_epoll"):
            sys.modules[name] = None  # import fails
        import devfsd.daemon, devfsd.cdevsw, devfsd.specfs
        from devfsd import _trioloop
        from devfsd.cdevsw import Lwp, WaitChannel
        from devfsd.cdevsw._wait import call_limited
        assert _trioloop.PRIVATE is None

        async def main():
            chan = WaitChannel("t")
            async with trio.open_nursery() as n:
                n.start_soon(chan.sleep, Lwp(0, 0, 0))
                await trio.sleep(0.01)
                chan.wakeup()
            print(await call_limited(trio.sleep_forever(), 0.05))

        trio.run(main)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != _trioloop.ENV_PUBLIC_ONLY}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "(None, True)\n"
    # (logging's last resort: warnings to stderr)
    assert "fast paths off: trio 0.35.0 is not as expected" in r.stderr
