"""The module-host protocol: devfsd and an isolated module's host. Sans-I/O.

Pure: no socket, no trio, no os I/O. Both ends are this file: the daemon
(``devfsd.isolate.supervisor``) encodes requests and decodes replies, the
host (``devfsd.isolate.host``) the reverse. See docs/isolation.md.

Framing. Every message is a 9-byte header, ``<IBI``: the length of the body
that follows, the message ``Kind``, and a request id; then the body. Bodies
are fixed ``struct`` fields, then raw bytes (data, or UTF-8 JSON for the
two control messages ``LOAD`` and ``MODCMD``'s answer). Binary, not JSON:
a 1-byte read crosses the socket twice, and every microsecond here is one
the FUSE round trip pays.

Requests (daemon to host) each get exactly one ``REPLY`` with their id,
unless the host dies first; ``CANCEL`` and ``RELEASE`` get none. The host
sends ``NOTIFY`` with a poll token (in the id field) when a poll it was
asked to remember becomes ready (``selnotify``). A ``REPLY`` body is an
``<i`` errno (0: success) then the payload: for an error, optional UTF-8
text; for success, what the request kind returns (``reply_*`` below).

Shared memory. The daemon gives each host a buffer of ``SHM_SLOTS`` slots
of ``SHM_SLOT`` bytes (a sealed memfd both map), so that a large read's
data does not cross the socket twice. A ``READ`` of ``SHM_MIN`` bytes or
more may lend one: its body then ends with ``READ_SLOT`` (the slot's
number), and the host may answer ``REPLY_SHM`` (``SHM_REPLY``: how many
bytes it wrote at the start of the slot) instead of a ``REPLY`` with the
data. The slot is the host's until its reply (either kind) comes; the
daemon checks the count against the read's size, answers from the slot,
and lends it again once nothing holds that data.

The host is not trusted: ``Receiver`` refuses unknown kinds and bodies
past ``MAX_BODY`` with ``ProtocolError`` (the daemon then kills the host),
and every ``parse_*`` raises ``ProtocolError`` on a body of the wrong size
rather than ``struct.error``.
"""

from __future__ import annotations

import enum
import errno
import functools
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, final

from devfsd.errors import DevfsdError, DeviceError, printable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "HEADER",
    "MAX_BODY",
    "REPLY_HEAD",
    "IoctlArgs",
    "Kind",
    "Message",
    "OpenArgs",
    "ProtocolError",
    "Receiver",
    "decode_json",
    "encode",
    "encode_json",
    "error_reply",
    "fflag_to_open_flags",
    "parse_ioctl",
    "parse_open",
    "parse_reply",
    "printable",
    "reply",
    "reply_error",
    "reply_head",
    "unpack",
]

HEADER: Final = struct.Struct("<IBI")
#: Largest body either side accepts: a FUSE request carries at most 1 MiB,
#: the in-process-style harness a little more; a host that sends more is
#: broken or hostile.
MAX_BODY: Final = 4 << 20


class Kind(enum.IntEnum):
    """What a message is (the header's second field)."""

    #: Daemon to host, answered by ``REPLY``.
    LOAD = 1  # JSON: the module to load and how (``supervisor.Supervisor._load``)
    MODCMD = 2  # ``<B`` command (FINI, STAT, AUTOUNLOAD)
    OPEN = 3  # ``OpenArgs``
    CLOSE = 4  # ``<II`` file id, newest file id: the last close of its dev
    READ = 5  # ``<IIq`` file id, size, offset
    WRITE = 6  # ``<Iq`` file id, offset; then the data
    POLL = 7  # ``<IiI`` file id, events, poll token (the file id; 0: none)
    IOCTL = 8  # ``IoctlArgs``; then the data
    PING = 9  # empty: the host's loop answers (heartbeat)
    #: Daemon to host, no reply.
    CANCEL = 10  # the id is the request to cancel; empty body
    RELEASE = 11  # ``<I`` file id: a close that was not its dev's last
    #: Host to daemon.
    REPLY = 12  # ``<i`` errno, then the payload
    NOTIFY = 13  # the id is a poll token (a file id); empty body
    #: Daemon to host, no reply: the caller of request ``id`` has a signal
    #: (its FUSE request was interrupted); a sleep it is in ends with EINTR.
    INTERRUPT = 14
    #: Host to daemon: a ``READ``'s data is in the slot it lent (``SHM_REPLY``).
    REPLY_SHM = 15


_KINDS: Final = frozenset(int(k) for k in Kind)
_REPLY: Final = int(Kind.REPLY)
#: Messages up to this size are copied out of a receive buffer by slicing
#: it (two copies, but no view to make and release).
_SMALL: Final = 4096

OPEN: Final = struct.Struct("<QiiIII")
FID: Final = struct.Struct("<I")
CLOSE: Final = struct.Struct("<II")
READ: Final = struct.Struct("<IIq")
WRITE: Final = struct.Struct("<Iq")
POLL: Final = struct.Struct("<IiI")
IOCTL: Final = struct.Struct("<QIiiIII")
ERRNO: Final = struct.Struct("<i")
#: A ``REPLY``'s header and errno, packed at once (``reply_head``).
REPLY_HEAD: Final = struct.Struct("<IBIi")
COUNT: Final = struct.Struct("<I")
CMD: Final = struct.Struct("<B")
#: A ``POLL``'s reply: revents, and 1 if the driver kept the poll token
#: (``selrecord``): only then will a ``NOTIFY`` for it come.
POLLED: Final = struct.Struct("<ii")
#: After a ``READ``'s fields: the shared-memory slot it lends for its data.
READ_SLOT: Final = struct.Struct("<I")
#: A ``REPLY_SHM``'s body: the bytes of data at the start of the slot.
SHM_REPLY: Final = struct.Struct("<I")
#: The slots of a host's shared buffer, and their size: a FUSE read asks
#: 1 MiB at most.
SHM_SLOTS: Final = 8
SHM_SLOT: Final = 1 << 20
#: Reads asking fewer bytes than this take the socket (a small reply costs
#: less there than the slot's bookkeeping).
SHM_MIN: Final = 16 << 10

_O_RDONLY: Final = 0o0
_O_WRONLY: Final = 0o1
_O_RDWR: Final = 0o2


class ProtocolError(DevfsdError):
    """A malformed message from the other side (``EBADMSG``, ``EMSGSIZE``)."""


class Message(NamedTuple):
    """One whole message: its kind, id and body."""

    kind: int
    rid: int
    body: bytes


#: ``Message(kind, rid, body)`` made from a tuple in C, without the Python
#: ``__new__`` a named tuple runs (every message is one: on this VM each
#: distinct Python function a round trip runs costs about a microsecond).
_message: Callable[[tuple[int, int, bytes]], Message] = functools.partial(tuple.__new__, Message)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenArgs:
    """An ``OPEN``: ``d_open``'s arguments and the opener."""

    dev: int
    flag: int
    pid: int
    uid: int
    gid: int
    fid: int


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class IoctlArgs:
    """An ``IOCTL``: ``d_ioctl``'s arguments, the caller, its file (0: none)."""

    dev: int
    cmd: int
    flag: int
    pid: int
    uid: int
    gid: int
    fid: int
    data: bytes


def encode(kind: int, rid: int, body: bytes | bytearray | memoryview = b"") -> bytes:
    """One message.

    Raises:
        ProtocolError: ``EMSGSIZE`` for a body past ``MAX_BODY``.
    """
    n = len(body)
    if n > MAX_BODY:
        raise ProtocolError(errno.EMSGSIZE, f"message body of {n} bytes exceeds {MAX_BODY}")
    return HEADER.pack(n, kind, rid) + body


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_json(body: bytes | memoryview) -> Any:
    """A JSON body.

    Raises:
        ProtocolError: ``EBADMSG`` if it is not UTF-8 JSON.
    """
    try:
        return json.loads(bytes(body).decode())
    except (UnicodeDecodeError, ValueError, RecursionError):  # (nested deeper than the stack)
        raise ProtocolError(errno.EBADMSG, "message body is not UTF-8 JSON") from None


def parse_open(body: bytes) -> OpenArgs:
    dev, flag, pid, uid, gid, fid = _unpack(OPEN, body)
    return OpenArgs(dev=dev, flag=flag, pid=pid, uid=uid, gid=gid, fid=fid)


def parse_ioctl(body: bytes) -> IoctlArgs:
    if len(body) < IOCTL.size:
        raise ProtocolError(errno.EBADMSG, "short IOCTL message")
    dev, cmd, flag, pid, uid, gid, fid = IOCTL.unpack_from(body)
    return IoctlArgs(
        dev=dev, cmd=cmd, flag=flag, pid=pid, uid=uid, gid=gid, fid=fid, data=bytes(body[IOCTL.size :])
    )


def unpack(st: struct.Struct, body: bytes | memoryview) -> tuple[Any, ...]:
    """``st``'s fields at the start of ``body`` (which may hold more: data).

    Raises:
        ProtocolError: ``EBADMSG`` if ``body`` is shorter than ``st``.
    """
    if len(body) < st.size:
        raise ProtocolError(errno.EBADMSG, "short message")
    return st.unpack_from(body)


def _unpack(st: struct.Struct, body: bytes) -> tuple[Any, ...]:
    """``st``'s fields, which must be all of ``body``."""
    if len(body) != st.size:
        raise ProtocolError(errno.EBADMSG, "message of the wrong size")
    return st.unpack_from(body)


def reply(rid: int, err: int = 0, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """A ``REPLY``: ``err`` 0 and the payload, or an errno and optional text."""
    return encode(Kind.REPLY, rid, ERRNO.pack(err) + payload)


def reply_head(rid: int, size: int) -> bytes:
    """The start of a successful ``REPLY`` whose payload of ``size`` bytes
    is sent after it as it is (``reply(rid, 0, payload)`` without joining
    the two: a 128 KiB read's data is not copied for the header's sake).

    Raises:
        ProtocolError: ``EMSGSIZE`` for a payload past ``MAX_BODY``.
    """
    n = ERRNO.size + size
    if n > MAX_BODY:
        raise ProtocolError(errno.EMSGSIZE, f"message body of {n} bytes exceeds {MAX_BODY}")
    return REPLY_HEAD.pack(n, _REPLY, rid, 0)


def error_reply(rid: int, exc: DevfsdError) -> bytes:
    """A ``REPLY`` carrying ``exc``'s errno and, if it has one, its text."""
    return reply(rid, exc.errno, exc.msg.encode(errors="replace") if exc.msg else b"")


def parse_reply(body: bytes) -> tuple[int, memoryview]:
    """A ``REPLY``'s errno and payload (a view of ``body``, not a copy).

    Raises:
        ProtocolError: ``EBADMSG`` for a short body or a negative errno.
    """
    if len(body) < ERRNO.size:
        raise ProtocolError(errno.EBADMSG, "short REPLY")
    (err,) = ERRNO.unpack_from(body)
    if err < 0:
        raise ProtocolError(errno.EBADMSG, "negative errno in REPLY")
    return err, memoryview(body)[ERRNO.size :]


def reply_error(err: int, payload: bytes | memoryview) -> DeviceError:
    """The exception a failed ``REPLY`` stands for (text cut to 200 bytes,
    and ``printable``)."""
    text = printable(bytes(payload[:200]).decode(errors="replace")) or None
    return DeviceError(err, text)


def fflag_to_open_flags(fflag: int, nonblock: int) -> int:
    """NetBSD ``FREAD|FWRITE`` (and ``nonblock``, ``FNONBLOCK``) back to
    open(2) flags, for the host's ``SpecFs.open``."""
    acc = fflag & 0x3
    flags = {0x1: _O_RDONLY, 0x2: _O_WRONLY, 0x3: _O_RDWR}.get(acc, _O_RDONLY)
    return flags | (fflag & nonblock)


@final
class Receiver:
    """Splits the bytes from the other side into ``Message``\\ s.

    ``feed(data)``, then ``next_message()`` until it returns ``None``; only
    then may ``data`` change (the caller's receive buffer, reused): whole
    messages are taken from ``data`` itself, and only a message it holds
    part of is kept (copied) for the next ``feed``. Bodies are copies
    (``bytes``), made once: a view would pin the buffer.
    """

    __slots__ = ("_buf", "_pos", "_view")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        #: The fed data, parsed in place while nothing was kept before it.
        self._view: memoryview | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._keep()
        if self._buf:
            self._buf += data
        else:
            self._view = memoryview(data).cast("B")

    def _keep(self) -> None:
        """Copy what is left of the fed data (part of a message) to ``_buf``."""
        view = self._view
        if view is not None:
            self._view = None
            self._buf = bytearray(view[self._pos :])
            self._pos = 0
            view.release()
        elif self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def whole(self, data: bytearray, n: int) -> Message | None:
        """``data[:n]`` as one message, when it is exactly one whole message
        of a known kind and nothing is held from before (the usual case: a
        request, or its reply, alone in one ``recv``); else ``None``, and
        ``data`` is to be fed as usual. Takes nothing from ``data`` (it is
        read, not kept): one copy of the body, no view, no parse loop."""
        if n < HEADER.size or self._view is not None or self._buf:
            return None
        size, kind, rid = HEADER.unpack_from(data)
        if size + HEADER.size != n or kind not in _KINDS:
            return None
        if n <= _SMALL:
            return _message((kind, rid, bytes(data[HEADER.size : n])))
        with memoryview(data) as view:  # one copy, not two
            return _message((kind, rid, bytes(view[HEADER.size : n])))

    def detach(self) -> None:
        """Copy what is left of the fed data, so that the caller may reuse
        it before ``next_message`` has returned ``None`` (a caller that takes
        a limited number of messages at a time)."""
        if self._view is not None:
            self._keep()

    @property
    def pending(self) -> int:
        """Bytes held that are not yet a whole message."""
        if self._view is not None:
            return len(self._view) - self._pos
        return len(self._buf) - self._pos

    def next_message(self) -> Message | None:
        """The next whole message, or ``None`` if more bytes are needed.

        Raises:
            ProtocolError: ``EMSGSIZE`` (body past ``MAX_BODY``),
                ``EBADMSG`` (unknown kind). The stream cannot go on after it.
        """
        buf: bytearray | memoryview = self._view if self._view is not None else self._buf
        pos = self._pos
        if len(buf) - pos < HEADER.size:
            self._keep()
            return None
        n, kind, rid = HEADER.unpack_from(buf, pos)
        if n > MAX_BODY:
            raise ProtocolError(errno.EMSGSIZE, f"message body of {n} bytes exceeds {MAX_BODY}")
        if kind not in _KINDS:
            raise ProtocolError(errno.EBADMSG, f"unknown message kind {kind}")
        start = pos + HEADER.size
        end = start + n
        if len(buf) < end:
            self._keep()
            return None
        self._pos = end
        if self._view is not None:
            return _message((kind, rid, bytes(self._view[start:end])))
        with memoryview(self._buf) as view:
            return _message((kind, rid, bytes(view[start:end])))
