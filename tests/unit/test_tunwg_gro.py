"""tunwg's UDP GRO receive (several datagrams of a peer in one ``recvmsg``) and GSO send.

In-process (``devfsd.testing.harness.Kernel``), over loopback: the peer is
a ``wg.Device`` of the test's own with a UDP socket of its own. It sends a
batch of transport messages as one ``sendmsg`` with ``UDP_SEGMENT``;
loopback keeps such a datagram whole up to a socket that has ``UDP_GRO``
on, so tunwg's socket receives them coalesced, in one ``recvmsg`` with
the segment size in a control message. Each must be decrypted, counted
and delivered as if it had come alone, in order, and a bad one among them
dropped alone. The peer sends to 127.0.0.2, so tunwg's replies must come
from there (the sticky source of issue 17 point 1, learnt from a
coalesced receive).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import TYPE_CHECKING, Final

import trio

from modules.tunwg.iface import SOL_UDP, UDP_SEGMENT
from modules.tunwg.wg import Device, Endpoint, SendDatagram, UapiReader
from modules.tunwg.wg.crypto import generate_private_key, public_key
from tests.unit.test_tunwg_driver import (
    TIMEOUT,
    batch_pair,
    frame,
    ipv4,
    kernel,
    load,
    read,
    side,
    sockdir,
    uapi_get,
    uapi_set,
    wait_for,
)

if TYPE_CHECKING:
    from pathlib import Path

    from devfsd.testing.harness import Kernel
    from modules.tunwg.wg import Effect

__all__ = ["kernel", "sockdir"]  # fixtures, used by name

PEER_INNER: Final = "198.51.100.9"
LOCAL: Final = "127.0.0.2"  # where the peer sends to: one of loopback's addresses, not the primary


def _datagrams(effects: list[Effect]) -> list[bytes]:
    return [e.data for e in effects if isinstance(e, SendDatagram)]


async def test_coalesced_datagrams_are_each_delivered_in_order_and_counted(
    kernel: Kernel, sockdir: Path
) -> None:
    b = side(kernel, sockdir, await load(kernel, sockdir), 0)
    own = generate_private_key(os.urandom)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        port = raw.getsockname()[1]
        await uapi_set(
            b.sock,
            f"private_key={b.private.hex()}\nlisten_port=0\npublic_key={public_key(own).hex()}\n"
            f"endpoint=127.0.0.1:{port}\nallowed_ip={PEER_INNER}/32\n",
        )
        b.port = int(dict(await uapi_get(b.sock))["listen_port"])
        b.f = await kernel.open("tunwg", 0)
        peer = Device(rng=os.urandom, bind=lambda _: port)
        reader = UapiReader()
        reader.receive_data(
            f"set=1\nprivate_key={own.hex()}\nlisten_port={port}\npublic_key={b.public.hex()}\n"
            f"endpoint={LOCAL}:{b.port}\nallowed_ip={b.inner4}/32\n\n".encode()
        )
        request = reader.next_request()
        peer.uapi_set(request, now=0.0, wall_ns=time.time_ns())  # type: ignore[arg-type]
        peer.up(now=0.0)
        sock = trio.socket.from_stdlib_socket(raw)
        dst = (LOCAL, b.port)

        async def receive() -> tuple[bytes, str]:
            with trio.fail_after(TIMEOUT):
                data, addr = await sock.recvfrom(65536)
            return data, addr[0]

        def now() -> float:
            return trio.current_time()

        # The handshake, and a first packet.
        first = ipv4(PEER_INNER, b.inner4)
        (init,) = _datagrams(peer.packet_from_tun(first, now=now(), wall_ns=time.time_ns()))
        await sock.sendto(init, dst)
        response, came_from = await receive()
        assert came_from == LOCAL
        them = Endpoint(host=LOCAL, port=b.port)
        for d in _datagrams(peer.datagram_received(response, them, now=now(), wall_ns=time.time_ns())):
            await sock.sendto(d, dst)
        assert await read(b.node) == first
        rx_before = int(dict(await uapi_get(b.sock))["rx_bytes"])
        dropped_before = b.stats().device.dropped_invalid

        # Five packets, the last shorter, in one sendmsg; the third forged.
        packets = [ipv4(PEER_INNER, b.inner4, ident=i, payload=bytes([i]) * 600) for i in range(4)]
        packets.append(ipv4(PEER_INNER, b.inner4, ident=4, payload=b"x" * 100))
        batch = _datagrams(peer.packets_from_tun(packets, now=now(), wall_ns=time.time_ns()))
        assert len(batch) == 5
        size = len(batch[0])
        assert all(len(d) == size for d in batch[:4]) and len(batch[4]) < size
        batch[2] = batch[2][:-1] + bytes([batch[2][-1] ^ 0xFF])
        raw.sendmsg(batch, [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, dst)

        for want in (packets[0], packets[1], packets[3], packets[4]):
            assert await read(b.node) == want
        stats = b.stats()
        assert stats.received_coalesced == 5  # one recvmsg, all five
        assert stats.device.dropped_invalid == dropped_before + 1
        rx = int(dict(await uapi_get(b.sock))["rx_bytes"])
        assert rx == rx_before + sum(len(batch[i]) for i in (0, 1, 3, 4))

        # The reply leaves from the address the coalesced datagrams came to.
        reply = ipv4(b.inner4, PEER_INNER)
        assert await b.node.write(reply) == len(reply)
        data, came_from = await receive()
        assert came_from == LOCAL
        effects = peer.datagram_received(data, them, now=now(), wall_ns=time.time_ns())
        assert [getattr(e, "packet", None) for e in effects] == [reply]
        await b.node.close()


async def test_a_batch_write_leaves_in_gso_groups_and_arrives_coalesced_or_one_by_one(
    kernel: Kernel, sockdir: Path
) -> None:
    """A batch node's write of equal packets (and a shorter last) leaves as
    one ``UDP_SEGMENT`` send and arrives at the other interface as one
    coalesced receive; with GSO off (as after ``GSO_TRIES`` failures, or
    on a kernel without it), one datagram per call, and the same packets
    arrive, in order."""
    a, b = await batch_pair(kernel, sockdir)
    pymod = kernel.loader.modules["tunwg"].pymod
    for gso in (True, False):
        pymod._get(a.unit, False).gso = gso
        sent, coalesced = a.stats().sent_segmented, b.stats().received_coalesced
        ps = [ipv4(a.inner4, b.inner4, i, payload=bytes([i]) * 500) for i in range(8)]
        ps.append(ipv4(a.inner4, b.inner4, 8, payload=b"short"))
        assert await a.node.write(frame(*ps)) == sum(len(p) + 2 for p in ps)
        await wait_for(lambda: b.stats().queued == len(ps), "the packets queued on b")  # noqa: B023
        assert await read(b.node) == frame(*ps)
        if gso:
            assert a.stats().sent_segmented == sent + len(ps)
            assert b.stats().received_coalesced == coalesced + len(ps)
        else:
            assert a.stats().sent_segmented == sent
            assert b.stats().received_coalesced == coalesced
