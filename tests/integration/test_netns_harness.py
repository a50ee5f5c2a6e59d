"""The interop harness itself: two namespaces over veth, wireguard-go in each.

Proves ``tests.netns`` before tunwg's interop tests lean on it:
handshakes started from either side, pings over IPv4 and IPv6 both ways,
a bounded TCP stream, ``wg show`` counters that agree between the two
sides (with the exact byte counts a cold tunnel gives, a reference for
tunwg), and nothing left behind, also when the test body fails.

Every test here skips, naming what is missing, without root,
/dev/net/tun, ``ip netns``, wireguard-go, ``wg``, ``ping``, ``iperf3`` or
``ss``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.netns import (
    WG_RUN_DIR,
    KeyPair,
    NetNs,
    WgPair,
    check_address,
    iperf3_tcp,
    missing_capability,
    ping,
    udp_in_errors,
    wait_counters_settled,
    wait_until,
    wg_pubkey,
    wireguard_go_pair,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow]

#: Sizes of WireGuard messages on the wire (whitepaper 5.4): initiation,
#: response, and a transport message's header + tag around the padded packet.
INITIATION: int = 148
RESPONSE: int = 92
TRANSPORT_OVERHEAD: int = 32
#: A default IPv4 ping (84 bytes: 20 IP + 8 ICMP + 56 data) padded to 96,
#: and the largest transport message at wireguard-go's MTU 1420.
PING4_MESSAGE: int = 96 + TRANSPORT_OVERHEAD
FULL_MESSAGE: int = 1420 + TRANSPORT_OVERHEAD


@pytest.fixture(scope="module")
def capable() -> None:
    why = missing_capability(("wireguard-go", "wg", "ping", "iperf3", "ss"))
    if why is not None:
        pytest.skip(why)


def _ours() -> str:
    """The infix every name this process makes carries (``unique_name``)."""
    return f"{os.getpid()}x"


def _leftovers() -> list[str]:
    """Namespaces, sockets and wireguard-go processes of ours still present."""
    left = [
        f"netns {n}"
        for n in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
        if _ours() in n
    ]
    if WG_RUN_DIR.exists():
        left += [f"socket {p}" for p in WG_RUN_DIR.iterdir() if _ours() in p.name]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"wireguard-go") and any(_ours().encode() in a for a in argv):
            left.append(f"process {pid} {argv!r}")
    return left


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test here leaves no namespace, socket or daemon of ours behind."""
    yield
    assert _leftovers() == []


@pytest.fixture
def pair(capable: None, tmp_path: Path) -> Iterator[WgPair]:
    with wireguard_go_pair(tmp_path, log_level="verbose") as p:
        yield p


def test_only_documentation_addresses_pass() -> None:
    for ok in ("192.0.2.1", "198.51.100.7/24", "203.0.113.9:51820", "[2001:db8::1]:51820", "2001:db8::/64"):
        assert check_address(ok) == ok
    for bad in ("10.0.0.1", "172.16.0.1/24", "192.168.1.1:51820", "8.8.8.8", "fd00::1", "0.0.0.0/0"):
        with pytest.raises(ValueError, match="not a documentation address"):
            check_address(bad)


def test_key_helper_agrees_with_wg_pubkey(capable: None) -> None:
    k = KeyPair.generate()
    assert wg_pubkey(k.private) == k.public


@pytest.mark.parametrize("initiator", ["a", "b"])
def test_handshake_from_either_side(pair: WgPair, initiator: str) -> None:
    me, other = (pair.a, pair.b) if initiator == "a" else (pair.b, pair.a)
    assert me.wg.dump().peer(other.key.public).latest_handshake == 0
    assert ping(me.ns, other.inner4, count=1).received == 1
    me.wg.wait_handshake(other.key.public)
    other.wg.wait_handshake(me.key.public)
    for h, o in ((me, other), (other, me)):
        d = h.wg.dump()
        assert (d.device.public_key, d.device.listen_port, d.device.fwmark) == (h.key.public, h.port, None)
        p = d.peer(o.key.public)
        assert (p.endpoint, p.allowed_ips, p.keepalive) == (
            o.endpoint,
            (f"{o.inner4}/32", f"{o.inner6}/128"),
            None,
        )
    # Who initiated shows in the bytes: the initiation is 148, the response 92.
    a, b = wait_counters_settled(pair)
    mine, theirs = (a, b) if me is pair.a else (b, a)
    assert theirs.tx == RESPONSE + PING4_MESSAGE
    assert mine.tx - INITIATION - PING4_MESSAGE in (0, TRANSPORT_OVERHEAD)


@pytest.mark.parametrize("family", ["inner4", "inner6"])
def test_ping_both_ways(pair: WgPair, family: str) -> None:
    for src, dst in ((pair.a, pair.b), (pair.b, pair.a)):
        r = ping(src.ns, getattr(dst, family), count=3, wait=2)
        assert (r.transmitted, r.received, len(r.rtts)) == (3, 3, 3)


def test_counters_of_a_cold_tunnel_are_exact(pair: WgPair) -> None:
    """3 pings a -> b from cold: a sends the initiation (148), 3 requests
    and, if the response beat the queued packet out, a keepalive (32);
    b sends the response (92) and 3 replies. Each side's rx is the other's
    tx (nothing lost: no UDP receive errors)."""
    assert ping(pair.a.ns, pair.b.inner4, count=3).received == 3
    a, b = wait_counters_settled(pair)
    assert (udp_in_errors(pair.a.ns), udp_in_errors(pair.b.ns)) == (0, 0)
    assert (a.tx, a.rx) == (b.rx, b.tx)
    assert b.tx == RESPONSE + 3 * PING4_MESSAGE
    assert a.tx - INITIATION - 3 * PING4_MESSAGE in (0, TRANSPORT_OVERHEAD)


def test_tcp_stream_and_counters(pair: WgPair) -> None:
    """4 MiB over TCP a -> b; then every byte one side sent is one the other
    received, except datagrams the kernel dropped at the receiving UDP socket
    (wireguard-go leaves SO_RCVBUF at 208 KiB and overflows it under a TCP
    burst: hundreds of drops are usual here). Each drop costs between a bare
    transport message (32) and a full one (1452), so the gap is bounded by
    the drop count, and zero when nothing was dropped."""
    r = iperf3_tcp(pair.a.ns, pair.b.ns, pair.b.inner4, nbytes=4 << 20, timeout=20)
    # iperf3 -n stops counting at the receiver when the sender has written
    # the last byte, so only the sender's count is exact.
    assert r.bytes_sent == 4 << 20
    assert 0 < r.bytes_received <= r.bytes_sent
    a, b = wait_counters_settled(pair)
    for sent, got, receiver in ((a.tx, b.rx, pair.b.ns), (b.tx, a.rx, pair.a.ns)):
        drops = udp_in_errors(receiver)
        assert TRANSPORT_OVERHEAD * drops <= sent - got <= FULL_MESSAGE * drops, (sent, got, drops)


def _use_then_fail(tmp_path: Path, made: list[str]) -> None:
    with wireguard_go_pair(tmp_path) as p:
        made += p.names
        assert ping(p.a.ns, p.b.inner4, count=1).received == 1
        assert all((WG_RUN_DIR / f"{h.wg.ifname}.sock").exists() for h in (p.a, p.b))
        assert _leftovers() != []
        raise RuntimeError("test body failed")


def test_everything_removed_also_on_failure(capable: None, tmp_path: Path) -> None:
    made: list[str] = []
    with pytest.raises(RuntimeError, match="test body failed"):
        _use_then_fail(tmp_path, made)
    assert len(made) == 6 and _leftovers() == []


def test_netns_kills_processes_it_did_not_start(capable: None) -> None:
    with NetNs() as ns:
        stray = subprocess.Popen(ns.argv(["sleep", "60"]))  # not ns.popen: untracked
        wait_until(lambda: stray.pid in ns.pids(), 5, "sleep to enter the namespace")
    assert stray.wait(5) == -signal.SIGTERM
