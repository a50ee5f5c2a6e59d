"""Key types and their text forms: base64 (``wg``, config files), hex (UAPI).

Pure; imports only the standard library's ``base64``, ``binascii`` and
``typing``. Keys are plain ``bytes`` under ``NewType`` names, so they cost
nothing at run time and mypy keeps a public key from going where a private
one belongs. Deriving a public key needs X25519 and lives in ``crypto``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final, NewType

from .constants import KEY_SIZE

PrivateKey = NewType("PrivateKey", bytes)
PublicKey = NewType("PublicKey", bytes)
PresharedKey = NewType("PresharedKey", bytes)

ZERO_KEY: Final = bytes(KEY_SIZE)
ZERO_PSK: Final = PresharedKey(ZERO_KEY)  # "no preshared key" on the wire and in UAPI

_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


def clamp(key: bytes) -> PrivateKey:
    """Clamp a Curve25519 scalar as X25519 does, so it is stored and reported as used.

    ``cryptography``'s ``from_private_bytes`` keeps the bytes unclamped, and
    ``wg show`` reports the clamped key, as wireguard-go does.

    Args:
        key: 32 bytes.
    Returns:
        The key with bits 0-2 cleared, bit 255 cleared and bit 254 set.
    Raises:
        ValueError: ``key`` is not 32 bytes.
    """
    _check_size(key)
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return PrivateKey(bytes(k))


def is_zero(key: bytes) -> bool:
    """True if ``key`` is all zero bytes (an unset key, or a low-order DH result)."""
    return not any(key)


def from_base64(text: str) -> bytes:
    """Decode a key as ``wg`` writes it: 44 characters, canonical base64.

    Like wireguard-tools' ``key_from_base64``: exactly 43 characters and one
    ``=``, and the unused low bits of the last character must be zero (so
    each key has one spelling).

    Args:
        text: the base64 key.
    Returns:
        The 32 key bytes.
    Raises:
        ValueError: "invalid base64 key" for anything else.
    """
    if len(text) != 44 or not text.endswith("=") or not text.isascii():
        raise ValueError("invalid base64 key")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64 key") from None
    if len(raw) != KEY_SIZE or base64.b64encode(raw).decode() != text:
        raise ValueError("invalid base64 key")
    return raw


def to_base64(key: bytes) -> str:
    """Encode a 32-byte key as ``wg`` shows it (44 characters)."""
    _check_size(key)
    return base64.b64encode(key).decode()


def from_hex(text: str) -> bytes:
    """Decode a key as UAPI sends it: exactly 64 hex digits (either case).

    Args:
        text: the hex key.
    Returns:
        The 32 key bytes.
    Raises:
        ValueError: "invalid hex key" for anything else (``bytes.fromhex``
        alone would accept spaces).
    """
    raw = text.encode("ascii", "replace")
    if len(raw) != 2 * KEY_SIZE or not _HEX_DIGITS.issuperset(raw):
        raise ValueError("invalid hex key")
    return bytes.fromhex(text)


def to_hex(key: bytes) -> str:
    """Encode a 32-byte key as UAPI's 64 lowercase hex digits."""
    _check_size(key)
    return key.hex()


def short(key: bytes) -> str:
    """A public key as logged: ``peer(AbCd...wXyZ)``, after wireguard-go's ``Peer.String``."""
    b = to_base64(key)
    return f"peer({b[:4]}...{b[39:43]})"


def _check_size(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, not {len(key)}")
