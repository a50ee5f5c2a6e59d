"""The control protocol's limits (sans-I/O): nesting depth, bytes held per
connection and in total; after each, what the connection may still do."""

from __future__ import annotations

import errno
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.control.protocol import (
    MAX_DEPTH,
    BufferPool,
    Framer,
    FramingError,
    ProtocolError,
    encode,
)


def raw(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "body", [b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"[" * 5000 + b"]" * 5000, b"[" * 100_000]
)
def test_too_deep_is_ebadmsg_and_the_stream_goes_on(body: bytes) -> None:
    f = Framer()
    f.feed(raw(body) + encode({"op": "ping"}))
    with pytest.raises(ProtocolError) as ei:
        f.next_message()
    assert ei.value.errno == errno.EBADMSG and not isinstance(ei.value, FramingError)
    assert "deeper" in str(ei.value)
    assert f.next_message() == {"op": "ping"}  # the framing held


def test_deep_inside_an_object() -> None:
    body = b'{"op": "ping", "x": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    f = Framer()
    f.feed(raw(body))
    with pytest.raises(ProtocolError):
        f.next_message()
    ok = json.dumps({"op": "ping", "x": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))})
    f.feed(raw(ok.encode()))
    assert f.next_message() is not None


def test_many_brackets_but_shallow_is_fine() -> None:
    body = json.dumps({"op": "ping", "x": [[] for _ in range(1000)]}).encode()
    f = Framer()
    f.feed(raw(body))
    assert f.next_message() is not None


def test_oversize_length_is_a_framing_error() -> None:
    f = Framer()
    f.feed((1 << 24).to_bytes(4, "big"))
    with pytest.raises(FramingError) as ei:
        f.next_message()
    assert ei.value.errno == errno.EMSGSIZE


def test_pool_caps_the_total_and_comes_back() -> None:
    pool = BufferPool(limit=10_000, free=100)
    a, b = Framer(pool), Framer(pool)
    a.feed(raw(b"x" * 20_000)[:6000])  # an unfinished frame
    assert pool.used == 5900
    b.feed(b"\0\0\x10\0" + b"y" * 96)  # within b's own allowance
    assert pool.used == 5900
    with pytest.raises(FramingError) as ei:
        b.feed(b"y" * 5000)
    assert ei.value.errno == errno.ENOBUFS
    assert b.pending == 100 and pool.used == 5900  # not taken
    a.close()
    assert pool.used == 0 and a.pending == 0
    b.feed(b"y" * 4000)  # room again
    assert pool.used == 4000
    b.close()
    assert pool.used == 0
    assert pool.peak == 5900


def test_a_whole_message_gives_its_bytes_back() -> None:
    pool = BufferPool(limit=1 << 20, free=16)
    f = Framer(pool)
    f.feed(encode({"op": "modstat", "module": "x" * 1000}) + b"\0\0")
    assert pool.used > 1000
    assert f.next_message() is not None
    assert pool.used == 0 and f.pending == 2


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(0, 64), st.integers(0, 2000))
def test_pool_accounting_holds_for_any_stream(chunks: list[bytes], free: int, limit: int) -> None:
    pool = BufferPool(limit=limit, free=free)
    f = Framer(pool)
    for c in chunks:
        try:
            f.feed(c)
        except FramingError:
            break
        try:
            while f.next_message() is not None:
                pass
        except FramingError:
            break
        except ProtocolError:
            pass
        assert 0 <= pool.used <= limit
        assert f.pending <= free + pool.used
    f.close()
    assert pool.used == 0
