"""mac1/mac2, cookie replies, the lazily renewed secret, and the rate limiter on a fake clock."""

from __future__ import annotations

import random

import pytest

from modules.tunwg.wg.cookie import (
    CookieChecker,
    CookieError,
    CookieGenerator,
    RateLimiter,
    address_bytes,
    cookie_source,
    mac1_key,
)
from modules.tunwg.wg.crypto import MAC, public_key
from modules.tunwg.wg.keys import clamp
from modules.tunwg.wg.messages import CookieReply, parse

R_PUBLIC = public_key(clamp(bytes(range(32))))  # the responder, who checks
SOURCE = cookie_source("192.0.2.1", 51820)
OTHER_SOURCE = cookie_source("192.0.2.1", 51821)


def rng() -> random.Random:
    return random.Random(3)


def handshake_bytes(kind: int = 1, fill: int = 0xAB) -> bytes:
    """A handshake message of the right size with zero macs (content is not checked here)."""
    size = 148 if kind == 1 else 92
    return bytes([kind, 0, 0, 0]) + bytes([fill]) * (size - 36) + bytes(32)


def reply_for(checker: CookieChecker, msg: bytes, *, now: float, source: bytes = SOURCE) -> CookieReply:
    out = parse(checker.create_reply(msg, 0x01020304, source, now=now, rng=rng().randbytes))
    assert isinstance(out, CookieReply)
    return out


def test_cookie_source_is_ip_then_le_port() -> None:
    assert cookie_source("192.0.2.1", 0x1234) == bytes([192, 0, 2, 1, 0x34, 0x12])
    assert len(cookie_source("2001:db8::1", 1)) == 18
    assert address_bytes("::ffff:192.0.2.1") == bytes([192, 0, 2, 1])
    with pytest.raises(ValueError, match=r"^port must be 0\.\.65535$"):
        cookie_source("192.0.2.1", 65536)


@pytest.mark.parametrize("kind", [1, 2])
def test_mac1_round_trip(kind: int) -> None:
    msg = CookieGenerator(R_PUBLIC).add_macs(handshake_bytes(kind), now=0.0)
    assert msg[-16:] == bytes(16)  # no cookie: mac2 zero
    assert msg[-32:-16] == MAC(mac1_key(R_PUBLIC), msg[:-32])
    assert CookieChecker(R_PUBLIC).check_mac1(msg)


def test_mac1_for_another_key_fails() -> None:
    other = public_key(clamp(bytes(range(1, 33))))
    msg = CookieGenerator(other).add_macs(handshake_bytes(), now=0.0)
    assert not CookieChecker(R_PUBLIC).check_mac1(msg)


def test_mac1_covers_every_byte_before_it() -> None:
    msg = CookieGenerator(R_PUBLIC).add_macs(handshake_bytes(), now=0.0)
    checker = CookieChecker(R_PUBLIC)
    for pos in range(132):
        bad = bytearray(msg)
        bad[pos] ^= 1
        assert not checker.check_mac1(bytes(bad)), pos


def test_check_mac1_wants_a_handshake_message() -> None:
    with pytest.raises(ValueError, match=r"^not a handshake message \(64 bytes\)$"):
        CookieChecker(R_PUBLIC).check_mac1(bytes(64))


def test_cookie_reply_round_trip_gives_valid_mac2() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    first = gen.add_macs(handshake_bytes(), now=10.0)
    assert not checker.check_mac2(first, SOURCE, now=10.0)  # no secret yet
    gen.consume_reply(reply_for(checker, first, now=10.0), now=10.5)
    assert gen.cookie_set == 10.5
    retry = gen.add_macs(handshake_bytes(fill=0xCD), now=11.0)
    assert retry[-16:] != bytes(16)
    assert checker.check_mac1(retry)
    assert checker.check_mac2(retry, SOURCE, now=11.0)


def test_mac2_is_bound_to_the_source() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    gen.consume_reply(reply_for(checker, gen.add_macs(handshake_bytes(), now=0.0), now=0.0), now=0.0)
    retry = gen.add_macs(handshake_bytes(), now=1.0)
    assert not checker.check_mac2(retry, OTHER_SOURCE, now=1.0)


def test_cookie_reply_is_64_bytes_and_names_the_sender() -> None:
    checker = CookieChecker(R_PUBLIC)
    raw = checker.create_reply(handshake_bytes(2), 0xAABBCCDD, SOURCE, now=0.0, rng=rng().randbytes)
    assert len(raw) == 64
    assert raw[:8] == bytes.fromhex("03000000ddccbbaa")


def test_reply_without_a_sent_message_is_refused() -> None:
    checker = CookieChecker(R_PUBLIC)
    reply = reply_for(checker, handshake_bytes(), now=0.0)
    with pytest.raises(CookieError, match=r"^cookie reply: no handshake message sent$"):
        CookieGenerator(R_PUBLIC).consume_reply(reply, now=0.0)


def test_reply_to_an_older_mac1_is_refused() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    first = gen.add_macs(handshake_bytes(fill=1), now=0.0)
    gen.add_macs(handshake_bytes(fill=2), now=1.0)  # a retry: last mac1 changes
    with pytest.raises(CookieError, match=r"^cookie reply: does not decrypt$"):
        gen.consume_reply(reply_for(checker, first, now=1.0), now=1.0)
    assert gen.cookie_set is None


def test_reply_from_another_responder_is_refused() -> None:
    gen = CookieGenerator(R_PUBLIC)
    msg = gen.add_macs(handshake_bytes(), now=0.0)
    stranger = CookieChecker(public_key(clamp(bytes(range(2, 34)))))
    with pytest.raises(CookieError, match=r"^cookie reply: does not decrypt$"):
        gen.consume_reply(reply_for(stranger, msg, now=0.0), now=0.0)


def test_stale_secret_invalidates_mac2() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    gen.consume_reply(reply_for(checker, gen.add_macs(handshake_bytes(), now=0.0), now=0.0), now=0.0)
    retry = gen.add_macs(handshake_bytes(), now=0.0)
    assert checker.check_mac2(retry, SOURCE, now=120.0)
    assert not checker.check_mac2(retry, SOURCE, now=120.001)


def test_secret_is_renewed_lazily_after_120s() -> None:
    checker = CookieChecker(R_PUBLIC)
    draws: list[int] = []

    def counting_rng(n: int) -> bytes:
        draws.append(n)
        return random.Random(len(draws)).randbytes(n)

    msg = CookieGenerator(R_PUBLIC).add_macs(handshake_bytes(), now=0.0)
    checker.create_reply(msg, 1, SOURCE, now=0.0, rng=counting_rng)
    checker.create_reply(msg, 1, SOURCE, now=120.0, rng=counting_rng)
    assert draws == [32, 24, 24]  # secret once, then a nonce per reply
    checker.create_reply(msg, 1, SOURCE, now=120.5, rng=counting_rng)
    assert draws == [32, 24, 24, 32, 24]


def test_new_secret_invalidates_old_cookie() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    gen.consume_reply(reply_for(checker, gen.add_macs(handshake_bytes(), now=0.0), now=0.0), now=0.0)
    checker.create_reply(handshake_bytes(), 1, OTHER_SOURCE, now=200.0, rng=random.Random(9).randbytes)
    retry = gen.add_macs(handshake_bytes(), now=100.0)  # cookie still fresh for the initiator
    assert not checker.check_mac2(retry, SOURCE, now=200.0)


def test_initiator_stops_using_cookie_after_120s() -> None:
    gen, checker = CookieGenerator(R_PUBLIC), CookieChecker(R_PUBLIC)
    gen.consume_reply(reply_for(checker, gen.add_macs(handshake_bytes(), now=0.0), now=0.0), now=5.0)
    assert gen.add_macs(handshake_bytes(), now=125.0)[-16:] != bytes(16)
    assert gen.add_macs(handshake_bytes(), now=125.001)[-16:] == bytes(16)


# --- Rate limiter (wireguard-go ratelimiter_test.go, fake clock) -----------------------

PER_TOKEN_NS = 1_000_000_000 // 20
IPS = [
    address_bytes(a)
    for a in (
        "127.0.0.1",
        "192.168.1.1",
        "172.167.2.3",
        "97.231.252.215",
        "2001:0db8:0a0b:12f0:0000:0000:0000:0001",
        "f5c2:818f:c052:655a:9860:b136:6894:25f0",
    )
]
# (allowed, wait before, in ns); each step also waits 1 ns more, as wireguard-go's fake clock
STEPS = [
    *[(True, 0)] * 5,  # initial burst
    (False, 0),  # after burst
    (True, PER_TOKEN_NS),  # refilled one packet
    (False, 0),  # not refilled enough
    (True, 2 * PER_TOKEN_NS),  # refilled a two packet burst
    (True, 0),  # second packet of it
    (False, 0),  # packet following the two packet burst
]


def test_rate_limiter_wireguard_go_sequence() -> None:
    limiter = RateLimiter()
    now_ns = 1000 * 1_000_000_000
    for step, (allowed, wait) in enumerate(STEPS):
        now_ns += wait + 1
        for ip in IPS:
            assert limiter.allow(ip, now=now_ns / 1e9) is allowed, (step, ip)


def test_rate_limiter_frozen_clock_allows_four() -> None:
    # A new source is let through and left with 4 packets' worth, spent only while "> cost".
    limiter = RateLimiter()
    assert [limiter.allow(IPS[0], now=5.0) for _ in range(6)] == [True, True, True, True, False, False]


def test_rate_limiter_sources_are_independent() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.allow(IPS[0], now=1.0)
    assert limiter.allow(IPS[1], now=1.0)


def test_rate_limiter_steady_20_per_second() -> None:
    limiter = RateLimiter()
    allowed = sum(limiter.allow(IPS[0], now=i / 100) for i in range(1000))  # 100/s for 10 s
    assert 200 <= allowed <= 205


def test_rate_limiter_purges_idle_sources() -> None:
    limiter = RateLimiter()
    limiter.allow(IPS[0], now=0.0)
    limiter.allow(IPS[1], now=0.9)
    assert len(limiter) == 2
    limiter.allow(IPS[2], now=1.5)  # purge: IPS[0] idle 1.5 s, IPS[1] 0.6 s
    assert len(limiter) == 2
    for _ in range(10):
        limiter.allow(IPS[0], now=1.5)
    assert not limiter.allow(IPS[0], now=1.5)  # came back as a new source, and spent it
