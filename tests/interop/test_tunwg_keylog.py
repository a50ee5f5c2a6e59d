"""tunwg's key log, end to end: tshark decrypts a capture of its traffic with it.

tunwg (loaded with ``-s keylog=FILE``) in one namespace, wireguard-go in
the other (``tunnels.py``); ``dumpcap`` records the UDP datagrams on
tunwg's end of the veth while pings with a recognisable payload
(``ping -p``) cross the tunnel. Then ``tshark -o wg.keylog_file:FILE``
must show what WireGuard hid: the initiator's static public key and its
TAI64N timestamp in the handshake initiation, the response's empty
payload authenticated, and every echo request and reply, payload
included. Without the file, the same capture shows none of it.

With tunwg as initiator its key log holds the initiator's keys (static
and ephemeral private keys), as responder the responder's: either is
enough for Wireshark to decrypt the whole handshake and session.

The last test loses the session on wireguard-go's side (a restart) while
tunwg, which sends first, still has it: tunwg's data goes unanswered
until its new-handshake timer (KEEPALIVE-TIMEOUT + REKEY-TIMEOUT, 15 s
after the first unanswered send) starts a handshake; the capture spans
both sessions and decrypts throughout with the key log's two entries.

Skips without tshark and dumpcap (Debian's ``tshark`` package; ``./setup``
installs it), besides the interop tests' own needs (``conftest.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pytest

from tests.interop.tunnels import Capture
from tests.netns import check_address, parse_ping, ping, wait_until

if TYPE_CHECKING:
    from pathlib import Path

    from tests.interop.conftest import MakeTunnel
    from tests.netns import NetNs, PingResult

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.slow, pytest.mark.fuse]

#: The ping payload's pattern (``ping -p``, at most 16 bytes): "devfsd-keylog".
PATTERN: Final = b"devfsd-keylog"
#: Echo requests per test.
PINGS: Final = 3
#: TAI64 labels count from 2^62; WireGuard's timestamps add TAI's 10 s offset to Unix time.
TAI64_UNIX_BASE: Final = (1 << 62) + 10
#: KEEPALIVE-TIMEOUT + REKEY-TIMEOUT (whitepaper 6.2 and 6.4): unanswered data to a new handshake.
NEW_HANDSHAKE_AFTER: Final = 10 + 5
#: wireguard-go's REKEY-TIMEOUT-JITTER-MAX (333 ms), plus time for a loaded machine to get there.
NEW_HANDSHAKE_SLACK: Final = 1.5

KEYLOG_NAMES: Final = (
    "LOCAL_STATIC_PRIVATE_KEY",
    "REMOTE_STATIC_PUBLIC_KEY",
    "LOCAL_EPHEMERAL_PRIVATE_KEY",
    "PRESHARED_KEY",
)

#: tshark fields read from each frame, in this order (``Frame``).
FIELDS: Final = (
    "frame.time_epoch",
    "ip.src",
    "wg.type",
    "wg.static",
    "wg.timestamp.tai64_label",
    "wg.handshake_ok",
    "wg.keepalive",
    "wg.decryption_error",
    "icmp.type",
    "icmp.seq",
    "data.data",
)


@pytest.fixture(scope="module")
def tshark() -> None:
    for tool in ("tshark", "dumpcap"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian package tshark, which ./setup installs)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One captured datagram as tshark dissects it (empty strings: not there)."""

    time: float
    outer_src: str
    inner_src: str  # the decrypted packet's source, if any
    wg_type: int
    static: str
    tai64: str
    handshake_ok: str
    keepalive: bool
    decryption_error: bool
    icmp_type: str
    icmp_seq: str
    data: str

    @property
    def wall_timestamp(self) -> int:
        """The initiation's decrypted timestamp, as Unix seconds."""
        return int(self.tai64) - TAI64_UNIX_BASE


def dissect(capture: Path, keylog: Path | None) -> list[Frame]:
    """Every WireGuard datagram of ``capture``, dissected with ``keylog`` (or no keys at all)."""
    argv = ["tshark", "-n", "-r", str(capture), "-o", "wg.dissect_packet:TRUE"]
    argv += ["-o", f"wg.keylog_file:{keylog or ''}", "-Y", "wg", "-T", "fields", "-E", "occurrence=a"]
    for field in FIELDS:
        argv += ["-e", field]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    frames = []
    for line in r.stdout.splitlines():
        t, src, wg_type, static, tai64, ok, keepalive, error, icmp_type, icmp_seq, data = line.split("\t")
        outer, _, inner = src.partition(",")
        frames.append(
            Frame(
                time=float(t),
                outer_src=outer,
                inner_src=inner,
                wg_type=int(wg_type),
                static=static,
                tai64=tai64,
                handshake_ok=ok,
                keepalive=bool(keepalive),
                decryption_error=bool(error),
                icmp_type=icmp_type,
                icmp_seq=icmp_seq,
                data=data,
            )
        )
    return frames


def ping_pattern(ns: NetNs, addr: str, count: int = PINGS) -> PingResult:
    """``count`` pings 0.1 s apart carrying ``PATTERN``; bounded by ``-w`` and a timeout."""
    argv = ["ping", "-n", "-c", str(count), "-i", "0.1", "-W", "2", "-w", str(count + 3)]
    r = ns.run([*argv, "-p", PATTERN.hex(), check_address(addr)], check=False, timeout=count + 8)
    return parse_ping(r.stdout)


def keylog_blocks(keylog: Path) -> list[dict[str, str]]:
    lines = keylog.read_text().splitlines()
    assert len(lines) % 4 == 0, lines
    blocks = [dict(ln.split(" = ", 1) for ln in lines[i : i + 4]) for i in range(0, len(lines), 4)]
    for block in blocks:
        assert tuple(block) == KEYLOG_NAMES
    return blocks


def check_decrypted_pings(frames: list[Frame], pinger: str, pinged: str, seqs: range) -> None:
    """Every echo request ``pinger`` -> ``pinged`` of ``seqs`` and its reply, ``PATTERN`` inside."""
    for icmp_type, src in (("8", pinger), ("0", pinged)):
        got = [f for f in frames if f.icmp_type == icmp_type and f.inner_src == src]
        assert sorted(int(f.icmp_seq) for f in got) == list(seqs), (icmp_type, got)
        for f in got:
            # ping -p repeats the pattern over its 56 bytes after a 16-byte timeval
            # (of which tshark takes 8 as the timestamp): two whole copies at least.
            assert PATTERN.hex() * 2 in f.data, f


@pytest.mark.parametrize("initiator", ["tunwg", "wireguard-go"])
def test_tshark_decrypts_a_capture_with_the_keylog(
    tshark: None, make_tunnel: MakeTunnel, tmp_path: Path, initiator: str
) -> None:
    keylog = tmp_path / "tunwg.keys"
    tunnel = make_tunnel(props={"keylog": str(keylog)})
    t, g = tunnel.t, tunnel.g
    if initiator == "tunwg":
        pinger, pinged, ns, init_key = t.inner4, g.inner4, t.ns, t.key
    else:
        pinger, pinged, ns, init_key = g.inner4, t.inner4, g.ns, g.key
    capture = tmp_path / "wg.pcapng"
    before = time.time()
    with Capture(t.ns, tunnel.veth.dev_a, capture) as cap:
        r = ping_pattern(ns, pinged)
        assert (r.transmitted, r.received) == (PINGS, PINGS)
        # PINGS transport messages each way in the file (and so the handshake before them).
        cap.wait("wg.type == 4", 2 * PINGS)
        assert cap.stop() == 0
    after = time.time()

    # The key log: one handshake, tunwg's own keys in it.
    (block,) = keylog_blocks(keylog)
    assert block["LOCAL_STATIC_PRIVATE_KEY"] == t.key.private
    assert block["REMOTE_STATIC_PUBLIC_KEY"] == g.key.public

    frames = dissect(capture, keylog)
    assert not [f for f in frames if f.decryption_error]
    init, resp = (f for f in frames if f.wg_type in (1, 2))
    assert (init.wg_type, resp.wg_type) == (1, 2)
    # The initiation's encrypted static key and timestamp, decrypted.
    assert init.static == init_key.public
    assert before - 2 <= init.wall_timestamp <= after + 2
    # The response's empty payload authenticated: the handshake's keys are right.
    assert resp.handshake_ok == "1"
    check_decrypted_pings(frames, pinger, pinged, range(1, PINGS + 1))

    # Without the key log the same capture shows WireGuard messages and nothing inside.
    blind = dissect(capture, None)
    assert [f.wg_type for f in blind] == [f.wg_type for f in frames]
    assert [f for f in blind if f.icmp_type or f.inner_src or f.static or f.tai64 or f.handshake_ok] == []
    assert sum(f.wg_type == 4 for f in blind) >= 2 * PINGS


def test_tunwg_sending_first_recovers_after_wireguard_go_restarts(
    tshark: None, make_tunnel: MakeTunnel, tmp_path: Path
) -> None:
    """wireguard-go restarts and loses the session that tunwg initiated; tunwg's
    pings go unanswered (wireguard-go drops them: an unknown receiver index)
    until tunwg starts a new handshake, 15 s after the first of them. The
    capture, over both sessions, decrypts with the key log's two entries."""
    keylog = tmp_path / "tunwg.keys"
    tunnel = make_tunnel(props={"keylog": str(keylog)})
    t, g = tunnel.t, tunnel.g
    capture = tmp_path / "wg.pcapng"
    with Capture(t.ns, tunnel.veth.dev_a, capture) as cap:
        assert ping(t.ns, g.inner4, count=1).received == 1  # tunwg initiates
        assert g.wg.stop() == 0
        g.wg.start()
        tunnel.configure_go()
        assert g.wg.dump().peer(t.key.public).latest_handshake == 0
        lost = 0

        def answered() -> bool:
            nonlocal lost
            ok = ping(t.ns, g.inner4, count=1, wait=1).received == 1
            lost += not ok
            return ok

        # Each ping() sends a request every 0.2 s for at most 3 s, until a reply;
        # the deadline bounds the whole (at most about 130 requests).
        wait_until(answered, NEW_HANDSHAKE_AFTER + 10, "tunwg's new handshake", interval=0)
        assert ping_pattern(t.ns, g.inner4).received == PINGS  # on the new session
        # wireguard-go's replies in the file: one before the restart, 1 + PINGS after
        # (and so the second handshake before them).
        cap.wait(f"wg.type == 4 && ip.src == {g.outer}", 1 + 1 + PINGS)
        assert cap.stop() == 0
    assert g.wg.dump().peer(t.key.public).latest_handshake > 0
    blocks = keylog_blocks(keylog)
    assert len(blocks) == 2
    assert blocks[0]["LOCAL_EPHEMERAL_PRIVATE_KEY"] != blocks[1]["LOCAL_EPHEMERAL_PRIVATE_KEY"]

    frames = dissect(capture, keylog)
    assert not [f for f in frames if f.decryption_error]
    # tunwg initiated both sessions; wireguard-go never did.
    inits = [f for f in frames if f.wg_type == 1]
    assert [f.outer_src for f in inits] == [t.outer, t.outer]
    assert [f.static for f in inits] == [t.key.public, t.key.public]
    assert [f.handshake_ok for f in frames if f.wg_type == 2] == ["1", "1"]
    # The new-handshake timer: from the first unanswered data to the second initiation.
    second = inits[1].time
    last_answer = max(f.time for f in frames if f.outer_src == g.outer and f.time < second)
    unanswered = [
        f for f in frames if f.outer_src == t.outer and f.wg_type == 4 and last_answer < f.time < second
    ]
    waited = second - unanswered[0].time
    assert NEW_HANDSHAKE_AFTER <= waited <= NEW_HANDSHAKE_AFTER + NEW_HANDSHAKE_SLACK, waited
    # Every transport message decrypts, under the old keys or the new: the
    # unanswered pings too, and the last pings, with the pattern.
    data = [f for f in frames if f.wg_type == 4 and not f.keepalive]
    assert data and all(f.icmp_type for f in data)
    assert lost > 0 and all((f.icmp_type, f.inner_src) == ("8", t.inner4) for f in unanswered)
    patterned = [f for f in frames if PATTERN.hex() in f.data]
    check_decrypted_pings(patterned, t.inner4, g.inner4, range(1, PINGS + 1))
