"""tunwg carried in the daemon (``tunwg-bridge -d``, modules/tunwg/carrier.py):
how the carrying ends, and what it refuses on a real TUN.

The interop tests run in this mode too (their ``mode`` fixture); here each
way the carrying ends, with nothing left behind: the tool gone, the TUN
interface gone (the daemon's descriptor was its only one), the daemon
holding no open file, and the node free, so that carrying it again works.
Network namespaces and documentation addresses only (``tunnels.py``).
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import DevfsdError
from modules.tunwg.carrier import CARRY, TUNWGIOCCARRY
from tests.interop.test_tunwg_interop import _tcp_both_ways_and_counters
from tests.netns import INNER_NET4, INNER_NET6, NetNs, ping, unique_name, wait_until
from tests.tunwg import STOP_TIMEOUT

if TYPE_CHECKING:
    from tests.interop.conftest import MakeTunnel
    from tests.interop.tunnels import Tunnel

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow, pytest.mark.fuse]


def _link_exists(tunnel: Tunnel) -> bool:
    return tunnel.t.ns.run(["ip", "link", "show", tunnel.t.tun], check=False).returncode == 0


def _open_files(tunnel: Tunnel) -> int:
    return int(tunnel.t.host.mount.client().status()["open_files"])


def _nothing_left_and_carried_again(tunnel: Tunnel) -> None:
    """The TUN gone, no open file in the daemon; then ``-d`` again carries pings."""
    t, g = tunnel.t, tunnel.g
    wait_until(lambda: not _link_exists(tunnel), STOP_TIMEOUT, f"{t.tun} to go")
    wait_until(lambda: _open_files(tunnel) == 0, STOP_TIMEOUT, "the daemon to close the node")
    t.host.bridge(
        t.tun, f"{t.inner4}/{INNER_NET4.prefixlen}", f"{t.inner6}/{INNER_NET6.prefixlen}", in_daemon=True
    )
    assert ping(t.ns, g.inner4, count=2, interval=0.1).received == 2


@pytest.mark.parametrize("how", ["sigterm", "link-del", "tool-killed"])
def test_carrying_ends_and_leaves_nothing(make_tunnel: MakeTunnel, how: str) -> None:
    """SIGTERM of the tool (it exits 0, silent), ``ip link del`` of the TUN (the
    tool's read of the node ends at end of file: exit 0, silent), SIGKILL of
    the tool (the kernel closes the node for it)."""
    tunnel = make_tunnel(mode="daemon")
    t, g = tunnel.t, tunnel.g
    assert ping(t.ns, g.inner4, count=1).received == 1
    assert ping(g.ns, t.inner6, count=1).received == 1
    proc = t.host.bridges[-1]
    if how == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif how == "link-del":
        t.ns.run(["ip", "link", "del", t.tun])
    else:
        proc.kill()
    code = proc.wait(STOP_TIMEOUT)
    assert proc.stderr is not None
    assert (code, proc.stderr.read()) == ((-signal.SIGKILL if how == "tool-killed" else 0), b"")
    _nothing_left_and_carried_again(tunnel)


def test_node_close_ends_it(make_tunnel: MakeTunnel) -> None:
    """The request straight from a process of ours (no tool): the TUN lives
    while we hold the node open, and closing the node ends the carrying."""
    tunnel = make_tunnel(mode="daemon")
    t, g = tunnel.t, tunnel.g
    proc = t.host.bridges[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_TIMEOUT) == 0
    wait_until(lambda: not _link_exists(tunnel), STOP_TIMEOUT, f"{t.tun} to go")
    node = str(t.host.node(0))
    client = t.host.mount.client()
    fd = os.open(node, os.O_RDWR)
    try:
        client.ioctl(node, TUNWGIOCCARRY, CARRY.pack(t.tun.encode(), t.host.mtu))
        assert _link_exists(tunnel)
        with pytest.raises(DevfsdError) as ei:  # once only
            client.ioctl(node, TUNWGIOCCARRY, CARRY.pack(t.tun.encode(), t.host.mtu))
        assert ei.value.errno == errno.EBUSY
        t.ns.addr_add(t.tun, f"{t.inner4}/{INNER_NET4.prefixlen}")
        t.ns.link_up(t.tun)
        assert ping(t.ns, g.inner4, count=2, interval=0.1).received == 2
    finally:
        os.close(fd)
    _nothing_left_and_carried_again(tunnel)


def test_not_a_tun_interface_is_einval(make_tunnel: MakeTunnel) -> None:
    """A name that is another kind of interface (the veth) is refused, and
    the node stays usable."""
    tunnel = make_tunnel(mode="daemon")
    t = tunnel.t
    proc = t.host.bridges[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_TIMEOUT) == 0
    wait_until(lambda: _open_files(tunnel) == 0, STOP_TIMEOUT, "the daemon to close the node")
    node = str(t.host.node(0))
    fd = os.open(node, os.O_RDWR)
    try:
        with pytest.raises(DevfsdError) as ei:
            t.host.mount.client().ioctl(node, TUNWGIOCCARRY, CARRY.pack(tunnel.veth.dev_a.encode(), 1420))
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    _nothing_left_and_carried_again(tunnel)


@pytest.mark.parametrize("offload", [1, 0], ids=["offload", "no-offload"])
@pytest.mark.parametrize("family", ["inner4", "inner6"])
def test_tcp_both_ways_with_and_without_offloads(make_tunnel: MakeTunnel, family: str, offload: int) -> None:
    """4 MiB each way at once on one TCP connection, hashes checked, with the
    TUN's offloads (the default) and without (``offload=0``); with them, the
    stream really crossed the TUN as super-segments read and coalesced
    segments written (the counters the daemon logs when the carrying ends)."""
    tunnel = make_tunnel(mode="daemon", props={"offload": offload})
    t, g = tunnel.t, tunnel.g
    _tcp_both_ways_and_counters(tunnel, getattr(g, family), 4 << 20)
    proc = t.host.bridges[-1]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(STOP_TIMEOUT) == 0
    ended = re.compile(
        rf"carrying on {t.tun} ended: done \(offloads (on|off): "
        r"(\d+) super-segments read, \d+ segments; (\d+) coalesced writes, \d+ segments\)"
    )
    wait_until(lambda: ended.search(t.host.log_text()) is not None, STOP_TIMEOUT, "the carrying's end logged")
    m = ended.search(t.host.log_text())
    assert m is not None
    if offload:
        assert m[1] == "on" and int(m[2]) > 0 and int(m[3]) > 0, m[0]
    else:
        assert m.groups() == ("off", "0", "0")
    assert "Traceback" not in t.host.log_text()


#: Run inside a network namespace: ``open_tun`` asking for the offloads,
#: with the kernel made to refuse one request (argv[2]) by a stand-in for
#: ``fcntl.ioctl``; prints whether the TUN has them, and its flags.
_OPEN_TUN = """
import errno, fcntl, os, sys
from modules.tunwg import carrier
real = fcntl.ioctl
def ioctl(fd, req, arg=0, *rest):
    refuse = sys.argv[2]
    if refuse == "offload" and req == carrier.TUNSETOFFLOAD:
        raise OSError(errno.EINVAL, "refused")
    vnet = req == carrier.TUNSETIFF and carrier._IFREQ_FLAGS.unpack(arg)[1] & carrier.IFF_VNET_HDR
    if refuse == "vnet_hdr" and vnet:
        raise OSError(errno.EINVAL, "refused")
    return real(fd, req, arg, *rest)
carrier.fcntl.ioctl = ioctl
fd, offload = carrier.open_tun(sys.argv[1], 1400, True)
_, flags = carrier._IFREQ_FLAGS.unpack(real(fd, carrier.TUNGETIFF, bytes(carrier._IFREQ_FLAGS.size)))
print(offload, bool(flags & carrier.IFF_VNET_HDR), open(f"/sys/class/net/{sys.argv[1]}/mtu").read().strip())
"""


@pytest.mark.parametrize("refuse", ["nothing", "offload", "vnet_hdr"])
def test_a_kernel_refusing_offloads_gets_a_tun_without(capable: None, refuse: str) -> None:
    """``open_tun`` falls back to a TUN without ``IFF_VNET_HDR`` when the
    kernel refuses ``TUNSETOFFLOAD`` or ``IFF_VNET_HDR`` (tests/interop's TCP
    test with ``offload=0`` carries a stream on such a TUN)."""
    with NetNs("two") as ns:
        tun = unique_name("to")
        code = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{_OPEN_TUN}"
        r = ns.run([sys.executable, "-c", code, tun, refuse])
        on = "True" if refuse == "nothing" else "False"
        assert r.stdout.split() == [on, on, "1400"], r.stderr
