"""The Device's batch calls against the same calls one by one.

``packets_from_tun`` (a TUN batch) and ``datagrams_received`` (the
segments of one coalesced UDP receive) must come out exactly as
``packet_from_tun`` and ``datagram_received`` called once per packet, in
order: the same effects in the same order (the seeded randomness drawn in
the same order, so initiations are byte for byte the same), the same
counters, timers, keypair slots and UAPI get reply. Each example builds
the same two devices twice on the number clock of test_device.py, one fed
the batch, the other one by one. (One by one is a batch of one: what a
batch shares with a single packet, the vectors and behaviours of
test_device.py and test_mutants.py test; here what only runs of two or
more can get wrong.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hypothesis import given, settings
from hypothesis import strategies as st

from modules.tunwg.wg import DeliverPacket
from modules.tunwg.wg.constants import REJECT_AFTER_TIME
from modules.tunwg.wg.crypto import public_key

from .test_device import A_PK, B_PK, PING_AB, ipv4, ipv6, make_pair, sent

if TYPE_CHECKING:
    from modules.tunwg.wg import Effect

    from .test_device import Net, Node

C_PK = public_key(bytes(range(32)))
REKEY_AFTER = 10.0  # the initiator's rekey_after_time in these examples
FD00_1 = bytes.fromhex("fd000000000000000000000000000001")
FD00_2 = bytes.fromhex("fd000000000000000000000000000002")

#: What a TUN batch holds: packets to the peer of every size class, and
#: packets the device drops (no route, not IP, empty).
_PACKETS = st.one_of(
    st.integers(0, 1400).map(lambda n: ipv4("10.0.0.1", "10.0.0.2", bytes(n))),
    st.integers(0, 200).map(lambda n: ipv6(FD00_1, FD00_2, bytes(n))),
    st.just(ipv4("10.0.0.1", "10.0.0.3")),  # to peer C, which has no session
    st.just(ipv4("10.0.0.1", "192.0.2.9")),  # no route
    st.sampled_from([b"", b"\x00" * 30, b"\x45\x00"]),  # not an IP packet
)


def observe(node: Node) -> tuple[object, ...]:
    """Everything of ``node`` a later call or a user could see."""
    dev = node.device
    peers = []
    for peer in dev.peers.values():
        t = peer.timers
        peers.append(
            (
                t.retransmit_handshake_at,
                t.send_keepalive_at,
                t.new_handshake_at,
                t.zero_key_material_at,
                t.persistent_keepalive_at,
                t.handshake_attempts,
                t.need_another_keepalive,
                t.sent_last_minute_handshake,
                t.last_sent_handshake,
                len(peer.staged),
                peer.endpoint,
                [kp.local_index if kp else None for kp in (peer.previous, peer.current, peer.next)],
                [kp.send_counter if kp else None for kp in (peer.previous, peer.current, peer.next)],
            )
        )
    return (dev.uapi_get(), dataclasses.asdict(dev.stats), dev.next_deadline(), peers)


def _session(age: float, keepalive: int) -> tuple[Net, Node, Node]:
    """A and B with a session A initiated, ``age`` seconds old now."""
    net, a, b = make_pair(a_kw={"rekey_after_time": REKEY_AFTER})
    net.configure(a, f"public_key={C_PK.hex()}\nendpoint=127.0.0.1:51899\nallowed_ip=10.0.0.3/32\n")
    if keepalive:
        net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval={keepalive}\n")
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]
    net.clock.now += age
    return net, a, b


@settings(max_examples=60, deadline=None)
@given(
    packets=st.lists(_PACKETS, max_size=12),
    age=st.sampled_from([0.5, REKEY_AFTER + 1, REJECT_AFTER_TIME + 1]),
    keepalive=st.sampled_from([0, 25]),
)
def test_packets_from_tun_is_packet_from_tun_one_by_one(
    packets: list[bytes], age: float, keepalive: int
) -> None:
    """Fresh, old enough to rekey (an initiation amid the datagrams), and
    expired (every packet staged behind a new handshake)."""
    net1, a1, _ = _session(age, keepalive)
    net2, a2, _ = _session(age, keepalive)
    batch = a1.device.packets_from_tun(packets, now=net1.now, wall_ns=net1.clock.wall_ns)
    one_by_one: list[Effect] = []
    for p in packets:
        one_by_one += a2.device.packet_from_tun(p, now=net2.now, wall_ns=net2.clock.wall_ns)
    assert batch == one_by_one
    assert observe(a1) == observe(a2)


def _transports(net: Net, a: Node, n: int) -> list[bytes]:
    """``n`` transport messages A sends B now (uncarried), of sizes 0 to 1400,
    every third from an inner source B does not allow A (B drops it)."""
    out: list[bytes] = []
    for i in range(n):
        src = "10.0.0.9" if i % 3 == 2 else "10.0.0.1"
        packet = ipv4(src, "10.0.0.2", bytes((i * 397) % 1401))
        out += sent(a.device.packet_from_tun(packet, now=net.now, wall_ns=net.clock.wall_ns))
    return out


def _responder_pair() -> tuple[Net, Node, Node, list[bytes]]:
    """B has answered A's initiation (its keypair waits in ``next``); A's
    first datagrams, which promote it, are returned uncarried."""
    net, a, b = make_pair()
    (init,) = sent(a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns))
    (resp,) = sent(b.device.datagram_received(init, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns))
    first = sent(a.device.datagram_received(resp, b.endpoint, now=net.now, wall_ns=net.clock.wall_ns))
    assert b.device.peers[A_PK].next is not None
    return net, a, b, first


def _mangle(datagrams: list[bytes], how: list[tuple[int, str]]) -> list[bytes]:
    out = list(datagrams)
    for i, what in how:
        if not out:
            break
        i %= len(out)
        d = out[i]
        if what == "flip":  # same size, fails authentication
            out[i] = d[:-1] + bytes([d[-1] ^ 1])
        elif what == "replay":
            out.insert(i, d)
        elif what == "short":
            out[i] = d[:20]
        elif what == "index":  # an unknown receiver index
            out[i] = d[:4] + bytes(4) + d[8:]
        else:  # "junk": not a WireGuard message
            out[i] = b"\x07" * len(d)
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 10),
    how=st.lists(
        st.tuples(st.integers(0, 20), st.sampled_from(["flip", "replay", "short", "index", "junk"])),
        max_size=4,
    ),
    promote=st.booleans(),
)
def test_datagrams_received_is_datagram_received_one_by_one(
    n: int, how: list[tuple[int, str]], promote: bool
) -> None:
    """With and without the responder's promotion of its next keypair at
    the batch's first datagram; with forged, replayed, short, misaddressed
    and junk datagrams among the good ones."""
    results = []
    for batched in (True, False):
        if promote:
            net, a, b, first = _responder_pair()
        else:
            net, a, b = make_pair()
            net.write(a, PING_AB)
            first = []
        datagrams = _mangle(first + _transports(net, a, n), how)
        src = a.endpoint
        if batched:
            effects = b.device.datagrams_received(datagrams, src, now=net.now, wall_ns=net.clock.wall_ns)
        else:
            effects = []
            for d in datagrams:
                effects += b.device.datagram_received(d, src, now=net.now, wall_ns=net.clock.wall_ns)
        results.append((effects, observe(b)))
    assert results[0] == results[1]


def test_a_bad_segment_is_dropped_alone_and_the_rest_delivered_in_order() -> None:
    net, a, b = make_pair()
    net.write(a, PING_AB)
    packets = [ipv4("10.0.0.1", "10.0.0.2", bytes([i]) * 100) for i in range(4)]
    datagrams = sent(a.device.packets_from_tun(packets, now=net.now, wall_ns=net.clock.wall_ns))
    datagrams[1] = datagrams[1][:-1] + bytes([datagrams[1][-1] ^ 1])
    before = b.device.stats.dropped_invalid
    effects = b.device.datagrams_received(datagrams, a.endpoint, now=net.now, wall_ns=net.clock.wall_ns)
    assert [e.packet for e in effects if isinstance(e, DeliverPacket)] == [
        packets[0],
        packets[2],
        packets[3],
    ]
    assert b.device.stats.dropped_invalid == before + 1
