"""Transport keypairs: encrypt/decrypt, counters, replay, expiry, padding."""

from __future__ import annotations

import pytest

from modules.tunwg.wg.constants import (
    DEFAULT_MTU,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
)
from modules.tunwg.wg.crypto import AEAD
from modules.tunwg.wg.keypair import Keypair, TransportError, pad, padding_size
from modules.tunwg.wg.messages import Transport, parse

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def pair(*, created: float = 0.0) -> tuple[Keypair, Keypair]:
    """Initiator (local 1, remote 2) and responder (local 2, remote 1)."""
    a = Keypair(
        send_key=KEY_A, receive_key=KEY_B, local_index=1, remote_index=2, is_initiator=True, created=created
    )
    b = Keypair(
        send_key=KEY_B, receive_key=KEY_A, local_index=2, remote_index=1, is_initiator=False, created=created
    )
    return a, b


def test_round_trip_both_ways() -> None:
    a, b = pair()
    assert b.decrypt(a.encrypt(b"hello", now=0.0), now=0.0) == b"hello"
    assert a.decrypt(b.encrypt(b"", now=0.0), now=0.0) == b""


def test_message_layout() -> None:
    a, _ = pair()
    a.encrypt(b"x", now=0.0)
    data = a.encrypt(b"0123456789abcdef", now=0.0)
    assert len(data) == 16 + 16 + 16
    msg = parse(data)
    assert isinstance(msg, Transport)
    assert (msg.receiver, msg.counter) == (2, 1)


def test_matches_the_plain_version() -> None:
    a, _ = pair()
    a.send_counter = 12345
    fast = a.encrypt(b"payload", now=0.0)
    plain = Transport(receiver=2, counter=12345, encrypted_packet=AEAD(KEY_A, 12345, b"payload", None)).pack()
    assert fast == plain


def test_counter_counts_every_message_including_keepalives() -> None:
    a, _ = pair()
    for n in range(3):
        assert parse(a.encrypt(b"" if n % 2 else b"data", now=0.0)).counter == n  # type: ignore[union-attr]
    assert a.send_counter == 3


def test_replay_rejected() -> None:
    a, b = pair()
    data = a.encrypt(b"once", now=0.0)
    b.decrypt(data, now=0.0)
    with pytest.raises(TransportError, match=r"^transport: replayed counter 0$"):
        b.decrypt(data, now=0.0)


def test_out_of_order_within_window_accepted() -> None:
    a, b = pair()
    msgs = [a.encrypt(bytes([i]), now=0.0) for i in range(5)]
    assert [b.decrypt(m, now=0.0) for m in reversed(msgs)] == [bytes([i]) for i in reversed(range(5))]


def test_forged_counter_does_not_move_the_window() -> None:
    a, b = pair()
    good = a.encrypt(b"x", now=0.0)
    forged = bytearray(good)
    forged[8:16] = (10**6).to_bytes(8, "little")
    with pytest.raises(TransportError, match=r"^transport: does not authenticate$"):
        b.decrypt(bytes(forged), now=0.0)
    assert b.decrypt(good, now=0.0) == b"x"


def test_tampering_any_byte_rejected() -> None:
    a, b = pair()
    good = a.encrypt(b"some packet bytes", now=0.0)
    for pos in range(len(good)):
        bad = bytearray(good)
        bad[pos] ^= 0x40
        with pytest.raises(TransportError):
            b.decrypt(bytes(bad), now=0.0)
    assert b.decrypt(good, now=0.0) == b"some packet bytes"


def test_short_message_rejected() -> None:
    _, b = pair()
    with pytest.raises(TransportError, match=r"^transport: short message$"):
        b.decrypt(bytes(31), now=0.0)


def test_expiry() -> None:
    a, b = pair(created=100.0)
    data = a.encrypt(b"x", now=279.9)
    assert not a.expired(279.9)
    assert a.expired(280.0)
    with pytest.raises(TransportError, match=r"^transport: keypair expired$"):
        a.encrypt(b"x", now=280.0)
    assert b.decrypt(data, now=280.0) == b"x"  # receiving stops only past 180 s, as wireguard-go
    with pytest.raises(TransportError, match=r"^transport: keypair expired$"):
        b.decrypt(a.encrypt(b"y", now=0.0), now=280.001)


def test_counter_exhaustion() -> None:
    a, b = pair()
    a.send_counter = REJECT_AFTER_MESSAGES - 1
    b.decrypt(a.encrypt(b"last", now=0.0), now=0.0)
    with pytest.raises(TransportError, match=r"^transport: keypair exhausted its counters$"):
        a.encrypt(b"one too many", now=0.0)
    assert a.send_counter == REJECT_AFTER_MESSAGES


def test_needs_rekey() -> None:
    a, b = pair(created=0.0)
    assert not a.needs_rekey_sending(120.0)
    assert a.needs_rekey_sending(120.1)
    assert not b.needs_rekey_sending(179.0)  # time-based rekey is the initiator's only
    b.send_counter = REKEY_AFTER_MESSAGES + 1
    assert b.needs_rekey_sending(0.0)
    assert not a.needs_rekey_receiving(165.0)
    assert a.needs_rekey_receiving(165.1)
    assert not b.needs_rekey_receiving(179.0)


@pytest.mark.parametrize(
    ("size", "mtu", "padded"),
    [
        (84, 1420, 96),  # ping -> 96 -> 128-byte message (reference section 5)
        (0, 1420, 0),  # keepalive
        (1, 1420, 16),
        (16, 1420, 16),
        (1419, 1420, 1420),  # not past the MTU
        (1420, 1420, 1420),
        (1421, 1420, 1421 + 15),  # last unit of 1 byte padded to 16
        (1412, 1420, 1420),  # 1424 would pass the MTU
        (17, 0, 32),  # MTU 0: plain round up
        (33, 20, 36),  # 33 % 20 = 13 -> 16, so 3 bytes more
    ],
)
def test_padding_sizes(size: int, mtu: int, padded: int) -> None:
    assert size + padding_size(size, mtu) == padded
    assert len(pad(bytes(size), mtu)) == padded


def test_ping_makes_128_byte_message() -> None:
    a, _ = pair()
    assert len(a.encrypt(pad(bytes(84), DEFAULT_MTU), now=0.0)) == 128
