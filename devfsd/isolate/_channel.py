"""One end of a daemon-host pipe: sending without awaiting, receiving.

Touches the world (a non-blocking pipe end); used by both the daemon
(``hostproc``) and the host (``host``). Each way has a pipe of its own
(``pipe``): requests go down one, replies and ``NOTIFY``\\ s come back up
the other. Pipes, not ``AF_UNIX`` stream socket pairs: a pipe's
``write`` and ``read`` cost less than a socket's ``send`` and ``recv``
(no socket buffer allocated and freed per message), ~4 us less per round
trip between two Python processes on one CPU, a quarter of the floor
(bench/README.md, "Isolated modules", seventh session). Every end is
non-blocking; a host waits for its next request in ``epoll_wait(2)``
(``host.py``).

``Sender.send`` never awaits: a reply, a ``RELEASE`` from a finaliser or a
poll notification from ``WaitChannel.wakeup`` (all synchronous) can send.
Whatever the pipe does not take at once waits in a backlog, in order,
which ``Sender.run`` (a task) flushes when the pipe is writable again;
while there is a backlog every later message queues behind it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections import deque
from typing import TYPE_CHECKING, Final, final

import trio

from devfsd.isolate.protocol import Message

if TYPE_CHECKING:
    from devfsd.cdevsw._uio import Buffer
    from devfsd.isolate.protocol import Receiver

__all__ = ["ENDED", "MORE", "RECV_SIZE", "Sender", "more", "pipe", "receive", "receive_now", "split"]

#: Bytes asked of the pipe at a time, and each pipe's capacity: a 128 KiB
#: write's request, or a reply that does not go through the shared buffer,
#: in one go.
RECV_SIZE: Final = 256 * 1024
#: What a read or write fails with once the peer is gone: the end of the stream.
ENDED: Final = frozenset({errno.ECONNRESET, errno.EPIPE, errno.EBADF})
#: Ends a list of messages cut at its limit (``split``'s ``limit``): more
#: whole messages may wait in the ``Receiver``; ``more`` takes them. (Kind
#: 0: no message has it.)
MORE: Final = Message(0, 0, b"")


def pipe() -> tuple[int, int]:
    """A new pipe, ``(read end, write end)``, both close-on-exec, holding
    ``RECV_SIZE`` bytes where the kernel lets it (a pipe holds 64 KiB by
    default; past ``/proc/sys/fs/pipe-max-size`` only with
    ``CAP_SYS_RESOURCE``). Its ends are blocking: each process makes its
    own end non-blocking (``O_NONBLOCK`` is an end's, not the pipe's)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # EPERM past pipe-max-size unprivileged, ENOMEM: 64 KiB then
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, RECV_SIZE)
    return r, w


@final
class Sender:
    """Sends whole messages on the pipe end ``fd`` (non-blocking) in order,
    never blocking the caller."""

    __slots__ = ("_backlog", "_wake", "closed", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._backlog: deque[memoryview] = deque()
        self._wake = trio.Event()
        #: The peer is gone (a send failed): later messages are dropped;
        #: the receiving side sees the end and says so.
        self.closed = False

    @property
    def backlog(self) -> bool:
        """Messages wait for the pipe to take them."""
        return bool(self._backlog)

    def send(self, data: bytes, more: Buffer = b"") -> None:
        """Send ``data`` then ``more`` (a payload sent as it is, not joined
        to ``data`` first; copied only if the pipe does not take it all)."""
        if self.closed:
            return
        if self._backlog:
            self._backlog.append(memoryview(data))
            if more:
                self._backlog.append(memoryview(bytes(more)))
            return
        try:
            n = os.writev(self.fd, (data, more)) if more else os.write(self.fd, data)
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
                try:
                    await trio.lowlevel.wait_writable(self.fd)
                except trio.ClosedResourceError:  # the daemon ended it (HostProcess.close)
                    self.closed = True
                    self._backlog.clear()
                    break
                head = self._backlog[0]
                try:
                    n = os.write(self.fd, head)
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


def receive_now(fd: int, rx: Receiver, buf: bytearray, limit: int = 0) -> list[Message] | None:
    """The whole messages the data on the pipe end ``fd`` (non-blocking)
    completes, without waiting (none if there is no data yet); ``None`` at
    the end of the stream (the peer closed or died). ``buf`` is scratch
    space (``RECV_SIZE`` bytes, reused): a fresh ``read(RECV_SIZE)`` would
    have malloc map and unmap 256 KiB for every message, which cost more
    than the rest of a round trip. ``limit``: as ``split``'s.

    Raises:
        ProtocolError: the peer sent something malformed.
    """
    try:
        n = os.readv(fd, (buf,))
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
    return split(rx, buf, n, limit)


def split(rx: Receiver, buf: bytearray, n: int, limit: int = 0) -> list[Message]:
    """The whole messages ``buf[:n]``, just received, completes (none, one
    or more), when it is not one whole message alone (``Receiver.whole``,
    which the caller tried first). With a ``limit``, at most that many,
    then ``MORE`` if there may be more (``more`` takes them; ``buf`` may be
    reused meanwhile): a read of 256 KiB holds 29,000 empty messages, which
    took the daemon's thread 30 ms to parse in one go."""
    with memoryview(buf) as view:
        rx.feed(view[:n])
    if limit:
        return more(rx, limit)
    out = []
    while (m := rx.next_message()) is not None:
        out.append(m)
    return out


def more(rx: Receiver, limit: int) -> list[Message]:
    """Up to ``limit`` whole messages ``rx`` holds, then ``MORE`` if there
    may be more (what is left copied out of the caller's buffer).

    Raises:
        ProtocolError: the peer sent something malformed.
    """
    out = []
    while (m := rx.next_message()) is not None:
        out.append(m)
        if len(out) >= limit:
            rx.detach()
            out.append(MORE)
            break
    return out


async def receive(fd: int, rx: Receiver, buf: bytearray) -> list[Message] | None:
    """Wait for whole messages on the pipe end ``fd`` (``receive_now``'s,
    never an empty list); ``None`` at the end of the stream.

    Raises:
        ProtocolError: the peer sent something malformed.
    """
    while True:
        await trio.lowlevel.wait_readable(fd)
        msgs = receive_now(fd, rx, buf)
        if msgs is None or msgs:
            return msgs
