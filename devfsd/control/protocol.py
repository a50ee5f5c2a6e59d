"""The control protocol: framing, requests and replies. Sans-I/O.

Pure: no socket, no trio. A message is a 4-byte big-endian length followed
by that many bytes of UTF-8 JSON holding one object. Requests are
``{"op": NAME, ...arguments}``; replies are ``{"ok": true, "result": ...}``
or ``{"ok": false, "errno": N, "error": TEXT}``; an error that explains a
refusal to the user (module code that fails the trust rule) also carries
``"why": TEXT``, which the tools print (``Explained``).

``Framer`` takes bytes as they arrive and hands back whole messages, as
h11's connection does: ``feed(data)`` then ``next_message()`` until it
returns ``None``. Anything malformed raises ``ProtocolError`` carrying the
errno of the error reply to send (``EMSGSIZE``, ``EBADMSG``, ``EINVAL``).

Limits (the daemon reads from anyone in the control group):

- A message is at most ``MAX_MESSAGE`` bytes of JSON; a longer length is
  ``EMSGSIZE``, and as its bytes cannot be skipped safely the framing is
  lost: ``FramingError``, after which the connection must end.
- Arrays and objects nest at most ``MAX_DEPTH`` deep; deeper is
  ``EBADMSG`` (not a ``RecursionError``). The message has been consumed,
  so the connection may go on.
- Bytes held but not yet a message: each ``Framer`` given a ``BufferPool``
  may hold ``FREE_PER_CONNECTION`` bytes of its own, and beyond that draws
  on the pool, shared by every connection (``MAX_BUFFERED``); a ``feed``
  that would overdraw it is ``ENOBUFS`` (a ``FramingError``: the bytes are
  not taken). ``close()`` gives back what a ``Framer`` held.

Streams. An op in ``STREAM_OPS`` (``trace``) asks for a stream of items
instead of one result. Its messages, in order::

    {"ok": false, "errno": N, "error": TEXT}       refused: no stream; the
                                                  connection goes on as after
                                                  any request
    {"ok": true, "result": START}                 started; then
    {"items": [ITEM, ...], "dropped": N}          any number of these: N is
                                                  how many items were lost
                                                  since the last one (the
                                                  client read too slowly)
    {"end": true, "result": SUMMARY}              the last; the daemon closes

Once a stream has started the client sends nothing more. To end it early
it shuts down its sending side (``shutdown(SHUT_WR)``): the daemon stops
collecting, sends what it holds and the end message, and closes; closing
the connection outright ends it too, without the end. A connection closed
by the daemon before the end means the daemon went away. The daemon side
of a stream never waits for the client to collect an item: it holds a
bounded number and counts the rest as dropped.

``StreamReader`` is the client's side, as ``Framer`` is both sides':
``next_event(msg)`` turns each message into ``StreamStarted``,
``StreamItems`` or ``StreamEnded`` and checks their order. ``trace`` items
are ``devfsd.trace.TraceEvent`` as JSON arrays (``decode_trace_event``);
its ``START`` is ``{"dev": N|null, "major": N|null, "buffer": N}`` and its
``SUMMARY`` ``{"seen": N, "dropped": N}``.
"""

from __future__ import annotations

import errno
import json
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeGuard, final

from devfsd.errors import ControlError
from devfsd.trace import CALLS, TraceEvent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "FREE_PER_CONNECTION",
    "MAX_BUFFERED",
    "MAX_DEPTH",
    "MAX_MESSAGE",
    "OPS",
    "STREAM_OPS",
    "BufferPool",
    "Explained",
    "Framer",
    "FramingError",
    "ProtocolError",
    "StreamEnded",
    "StreamItems",
    "StreamReader",
    "StreamStarted",
    "decode_reply",
    "decode_trace_event",
    "encode",
    "encode_reply",
    "error_reply",
    "ok_reply",
    "parse_request",
    "stream_end",
    "stream_items",
]

#: Largest message either side accepts (bytes of JSON).
MAX_MESSAGE: Final = 1 << 20
#: Deepest nesting of arrays and objects in a message.
MAX_DEPTH: Final = 32
#: Bytes a connection may hold without drawing on the shared pool.
FREE_PER_CONNECTION: Final = 4096
#: Bytes beyond that all of a pool's connections together may hold.
MAX_BUFFERED: Final = 16 << 20
_HEADER: Final = struct.Struct(">I")

#: Each operation and the argument names (with types) it takes.
OPS: Final[Mapping[str, Mapping[str, tuple[type, ...]]]] = {
    "ping": {},
    "modload": {"module": (str,), "props": (dict, type(None)), "isolated": (bool, type(None))},
    "modunload": {"module": (str,)},
    "modstat": {"module": (str, type(None))},
    "drivers": {},
    "ioctl": {"path": (str,), "cmd": (int,), "data": (str,)},
    "status": {},
    "trace": {
        "path": (str, type(None)),
        "driver": (str, type(None)),
        "buffer": (int, type(None)),
        "count": (int, type(None)),
    },
}
#: The ops answered with a stream (module docstring), not one reply.
STREAM_OPS: Final = frozenset({"trace"})


class ProtocolError(ControlError):
    """A malformed message; ``errno`` is what the error reply carries."""


class FramingError(ProtocolError):
    """A ``ProtocolError`` after which the byte stream cannot be read on."""


@final
class BufferPool:
    """The bytes that ``Framer``s sharing it hold past their own allowance."""

    __slots__ = ("free", "limit", "peak", "used")

    def __init__(self, limit: int = MAX_BUFFERED, free: int = FREE_PER_CONNECTION) -> None:
        self.limit = limit
        #: Bytes each connection holds before it draws on the pool.
        self.free = free
        #: Bytes drawn now.
        self.used = 0
        #: The most drawn since ``peak`` was last reset (by its owner).
        self.peak = 0


def encode(obj: Mapping[str, Any]) -> bytes:
    """One message: the length header and the JSON body.

    Raises:
        ProtocolError: ``EMSGSIZE`` if the body exceeds ``MAX_MESSAGE``.
    """
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_MESSAGE:
        raise ProtocolError(errno.EMSGSIZE, "message too long")
    return _HEADER.pack(len(body)) + body


def encode_reply(reply: Mapping[str, Any]) -> bytes:
    """A reply as one message, whatever it holds: never raises.

    A reply too big to send becomes its ``EMSGSIZE`` error, and one holding
    text UTF-8 cannot carry (a lone surrogate, sent as JSON ``"\\udc80"``
    and echoed back in an error) becomes ``EILSEQ``.
    """
    try:
        return encode(reply)
    except ProtocolError as exc:
        return encode(error_reply(exc.errno, str(exc)))
    except UnicodeEncodeError:
        return encode(error_reply(errno.EILSEQ, "reply text is not valid Unicode"))


@final
class Framer:
    """Splits a byte stream into JSON objects.

    Args:
        pool: where bytes past ``FREE_PER_CONNECTION`` are drawn from
            (``None``: no limit but ``MAX_MESSAGE``).
    """

    __slots__ = ("_buf", "_drawn", "pool")

    def __init__(self, pool: BufferPool | None = None) -> None:
        self._buf = bytearray()
        self.pool = pool
        self._drawn = 0

    def feed(self, data: bytes) -> None:
        """Take ``data``.

        Raises:
            FramingError: ``ENOBUFS`` if the pool cannot cover it (not taken).
        """
        if self.pool is not None:
            self._draw(len(self._buf) + len(data))
        self._buf += data

    def _draw(self, held: int) -> None:
        pool = self.pool
        assert pool is not None
        want = max(0, held - pool.free)
        more = want - self._drawn
        if more > 0 and pool.used + more > pool.limit:
            raise FramingError(errno.ENOBUFS, "control connections hold too many bytes; try again")
        pool.used += more
        pool.peak = max(pool.peak, pool.used)
        self._drawn = want

    def close(self) -> None:
        """Drop what is held and give the pool back its share."""
        if self.pool is not None:
            self.pool.used -= self._drawn
        self._drawn = 0
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held that are not yet a whole message."""
        return len(self._buf)

    def next_message(self) -> dict[str, Any] | None:
        """The next whole message, or ``None`` if more bytes are needed.

        Raises:
            ProtocolError: ``EMSGSIZE`` (length over ``MAX_MESSAGE``),
                ``EBADMSG`` (not UTF-8 JSON, or not an object).
        """
        if len(self._buf) < _HEADER.size:
            return None
        (n,) = _HEADER.unpack_from(self._buf)
        if n > MAX_MESSAGE:
            raise FramingError(errno.EMSGSIZE, f"message of {n} bytes exceeds {MAX_MESSAGE}")
        if len(self._buf) < _HEADER.size + n:
            return None
        body = bytes(self._buf[_HEADER.size : _HEADER.size + n])
        del self._buf[: _HEADER.size + n]
        if self.pool is not None:
            self._draw(len(self._buf))  # gives back; never raises
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError(errno.EBADMSG, "message is not UTF-8 JSON") from None
        except RecursionError:
            obj = None  # deeper than the interpreter goes: too deep
        if _too_deep(body, obj):
            raise ProtocolError(errno.EBADMSG, f"message nests deeper than {MAX_DEPTH}")
        if not isinstance(obj, dict):
            raise ProtocolError(errno.EBADMSG, "message is not a JSON object")
        return obj


def _too_deep(body: bytes, obj: object) -> bool:
    """Whether ``obj``, parsed from ``body`` (``None``: it could not be),
    nests arrays and objects deeper than ``MAX_DEPTH``."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return False  # cannot be: the common case, no walk
    if obj is None:
        return True
    todo: list[tuple[object, int]] = [(obj, 1)]
    while todo:
        o, depth = todo.pop()
        if isinstance(o, dict):
            inner: Iterable[object] = o.values()
        elif isinstance(o, list):
            inner = o
        else:
            continue
        if depth > MAX_DEPTH:
            return True
        todo.extend((v, depth + 1) for v in inner)
    return False


def parse_request(msg: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Check a request against ``OPS``.

    Returns:
        (op, arguments); missing optional (None-able) arguments are None.

    Raises:
        ProtocolError: ``EOPNOTSUPP`` for an unknown op, ``EINVAL`` for a
            missing, extra or mistyped argument.
    """
    op = msg.get("op")
    if not isinstance(op, str):
        raise ProtocolError(errno.EINVAL, "request has no op")
    spec = OPS.get(op)
    if spec is None:
        raise ProtocolError(errno.EOPNOTSUPP, f"unknown op {op[:64]!r}")
    extra = set(msg) - set(spec) - {"op"}
    if extra:
        raise ProtocolError(errno.EINVAL, f"{op}: unexpected argument {sorted(extra)[0][:64]!r}")
    args: dict[str, Any] = {}
    for name, types in spec.items():
        if name not in msg:
            if type(None) in types:
                args[name] = None
                continue
            raise ProtocolError(errno.EINVAL, f"{op}: missing argument {name!r}")
        v = msg[name]
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            raise ProtocolError(errno.EINVAL, f"{op}: argument {name!r} has the wrong type")
        args[name] = v
    return op, args


def ok_reply(result: Any = None) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error_reply(err: int, text: str, why: str | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"ok": False, "errno": err, "error": text}
    if why is not None:
        reply["why"] = why
    return reply


class Explained(ControlError):
    """An error reply that says why, in one line the user should see (``why``)."""

    def __init__(self, err: int, text: str | None, why: str) -> None:
        super().__init__(err, text)
        self.why = why


def decode_reply(msg: Mapping[str, Any]) -> Any:
    """The result of a reply.

    Raises:
        ControlError: the reply's errno and text; ``EBADMSG`` if malformed.
    """
    if msg.get("ok") is True:
        return msg.get("result")
    err = msg.get("errno")
    if msg.get("ok") is False and isinstance(err, int) and not isinstance(err, bool) and err > 0:
        text = msg.get("error")
        why = msg.get("why")
        if isinstance(why, str) and why and "\n" not in why:
            raise Explained(err, text if isinstance(text, str) else None, why)
        return _raise(err, text if isinstance(text, str) else None)
    raise ControlError(errno.EBADMSG, "malformed reply from devfsd")


def _raise(err: int, text: str | None) -> Any:
    raise ControlError(err, text)


# -- streams -------------------------------------------------------------------


def stream_items(items: list[Any], dropped: int) -> dict[str, Any]:
    """A stream's items message; ``dropped`` items were lost before these."""
    return {"items": items, "dropped": dropped}


def stream_end(result: Any = None) -> dict[str, Any]:
    """A stream's last message."""
    return {"end": True, "result": result}


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStarted:
    """The stream's first reply: what it streams."""

    result: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamItems:
    """Items, after ``dropped`` more were lost."""

    items: list[Any]
    dropped: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamEnded:
    """The last message: the daemon closes the connection after it."""

    result: Any


StreamEvent = StreamStarted | StreamItems | StreamEnded


def _count(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@final
class StreamReader:
    """The client's side of one stream: messages in, events out, in order."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        #: ``"start"`` (awaiting the reply), ``"items"``, ``"ended"``.
        self.state = "start"

    def next_event(self, msg: Mapping[str, Any]) -> StreamEvent:
        """What ``msg``, the next message of the stream, says.

        Raises:
            ControlError: the daemon's refusal (its errno and text), or
                ``EBADMSG`` for a malformed message or one out of order
                (items before the reply, anything after the end).
        """
        if self.state == "start":
            result = decode_reply(msg)  # raises the refusal
            self.state = "items"
            return StreamStarted(result=result)
        if self.state == "items":
            items, dropped = msg.get("items"), msg.get("dropped")
            if msg.keys() == {"items", "dropped"} and isinstance(items, list) and _count(dropped):
                return StreamItems(items=items, dropped=dropped)
            if msg.keys() == {"end", "result"} and msg["end"] is True:
                self.state = "ended"
                return StreamEnded(result=msg["result"])
            raise ProtocolError(errno.EBADMSG, "malformed stream message")
        raise ProtocolError(errno.EBADMSG, "message after the end of the stream")


def decode_trace_event(item: Any) -> TraceEvent:
    """A ``trace`` stream item as a ``TraceEvent``.

    Raises:
        ProtocolError: ``EBADMSG`` unless ``item`` is an array of the eight
            fields, integers but ``call``, one of ``CALLS``.
    """
    if isinstance(item, list) and len(item) == len(TraceEvent._fields):
        ints = item[:3] + item[4:]
        if item[3] in CALLS and all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            return TraceEvent(*item)
    raise ProtocolError(errno.EBADMSG, "malformed trace event")
