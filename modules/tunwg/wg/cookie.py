"""mac1/mac2, cookies and cookie replies (whitepaper 5.3, 5.4.4, 5.4.7), and the rate limiter.

Pure; imports ``hmac`` (``compare_digest`` only), ``ipaddress`` and this
package, no clock or socket: ``now`` (monotonic seconds) and ``rng`` come
in as arguments. After wireguard-go's ``device/cookie.go`` and
``ratelimiter/ratelimiter.go``.

Two sides. The *checker* (one per device, keyed by our own public key)
verifies mac1 on every handshake message, and mac2 when the Device is
under load; a bad mac2 under load gets a cookie reply instead of a
handshake. The *generator* (one per peer, keyed by the peer's public key)
fills mac1 and, while it holds a fresh cookie from that peer, mac2 on each
handshake message we send, and remembers the last mac1 so it can accept
the cookie reply that answers it.

Messages are raw bytes here, since the macs cover the bytes before them:
mac1 is the 16 bytes at ``len - 32``, mac2 the last 16.

``RateLimiter`` is the per-source-IP token bucket the Device applies to
initiations that passed mac2 under load: 20 a second, burst 5, a new
source starts with 4 left; idle sources are forgotten after 1 s.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
from typing import TYPE_CHECKING, Final, final

from .constants import (
    COOKIE_NONCE_SIZE,
    COOKIE_REFRESH_TIME,
    KEY_SIZE,
    LABEL_COOKIE,
    LABEL_MAC1,
    MAC_SIZE,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE_SIZE,
    RATELIMIT_GC_TIME,
    RATELIMIT_PACKETS_BURSTABLE,
    RATELIMIT_PACKETS_PER_SECOND,
)
from .crypto import HASH, MAC, XAEAD, CryptoError, xaead_open
from .messages import CookieReply, MessageError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CookieChecker",
    "CookieError",
    "CookieGenerator",
    "RateLimiter",
    "address_bytes",
    "cookie_key",
    "cookie_source",
    "mac1_key",
]

_PORT: Final = struct.Struct("<H")


class CookieError(MessageError):
    """A cookie reply is refused; ``str()`` says why."""


def mac1_key(public_key: bytes) -> bytes:
    """``HASH(LABEL_MAC1 || public_key)``: the key of mac1 on messages *to* that key's owner."""
    return HASH(LABEL_MAC1 + public_key)


def cookie_key(public_key: bytes) -> bytes:
    """``HASH(LABEL_COOKIE || public_key)``: the XAEAD key of cookie replies *from* that key's owner."""
    return HASH(LABEL_COOKIE + public_key)


def address_bytes(host: str) -> bytes:
    """The packed IP address of ``host`` (IPv4-mapped IPv6 unmapped to 4 bytes).

    The rate limiter's key, as wireguard-go's ``ip.To4()`` / ``To16()``.

    Raises:
        ValueError: ``host`` is not a numeric IPv4 or IPv6 address.
    """
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed


def cookie_source(host: str, port: int) -> bytes:
    """What a cookie is bound to: packed IP || little-endian port (wireguard-go's form).

    Only the responder that made the cookie checks it, so any stable form
    would do; this is wireguard-go's ``AddrPort.MarshalBinary``.

    Raises:
        ValueError: bad address, or port outside 0..65535.
    """
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port must be 0..65535")
    return address_bytes(host) + _PORT.pack(port)


def _mac_offsets(msg: bytes) -> tuple[int, int]:
    n = len(msg)
    if n not in (MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE):
        raise ValueError(f"not a handshake message ({n} bytes)")
    return n - 2 * MAC_SIZE, n - MAC_SIZE


@final
class CookieChecker:
    """Responder side of mac1/mac2, one per device (wireguard-go ``CookieChecker``).

    The cookie secret is drawn lazily, when a reply needs it and the old
    one is older than 120 s; while it is unset or stale, every mac2 is
    invalid, as in wireguard-go.

    Args:
        public_key: our own static public key. Make a new checker when it changes.
    """

    __slots__ = ("_cookie_key", "_mac1_key", "_secret", "_secret_set")

    def __init__(self, public_key: bytes) -> None:
        self._mac1_key = mac1_key(public_key)
        self._cookie_key = cookie_key(public_key)
        self._secret = bytes(KEY_SIZE)
        self._secret_set: float | None = None

    def check_mac1(self, msg: bytes) -> bool:
        """True if the initiation or response ``msg`` carries a valid mac1 for us.

        Raises:
            ValueError: ``msg`` is not 148 or 92 bytes (caller must parse first).
        """
        smac1, smac2 = _mac_offsets(msg)
        return hmac.compare_digest(MAC(self._mac1_key, msg[:smac1]), msg[smac1:smac2])

    def _fresh(self, now: float) -> bool:
        return self._secret_set is not None and now - self._secret_set <= COOKIE_REFRESH_TIME

    def _cookie(self, source: bytes) -> bytes:
        return MAC(self._secret, source)

    def check_mac2(self, msg: bytes, source: bytes, *, now: float) -> bool:
        """True if ``msg`` carries a valid mac2 made with the cookie we would give ``source``.

        Args:
            msg: an initiation or response (mac1 already checked).
            source: ``cookie_source(host, port)`` of the datagram's sender.
            now: monotonic seconds.
        Returns:
            False also while the secret is unset or older than 120 s.
        Raises:
            ValueError: ``msg`` is not 148 or 92 bytes.
        """
        _, smac2 = _mac_offsets(msg)
        if not self._fresh(now):
            return False
        return hmac.compare_digest(MAC(self._cookie(source), msg[:smac2]), msg[smac2:])

    def create_reply(
        self, msg: bytes, receiver: int, source: bytes, *, now: float, rng: Callable[[int], bytes]
    ) -> bytes:
        """A cookie reply for ``msg``, which came from ``source`` while we are under load.

        Renews the secret first if it is unset or older than 120 s.

        Args:
            msg: the initiation or response to answer (its mac1 is the AD).
            receiver: that message's sender index.
            source: ``cookie_source(host, port)`` of its sender.
            now: monotonic seconds.
            rng: ``rng(n) -> bytes``, for the nonce (and a new secret).
        Returns:
            The 64-byte cookie reply.
        Raises:
            ValueError: ``msg`` is not 148 or 92 bytes.
        """
        smac1, smac2 = _mac_offsets(msg)
        if not self._fresh(now):
            self._secret = rng(KEY_SIZE)
            self._secret_set = now
        nonce = rng(COOKIE_NONCE_SIZE)
        # msg.cookie := XAEAD(HASH(LABEL_COOKIE || S_pub), nonce, cookie, last received mac1)
        sealed = XAEAD(self._cookie_key, nonce, self._cookie(source), msg[smac1:smac2])
        return CookieReply(receiver=receiver, nonce=nonce, encrypted_cookie=sealed).pack()


@final
class CookieGenerator:
    """Initiator side of mac1/mac2, one per peer (wireguard-go ``CookieGenerator``).

    Args:
        remote_static: the peer's public key.
    """

    __slots__ = ("_cookie_key", "_mac1_key", "cookie", "cookie_set", "last_mac1")

    def __init__(self, remote_static: bytes) -> None:
        self._mac1_key = mac1_key(remote_static)
        self._cookie_key = cookie_key(remote_static)
        self.last_mac1: bytes | None = None  # of the last handshake message sent
        self.cookie = bytes(MAC_SIZE)
        self.cookie_set: float | None = None  # when the cookie was received

    def add_macs(self, msg: bytes, *, now: float) -> bytes:
        """Fill mac1, and mac2 if we hold a cookie no older than 120 s.

        Args:
            msg: an initiation or response from ``handshake`` (macs zero).
            now: monotonic seconds.
        Returns:
            The message ready to send.
        Raises:
            ValueError: ``msg`` is not 148 or 92 bytes.
        """
        smac1, smac2 = _mac_offsets(msg)
        out = bytearray(msg)
        # msg.mac1 := MAC(HASH(LABEL_MAC1 || S_pub_peer), msg[:smac1])
        mac1 = MAC(self._mac1_key, msg[:smac1])
        out[smac1:smac2] = mac1
        self.last_mac1 = mac1
        # msg.mac2 := MAC(cookie, msg[:smac2]) if the cookie is fresh, else zeros
        if self.cookie_set is not None and now - self.cookie_set <= COOKIE_REFRESH_TIME:
            out[smac2:] = MAC(self.cookie, out[:smac2])
        else:
            out[smac2:] = bytes(MAC_SIZE)
        return bytes(out)

    def consume_reply(self, reply: CookieReply, *, now: float) -> None:
        """Accept a cookie reply from the peer and keep its cookie (with ``now``).

        Caller must have found this peer by ``reply.receiver`` (a handshake
        or keypair index). No resend follows: the next retry carries mac2.

        Raises:
            CookieError: we sent no handshake message yet, or the reply does
            not decrypt with our last mac1 as AD; nothing changes.
        """
        if self.last_mac1 is None:
            raise CookieError("cookie reply: no handshake message sent")
        try:
            cookie = xaead_open(self._cookie_key, reply.nonce, reply.encrypted_cookie, self.last_mac1)
        except CryptoError:
            raise CookieError("cookie reply: does not decrypt") from None
        self.cookie = cookie
        self.cookie_set = now


_NS: Final = 1_000_000_000
_PACKET_COST: Final = _NS // RATELIMIT_PACKETS_PER_SECOND  # tokens are nanoseconds
_MAX_TOKENS: Final = _PACKET_COST * RATELIMIT_PACKETS_BURSTABLE


@final
class RateLimiter:
    """Per-source token bucket for handshakes under load (wireguard-go ``ratelimiter``).

    Tokens are nanoseconds of credit: each second earns 1e9, a packet costs
    1e9/20, the bucket holds five packets' worth. A new source is allowed at
    once and left with four. Entries idle over 1 s are purged, lazily, at
    most once a second (wireguard-go runs a ticker).
    """

    __slots__ = ("_last_gc", "_table")

    def __init__(self) -> None:
        self._table: dict[bytes, list[int]] = {}  # ip -> [last_ns, tokens]
        self._last_gc: float | None = None

    def __len__(self) -> int:
        """How many sources are tracked."""
        return len(self._table)

    def allow(self, ip: bytes, *, now: float) -> bool:
        """Take one packet's worth of tokens for ``ip`` if it has them.

        Args:
            ip: the packed source address (``address_bytes``), port excluded.
            now: monotonic seconds.
        Returns:
            True if the handshake may be processed.
        """
        if self._last_gc is None or now - self._last_gc >= RATELIMIT_GC_TIME:
            self.purge(now=now)
        now_ns = round(now * _NS)
        entry = self._table.get(ip)
        if entry is None:
            self._table[ip] = [now_ns, _MAX_TOKENS - _PACKET_COST]
            return True
        tokens = min(entry[1] + now_ns - entry[0], _MAX_TOKENS)
        entry[0] = now_ns
        if tokens > _PACKET_COST:
            entry[1] = tokens - _PACKET_COST
            return True
        entry[1] = tokens
        return False

    def purge(self, *, now: float) -> None:
        """Forget sources not seen for more than 1 s."""
        self._last_gc = now
        cutoff = round((now - RATELIMIT_GC_TIME) * _NS)
        for ip in [ip for ip, (last, _) in self._table.items() if last < cutoff]:
            del self._table[ip]
