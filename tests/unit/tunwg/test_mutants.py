"""Behaviour the mutation run over modules/tunwg/wg/ found untested (issue 18).

Each test here fails with one or more surviving mutmut mutants applied and
passes without them; docs/reliability.md ("Mutation testing") lists which,
and the mutants judged equivalent with the reason.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import signal

import pytest

from modules.tunwg.wg import (
    DeliverPacket,
    Device,
    Effect,
    Endpoint,
    SendDatagram,
    SetRequest,
    UapiError,
    UapiReader,
)
from modules.tunwg.wg.allowedips import packet_source
from modules.tunwg.wg.constants import (
    MAX_CONTENT_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_KEEPALIVE_SIZE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_TIMEOUT,
    REPLAY_WINDOW,
)
from modules.tunwg.wg.cookie import CookieChecker, CookieGenerator, cookie_source
from modules.tunwg.wg.crypto import public_key
from modules.tunwg.wg.device import _LoadMeter
from modules.tunwg.wg.keypair import Keypair
from modules.tunwg.wg.keys import clamp
from modules.tunwg.wg.messages import CookieReply, Initiation, Response, Transport, parse, transport_receiver
from modules.tunwg.wg.replay import ReplayFilter
from modules.tunwg.wg.timers import GIVE_UP_AFTER_ATTEMPTS
from modules.tunwg.wg.uapi import CLOSED, MAX_LINE, GetRequest, _parse_uint
from tests.unit.tunwg.test_device import (
    A_PK,
    A_SK,
    B_PK,
    B_SK,
    FD00_1,
    FD00_2,
    PING_AB,
    PONG_BA,
    PORT_A,
    PORT_B,
    WALL0,
    Net,
    Node,
    counters,
    established,
    handshake_ns,
    ipv4,
    make_pair,
    peer_line,
    peer_of,
    sent,
    set_request,
)
from tests.unit.tunwg.test_uapi import feed

# --- Pure parts ---------------------------------------------------------------------------


def test_transport_receiver_takes_a_keepalive_and_the_largest_message() -> None:
    keepalive = Transport(receiver=7, counter=0, encrypted_packet=bytes(16)).pack()
    assert len(keepalive) == MESSAGE_KEEPALIVE_SIZE == 32
    assert transport_receiver(keepalive) == 7
    assert transport_receiver(b"\x04\x00\x00\x00\x05\x00\x00\x00" + bytes(MAX_MESSAGE_SIZE - 8)) == 5


def test_packet_source_of_a_header_only_packet() -> None:
    v4 = bytes.fromhex("450000140000000040010000c6336401c0000201")  # 198.51.100.1 -> 192.0.2.1
    assert packet_source(v4) == bytes([198, 51, 100, 1])
    src6 = bytes.fromhex("20010db8000000000000000000000001")
    v6 = bytes.fromhex("60000000000000ff") + src6 + bytes.fromhex("20010db8000000000000000000000002")
    assert len(v6) == 40
    assert packet_source(v6) == src6


def test_replay_filter_after_reset_takes_counter_zero_again() -> None:
    f = ReplayFilter()
    assert f.validate_counter(0)
    assert f.validate_counter(64)
    assert not f.validate_counter(0)
    f.reset()
    assert f.validate_counter(0)
    assert f.validate_counter(64)


def test_transport_record_refuses_a_message_over_65535_bytes() -> None:
    largest = Transport(receiver=1, counter=2, encrypted_packet=bytes(MAX_MESSAGE_SIZE - 16))
    assert len(largest.pack()) == MAX_MESSAGE_SIZE
    with pytest.raises(ValueError, match=r"^encrypted_packet must be 16\.\.65519 bytes$"):
        Transport(receiver=1, counter=2, encrypted_packet=bytes(MAX_MESSAGE_SIZE - 15))


_GOOD_FIELDS: dict[type, dict[str, object]] = {
    Initiation: {
        "sender": 1,
        "ephemeral": bytes(32),
        "encrypted_static": bytes(48),
        "encrypted_timestamp": bytes(28),
        "mac1": bytes(16),
        "mac2": bytes(16),
    },
    Response: {
        "sender": 1,
        "receiver": 2,
        "ephemeral": bytes(32),
        "encrypted_nothing": bytes(16),
        "mac1": bytes(16),
        "mac2": bytes(16),
    },
    CookieReply: {"receiver": 1, "nonce": bytes(24), "encrypted_cookie": bytes(32)},
}


@pytest.mark.parametrize(("record", "field"), [(r, f) for r, fields in _GOOD_FIELDS.items() for f in fields])
def test_every_field_of_a_handshake_record_is_checked_and_named(record: type, field: str) -> None:
    good = _GOOD_FIELDS[record]
    record(**good)  # the good values are accepted
    value = good[field]
    if isinstance(value, int):
        bad: list[object] = [-1, 2**32]
        text = rf"^{field} must be a u32$"
        record(**{**good, field: 2**32 - 1})
    else:
        assert isinstance(value, bytes)
        bad = [value[:-1], value + b"\x00"]
        text = rf"^{field} must be {len(value)} bytes, not {len(value) - 1}$"
    for i, v in enumerate(bad):
        with pytest.raises(ValueError, match=text if i == 0 else rf"^{field} must be"):
            record(**{**good, field: v})


def test_every_field_of_a_transport_record_is_checked_and_named() -> None:
    Transport(receiver=2**32 - 1, counter=2**64 - 1, encrypted_packet=bytes(16))
    for receiver in (-1, 2**32):
        with pytest.raises(ValueError, match=r"^receiver must be a u32$"):
            Transport(receiver=receiver, counter=0, encrypted_packet=bytes(16))
    with pytest.raises(ValueError, match=r"^counter must be a u64$"):
        Transport(receiver=0, counter=-1, encrypted_packet=bytes(16))
    with pytest.raises(ValueError, match=r"^encrypted_packet must be 16\.\.65519 bytes$"):
        Transport(receiver=0, counter=0, encrypted_packet=bytes(15))


@pytest.mark.parametrize(("port", "tail"), [(0, b"\x00\x00"), (1, b"\x01\x00"), (0xFFFF, b"\xff\xff")])
def test_cookie_source_takes_every_udp_port(port: int, tail: bytes) -> None:
    assert cookie_source("192.0.2.1", port) == bytes([192, 0, 2, 1]) + tail


def test_cookie_secret_is_fresh_for_120s_after_it_was_made_not_after_zero() -> None:
    r_public = public_key(clamp(bytes(range(32))))
    gen, checker = CookieGenerator(r_public), CookieChecker(r_public)
    source = cookie_source("192.0.2.1", 51820)
    first = gen.add_macs(bytes([1, 0, 0, 0]) + bytes([0xAB]) * 112 + bytes(32), now=1000.0)
    reply = parse(checker.create_reply(first, 7, source, now=1000.0, rng=random.Random(3).randbytes))
    assert isinstance(reply, CookieReply)
    gen.consume_reply(reply, now=1000.5)
    retry = gen.add_macs(bytes([1, 0, 0, 0]) + bytes([0xCD]) * 112 + bytes(32), now=1001.0)
    assert checker.check_mac2(retry, source, now=1001.0)
    assert checker.check_mac2(retry, source, now=1120.0)
    assert not checker.check_mac2(retry, source, now=1120.001)


def _initiator_keypair(created: float) -> Keypair:
    """An initiator's keypair made at ``created`` (keys and indices do not matter here)."""
    return Keypair(
        send_key=bytes(32),
        receive_key=bytes(32),
        local_index=1,
        remote_index=2,
        is_initiator=True,
        created=created,
    )


def test_rekey_after_messages_is_past_2_to_the_60_and_time_counts_from_creation() -> None:
    a = _initiator_keypair(created=1000.0)
    a.send_counter = REKEY_AFTER_MESSAGES
    assert not a.needs_rekey_sending(1001.0)  # wireguard-go: sendNonce > RekeyAfterMessages
    a.send_counter = REKEY_AFTER_MESSAGES + 1
    assert a.needs_rekey_sending(1001.0)
    a.send_counter = 0
    assert not a.needs_rekey_sending(1120.0)
    assert a.needs_rekey_sending(1120.1)


def test_last_minute_rekey_counts_from_creation_not_from_zero() -> None:
    a = _initiator_keypair(created=1000.0)
    assert not a.needs_rekey_receiving(1001.0)
    assert not a.needs_rekey_receiving(1165.0)
    assert a.needs_rekey_receiving(1165.1)


# --- UAPI framing: the rest of a failed set body is skipped up to a blank line ---------------


def test_crlf_ends_the_skipped_rest_of_a_failed_set() -> None:
    assert feed(b"set=1\nbogus\nlisten_port=1\n\r\nget=1\n\n") == [
        SetRequest(lines=(), errno=errno.EPROTO),
        GetRequest(),
        CLOSED,
    ]


def test_one_byte_or_cr_led_lines_do_not_end_the_skip() -> None:
    # "x" and "\rx" are not blank: they are skipped with the rest of the body,
    # so the get=1 inside it is no request.
    for line in (b"x\n", b"\rx\n"):
        assert feed(b"set=1\nbogus\n" + line + b"get=1\n\n") == [
            SetRequest(lines=(), errno=errno.EPROTO),
            CLOSED,
        ]


# --- The device, through UAPI and its effects --------------------------------------------------


def test_fwmark_set_is_reported_by_get_and_zero_hides_it() -> None:
    net, a, _b = make_pair()
    net.configure(a, "fwmark=51820\n")
    assert "\nfwmark=51820\n" in a.device.uapi_get().decode()
    net.configure(a, "fwmark=0\n")
    assert "fwmark=" not in a.device.uapi_get().decode()


def test_allowed_ip_with_minus_removes_exactly_that_prefix() -> None:
    net, a, _b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\nallowed_ip=-10.0.0.2/32\n")
    assert peer_of(a, B_PK)["allowed_ip"] == ["fd00::2/128"]
    n = len(net.wire)
    net.write(a, PING_AB)  # no route to 10.0.0.2 any more: no handshake, dropped and counted
    assert net.wire[n:] == []
    assert a.device.stats.dropped_no_route == 1


def test_removing_a_peer_owed_a_keepalive_by_up() -> None:
    net, a, _b = make_pair(up=False)
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    assert a.device.up(now=0.0) == []  # the keepalive is owed, sent at the next tick
    net.configure(a, f"public_key={B_PK.hex()}\nremove=true\n")
    assert B_PK not in a.device.peers
    net.run_until(30.0)
    assert net.wire == []


def test_staged_packets_flushed_are_counted_across_give_ups() -> None:
    net, a, _b = make_pair()
    net.blocked.add(PORT_B)
    net.write(a, PING_AB)
    net.run_until(300.0)  # twenty tries, then give up: the ping is dropped
    assert a.device.stats.dropped_staged_flushed == 1
    net.write(a, PING_AB)
    net.write(a, PING_AB)
    net.run_until(600.0)
    assert a.device.stats.dropped_staged_flushed == 3


def test_unsent_datagram_is_taken_back_from_tx_bytes() -> None:
    net, a, b = make_pair()
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]
    before = counters(a, B_PK)
    effects = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)
    datagrams = [e for e in effects if isinstance(e, SendDatagram)]
    assert len(datagrams) == 1
    assert counters(a, B_PK)[0] == before[0] + len(datagrams[0].data)
    peer = datagrams[0].peer
    assert peer is not None
    peer.unsent(datagrams[0].data)  # what the glue does when sendto fails
    assert counters(a, B_PK) == before


def test_replace_allowed_ips_drops_the_peers_old_prefixes() -> None:
    net, a, _b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\nreplace_allowed_ips=true\nallowed_ip=192.0.2.0/24\n")
    assert peer_of(a, B_PK)["allowed_ip"] == ["192.0.2.0/24"]
    n = len(net.wire)
    net.write(a, PING_AB)  # 10.0.0.2 no longer routes to B
    assert net.wire[n:] == []
    assert a.device.stats.dropped_no_route == 1


def test_up_sends_the_keepalive_of_a_one_second_interval() -> None:
    net, a, b = make_pair(up=False)
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=1\n")
    net.carry(b, b.device.up(now=0.0))
    net.carry(a, a.device.up(now=0.0))
    net.run_until(0.0)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "keepalive")]


def test_up_sends_no_keepalive_when_the_interval_was_turned_off_before_the_tick() -> None:
    net, a, b = make_pair(up=False)
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    net.carry(b, b.device.up(now=0.0))
    net.carry(a, a.device.up(now=0.0))
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=0\n")
    net.run_until(1.0)
    assert net.wire == []


def test_one_second_persistent_keepalive_every_second_counted_from_the_last_data() -> None:
    net, a, _b = established()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=1\n")
    n = len(net.wire)
    net.run_until(3.0)
    assert [(d.t, d.kind) for d in net.wire[n:] if d.src == PORT_A] == [
        (1.0, "keepalive"),
        (2.0, "keepalive"),
        (3.0, "keepalive"),
    ]
    net.clock.now = 3.5
    net.write(a, PING_AB)
    n = len(net.wire)
    net.run_until(4.6)
    assert [(d.t, d.kind) for d in net.wire[n:] if d.src == PORT_A] == [(4.5, "keepalive")]


def test_persistent_keepalive_after_rekey_after_time_starts_a_handshake_with_a_timestamp() -> None:
    net, a, b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    net.run_until(130.0)  # the keepalive at 125 finds the session older than 120 s: rekey
    assert [(d.src, d.kind, d.t) for d in net.wire if d.kind in ("init", "resp")][-2:] == [
        (PORT_A, "init", 125.0),
        (PORT_B, "resp", 125.0),
    ]
    assert handshake_ns(b, A_PK) == WALL0 + 125 * 10**9


def _v4_packet(total: int) -> bytes:
    """An IPv4 packet 10.0.0.1 -> 10.0.0.2 of ``total`` bytes (header, then zeros)."""
    header = bytes.fromhex("4500") + total.to_bytes(2, "big") + bytes.fromhex("0000000040010000")
    return header + bytes([10, 0, 0, 1, 10, 0, 0, 2]) + bytes(total - 20)


@pytest.mark.parametrize("size", [20, MAX_CONTENT_SIZE])
def test_smallest_and_largest_ipv4_packets_written_are_sent(size: int) -> None:
    net, a, b = established()
    n = len(net.wire)
    net.write(a, _v4_packet(size))
    assert a.device.stats.dropped_bad_packet == 0
    assert [(d.src, d.kind) for d in net.wire[n:]] == [(PORT_A, "data")]
    if size == 20:
        assert b.delivered[-1] == _v4_packet(20)


def test_header_only_ipv6_packet_written_is_sent() -> None:
    net, a, b = established()
    packet = (
        bytes.fromhex("6000000000003b40")
        + ipaddress.ip_address("fd00::1").packed
        + ipaddress.ip_address("fd00::2").packed
    )
    assert len(packet) == 40
    net.write(a, packet)
    assert b.delivered[-1] == packet


def test_drop_counters_count_every_drop() -> None:
    net, a, _b = make_pair()
    a.device.down()
    for _ in range(2):
        assert a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns) == []
    assert a.device.stats.dropped_down == 2
    net2, c, _d = make_pair(b_knows_a_endpoint=False)
    net2.configure(c, f"public_key={B_PK.hex()}\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n")
    # B does not know A's endpoint: each of its handshake attempts is dropped and counted
    d = _d
    net2.write(d, ipv4("10.0.0.2", "10.0.0.1"))
    net2.run_until(6.0)
    assert d.device.stats.dropped_no_endpoint == 2


def _datagrams(effects: list[Effect]) -> list[SendDatagram]:
    return [e for e in effects if isinstance(e, SendDatagram)]


def test_every_datagram_names_its_peer_so_failed_sends_are_taken_back() -> None:
    _net, a, b = make_pair()
    now, wall = 0.0, WALL0
    init = _datagrams(a.device.packet_from_tun(PING_AB, now=now, wall_ns=wall))
    assert len(init) == 1  # the initiation; the ping is staged
    (resp,) = _datagrams(b.device.datagram_received(init[0].data, a.endpoint, now=now, wall_ns=wall))
    staged = _datagrams(a.device.datagram_received(resp.data, b.endpoint, now=now, wall_ns=wall))
    assert len(staged) == 1  # the staged ping
    fast = _datagrams(a.device.packet_from_tun(PING_AB, now=now, wall_ns=wall))
    assert len(fast) == 1
    for e in init + staged + fast:
        assert e.peer is a.device.peers[B_PK]
        e.peer.unsent(e.data)  # every send failed
    assert counters(a, B_PK)[0] == 0


def test_zero_private_key_removes_the_identity() -> None:
    net, a, _b = make_pair()
    net.configure(a, f"private_key={'0' * 64}\n")
    assert (
        a.device.uapi_get().decode().startswith(f"private_key={'0' * 64}\n")
        or "private_key=" not in a.device.uapi_get().decode()
    )
    n = len(net.wire)
    net.write(a, PING_AB)  # no identity: no handshake
    net.run_until(1.0)
    assert net.wire[n:] == []


def test_index_collisions_with_a_repeating_rng_still_give_distinct_u32_indices() -> None:
    _net, a, _b = make_pair()
    peer = a.device.peers[B_PK]
    device = Device(rng=lambda n: b"\x01" * n, bind=lambda p: p)  # every draw the same
    old = signal.signal(signal.SIGALRM, _timed_out)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        indices = [device.index_new(peer, None) for _ in range(4)]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(set(indices)) == 4
    assert all(0 <= i <= 0xFFFFFFFF for i in indices)
    for i in indices:
        device.index_free(i)


def _timed_out(signum: int, frame: object) -> None:
    raise TimeoutError("index_new did not return within 5 s")


def test_rx_bytes_keep_counting_across_a_second_handshake_response() -> None:
    net, a, _b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    net.run_until(120.0)
    before = counters(a, B_PK)[1]
    assert before == 92  # the first response; A's keepalives get no answer
    net.run_until(130.0)  # the rekey at 125: A receives a second response (92 bytes)
    assert counters(a, B_PK)[1] == before + 92


# --- Keypair slots: which sessions still receive (wireguard-go BeginSymmetricSession) ------------


def _sent_now(net: Net, node: Node, packet: bytes) -> bytes:
    """The one datagram ``node`` sends for ``packet`` now, not carried (it arrives late, or never)."""
    (d,) = _datagrams(node.device.packet_from_tun(packet, now=net.now, wall_ns=net.clock.wall_ns))
    return d.data


def _hand(net: Net, node: Node, data: bytes, sender: Node) -> list[bytes]:
    """Give ``node`` a datagram from ``sender``; carry what it delivers, return what it sends (uncarried)."""
    effects = net.inject(node, data, sender.endpoint)
    net.carry(node, [e for e in effects if not isinstance(e, SendDatagram)])
    return [e.data for e in _datagrams(effects)]


def _late_one_arrives(net: Net, node: Node, data: bytes, sender: Node) -> bool:
    """Hand ``node`` a late datagram; True if delivered, False if dropped as invalid."""
    delivered, invalid = len(node.delivered), node.device.stats.dropped_invalid
    _hand(net, node, data, sender)
    got = (len(node.delivered) - delivered, node.device.stats.dropped_invalid - invalid)
    assert got in ((1, 0), (0, 1)), got
    return got == (1, 0)


def _rekey(net: Net, a: Node) -> None:
    """A, the initiator, writes past its rekey_after_time: data on the old session, then a handshake."""
    n = len(net.wire)
    net.write(a, PING_AB)
    assert [k for _, k in net.kinds(n)][:4] == ["data", "init", "resp", "keepalive"]


def test_a_session_receives_until_the_second_handshake_after_it_on_both_sides() -> None:
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    late_to_a = [_sent_now(net, b, PONG_BA) for _ in range(2)]  # on the first session
    late_to_b = [_sent_now(net, a, PING_AB) for _ in range(2)]
    net.run_until(11.0)
    _rekey(net, a)  # the first session is now each side's previous: it still receives
    assert _late_one_arrives(net, a, late_to_a[0], b)
    assert _late_one_arrives(net, b, late_to_b[0], a)
    net.run_until(22.0)
    _rekey(net, a)  # and now it is gone on both sides
    assert not _late_one_arrives(net, a, late_to_a[1], b)
    assert not _late_one_arrives(net, b, late_to_b[1], a)


def test_an_initiator_keeps_its_unconfirmed_responder_session_as_previous_and_drops_the_current() -> None:
    # A holds K1 (it initiated) when B restarts and initiates Kb; A answers (Kb waits in
    # A's next) and hears nothing on Kb before its own rekey makes Ka. Then Kb becomes A's
    # previous (it still receives, until the next handshake) and K1 is gone.
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    late_k1 = _sent_now(net, b, PONG_BA)
    net.clock.now = 1.0
    b.device.down()
    b.device.up(now=net.now)
    init = _sent_now(net, b, PONG_BA)  # B stages the packet and initiates Kb
    (resp,) = _hand(net, a, init, b)
    late_kb = _hand(net, b, resp, a)  # B's staged packet on Kb: it arrives late
    late_kb.append(_sent_now(net, b, PONG_BA))
    net.run_until(11.0)
    _rekey(net, a)
    assert not _late_one_arrives(net, a, late_k1, b)
    assert _late_one_arrives(net, a, late_kb[0], b)
    net.run_until(22.0)
    _rekey(net, a)
    assert not _late_one_arrives(net, a, late_kb[1], b)
    a.device.down()  # forgets every session (and does not trip over an emptied slot)
    net.run_until(23.0)
    a.device.up(now=net.now)
    n = len(net.wire)
    net.write(a, PING_AB)
    assert net.kinds(n)[:2] == [(PORT_A, "init"), (PORT_B, "resp")]


def test_a_responder_forgets_an_unconfirmed_session_a_newer_handshake_replaces() -> None:
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    net.run_until(11.0)
    data, init = _datagrams(a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns))
    _hand(net, b, data.data, a)
    (resp,) = _hand(net, b, init.data, a)  # B: K2 waits for A's first message on it
    assert len(_hand(net, a, resp, b)) == 1  # A's keepalive on K2: lost
    late_k2 = _sent_now(net, a, PING_AB)  # and a packet on K2 that arrives late
    net.blocked.add(PORT_A)  # A hears nothing back: a new handshake (K3) after 15 s, lost
    net.run_until(30.0)
    assert [d.t for d in net.wire if d.kind == "init"][-1] > 26.0
    net.blocked.clear()
    assert not _late_one_arrives(net, b, late_k2, a)


def test_a_live_mtu_change_pads_to_the_new_mtu_for_old_and_new_peers() -> None:
    # 1299 bytes pad to 1312 under the default MTU (1420), to 1300 under MTU 1300
    net, a, b = established()
    a.device.set_mtu(1300)
    n = len(net.wire)
    net.write(a, _v4_packet(1299))
    assert [len(d.data) for d in net.wire[n:]] == [1300 + 32]
    assert b.delivered[-1] == _v4_packet(1299)
    # a peer made after the change pads to it too
    net.configure(a, f"public_key={B_PK.hex()}\nremove=true\n")
    net.configure(a, peer_line(B_PK, endpoint=f"127.0.0.1:{PORT_B}", allowed=("10.0.0.0/24",)))
    net.run_until(1.0)  # past B's 20 ms flood limit on initiations
    n = len(net.wire)
    net.write(a, _v4_packet(1299))
    assert [(d.kind, len(d.data)) for d in net.wire[n:]] == [("init", 148), ("resp", 92), ("data", 1300 + 32)]


def test_the_new_handshake_timer_starts_the_count_to_give_up_over() -> None:
    # B goes silent. A's data at 12 s gets no answer: a new handshake at ~27 s, retried
    # every 5 s. A's data at 30 s gets none either: at ~45 s the new-handshake timer fires
    # again, amid the retries, and (SendHandshakeInitiation(false)) zeroes their count:
    # 1 + 3 + 19 initiations in all, where counting on from the first would give up after 20.
    net, a, _b = established()
    net.run_until(11.0)  # B's passive keepalive (at 10 s) reached A
    net.blocked.add(PORT_B)
    net.clock.now = 12.0
    net.write(a, PING_AB)
    net.run_until(30.0)
    net.write(a, PING_AB)
    net.run_until(300.0)
    inits = [d.t for d in net.wire if d.kind == "init" and d.t > 1.0]
    assert 27.0 <= inits[0] < 27.334
    assert len(inits) == 23


def test_a_response_carries_mac2_with_the_cookie_its_sender_holds() -> None:
    # B is under load: A's initiation gets a cookie, A's retry carries mac2 and gets through.
    net, a, b = make_pair(b_kw={"under_load_threshold": 0})
    net.write(a, PING_AB)
    net.run_until(REKEY_TIMEOUT + 0.334)
    assert b.delivered == [PING_AB]
    # B restarts and initiates: A's response must carry mac2 made with B's cookie, or B,
    # still under load, would answer it with another cookie reply and never get a session.
    net.run_until(6.0)
    b.device.down()
    b.device.up(now=net.now)
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert net.kinds(n) == [(PORT_B, "init"), (PORT_A, "resp"), (PORT_B, "data")]
    assert a.delivered == [PONG_BA]


def test_a_responders_persistent_keepalive_counts_from_its_response() -> None:
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    net.configure(b, f"public_key={A_PK.hex()}\npersistent_keepalive_interval=25\n")  # a keepalive at once
    net.run_until(11.0)
    n = len(net.wire)
    net.write(a, PING_AB)  # A rekeys: B's response is an authenticated packet B sends
    assert net.kinds(n) == [(PORT_A, "data"), (PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "keepalive")]
    n = len(net.wire)
    net.run_until(40.0)
    assert [(d.t, d.kind) for d in net.wire[n:] if d.src == PORT_B] == [(36.0, "keepalive")]


# --- Receive: trimming and cryptokey routing of every packet of a batch -----------------------


def _v6_packet(src: bytes, dst: bytes, payload_len: int) -> bytes:
    return (
        bytes.fromhex("60000000")
        + payload_len.to_bytes(2, "big")
        + b"\x3b\x40"
        + src
        + dst
        + bytes(payload_len)
    )


@pytest.mark.parametrize("size", [20, 255, 256, 257, 1024, 1296, 1420])
def test_ipv4_packets_of_every_length_arrive_whole_and_trimmed(size: int) -> None:
    # 1296 and 1420 are multiples of 16 (no padding); the total-length field's both bytes count
    net, a, b = established()
    net.write(a, _v4_packet(size))
    assert b.delivered[-1] == _v4_packet(size)
    assert b.device.stats.dropped_inner == 0


@pytest.mark.parametrize("payload", [0, 255, 256, 257, 1024, 1256, 1380])
def test_ipv6_packets_of_every_length_arrive_whole_and_trimmed(payload: int) -> None:
    net, a, b = established()
    src, dst = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
    net.write(a, _v6_packet(src, dst, payload))
    assert b.delivered[-1] == _v6_packet(src, dst, payload)
    assert b.device.stats.dropped_inner == 0


def test_every_packet_of_a_batch_has_its_inner_source_checked() -> None:
    # A's allowed IPs on B are 10.0.0.1/32 and fd00::1/128: whatever other source A's
    # packets claim (any address, before or after allowed ones in the same batch) is dropped.
    net, a, b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\nallowed_ip=0.0.0.0/0\nallowed_ip=::/0\n")
    net.write(a, PING_AB)
    claims = ["0.0.0.0", "88.88.88.88", "10.0.0.2", "10.0.0.1", "255.255.255.255", "10.0.0.0", "10.0.0.1"]
    packets = [ipv4(s, "10.0.0.2") for s in claims]
    v6 = [ipaddress.ip_address(s).packed for s in ("::", "fd00::1", "fd00::2", "5858:5858::")]
    packets += [_v6_packet(s, ipaddress.ip_address("fd00::2").packed, 8) for s in v6]
    datagrams = [
        d.data for d in _datagrams(a.device.packets_from_tun(packets, now=net.now, wall_ns=net.clock.wall_ns))
    ]
    assert len(datagrams) == len(packets)
    effects = b.device.datagrams_received(datagrams, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
    allowed = [p for p in packets if p[12:16] == bytes([10, 0, 0, 1]) or p[8:24] == v6[1]]
    assert [e.packet for e in effects if isinstance(e, DeliverPacket)] == allowed
    assert b.device.stats.dropped_inner == len(packets) - len(allowed) == 8


def test_packets_a_responder_staged_go_out_when_the_initiators_first_message_confirms() -> None:
    # B writes first, but its initiation is lost; then A's handshake makes B the responder.
    # A's first data message confirms the session: B sends what it staged at once, to A.
    net, a, b = make_pair()
    assert [e.data[0] for e in _datagrams(b.device.packet_from_tun(PONG_BA, now=0.0, wall_ns=WALL0))] == [1]
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "data"), (PORT_B, "data")]
    assert (b.delivered, a.delivered) == ([PING_AB], [PONG_BA])


def test_sending_rekeys_only_past_rekey_after_time_counted_from_the_session() -> None:
    net, a, _b = make_pair()
    net.run_until(100.0)
    net.write(a, PING_AB)  # the session starts at 100 s
    for t in (106.0, 220.0):  # 6 s old (not 106); exactly 120 s old (not past it)
        net.run_until(t)
        n = len(net.wire)
        net.write(a, PING_AB)
        assert net.kinds(n) == [(PORT_A, "data")], t
    net.run_until(220.001)
    n = len(net.wire)
    net.write(a, PING_AB)
    assert net.kinds(n)[:3] == [(PORT_A, "data"), (PORT_A, "init"), (PORT_B, "resp")]


def test_sending_rekeys_only_past_rekey_after_messages() -> None:
    net, a, _b = established()
    net.run_until(10.0)
    current = a.device.peers[B_PK].current
    assert current is not None
    current.send_counter = REKEY_AFTER_MESSAGES - 1  # this many sent: the next is the 2**60th
    n = len(net.wire)
    net.write(a, PING_AB)
    assert net.kinds(n) == [(PORT_A, "data")]
    net.write(a, PING_AB)  # past 2**60: a new handshake
    assert net.kinds(n)[1:4] == [(PORT_A, "data"), (PORT_A, "init"), (PORT_B, "resp")]


def test_every_packet_of_a_batch_written_while_down_is_counted() -> None:
    net, a, _b = make_pair()
    a.device.down()
    assert a.device.packets_from_tun([PING_AB] * 3, now=net.now, wall_ns=net.clock.wall_ns) == []
    assert a.device.stats.dropped_down == 3


def test_every_packet_of_a_written_batch_is_routed_whatever_its_destination() -> None:
    net, a, b = established()
    net.configure(a, f"public_key={B_PK.hex()}\nallowed_ip=0.0.0.0/0\n")
    net.configure(b, f"public_key={A_PK.hex()}\nallowed_ip=0.0.0.0/0\n")
    packets = [ipv4("10.0.0.1", d) for d in ("88.88.88.88", "0.0.0.0", "88.88.88.88", "10.0.0.2")]
    net.carry(a, a.device.packets_from_tun(packets, now=net.now, wall_ns=net.clock.wall_ns))
    assert b.delivered[1:] == packets
    assert a.device.stats.dropped_no_route == 0


def _pair_whose_a_cannot_bind_port_1() -> tuple[Net, Node, Node]:
    """A pair with a session, A's bind refusing port 1 (so ``listen_port=1`` leaves A unbound)."""

    def bind(port: int) -> int:
        if port == 1:
            raise UapiError(errno.EADDRINUSE, "port 1 is taken")
        return port or PORT_A

    net, _a, b = make_pair()
    a = Node("A", Device(rng=random.Random(100).randbytes, bind=bind), PORT_A)
    net.nodes[PORT_A] = a
    net.configure(
        a,
        f"private_key={A_SK.hex()}\nlisten_port={PORT_A}\n"
        + peer_line(B_PK, endpoint=f"127.0.0.1:{PORT_B}", allowed=("10.0.0.2/32",)),
    )
    net.carry(a, a.device.up(now=net.now))
    net.write(a, PING_AB)
    return net, a, b


def test_packets_staged_while_unbound_go_out_first_once_a_port_is_bound() -> None:
    net, a, b = _pair_whose_a_cannot_bind_port_1()
    with pytest.raises(UapiError):
        net.configure(a, "listen_port=1\n")  # A is unbound now: what it is given waits, staged
    first, second = (ipv4("10.0.0.1", "10.0.0.2", bytes([i]) * 40) for i in (1, 2))
    net.write(a, first)
    assert b.delivered == [PING_AB]
    net.configure(a, f"listen_port={PORT_A}\n")
    net.write(a, second)
    assert b.delivered == [PING_AB, first, second]


def test_a_refused_initiation_frees_the_index_it_reserved() -> None:
    # A low-order peer key: every initiation is refused after its index was
    # drawn; the index goes back, so refusals every 5 s leave no entry behind.
    net = Net()
    log: list[str] = []
    a = net.add("A", PORT_A, seed=1, log=log.append)
    net.carry(a, a.device.up(now=0.0))
    net.configure(
        a,
        f"private_key={A_SK.hex()}\nlisten_port={PORT_A}\n"
        + peer_line(bytes(32), endpoint=f"127.0.0.1:{PORT_B}", allowed=("10.0.9.0/24",)),
    )
    peer = a.device.peers[bytes(32)]
    del log[:]
    for t in (0.0, 6.0, 12.0):
        net.run_until(t)
        net.write(a, ipv4("10.0.0.1", "10.0.9.1"))
        assert peer.timers.handshake_attempts == 0  # an initiation was begun (and refused)
    assert net.wire == []
    assert a.device._indices == {}
    assert log == [f"{peer} - initiation: peer public key is low-order"] * 3


def _near_give_up() -> tuple[Net, Node, int]:
    """A session past rekey_after_time whose peer went silent: the new-handshake
    timer's initiation has been retried 19 times, so the next expiry gives up.
    Returns the net, A and the length of the wire then."""
    net, a, _b = make_pair(a_kw={"rekey_after_time": 1.0})
    net.write(a, PING_AB)
    net.blocked.update((PORT_A, PORT_B))
    start = len(net.wire)
    timers = a.device.peers[B_PK].timers
    while timers.handshake_attempts < GIVE_UP_AFTER_ATTEMPTS - 1:
        deadline = a.device.next_deadline()
        assert deadline is not None and deadline < 150.0
        net.run_until(deadline)
    assert [k for _, k in net.kinds(start)].count("init") == GIVE_UP_AFTER_ATTEMPTS  # 1 + 19 retries
    return net, a, len(net.wire)


def _retries_go_on(net: Net, a: Node, n: int, sent: str) -> None:
    """What was sent at ``n`` rekeyed (rate-limited) without a retry: the count started over."""
    assert net.kinds(n) == [(PORT_A, sent)]
    net.run_until(net.now + REKEY_TIMEOUT + 0.334)
    assert net.kinds(n) == [(PORT_A, sent), (PORT_A, "init")]
    assert a.device.peers[B_PK].timers.handshake_attempts == 1


def test_rekeying_on_send_starts_the_count_to_give_up_over() -> None:
    # A packet sent on the old session (< 180 s old) rekeys: a new initiation,
    # not a retry, so the retries go on past the 20th initiation.
    net, a, n = _near_give_up()
    net.write(a, PING_AB)
    _retries_go_on(net, a, n, "data")


def test_rekeying_on_a_keepalive_starts_the_count_to_give_up_over() -> None:
    # The same through the staged path: turning persistent keepalive on sends
    # a keepalive at once on the old session, which rekeys.
    net, a, n = _near_give_up()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    _retries_go_on(net, a, n, "keepalive")


def test_a_packet_after_a_give_up_starts_twenty_initiations_over() -> None:
    net, a, _b = make_pair()
    net.blocked.add(PORT_B)
    net.write(a, PING_AB)
    net.run_until(150.0)
    assert net.kinds().count((PORT_A, "init")) == GIVE_UP_AFTER_ATTEMPTS  # given up
    n = len(net.wire)
    net.write(a, PING_AB)  # no session: staged, and a new initiation (not a retry)
    net.run_until(300.0)
    assert net.kinds(n) == [(PORT_A, "init")] * GIVE_UP_AFTER_ATTEMPTS


def test_the_debug_log_has_a_line_per_event_naming_its_peer() -> None:
    # wireguard-go's debug events, one line each, "peer(short key) - " first
    # when a peer is concerned: what a user reads to see why a tunnel is down.
    a_log: list[str] = []
    b_log: list[str] = []
    net, a, b = make_pair(a_kw={"log": a_log.append}, b_kw={"log": b_log.append})
    pa, pb = (str(node.device.peers[pk]) for node, pk in ((b, A_PK), (a, B_PK)))
    net.write(a, PING_AB)
    net.write(a, ipv4("10.0.0.9", "10.0.0.2"))  # a source B does not allow A
    net.inject(b, Transport(receiver=12345, counter=0, encrypted_packet=bytes(16)).pack(), a.endpoint)
    net.blocked.update((PORT_A, PORT_B))
    net.write(b, PONG_BA)  # no answer: a new handshake, retried, given up; the keys wiped
    net.run_until(700.0)
    net.configure(b, f"public_key={A_PK.hex()}\nremove=true\n")
    assert pa.startswith("peer(") and pa != pb
    lost = [
        "retrying handshake because we stopped hearing back",
        "handshake did not complete after 20 attempts, giving up",
        "removing all keys, since we haven't received a new one",
    ]
    assert b_log == [
        "private key changed",
        f"{pa} - created",
        f"{pa} - received handshake initiation",
        f"{pa} - packet with a malformed IP header or a disallowed source address",
        "transport message for an unknown index",
        *(f"{pa} - {line}" for line in lost),
        f"{pa} - removed",
    ]
    assert a_log == ["private key changed", f"{pb} - created", f"{pb} - received handshake response"] + [
        f"{pb} - {line}" for line in lost
    ]


def test_staged_packets_that_exhaust_the_session_wait_for_the_next() -> None:
    # Two packets staged while unbound, one message left on the session: once
    # bound, the next write sends the first on the old session, the rest
    # after the rekey.
    net, a, b = _pair_whose_a_cannot_bind_port_1()
    net.run_until(6.0)
    current = a.device.peers[B_PK].current
    assert current is not None
    current.send_counter = REJECT_AFTER_MESSAGES - 1
    with pytest.raises(UapiError):
        net.configure(a, "listen_port=1\n")
    first, second, third = (ipv4("10.0.0.1", "10.0.0.2", bytes([i]) * 40) for i in (1, 2, 3))
    net.write(a, first)
    net.write(a, second)
    net.configure(a, f"listen_port={PORT_A}\n")
    n = len(net.wire)
    net.write(a, third)
    old, rekey = [(PORT_A, "data")], [(PORT_A, "init"), (PORT_B, "resp")]
    assert net.kinds(n) == old + rekey + [(PORT_A, "data")] * 2
    assert b.delivered == [PING_AB, first, second, third]


@pytest.mark.parametrize("exhausted", ["messages", "time"])
def test_an_unbound_peer_with_a_spent_session_starts_a_handshake_at_once(exhausted: str) -> None:
    # As wireguard-go's SendStagedPackets: a session at REJECT_AFTER_MESSAGES
    # or exactly REJECT_AFTER_TIME old is not used; the initiation is tried
    # even with no port to send it from (counted), and retried from there.
    net, a, _b = _pair_whose_a_cannot_bind_port_1()
    current = a.device.peers[B_PK].current
    assert current is not None
    if exhausted == "messages":
        net.run_until(6.0)
        current.send_counter = REJECT_AFTER_MESSAGES
    else:
        net.run_until(current.created + REJECT_AFTER_TIME)
    with pytest.raises(UapiError):
        net.configure(a, "listen_port=1\n")
    net.write(a, ipv4("10.0.0.1", "10.0.0.2"))
    assert a.device.stats.dropped_no_endpoint == 1


def test_setting_an_endpoint_sends_what_was_staged_for_want_of_one() -> None:
    # Packets to a peer with no endpoint wait, staged (the initiation had
    # nowhere to go); the UAPI set that gives it one, 5 s later (before the
    # first retry), ends with wireguard-go's post-config flush: a handshake.
    net, a, b = make_pair(b_knows_a_endpoint=False)
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert b.device.stats.dropped_no_endpoint == 1
    net.run_until(REKEY_TIMEOUT)
    assert net.kinds(n) == [] and b.device.stats.dropped_no_endpoint == 1
    net.configure(b, f"public_key={A_PK.hex()}\nendpoint=127.0.0.1:{PORT_A}\n")
    assert net.kinds(n) == [(PORT_B, "init"), (PORT_A, "resp"), (PORT_B, "data")]
    assert a.delivered == [PONG_BA]


def test_a_peer_added_before_the_private_key_gets_a_session() -> None:
    net = Net()
    a = net.add("A", PORT_A, seed=100)
    b = net.add("B", PORT_B, seed=200)
    for node in (a, b):
        net.carry(node, node.device.up(now=0.0))
    net.configure(a, peer_line(B_PK, endpoint=f"127.0.0.1:{PORT_B}", allowed=("10.0.0.2/32",)))
    net.configure(a, f"private_key={A_SK.hex()}\nlisten_port={PORT_A}\n")
    net.configure(b, f"private_key={B_SK.hex()}\nlisten_port={PORT_B}\n")
    net.configure(b, peer_line(A_PK, endpoint=None, allowed=("10.0.0.1/32",)))
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]


def test_under_load_counts_the_last_threshold_plus_one_handshake_messages_only() -> None:
    meter = _LoadMeter(1)  # under load: 2 messages within a second
    assert [meter.note(t) for t in (0.0, 2.0, 2.5)] == [False, False, True]


def test_uapi_numbers_take_any_count_of_leading_zeros_as_go_parseuint() -> None:
    assert _parse_uint("0" * 30 + "51820", 16) == 51820
    assert _parse_uint("0" * 30, 16) == 0
    with pytest.raises(UapiError):
        _parse_uint("0" * 30 + "65536", 16)


def test_a_port_that_fails_to_bind_stays_the_port_reported_and_up_logs_why() -> None:
    # As wireguard-go: the port set is kept (and reported) though its bind
    # failed; up() tries it again and logs the failure.
    def bind(port: int) -> int:
        if port == 1:
            raise UapiError(errno.EADDRINUSE, "port 1 is taken")
        return port

    log: list[str] = []
    device = Device(rng=random.Random(1).randbytes, bind=bind, log=log.append)
    with pytest.raises(UapiError):
        device.uapi_set(set_request("listen_port=1\n"), now=0.0, wall_ns=WALL0)
    assert device.snapshot().listen_port == 1
    assert not device.bound
    device.up(now=0.0)
    assert device.snapshot().listen_port == 1
    assert log == ["unable to bind port 1: port 1 is taken"]


def test_a_device_takes_65536_peers_and_refuses_one_more() -> None:
    # wireguard-go's MaxPeers; no private key, so no DH per peer (under a second).
    device = Device(rng=random.Random(1).randbytes, bind=lambda port: port or PORT_A)
    keys = [(i + 1).to_bytes(32, "little") for i in range(1 << 16)]
    device.uapi_set(set_request("".join(f"public_key={k.hex()}\n" for k in keys)), now=0.0, wall_ns=WALL0)
    assert len(device.peers) == 1 << 16
    with pytest.raises(UapiError) as refused:
        device.uapi_set(set_request(f"public_key={bytes([7] * 32).hex()}\n"), now=0.0, wall_ns=WALL0)
    assert refused.value.errno == errno.EINVAL
    assert len(device.peers) == 1 << 16


# --- Fourth run: the receive side ----------------------------------------------------------------


def _sealed(node: Node, pk: bytes, plaintexts: list[bytes], now: float) -> list[bytes]:
    """Transport messages on ``node``'s current session with its peer ``pk``, the plaintexts
    as given (a peer that pads otherwise, or not at all, or sends malformed packets)."""
    keypair = node.device.peers[pk].current
    assert keypair is not None
    return [keypair.encrypt(p, now=now) for p in plaintexts]


def test_a_second_initiation_within_20_ms_is_refused_and_each_accepted_one_counted() -> None:
    # A's initiations at 0 and 5 s (later timestamps) reach B 10 ms apart: the
    # second is a flood, refused; 30 ms after the first it is taken. rx_bytes
    # counts each initiation taken (148 bytes).
    _net, a, b = make_pair()
    (init1,) = _datagrams(a.device.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0))
    (init2,) = _datagrams(a.device.packet_from_tun(PING_AB, now=5.0, wall_ns=WALL0 + 5 * 10**9))
    assert init1.data[0] == init2.data[0] == 1
    b_in = b.device.datagram_received
    assert [d.data[0] for d in _datagrams(b_in(init1.data, a.endpoint, now=100.0, wall_ns=WALL0))] == [2]
    assert _datagrams(b_in(init2.data, a.endpoint, now=100.01, wall_ns=WALL0)) == []
    assert b.device.stats.dropped_invalid == 1
    assert counters(b, A_PK)[1] == 148
    assert [d.data[0] for d in _datagrams(b_in(init2.data, a.endpoint, now=100.03, wall_ns=WALL0))] == [2]
    assert counters(b, A_PK)[1] == 2 * 148


def test_a_transport_message_that_fails_is_logged_naming_its_peer() -> None:
    b_log: list[str] = []
    net, a, b = make_pair(b_kw={"log": b_log.append})
    net.write(a, PING_AB)
    data = _sent_now(net, a, PING_AB)
    _hand(net, b, data, a)
    del b_log[:]
    _hand(net, b, data, a)  # the same message again
    counter = int.from_bytes(data[8:16], "little")
    assert b_log == [f"{b.device.peers[A_PK]} - transport: replayed counter {counter}"]


def test_every_packet_of_a_batch_after_a_keepalive_or_a_malformed_packet_is_delivered() -> None:
    # GRO hands B consecutive messages as one batch: a keepalive or a dropped
    # (malformed) packet in it does not end the batch.
    net, a, b = established()
    v6 = _v6_packet(FD00_1, FD00_2, 8)
    malformed = [
        bytes([0x45]) + bytes(15),  # IPv4 shorter than its header
        bytes.fromhex("4500") + (33).to_bytes(2, "big") + PING_AB[4:32],  # longer than it is
        bytes.fromhex("4500") + (19).to_bytes(2, "big") + PING_AB[4:32],  # shorter than a header
        bytes([0x60]) + bytes(31),  # IPv6 shorter than its header
        v6[:4] + (9).to_bytes(2, "big") + v6[6:],  # longer than it is
        bytes([0x50]) + bytes(31),  # neither version
    ]
    plaintexts = [b""]
    for bad in malformed:
        plaintexts += [bad, PING_AB]
    sealed = _sealed(a, B_PK, [*plaintexts, v6], net.now)
    effects = b.device.datagrams_received(sealed, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
    assert [e.packet for e in effects if isinstance(e, DeliverPacket)] == [PING_AB] * len(malformed) + [v6]
    assert b.device.stats.dropped_inner == len(malformed)


def test_unpadded_header_only_packets_from_a_peer_are_delivered() -> None:
    # Padding is the sender's choice: a 20-byte IPv4 or 40-byte IPv6 plaintext is whole.
    net, a, b = established()
    v4 = PING_AB[:2] + (20).to_bytes(2, "big") + PING_AB[4:20]
    v6 = _v6_packet(FD00_1, FD00_2, 0)
    sealed = _sealed(a, B_PK, [v4, v6], net.now)
    effects = b.device.datagrams_received(sealed, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
    assert [e.packet for e in effects if isinstance(e, DeliverPacket)] == [v4, v6]
    assert b.device.stats.dropped_inner == 0


def test_a_last_minute_rekey_on_receive_starts_the_count_to_give_up_over() -> None:
    # A (initiator) rekeys at 120.5 s, unanswered (what it sends B is lost), and
    # is retrying when B's data on the old session arrives at 165.5 s: the
    # last-minute rekey it starts is no retry, so the count starts over and
    # A gives up only after 19 more retries.
    net, a, b = make_pair()
    net.write(a, PING_AB)
    net.run_until(120.5)
    net.blocked.add(PORT_B)
    net.write(a, PING_AB)
    net.run_until(165.5)
    timers = a.device.peers[B_PK].timers
    assert timers.handshake_attempts > 5
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert a.delivered == [PONG_BA]
    assert timers.handshake_attempts == 0
    net.blocked.add(PORT_A)
    net.run_until(400.0)
    # the rekey itself was rate-limited (a retry went out under 5 s before): 19 retries
    assert net.kinds(n).count((PORT_A, "init")) == GIVE_UP_AFTER_ATTEMPTS - 1


def test_every_datagram_of_a_batch_received_while_down_is_counted() -> None:
    net, a, b = established()
    sealed = _sealed(a, B_PK, [PING_AB, PING_AB], net.now)
    b.device.down()
    for _ in range(2):
        assert b.device.datagrams_received(sealed, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns) == []
    assert b.device.stats.dropped_down == 4


def test_the_largest_transport_message_is_received() -> None:
    # 65535 bytes: a 65503-byte packet, unpadded, from a peer with a larger MTU.
    net, a, b = established()
    packet = _v4_packet(MAX_MESSAGE_SIZE - 32)
    (sealed,) = _sealed(a, B_PK, [packet], net.now)
    assert len(sealed) == MAX_MESSAGE_SIZE
    effects = b.device.datagrams_received([sealed], a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
    assert effects == [DeliverPacket(packet)]


def test_a_batch_of_messages_on_two_sessions_is_received_whole() -> None:
    # After a rekey, one coalesced receive can hold messages on the old session
    # (B's previous) and on the new one, in either order.
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    old = [_sent_now(net, a, PING_AB) for _ in range(3)]
    net.run_until(11.0)
    _rekey(net, a)
    new = [_sent_now(net, a, PING_AB) for _ in range(3)]
    for batch in ([old[0], old[1], new[0]], [new[1], new[2], old[2]]):
        effects = b.device.datagrams_received(batch, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
        assert effects == [DeliverPacket(PING_AB)] * 3
    assert b.device.stats.dropped_invalid == 0


def test_a_batch_of_a_transport_message_then_an_initiation_has_the_effects_of_both() -> None:
    # A rekeys on sending: a data message on the old session, then its initiation.
    net, a, b = make_pair(a_kw={"rekey_after_time": 10.0})
    net.write(a, PING_AB)
    net.run_until(11.0)
    data, init = _datagrams(a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns))
    effects = b.device.datagrams_received(
        [data.data, init.data], a.endpoint, now=net.now, wall_ns=net.clock.wall_ns
    )
    assert effects[0] == DeliverPacket(PING_AB)
    assert [len(d) for d in sent(effects)] == [92]


def test_the_debug_log_names_why_each_handshake_message_was_dropped() -> None:
    b_log: list[str] = []
    net, a, b = make_pair(b_kw={"log": b_log.append})
    (init,) = sent(a.device.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0))
    response = Response(sender=1, receiver=12345, ephemeral=bytes(32), encrypted_nothing=bytes(16)).pack()
    del b_log[:]
    for data in (
        b"\x01" * 5,
        CookieReply(receiver=12345, nonce=bytes(24), encrypted_cookie=bytes(32)).pack(),
        init[:116] + bytes([init[116] ^ 1]) + init[117:],
        CookieGenerator(B_PK).add_macs(response, now=0.0),
    ):
        assert net.inject(b, data, a.endpoint) == []
    net.configure(b, f"public_key={A_PK.hex()}\nremove=true\n")
    assert net.inject(b, init, a.endpoint) == []
    net.configure(b, f"private_key={'0' * 64}\n")
    del b_log[-1:]  # the key change
    assert net.inject(b, init, a.endpoint) == []
    assert b.device.stats.dropped_invalid == 6
    assert b_log[:4] == [
        "short datagram (5 bytes)",
        "cookie reply for an unknown index",
        "handshake message with an invalid mac1 from 127.0.0.1:51820",
        "response for an unknown index from 127.0.0.1:51820",
    ]
    assert b_log[5:] == [
        "initiation from an unknown peer at 127.0.0.1:51820",
        "handshake message, but no private key",
    ]


def test_under_load_the_cookie_replies_are_counted_and_logged() -> None:
    a_log: list[str] = []
    b_log: list[str] = []
    net, a, b = make_pair(a_kw={"log": a_log.append}, b_kw={"log": b_log.append, "under_load_threshold": 0})
    del a_log[:], b_log[:]
    net.write(a, PING_AB)  # a cookie reply
    net.run_until(REKEY_TIMEOUT + 0.334)  # the retry with mac2 is answered
    init = next(d.data for d in reversed(net.wire) if d.kind == "init")
    for _ in range(6):  # again at once: 4 more pass the limiter (replays), 2 are limited
        net.inject(b, init, a.endpoint)
    net.inject(b, b"\x01\x00\x00\x00" + bytes(144), a.endpoint)  # no valid mac1: no cookie
    assert b.device.stats.cookie_replies_sent == 1
    assert len(sent(net.inject(b, init[:132] + bytes(16), a.endpoint))) == 1  # mac2 invalid: a cookie
    assert b.device.stats.cookie_replies_sent == 2
    assert a_log[:1] == [f"{a.device.peers[B_PK]} - received cookie reply from 127.0.0.1:51821"]
    assert b_log[0] == "sending cookie reply to 127.0.0.1:51820"
    assert b_log[-4:] == ["handshake message from 127.0.0.1:51820 rate limited"] * 2 + [
        "handshake message with an invalid mac1 from 127.0.0.1:51820",
        "sending cookie reply to 127.0.0.1:51820",
    ]


def test_under_load_each_source_address_has_its_own_handshake_rate_limit() -> None:
    # A's initiations reach B from two addresses, each with the mac2 of its own
    # cookie: X floods (6 of 10 limited); Y, at the same moment, is not limited.
    _net, a, b = make_pair(b_kw={"under_load_threshold": 0})
    x, y = a.endpoint, Endpoint(host="192.0.2.7", port=PORT_A)

    def cookie_for(source: Endpoint, init: bytes, now: float) -> bytes:
        """Hand B ``init`` from ``source`` (its mac2 not valid there): A takes the cookie B replies."""
        (reply,) = sent(b.device.datagram_received(init, source, now=now, wall_ns=WALL0))
        assert reply[0] == 3
        assert a.device.datagram_received(reply, b.endpoint, now=now, wall_ns=WALL0) == []
        (retry,) = sent(a.device.tick(now=now + 5.5, wall_ns=WALL0 + round((now + 5.5) * 1e9)))
        return retry

    (init,) = sent(a.device.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0))
    for_y = cookie_for(y, init, 0.0)
    for_x = cookie_for(x, for_y, 5.5)
    for _ in range(10):
        b.device.datagram_received(for_x, x, now=11.0, wall_ns=WALL0)
    assert b.device.stats.dropped_rate_limited == 6
    assert b.device.datagram_received(for_y, y, now=11.0, wall_ns=WALL0) == []  # older: a replay
    assert b.device.stats.dropped_rate_limited == 6


def test_a_counter_exactly_a_window_behind_is_still_remembered() -> None:
    # The window is 8128 counters: moving the greatest to 8128 clears blocks 1..127
    # of the ring, never block 0, whose counter 0 is still inside the window.
    for steps in ([REPLAY_WINDOW], list(range(64, REPLAY_WINDOW + 1, 64))):
        f = ReplayFilter()
        assert f.validate_counter(0)
        for counter in steps:
            assert f.validate_counter(counter)
        assert not f.validate_counter(0)
        assert f.validate_counter(1)


# --- UAPI framing: a set body read in pieces ---------------------------------------------------


def test_a_set_body_longer_than_a_line_cut_mid_line_waits_for_the_rest() -> None:
    # A large `wg setconf` arrives in reads of any size: the lines a read
    # completes are taken, and only the pending part counts against MAX_LINE.
    lines = [("public_key", f"{i:064x}") for i in range(2000)]
    body = b"".join(f"{k}={v}\n".encode() for k, v in lines)
    assert len(body) > MAX_LINE
    assert feed(b"set=1\n" + body + b"\n", chunk=MAX_LINE) == [SetRequest(lines=tuple(lines)), CLOSED]


def test_a_line_of_max_line_bytes_may_arrive_before_its_newline() -> None:
    line = b"k=" + b"v" * (MAX_LINE - 2)  # the first read ends just before its newline
    assert feed(b"set=1\n" + line + b"\n\n", chunk=6 + MAX_LINE) == [
        SetRequest(lines=(("k", "v" * (MAX_LINE - 2)),)),
        CLOSED,
    ]


def test_bytes_fed_after_end_of_file_are_ignored() -> None:
    reader = UapiReader()
    reader.receive_data(b"get=1\n\n")
    reader.receive_data(b"")
    reader.receive_data(b"get=1\n\n")
    assert [reader.next_request() for _ in range(3)] == [GetRequest(), CLOSED, CLOSED]


def test_one_second_persistent_keepalive_counted_from_the_last_data_received() -> None:
    net, a, b = established()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=1\n")
    net.run_until(3.0)
    net.clock.now = 3.5
    net.write(b, PONG_BA)  # A receives data: its next keepalive is a second later
    n = len(net.wire)
    net.run_until(4.6)
    assert [(d.t, d.kind) for d in net.wire[n:] if d.src == PORT_A] == [(4.5, "keepalive")]
