"""One end of the daemon-host socket: sending without awaiting, receiving.

Touches the world (a non-blocking ``AF_UNIX`` stream socket); used by both
the daemon (``supervisor``) and the host (``host``).

Every call on the socket but one passes ``MSG_DONTWAIT``: a host's socket
is a blocking one, whose reader may wait for its next request in a
blocking ``recv`` (``host.py``); the daemon's is non-blocking anyway.

``Sender.send`` never awaits: a reply, a ``RELEASE`` from a finaliser or a
poll notification from ``WaitChannel.wakeup`` (all synchronous) can send.
Whatever the socket does not take at once waits in a backlog, in order,
which ``Sender.run`` (a task) flushes when the socket is writable again;
while there is a backlog every later message queues behind it.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from typing import TYPE_CHECKING, Final, final

import trio

if TYPE_CHECKING:
    from devfsd.cdevsw._uio import Buffer
    from devfsd.isolate.protocol import Message, Receiver

__all__ = ["ENDED", "RECV_SIZE", "Sender", "receive", "receive_now", "split"]

#: Bytes asked of the socket at a time: a 128 KiB read's reply in one go.
RECV_SIZE: Final = 256 * 1024
_DONTWAIT: Final = socket.MSG_DONTWAIT
#: What ``recv`` fails with once the peer is gone: the end of the stream.
ENDED: Final = frozenset({errno.ECONNRESET, errno.EPIPE, errno.EBADF})


@final
class Sender:
    """Sends whole messages on ``sock`` in order, never blocking the caller."""

    __slots__ = ("_backlog", "_wake", "closed", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._backlog: deque[memoryview] = deque()
        self._wake = trio.Event()
        #: The peer is gone (a send failed): later messages are dropped;
        #: the receiving side sees the end and says so.
        self.closed = False

    @property
    def backlog(self) -> bool:
        """Messages wait for the socket to take them."""
        return bool(self._backlog)

    def send(self, data: bytes, more: Buffer = b"") -> None:
        """Send ``data`` then ``more`` (a payload sent as it is, not joined
        to ``data`` first; copied only if the socket does not take it all)."""
        if self.closed:
            return
        if self._backlog:
            self._backlog.append(memoryview(data))
            if more:
                self._backlog.append(memoryview(bytes(more)))
            return
        try:
            n = self.sock.sendmsg((data, more), (), _DONTWAIT) if more else self.sock.send(data, _DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:
            self.closed = True
            return
        if n < len(data):
            self._backlog.append(memoryview(data)[n:])
            n = 0
        else:
            n -= len(data)
        if more and n < len(memoryview(more)):
            self._backlog.append(memoryview(bytes(memoryview(more)[n:])))
        if self._backlog:
            self._wake.set()

    async def run(self) -> None:
        """Flush the backlog whenever there is one, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._backlog and not self.closed:
                await trio.lowlevel.wait_writable(self.sock)
                head = self._backlog[0]
                try:
                    n = self.sock.send(head, _DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    self.closed = True
                    self._backlog.clear()
                    break
                if n < len(head):
                    self._backlog[0] = head[n:]
                else:
                    self._backlog.popleft()


def receive_now(
    sock: socket.socket, rx: Receiver, buf: bytearray, flags: int = socket.MSG_DONTWAIT
) -> list[Message] | None:
    """The whole messages the data on ``sock`` completes, without waiting
    (none if there is no data yet); ``None`` at the end of the stream (the
    peer closed or died). ``buf`` is scratch space (``RECV_SIZE`` bytes,
    reused): a fresh ``recv(RECV_SIZE)`` would have malloc map and unmap
    256 KiB for every message, which cost more than the rest of a round trip.
    ``flags`` 0 on a blocking socket: wait, up to its ``SO_RCVTIMEO``.

    Raises:
        ProtocolError: the peer sent something malformed.
    """
    try:
        n = sock.recv_into(buf, 0, flags)
    except BlockingIOError:
        return []
    except OSError as exc:
        if exc.errno in ENDED:
            return None
        raise
    if not n:
        return None
    m = rx.whole(buf, n)
    if m is not None:
        return [m]
    return split(rx, buf, n)


def split(rx: Receiver, buf: bytearray, n: int) -> list[Message]:
    """The whole messages ``buf[:n]``, just received, completes (none, one
    or more), when it is not one whole message alone (``Receiver.whole``,
    which the caller tried first)."""
    with memoryview(buf) as view:
        rx.feed(view[:n])
    out = []
    while (m := rx.next_message()) is not None:
        out.append(m)
    return out


async def receive(sock: socket.socket, rx: Receiver, buf: bytearray) -> list[Message] | None:
    """Wait for whole messages on ``sock`` (``receive_now``'s, never an
    empty list); ``None`` at the end of the stream.

    Raises:
        ProtocolError: the peer sent something malformed.
    """
    while True:
        await trio.lowlevel.wait_readable(sock)
        msgs = receive_now(sock, rx, buf)
        if msgs is None or msgs:
            return msgs
