"""The carried TUN's offloads (modules/tunwg/offload.py) on crafted packets.

``split`` against the kernel's TCP segmentation rules (lengths, sequence
numbers, IPv4 identification, FIN/PSH on the last segment only, CWR on the
first only, every checksum valid as a receiver checks it), ``coalesce``
against the kernel's GRO rules (what merges and what must go alone), and
the two against each other: a coalesced write, cut again as the kernel
would for a forwarded packet (``split``), gives back the packets that went
in. Hostile input: ``split`` raises only ``ValueError``, ``coalesce``
never raises and writes every packet exactly once, in order. The carrying
through a real TUN, offloads on and off, is tests/interop/
test_tunwg_carrier.py.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.tunwg.offload import (
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    NO_VNET_HDR,
    VNET_HDR,
    checksum,
    coalesce,
    split,
)

SRC4, DST4 = bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])
SRC6 = bytes.fromhex("20010db8000000000000000000000001")
DST6 = bytes.fromhex("20010db8000000000000000000000002")
FIN, SYN, PSH, ACK, CWR = 0x01, 0x02, 0x08, 0x10, 0x80
#: TCP options: two NOPs and a timestamp (what Linux sends on a stream).
TS_OPTS = bytes([1, 1, 8, 10]) + struct.pack(">II", 1000, 2000)


def _fold(s: int) -> int:
    return (s - 1) % 0xFFFF + 1 if s else 0


def _pseudo_sum(pkt: bytes) -> tuple[int, int]:
    """(IP header length, the TCP pseudo-header's sum) of ``pkt``."""
    if pkt[0] >> 4 == 6:
        return 40, int.from_bytes(pkt[8:40], "big") + 6 + len(pkt) - 40
    iph = (pkt[0] & 15) * 4
    return iph, int.from_bytes(pkt[12:20], "big") + 6 + len(pkt) - iph


def tcp_ok(pkt: bytes) -> bool:
    """The IPv4 header checksum (if IPv4) and the TCP checksum hold, as a receiver checks them."""
    iph, ps = _pseudo_sum(pkt)
    if pkt[0] >> 4 == 4 and checksum(pkt[:iph]) not in (0, 0xFFFF):
        return False
    return checksum(pkt[iph:], ps) in (0, 0xFFFF)


def tcp(
    seq: int,
    payload: bytes,
    *,
    v6: bool = False,
    flags: int = ACK,
    ack: int = 7,
    window: int = 500,
    opts: bytes = TS_OPTS,
    sport: int = 40000,
    ident: int = 100,
    tos: int = 0,
    ip_opts: bytes = b"",
    frag: int = 0x4000,
) -> bytes:
    """A TCP/IP packet with valid checksums."""
    t = bytearray(
        struct.pack(
            ">HHIIBBHHH", sport, 5201, seq & 0xFFFFFFFF, ack, (20 + len(opts)) // 4 << 4, flags, window, 0, 0
        )
    )
    t += opts + payload
    if v6:
        ip = bytearray(struct.pack(">IHBB", 6 << 28 | tos << 20, len(t), 6, 64) + SRC6 + DST6)
    else:
        iph = 20 + len(ip_opts)
        ip = bytearray(
            struct.pack(">BBHHHBBH", 0x40 | iph // 4, tos, iph + len(t), ident, frag, 64, 6, 0) + SRC4 + DST4
        )
        ip += ip_opts
        struct.pack_into(">H", ip, 10, checksum(ip))
    pkt = bytes(ip + t)
    iph, ps = _pseudo_sum(pkt)
    struct.pack_into(">H", t, 16, checksum(t, ps))
    return bytes(ip + t)


def stream(
    n: int, mss: int = 1000, *, v6: bool = False, seq0: int = 5000, last: int | None = None, **kw: Any
) -> list[bytes]:
    """``n`` consecutive segments of one flow, IPv4 identifications counting up."""
    sizes = [mss] * n
    if last is not None:
        sizes[-1] = last
    out, seq = [], seq0
    for i, size in enumerate(sizes):
        out.append(tcp(seq, bytes([(seq + j) & 0xFF for j in range(size)]), v6=v6, ident=100 + i, **kw))
        seq += size
    return out


def superseg(pkts: list[bytes]) -> bytes:
    """What the kernel hands a TSO reader for ``pkts``: the first's headers,
    every payload, the IP length of the whole, the flags of the last."""
    iph, _ = _pseudo_sum(pkts[0])
    thl = (pkts[0][iph + 12] >> 4) * 4
    head = bytearray(pkts[0][: iph + thl])
    body = b"".join(p[iph + thl :] for p in pkts)
    if iph == 40:
        struct.pack_into(">H", head, 4, thl + len(body))
    else:
        struct.pack_into(">H", head, 2, iph + thl + len(body))
    head[iph + 13] = pkts[0][iph + 13] | pkts[-1][iph + 13]
    struct.pack_into(">H", head, iph + 16, 0x1234)  # the kernel's partial sum: split ignores it
    return bytes(head) + body


def written(bufs: list[bytes | bytearray | memoryview]) -> tuple[tuple[int, ...], bytes]:
    """One write's virtio header fields and its packet."""
    data = b"".join(bytes(b) for b in bufs)
    return VNET_HDR.unpack_from(data), data[VNET_HDR.size :]


# -- split ------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("last", [1000, 999, 1], ids=["full", "odd", "one-byte"])
def test_split_gives_the_segments_the_sender_would_have_sent(v6: bool, last: int) -> None:
    pkts = stream(5, v6=v6, last=last)
    pkts[-1] = tcp(5000 + 4000, pkts[-1][-last:], v6=v6, ident=104, flags=ACK | PSH | FIN)
    got = split(superseg(pkts), NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, 1000, 40 if v6 else 20, 16)
    assert got == pkts
    assert all(tcp_ok(p) for p in got)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("mss", [999, 1000], ids=["odd-mss", "even-mss"])
def test_split_any_count_and_segment_size(n: int, mss: int) -> None:
    """Few segments and odd sizes take another way to the checksums than many even ones."""
    for last in {mss, mss - 1, 1}:
        for v6 in (False, True):
            pkts = stream(n, mss, v6=v6, last=last if n > 1 else None)
            iph = 40 if v6 else 20
            got = split(superseg(pkts), NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, mss, iph, 16)
            assert got == pkts


def test_split_cwr_on_the_first_segment_only_and_ids_wrap() -> None:
    pkts = stream(3, flags=ACK | CWR)
    sup = bytearray(superseg(pkts))
    struct.pack_into(">H", sup, 4, 0xFFFF)  # identification about to wrap
    got = split(bytes(sup), NEEDS_CSUM, GSO_TCPV4 | 0x80, 1000, 20, 16)
    assert [p[33] for p in got] == [ACK | CWR, ACK, ACK]
    assert [struct.unpack_from(">H", p, 4)[0] for p in got] == [0xFFFF, 0, 1]
    assert all(tcp_ok(p) for p in got)


def test_split_sequence_numbers_wrap() -> None:
    pkts = stream(3, seq0=0xFFFFFC00)
    got = split(superseg(pkts), NEEDS_CSUM, GSO_TCPV4, 1000, 20, 16)
    assert got == pkts


def test_split_ipv4_with_options() -> None:
    opts = bytes([1, 1, 1, 0])  # NOPs and an end of list
    pkts = [tcp(1 + 500 * i, bytes(500), ident=100 + i, ip_opts=opts) for i in range(3)]
    assert split(superseg(pkts), NEEDS_CSUM, GSO_TCPV4, 500, 24, 16) == pkts


def test_split_completes_a_checksum_left_to_the_reader() -> None:
    """A packet that is not a super-segment but whose checksum the kernel left
    to the reader (``TUN_F_CSUM``): a UDP datagram, with the pseudo-header's
    sum in its checksum field; and one that already is whole."""
    data = b"hello, odd length"
    udp = bytearray(struct.pack(">HHHH", 1000, 53, 8 + len(data), 0) + data)
    ip = bytearray(struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0) + SRC4 + DST4)
    struct.pack_into(">H", ip, 10, checksum(ip))
    ps = int.from_bytes(SRC4 + DST4, "big") + 17 + len(udp)
    struct.pack_into(">H", udp, 6, _fold(ps % 0xFFFF))
    (got,) = split(bytes(ip + udp), NEEDS_CSUM, GSO_NONE, 0, 20, 6)
    assert got[:26] == bytes(ip + udp)[:26]
    assert checksum(got[20:], ps) in (0, 0xFFFF)
    assert got[26:28] != b"\0\0"  # UDP: 0 would mean no checksum at all
    whole = tcp(1, b"x")
    assert split(whole, 0, GSO_NONE, 0, 0, 0) == [whole]


@pytest.mark.parametrize(
    ("pkt", "gso", "size", "start", "offset"),
    [
        (tcp(1, bytes(100)), 3, 50, 20, 16),  # UDP fragmentation offload: never asked for
        (tcp(1, bytes(100)), GSO_TCPV6, 50, 20, 16),  # type against version
        (tcp(1, bytes(100), v6=True), GSO_TCPV4, 50, 40, 16),
        (tcp(1, bytes(100)), GSO_TCPV4, 0, 20, 16),  # no segment size
        (tcp(1, bytes(100))[:30], GSO_TCPV4, 50, 20, 16),  # cut short
        (b"", GSO_TCPV4, 50, 20, 16),
        (tcp(1, bytes(100)), GSO_NONE, 0, 200, 16),  # checksum past the end
    ],
    ids=["udp-gso", "v4-as-v6", "v6-as-v4", "no-size", "short", "empty", "csum-offset"],
)
def test_split_refuses_what_does_not_add_up(pkt: bytes, gso: int, size: int, start: int, offset: int) -> None:
    with pytest.raises(ValueError, match=r"GSO type|not a TCP|bad TCP|checksum offset"):
        split(pkt, NEEDS_CSUM, gso, size, start, offset)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=300),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
def test_split_raises_only_valueerror(
    pkt: bytes, flags: int, gso: int, size: int, start: int, off: int
) -> None:
    for data in (pkt, tcp(1, pkt), tcp(1, pkt, v6=True)):
        try:
            out = split(data, flags, gso, size, start, off)
        except ValueError:
            continue
        assert all(isinstance(p, bytes) for p in out)


# -- coalesce ------------------------------------------------------------------------------


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_coalesced_segments_are_one_gso_write_that_splits_back(v6: bool) -> None:
    pkts = stream(10, v6=v6, last=333)
    (bufs,) = coalesce(pkts)
    (flags, gso, hdr_len, gso_size, start, offset), merged = written(bufs)
    iph = 40 if v6 else 20
    assert (flags, gso, hdr_len, gso_size, start, offset) == (
        NEEDS_CSUM,
        GSO_TCPV6 if v6 else GSO_TCPV4,
        iph + 32,
        1000,
        iph,
        16,
    )
    assert len(merged) == iph + 32 + 9333
    if not v6:
        assert checksum(merged[:20]) in (0, 0xFFFF)
    # The kernel completes the checksum from the pseudo-header sum left in it.
    (whole,) = split(merged, NEEDS_CSUM, GSO_NONE, 0, start, offset)
    assert tcp_ok(whole)
    assert split(merged, flags, gso, gso_size, start, offset) == pkts


def test_psh_ends_a_run_and_keeps_its_flag() -> None:
    pkts = stream(6)
    pkts[2] = tcp(7000, pkts[2][-1000:], ident=102, flags=ACK | PSH)
    a, b = coalesce(pkts)
    (_, _, _, _, _, _), first = written(a)
    assert first[33] == ACK | PSH and len(first) == 52 + 3000
    assert written(b)[1][33] == ACK and len(written(b)[1]) == 52 + 3000


def test_a_shorter_segment_ends_a_run() -> None:
    pkts = stream(3, last=10) + stream(2, seq0=5000 + 2010)
    writes = coalesce(pkts)
    assert [len(written(w)[1]) - 52 for w in writes] == [2010, 2000]


@pytest.mark.parametrize(
    "other",
    [
        {"sport": 40001},
        {"ack": 8},
        {"window": 501},
        {"opts": bytes([1, 1, 8, 10]) + struct.pack(">II", 1001, 2000)},
        {"tos": 1},
        {"flags": ACK | FIN},
        {"flags": ACK | SYN},
        {"flags": ACK | CWR},
        {"flags": 0},
        {"frag": 0x2000},  # more fragments
        {"frag": 0},  # DF differs
    ],
    ids=["port", "ack", "window", "timestamp", "tos", "fin", "syn", "cwr", "no-ack", "fragment", "df"],
)
def test_what_the_kernel_would_not_merge_goes_alone(other: dict[str, Any]) -> None:
    first = stream(2)
    odd = tcp(7000, bytes(1000), ident=102, **other)
    writes = coalesce([*first, odd])
    assert len(writes) == 2
    assert written(writes[1]) == ((0,) * 6, odd)


def test_gaps_other_flows_and_other_packets_break_runs_in_order() -> None:
    a = stream(3)
    gap = tcp(5000 + 3000 + 1, bytes(1000), ident=103)  # one byte missing
    other = stream(2, sport=40002)
    ping = bytes.fromhex("4500001c0001000040010000") + SRC4 + DST4 + bytes(8)
    v6 = stream(2, v6=True)
    tiny = b"\x45"
    pkts = [*a, gap, *other, ping, *v6, tiny]
    writes = coalesce(pkts)
    assert [written(w)[0][1] for w in writes] == [
        GSO_TCPV4,
        GSO_NONE,
        GSO_TCPV4,
        GSO_NONE,
        GSO_TCPV6,
        GSO_NONE,
    ]
    assert written(writes[3])[1] == ping and written(writes[5])[1] == tiny
    assert written(writes[1])[1] == gap


def test_a_run_stops_at_64_segments_and_64_kib() -> None:
    assert [written(w)[0][1] for w in coalesce(stream(70, mss=100))] == [GSO_TCPV4, GSO_TCPV4]
    assert len(coalesce(stream(70, mss=100))[0]) == 2 + 64
    sizes = [len(written(w)[1]) for w in coalesce(stream(50, mss=1400))]
    assert max(sizes) <= 65535 and sum(s - 52 for s in sizes) == 50 * 1400


def test_one_segment_goes_with_an_empty_header() -> None:
    (p,) = stream(1)
    assert coalesce([p]) == [[NO_VNET_HDR, p]]


_PACKETS = st.one_of(
    st.binary(max_size=80),
    st.builds(lambda s, n: tcp(s, bytes(n)), st.integers(0, 3000), st.integers(0, 40)),
    st.builds(
        lambda s, n, f: tcp(s, bytes(n), v6=True, flags=f),
        st.integers(0, 3000),
        st.integers(0, 40),
        st.integers(0, 255),
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PACKETS, st.sampled_from(stream(4, mss=20))), max_size=30))
def test_coalesce_writes_every_packet_once_in_order(pkts: list[bytes]) -> None:
    went: list[object] = []
    for bufs in coalesce(pkts):
        (flags, gso, hdr_len, size, start, offset), data = written(bufs)
        if gso == GSO_NONE:
            assert (flags, len(bufs)) == (0, 2)
            went.append(bufs[1])
            continue
        parts = [b.obj for b in bufs[2:] if isinstance(b, memoryview) and isinstance(b.obj, bytes)]
        assert len(parts) == len(bufs) - 2 >= 2
        went += parts
        # Back into its segments, as the kernel would: each one whole, each
        # with its own sequence number and bytes.
        segs = split(data, flags, gso, size, start, offset)
        assert all(tcp_ok(x) for x in segs)
        assert [x[start + 4 : start + 8] + x[hdr_len:] for x in segs] == [
            p[start + 4 : start + 8] + p[hdr_len:] for p in parts
        ]
    assert len(went) == len(pkts) and all(a is b for a, b in zip(went, pkts, strict=True))
