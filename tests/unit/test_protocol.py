"""Control protocol framing and request checking (sans-I/O)."""

from __future__ import annotations

import contextlib
import errno
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.control.protocol import (
    MAX_MESSAGE,
    Framer,
    ProtocolError,
    decode_reply,
    encode,
    error_reply,
    ok_reply,
    parse_request,
)
from devfsd.errors import ControlError


def test_round_trip_whole_and_byte_by_byte() -> None:
    msgs: list[dict[str, object]] = [
        {"op": "modload", "module": "crandom", "props": {"a": 1}},
        {"op": "ping"},
    ]
    wire = b"".join(encode(m) for m in msgs)
    f = Framer()
    f.feed(wire)
    assert [f.next_message(), f.next_message(), f.next_message()] == [*msgs, None]
    f = Framer()
    out = []
    for b in wire:
        f.feed(bytes([b]))
        m = f.next_message()
        if m is not None:
            out.append(m)
    assert out == msgs and f.pending == 0


@pytest.mark.parametrize(
    ("raw", "err"),
    [
        (struct.pack(">I", MAX_MESSAGE + 1), errno.EMSGSIZE),
        (struct.pack(">I", 3) + b"\xff\xfe\xfd", errno.EBADMSG),
        (struct.pack(">I", 2) + b"[]", errno.EBADMSG),
        (struct.pack(">I", 4) + b"nope", errno.EBADMSG),
    ],
)
def test_malformed_frames(raw: bytes, err: int) -> None:
    f = Framer()
    f.feed(raw)
    with pytest.raises(ProtocolError) as ei:
        f.next_message()
    assert ei.value.errno == err


@pytest.mark.parametrize(
    ("msg", "err"),
    [
        ({}, errno.EINVAL),
        ({"op": 5}, errno.EINVAL),
        ({"op": "format-disk"}, errno.EOPNOTSUPP),
        ({"op": "modload"}, errno.EINVAL),
        ({"op": "modload", "module": 3}, errno.EINVAL),
        ({"op": "modload", "module": "x", "extra": 1}, errno.EINVAL),
        ({"op": "ioctl", "path": "/x", "cmd": True, "data": ""}, errno.EINVAL),
    ],
)
def test_bad_requests(msg: dict[str, object], err: int) -> None:
    with pytest.raises(ProtocolError) as ei:
        parse_request(msg)
    assert ei.value.errno == err


def test_optional_arguments_default_to_none() -> None:
    assert parse_request({"op": "modstat"}) == ("modstat", {"module": None})
    assert parse_request({"op": "modload", "module": "m"}) == (
        "modload",
        {"module": "m", "props": None, "isolated": None},
    )


def test_replies() -> None:
    assert decode_reply(ok_reply([1])) == [1]
    with pytest.raises(ControlError) as ei:
        decode_reply(error_reply(errno.EEXIST, "File exists"))
    assert ei.value.errno == errno.EEXIST and str(ei.value) == "File exists"
    for bad in ({}, {"ok": False}, {"ok": False, "errno": 0}, {"ok": False, "errno": True}):
        with pytest.raises(ControlError) as ei:
            decode_reply(bad)
        assert ei.value.errno == errno.EBADMSG


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    f = Framer()
    f.feed(data)
    with contextlib.suppress(ProtocolError):
        while (m := f.next_message()) is not None:
            with contextlib.suppress(ProtocolError):
                parse_request(m)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    max_leaves=20,
)


@given(JSON)
def test_any_json_request_is_checked(value: object) -> None:
    f = Framer()
    body = json.dumps(value).encode()
    f.feed(struct.pack(">I", len(body)) + body)
    err = 0
    try:
        m = f.next_message()
        assert m is not None
        parse_request(m)
    except ProtocolError as exc:
        err = exc.errno
    assert err in (0, errno.EBADMSG, errno.EINVAL, errno.EOPNOTSUPP)
