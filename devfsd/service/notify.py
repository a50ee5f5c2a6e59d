"""The sd_notify(3) protocol: tell a supervisor how the daemon is doing.

systemd starts a ``Type=notify`` service with ``$NOTIFY_SOCKET`` naming an
``AF_UNIX`` datagram socket, a path or, with a leading ``@``, a name in the
abstract namespace. Each datagram is newline-separated ``KEY=value``
assignments: ``READY=1`` when the service serves, ``STATUS=...`` for
``systemctl status``, ``STOPPING=1`` when it begins to stop, ``MAINPID=N``
for the process to watch. Nothing is ever answered, and a lost datagram
only delays systemd's view, so sending never raises: an error is logged
once.

``message`` is pure; ``Notifier`` sends. No library: the protocol is one
``sendto``, and the well-kept library (python-systemd) needs libsystemd.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Final, final

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["ENV_NOTIFY", "Notifier", "address", "message"]

log = logging.getLogger(__name__)

ENV_NOTIFY: Final = "NOTIFY_SOCKET"


def message(**fields: str | int) -> bytes:
    """``KEY=value`` lines for ``fields`` in order (``ready=1`` is ``READY=1``).

    A value's newlines become spaces: one assignment is one line.
    """
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key.upper()}={text}\n")
    return "".join(lines).encode("utf-8", "replace")


def address(text: str) -> str | bytes | None:
    """The socket address ``$NOTIFY_SOCKET`` names; ``None`` if unusable.

    ``/path`` is a path, ``@name`` an abstract name; anything else (empty,
    relative, ``vsock:``) is not for devfsd.
    """
    if text.startswith("/"):
        return text
    if text.startswith("@") and len(text) > 1:
        return b"\0" + text[1:].encode()
    return None


@final
class Notifier:
    """Sends notifications to the socket ``$NOTIFY_SOCKET`` named at creation.

    ``from_environ`` removes the variable, so that nothing the daemon starts
    (fusermount3, a driver's helper) notifies in its name.
    """

    def __init__(self, addr: str | bytes | None) -> None:
        self.addr: str | bytes = addr or ""
        self.sock: socket.socket | None = None
        if addr is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] = os.environ) -> Notifier:
        text = environ.pop(ENV_NOTIFY, "")
        addr = address(text)
        if text and addr is None:
            log.warning("%s=%s: not a path or an abstract socket name; not notifying", ENV_NOTIFY, text)
        return cls(addr)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, **fields: str | int) -> None:
        """Send one datagram with ``fields``; nothing without a socket."""
        if self.sock is None:
            return
        try:
            self.sock.sendto(message(**fields), self.addr)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("notify %r: %s", self.addr, exc)

    def ready(self, status: str) -> None:
        self.send(ready=1, mainpid=os.getpid(), status=status)

    def status(self, status: str) -> None:
        self.send(status=status)

    def stopping(self, status: str) -> None:
        self.send(stopping=1, status=status)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
