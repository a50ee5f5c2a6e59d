"""A blocking control-socket client, for the tools and tests.

Touches the world (a Unix socket). One request per call; each call opens a
connection, so a client is cheap and holds nothing between calls. A stream
(``trace``) holds its own connection: ``Stream``.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any, Final, final

from devfsd.control import resolve_path
from devfsd.control.protocol import (
    Framer,
    StreamEnded,
    StreamItems,
    StreamReader,
    StreamStarted,
    decode_reply,
    encode,
)
from devfsd.errors import ControlError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Client", "Stream", "Unreachable"]

#: Seconds a request may take before the client gives up (ETIMEDOUT).
DEFAULT_TIMEOUT: Final = 60.0


class Unreachable(ControlError):
    """The daemon could not be reached: connect, send, receive, time-out or hang-up.

    Tools name the socket, not their argument, in the message for it.
    """


@final
class Client:
    """Talks to one devfsd.

    Args:
        path: the control socket (``None``: ``resolve_path()``).
        timeout: seconds to wait for a reply.

    Every method raises ``ControlError`` with the daemon's errno, or with the
    connection's (``ENOENT``/``ECONNREFUSED`` when no daemon listens,
    ``EACCES`` when the socket is not ours to use).
    """

    def __init__(self, path: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = resolve_path(path)
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> Any:
        """Send one request and return its result."""
        try:
            req = encode({"op": op, **args})
        except UnicodeEncodeError:
            raise ControlError(errno.EILSEQ) from None
        framer = Framer()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(self.timeout)
                s.connect(self.path)
                # The daemon may answer before reading (EPERM): read that.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(req)

                while True:
                    data = s.recv(65536)
                    if not data:
                        raise Unreachable(errno.ECONNRESET, "devfsd closed the connection")
                    framer.feed(data)
                    msg = framer.next_message()
                    if msg is not None:
                        return decode_reply(msg)
        except TimeoutError:
            raise Unreachable(errno.ETIMEDOUT) from None
        except ControlError:
            raise
        except OSError as exc:
            raise Unreachable(exc.errno or errno.EIO) from None

    def ping(self) -> None:
        self.call("ping")

    def stream(self, op: str, **args: Any) -> Stream:
        """Start a stream op (protocol.py, Streams); returns once it has started.

        Raises:
            ControlError: the daemon's refusal, or ``Unreachable``.
        """
        try:
            req = encode({"op": op, **args})
        except UnicodeEncodeError:
            raise ControlError(errno.EILSEQ) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(req)
            except TimeoutError:
                raise Unreachable(errno.ETIMEDOUT) from None
            except OSError as exc:
                raise Unreachable(exc.errno or errno.EIO) from None
            stream = Stream(sock)
            stream.timeout = self.timeout
            started = stream.next_event()
            assert isinstance(started, StreamStarted)  # StreamReader's order
            stream.result = started.result
            stream.timeout = None
        except BaseException:
            sock.close()
            raise
        return stream

    def trace(
        self,
        path: str | None = None,
        driver: str | None = None,
        buffer: int | None = None,
        count: int | None = None,
    ) -> Stream:
        """Trace the calls reaching the node at ``path``, or every node of ``driver``.

        Args:
            path: the node, as seen by the daemon (absolute, on its mount).
            driver: a driver name (its major), instead of ``path``.
            buffer: events the daemon holds for this tracer before dropping.
            count: end the stream after this many events.

        Returns:
            The stream; its items are ``devfsd.trace.TraceEvent`` arrays
            (``devfsd.control.protocol.decode_trace_event``).
        """
        return self.stream("trace", path=path, driver=driver, buffer=buffer, count=count)

    def modload(
        self, module: str, props: dict[str, str | int | bool] | None = None, *, isolated: bool = False
    ) -> None:
        """Load a module by name or path (``modload``); ``isolated``: in a
        host process of its own (``modload -I``)."""
        if isolated:
            self.call("modload", module=module, props=props or {}, isolated=True)
        else:
            self.call("modload", module=module, props=props or {})

    def modunload(self, module: str) -> None:
        """Unload a module by name (``modunload``)."""
        self.call("modunload", module=module)

    def modstat(self, module: str | None = None) -> dict[str, Any]:
        """Loaded modules.

        Returns:
            ``{"modules": [row, ...], "autoload": bool}``; each row has
            ``name class source flags refs size requires`` (requires a list).
            With ``module``, only that row (none if it is not loaded).
        """
        result: dict[str, Any] = self.call("modstat", module=module)
        return result

    def drivers(self) -> list[tuple[str, int, bool]]:
        """The name <-> major table: (name, major, attached) in major order."""
        return [(str(n), int(m), bool(a)) for n, m, a in self.call("drivers")]

    def ioctl(self, path: str, cmd: int, data: bytes = b"") -> bytes:
        """Call a node's ``d_ioctl`` (FUSE cannot carry ioctl(2)).

        Args:
            path: the node, as seen by the daemon (absolute, on its mount).
            cmd: the command (``devfsd.cdevsw.IOW`` and friends).
            data: the parameter bytes (padded or cut to the size in ``cmd``).

        Returns:
            The parameter bytes after the call (for ``IOR``/``IOWR``).
        """
        out = self.call("ioctl", path=path, cmd=cmd, data=base64.b64encode(data).decode())
        return base64.b64decode(str(out))

    def status(self) -> dict[str, Any]:
        """The daemon's mountpoint, pid, sleepers, open files and tracers."""
        result: dict[str, Any] = self.call("status")
        return result


@final
class Stream:
    """One started stream on its own connection; close it when done.

    ``result`` is the stream's start result. Iterating yields
    ``StreamItems`` and, last, ``StreamEnded``. ``timeout`` (seconds, or
    ``None`` to wait for ever) bounds each wait for a message.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.result: Any = None
        self.timeout: float | None = None
        self._framer = Framer()
        self._reader = StreamReader()

    def next_event(self) -> StreamStarted | StreamItems | StreamEnded:
        """The next message of the stream, waiting up to ``timeout`` for it.

        Raises:
            ControlError: malformed or out of order (``EBADMSG``), the
                refusal (first message only), or ``Unreachable``: the
                daemon closed the connection before the end
                (``ECONNRESET``), or ``ETIMEDOUT``.
        """
        while True:
            msg = self._framer.next_message()
            if msg is not None:
                return self._reader.next_event(msg)
            try:
                self.sock.settimeout(self.timeout)
                data = self.sock.recv(65536)
            except TimeoutError:
                raise Unreachable(errno.ETIMEDOUT) from None
            except OSError as exc:
                raise Unreachable(exc.errno or errno.EIO) from None
            if not data:
                raise Unreachable(errno.ECONNRESET, "devfsd closed the connection")
            self._framer.feed(data)

    def __iter__(self) -> Iterator[StreamItems | StreamEnded]:
        while self._reader.state != "ended":
            ev = self.next_event()
            assert not isinstance(ev, StreamStarted)
            yield ev

    def stop(self) -> None:
        """Ask the daemon to end the stream: it sends what it holds, then the end."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
