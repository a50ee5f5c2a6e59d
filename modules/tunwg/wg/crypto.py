"""The whitepaper's primitives (section 5.4): HASH, MAC, HMAC, KDF, AEAD, XAEAD, DH, TAI64N.

Pure computation; imports ``hashlib``, ``hmac``, ``struct`` and the
``cryptography`` package, no clock, socket or thread: the clock reaches
``TAI64N`` as an argument, randomness reaches key generation as
``rng(n) -> bytes``. The functions carry the whitepaper's upper-case names,
as wireguard-go's ``noise-helpers.go`` does, so the handshake reads like
the paper; what the paper does not name (opening, key generation) is
lower case.

Speed: the handshake builds a ``ChaCha20Poly1305`` object per key (about
0.6 us, used once or twice); the data path keeps one per keypair direction
(``keypair.py``). ``XAEAD`` is for cookie replies only and is derived from
one raw ChaCha20 block (reference section 4.4), since ``cryptography`` has
no XChaCha20; it is not constant-time, which cookies do not need.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .constants import CONSTRUCTION, COOKIE_NONCE_SIZE, IDENTIFIER, KEY_SIZE, MAC_SIZE
from .keys import PrivateKey, PublicKey, clamp

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.utils import Buffer

__all__ = [
    "AEAD",
    "DH",
    "HASH",
    "HMAC",
    "INITIAL_CHAIN_KEY",
    "INITIAL_HASH",
    "KDF1",
    "KDF2",
    "KDF3",
    "MAC",
    "TAI64N",
    "XAEAD",
    "CryptoError",
    "aead_open",
    "generate_private_key",
    "hchacha20",
    "public_key",
    "xaead_open",
]


class CryptoError(Exception):
    """An AEAD did not authenticate, or a DH gave the all-zero (low-order) result."""


# --- Hashes --------------------------------------------------------------------


def HASH(data: Buffer) -> bytes:
    """BLAKE2s-256 of ``data`` (32 bytes)."""
    return hashlib.blake2s(data).digest()


def MAC(key: bytes, data: Buffer) -> bytes:
    """Keyed BLAKE2s-128 of ``data`` (16 bytes); ``key`` is up to 32 bytes."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_SIZE).digest()


def HMAC(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s-256 (32 bytes), the building block of the KDF."""
    return hmac.digest(key, data, "blake2s")


def KDF1(key: bytes, data: bytes) -> bytes:
    """The whitepaper's KDF1: ``T1`` of the HKDF over HMAC-BLAKE2s."""
    prk = HMAC(key, data)
    return HMAC(prk, b"\x01")


def KDF2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2: ``(T1, T2)``, ``T2 = HMAC(prk, T1 || 0x02)``."""
    prk = HMAC(key, data)
    t1 = HMAC(prk, b"\x01")
    return t1, HMAC(prk, t1 + b"\x02")


def KDF3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3: ``(T1, T2, T3)``, ``T3 = HMAC(prk, T2 || 0x03)``."""
    prk = HMAC(key, data)
    t1 = HMAC(prk, b"\x01")
    t2 = HMAC(prk, t1 + b"\x02")
    return t1, t2, HMAC(prk, t2 + b"\x03")


# C0 and H0 of the reference (section 3.1): every handshake starts here.
INITIAL_CHAIN_KEY: Final = HASH(CONSTRUCTION)
INITIAL_HASH: Final = HASH(INITIAL_CHAIN_KEY + IDENTIFIER)


# --- AEAD ----------------------------------------------------------------------

_NONCE: Final = struct.Struct("<4xQ")  # 4 zero bytes || little-endian u64 counter


def AEAD(key: bytes, counter: int, plaintext: Buffer, ad: Buffer | None) -> bytes:
    """ChaCha20-Poly1305 seal (RFC 8439) with the counter as nonce.

    Args:
        key: 32 bytes.
        counter: the 64-bit message counter (0 in the handshake).
        plaintext: what to encrypt.
        ad: associated data (the transcript hash ``H`` in the handshake), or None.
    Returns:
        Ciphertext followed by the 16-byte tag.
    """
    return ChaCha20Poly1305(key).encrypt(_NONCE.pack(counter), plaintext, ad)


def aead_open(key: bytes, counter: int, ciphertext: Buffer, ad: Buffer | None) -> bytes:
    """Open what ``AEAD`` sealed.

    Returns:
        The plaintext.
    Raises:
        CryptoError: the tag does not authenticate (wrong key, counter, AD or data).
    """
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE.pack(counter), ciphertext, ad)
    except InvalidTag:
        raise CryptoError("AEAD tag mismatch") from None


# --- XAEAD (XChaCha20-Poly1305 from HChaCha20) ---------------------------------

_WORDS16: Final = struct.Struct("<16I")
_WORDS4: Final = struct.Struct("<4I")
_WORDS8: Final = struct.Struct("<8I")
_SIGMA: Final = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"
_ZERO_BLOCK: Final = bytes(64)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha section 2.2) from one raw ChaCha20 block.

    ``cryptography``'s ChaCha20 takes a 16-byte nonce that is state words
    12..15 (counter || nonce), so ``nonce16`` lands exactly where HChaCha20
    puts its input. Its keystream block is ``rounds(state) + state`` word by
    word; HChaCha20 is words 0..3 and 12..15 of ``rounds(state)``, so
    subtract the state back out of those words.

    Args:
        key: 32 bytes.
        nonce16: 16 bytes.
    Returns:
        The 32-byte subkey.
    """
    enc = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor()
    ks = _WORDS16.unpack(enc.update(_ZERO_BLOCK))
    inp = _WORDS4.unpack(nonce16)
    out = [(ks[i] - _SIGMA[i]) & 0xFFFFFFFF for i in range(4)]
    out += [(ks[12 + i] - inp[i]) & 0xFFFFFFFF for i in range(4)]
    return _WORDS8.pack(*out)


def _xchacha(key: bytes, nonce: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    if len(nonce) != COOKIE_NONCE_SIZE:
        raise ValueError(f"XAEAD nonce must be {COOKIE_NONCE_SIZE} bytes")
    return ChaCha20Poly1305(hchacha20(key, nonce[:16])), b"\0\0\0\0" + nonce[16:]


def XAEAD(key: bytes, nonce: bytes, plaintext: Buffer, ad: Buffer) -> bytes:
    """XChaCha20-Poly1305 seal, used only for cookie replies.

    Args:
        key: 32 bytes.
        nonce: 24 random bytes.
        plaintext: the cookie.
        ad: associated data (the mac1 of the message being answered).
    Returns:
        Ciphertext followed by the 16-byte tag.
    Raises:
        ValueError: ``nonce`` is not 24 bytes.
    """
    aead, n12 = _xchacha(key, nonce)
    return aead.encrypt(n12, plaintext, ad)


def xaead_open(key: bytes, nonce: bytes, ciphertext: Buffer, ad: Buffer) -> bytes:
    """Open what ``XAEAD`` sealed.

    Raises:
        CryptoError: the tag does not authenticate.
        ValueError: ``nonce`` is not 24 bytes.
    """
    aead, n12 = _xchacha(key, nonce)
    try:
        return aead.decrypt(n12, ciphertext, ad)
    except InvalidTag:
        raise CryptoError("XAEAD tag mismatch") from None


# --- Curve25519 ----------------------------------------------------------------


def DH(private_key: bytes, public_key: bytes) -> bytes:
    """X25519 (the whitepaper's DH).

    Args:
        private_key: 32 bytes (clamped or not; X25519 clamps).
        public_key: 32 bytes.
    Returns:
        The 32-byte shared secret.
    Raises:
        CryptoError: the result is all zero: ``public_key`` is a low-order
        point, and no handshake may use it.
    """
    try:
        return X25519PrivateKey.from_private_bytes(private_key).exchange(
            X25519PublicKey.from_public_bytes(public_key)
        )
    except ValueError:
        # cryptography's exchange() refuses the all-zero result this way
        raise CryptoError("DH result is zero (low-order public key)") from None


def generate_private_key(rng: Callable[[int], bytes]) -> PrivateKey:
    """The whitepaper's DH-GENERATE, private half: 32 bytes from ``rng``, clamped.

    Args:
        rng: ``rng(n)`` returns ``n`` random bytes (``os.urandom`` in the glue).
    """
    return clamp(rng(KEY_SIZE))


def public_key(private_key: bytes) -> PublicKey:
    """The X25519 public key of ``private_key`` (clamping does not change it)."""
    return PublicKey(X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw())


# --- TAI64N --------------------------------------------------------------------

_TAI64N: Final = struct.Struct(">QI")
_TAI64_BASE: Final = 0x400000000000000A  # 2^62 + 10 leap seconds, as wireguard-go
_WHITENER_MASK: Final = 0xFFFFFF  # wireguard-go clears the low 24 bits of the ns


def TAI64N(wall_ns: int) -> bytes:
    """The 12-byte handshake timestamp of a wall-clock time, as wireguard-go's ``tai64n.stamp``.

    The low 24 bits of the nanoseconds are cleared (steps of ~16.8 ms), so
    the stamp does not leak a fine clock; two initiations closer together
    than that may carry equal stamps and the second is then a "replay".

    Args:
        wall_ns: nanoseconds since the Unix epoch (``time.time_ns()`` in the glue).
    Returns:
        BE u64 ``0x400000000000000A + seconds`` || BE u32 whitened nanoseconds.
    """
    secs, nanos = divmod(wall_ns, 1_000_000_000)
    return _TAI64N.pack(_TAI64_BASE + secs, nanos & ~_WHITENER_MASK)
