"""tunwg's outer datagrams on the paths of its host (issue 17): never
fragmented, so a peer endpoint routed back through the tunnel itself makes
a loop that dies out.

Each test builds a tunwg - wireguard-go tunnel (``tunnels.py``) in network
namespaces with documentation addresses, torn down also on failure.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import pytest

from tests.interop.test_tunwg_interop import snmp
from tests.interop.tunnels import GO_PORT
from tests.netns import ping

if TYPE_CHECKING:
    from tests.interop.tunnels import Tunnel
    from tests.netns import NetNs

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow, pytest.mark.fuse]

#: How long the routing loop is measured (the issue's figure: 176 MB in 2 s).
LOOP_WINDOW: Final = 2.0
#: Pings sent into the loop during the window.
LOOP_PINGS: Final = 10
#: Each ping goes round, 64 bytes bigger each time, until it no longer fits
#: the TUN's MTU and ``sendto`` fails ``EMSGSIZE``: measured 400 datagrams,
#: 294 kB for the 10 pings (without don't-fragment: 8967 datagrams, 6.3 MB,
#: and growing). The bounds leave three times the measure.
LOOP_MAX_DATAGRAMS: Final = 1200
LOOP_MAX_BYTES: Final = 900_000


def udp_out(ns: NetNs) -> int:
    return snmp(ns, "Udp", "OutDatagrams")


def test_routing_loop_stays_bounded(tunnel: Tunnel) -> None:
    t, g = tunnel.t, tunnel.g
    assert ping(t.ns, g.inner4, count=1).received == 1  # a session, so packets are sent at once
    # The peer's endpoint now lies behind the tunnel itself: every datagram
    # to it comes back into the TUN, is wrapped again and sent again.
    t.host.set("peer", g.key.public, "endpoint", f"{g.inner4}:{GO_PORT}")
    out0, tx0 = udp_out(t.ns), t.dump().peers[0].tx
    start = time.monotonic()
    r = ping(t.ns, g.inner4, count=LOOP_PINGS, interval=LOOP_WINDOW / LOOP_PINGS, wait=0.1)
    time.sleep(max(0.0, start + LOOP_WINDOW - time.monotonic()))  # a window measured, not a state
    datagrams, nbytes = udp_out(t.ns) - out0, t.dump().peers[0].tx - tx0
    assert r.received == 0
    assert datagrams > LOOP_PINGS  # the loop did go round
    assert datagrams <= LOOP_MAX_DATAGRAMS, (datagrams, nbytes)
    assert nbytes <= LOOP_MAX_BYTES, (datagrams, nbytes)
    print(f"routing loop over {LOOP_WINDOW} s: {datagrams} datagrams, {nbytes} bytes")
