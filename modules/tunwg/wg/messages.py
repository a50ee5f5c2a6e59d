"""The four WireGuard messages: frozen records, ``pack()`` and one ``parse()``.

Pure; imports only ``struct``, ``dataclasses`` and ``typing``. Layouts are
the whitepaper's section 5.4 (reference section 2), little-endian, with the
type as one u32 so that nonzero "reserved" bytes make an unknown type:

    initiation   148  type sender ephemeral[32] static[48] timestamp[28] mac1 mac2
    response      92  type sender receiver ephemeral[32] empty[16] mac1 mac2
    cookie reply  64  type receiver nonce[24] cookie[32]
    transport   >=32  type receiver counter(u64) packet[...]+tag[16]

``parse(datagram)`` returns one of the records or raises ``MessageError``,
and nothing else, for any bytes at all (a hypothesis test holds it to
that, as h11's fuzzer does). ``MessageError`` is also the base of every
"drop this datagram" error of the package (``HandshakeError``,
``CookieError``, ``TransportError``), so the Device catches one class,
counts and logs it, and never lets remote input raise further.

The data path need not build a ``Transport`` per packet:
``transport_receiver(datagram)`` checks type and size and returns the
receiver index, and ``Keypair.decrypt`` takes the datagram as it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, final

from .constants import (
    COOKIE_NONCE_SIZE,
    KEY_SIZE,
    MAC_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_COOKIE_REPLY_SIZE,
    MESSAGE_COOKIE_REPLY_TYPE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_INITIATION_TYPE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_RESPONSE_TYPE,
    MESSAGE_TRANSPORT_MIN_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    TAG_SIZE,
    TIMESTAMP_SIZE,
)

if TYPE_CHECKING:
    from cryptography.utils import Buffer

__all__ = [
    "ZERO_MAC",
    "CookieReply",
    "Initiation",
    "Message",
    "MessageError",
    "Response",
    "Transport",
    "parse",
    "transport_receiver",
]

ZERO_MAC: Final = bytes(MAC_SIZE)
_U32_MAX: Final = 0xFFFFFFFF
_U64_MAX: Final = 0xFFFFFFFFFFFFFFFF

_INITIATION: Final = struct.Struct(f"<II{KEY_SIZE}s{KEY_SIZE + TAG_SIZE}s{TIMESTAMP_SIZE + TAG_SIZE}s16s16s")
_RESPONSE: Final = struct.Struct(f"<III{KEY_SIZE}s{TAG_SIZE}s16s16s")
_COOKIE_REPLY: Final = struct.Struct(f"<II{COOKIE_NONCE_SIZE}s{MAC_SIZE + TAG_SIZE}s")
TRANSPORT_HEADER: Final = struct.Struct("<IIQ")  # type, receiver, counter
_TYPE: Final = struct.Struct("<I")

assert _INITIATION.size == MESSAGE_INITIATION_SIZE
assert _RESPONSE.size == MESSAGE_RESPONSE_SIZE
assert _COOKIE_REPLY.size == MESSAGE_COOKIE_REPLY_SIZE


class MessageError(Exception):
    """A datagram is dropped: malformed here, or failed a check in a subclass's module.

    ``str()`` is a short reason for the debug log.
    """


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, not {len(value)}")


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{name} must be a u32")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Initiation:
    """Handshake initiation (type 1, 148 bytes)."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = ZERO_MAC
    mac2: bytes = ZERO_MAC

    def __post_init__(self) -> None:
        _check_u32("sender", self.sender)
        _check_len("ephemeral", self.ephemeral, KEY_SIZE)
        _check_len("encrypted_static", self.encrypted_static, KEY_SIZE + TAG_SIZE)
        _check_len("encrypted_timestamp", self.encrypted_timestamp, TIMESTAMP_SIZE + TAG_SIZE)
        _check_len("mac1", self.mac1, MAC_SIZE)
        _check_len("mac2", self.mac2, MAC_SIZE)

    def pack(self) -> bytes:
        """The 148 wire bytes."""
        return _INITIATION.pack(
            MESSAGE_INITIATION_TYPE,
            self.sender,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """Handshake response (type 2, 92 bytes)."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = ZERO_MAC
    mac2: bytes = ZERO_MAC

    def __post_init__(self) -> None:
        _check_u32("sender", self.sender)
        _check_u32("receiver", self.receiver)
        _check_len("ephemeral", self.ephemeral, KEY_SIZE)
        _check_len("encrypted_nothing", self.encrypted_nothing, TAG_SIZE)
        _check_len("mac1", self.mac1, MAC_SIZE)
        _check_len("mac2", self.mac2, MAC_SIZE)

    def pack(self) -> bytes:
        """The 92 wire bytes."""
        return _RESPONSE.pack(
            MESSAGE_RESPONSE_TYPE,
            self.sender,
            self.receiver,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CookieReply:
    """Cookie reply (type 3, 64 bytes); ``receiver`` is the triggering message's sender."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    def __post_init__(self) -> None:
        _check_u32("receiver", self.receiver)
        _check_len("nonce", self.nonce, COOKIE_NONCE_SIZE)
        _check_len("encrypted_cookie", self.encrypted_cookie, MAC_SIZE + TAG_SIZE)

    def pack(self) -> bytes:
        """The 64 wire bytes."""
        return _COOKIE_REPLY.pack(MESSAGE_COOKIE_REPLY_TYPE, self.receiver, self.nonce, self.encrypted_cookie)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Transport:
    """Transport data (type 4, >= 32 bytes); ``encrypted_packet`` includes the tag.

    For tests and tools; the data path uses ``Keypair.encrypt``/``decrypt``
    on raw bytes instead of building one of these per packet.
    """

    receiver: int
    counter: int
    encrypted_packet: bytes

    def __post_init__(self) -> None:
        _check_u32("receiver", self.receiver)
        if not 0 <= self.counter <= _U64_MAX:
            raise ValueError("counter must be a u64")
        if not TAG_SIZE <= len(self.encrypted_packet) <= MAX_MESSAGE_SIZE - TRANSPORT_HEADER.size:
            raise ValueError("encrypted_packet must be 16..65519 bytes")

    def pack(self) -> bytes:
        """The wire bytes: 16-byte header, then the encrypted packet."""
        header = TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT_TYPE, self.receiver, self.counter)
        return header + self.encrypted_packet


Message: TypeAlias = Initiation | Response | CookieReply | Transport


def parse(datagram: Buffer) -> Message:
    """Parse one UDP payload into its message.

    Args:
        datagram: the bytes received (any bytes-like object).
    Returns:
        An ``Initiation``, ``Response``, ``CookieReply`` or ``Transport``.
    Raises:
        MessageError: shorter than 32 bytes, unknown type (which includes
        nonzero reserved bytes), a handshake or cookie message not of its
        exact size, or longer than 65535 bytes. Never anything else.
    """
    n = len(datagram)
    if n < MESSAGE_TRANSPORT_MIN_SIZE:
        raise MessageError(f"short datagram ({n} bytes)")
    if n > MAX_MESSAGE_SIZE:
        raise MessageError(f"long datagram ({n} bytes)")
    (kind,) = _TYPE.unpack_from(datagram)
    if kind == MESSAGE_TRANSPORT_TYPE:
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(datagram)
        return Transport(
            receiver=receiver, counter=counter, encrypted_packet=bytes(datagram[TRANSPORT_HEADER.size :])
        )
    if kind == MESSAGE_INITIATION_TYPE:
        _check_size("initiation", n, MESSAGE_INITIATION_SIZE)
        _, sender, eph, static, ts, mac1, mac2 = _INITIATION.unpack_from(datagram)
        return Initiation(
            sender=sender,
            ephemeral=eph,
            encrypted_static=static,
            encrypted_timestamp=ts,
            mac1=mac1,
            mac2=mac2,
        )
    if kind == MESSAGE_RESPONSE_TYPE:
        _check_size("response", n, MESSAGE_RESPONSE_SIZE)
        _, sender, receiver, eph, empty, mac1, mac2 = _RESPONSE.unpack_from(datagram)
        return Response(
            sender=sender, receiver=receiver, ephemeral=eph, encrypted_nothing=empty, mac1=mac1, mac2=mac2
        )
    if kind == MESSAGE_COOKIE_REPLY_TYPE:
        _check_size("cookie reply", n, MESSAGE_COOKIE_REPLY_SIZE)
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack_from(datagram)
        return CookieReply(receiver=receiver, nonce=nonce, encrypted_cookie=cookie)
    raise MessageError(f"unknown message type {kind:#x}")


def transport_receiver(datagram: Buffer) -> int:
    """The data path's parse: check a transport message's type and size, return its receiver.

    Raises:
        MessageError: not a transport message of 32..65535 bytes.
    """
    n = len(datagram)
    if not MESSAGE_TRANSPORT_MIN_SIZE <= n <= MAX_MESSAGE_SIZE:
        raise MessageError(f"bad transport size ({n} bytes)")
    kind, receiver, _ = TRANSPORT_HEADER.unpack_from(datagram)
    if kind != MESSAGE_TRANSPORT_TYPE:
        raise MessageError(f"not a transport message (type {kind:#x})")
    return int(receiver)


def _check_size(name: str, n: int, size: int) -> None:
    if n != size:
        raise MessageError(f"{name} of {n} bytes, not {size}")
