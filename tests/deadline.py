"""Bounded waits for tests: a broken wait fails its test in seconds, never stalls the run.

Two tools, one per kind of test:

- :func:`deadline` bounds a blocking system call made by a plain test (a
  ``read(2)`` on a node, a ``poll(2)``, a ``wait``). It arms SIGALRM: a
  call blocked in devfsd sees the signal pending, devfsd answers it EINTR
  (its sleepers watch for pending signals), Python runs the handler, and the
  handler fails the test. Outside a mount the signal interrupts the call
  directly.
- Trio tests get a deadline of their own from ``tests/conftest.py``
  (:data:`TRIO_TEST_DEADLINE` seconds, ``@pytest.mark.deadline(s)`` for
  more), as a cancel scope around the test body.

pytest-timeout (``timeout`` in pyproject.toml) stays the backstop for
anything neither reaches.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

#: Seconds a trio test may take before it fails (``@pytest.mark.deadline`` overrides).
TRIO_TEST_DEADLINE: Final = 20.0


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Fail the test if the block is still running after ``seconds``.

    Main thread only (signals). An itimer already armed (pytest-timeout's)
    is put back afterwards with what was left of it.
    """

    def expired(signum: int, frame: FrameType | None) -> None:
        pytest.fail(f"{what}: still blocked after {seconds} s", pytrace=True)

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, expired)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), old_interval)
