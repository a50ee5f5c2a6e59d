"""Socket helpers for the tests of trio-level waits (``test_wait``, ``test_trioloop``)."""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of non-blocking sockets, closed on exit."""
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        yield a, b


async def assert_fd_free(sock: socket.socket) -> None:
    """Fail (``trio.BusyResourceError``) if a task is still in trio's epoll
    record as ``sock``'s reader; a plain wait on it must be possible."""
    with trio.move_on_after(0.05):
        await trio.lowlevel.wait_readable(sock)
