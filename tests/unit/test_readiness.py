"""The readiness check's ping of the daemon's own control socket (devfsd.daemon._answers).

A flood of clients that fills the listen backlog before READY made the
ping fail with EAGAIN, and the daemon shut itself down: found with
tests/reliability/test_control_limits.py on a busy machine.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import TYPE_CHECKING

import pytest

from devfsd.control.client import Unreachable
from devfsd.daemon import _answers

if TYPE_CHECKING:
    from pathlib import Path


def test_a_full_backlog_is_listening_not_dead(tmp_path: Path) -> None:
    path = str(tmp_path / "control.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued: list[socket.socket] = []
    try:
        while True:  # fill the backlog: nobody accepts
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                s.close()
                break
            queued.append(s)
            assert len(queued) < 1000
        t0 = time.monotonic()
        _answers(path, time.monotonic() + 0.3)  # returns: a listener is there
        assert 0.25 <= time.monotonic() - t0 < 5
    finally:
        for s in queued:
            s.close()
        listener.close()


def test_nobody_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(Unreachable) as ei:
        _answers(str(tmp_path / "none.sock"), time.monotonic() + 5)
    assert ei.value.errno == errno.ENOENT
