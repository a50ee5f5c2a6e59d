"""Message records: round trips, and parse() raises MessageError and nothing else for any bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.tunwg.wg.messages import (
    CookieReply,
    Initiation,
    Message,
    MessageError,
    Response,
    Transport,
    parse,
    transport_receiver,
)

SAMPLES: list[Message] = [
    Initiation(
        sender=0x01020304,
        ephemeral=bytes(range(32)),
        encrypted_static=bytes(range(48)),
        encrypted_timestamp=bytes(range(28)),
        mac1=b"\x01" * 16,
        mac2=b"\x02" * 16,
    ),
    Response(
        sender=0xFFFFFFFF,
        receiver=0,
        ephemeral=bytes(range(32)),
        encrypted_nothing=b"\x03" * 16,
        mac1=b"\x04" * 16,
    ),
    CookieReply(receiver=7, nonce=bytes(range(24)), encrypted_cookie=bytes(range(32))),
    Transport(receiver=9, counter=2**64 - 1, encrypted_packet=bytes(16)),
    Transport(receiver=9, counter=5, encrypted_packet=bytes(range(256)) * 5),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Message) -> None:
    assert parse(msg.pack()) == msg


@pytest.mark.parametrize(("msg", "size"), list(zip(SAMPLES[:4], [148, 92, 64, 32], strict=True)))
def test_sizes(msg: Message, size: int) -> None:
    assert len(msg.pack()) == size


def test_layout_little_endian_type_and_indices() -> None:
    data = SAMPLES[1].pack()
    assert data[:12] == bytes.fromhex("02000000ffffffff00000000")
    assert SAMPLES[3].pack()[:16] == bytes.fromhex("0400000009000000ffffffffffffffff")


def test_parse_accepts_memoryview_and_bytearray() -> None:
    data = SAMPLES[0].pack()
    assert parse(memoryview(data)) == parse(bytearray(data)) == SAMPLES[0]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "short datagram (0 bytes)"),
        (b"\x04" + bytes(30), "short datagram (31 bytes)"),
        (b"\x04" + bytes(65535), "long datagram (65536 bytes)"),
        (b"\x05" + bytes(40), "unknown message type 0x5"),
        (b"\x00" + bytes(40), "unknown message type 0x0"),
        (b"\x01\x00\x00\x01" + bytes(144), "unknown message type 0x1000001"),  # nonzero reserved byte
        (b"\x01" + bytes(148), "initiation of 149 bytes, not 148"),
        (b"\x02" + bytes(90), "response of 91 bytes, not 92"),
        (b"\x03" + bytes(64), "cookie reply of 65 bytes, not 64"),
    ],
)
def test_parse_rejects(data: bytes, text: str) -> None:
    with pytest.raises(MessageError) as info:
        parse(data)
    assert str(info.value) == text
    assert type(info.value) is MessageError


def test_largest_transport_parses() -> None:
    msg = parse(b"\x04" + bytes(65534))
    assert isinstance(msg, Transport)
    assert len(msg.encrypted_packet) == 65535 - 16


def test_transport_receiver_fast_path() -> None:
    assert transport_receiver(SAMPLES[4].pack()) == 9
    with pytest.raises(MessageError, match=r"^not a transport message \(type 0x1\)$"):
        transport_receiver(SAMPLES[0].pack())
    with pytest.raises(MessageError, match=r"^bad transport size \(31 bytes\)$"):
        transport_receiver(bytes(31))


def test_records_refuse_bad_fields() -> None:
    with pytest.raises(ValueError, match=r"^ephemeral must be 32 bytes, not 31$"):
        Initiation(sender=1, ephemeral=bytes(31), encrypted_static=bytes(48), encrypted_timestamp=bytes(28))
    with pytest.raises(ValueError, match=r"^receiver must be a u32$"):
        CookieReply(receiver=-1, nonce=bytes(24), encrypted_cookie=bytes(32))
    with pytest.raises(ValueError, match=r"^counter must be a u64$"):
        Transport(receiver=1, counter=2**64, encrypted_packet=bytes(16))


def _parse_or_message_error(data: bytes) -> None:
    try:
        msg = parse(data)
    except MessageError:
        return
    assert msg.pack() == data  # whatever parses packs back to the same bytes


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_message_error(data: bytes) -> None:
    _parse_or_message_error(data)


@given(st.sampled_from([1, 2, 3, 4]), st.binary(min_size=28, max_size=160))
def test_any_typed_bytes_parse_or_raise_message_error(kind: int, rest: bytes) -> None:
    _parse_or_message_error(bytes([kind, 0, 0, 0]) + rest)


@given(st.sampled_from([148, 92, 64, 32, 33, 100]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_any_bytes_of_message_sizes_parse_or_raise(data: bytes) -> None:
    for kind in (1, 2, 3, 4):
        _parse_or_message_error(bytes([kind, 0, 0, 0]) + data[4:])


def test_every_prefix_parses_or_raises_message_error() -> None:
    # byte by byte, as h11's fuzzer feeds a message
    for msg in SAMPLES:
        data = msg.pack()
        for n in range(len(data) + 1):
            _parse_or_message_error(data[:n])
