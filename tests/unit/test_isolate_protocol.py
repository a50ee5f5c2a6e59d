"""The module-host protocol (devfsd.isolate.protocol), sans-I/O."""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.cdevsw import FNONBLOCK, FREAD, FWRITE
from devfsd.errors import DeviceError
from devfsd.isolate import protocol as P


def test_messages_round_trip_whole_and_byte_by_byte() -> None:
    wire = (
        P.encode(P.Kind.OPEN, 1, P.OPEN.pack(0x20C, FREAD, 42, 1000, 100, 7))
        + P.encode(P.Kind.WRITE, 2, P.WRITE.pack(7, 0) + b"hello")
        + P.encode(P.Kind.PING, 0)
        + P.reply(2, 0, P.COUNT.pack(5))
    )
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        rx = P.Receiver()
        got = []
        for c in chunks:
            rx.feed(c)
            while (m := rx.next_message()) is not None:
                got.append(m)
        assert [(m.kind, m.rid) for m in got] == [(3, 1), (6, 2), (9, 0), (12, 2)]
        assert rx.pending == 0
        a = P.parse_open(got[0].body)
        assert (a.dev, a.flag, a.pid, a.uid, a.gid, a.fid) == (0x20C, FREAD, 42, 1000, 100, 7)
        assert P.unpack(P.WRITE, got[1].body) == (7, 0)
        assert got[1].body[P.WRITE.size :] == b"hello"
        err, payload = P.parse_reply(got[3].body)
        assert (err, bytes(payload)) == (0, P.COUNT.pack(5))


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_receiver_keeps_a_partial_message_when_its_buffer_is_reused(cuts: list[int]) -> None:
    """As ``receive`` feeds it: every chunk arrives in the same buffer, which
    the next chunk overwrites; whole messages come out intact, and the part
    of one that a chunk ends in is kept until the rest comes."""
    msgs = [P.encode(P.Kind.READ, i, P.READ.pack(i, i * 7, -i)) for i in range(1, 6)]
    msgs.append(P.reply_head(99, 3) + b"abc")
    wire = b"".join(msgs)
    buf = bytearray(64)
    rx = P.Receiver()
    got = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        chunk = wire[pos : pos + cut]
        pos += len(chunk)
        buf[: len(chunk)] = chunk
        with memoryview(buf) as view:
            rx.feed(view[: len(chunk)])
        while (m := rx.next_message()) is not None:
            got.append(m)
        buf[:] = b"\xee" * len(buf)  # the next recv_into writes over it
        if pos == len(wire):
            break
    assert b"".join(P.encode(m.kind, m.rid, m.body) for m in got) == wire
    assert rx.pending == 0


@pytest.mark.parametrize("size", [3, 5000])
def test_whole_takes_one_whole_message_alone_and_nothing_else(size: int) -> None:
    """``Receiver.whole``: a buffer that holds exactly one message of a known
    kind, with nothing held from before, is that message (the body a copy:
    the buffer is reused); anything else is left to ``feed``, which then
    parses it, or refuses it, as before."""
    one = P.reply_head(7, size) + b"z" * size
    buf = bytearray(8192)
    buf[: len(one)] = one
    rx = P.Receiver()
    m = rx.whole(buf, len(one))
    assert m is not None and (m.kind, m.rid, m.body) == (P.Kind.REPLY, 7, one[P.HEADER.size :])
    assert type(m) is P.Message
    buf[:] = bytes(len(buf))
    assert m.body == one[P.HEADER.size :] and rx.pending == 0
    two = one + P.encode(P.Kind.NOTIFY, 3)
    buf[: len(two)] = two
    assert rx.whole(buf, len(one) - 1) is None  # a part
    assert rx.whole(buf, len(two)) is None  # two
    rx.feed(two[:5])
    assert rx.next_message() is None
    buf[: len(one)] = one
    assert rx.whole(buf, len(one)) is None  # something is held: it comes first
    bad = P.HEADER.pack(0, 99, 1)
    assert P.Receiver().whole(bytearray(bad), len(bad)) is None  # an unknown kind is feed's to refuse
    rx = P.Receiver()
    rx.feed(bad)
    with pytest.raises(P.ProtocolError):
        rx.next_message()


def test_reply_head_then_payload_is_a_reply() -> None:
    data = bytes(range(256)) * 3
    assert P.reply_head(5, len(data)) + data == P.reply(5, 0, data)
    with pytest.raises(P.ProtocolError) as ei:
        P.reply_head(5, P.MAX_BODY)
    assert ei.value.errno == errno.EMSGSIZE


def test_error_reply_carries_errno_and_text() -> None:
    rx = P.Receiver()
    rx.feed(P.error_reply(9, DeviceError(errno.EEXIST, "major 2 is in use")))
    m = rx.next_message()
    assert m is not None and m.rid == 9
    err, payload = P.parse_reply(m.body)
    exc = P.reply_error(err, payload)
    assert isinstance(exc, DeviceError)
    assert (exc.errno, str(exc)) == (errno.EEXIST, "major 2 is in use")
    assert str(P.reply_error(errno.EIO, b"")) == os.strerror(errno.EIO)


def test_body_past_the_limit_is_refused_both_ways() -> None:
    with pytest.raises(P.ProtocolError) as ei:
        P.encode(P.Kind.WRITE, 1, bytes(P.MAX_BODY + 1))
    assert ei.value.errno == errno.EMSGSIZE
    rx = P.Receiver()
    rx.feed(P.HEADER.pack(P.MAX_BODY + 1, P.Kind.REPLY, 1))
    with pytest.raises(P.ProtocolError) as ei:
        rx.next_message()
    assert ei.value.errno == errno.EMSGSIZE


def test_unknown_kind_is_refused() -> None:
    rx = P.Receiver()
    rx.feed(P.HEADER.pack(0, 99, 1))
    with pytest.raises(P.ProtocolError) as ei:
        rx.next_message()
    assert ei.value.errno == errno.EBADMSG


@pytest.mark.parametrize(
    ("fn", "body"),
    [
        (P.parse_open, b"\0" * (P.OPEN.size - 1)),
        (P.parse_open, b"\0" * (P.OPEN.size + 1)),
        (P.parse_ioctl, b"\0" * (P.IOCTL.size - 1)),
        (P.parse_reply, b"\0\0"),
        (P.parse_reply, P.ERRNO.pack(-5)),
        (P.decode_json, b"\xff"),
        (lambda b: P.unpack(P.READ, b), b"\0"),
    ],
)
def test_malformed_bodies_raise_protocol_error(fn: object, body: bytes) -> None:
    assert callable(fn)
    with pytest.raises(P.ProtocolError) as ei:
        fn(body)
    assert ei.value.errno == errno.EBADMSG


def test_ioctl_carries_its_data() -> None:
    body = P.IOCTL.pack(0x105, 0x40046D01, FREAD | FWRITE, 5, 0, 0, 3) + b"\1\2\3\4"
    a = P.parse_ioctl(body)
    assert (a.dev, a.cmd, a.flag, a.pid, a.fid, a.data) == (0x105, 0x40046D01, 3, 5, 3, b"\1\2\3\4")


@pytest.mark.parametrize(
    ("fflag", "flags"),
    [
        (FREAD, os.O_RDONLY),
        (FWRITE, os.O_WRONLY),
        (FREAD | FWRITE, os.O_RDWR),
        (FREAD | FNONBLOCK, os.O_RDONLY | os.O_NONBLOCK),
    ],
)
def test_fflag_back_to_open_flags(fflag: int, flags: int) -> None:
    assert P.fflag_to_open_flags(fflag, FNONBLOCK) == flags


@given(st.binary(max_size=200))
def test_any_bytes_give_messages_or_protocol_error(data: bytes) -> None:
    rx = P.Receiver()
    rx.feed(data)
    err = 0
    try:
        while (m := rx.next_message()) is not None:
            assert m.kind in set(P.Kind)
    except P.ProtocolError as exc:
        err = exc.errno
    assert err in (0, errno.EBADMSG, errno.EMSGSIZE)
