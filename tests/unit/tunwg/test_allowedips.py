"""Allowed IPs: longest-prefix match, moves, exact removal, and a slow reference on seeded data."""

from __future__ import annotations

import ipaddress
import random

import pytest

from modules.tunwg.wg.allowedips import AllowedIPs, Prefix, packet_destination, packet_source


def p(text: str) -> Prefix:
    return Prefix.parse(text)


def a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def table(*entries: tuple[str, str]) -> AllowedIPs[str]:
    t: AllowedIPs[str] = AllowedIPs()
    for prefix, peer in entries:
        t.insert(p(prefix), peer)
    return t


# --- Lookup ------------------------------------------------------------------


def test_longest_prefix_wins_ipv4() -> None:
    t = table(("0.0.0.0/0", "any"), ("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"), ("10.1.2.3/32", "c"))
    assert t.lookup(a("10.1.2.3")) == "c"
    assert t.lookup(a("10.1.2.4")) == "b"
    assert t.lookup(a("10.2.0.1")) == "a"
    assert t.lookup(a("192.0.2.1")) == "any"


def test_longest_prefix_wins_ipv6() -> None:
    t = table(("fd00::/8", "a"), ("fd00:1::/32", "b"), ("fd00:1::1/128", "c"))
    assert t.lookup(a("fd00:1::1")) == "c"
    assert t.lookup(a("fd00:1::2")) == "b"
    assert t.lookup(a("fdff::1")) == "a"
    assert t.lookup(a("2001:db8::1")) is None


def test_prefix_lengths_inside_one_byte() -> None:
    t = table(
        ("128.0.0.0/1", "one"), ("192.0.0.0/2", "two"), ("224.0.0.0/3", "three"), ("255.0.0.0/8", "eight")
    )
    assert t.lookup(a("129.0.0.1")) == "one"
    assert t.lookup(a("193.0.0.1")) == "two"
    assert t.lookup(a("225.0.0.1")) == "three"
    assert t.lookup(a("255.1.2.3")) == "eight"
    assert t.lookup(a("127.0.0.1")) is None


def test_families_are_separate() -> None:
    t = table(("0.0.0.0/0", "v4"))
    assert t.lookup(a("::")) is None
    t.insert(p("::/0"), "v6")
    assert t.lookup(a("1.2.3.4")) == "v4"
    assert t.lookup(a("::ffff:1.2.3.4")) == "v6"  # IPv4-mapped is IPv6, as in wireguard-go


def test_empty_table() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    assert t.lookup(a("10.0.0.1")) is None
    assert t.lookup(a("fd00::1")) is None
    assert t.entries_for("x") == []
    assert len(t) == 0


@pytest.mark.parametrize("n", [0, 3, 5, 15, 17])
def test_lookup_refuses_other_lengths(n: int) -> None:
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        table().lookup(bytes(n))


# --- Insert ------------------------------------------------------------------


def test_insert_masks_host_bits() -> None:
    t = table(("10.0.0.7/24", "a"), ("fd00::1:2:3/64", "a"))
    assert t.entries_for("a") == [p("10.0.0.0/24"), p("fd00::/64")]
    assert [str(x) for x in t.entries_for("a")] == ["10.0.0.0/24", "fd00::/64"]
    assert t.lookup(a("10.0.0.200")) == "a"


def test_insert_moves_prefix_from_other_peer() -> None:
    t = table(("10.0.0.0/24", "a"), ("10.9.0.0/16", "a"))
    t.insert(p("10.0.0.99/24"), "b")
    assert t.lookup(a("10.0.0.1")) == "b"
    assert t.entries_for("a") == [p("10.9.0.0/16")]
    assert t.entries_for("b") == [p("10.0.0.0/24")]
    assert len(t) == 2


def test_reinsert_moves_to_end_of_entries() -> None:
    t = table(("10.0.0.0/24", "a"), ("10.1.0.0/24", "a"), ("fd00::/64", "a"))
    t.insert(p("10.0.0.0/24"), "a")
    assert [str(x) for x in t.entries_for("a")] == ["10.1.0.0/24", "fd00::/64", "10.0.0.0/24"]


def test_entries_keep_insertion_order_not_sorted() -> None:
    t = table(("fd00::/64", "a"), ("10.1.0.0/24", "a"), ("10.0.0.0/8", "a"))
    assert [str(x) for x in t.entries_for("a")] == ["fd00::/64", "10.1.0.0/24", "10.0.0.0/8"]


# --- Remove ------------------------------------------------------------------


def test_remove_exact_prefix_of_that_peer() -> None:
    t = table(("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"))
    t.remove(p("10.1.0.0/16"), "b")
    assert t.lookup(a("10.1.0.1")) == "a"
    assert t.entries_for("b") == []


def test_remove_masks_host_bits_too() -> None:
    t = table(("10.1.0.0/16", "a"))
    t.remove(p("10.1.2.3/16"), "a")
    assert t.lookup(a("10.1.0.1")) is None


@pytest.mark.parametrize(
    ("prefix", "peer"),
    [
        ("10.1.0.0/16", "b"),  # another peer's
        ("10.1.0.0/17", "a"),  # longer
        ("10.0.0.0/15", "a"),  # shorter
        ("10.1.2.3/32", "a"),  # an address inside
        ("::a01:0/112", "a"),  # the other family
    ],
)
def test_remove_leaves_anything_else(prefix: str, peer: str) -> None:
    t = table(("10.1.0.0/16", "a"))
    t.remove(p(prefix), peer)
    assert t.lookup(a("10.1.0.1")) == "a"
    assert t.entries_for("a") == [p("10.1.0.0/16")]


def test_remove_falls_back_within_one_byte() -> None:
    t = table(("10.0.0.0/8", "a"), ("10.128.0.0/9", "b"), ("10.192.0.0/10", "c"))
    t.remove(p("10.192.0.0/10"), "c")
    assert t.lookup(a("10.200.0.1")) == "b"
    t.remove(p("10.128.0.0/9"), "b")
    assert t.lookup(a("10.200.0.1")) == "a"


def test_remove_default_route() -> None:
    t = table(("0.0.0.0/0", "a"), ("10.0.0.0/8", "b"))
    t.remove(p("0.0.0.0/0"), "a")
    assert t.lookup(a("192.0.2.1")) is None
    assert t.lookup(a("10.0.0.1")) == "b"


def test_remove_by_peer() -> None:
    t = table(("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"), ("fd00::/8", "b"), ("fd00:1::/32", "a"))
    t.remove_by_peer("b")
    assert t.entries_for("b") == []
    assert t.lookup(a("10.1.0.1")) == "a"
    assert t.lookup(a("fd00::1")) is None
    assert t.lookup(a("fd00:1::1")) == "a"
    t.remove_by_peer("nobody")
    assert len(t) == 2


def test_removing_everything_leaves_empty_tries() -> None:
    # White box: path compression must undo every split, or memory leaks.
    rnd = random.Random(7)
    t: AllowedIPs[int] = AllowedIPs()
    prefixes = [
        Prefix.masked(rnd.randbytes(n), rnd.randrange(8 * n + 1)) for n in (4, 16) for _ in range(200)
    ]
    for i, prefix in enumerate(prefixes):
        t.insert(prefix, i % 7)
    for peer in range(7):
        t.remove_by_peer(peer)
    assert len(t) == 0
    for trie in (t._v4, t._v6):
        assert trie.root.children == {}
        assert trie.root.peers == {}


# --- Prefix text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("10.0.0.1/32", "10.0.0.1/32"),
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("FD00:0:0:0::1/128", "fd00::1/128"),
        ("2001:db8:0:0:1:0:0:1/128", "2001:db8::1:0:0:1/128"),  # RFC 5952: first longest run
        ("::ffff:1.2.3.4/128", "::ffff:1.2.3.4/128"),  # Go keeps the dotted tail
        ("::1.2.3.4/128", "::102:304/128"),
        ("::/0", "::/0"),
    ],
)
def test_prefix_parse_and_str(text: str, shown: str) -> None:
    assert str(Prefix.parse(text)) == shown


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.1",  # no length
        "10.0.0.1/33",
        "fd00::/129",
        "10.0.0.1/08",  # leading zero
        "10.0.0.1/+8",
        "10.0.0.1/-1",
        "10.0.0.1/",
        "10.0.0.1/255.255.255.0",  # netmask
        "010.0.0.1/8",  # leading zero in the address
        "10.0.0/8",
        "fe80::1%eth0/64",  # zone
        "example.com/32",
        " 10.0.0.1/8",
        "10.0.0.1/8 ",
        "10.0.0.1/٨",  # a non-ASCII digit
        "/8",
        "10.0.0.1/99999999999999999999999",
    ],
)
def test_prefix_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the message varies with the cause
        Prefix.parse(text)


def test_prefix_refuses_host_bits_when_built_directly() -> None:
    with pytest.raises(ValueError, match="host bits"):
        Prefix(a("10.0.0.1"), 8)


# --- Packet addresses --------------------------------------------------------

IPV4 = bytes.fromhex("4500005400000000400166a70a0000010a000002") + bytes(64)
IPV6 = bytes.fromhex("6000000000083a40") + a("fd00::1") + a("fd00::2") + bytes(8)


def test_packet_addresses_ipv4() -> None:
    assert packet_source(IPV4) == a("10.0.0.1")
    assert packet_destination(IPV4) == a("10.0.0.2")


def test_packet_addresses_ipv6() -> None:
    assert packet_source(IPV6) == a("fd00::1")
    assert packet_destination(IPV6) == a("fd00::2")


@pytest.mark.parametrize(
    "packet",
    [b"", IPV4[:19], IPV6[:39], b"\x50" + bytes(60), b"\x00" + bytes(60), b"\x65" + IPV4[1:39]],
    ids=["empty", "ipv4-19", "ipv6-39", "version-5", "version-0", "version-6-39"],
)
def test_packet_addresses_refuse_short_or_unknown(packet: bytes) -> None:
    assert packet_source(packet) is None
    assert packet_destination(packet) is None


def test_packet_minimal_lengths() -> None:
    assert packet_destination(IPV4[:20]) == a("10.0.0.2")
    assert packet_destination(IPV6[:40]) == a("fd00::2")


# --- Against a slow reference (wireguard-go allowedips_rand_test.go) ---------


class SlowTable:
    """A plain list, scanned longest prefix first."""

    def __init__(self) -> None:
        self.entries: dict[tuple[int, int, int], int] = {}  # (width, value, bits) -> peer

    def insert(self, prefix: Prefix, peer: int) -> None:
        self.entries[(len(prefix.addr), int.from_bytes(prefix.addr, "big"), prefix.bits)] = peer

    def remove(self, prefix: Prefix, peer: int) -> None:
        key = (len(prefix.addr), int.from_bytes(prefix.addr, "big"), prefix.bits)
        if self.entries.get(key) == peer:
            del self.entries[key]

    def remove_by_peer(self, peer: int) -> None:
        self.entries = {k: v for k, v in self.entries.items() if v != peer}

    def lookup(self, addr: bytes) -> int | None:
        width, value = len(addr), int.from_bytes(addr, "big")
        best, best_bits = None, -1
        for (w, v, bits), peer in self.entries.items():
            shift = 8 * w - bits
            if w == width and bits > best_bits and value >> shift == v >> shift:
                best, best_bits = peer, bits
        return best


@pytest.mark.parametrize("width", [4, 16])
def test_matches_slow_reference(width: int) -> None:
    rnd = random.Random(1)
    fast: AllowedIPs[int] = AllowedIPs()
    slow = SlowTable()
    inserted: list[tuple[Prefix, int]] = []
    for _ in range(250):
        prefix = Prefix.masked(rnd.randbytes(width), rnd.randrange(8 * width + 1))
        peer = rnd.randrange(100)
        fast.insert(prefix, peer)
        slow.insert(prefix, peer)
        inserted.append((prefix, peer))
        if rnd.random() < 0.2:  # exact removals, some of them stale
            old, old_peer = rnd.choice(inserted)
            fast.remove(old, old_peer)
            slow.remove(old, old_peer)
        if rnd.random() < 0.02:
            gone = rnd.randrange(100)
            fast.remove_by_peer(gone)
            slow.remove_by_peer(gone)
    assert len(fast) == len(slow.entries)
    for _ in range(1500):
        if rnd.random() < 0.5:
            addr = rnd.randbytes(width)
        else:  # an address inside a stored prefix, to reach deep nodes
            prefix, _ = rnd.choice(inserted)
            host = 8 * width - prefix.bits
            value = int.from_bytes(prefix.addr, "big") | (rnd.getrandbits(host) if host else 0)
            addr = value.to_bytes(width, "big")
        assert fast.lookup(addr) == slow.lookup(addr), addr.hex()
