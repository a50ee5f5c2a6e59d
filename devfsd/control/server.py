"""The control socket server: a trio accept loop around ``ControlApi``.

Touches the world. The socket is created with its final mode (0600, or 0660
with a control group) by binding under a restrictive umask, so there is no
moment when others may connect. Every connection's peer is checked with
``SO_PEERCRED``: root, or a member of the control group, else one ``EPERM``
reply and close. A connection may send several requests; a malformed one
gets an error reply, after which the connection goes on if the message
could be skipped whole (not JSON, nested deeper than ``MAX_DEPTH``, a bad
request) and is closed if not (a length over ``MAX_MESSAGE``: its framing
is lost). Bytes of unfinished requests are bounded per connection and in
total (``BufferPool``; protocol.py, Limits): a connection that would hold
more is sent ``ENOBUFS`` and closed, and once they are all gone the memory
goes back to the system (``TRIM_AFTER``). A
client that takes longer than ``idle`` seconds (``IDLE_TIMEOUT``, devfsd
``--control-idle``) to send a whole request, or to read its reply, is dropped:
the clock restarts after each reply and stops while a request runs, so a
slow modload is never cut short but a silent or trickling client is; at most
``MAX_CONNECTIONS`` are served at once. A client that connects when all
are taken pushes out the one that has waited longest for a request from
its client (so silent clients cannot lock others out until their idle
time runs out); only if every connection is running a request or a stream
is the newcomer closed at once.

A stream op (``trace``; protocol.py, Streams) takes the connection over:
after its first reply the daemon sends items as they come, with no idle
limit, and closes the connection at the end. Items never wait for the
client: ``push`` fills a bounded buffer that one task per stream drains
into the socket, so a client that reads slowly, or not at all, costs
dropped items and one blocked send, never a slower daemon. A second task
reads the connection only to see the client hang up, which ends the stream
and detaches its tracer.

A request's client that goes while the request runs cancels it
(``watch_hangup``): a modload whose INIT never ends holds the loader's lock
only as long as its modload(8) waits. Gone means the peer closed its end
(``POLLHUP``, or ``POLLERR`` for a close with our replies unread; its
process exited, or was killed by ^C): the connection is watched by an
epoll instance of its own that asks for no event, so only those two wake
it. A client that only half-closed (``shutdown(SHUT_WR)``) still waits for
its reply and is not gone; the bytes of a request it sends meanwhile stay
in the socket, unread, for the next turn of the loop (nothing to bound,
nothing that wakes the watcher again). The request ends as trio
cancellation ends it: the loader undoes a load cut short in INIT and keeps a
module whose FINI was cut short (kern/loader.py); what must not stop half
way (a state write, undoing a failed load) is synchronous or shielded
there. The daemon logs each request so cancelled and sends no reply. The
watch costs a request that waits one descriptor while it waits (at most
``MAX_CONNECTIONS`` more; none for one that ends at its first step, as
ping and modstat do); with none to be had, the request runs unwatched.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
import struct
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd.cdevsw._switch import Lwp
from devfsd.contain import contain
from devfsd.control.protocol import (
    STREAM_OPS,
    BufferPool,
    Framer,
    FramingError,
    ProtocolError,
    encode_reply,
    error_reply,
    ok_reply,
    parse_request,
    stream_end,
    stream_items,
)
from devfsd.errors import DevfsdError
from devfsd.kern.memory import release_free_memory
from devfsd.kern.sockets import bind_unix_listener
from devfsd.kern.trust import Untrusted

if TYPE_CHECKING:
    from devfsd.control.api import ControlApi

__all__ = ["ControlServer", "bind_control_socket", "watch_hangup"]

log = logging.getLogger(__name__)

IDLE_TIMEOUT: Final = 30.0
MAX_CONNECTIONS: Final = 512
#: Bytes asked of one recv(2).
RECV_SIZE: Final = 65536
#: Pool bytes held at once (``BufferPool.peak``) past which the last
#: connection to let go gives the freed memory back (``release_free_memory``).
TRIM_AFTER: Final = 1 << 20
#: Seconds to wait after accept(2) fails (out of descriptors) before retrying.
ACCEPT_RETRY: Final = 0.1
_UCRED: Final = struct.Struct("3i")


def bind_control_socket(path: str, gid: int | None = None) -> socket.socket:
    """Make the listening control socket at ``path``: 0600, or 0660 with ``gid``.

    Raises:
        OSError: ``EADDRINUSE`` if a live daemon serves it, or what failed.
    """
    return bind_unix_listener(path, 0o660 if gid is not None else 0o600, gid=gid)


@final
class ControlServer:
    """Serves ``api`` on a bound listening socket."""

    def __init__(
        self,
        api: ControlApi,
        sock: socket.socket,
        gid: int | None = None,
        *,
        idle: float | None = IDLE_TIMEOUT,
    ) -> None:
        self.api = api
        #: Seconds a connection may stay open without finishing a request
        #: (``None``: no limit).
        self.idle = idle
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.gid = gid
        self.connections = 0
        #: Bytes held in unfinished requests, over every connection.
        self.pool = BufferPool()
        #: Connections waiting for their client's next request, oldest
        #: first, each with the scope that ends it.
        self._waiting: dict[trio.socket.SocketType, trio.CancelScope] = {}
        #: The scope of each request in flight (``stop_requests``).
        self._requests: set[trio.CancelScope] = set()
        self._stopping = False
        self._drained = trio.Event()

    async def stop_requests(self, timeout: float) -> None:
        """At shutdown: cancel every request in flight, each answered
        ``ECANCELED`` (and every later one); return once they have ended,
        or after ``timeout`` (a driver's wait that trio cannot cancel)."""
        self._stopping = True
        for scope in self._requests:
            scope.cancel()
        if self._requests:
            with trio.move_on_after(timeout):
                await self._drained.wait()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    conn, _ = await self.sock.accept()
                except OSError as exc:
                    # EMFILE/ENFILE/ENOBUFS: out of descriptors or memory for
                    # now. Raising would end the daemon; wait and retry.
                    log.warning("control accept: %s", exc)
                    await trio.sleep(ACCEPT_RETRY)
                    continue
                if self.connections >= MAX_CONNECTIONS and not self._evict():
                    conn.close()
                    continue
                self.connections += 1
                nursery.start_soon(self._serve_one, conn)

    def _evict(self) -> bool:
        """End the connection that has waited longest for its client; ``False`` if none waits."""
        if not self._waiting:
            return False
        conn = next(iter(self._waiting))
        self._waiting.pop(conn).cancel()
        log.debug("control connections all taken: the longest idle one is dropped")
        return True

    def _peer(self, conn: trio.socket.SocketType) -> Lwp | None:
        pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid == 0:
            return Lwp(pid, uid, gid)
        if self.gid is not None:
            try:
                with open(f"/proc/{pid}/status", "rb") as f:
                    for line in f:
                        if line.startswith(b"Groups:"):
                            if self.gid in {int(g) for g in line.split()[1:]} or gid == self.gid:
                                return Lwp(pid, uid, gid)
                            break
            except OSError:
                return None
        return None

    async def _send(self, conn: trio.socket.SocketType, msg: dict[str, Any]) -> None:
        data = encode_reply(msg)
        while data:
            n = await conn.send(data)
            data = data[n:]

    async def _serve_one(self, conn: trio.socket.SocketType) -> None:
        framer = Framer(self.pool)
        try:
            with conn:
                peer = self._peer(conn)
                with trio.move_on_after(self._idle()) as cs:
                    if peer is None:
                        await self._send(conn, error_reply(errno.EPERM, os.strerror(errno.EPERM)))
                        return
                    await self._loop(conn, peer, cs, framer)
                if cs.cancelled_caught and trio.current_time() >= cs.deadline:
                    log.debug("control connection idle for %s s: dropped", self.idle)
        except OSError as exc:
            log.debug("control connection: %s", exc)
        except BaseException as exc:
            # A bug here must cost one connection, never the daemon (its
            # own cancellation and SIGINT go on: devfsd.contain).
            contain(exc, "control connection")
        finally:
            self.connections -= 1
            framer.close()
            self._trim()

    def _trim(self) -> None:
        """Once no connection holds pool bytes, after a peak past
        ``TRIM_AFTER``, hand the freed heap back to the system: Python and
        glibc keep it otherwise (issue 13: 232 MB stayed)."""
        if self.pool.used == 0 and self.pool.peak > TRIM_AFTER:
            self.pool.peak = 0
            release_free_memory()

    def _idle(self) -> float:
        return self.idle if self.idle is not None else math.inf

    async def _loop(
        self, conn: trio.socket.SocketType, peer: Lwp, cs: trio.CancelScope, framer: Framer
    ) -> None:
        while True:
            try:
                msg = framer.next_message()
                if msg is None:
                    self._waiting[conn] = cs
                    try:
                        data = await conn.recv(RECV_SIZE)
                    finally:
                        self._waiting.pop(conn, None)
                    if not data:
                        return
                    framer.feed(data)
                    continue
            except ProtocolError as exc:
                await self._send(conn, error_reply(exc.errno, str(exc)))
                if isinstance(exc, FramingError):
                    return  # the stream cannot be read on
                continue  # the bad message was consumed whole
            cs.deadline = math.inf  # a request may take its time (modload)
            op = msg.get("op")
            if isinstance(op, str) and op in STREAM_OPS:  # a list is unhashable
                if await self._stream(conn, msg, peer):
                    return  # a stream ends its connection
                cs.deadline = trio.current_time() + self._idle()
                continue  # refused, and said so
            reply = await self._handle_watched(conn, msg, peer)
            if reply is None:
                return  # cancelled: no one is left to read a reply
            cs.deadline = trio.current_time() + self._idle()
            await self._send(conn, reply)

    def _ended(self, request: trio.CancelScope) -> None:
        self._requests.discard(request)
        if self._stopping and not self._requests:
            self._drained.set()

    async def _handle_watched(
        self, conn: trio.socket.SocketType, msg: dict[str, Any], peer: Lwp
    ) -> dict[str, Any] | None:
        """``handle``, cancelled if the client goes meanwhile (``None`` then)
        or the daemon stops (``ECANCELED``)."""
        if self._stopping:
            return error_reply(errno.ECANCELED, "devfsd is stopping")
        gone = False
        with trio.CancelScope() as request:

            async def watch() -> None:
                nonlocal gone
                if await watch_hangup(conn):
                    gone = True
                    request.cancel()

            self._requests.add(request)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    reply = await self.handle(msg, peer)
                    nursery.cancel_scope.cancel()
                    return reply
            finally:
                self._ended(request)
        # Only the watcher and stop_requests cancel that scope, and then
        # handle() did not return.
        op = msg.get("op")
        what = repr(str(op)[:64]) + (f" of {str(msg['module'])[:256]!r}" if "module" in msg else "")
        if not gone:  # stop_requests
            log.warning("control request %s (pid %d) cancelled: devfsd is stopping", what, peer.pid)
            return error_reply(errno.ECANCELED, "devfsd is stopping")
        log.warning("control request %s (pid %d) cancelled: its client went", what, peer.pid)
        return None

    async def handle(self, msg: dict[str, Any], peer: Lwp) -> dict[str, Any]:
        """Run one request; always returns a reply."""
        try:
            op, args = parse_request(msg)
            if op in STREAM_OPS:
                raise ProtocolError(errno.EINVAL, f"{op}: a stream, not a request")
            result = await getattr(self.api, op)(peer, **args)
        except DevfsdError as exc:
            return error_reply(exc.errno, str(exc), why=str(exc) if isinstance(exc, Untrusted) else None)
        except BaseException as exc:
            # Any bug (or a driver's BaseException that got this far) costs
            # one request; the daemon's own cancellation and SIGINT go on.
            err = contain(exc, f"control request {str(msg.get('op'))[:64]!r}")
            return error_reply(err.errno, os.strerror(err.errno))
        return ok_reply(result)

    async def _stream(self, conn: trio.socket.SocketType, msg: dict[str, Any], peer: Lwp) -> bool:
        """Serve a ``trace`` stream; ``False`` if it was refused (and said so).

        Returns once the stream has ended: its count reached, or the client
        gone (also mid-send: that ``OSError`` ends the stream here).
        """
        try:
            op, args = parse_request(msg)
            assert op == "trace", op  # the one stream op so far
            tracer = await self.api.trace(peer, **args)
        except DevfsdError as exc:
            await self._send(conn, error_reply(exc.errno, str(exc)))
            return False
        lot = trio.lowlevel.ParkingLot()
        tracer.on_ready = lot.unpark_all
        hung_up = False

        async def watch() -> None:
            # The client sends nothing during a stream; its EOF (or reset)
            # is the end. Anything it sends is discarded.
            nonlocal hung_up
            try:
                while await conn.recv(4096):
                    pass
            except OSError:
                pass
            hung_up = True
            lot.unpark_all()

        async with trio.open_nursery() as nursery:
            try:
                # Attached before the reply, so that every call made after
                # the client has it is seen.
                with self.api.tracing(tracer):
                    start = {"dev": tracer.dev, "major": tracer.major, "buffer": tracer.buffer}
                    await self._send(conn, ok_reply(start))
                    nursery.start_soon(watch)
                    while not (hung_up or tracer.done):
                        if tracer.pending:
                            await self._send(conn, stream_items(*tracer.take()))
                        else:
                            await lot.park()
                while tracer.pending:
                    await self._send(conn, stream_items(*tracer.take()))
                await self._send(conn, stream_end({"seen": tracer.seen, "dropped": tracer.total_dropped}))
            except OSError as exc:
                # Caught here, not in _serve_one: raised in a nursery's body
                # it would leave as an ExceptionGroup.
                log.debug("trace stream: %s", exc)
            finally:
                nursery.cancel_scope.cancel()
        return True


async def watch_hangup(conn: trio.socket.SocketType) -> bool:
    """Wait until the peer of ``conn`` (a connected ``AF_UNIX`` stream) has
    closed its end; ``True`` then. ``False`` at once if no epoll instance
    can be had (out of descriptors or memory): the request then runs
    unwatched, as before.

    Only ``EPOLLHUP``/``EPOLLERR`` wake it (asked for no event, epoll
    reports those two alone): neither the client's bytes nor its
    ``shutdown(SHUT_WR)``, so it never spins and never reads.
    """
    # A request that ended at its first step (ping, modstat) has cancelled
    # this already: no epoll for it.
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        ep = select.epoll(1)
    except OSError as exc:
        log.debug("control connection not watched for its client's end: %s", exc)
        return False
    try:
        try:
            ep.register(conn.fileno(), 0)
        except OSError as exc:
            log.debug("control connection not watched for its client's end: %s", exc)
            return False
        while True:
            await trio.lowlevel.wait_readable(ep.fileno())
            if ep.poll(0):
                return True
    finally:
        trio.lowlevel.notify_closing(ep.fileno())
        ep.close()
