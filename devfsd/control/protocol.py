"""The control protocol: framing, requests and replies. Sans-I/O.

Pure: no socket, no trio. A message is a 4-byte big-endian length followed
by that many bytes of UTF-8 JSON holding one object. Requests are
``{"op": NAME, ...arguments}``; replies are ``{"ok": true, "result": ...}``
or ``{"ok": false, "errno": N, "error": TEXT}``.

``Framer`` takes bytes as they arrive and hands back whole messages, as
h11's connection does: ``feed(data)`` then ``next_message()`` until it
returns ``None``. Anything malformed raises ``ProtocolError`` carrying the
errno of the error reply to send (``EMSGSIZE``, ``EBADMSG``, ``EINVAL``).
"""

from __future__ import annotations

import errno
import json
import struct
from typing import TYPE_CHECKING, Any, Final, final

from devfsd.errors import ControlError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MAX_MESSAGE",
    "OPS",
    "Framer",
    "ProtocolError",
    "decode_reply",
    "encode",
    "encode_reply",
    "error_reply",
    "ok_reply",
    "parse_request",
]

#: Largest message either side accepts (bytes of JSON).
MAX_MESSAGE: Final = 1 << 20
_HEADER: Final = struct.Struct(">I")

#: Each operation and the argument names (with types) it takes.
OPS: Final[Mapping[str, Mapping[str, tuple[type, ...]]]] = {
    "ping": {},
    "modload": {"module": (str,), "props": (dict, type(None))},
    "modunload": {"module": (str,)},
    "modstat": {"module": (str, type(None))},
    "drivers": {},
    "ioctl": {"path": (str,), "cmd": (int,), "data": (str,)},
    "status": {},
}


class ProtocolError(ControlError):
    """A malformed message; ``errno`` is what the error reply carries."""


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
    """Splits a byte stream into JSON objects."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

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
            raise ProtocolError(errno.EMSGSIZE, f"message of {n} bytes exceeds {MAX_MESSAGE}")
        if len(self._buf) < _HEADER.size + n:
            return None
        body = bytes(self._buf[_HEADER.size : _HEADER.size + n])
        del self._buf[: _HEADER.size + n]
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ProtocolError(errno.EBADMSG, "message is not UTF-8 JSON") from None
        if not isinstance(obj, dict):
            raise ProtocolError(errno.EBADMSG, "message is not a JSON object")
        return obj


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


def error_reply(err: int, text: str) -> dict[str, Any]:
    return {"ok": False, "errno": err, "error": text}


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
        return _raise(err, text if isinstance(text, str) else None)
    raise ControlError(errno.EBADMSG, "malformed reply from devfsd")


def _raise(err: int, text: str | None) -> Any:
    raise ControlError(err, text)
