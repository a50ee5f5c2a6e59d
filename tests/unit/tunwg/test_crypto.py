"""Primitives against published vectors (reference section 9), keys and their text forms."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from modules.tunwg.wg import crypto, keys
from modules.tunwg.wg.crypto import KDF1, KDF2, KDF3, TAI64N, CryptoError

# --- KDF (wireguard-go kdf_test.go) ---------------------------------------------------

KDF_VECTORS = [
    (
        "746573742d6b6579",
        "746573742d696e707574",
        "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
        "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
        "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    ),
    (
        "776972656775617264",
        "776972656775617264",
        "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
        "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
        "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    ),
    (
        "",
        "",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
]


@pytest.mark.parametrize(
    ("key", "data", "t1", "t2", "t3"), KDF_VECTORS, ids=["test-key", "wireguard", "empty"]
)
def test_kdf_vectors(key: str, data: str, t1: str, t2: str, t3: str) -> None:
    k, x = bytes.fromhex(key), bytes.fromhex(data)
    assert KDF1(k, x).hex() == t1
    assert [t.hex() for t in KDF2(k, x)] == [t1, t2]
    assert [t.hex() for t in KDF3(k, x)] == [t1, t2, t3]


def test_initial_chain_key_and_hash() -> None:
    c0 = "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    h0 = "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"
    assert crypto.INITIAL_CHAIN_KEY.hex() == c0
    assert crypto.INITIAL_HASH.hex() == h0


def test_mac_is_keyed_blake2s_128() -> None:
    assert len(crypto.MAC(b"k" * 32, b"x")) == 16
    assert crypto.MAC(b"k" * 32, b"x") != crypto.MAC(b"j" * 32, b"x")


# --- AEAD ----------------------------------------------------------------------------


def test_aead_round_trip_and_counter_binding() -> None:
    key = bytes(range(32))
    sealed = crypto.AEAD(key, 7, b"hello", b"ad")
    assert len(sealed) == 5 + 16
    assert crypto.aead_open(key, 7, sealed, b"ad") == b"hello"
    with pytest.raises(CryptoError, match=r"^AEAD tag mismatch$"):
        crypto.aead_open(key, 8, sealed, b"ad")
    with pytest.raises(CryptoError, match=r"^AEAD tag mismatch$"):
        crypto.aead_open(key, 7, sealed, b"other")


def test_aead_nonce_is_four_zero_bytes_then_le_counter() -> None:
    key = bytes(range(32))
    counter = 0x0102030405060708
    nonce = b"\0\0\0\0" + counter.to_bytes(8, "little")
    assert crypto.AEAD(key, counter, b"x", None) == ChaCha20Poly1305(key).encrypt(nonce, b"x", None)


# --- HChaCha20 and XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) --------------------------

SUNSCREEN = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)
XCHACHA_CT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
    "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
    "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XCHACHA_TAG = bytes.fromhex("c0875924c1c7987947deafd8780acf49")
XKEY = bytes(range(0x80, 0xA0))
XNONCE = bytes(range(0x40, 0x58))
XAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")


def test_hchacha20_vector() -> None:
    out = crypto.hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927"))
    assert out.hex() == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"


def test_xchacha20_poly1305_seal_vector() -> None:
    assert crypto.XAEAD(XKEY, XNONCE, SUNSCREEN, XAD) == XCHACHA_CT + XCHACHA_TAG


def test_xchacha20_poly1305_open_vector_and_tamper() -> None:
    assert crypto.xaead_open(XKEY, XNONCE, XCHACHA_CT + XCHACHA_TAG, XAD) == SUNSCREEN
    with pytest.raises(CryptoError, match=r"^XAEAD tag mismatch$"):
        crypto.xaead_open(XKEY, XNONCE, XCHACHA_CT + XCHACHA_TAG, b"")


def test_xaead_wants_24_byte_nonce() -> None:
    with pytest.raises(ValueError, match=r"^XAEAD nonce must be 24 bytes$"):
        crypto.XAEAD(XKEY, XNONCE[:12], b"", b"")


# --- DH and keys ------------------------------------------------------------------------


def test_dh_agrees() -> None:
    a, b = keys.clamp(bytes(range(32))), keys.clamp(bytes(range(1, 33)))
    assert crypto.DH(a, crypto.public_key(b)) == crypto.DH(b, crypto.public_key(a))


def test_dh_zero_result_is_a_clear_failure() -> None:
    with pytest.raises(CryptoError, match=r"^DH result is zero \(low-order public key\)$"):
        crypto.DH(bytes(range(32)), bytes(32))


def test_generate_private_key_clamps_rng_output() -> None:
    k = crypto.generate_private_key(lambda n: b"\xff" * n)
    assert k[0] == 0xF8 and k[31] == 0x7F
    assert k[1:31] == b"\xff" * 30


def test_clamp() -> None:
    assert keys.clamp(bytes(32)) == bytes(31) + b"\x40"
    assert keys.clamp(b"\xff" * 32) == b"\xf8" + b"\xff" * 30 + b"\x7f"
    with pytest.raises(ValueError, match=r"^key must be 32 bytes, not 31$"):
        keys.clamp(bytes(31))


def test_public_key_ignores_clamping() -> None:
    raw = b"\xff" * 32
    assert crypto.public_key(raw) == crypto.public_key(keys.clamp(raw))


def test_base64_round_trip() -> None:
    k = bytes(range(32))
    assert keys.from_base64(keys.to_base64(k)) == k
    assert keys.to_base64(k) == base64.b64encode(k).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "AAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 43, no '='
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # 44, no '='
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",  # 31 bytes
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",  # non-canonical last character
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!A=",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAé=",
    ],
)
def test_base64_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid base64 key$"):
        keys.from_base64(text)


def test_hex_round_trip_and_case() -> None:
    k = bytes(range(32))
    assert keys.to_hex(k) == k.hex()
    assert keys.from_hex(k.hex()) == k
    assert keys.from_hex(k.hex().upper()) == k


@pytest.mark.parametrize("text", ["", "00" * 31, "00" * 33, "0" * 63 + "g", "00 " * 21 + "0", "0" * 62 + "é"])
def test_hex_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid hex key$"):
        keys.from_hex(text)


def test_short_peer_name() -> None:
    k = keys.from_base64("t0C2Oxkqdt4nCvV2dLg4ieXq0WFh4fa9XZ/6XCGaLkU=")
    assert keys.short(k) == "peer(t0C2...aLkU)"


# --- TAI64N (wireguard-go tai64n_test.go) -------------------------------------------------

START_NS = 123456789  # a nontrivial bit pattern, as wireguard-go's test


def test_tai64n_layout() -> None:
    assert TAI64N(1700000000 * 10**9).hex() == "400000006553f10a00000000"
    assert TAI64N(0).hex() == "400000000000000a00000000"


def test_tai64n_clears_low_24_bits_of_nanoseconds() -> None:
    assert TAI64N(5 * 10**9 + 0x1FFFFFF)[8:] == (0x1000000).to_bytes(4, "big")


@pytest.mark.parametrize("delta_ns", [10, 10_000, 1_000_000, 10_000_000], ids=["10ns", "10us", "1ms", "10ms"])
def test_tai64n_stamps_closer_than_whitening_compare_equal(delta_ns: int) -> None:
    assert TAI64N(START_NS + delta_ns) == TAI64N(START_NS)


def test_tai64n_stamp_20ms_later_compares_greater() -> None:
    assert TAI64N(START_NS + 20_000_000) > TAI64N(START_NS)


def test_tai64n_orders_across_seconds() -> None:
    assert TAI64N(2 * 10**9) > TAI64N(10**9 + 999_999_999)
