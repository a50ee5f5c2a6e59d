"""Shared fixtures. The ``fuse`` marker's skip and the devfsd_* fixtures
come from devfsd's own pytest plugin (``devfsd.testing.plugin``); ``devfs``
is the project's older name for a plain mount."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import threading
import urllib.parse
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import settings

from devfsd.state import DEFAULT_STATE_ROOT
from tests.deadline import TRIO_TEST_DEADLINE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from devfsd.testing.mount import DevfsdMount
    from devfsd.testing.plugin import MountFactory

pytest_plugins = ["pytester"]

# Hypothesis's per-example deadline (200 ms) measures the machine's load, not
# the code: off for every test. A wait that hangs is caught by the deadlines
# below (tests/deadline.py) instead.
settings.register_profile("devfsd", deadline=None)
settings.load_profile("devfsd")


@pytest.fixture
def devfs(devfsd_mount: MountFactory) -> DevfsdMount:
    """A running devfsd (``--debug``) on a temporary mountpoint; torn down even if the test fails."""
    return devfsd_mount(args=["--debug"])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadline(seconds): a trio test's own time limit (tests/deadline.py)")
    config.addinivalue_line(
        "markers", "in_process_only: reads a driver's Python objects; not run with the driver isolated"
    )
    # A run started with SIGINT ignored (a background job of a shell without
    # job control, nohup) would pass that on: Python then installs no
    # KeyboardInterrupt handler, trio none of its own, and every tool a test
    # starts ignores ^C. The tests of ^C assume what an interactive run has.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every trio test a deadline: a wait that never ends fails the test
    with ``trio.TooSlowError`` in seconds instead of stalling the run."""
    for item in items:
        if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
            continue
        marker = item.get_closest_marker("deadline")
        seconds = float(marker.args[0]) if marker else TRIO_TEST_DEADLINE
        item.obj = _within(item.obj, seconds)


def _within(fn: Callable[..., Awaitable[object]], seconds: float) -> Callable[..., Awaitable[object]]:
    """``fn`` cancelled after ``seconds`` of wall-clock time (a test on trio's
    MockClock may jump hours of virtual time legitimately), then failed."""

    @functools.wraps(fn)
    async def bounded(*args: object, **kwargs: object) -> object:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def expire() -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(scope.cancel)

            timer = threading.Timer(seconds, expire)
            timer.daemon = True
            timer.start()
            try:
                return await fn(*args, **kwargs)
            finally:
                timer.cancel()
        pytest.fail(f"trio test still running after {seconds} s (tests/deadline.py)")

    return bounded


@pytest.fixture(scope="session", autouse=True)
def _no_state_left_in_var_lib(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the run if a test's daemon kept its state in /var/lib/devfsd.

    A daemon started without ``--state`` keeps it in
    ``/var/lib/devfsd/<its mountpoint, escaped>``, which outlives the test;
    every test gives its daemons a state under its own temporary directory.
    Only this run's mountpoints (under its base temporary directory) count,
    so runs side by side do not blame each other.
    """
    prefix = urllib.parse.quote(str(tmp_path_factory.getbasetemp()) + "/", safe="")
    yield
    with contextlib.suppress(FileNotFoundError):
        left = sorted(n for n in os.listdir(DEFAULT_STATE_ROOT) if n.startswith(prefix))
        if left:
            pytest.fail(f"tests left state in {DEFAULT_STATE_ROOT}: {left}")
