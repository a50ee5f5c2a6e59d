"""devfsd._fuseintr's guards: a sleep it cannot watch is left to the /proc checks.

The path itself (a signal ending a sleep through the FUSE INTERRUPT) is
tested through a mount, both ways: tests/integration/test_polling.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devfsd import _fuseintr

if TYPE_CHECKING:
    import pytest


async def _plain() -> None:
    return None


def test_no_file_system_no_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fuseintr, "file_of", None)
    coro = _plain()
    try:
        assert _fuseintr.watch(coro, object(), lambda: None) == 0
    finally:
        coro.close()


def test_not_a_fuse_request_no_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    # A task that serves no pyfuse3 request (an in-process call, a module
    # thread): no container under it, nothing registered.
    monkeypatch.setattr(_fuseintr, "file_of", lambda fh: None)
    coro = _plain()
    try:
        assert _fuseintr.watch(coro, object(), lambda: None) == 0
    finally:
        coro.close()
    assert _fuseintr.watching() == 0


def test_public_only_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVFSD_PUBLIC_ONLY", "1")
    monkeypatch.setattr(_fuseintr, "_lib", False)  # look again
    assert not _fuseintr.available()
    monkeypatch.delenv("DEVFSD_PUBLIC_ONLY")
    monkeypatch.setattr(_fuseintr, "_lib", False)
    assert _fuseintr.available()  # pyfuse3 3.5 and libfuse3 on this machine
