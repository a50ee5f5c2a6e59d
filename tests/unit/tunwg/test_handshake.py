"""Noise_IKpsk2 handshake: the known-answer test of reference section 9, and the checks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from modules.tunwg.wg.constants import DEFAULT_MTU
from modules.tunwg.wg.cookie import CookieChecker, CookieGenerator
from modules.tunwg.wg.crypto import DH, public_key
from modules.tunwg.wg.handshake import (
    Handshake,
    HandshakeError,
    HandshakeState,
    OpenedInitiation,
    SessionKeys,
    StaticIdentity,
    open_initiation,
    precompute_static_static,
)
from modules.tunwg.wg.keypair import Keypair, pad
from modules.tunwg.wg.keys import PresharedKey, PublicKey, from_base64, is_zero
from modules.tunwg.wg.messages import CookieReply, Initiation, MessageError, Response, parse

if TYPE_CHECKING:
    from collections.abc import Callable

# --- The KAT (reference section 9; the initiation was accepted by wireguard-go) ---

I_PRIVATE = from_base64("8IVQYjLDQATP10dag3l/uIQVd5rtv/rCjgrs+vIW0mA=")
I_PUBLIC = from_base64("t0C2Oxkqdt4nCvV2dLg4ieXq0WFh4fa9XZ/6XCGaLkU=")
R_PRIVATE = from_base64("EFaRnO7ZIOukplkuBTxYtngC43Wy1Tubz5wegxvXaHk=")
R_PUBLIC = from_base64("0tIPqeBME/BGvQtBwDAK193gxp3Cy7WlrdvKfBWryCA=")
I_EPHEMERAL = from_base64("AOYUYf3MpWAxA5dRZ5X+9X42oRgNg9JaNjFmHoovV2s=")
R_EPHEMERAL = from_base64("YLCvmCjSwkc0URTKdE7Y4JI11OHLBhXeeF3d6SdbMXM=")
PSK = PresharedKey(from_base64("IxhjQWSZbIGsgwXOZPHxqVPW4/t0aELbYXwn+Pc79qQ="))
WALL_NS = 0x6553F100 * 1_000_000_000  # TAI64N 400000006553f10a00000000
I_INDEX = 0x01020304
R_INDEX = 0x05060708

INITIATION = bytes.fromhex(
    "01000000040302018b470b00cae7666fd656805fa18b38161364e9863e514da525c0b9dd575d0120"
    "cbae993e122167b72fc0f21f9adb4e5e406c5b1b13ddb26b88172fa413b18312972c98ca0f76ec6d"
    "ac29bc56ebeb0f616d94675b53bf03aa749a89fc0cd7bafd3f47abe9656b2af042947932007bbaa8"
    "768fb6c9de795236ee0ec29000000000000000000000000000000000"
)
RESPONSE = bytes.fromhex(
    "020000000807060504030201d717d8526fbd2044cd364e21e925dd1d1f392f5e2570f95f53e7a4a7"
    "47ff1f1985fb55e5a7a1f489ee3556b4dfd980d3f9dde1651d0b108bb8d117abdeb8e95c00000000"
    "000000000000000000000000"
)
T1 = bytes.fromhex("4fc0505938ba39d4aaed6edea6717f24bb091a4bfcc38a440f03db70af1984c7")
T2 = bytes.fromhex("cfbd888777319ab60ffd7ea3ddc8b73b5e35e60f3d82b6a67a180fd326f4fcf2")
PING = bytes.fromhex("4500005400000000400166a70a0000010a000002080000eb00010001") + bytes(range(0x38))
TRANSPORT = bytes.fromhex(
    "04000000080706050000000000000000ed95c4f2fab138ee9e6d7a4768989064f3b663f01316337d"
    "4db90668742083c58738e814a94e9e77ae78771f1f330675807c98af5098489dddc8086ea5fd6837"
    "c81659a1cbfcee061d019b7cf043df0c6c59a220e9a438bd87f71b1e01cf99f29d396052bfc0c952"
    "ed0aaf75ad39faa1"
)
KEEPALIVE = bytes.fromhex("040000000403020100000000000000003e4c8c9c76ce1f285b86071b5e313c14")

LOW_ORDER = [
    from_base64(k)
    for k in (
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
        "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
        "7P///////////////////////////////////////38=",
        "7f///////////////////////////////////////38=",
        "7v///////////////////////////////////////38=",
    )
]


class FixedRng:
    """``rng(n)`` handing out given chunks in order; each must be asked for at its exact size."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        chunk = self.chunks.pop(0)
        assert len(chunk) == n
        return chunk


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def as_initiation(data: bytes) -> Initiation:
    msg = parse(data)
    assert isinstance(msg, Initiation)
    return msg


def as_response(data: bytes) -> Response:
    msg = parse(data)
    assert isinstance(msg, Response)
    return msg


SOURCE = b"\x7f\x00\x00\x01\x0f\x27"  # 127.0.0.1:9999, as cookie_source() makes it


@dataclass
class Side:
    """One end: identity, its handshake with the other, its mac generator and checker."""

    identity: StaticIdentity
    handshake: Handshake
    macs: CookieGenerator
    checker: CookieChecker


def make_pair(
    i_private: bytes = I_PRIVATE, r_private: bytes = R_PRIVATE, psk: bytes = PSK
) -> tuple[Side, Side]:
    ids = [StaticIdentity.from_private_key(k) for k in (i_private, r_private)]
    sides = []
    for me, other in ((ids[0], ids[1]), (ids[1], ids[0])):
        hs = Handshake(
            remote_static=other.public_key,
            static_static=precompute_static_static(me, other.public_key),
            preshared_key=PresharedKey(psk),
        )
        sides.append(Side(me, hs, CookieGenerator(other.public_key), CookieChecker(me.public_key)))
    return sides[0], sides[1]


def initiate(i: Side, *, eph: bytes = I_EPHEMERAL, wall_ns: int = WALL_NS, index: int = I_INDEX) -> bytes:
    raw = i.handshake.create_initiation(i.identity, local_index=index, rng=FixedRng(eph), wall_ns=wall_ns)
    return i.macs.add_macs(raw, now=0.0)


def accept_initiation(r: Side, data: bytes, *, now: float = 0.0, under_load: bool = False) -> None:
    """What the Device does with an initiation: parse, mac1, (mac2), open, find peer, consume."""
    msg = parse(data)
    assert isinstance(msg, Initiation)
    if not r.checker.check_mac1(data):
        raise MessageError("bad mac1")
    if under_load and not r.checker.check_mac2(data, SOURCE, now=now):
        raise MessageError("bad mac2")
    opened = open_initiation(r.identity, msg)
    if opened.initiator_static != r.handshake.remote_static:
        raise MessageError("unknown peer")
    r.handshake.consume_initiation(opened, now=now)


def respond(r: Side, *, eph: bytes = R_EPHEMERAL) -> bytes:
    return r.macs.add_macs(r.handshake.create_response(local_index=R_INDEX, rng=FixedRng(eph)), now=0.0)


def accept_response(i: Side, data: bytes) -> None:
    msg = as_response(data)
    if not i.checker.check_mac1(data):
        raise MessageError("bad mac1")
    i.handshake.consume_response(i.identity, msg)


def state(side: Side) -> HandshakeState:
    """The state, read through a call so mypy does not narrow it across steps."""
    return side.handshake.state


def kat_sessions() -> tuple[SessionKeys, SessionKeys]:
    i, r = make_pair()
    accept_initiation(r, initiate(i))
    accept_response(i, respond(r))
    return i.handshake.begin_session(), r.handshake.begin_session()


# --- KAT -------------------------------------------------------------------------


def test_kat_static_public_keys() -> None:
    assert public_key(I_PRIVATE) == I_PUBLIC
    assert public_key(R_PRIVATE) == R_PUBLIC


def test_kat_initiation_is_byte_identical() -> None:
    i, _ = make_pair()
    assert initiate(i) == INITIATION


def test_kat_response_is_byte_identical() -> None:
    _, r = make_pair()
    accept_initiation(r, INITIATION)
    assert respond(r) == RESPONSE


def test_kat_responder_recovers_initiator_identity_and_timestamp() -> None:
    _, r = make_pair()
    accept_initiation(r, INITIATION)
    assert r.handshake.last_timestamp == bytes.fromhex("400000006553f10a00000000")
    assert r.handshake.remote_index == I_INDEX
    assert r.handshake.state is HandshakeState.INIT_RECEIVED


def test_kat_session_keys() -> None:
    ki, kr = kat_sessions()
    assert (ki.send_key, ki.receive_key) == (T1, T2)
    assert (kr.send_key, kr.receive_key) == (T2, T1)
    assert (ki.local_index, ki.remote_index, ki.is_initiator) == (I_INDEX, R_INDEX, True)
    assert (kr.local_index, kr.remote_index, kr.is_initiator) == (R_INDEX, I_INDEX, False)


def test_kat_transport_initiator_to_responder() -> None:
    ki, kr = kat_sessions()
    data = Keypair.from_session(ki, now=0.0).encrypt(pad(PING, DEFAULT_MTU), now=0.0)
    assert data == TRANSPORT
    assert Keypair.from_session(kr, now=0.0).decrypt(data, now=0.0) == pad(PING, DEFAULT_MTU)


def test_kat_keepalive_responder_to_initiator() -> None:
    ki, kr = kat_sessions()
    data = Keypair.from_session(kr, now=0.0).encrypt(b"", now=0.0)
    assert data == KEEPALIVE
    assert Keypair.from_session(ki, now=0.0).decrypt(data, now=0.0) == b""


# --- Both sides agree after every step (wireguard-go noise_test.go) ---------------


def test_peers_agree_after_every_step() -> None:
    rng = random.Random(7)
    i, r = make_pair(rng.randbytes(32), rng.randbytes(32), rng.randbytes(32))
    assert state(i) is state(r) is HandshakeState.ZEROED

    init = initiate(i, eph=rng.randbytes(32), index=11)
    assert state(i) is HandshakeState.INIT_SENT
    accept_initiation(r, init)
    assert state(r) is HandshakeState.INIT_RECEIVED
    assert r.handshake.hash == i.handshake.hash
    assert r.handshake.chaining_key == i.handshake.chaining_key

    resp = r.handshake.create_response(local_index=22, rng=FixedRng(rng.randbytes(32)))
    resp = r.macs.add_macs(resp, now=0.0)
    assert state(r) is HandshakeState.RESPONSE_SENT
    accept_response(i, resp)
    assert state(i) is HandshakeState.RESPONSE_RECEIVED
    assert r.handshake.hash == i.handshake.hash
    assert r.handshake.chaining_key == i.handshake.chaining_key

    ki, kr = i.handshake.begin_session(), r.handshake.begin_session()
    assert (ki.send_key, ki.receive_key) == (kr.receive_key, kr.send_key)
    assert (ki.local_index, ki.remote_index) == (kr.remote_index, kr.local_index) == (11, 22)
    assert state(i) is state(r) is HandshakeState.ZEROED
    assert is_zero(i.handshake.chaining_key) and is_zero(i.handshake.local_ephemeral)
    assert i.handshake.local_index is None

    a, b = Keypair.from_session(ki, now=0.0), Keypair.from_session(kr, now=0.0)
    assert b.decrypt(a.encrypt(b"ping", now=0.0), now=0.0) == b"ping"
    assert a.decrypt(b.encrypt(b"pong", now=0.0), now=0.0) == b"pong"


def test_begin_session_refused_mid_handshake() -> None:
    i, _ = make_pair()
    initiate(i)
    with pytest.raises(RuntimeError, match=r"^begin_session with handshake initiation sent$"):
        i.handshake.begin_session()


# --- Replay and flood -------------------------------------------------------------


def test_replayed_initiation_rejected() -> None:
    i, r = make_pair()
    init = initiate(i)
    accept_initiation(r, init, now=0.0)
    with pytest.raises(HandshakeError, match=r"^initiation: replayed timestamp$"):
        accept_initiation(r, init, now=10.0)


def test_older_timestamp_rejected() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, wall_ns=WALL_NS + 10**9), now=0.0)
    with pytest.raises(HandshakeError, match=r"^initiation: replayed timestamp$"):
        accept_initiation(r, initiate(i, wall_ns=WALL_NS), now=10.0)


def test_timestamp_within_whitening_step_counts_as_replay() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, wall_ns=WALL_NS), now=0.0)
    with pytest.raises(HandshakeError, match=r"^initiation: replayed timestamp$"):
        accept_initiation(r, initiate(i, wall_ns=WALL_NS + 10_000_000), now=10.0)


def test_newer_timestamp_accepted_again() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, wall_ns=WALL_NS), now=0.0)
    accept_initiation(r, initiate(i, wall_ns=WALL_NS + 20_000_000), now=10.0)
    assert r.handshake.last_timestamp == bytes.fromhex("400000006553f10a01000000")


@pytest.mark.parametrize(("later", "accepted"), [(0.019, False), (0.020, False), (0.021, True)])
def test_initiation_flood_rule_20ms(later: float, accepted: bool) -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, wall_ns=WALL_NS), now=0.0)  # from 0.0, `later` is exact
    second = initiate(i, wall_ns=WALL_NS + 10**9)
    if accepted:
        accept_initiation(r, second, now=later)
        assert r.handshake.last_initiation_consumption == later
    else:
        with pytest.raises(HandshakeError, match=r"^initiation: flood \(20 ms or less since the last\)$"):
            accept_initiation(r, second, now=later)


def test_rejected_initiation_changes_nothing() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, wall_ns=WALL_NS), now=0.0)
    hs = r.handshake
    before = (hs.hash, hs.chaining_key, hs.last_timestamp, hs.remote_index, hs.last_initiation_consumption)
    with pytest.raises(HandshakeError):
        accept_initiation(r, initiate(i, wall_ns=WALL_NS + 10**9, index=99), now=0.001)
    after = (hs.hash, hs.chaining_key, hs.last_timestamp, hs.remote_index, hs.last_initiation_consumption)
    assert after == before


def test_last_timestamp_survives_clear() -> None:
    i, r = make_pair()
    init = initiate(i)
    accept_initiation(r, init)
    r.handshake.clear()
    with pytest.raises(HandshakeError, match=r"^initiation: replayed timestamp$"):
        accept_initiation(r, init, now=10.0)


# --- Wrong keys ------------------------------------------------------------------


def test_initiation_to_wrong_responder_key_does_not_open() -> None:
    i, _ = make_pair()
    _, stranger = make_pair(r_private=bytes(range(32)))
    with pytest.raises(HandshakeError, match=r"^initiation: static key does not decrypt$"):
        open_initiation(stranger.identity, as_initiation(initiate(i)))


def test_initiation_from_key_without_matching_static_static_fails() -> None:
    # The responder knows the initiator's public key but computed SS from another private key.
    i, r = make_pair()
    r.handshake.static_static = DH(bytes(range(32)), I_PUBLIC)
    with pytest.raises(HandshakeError, match=r"^initiation: timestamp does not decrypt$"):
        accept_initiation(r, initiate(i))


def test_response_from_wrong_responder_key_fails() -> None:
    # I initiates to R; M (another key) answers an initiation I made to M, same index and ephemeral.
    m_private = bytes(range(32))
    i, _ = make_pair()
    i_to_m, m = make_pair(r_private=m_private)
    initiate(i)
    accept_initiation(m, initiate(i_to_m))
    with pytest.raises(HandshakeError, match=r"^response: does not authenticate$"):
        accept_response(i, respond(m))
    assert i.handshake.state is HandshakeState.INIT_SENT


def test_response_with_different_psk_fails() -> None:
    i, _ = make_pair()
    _, r = make_pair(psk=bytes(32))
    accept_initiation(r, initiate(i))
    with pytest.raises(HandshakeError, match=r"^response: does not authenticate$"):
        accept_response(i, respond(r))


def test_response_without_initiation_refused() -> None:
    i, r = make_pair()
    with pytest.raises(HandshakeError, match=r"^response: handshake is zeroed, not initiation received$"):
        r.handshake.create_response(local_index=1, rng=FixedRng(R_EPHEMERAL))
    with pytest.raises(HandshakeError, match=r"^response: handshake is zeroed, not initiation sent$"):
        accept_response(i, RESPONSE)


def test_response_to_other_index_refused() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i, index=5))
    resp = r.handshake.create_response(local_index=R_INDEX, rng=FixedRng(R_EPHEMERAL))
    i.handshake.local_index = 6
    with pytest.raises(HandshakeError, match=r"^response: wrong receiver index$"):
        accept_response(i, r.macs.add_macs(resp, now=0.0))


def test_crossing_initiations_leave_one_session() -> None:
    i, r = make_pair()
    init_i = initiate(i, wall_ns=WALL_NS)
    raw_r = r.handshake.create_initiation(
        r.identity, local_index=R_INDEX, rng=FixedRng(R_EPHEMERAL), wall_ns=WALL_NS
    )
    init_r = r.macs.add_macs(raw_r, now=0.0)
    accept_initiation(r, init_i)  # overwrites r's own INIT_SENT
    accept_initiation(i, init_r)
    resp_r = respond(r)
    text = r"^response: handshake is initiation received, not initiation sent$"
    with pytest.raises(HandshakeError, match=text):
        accept_response(i, resp_r)


def test_consume_initiation_for_another_peer_is_a_caller_bug() -> None:
    i, r = make_pair()
    opened = open_initiation(r.identity, as_initiation(initiate(i)))
    other = OpenedInitiation(
        initiator_static=PublicKey(bytes(32)), message=opened.message, chaining_key=b"", hash=b""
    )
    with pytest.raises(ValueError, match=r"^initiation is from another peer$"):
        r.handshake.consume_initiation(other, now=0.0)


# --- Low-order keys (reference section 9) -------------------------------------------


@pytest.mark.parametrize("bad", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_low_order_peer_key_cannot_initiate(bad: bytes) -> None:
    me = StaticIdentity.from_private_key(I_PRIVATE)
    ss = precompute_static_static(me, bad)
    assert is_zero(ss)
    hs = Handshake(remote_static=PublicKey(bad), static_static=ss)
    rng = FixedRng(I_EPHEMERAL)
    with pytest.raises(HandshakeError, match=r"^initiation: peer public key is low-order$"):
        hs.create_initiation(me, local_index=1, rng=rng, wall_ns=WALL_NS)
    assert hs.state is HandshakeState.ZEROED
    assert rng.chunks == [I_EPHEMERAL]  # refused before drawing an ephemeral


@pytest.mark.parametrize("bad", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_low_order_ephemeral_in_initiation_refused(bad: bytes) -> None:
    i, r = make_pair()
    data = bytearray(initiate(i))
    data[8:40] = bad
    with pytest.raises(HandshakeError, match=r"^initiation: low-order ephemeral key$"):
        open_initiation(r.identity, as_initiation(bytes(data)))


@pytest.mark.parametrize("bad", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_low_order_ephemeral_in_response_refused(bad: bytes) -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i))
    data = bytearray(respond(r))
    data[12:44] = bad
    with pytest.raises(HandshakeError, match=r"^response: low-order ephemeral key$"):
        i.handshake.consume_response(i.identity, as_response(bytes(data)))


@pytest.mark.parametrize("bad", LOW_ORDER, ids=range(len(LOW_ORDER)))
def test_low_order_static_initiator_refused_by_responder(bad: bytes) -> None:
    r = StaticIdentity.from_private_key(R_PRIVATE)
    hs = Handshake(remote_static=PublicKey(bad), static_static=precompute_static_static(r, bad))
    opened = OpenedInitiation(
        initiator_static=PublicKey(bad), message=as_initiation(INITIATION), chaining_key=b"", hash=b""
    )
    with pytest.raises(HandshakeError, match=r"^initiation: peer public key is low-order$"):
        hs.consume_initiation(opened, now=0.0)


# --- Tampering -----------------------------------------------------------------------


def _responder_accepts(r: Side, data: bytes, *, under_load: bool) -> bool:
    try:
        accept_initiation(r, data, under_load=under_load)
    except MessageError:
        return False
    return True


def test_tampering_any_initiation_byte_is_rejected() -> None:
    i, r = make_pair()
    # Give I a cookie from R, so its initiation carries a valid mac2 to tamper with.
    reply = parse(r.checker.create_reply(initiate(i), I_INDEX, SOURCE, now=0.0, rng=seeded_rng(1)))
    assert isinstance(reply, CookieReply)
    i.macs.consume_reply(reply, now=0.0)
    good = initiate(i)
    for pos in range(len(good)):
        bad = bytearray(good)
        bad[pos] ^= 0x01
        # mac2 (132..147) is only checked under load, as in wireguard-go
        assert not _responder_accepts(r, bytes(bad), under_load=pos >= 132), pos
    assert r.handshake.state is HandshakeState.ZEROED
    assert _responder_accepts(r, good, under_load=True)


def test_tampering_any_response_byte_is_rejected() -> None:
    i, r = make_pair()
    accept_initiation(r, initiate(i))
    good = respond(r)
    for pos in range(76):  # mac2 (76..91) is only checked under load
        bad = bytearray(good)
        bad[pos] ^= 0x80
        with pytest.raises(MessageError):
            accept_response(i, bytes(bad))
    assert i.handshake.state is HandshakeState.INIT_SENT
    accept_response(i, good)
