"""The control socket server: a trio accept loop around ``ControlApi``.

Touches the world. The socket is created with its final mode (0600, or 0660
with a control group) by binding under a restrictive umask, so there is no
moment when others may connect. Every connection's peer is checked with
``SO_PEERCRED``: root, or a member of the control group, else one ``EPERM``
reply and close. A connection may send several requests; a malformed one
gets an error reply and the connection is closed (its framing is lost); a
client silent for ``IDLE_TIMEOUT`` seconds is dropped; at most
``MAX_CONNECTIONS`` are served at once, others are closed at once.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd.cdevsw._switch import Lwp
from devfsd.control.protocol import Framer, ProtocolError, encode, error_reply, ok_reply, parse_request
from devfsd.errors import DevfsdError
from devfsd.kern.sockets import bind_unix_listener

if TYPE_CHECKING:
    from devfsd.control.api import ControlApi

__all__ = ["ControlServer", "bind_control_socket"]

log = logging.getLogger(__name__)

IDLE_TIMEOUT: Final = 30.0
MAX_CONNECTIONS: Final = 512
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

    def __init__(self, api: ControlApi, sock: socket.socket, gid: int | None = None) -> None:
        self.api = api
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.gid = gid
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                conn, _ = await self.sock.accept()
                if self.connections >= MAX_CONNECTIONS:
                    conn.close()
                    continue
                self.connections += 1
                nursery.start_soon(self._serve_one, conn)

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
        data = encode(msg)
        while data:
            n = await conn.send(data)
            data = data[n:]

    async def _serve_one(self, conn: trio.socket.SocketType) -> None:
        try:
            with conn:
                peer = self._peer(conn)
                with trio.move_on_after(IDLE_TIMEOUT):
                    if peer is None:
                        await self._send(conn, error_reply(errno.EPERM, os.strerror(errno.EPERM)))
                        return
                    await self._loop(conn, peer)
        except OSError as exc:
            log.debug("control connection: %s", exc)
        finally:
            self.connections -= 1

    async def _loop(self, conn: trio.socket.SocketType, peer: Lwp) -> None:
        framer = Framer()
        while True:
            try:
                msg = framer.next_message()
            except ProtocolError as exc:
                await self._send(conn, error_reply(exc.errno, str(exc)))
                return
            if msg is None:
                data = await conn.recv(65536)
                if not data:
                    return
                framer.feed(data)
                continue
            await self._send(conn, await self.handle(msg, peer))

    async def handle(self, msg: dict[str, Any], peer: Lwp) -> dict[str, Any]:
        """Run one request; always returns a reply."""
        try:
            op, args = parse_request(msg)
            result = await getattr(self.api, op)(peer, **args)
        except DevfsdError as exc:
            return error_reply(exc.errno, str(exc))
        except Exception:
            log.exception("control request %r failed", msg.get("op"))
            return error_reply(errno.EIO, os.strerror(errno.EIO))
        return ok_reply(result)
