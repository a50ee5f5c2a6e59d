"""TUN offloads for the carried interface: TCP segmentation on reading, coalescing on writing.

Sans-I/O (bytes in, bytes out), for carrier.py. A Linux TUN opened with
``IFF_VNET_HDR`` puts a ``struct virtio_net_hdr`` (``VNET_HDR``, 10 bytes)
before every packet, both ways. With ``TUNSETOFFLOAD`` (``TUN_F_CSUM |
TUN_F_TSO4 | TUN_F_TSO6``) the kernel may then hand one read a TCP
*super-segment* of up to 64 KiB whose checksum is left to the reader
(``NEEDS_CSUM``) and which is to be cut into segments of ``gso_size``
payload bytes (``GSO_TCPV4``/``GSO_TCPV6``); and a write may give it
several segments of one TCP flow as one such packet, which its stack
takes in as one. So a TCP stream crosses the TUN in a system call and a
pass of the kernel's stack per 64 KiB instead of per segment, as
wireguard-go does it on Linux.

- ``split(pkt, ...)``: what one read gave, as the IP packets to encrypt:
  the super-segment cut as the kernel's own TCP segmentation cuts it
  (sequence numbers advanced, IPv4 identification counted up, FIN and PSH
  on the last segment only, CWR on the first only, lengths and checksums
  made), or a packet whose checksum is left to the reader completed. A
  header that does not add up raises ``ValueError`` (the read is dropped).
- ``coalesce(packets)``: the peers' decrypted packets, in order, as the
  buffers to write: runs of TCP segments of one flow that the kernel's own
  GRO would merge (same addresses, ports, IP fields, ACK, window, options;
  consecutive sequence numbers; ACK or ACK|PSH only; every segment but the
  last of the run's first one's size; PSH or a shorter segment ends the
  run; at most 64 KiB) as one packet with a ``GSO_TCP*`` header; everything
  else alone behind an empty header. The segments' checksums are not
  checked again: the packets are authenticated, and the kernel's own
  WireGuard marks every decrypted packet's checksums verified
  (``CHECKSUM_UNNECESSARY``) for the same reason; the merged packet is
  marked as a segment the kernel's own stack made (``NEEDS_CSUM``, the
  pseudo-header's sum in its checksum field). A peer's packet is hostile:
  nothing in one makes this raise, it only goes alone.

The internet checksum of a buffer is computed as the buffer read as one
big-endian integer, modulo 0xffff (2**16 is 1 modulo 0xffff, so that is
the sum of its 16-bit words with the carries folded in): C speed, no loop
in Python.
"""

from __future__ import annotations

import struct
from typing import Any, Final

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "NEEDS_CSUM",
    "NO_VNET_HDR",
    "VNET_HDR",
    "checksum",
    "coalesce",
    "split",
]

#: ``struct virtio_net_hdr`` in the host's byte order (a TUN's default):
#: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET_HDR: Final = struct.Struct("=BBHHHH")
NEEDS_CSUM: Final = 1
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
GSO_ECN: Final = 0x80
#: The header of a packet that is whole: no offload asked for.
NO_VNET_HDR: Final = bytes(VNET_HDR.size)
#: TCP flags.
FIN: Final = 0x01
PSH: Final = 0x08
ACK: Final = 0x10
CWR: Final = 0x80
#: Segments and bytes of one coalesced packet, at most (the kernel's GRO
#: stops at 64 segments, and an IP length field at 65535).
COALESCE_SEGMENTS: Final = 64
COALESCE_BYTES: Final = 65535
_PROTO_TCP: Final = 6
_H16: Final = struct.Struct(">H")
_H32: Final = struct.Struct(">I")


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The internet checksum (RFC 1071) of ``data`` with ``initial`` added to its sum."""
    s = int.from_bytes(data, "big")
    if len(data) & 1:
        s <<= 8  # padded with a zero byte
    return 0xFFFF - (s + initial) % 0xFFFF


def _pseudo(pkt: bytes | bytearray, v6: bool, length: int) -> int:
    """The TCP pseudo-header's sum (not folded) for a TCP segment of ``length`` bytes."""
    addrs = pkt[8:40] if v6 else pkt[12:20]
    return int.from_bytes(addrs, "big") + _PROTO_TCP + length


def split(
    pkt: bytes, flags: int, gso_type: int, gso_size: int, csum_start: int, csum_offset: int
) -> list[bytes]:
    """One TUN read's packet ``pkt`` (after its ``VNET_HDR``, whose fields the
    rest are) as whole IP packets (module docstring).

    Raises:
        ValueError: a header that does not add up (the read is dropped).
    """
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & NEEDS_CSUM:
            at = csum_start + csum_offset
            if at + 2 > len(pkt):
                raise ValueError("checksum offset past the packet")
            buf = bytearray(pkt)
            _H16.pack_into(buf, at, checksum(memoryview(buf)[csum_start:]))
            return [bytes(buf)]
        return [pkt]
    if kind not in (GSO_TCPV4, GSO_TCPV6) or not pkt:
        raise ValueError(f"GSO type {gso_type:#x}")
    v6 = kind == GSO_TCPV6
    if v6:
        if pkt[0] >> 4 != 6 or len(pkt) < 60 or pkt[6] != _PROTO_TCP:
            raise ValueError("not a TCP/IPv6 packet")
        iph = 40
    else:
        iph = (pkt[0] & 15) * 4
        if pkt[0] >> 4 != 4 or iph < 20 or len(pkt) < iph + 20 or pkt[9] != _PROTO_TCP:
            raise ValueError("not a TCP/IPv4 packet")
    thl = (pkt[iph + 12] >> 4) * 4
    hl = iph + thl
    if thl < 20 or hl > len(pkt) or gso_size <= 0:
        raise ValueError("bad TCP header or segment size")
    end = len(pkt)
    (seq0,) = _H32.unpack_from(pkt, iph + 4)
    tflags = pkt[iph + 13]
    (ipid0,) = _H16.unpack_from(pkt, 4)
    ip = bytearray(pkt[:iph])
    tcp = bytearray(pkt[iph:hl])
    tcp[16:18] = b"\0\0"
    if not v6:
        ip[10:12] = b"\0\0"
    addrs = int.from_bytes(pkt[8:40] if v6 else pkt[12:20], "big") + _PROTO_TCP
    out = []
    starts = range(hl, end, gso_size)
    last = starts[-1] if starts else hl
    sums = _chunk_sums(pkt, hl, gso_size)
    for i, off in enumerate(starts or (hl,)):
        chunk = pkt[off : off + gso_size]
        f = tflags
        if off != last:
            f &= ~(FIN | PSH)
        if i:
            f &= ~CWR
        tcp[13] = f
        _H32.pack_into(tcp, 4, (seq0 + off - hl) & 0xFFFFFFFF)
        tlen = thl + len(chunk)
        if v6:
            _H16.pack_into(ip, 4, tlen)
        else:
            _H16.pack_into(ip, 2, iph + tlen)
            _H16.pack_into(ip, 4, (ipid0 + i) & 0xFFFF)
            ip[10:12] = b"\0\0"
            _H16.pack_into(ip, 10, checksum(ip))
        s = int.from_bytes(tcp, "big") + addrs + tlen + sums[i]
        _H16.pack_into(tcp, 16, 0xFFFF - s % 0xFFFF)
        out.append(b"".join((ip, tcp, chunk)))
        tcp[16:18] = b"\0\0"
    return out


def numpy() -> Any:
    """numpy, imported on first use: only a carrying with offloads loads it
    (``carry`` calls this before it opens the TUN, so the import does not
    stall the first stream's packets)."""
    import numpy as np

    return np


def _chunk_sums(pkt: bytes, start: int, size: int) -> list[int]:
    """The sums of the 16-bit words of ``pkt[start:]`` cut every ``size`` bytes,
    one per piece (a last odd byte padded with a zero), not folded.

    Many even-sized pieces (TCP segments: the MSS is even in practice) are
    summed by numpy, all in one call: about ten times faster than a big
    integer per piece (measured on 31 pieces of 1388 bytes: 56 against 580
    us on the loaded machine); a few pieces, or odd ones, by big integers.
    """
    n = len(pkt) - start
    if n <= 0:
        return [0]
    count = -(-n // size)
    if count > 2 and not size & 1:
        np = numpy()
        words = np.zeros(count * size, np.uint8)
        words[:n] = np.frombuffer(pkt, np.uint8, n, start)
        sums: list[int] = words.view(">u2").reshape(count, size // 2).sum(axis=1, dtype=np.uint64).tolist()
        return sums
    out = []
    for off in range(start, len(pkt), size):
        piece = pkt[off : off + size]
        c = int.from_bytes(piece, "big")
        out.append(c << 8 if len(piece) & 1 else c)
    return out


def _tcp_segment(p: bytes) -> tuple[int, int, int, bytes] | None:
    """A packet that may be coalesced, as (IP header length, TCP header
    length, payload length, flow key); None for any other."""
    n = len(p)
    if n < 40:
        return None
    b0 = p[0]
    if b0 == 0x45:
        # IPv4 without options, not a fragment, the length field exact.
        if p[9] != _PROTO_TCP or p[6] & 0x3F or p[7] or (p[2] << 8 | p[3]) != n:
            return None
        iph = 20
        key_ip = p[1:2] + p[6:7] + p[8:9] + p[12:20]  # TOS, DF, TTL, addresses
    elif b0 >> 4 == 6:
        if n < 60 or p[6] != _PROTO_TCP or (p[4] << 8 | p[5]) + 40 != n:
            return None
        iph = 40
        key_ip = p[0:4] + p[7:40]  # traffic class, flow label, hop limit, addresses
    else:
        return None
    thl = (p[iph + 12] >> 4) * 4
    payload = n - iph - thl
    if thl < 20 or payload <= 0 or p[iph + 13] & ~PSH != ACK:
        return None
    # Ports, ACK number, data offset, window, options: all must be equal.
    key = key_ip + p[iph : iph + 4] + p[iph + 8 : iph + 13] + p[iph + 14 : iph + 16] + p[iph + 20 : iph + thl]
    return iph, thl, payload, key


def _merge(run: list[bytes], iph: int, thl: int, mss: int) -> list[bytes | bytearray | memoryview]:
    """The buffers of one write: ``run``'s segments as one ``GSO_TCP*`` packet."""
    hl = iph + thl
    head = bytearray(run[0][:hl])
    tlen = thl + sum(len(p) - hl for p in run)
    v6 = iph == 40
    if v6:
        _H16.pack_into(head, 4, tlen)
    else:
        _H16.pack_into(head, 2, iph + tlen)
        head[10:12] = b"\0\0"
        _H16.pack_into(head, 10, checksum(head[:20]))
    head[iph + 13] |= run[-1][iph + 13] & PSH
    # The pseudo-header's sum, folded and not inverted: the kernel adds the
    # rest (NEEDS_CSUM), as for a segment its own stack would send.
    _H16.pack_into(head, iph + 16, (_pseudo(head, v6, tlen) - 1) % 0xFFFF + 1)
    vh = VNET_HDR.pack(NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, hl, mss, iph, 16)
    return [vh, head, *(memoryview(p)[hl:] for p in run)]


def coalesce(packets: list[bytes]) -> list[list[bytes | bytearray | memoryview]]:
    """The peers' decrypted ``packets``, in order, as TUN writes, each a list of
    buffers to write together (module docstring)."""
    out: list[list[bytes | bytearray | memoryview]] = []
    run: list[bytes] = []
    run_key = b""
    iph = thl = mss = total = 0
    expect = -1  # the next sequence number the run takes; -1: the run is closed
    for p in packets:
        seg = _tcp_segment(p)
        if seg is not None and run and expect >= 0:
            piph, _, payload, key = seg
            (seq,) = _H32.unpack_from(p, piph + 4)
            if (
                key == run_key
                and seq == expect
                and payload <= mss
                and total + payload <= COALESCE_BYTES
                and len(run) < COALESCE_SEGMENTS
            ):
                run.append(p)
                total += payload
                expect = (seq + payload) & 0xFFFFFFFF
                if payload < mss or p[piph + 13] & PSH:
                    expect = -1
                continue
        if run:
            _flush(out, run, iph, thl, mss)
        if seg is None:
            run = []
            out.append([NO_VNET_HDR, p])
            continue
        iph, thl, mss, run_key = seg
        (seq,) = _H32.unpack_from(p, iph + 4)
        run = [p]
        total = iph + thl + mss
        expect = -1 if p[iph + 13] & PSH else (seq + mss) & 0xFFFFFFFF
    if run:
        _flush(out, run, iph, thl, mss)
    return out


def _flush(
    out: list[list[bytes | bytearray | memoryview]], run: list[bytes], iph: int, thl: int, mss: int
) -> None:
    if len(run) > 1:
        out.append(_merge(run, iph, thl, mss))
    else:
        out.extend([NO_VNET_HDR, p] for p in run)
