"""A blocking control-socket client, for the tools and tests.

Touches the world (a Unix socket). One request per call; each call opens a
connection, so a client is cheap and holds nothing between calls.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import socket
from typing import Any, Final, final

from devfsd.control import resolve_path
from devfsd.control.protocol import Framer, decode_reply, encode
from devfsd.errors import ControlError

__all__ = ["Client", "Unreachable"]

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

    def modload(self, module: str, props: dict[str, str | int | bool] | None = None) -> None:
        """Load a module by name or path (``modload``)."""
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
        """The daemon's mountpoint, pid, sleepers and open files."""
        result: dict[str, Any] = self.call("status")
        return result
