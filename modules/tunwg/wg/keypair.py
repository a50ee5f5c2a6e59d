"""A session's transport keys: encrypt and decrypt data messages (whitepaper 5.4.6).

Pure; imports ``struct``, ``cryptography``'s ChaCha20-Poly1305 and this
package, no clock: ``now`` comes in. After wireguard-go's
``device/keypair.go`` and the transport halves of ``send.go`` and
``receive.go``.

This is the data path, run once per packet, so it is written for speed
and says so: one ``ChaCha20Poly1305`` object per direction built once
(setup costs about as much as sealing a small packet), precompiled
``Struct`` objects for header and nonce, no record built per packet, and
raw datagram bytes in and out. The plain version of ``encrypt`` is
``Transport(receiver=..., counter=..., encrypted_packet=AEAD(key, counter,
packet, None)).pack()``; a test checks that they agree.

What stays with the caller (the Peer layer): choosing the keypair slot,
padding (``pad``), trimming the decrypted packet to its IP length and
checking its source against allowed IPs, counting bytes, and deciding to
rekey (``needs_rekey_sending``/``needs_rekey_receiving`` answer the
question, the timers act on it).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final, final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import (
    MESSAGE_TRANSPORT_MIN_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_AFTER_TIME_RECEIVING,
)
from .messages import TRANSPORT_HEADER, MessageError
from .replay import ReplayFilter

if TYPE_CHECKING:
    from .handshake import SessionKeys

__all__ = ["Keypair", "TransportError", "pad", "padding_size"]

_NONCE: Final = struct.Struct("<4xQ")  # 4 zero bytes || LE u64 counter
_HEADER_SIZE: Final = TRANSPORT_HEADER.size
_ZEROS: Final = bytes(PADDING_MULTIPLE)


class TransportError(MessageError):
    """A data message cannot be sent or is refused; ``str()`` says why."""


def padding_size(size: int, mtu: int) -> int:
    """How many zero bytes follow a packet of ``size`` bytes (wireguard-go ``calculatePaddingSize``).

    Pad up to a multiple of 16 but not past the MTU; a packet longer than
    the MTU is padded as its last MTU-sized unit would be. MTU 0 means
    no limit.

    Args:
        size: the IP packet's length (0 for a keepalive).
        mtu: the interface MTU (``DEFAULT_MTU``), or 0.
    Returns:
        0..15.
    """
    last = size
    if mtu == 0:
        return -last % PADDING_MULTIPLE
    if last > mtu:
        last %= mtu
    padded = min(last + (-last % PADDING_MULTIPLE), mtu)
    return padded - last


def pad(packet: bytes, mtu: int) -> bytes:
    """``packet`` followed by ``padding_size(len(packet), mtu)`` zero bytes (84 B -> 96 B at MTU 1420)."""
    n = padding_size(len(packet), mtu)
    return packet + _ZEROS[:n] if n else packet


@final
class Keypair:
    """One session's keys, counters and replay window (wireguard-go ``Keypair``).

    Args:
        send_key: 32-byte transport key we encrypt with.
        receive_key: 32-byte transport key the peer encrypts with.
        local_index: our index; the peer puts it in the messages it sends us.
        remote_index: the peer's index; we put it in the messages we send.
        is_initiator: we sent the initiation of this session (only then do
            time-based rekeys apply).
        created: monotonic seconds when the session began.
    """

    __slots__ = (
        "_open",
        "_seal",
        "created",
        "is_initiator",
        "local_index",
        "remote_index",
        "replay_filter",
        "send_counter",
    )

    def __init__(
        self,
        *,
        send_key: bytes,
        receive_key: bytes,
        local_index: int,
        remote_index: int,
        is_initiator: bool,
        created: float,
    ) -> None:
        self._seal = ChaCha20Poly1305(send_key).encrypt
        self._open = ChaCha20Poly1305(receive_key).decrypt
        self.local_index: Final = local_index
        self.remote_index: Final = remote_index
        self.is_initiator: Final = is_initiator
        self.created: Final = created
        self.send_counter = 0  # the next counter to send with (wireguard-go sendNonce)
        self.replay_filter: Final = ReplayFilter()

    @classmethod
    def from_session(cls, keys: SessionKeys, *, now: float) -> Keypair:
        """The keypair of a finished handshake (``Handshake.begin_session``), created ``now``."""
        return cls(
            send_key=keys.send_key,
            receive_key=keys.receive_key,
            local_index=keys.local_index,
            remote_index=keys.remote_index,
            is_initiator=keys.is_initiator,
            created=now,
        )

    def __repr__(self) -> str:
        role = "initiator" if self.is_initiator else "responder"
        return (
            f"<Keypair {role} local={self.local_index} remote={self.remote_index} sent={self.send_counter}>"
        )

    def expired(self, now: float) -> bool:
        """True once REJECT_AFTER_TIME (180 s) has passed: send no more with it.

        (``decrypt`` refuses only past 180 s, as wireguard-go.)
        """
        return now - self.created >= REJECT_AFTER_TIME

    def needs_rekey_sending(self, now: float, rekey_after_time: float = REKEY_AFTER_TIME) -> bool:
        """After sending: counter past REKEY_AFTER_MESSAGES, or we initiated it over 120 s
        (``rekey_after_time``, shortened only by tests) ago."""
        return self.send_counter > REKEY_AFTER_MESSAGES or (
            self.is_initiator and now - self.created > rekey_after_time
        )

    def needs_rekey_receiving(self, now: float) -> bool:
        """After receiving data: we initiated it over 165 s ago (the "last minute" rekey)."""
        return self.is_initiator and now - self.created > REKEY_AFTER_TIME_RECEIVING

    def encrypt(self, packet: bytes, *, now: float) -> bytes:
        """Seal one (padded) packet as a transport message with the next counter.

        Args:
            packet: the plaintext; ``pad(packet, mtu)`` first, ``b""`` for a keepalive.
            now: monotonic seconds.
        Returns:
            The transport message: header (type 4, remote index, counter),
            ciphertext, tag; ``len(packet) + 32`` bytes.
        Raises:
            TransportError: the counter reached REJECT_AFTER_MESSAGES or the
            keypair is 180 s old; caller must stage the packet and initiate
            a handshake. The counter does not move.
        """
        counter = self.send_counter
        if counter >= REJECT_AFTER_MESSAGES:
            raise TransportError("transport: keypair exhausted its counters")
        if now - self.created >= REJECT_AFTER_TIME:
            raise TransportError("transport: keypair expired")
        self.send_counter = counter + 1
        # msg.counter := N_send; msg.packet := AEAD(T_send, N_send, P, e)
        return TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT_TYPE, self.remote_index, counter) + self._seal(
            _NONCE.pack(counter), packet, None
        )

    def decrypt(self, datagram: bytes, *, now: float) -> bytes:
        """Open a transport message sent to this keypair.

        Order as wireguard-go: age, authenticate, then the replay window
        (so a forged counter never moves it).

        Args:
            datagram: the whole UDP payload. Caller must have found this
                keypair by its receiver index (``messages.transport_receiver``).
            now: monotonic seconds.
        Returns:
            The padded plaintext (empty for a keepalive); caller trims it
            to the IP header's length.
        Raises:
            TransportError: too short, not type 4 or not for our index
            (the header is not authenticated), keypair 180 s old, the
            tag does not authenticate, or the counter was seen before, is
            too far behind, or is at or past REJECT_AFTER_MESSAGES.
        """
        if len(datagram) < MESSAGE_TRANSPORT_MIN_SIZE:
            raise TransportError("transport: short message")
        kind, receiver, counter = TRANSPORT_HEADER.unpack_from(datagram)
        if kind != MESSAGE_TRANSPORT_TYPE or receiver != self.local_index:
            raise TransportError("transport: not a transport message for this keypair")
        if now - self.created > REJECT_AFTER_TIME:
            raise TransportError("transport: keypair expired")
        try:
            plaintext = self._open(_NONCE.pack(counter), datagram[_HEADER_SIZE:], None)
        except InvalidTag:
            raise TransportError("transport: does not authenticate") from None
        if not self.replay_filter.validate_counter(counter, REJECT_AFTER_MESSAGES):
            raise TransportError(f"transport: replayed counter {counter}")
        return plaintext
