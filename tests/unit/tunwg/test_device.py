"""The Device: two of them on a fake network, configured by UAPI text, on a number clock.

``Net`` carries each ``SendDatagram`` from one Device to the one bound to
its port (unless that port is blocked: a silent peer), records every
datagram on a wire log, and collects ``DeliverPacket``/``KeyLog`` per node.
Randomness is seeded; ``now`` is a number, advanced by ``Net.run_until``,
which ticks every device at each deadline, as the glue's timer task does.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import random
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.tunwg.wg import (
    DeliverPacket,
    Device,
    Endpoint,
    KeyLog,
    SendDatagram,
    SetRequest,
    UapiError,
    UapiReader,
)
from modules.tunwg.wg.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_STAGED_PACKETS,
    REJECT_AFTER_TIME,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    WIPE_AFTER_TIME,
)
from modules.tunwg.wg.crypto import generate_private_key, public_key
from modules.tunwg.wg.keys import from_base64, to_base64
from modules.tunwg.wg.messages import CookieReply, Initiation, Response, Transport, parse
from modules.tunwg.wg.timers import GIVE_UP_AFTER_ATTEMPTS

if TYPE_CHECKING:
    from collections.abc import Callable

    from modules.tunwg.wg import Effect

WALL0 = 1_700_000_000 * 1_000_000_000  # wall clock at now == 0
HOST = "127.0.0.1"
PORT_A = 51820
PORT_B = 51821


# --- Helpers ---------------------------------------------------------------------------


def keypair(seed: int) -> tuple[bytes, bytes]:
    sk = generate_private_key(random.Random(seed).randbytes)
    return sk, public_key(sk)


A_SK, A_PK = keypair(1)
B_SK, B_PK = keypair(2)
C_SK, C_PK = keypair(3)


def set_request(text: str) -> SetRequest:
    """``text`` (lines without the ``set=1`` header) framed as ``wg`` sends it."""
    reader = UapiReader()
    reader.receive_data(b"set=1\n" + text.encode() + b"\n")
    req = reader.next_request()
    assert isinstance(req, SetRequest)
    return req


def ipv4(src: str, dst: str, payload: bytes = bytes(range(56)), *, pad: bytes = b"") -> bytes:
    """An ICMP-echo-like IPv4 packet (checksums are not checked by WireGuard)."""
    total = 20 + 8 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 1, 0, bytes(map(int, src.split("."))), _v4(dst)
    )
    return header + b"\x08\x00\x00\x00\x00\x01\x00\x01" + payload + pad


def _v4(addr: str) -> bytes:
    return bytes(map(int, addr.split(".")))


def ipv6(src: bytes, dst: bytes, payload: bytes = b"\x80\x00\x00\x00\x00\x01\x00\x01" + bytes(32)) -> bytes:
    """An ICMPv6-echo-like IPv6 packet; ``src``/``dst`` are 16 bytes."""
    return struct.pack("!IHBB", 0x60000000, len(payload), 58, 64) + src + dst + payload


FD00_1 = bytes.fromhex("fd000000000000000000000000000001")
FD00_2 = bytes.fromhex("fd000000000000000000000000000002")


@dataclass
class Clock:
    now: float = 0.0

    @property
    def wall_ns(self) -> int:
        return WALL0 + round(self.now * 1e9)


@dataclass(eq=False)
class Node:
    name: str
    device: Device
    port: int
    host: str = HOST
    delivered: list[bytes] = field(default_factory=list)
    keylog: list[str] = field(default_factory=list)
    binds: list[int] = field(default_factory=list)

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(host=self.host, port=self.port)


@dataclass(frozen=True)
class Datagram:
    src: int
    dst: int
    data: bytes
    t: float  # when it was sent

    @property
    def kind(self) -> str:
        n = len(self.data)
        t = self.data[0]
        if t == 1:
            return "init"
        if t == 2:
            return "resp"
        if t == 3:
            return "cookie"
        return "keepalive" if n == 32 else "data"


class Net:
    """Devices on 127.0.0.1, one port each; a blocked port loses what is sent to it."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.nodes: dict[int, Node] = {}
        self.wire: list[Datagram] = []
        self.blocked: set[int] = set()

    @property
    def now(self) -> float:
        return self.clock.now

    def add(self, name: str, port: int, *, seed: int, **kw: object) -> Node:
        node: Node

        def bind(p: int) -> int:
            node.binds.append(p)
            return p or port

        node = Node(name, Device(rng=random.Random(seed).randbytes, bind=bind, **kw), port)  # type: ignore[arg-type]
        self.nodes[port] = node
        return node

    def configure(self, node: Node, text: str) -> None:
        self.carry(node, node.device.uapi_set(set_request(text), now=self.now, wall_ns=self.clock.wall_ns))

    def write(self, node: Node, packet: bytes) -> None:
        self.carry(node, node.device.packet_from_tun(packet, now=self.now, wall_ns=self.clock.wall_ns))

    def inject(self, node: Node, data: bytes, source: Endpoint) -> list[Effect]:
        """Hand ``node`` a datagram directly; return its effects uncarried."""
        return node.device.datagram_received(data, source, now=self.now, wall_ns=self.clock.wall_ns)

    def carry(self, node: Node, effects: list[Effect]) -> None:
        queue = deque((node, e) for e in effects)
        while queue:
            src, effect = queue.popleft()
            if isinstance(effect, DeliverPacket):
                src.delivered.append(effect.packet)
            elif isinstance(effect, KeyLog):
                src.keylog.append(effect.line)
            else:
                assert effect.endpoint.host == HOST
                dst_port = effect.endpoint.port
                self.wire.append(Datagram(src.port, dst_port, effect.data, self.now))
                dst = self.nodes.get(dst_port)
                if dst is None or dst_port in self.blocked:
                    continue
                out = dst.device.datagram_received(
                    effect.data, src.endpoint, now=self.now, wall_ns=self.clock.wall_ns
                )
                queue.extend((dst, e) for e in out)

    def run_until(self, t: float) -> None:
        """Advance the clock to ``t``, ticking every device at each deadline on the way."""
        while True:
            deadlines = [d for n in self.nodes.values() if (d := n.device.next_deadline()) is not None]
            if not deadlines or min(deadlines) > t:
                self.clock.now = t
                return
            self.clock.now = max(self.clock.now, min(deadlines))
            for node in list(self.nodes.values()):
                self.carry(node, node.device.tick(now=self.now, wall_ns=self.clock.wall_ns))

    def kinds(self, since: int = 0) -> list[tuple[int, str]]:
        return [(d.src, d.kind) for d in self.wire[since:]]


def peer_line(pk: bytes, *, endpoint: str | None, allowed: tuple[str, ...], extra: str = "") -> str:
    lines = [f"public_key={pk.hex()}"]
    if endpoint is not None:
        lines.append(f"endpoint={endpoint}")
    lines.append("replace_allowed_ips=true")
    lines += [f"allowed_ip={a}" for a in allowed]
    return "\n".join(lines) + "\n" + extra


def make_pair(
    *,
    a_kw: dict[str, object] | None = None,
    b_kw: dict[str, object] | None = None,
    psk: bytes | None = None,
    b_knows_a_endpoint: bool = True,
    up: bool = True,
) -> tuple[Net, Node, Node]:
    """A (10.0.0.1, fd00::1) and B (10.0.0.2, fd00::2), configured as ``wg setconf`` would."""
    net = Net()
    a = net.add("A", PORT_A, seed=100, **(a_kw or {}))
    b = net.add("B", PORT_B, seed=200, **(b_kw or {}))
    psk_line = f"preshared_key={psk.hex()}\n" if psk else ""
    net.configure(
        a,
        f"private_key={A_SK.hex()}\nlisten_port={PORT_A}\nreplace_peers=true\n"
        + peer_line(
            B_PK, endpoint=f"{HOST}:{PORT_B}", allowed=("10.0.0.2/32", "fd00::2/128"), extra=psk_line
        ),
    )
    net.configure(
        b,
        f"private_key={B_SK.hex()}\nlisten_port={PORT_B}\nreplace_peers=true\n"
        + peer_line(
            A_PK,
            endpoint=f"{HOST}:{PORT_A}" if b_knows_a_endpoint else None,
            allowed=("10.0.0.1/32", "fd00::1/128"),
            extra=psk_line,
        ),
    )
    if up:
        for node in (a, b):
            net.carry(node, node.device.up(now=net.now))
    return net, a, b


def peer_of(node: Node, pk: bytes) -> dict[str, str | list[str]]:
    """The peer section of ``node``'s UAPI get reply, parsed."""
    out: dict[str, str | list[str]] = {}
    current = None
    for line in node.device.uapi_get().decode().splitlines():
        if not line:
            continue
        key, _, value = line.partition("=")
        if key == "public_key":
            current = value
        elif current == pk.hex():
            if key == "allowed_ip":
                ips = out.setdefault("allowed_ip", [])
                assert isinstance(ips, list)
                ips.append(value)
            else:
                out[key] = value
    return out


def counters(node: Node, pk: bytes) -> tuple[int, int]:
    """(tx_bytes, rx_bytes) from the get reply."""
    p = peer_of(node, pk)
    return int(str(p["tx_bytes"])), int(str(p["rx_bytes"]))


def handshake_ns(node: Node, pk: bytes) -> int:
    p = peer_of(node, pk)
    return int(str(p["last_handshake_time_sec"])) * 1_000_000_000 + int(str(p["last_handshake_time_nsec"]))


def sent(effects: list[Effect]) -> list[bytes]:
    """The datagrams among ``effects``."""
    return [e.data for e in effects if isinstance(e, SendDatagram)]


PING_AB = ipv4("10.0.0.1", "10.0.0.2")
PONG_BA = ipv4("10.0.0.2", "10.0.0.1")


def established() -> tuple[Net, Node, Node]:
    net, a, b = make_pair()
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]
    return net, a, b


# --- Data both ways ---------------------------------------------------------------------


def test_ipv4_ping_both_ways() -> None:
    net, a, b = make_pair()
    net.write(a, PING_AB)
    net.write(b, PONG_BA)
    assert b.delivered == [PING_AB]
    assert a.delivered == [PONG_BA]
    # 84-byte packets are padded to 96: 128-byte transport messages
    assert [(d.src, d.kind, len(d.data)) for d in net.wire] == [
        (PORT_A, "init", 148),
        (PORT_B, "resp", 92),
        (PORT_A, "data", 128),
        (PORT_B, "data", 128),
    ]


def test_ipv6_both_ways() -> None:
    net, a, b = make_pair()
    there = ipv6(FD00_1, FD00_2)
    back = ipv6(FD00_2, FD00_1, b"\x81\x00\x00\x00\x00\x01\x00\x01" + bytes(100))
    net.write(a, there)
    net.write(b, back)
    assert b.delivered == [there]
    assert a.delivered == [back]


def test_handshake_initiated_by_the_other_side() -> None:
    net, a, b = make_pair()
    net.write(b, PONG_BA)
    net.write(a, PING_AB)
    assert a.delivered == [PONG_BA]
    assert b.delivered == [PING_AB]
    assert net.kinds()[:2] == [(PORT_B, "init"), (PORT_A, "resp")]


def test_padding_is_trimmed_on_receive() -> None:
    net, a, b = established()
    odd = ipv4("10.0.0.1", "10.0.0.2", b"x" * 13)  # 41 bytes, padded to 48
    net.write(a, odd)
    assert len(net.wire[-1].data) == 32 + 48
    assert b.delivered[-1] == odd


def test_both_sides_agree_after_every_step() -> None:
    """Counters and handshake times step by step, as noise_test.go compares both sides.

    Ends with wireguard-go's numbers as responder after init + ping + keepalive:
    rx 308 = 148 + 128 + 32, tx 220 = 92 + 128 (reference section 5).
    """
    _net, a, b = make_pair()
    da, db = a.device, b.device
    init = da.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0)
    assert [type(e) for e in init] == [SendDatagram]
    assert counters(a, B_PK) == (148, 0)
    assert counters(b, A_PK) == (0, 0)

    resp = db.datagram_received(sent(init)[0], a.endpoint, now=0.5, wall_ns=WALL0 + 500)
    assert [len(d) for d in sent(resp)] == [92]
    assert counters(b, A_PK) == (92, 148)
    assert handshake_ns(b, A_PK) == 0  # the responder waits for key confirmation

    data = da.datagram_received(sent(resp)[0], b.endpoint, now=1.0, wall_ns=WALL0 + 1000)
    assert [len(d) for d in sent(data)] == [128]  # the staged ping
    assert counters(a, B_PK) == (148 + 128, 92)
    assert handshake_ns(a, B_PK) == WALL0 + 1000

    got = db.datagram_received(sent(data)[0], a.endpoint, now=1.5, wall_ns=WALL0 + 1500)
    assert got == [DeliverPacket(PING_AB)]
    assert counters(b, A_PK) == (92, 148 + 128)
    assert handshake_ns(b, A_PK) == WALL0 + 1500

    pong = db.packet_from_tun(PONG_BA, now=2.0, wall_ns=WALL0 + 2000)
    assert counters(b, A_PK) == (92 + 128, 148 + 128)
    assert da.datagram_received(sent(pong)[0], b.endpoint, now=2.0, wall_ns=WALL0 + 2000) == [
        DeliverPacket(PONG_BA)
    ]
    assert counters(a, B_PK) == (148 + 128, 92 + 128)

    # A received data at t=2: its passive keepalive is due at 12
    assert da.next_deadline() == pytest.approx(2.0 + KEEPALIVE_TIMEOUT)
    ka = da.tick(now=12.0, wall_ns=WALL0 + 12000)
    assert [len(d) for d in sent(ka)] == [32]
    assert db.datagram_received(sent(ka)[0], a.endpoint, now=12.0, wall_ns=WALL0 + 12000) == []
    assert counters(a, B_PK) == (148 + 128 + 32, 92 + 128)
    assert counters(b, A_PK) == (220, 308)


def test_uapi_get_after_traffic() -> None:
    net, a, b = make_pair(b_knows_a_endpoint=False)
    net.write(a, PING_AB)
    net.write(b, PONG_BA)
    hs = net.clock.wall_ns
    assert b.device.uapi_get().decode() == (
        f"private_key={B_SK.hex()}\n"
        f"listen_port={PORT_B}\n"
        f"public_key={A_PK.hex()}\n"
        f"preshared_key={'0' * 64}\n"
        "protocol_version=1\n"
        f"endpoint={HOST}:{PORT_A}\n"  # learnt from the initiation
        f"last_handshake_time_sec={hs // 10**9}\n"
        f"last_handshake_time_nsec={hs % 10**9}\n"
        "tx_bytes=220\n"
        "rx_bytes=276\n"
        "persistent_keepalive_interval=0\n"
        "allowed_ip=10.0.0.1/32\n"
        "allowed_ip=fd00::1/128\n"
        "errno=0\n\n"
    )


def test_preshared_key_both_sides() -> None:
    psk = bytes(range(32))
    net, a, b = make_pair(psk=psk)
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]
    assert peer_of(a, B_PK)["preshared_key"] == psk.hex()


def test_preshared_key_mismatch_gives_no_session() -> None:
    net, a, b = make_pair()
    net.configure(b, f"public_key={A_PK.hex()}\npreshared_key={bytes(range(32)).hex()}\n")
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp")]  # the response does not authenticate
    assert b.delivered == []
    assert a.device.stats.dropped_invalid == 1
    assert counters(a, B_PK) == (148, 0)


# --- Timers ---------------------------------------------------------------------------


def test_passive_keepalive_after_ten_seconds() -> None:
    net, _a, _b = established()
    n = len(net.wire)
    net.run_until(KEEPALIVE_TIMEOUT - 0.01)
    assert net.kinds(n) == []
    net.run_until(KEEPALIVE_TIMEOUT)
    assert net.kinds(n) == [(PORT_B, "keepalive")]
    net.run_until(60.0)  # nothing more while idle
    assert net.kinds(n) == [(PORT_B, "keepalive")]


def test_no_passive_keepalive_when_data_went_back() -> None:
    net, _a, b = established()
    net.clock.now = 3.0
    net.write(b, PONG_BA)
    n = len(net.wire)
    net.run_until(3.0 + KEEPALIVE_TIMEOUT + 1)
    assert (PORT_B, "keepalive") not in net.kinds(n)
    assert net.kinds(n) == [(PORT_A, "keepalive")]  # A got data at 3 and had nothing to say


def test_persistent_keepalive_turned_on_sends_at_once_then_every_interval() -> None:
    net, a, _b = make_pair()
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    # the keepalive needs a session: handshake, then the keepalive itself
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "keepalive")]
    n = len(net.wire)
    net.run_until(100.0)
    sent = [(d.src, d.kind) for d in net.wire[n:]]
    assert sent.count((PORT_A, "keepalive")) == 4  # at 25, 50, 75, 100
    assert peer_of(a, B_PK)["persistent_keepalive_interval"] == "25"


def test_rekey_after_rekey_after_time() -> None:
    net, a, b = established()
    first = handshake_ns(a, B_PK)
    net.run_until(REKEY_AFTER_TIME + 1)
    n = len(net.wire)
    net.write(a, PING_AB)  # sent on the old keypair, then a new handshake
    assert net.kinds(n)[:3] == [(PORT_A, "data"), (PORT_A, "init"), (PORT_B, "resp")]
    assert b.delivered == [PING_AB, PING_AB]
    assert handshake_ns(a, B_PK) > first
    # both sides now use the new session; the old one still receives
    net.write(b, PONG_BA)
    assert a.delivered == [PONG_BA]
    peer_a = a.device.peers[B_PK]
    assert peer_a.current is not None and peer_a.previous is not None
    assert peer_a.current.created == net.now


def test_shortened_rekey_after_time_rekeys_no_sooner_than_rekey_timeout() -> None:
    net, a, _b = make_pair(a_kw={"rekey_after_time": 1.0})
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "data")]
    net.run_until(2.0)  # past rekey_after_time, but an initiation went out 2 s ago
    net.write(a, PING_AB)
    assert net.kinds(3) == [(PORT_A, "data")]
    net.run_until(REKEY_TIMEOUT + 0.5)
    net.write(a, PING_AB)
    assert net.kinds(4)[:3] == [(PORT_A, "data"), (PORT_A, "init"), (PORT_B, "resp")]


@pytest.mark.parametrize("value", [0.0, -1.0, REKEY_AFTER_TIME + 1])
def test_rekey_after_time_out_of_range_refused(value: float) -> None:
    with pytest.raises(ValueError, match="rekey_after_time"):
        Device(rng=random.Random(0).randbytes, bind=lambda p: p, rekey_after_time=value)


def test_responder_does_not_rekey_on_time() -> None:
    net, _a, b = established()
    net.run_until(REKEY_AFTER_TIME + 1)
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert net.kinds(n) == [(PORT_B, "data")]


def test_sending_after_reject_after_time_stages_and_rekeys() -> None:
    net, a, b = established()
    net.run_until(REJECT_AFTER_TIME + 1)
    n = len(net.wire)
    net.write(b, PONG_BA)  # B's only keypair is too old: stage, initiate
    assert net.kinds(n)[:3] == [(PORT_B, "init"), (PORT_A, "resp"), (PORT_B, "data")]
    assert a.delivered == [PONG_BA]


def test_retries_with_jitter_then_give_up_after_twenty() -> None:
    net, a, _b = make_pair()
    net.blocked.add(PORT_B)  # B hears nothing
    net.write(a, PING_AB)
    net.run_until(300.0)
    inits = [i for i, d in enumerate(net.wire) if d.kind == "init"]
    assert len(inits) == GIVE_UP_AFTER_ATTEMPTS == 20
    assert a.device.stats.dropped_staged_flushed == 1  # the ping
    assert counters(a, B_PK) == (20 * 148, 0)
    # each retry REKEY_TIMEOUT plus 0..333 ms after the previous
    times = [d.t for d in net.wire if d.kind == "init"]
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(times)]
    assert all(REKEY_TIMEOUT <= g < REKEY_TIMEOUT + 0.334 for g in gaps), gaps
    # the next packet starts over
    n = len(net.wire)
    net.write(a, PING_AB)
    assert net.kinds(n) == [(PORT_A, "init")]


def test_new_handshake_when_data_gets_no_answer() -> None:
    net, a, _b = established()
    net.run_until(20.0)  # B's passive keepalive went at 10
    net.blocked.add(PORT_B)
    n = len(net.wire)
    net.write(a, PING_AB)
    net.run_until(20.0 + 15.0 - 0.001)
    assert net.kinds(n) == [(PORT_A, "data")]
    net.run_until(20.0 + 15.0 + 0.334)
    assert net.kinds(n) == [(PORT_A, "data"), (PORT_A, "init")]


def test_keys_wiped_after_540_seconds() -> None:
    net, a, b = established()
    net.blocked.update((PORT_A, PORT_B))
    net.run_until(WIPE_AFTER_TIME + 1)
    for node, pk in ((a, B_PK), (b, A_PK)):
        peer = node.device.peers[pk]
        assert (peer.previous, peer.current, peer.next) == (None, None, None)
    assert a.device._indices == {}


def test_last_minute_rekey_on_receive() -> None:
    net, _a, b = established()
    net.blocked.add(PORT_B)
    net.run_until(166.0)
    net.blocked.clear()
    n = len(net.wire)
    net.write(b, PONG_BA)  # A initiated the keypair 166 s ago: rekey now
    assert net.kinds(n)[:3] == [(PORT_B, "data"), (PORT_A, "init"), (PORT_B, "resp")]


# --- Cookies and load --------------------------------------------------------------------


def test_cookie_reply_under_load_then_mac2_gets_a_response() -> None:
    net, a, b = make_pair(b_kw={"under_load_threshold": 0})
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "cookie")]
    assert len(net.wire[1].data) == 64
    assert b.device.stats.cookie_replies_sent == 1
    assert counters(b, A_PK) == (0, 0)  # cookie replies are not counted
    assert counters(a, B_PK) == (148, 0)
    assert a.device.peers[B_PK].cookie_generator.cookie_set == 0.0
    # the retry carries mac2 and gets through
    net.run_until(REKEY_TIMEOUT + 0.334)
    assert net.kinds()[2:] == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "data")]
    assert b.delivered == [PING_AB]


def test_under_load_rate_limits_per_source() -> None:
    net, a, b = make_pair(b_kw={"under_load_threshold": 0})
    net.write(a, PING_AB)  # cookie reply
    net.run_until(REKEY_TIMEOUT + 0.334)  # retry with mac2: accepted (1 token of 5 used)
    init = next(d.data for d in reversed(net.wire) if d.kind == "init")
    for _ in range(10):  # the same valid-mac2 initiation again, at once
        assert net.inject(b, init, a.endpoint) == []
    # 4 more pass the limiter (and are refused as replays); the other 6 are limited
    assert b.device.stats.dropped_rate_limited == 6
    assert b.device.stats.dropped_invalid == 4


def test_not_under_load_below_threshold() -> None:
    net, a, b = make_pair(b_kw={"under_load_threshold": 2})
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB]
    assert b.device.stats.cookie_replies_sent == 0


def test_load_is_sticky_for_a_second() -> None:
    net, a, b = make_pair(b_kw={"under_load_threshold": 1})
    junk = b"\x01\x00\x00\x00" + bytes(144)
    for _ in range(2):  # two handshake messages within a second: more than 1
        net.inject(b, junk, a.endpoint)
    net.clock.now = 0.9
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "cookie")]
    net.clock.now = 3.0
    n = len(net.wire)
    net.write(a, PING_AB)  # REKEY_TIMEOUT not over: the retry timer sends it
    net.run_until(6.5)
    assert (PORT_B, "resp") in net.kinds(n)


# --- Roaming and routing --------------------------------------------------------------------


def test_roaming_moves_the_endpoint() -> None:
    net, a, b = established()
    peer_b = a.device.peers[B_PK]
    data = peer_b.current
    assert data is not None
    packet = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(packet, SendDatagram)
    roamed = Endpoint(host="127.212.121.99", port=9999)
    assert net.inject(b, packet.data, roamed) == [DeliverPacket(PING_AB)]
    assert peer_of(b, A_PK)["endpoint"] == "127.212.121.99:9999"
    out = b.device.packet_from_tun(PONG_BA, now=net.now, wall_ns=net.clock.wall_ns)
    assert [e.endpoint for e in out if isinstance(e, SendDatagram)] == [roamed]
    # IPv6 too
    packet = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(packet, SendDatagram)
    net.inject(b, packet.data, Endpoint(host="::1", port=9998))
    assert peer_of(b, A_PK)["endpoint"] == "[::1]:9998"


def test_sticky_source_kept_then_forgotten() -> None:
    """The local address a peer sent to goes with its endpoint into what is
    sent back; a ``forget_source`` for another endpoint keeps it; a new
    handshake for want of answers forgets it, as wireguard-go and the kernel do."""
    net, a, b = established()
    packet = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(packet, SendDatagram)
    sticky = dataclasses.replace(a.endpoint, source="127.0.0.2")
    assert net.inject(b, packet.data, sticky) == [DeliverPacket(PING_AB)]
    assert peer_of(b, A_PK)["endpoint"] == f"{HOST}:{PORT_A}"  # UAPI never shows the source
    out = b.device.packet_from_tun(PONG_BA, now=net.now, wall_ns=net.clock.wall_ns)
    assert [e.endpoint for e in out if isinstance(e, SendDatagram)] == [sticky]
    peer_a = b.device.peers[A_PK]
    peer_a.forget_source(a.endpoint)
    assert peer_a.endpoint == sticky
    later = net.now + 20.0  # data sent, nothing heard: a new handshake
    out = b.device.tick(now=later, wall_ns=net.clock.wall_ns + 20 * 10**9)
    assert [e.endpoint for e in out if isinstance(e, SendDatagram)] == [a.endpoint]


def test_failed_datagrams_do_not_roam() -> None:
    net, a, b = established()
    packet = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(packet, SendDatagram)
    bad = packet.data[:-1] + bytes([packet.data[-1] ^ 1])
    assert net.inject(b, bad, Endpoint(host="10.9.9.9", port=1)) == []
    assert net.inject(b, packet.data, a.endpoint) == [DeliverPacket(PING_AB)]
    assert net.inject(b, packet.data, Endpoint(host="10.9.9.9", port=1)) == []  # replay
    assert peer_of(b, A_PK)["endpoint"] == f"{HOST}:{PORT_A}"


def test_unrouted_destination_dropped_and_counted() -> None:
    net, a, _b = established()
    n = len(net.wire)
    net.write(a, ipv4("10.0.0.1", "10.0.0.3"))
    net.write(a, ipv6(FD00_1, bytes(16)))
    assert net.kinds(n) == []
    assert a.device.stats.dropped_no_route == 2


def test_malformed_written_packets_dropped() -> None:
    _net, a, _ = established()
    for packet in (b"", b"\x45" * 19, b"\x60" * 39, b"\x10" * 40, ipv4("10.0.0.1", "10.0.0.2", bytes(65480))):
        assert a.device.packet_from_tun(packet, now=0.0, wall_ns=WALL0) == []
    assert a.device.stats.dropped_bad_packet == 5


def test_inner_source_must_belong_to_the_sending_peer() -> None:
    net, a, b = established()
    spoofed = ipv4("10.0.0.9", "10.0.0.2")  # routed to B by destination, but A may not use .9
    net.write(a, spoofed)
    assert b.delivered == [PING_AB]
    assert b.device.stats.dropped_inner == 1
    assert counters(b, A_PK)[1] == 148 + 128 + 128  # authenticated: still counted


FD00_3 = bytes.fromhex("fd000000000000000000000000000003")
PORT_C = 51822


def _three() -> tuple[Net, Node, Node, Node]:
    """A and C both peers of B: A owns 10.0.0.1 and fd00::1, C owns 10.0.0.3 and fd00::3."""
    net, a, b = make_pair()
    c = net.add("C", PORT_C, seed=300)
    net.configure(
        c,
        f"private_key={C_SK.hex()}\nlisten_port={PORT_C}\nreplace_peers=true\n"
        + peer_line(B_PK, endpoint=f"{HOST}:{PORT_B}", allowed=("0.0.0.0/0", "::/0")),
    )
    net.configure(b, peer_line(C_PK, endpoint=f"{HOST}:{PORT_C}", allowed=("10.0.0.3/32", "fd00::3/128")))
    net.carry(c, c.device.up(now=net.now))
    # A's own allowed IPs for B must let it route the spoofed packets below to B.
    net.configure(a, peer_line(B_PK, endpoint=f"{HOST}:{PORT_B}", allowed=("0.0.0.0/0", "::/0")))
    return net, a, b, c


@pytest.mark.parametrize(
    ("from_a", "from_c"),
    [
        (ipv4("10.0.0.3", "10.0.0.2"), ipv4("10.0.0.3", "10.0.0.2")),
        (ipv6(FD00_3, FD00_2), ipv6(FD00_3, FD00_2)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_source_of_another_peer_is_dropped(from_a: bytes, from_c: bytes) -> None:
    # Cryptokey routing on receive: the inner source must route to the peer
    # whose key opened the packet, not merely to some peer of the device. A
    # claims C's address: B drops and counts it; C sending the same is delivered.
    net, a, b, c = _three()
    net.write(a, PING_AB)  # A and B have a session
    net.write(c, ipv4("10.0.0.3", "10.0.0.2"))  # C and B have one too
    assert b.delivered == [PING_AB, ipv4("10.0.0.3", "10.0.0.2")]
    dropped = b.device.stats.dropped_inner
    rx_before = counters(b, A_PK)[1]
    net.write(a, from_a)
    assert b.delivered == [PING_AB, ipv4("10.0.0.3", "10.0.0.2")]  # not delivered
    assert b.device.stats.dropped_inner == dropped + 1
    assert counters(b, A_PK)[1] > rx_before  # it was authenticated, so counted as received
    net.write(c, from_c)
    assert b.delivered[-1] == from_c


def test_malformed_inner_packets_dropped() -> None:
    net, a, b = established()
    keypair = a.device.peers[B_PK].current
    assert keypair is not None
    bad = [
        b"\x45" + bytes(10),  # IPv4 shorter than its header
        ipv4("10.0.0.1", "10.0.0.2")[:2] + b"\xff\xff" + ipv4("10.0.0.1", "10.0.0.2")[4:],  # total > data
        ipv4("10.0.0.1", "10.0.0.2")[:2] + b"\x00\x10" + ipv4("10.0.0.1", "10.0.0.2")[4:],  # total < 20
        b"\x60" + bytes(30),  # IPv6 shorter than its header
        ipv6(FD00_1, FD00_2)[:4] + b"\xff\xff" + ipv6(FD00_1, FD00_2)[6:],  # payload past the end
        b"\x50" + bytes(47),  # version 5
    ]
    for plaintext in bad:
        msg = keypair.encrypt(plaintext + bytes(-len(plaintext) % 16), now=net.now)
        assert net.inject(b, msg, a.endpoint) == []
    assert b.device.stats.dropped_inner == len(bad)


def test_allowed_ips_moved_between_peers() -> None:
    net, a, _b = established()
    net.configure(a, f"public_key={C_PK.hex()}\nallowed_ip=10.0.0.2/32\n")  # C takes B's address
    assert peer_of(a, B_PK)["allowed_ip"] == ["fd00::2/128"]
    n = len(net.wire)
    net.write(a, PING_AB)  # routed to C now, which has no endpoint: staged
    assert net.kinds(n) == []
    assert len(a.device.peers[C_PK].staged) == 1


# --- Refusals -------------------------------------------------------------------------------


def test_unknown_peer_key_gets_no_answer() -> None:
    net, a, b = make_pair()
    net.configure(b, f"replace_peers=true\n{peer_line(C_PK, endpoint=None, allowed=('10.0.0.1/32',))}")
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init")]
    assert b.device.stats.dropped_invalid == 1


def test_wrong_responder_key_fails_mac1() -> None:
    net, a, b = make_pair()
    net.configure(
        a, f"replace_peers=true\n{peer_line(C_PK, endpoint=f'{HOST}:{PORT_B}', allowed=('10.0.0.2/32',))}"
    )
    net.write(a, PING_AB)
    assert net.kinds() == [(PORT_A, "init")]
    assert b.device.stats.dropped_invalid == 1


def test_bad_mac1_on_a_fresh_initiation_dropped() -> None:
    net, a, b = make_pair()
    out = a.device.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0)
    (init,) = sent(out)
    for pos in (116, 131):  # either end of mac1; the rest would be a valid, new initiation
        bad = init[:pos] + bytes([init[pos] ^ 0x80]) + init[pos + 1 :]
        assert net.inject(b, bad, a.endpoint) == []
    assert b.device.stats.dropped_invalid == 2
    assert counters(b, A_PK) == (0, 0)
    assert [len(d) for d in sent(net.inject(b, init, a.endpoint))] == [92]


def test_mac2_ignored_when_not_under_load() -> None:
    net, a, b = make_pair()
    (init,) = sent(a.device.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0))
    bad = init[:140] + bytes([init[140] ^ 1]) + init[141:]
    assert [len(d) for d in sent(net.inject(b, bad, a.endpoint))] == [92]


def test_replayed_transport_dropped() -> None:
    net, a, b = established()
    packet = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(packet, SendDatagram)
    assert net.inject(b, packet.data, a.endpoint) == [DeliverPacket(PING_AB)]
    before = counters(b, A_PK)
    assert net.inject(b, packet.data, a.endpoint) == []
    assert counters(b, A_PK) == before
    assert b.device.stats.dropped_invalid == 1


def test_replayed_initiation_gets_no_response() -> None:
    net, a, b = established()
    init = net.wire[0].data
    net.clock.now = 30.0
    assert net.inject(b, init, a.endpoint) == []
    assert b.device.stats.dropped_invalid == 1


def test_replayed_response_dropped() -> None:
    net, a, b = established()
    resp = net.wire[1].data
    assert net.inject(a, resp, b.endpoint) == []
    assert a.device.stats.dropped_invalid == 1


def test_low_order_peer_keys_never_send() -> None:
    low = [
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
    net = Net()
    a = net.add("A", PORT_A, seed=1)
    net.carry(a, a.device.up(now=0.0))
    text = f"private_key={A_SK.hex()}\nlisten_port={PORT_A}\n"
    for i, pk in enumerate(low):
        text += peer_line(pk, endpoint=f"{HOST}:{PORT_B}", allowed=(f"10.0.{i}.0/24",))
        text += "persistent_keepalive_interval=1\n"
    net.configure(a, text)
    for i in range(len(low)):
        net.write(a, ipv4("10.0.0.1", f"10.0.{i}.1"))
    net.run_until(200.0)
    assert net.wire == []


# --- Malformed datagrams ----------------------------------------------------------------------


def _captured() -> tuple[Net, Node, Node, list[bytes]]:
    """An established pair and one of each datagram kind it exchanged (all already delivered)."""
    net, a, b = make_pair(b_kw={"under_load_threshold": 0})
    net.write(a, PING_AB)  # init, cookie
    net.run_until(6.0)  # init with mac2, resp, data
    net.write(b, PONG_BA)
    kinds = {d.kind: d.data for d in net.wire}
    return net, a, b, [kinds[k] for k in ("init", "cookie", "resp", "data")]


def test_malformed_datagrams_dropped_without_reply() -> None:
    net, a, b = established()
    init, resp, data = net.wire[0].data, net.wire[1].data, net.wire[2].data
    good_type = {1: init, 2: resp, 4: data}
    cases = [
        b"",
        b"\x04",
        data[:31],  # short
        b"\x04\x00\x00\x00" + bytes(65532),  # long
        b"\x05\x00\x00\x00" + bytes(60),  # unknown type
        b"\x01\x00\x00\x01" + init[4:],  # nonzero reserved byte
        init[:147],
        init + b"\x00",
        resp[:91],
        b"\x03\x00\x00\x00" + bytes(61),  # cookie reply of 65 bytes
        b"\x03\x00\x00\x00" + bytes(60),  # cookie reply for an unknown index
        init[:120] + bytes([init[120] ^ 1]) + init[121:],  # bad mac1
        resp[:70] + bytes([resp[70] ^ 1]) + resp[71:],
        data[:4] + b"\xff\xff\xff\xff" + data[8:],  # unknown receiver index
        data[:-1] + bytes([data[-1] ^ 1]),  # bad tag
        data[:20] + bytes([data[20] ^ 1]) + data[21:],  # bad ciphertext
    ]
    for t, msg in good_type.items():
        assert msg[0] == t
    before_b = dataclasses.replace(b.device.stats)
    for case in cases:
        assert net.inject(b, case, a.endpoint) == [], case[:8]
    assert b.device.stats.dropped_invalid - before_b.dropped_invalid == len(cases)
    assert b.delivered == [PING_AB]


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from([1, 2, 3, 4]), st.sampled_from([28, 60, 88, 144, 200])).flatmap(
            lambda tn: st.binary(min_size=tn[1], max_size=tn[1]).map(
                lambda body: struct.pack("<I", tn[0]) + body
            )
        ),
    )
)
def test_random_datagrams_are_dropped_never_raise(data: bytes) -> None:
    net, a, b = _random_pair()
    for node, src in ((a, b.endpoint), (b, a.endpoint)):
        assert node.device.datagram_received(data, src, now=net.now, wall_ns=net.clock.wall_ns) == []


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 3), st.lists(st.tuples(st.integers(0, 65535), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_mutated_real_datagrams_are_dropped(which: int, flips: list[tuple[int, int]]) -> None:
    net, a, b, captured = _captured_pair()
    msg = bytearray(captured[which])
    for pos, xor in flips:
        msg[pos % len(msg)] ^= xor
    for node, src in ((a, b.endpoint), (b, a.endpoint)):
        out = node.device.datagram_received(bytes(msg), src, now=net.now, wall_ns=net.clock.wall_ns)
        # all originals were delivered already: a mutant is a forgery or a replay.
        # A node under load may answer a handshake message with a valid mac1 by a
        # cookie reply, and nothing else. B is under load from the start; A gets
        # there too once more than 128 handshake messages of the examples have
        # reached it within one second of the (unmoving) clock.
        assert all(isinstance(e, SendDatagram) and e.data[0] == 3 for e in out), out


_PAIRS: dict[str, tuple[Net, Node, Node, list[bytes]]] = {}


def _random_pair() -> tuple[Net, Node, Node]:
    if "random" not in _PAIRS:
        net, a, b = established()
        _PAIRS["random"] = (net, a, b, [])
    net, a, b, _ = _PAIRS["random"]
    return net, a, b


def _captured_pair() -> tuple[Net, Node, Node, list[bytes]]:
    if "captured" not in _PAIRS:
        _PAIRS["captured"] = _captured()
    return _PAIRS["captured"]


def test_captured_kinds() -> None:
    *_, captured = _captured()
    assert [type(parse(m)) for m in captured] == [Initiation, CookieReply, Response, Transport]


# --- Configuration --------------------------------------------------------------------------


def test_private_key_change_expires_sessions() -> None:
    net, a, b = established()
    net.clock.now = 5.0
    net.configure(b, f"private_key={C_SK.hex()}\n")
    peer = b.device.peers[A_PK]
    assert peer.current is not None  # still receives
    # A's old session still reaches B
    n = len(net.wire)
    net.write(a, PING_AB)
    assert b.delivered == [PING_AB, PING_AB]
    # B must handshake again with its new key; A does not know it: no answer
    net.write(b, PONG_BA)
    assert net.kinds(n) == [(PORT_A, "data"), (PORT_B, "init")]
    assert a.device.stats.dropped_invalid == 1
    assert peer_of(b, A_PK) != {} and f"private_key={C_SK.hex()}" in b.device.uapi_get().decode()
    # A learns B's new key: the staged packet goes out after a new handshake
    net.configure(
        a,
        f"public_key={B_PK.hex()}\nremove=true\n"
        + peer_line(C_PK, endpoint=f"{HOST}:{PORT_B}", allowed=("10.0.0.2/32",)),
    )
    net.run_until(12.0)
    assert a.delivered == [PONG_BA]


def test_same_private_key_again_keeps_sessions() -> None:
    net, _a, b = established()
    keypair = b.device.peers[A_PK].current
    net.configure(b, f"private_key={B_SK.hex()}\n")
    assert b.device.peers[A_PK].current is keypair
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert net.kinds(n) == [(PORT_B, "data")]


def test_private_key_equal_to_a_peer_removes_it() -> None:
    net, _a, b = established()
    net.configure(b, f"private_key={A_SK.hex()}\n")
    assert A_PK not in b.device.peers
    assert b.device._indices == {}


def test_own_public_key_as_peer_is_ignored() -> None:
    net, a, _ = make_pair()
    net.configure(a, f"public_key={A_PK.hex()}\nendpoint=1.2.3.4:5\n")
    assert list(a.device.peers) == [B_PK]


def test_peer_removal_frees_indices_and_routes() -> None:
    net, a, b = established()
    assert len(b.device._indices) == 1
    old = a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns)[0]
    assert isinstance(old, SendDatagram)
    net.configure(b, f"public_key={A_PK.hex()}\nremove=true\n")
    assert b.device._indices == {}
    assert b.device.peers == {}
    assert net.inject(b, old.data, a.endpoint) == []
    n = len(net.wire)
    net.write(b, PONG_BA)
    assert net.kinds(n) == []
    assert b.device.stats.dropped_no_route == 1
    assert "public_key" not in b.device.uapi_get().decode()


def test_replace_peers_and_readd() -> None:
    net, a, b = established()
    net.configure(b, "replace_peers=true\n" + peer_line(A_PK, endpoint=None, allowed=("10.0.0.1/32",)))
    assert b.device._indices == {}
    n = len(net.wire)
    net.write(a, PING_AB)  # A's keypair is unknown to B now: dropped
    assert b.delivered == [PING_AB]
    net.run_until(16.0)  # A hears nothing back: new handshake after 15 s
    net.write(a, PING_AB)
    assert (PORT_B, "resp") in net.kinds(n)
    assert b.delivered[-1] == PING_AB


def test_listen_port_bind_failure_is_eaddrinuse() -> None:
    net = Net()

    def bind(port: int) -> int:
        raise UapiError(errno.EADDRINUSE)

    dev = Device(rng=random.Random(1).randbytes, bind=bind)
    with pytest.raises(UapiError) as exc_info:
        dev.uapi_set(set_request(f"private_key={A_SK.hex()}\nlisten_port=1\n"), now=0.0, wall_ns=WALL0)
    assert exc_info.value.errno == errno.EADDRINUSE
    assert not dev.bound
    assert dev.identity is not None  # applied before the failing line
    # unbound: handshakes are not sent, data stays staged
    dev.up(now=0.0)
    dev.uapi_set(
        set_request(peer_line(B_PK, endpoint=f"{HOST}:1", allowed=("10.0.0.2/32",))), now=0.0, wall_ns=WALL0
    )
    assert dev.packet_from_tun(PING_AB, now=0.0, wall_ns=WALL0) == []
    assert dev.stats.dropped_no_endpoint == 1
    assert len(dev.peers[B_PK].staged) == 1
    del net


def test_listen_port_zero_binds_any_and_reports_the_port() -> None:
    net = Net()
    a = net.add("A", 40000, seed=1)
    net.configure(a, "listen_port=0\n")
    assert a.binds == [0]
    assert "listen_port=40000\n" in a.device.uapi_get().decode()
    assert a.device.configured


def test_up_binds_when_no_port_was_set() -> None:
    net = Net()
    a = net.add("A", 40001, seed=1)
    assert not a.device.configured
    a.device.up(now=0.0)
    assert a.binds == [0]
    assert a.device.listen_port == 40001


def test_staged_packets_capped_oldest_dropped() -> None:
    net, a, b = make_pair()
    net.blocked.add(PORT_B)
    packets = [ipv4("10.0.0.1", "10.0.0.2", bytes([i % 256]) * 8) for i in range(MAX_STAGED_PACKETS + 3)]
    for p in packets:
        net.write(a, p)
    assert a.device.stats.dropped_staged_overflow == 3
    assert net.kinds() == [(PORT_A, "init")]  # one initiation: the rest wait REKEY_TIMEOUT
    assert list(a.device.peers[B_PK].staged) == packets[3:]
    net.blocked.clear()
    net.run_until(5.4)  # the retry gets through; the staged packets follow in order
    assert b.delivered == packets[3:]


def test_down_drops_sessions_keeps_configuration_and_up_restarts() -> None:
    net, a, b = established()
    conf = peer_of(a, B_PK)
    a.device.down()
    assert not a.device.is_up
    assert a.device._indices == {}
    assert a.device.next_deadline() is None
    assert net.inject(a, net.wire[-1].data, b.endpoint) == []
    assert a.device.stats.dropped_down == 1
    assert a.device.packet_from_tun(PING_AB, now=net.now, wall_ns=net.clock.wall_ns) == []
    after = peer_of(a, B_PK)
    assert after == conf  # keys, endpoint, allowed IPs, counters, handshake time
    net.clock.now = 1.0
    net.carry(a, a.device.up(now=net.now))
    n = len(net.wire)
    net.write(a, PING_AB)
    assert net.kinds(n) == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "data")]


def test_up_sends_persistent_keepalive_at_the_next_tick() -> None:
    net, a, b = make_pair(up=False)
    net.configure(a, f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\n")
    assert net.wire == []  # down: nothing sent
    net.carry(b, b.device.up(now=0.0))
    assert a.device.up(now=0.0) == []
    assert a.device.next_deadline() == 0.0
    net.run_until(0.0)
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "keepalive")]


def test_uapi_error_after_post_config_defers_effects_to_tick() -> None:
    net, a, _b = make_pair()
    with pytest.raises(UapiError) as exc_info:
        a.device.uapi_set(
            set_request(
                f"public_key={B_PK.hex()}\npersistent_keepalive_interval=25\npublic_key={C_PK.hex()}\nbogus=1\n"
            ),
            now=0.0,
            wall_ns=WALL0,
        )
    assert exc_info.value.errno == errno.EINVAL
    assert a.device.next_deadline() == 0.0
    net.carry(a, a.device.tick(now=0.0, wall_ns=WALL0))
    assert net.kinds() == [(PORT_A, "init"), (PORT_B, "resp"), (PORT_A, "keepalive")]


# --- Key log and the known-answer transcript -----------------------------------------------------


def test_keylog_lines_per_handshake() -> None:
    psk = bytes(range(32))
    net, a, b = make_pair(a_kw={"keylog": True}, b_kw={"keylog": True}, psk=psk)
    net.write(a, PING_AB)
    assert len(a.keylog) == 1 and len(b.keylog) == 1
    a_eph = a.keylog[0].splitlines()[2].split(" = ")[1]
    assert a.keylog[0] == (
        f"LOCAL_STATIC_PRIVATE_KEY = {to_base64(A_SK)}\n"
        f"REMOTE_STATIC_PUBLIC_KEY = {to_base64(B_PK)}\n"
        f"LOCAL_EPHEMERAL_PRIVATE_KEY = {a_eph}\n"
        f"PRESHARED_KEY = {to_base64(psk)}\n"
    )
    # the ephemeral is the one in the initiation
    assert public_key(from_base64(a_eph)) == net.wire[0].data[8:40]
    b_lines = b.keylog[0].splitlines()
    assert b_lines[0] == f"LOCAL_STATIC_PRIVATE_KEY = {to_base64(B_SK)}"
    assert b_lines[1] == f"REMOTE_STATIC_PUBLIC_KEY = {to_base64(A_PK)}"
    assert public_key(from_base64(b_lines[2].split(" = ")[1])) == net.wire[1].data[12:44]


def test_no_keylog_by_default() -> None:
    _net, a, b = established()
    assert a.keylog == [] and b.keylog == []


class ScriptRng:
    """Hands out the given chunks in order (each must be asked for at its size), then zeros."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    def __call__(self, n: int) -> bytes:
        if not self.chunks:
            return bytes(n)
        chunk = self.chunks.pop(0)
        assert len(chunk) == n
        return chunk


# Reference section 9 (also in test_handshake.py)
KAT_I_PRIVATE = from_base64("8IVQYjLDQATP10dag3l/uIQVd5rtv/rCjgrs+vIW0mA=")
KAT_R_PRIVATE = from_base64("EFaRnO7ZIOukplkuBTxYtngC43Wy1Tubz5wegxvXaHk=")
KAT_I_EPHEMERAL = from_base64("AOYUYf3MpWAxA5dRZ5X+9X42oRgNg9JaNjFmHoovV2s=")
KAT_R_EPHEMERAL = from_base64("YLCvmCjSwkc0URTKdE7Y4JI11OHLBhXeeF3d6SdbMXM=")
KAT_PSK = from_base64("IxhjQWSZbIGsgwXOZPHxqVPW4/t0aELbYXwn+Pc79qQ=")
KAT_WALL_NS = 0x6553F100 * 1_000_000_000
KAT_INITIATION = bytes.fromhex(
    "01000000040302018b470b00cae7666fd656805fa18b38161364e9863e514da525c0b9dd575d0120"
    "cbae993e122167b72fc0f21f9adb4e5e406c5b1b13ddb26b88172fa413b18312972c98ca0f76ec6d"
    "ac29bc56ebeb0f616d94675b53bf03aa749a89fc0cd7bafd3f47abe9656b2af042947932007bbaa8"
    "768fb6c9de795236ee0ec29000000000000000000000000000000000"
)
KAT_RESPONSE = bytes.fromhex(
    "020000000807060504030201d717d8526fbd2044cd364e21e925dd1d1f392f5e2570f95f53e7a4a7"
    "47ff1f1985fb55e5a7a1f489ee3556b4dfd980d3f9dde1651d0b108bb8d117abdeb8e95c00000000"
    "000000000000000000000000"
)
KAT_PING = bytes.fromhex("4500005400000000400166a70a0000010a000002080000eb00010001") + bytes(range(0x38))
KAT_TRANSPORT = bytes.fromhex(
    "04000000080706050000000000000000ed95c4f2fab138ee9e6d7a4768989064f3b663f01316337d"
    "4db90668742083c58738e814a94e9e77ae78771f1f330675807c98af5098489dddc8086ea5fd6837"
    "c81659a1cbfcee061d019b7cf043df0c6c59a220e9a438bd87f71b1e01cf99f29d396052bfc0c952"
    "ed0aaf75ad39faa1"
)
KAT_KEEPALIVE = bytes.fromhex("040000000403020100000000000000003e4c8c9c76ce1f285b86071b5e313c14")


def _kat_device(
    private: bytes, peer: bytes, rng: Callable[[int], bytes], port: int, peer_port: int, allowed: str
) -> Device:
    dev = Device(rng=rng, bind=lambda p: p)
    dev.uapi_set(
        set_request(
            f"private_key={private.hex()}\nlisten_port={port}\n"
            + peer_line(public_key(peer), endpoint=f"{HOST}:{peer_port}", allowed=(allowed,))
            + f"preshared_key={KAT_PSK.hex()}\n"
        ),
        now=0.0,
        wall_ns=KAT_WALL_NS,
    )
    dev.up(now=0.0)
    return dev


def test_kat_transcript_is_byte_identical() -> None:
    """Reference section 9, through two Devices: initiation (with mac1), response,
    the first transport message and the responder's passive keepalive."""
    i_ep, r_ep = Endpoint(host=HOST, port=1), Endpoint(host=HOST, port=2)
    i = _kat_device(
        KAT_I_PRIVATE, KAT_R_PRIVATE, ScriptRng(b"\x04\x03\x02\x01", KAT_I_EPHEMERAL), 1, 2, "10.0.0.2/32"
    )
    r = _kat_device(
        KAT_R_PRIVATE, KAT_I_PRIVATE, ScriptRng(b"\x08\x07\x06\x05", KAT_R_EPHEMERAL), 2, 1, "10.0.0.1/32"
    )
    out = i.packet_from_tun(KAT_PING, now=0.0, wall_ns=KAT_WALL_NS)
    assert out == [SendDatagram(KAT_INITIATION, r_ep)]
    out = r.datagram_received(KAT_INITIATION, i_ep, now=0.0, wall_ns=KAT_WALL_NS)
    assert out == [SendDatagram(KAT_RESPONSE, i_ep)]
    out = i.datagram_received(KAT_RESPONSE, r_ep, now=0.0, wall_ns=KAT_WALL_NS)
    assert out == [SendDatagram(KAT_TRANSPORT, r_ep)]
    assert r.datagram_received(KAT_TRANSPORT, i_ep, now=0.0, wall_ns=KAT_WALL_NS) == [DeliverPacket(KAT_PING)]
    assert r.tick(now=KEEPALIVE_TIMEOUT, wall_ns=KAT_WALL_NS) == [SendDatagram(KAT_KEEPALIVE, i_ep)]
    assert i.datagram_received(KAT_KEEPALIVE, r_ep, now=KEEPALIVE_TIMEOUT, wall_ns=KAT_WALL_NS) == []


# --- Stats and the load meter -----------------------------------------------------------------


def test_stats_start_at_zero() -> None:
    dev = Device(rng=random.Random(1).randbytes, bind=lambda p: p)
    assert all(v == 0 for v in dataclasses.asdict(dev.stats).values())
    assert dev.next_deadline() is None
    assert dev.uapi_get() == b"errno=0\n\n"
