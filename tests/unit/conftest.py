"""Fixtures that run a test on devfsd's fast paths and on trio's public API
(``devfsd._trioloop.choose``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devfsd import _trioloop

if TYPE_CHECKING:
    from collections.abc import Iterator

#: The tests of a fast path itself: nothing to run with the fast paths off.
needs_fast_paths = pytest.mark.skipif(
    _trioloop.PRIVATE is None, reason="devfsd's fast paths are off ($DEVFSD_PUBLIC_ONLY, or an unknown trio)"
)


@pytest.fixture
def public_only() -> Iterator[None]:
    """The test runs on trio's public API only; the fast paths come back after."""
    _trioloop.choose(public_only=True)
    try:
        yield
    finally:
        _trioloop.choose()


@pytest.fixture(params=["fast", "public"])
def trio_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs the test twice: on the fast paths (skipped when they are off) and
    on the public API only."""
    if request.param == "fast":
        if _trioloop.PRIVATE is None:
            pytest.skip("devfsd's fast paths are off ($DEVFSD_PUBLIC_ONLY, or an unknown trio)")
        yield "fast"
        return
    _trioloop.choose(public_only=True)
    try:
        yield "public"
    finally:
        _trioloop.choose()


@pytest.fixture(params=["in-process", "isolated"])
def isolated(request: pytest.FixtureRequest) -> bool:
    """Runs the test twice: with its driver in process, and isolated, in a
    module host of its own (``Kernel(isolate=True)``, devfsd.isolate)."""
    return bool(request.param == "isolated")
