"""tunwg through tunwg-bridge against wireguard-go, over the same veth, side by side.

``python bench/bench_tunwg.py [--quick] [--rounds N] [--count N] [--seconds S]``
``[--one-way] [--variant LABEL[:CMD[:DIR[:CPUS]]]]... [--label WORD] [--no-json]``
``python bench/bench_tunwg.py --profile [--seconds S] [--variant ...]... [--label WORD]``
``python bench/bench_tunwg.py --baseline [--quick] [--rounds N] ...``

The topology is wireguard-go against wireguard-go over a veth pair, with
tunwg added beside it (``--baseline``: without it, the reference alone,
no devfsd):

- namespaces a and b on a veth pair (192.0.2.1, .2), wireguard-go in each,
  peered (tunnel 198.51.100.1 in a, .2 in b): ``wireguard_go_pair``;
- a devfsd in a (run under ``nsenter --net``, so its UDP socket is in a;
  the FUSE mount is seen everywhere) with ``modload tunwg``, its node made
  with ``devfs-mknod``, its interface configured with the real ``wg`` (port
  51821, peer b's wireguard-go); ``tunwg-bridge`` in a joins the node to the
  Linux TUN interface that carries 198.51.100.3, point to point to
  198.51.100.4, a second address of b's wireguard-go interface, where b's
  wireguard-go has tunwg as a second peer (allowed-ips 198.51.100.3/32).

So one wireguard-go (b's) is the far end of both tunnels, and the only
difference between the paths is a's end: wireguard-go, or tunwg through
FUSE and the bridge. The paths, each measured the same way
(``ping -c COUNT -i 0.01``: median RTT; one ``iperf3 -t SECONDS`` TCP
stream: throughput as received, retransmits, UDP drops in the receiving
namespace):

- ``veth``: a to b's outer address, no WireGuard (the floor, for scale);
- ``wireguard-go`` and ``tunwg``: a to b through each tunnel, so a's end
  encrypts the stream (for tunwg: a write(2) on the node per segment) and
  decrypts the ACKs (a poll(2) and a read(2) per ACK);
- ``wireguard-go b->a`` and ``tunwg b->a`` (unless ``--one-way``): b to a,
  so a's end decrypts the stream and encrypts the ACKs.

The rounds interleave every path, rotating the order, so a slow spell of
the machine falls on all of them; the table gives medians over the rounds
and tunwg's ratios to wireguard-go per direction (throughput: the target is
0.5 or more; RTT: 2 or less), as the ratio of the medians and the range of
the per-round ratios. Every sample also records the CPU seconds the
daemons used during its stream (``/proc/PID/stat``) and how busy the
machine was (``/proc/stat``): on two CPUs the ends, the bridge and iperf3
share them.

``--profile`` instead runs, on the same topology, a devfsd whose FUSE
handlers count their requests (``DevFs.read``, ``write``, ``poll``: calls,
outcomes and time inside the handler), one stream per direction; then the
same under ``cProfile``; then the whole machine under ``perf record``, if
``perf`` is installed; then the sans-I/O per-packet cost (two
``wg.Device``s in this process, no I/O). It prints requests per packet,
the profile's top functions and the CPU split by process and library.

``--in-daemon`` adds path ``tunwg[daemon]``: a tunwg end carried in its
daemon (``tunwg-bridge -d``, no FUSE request per packet), as a variant
with that command.

``--veth-gro`` turns GRO on at a's end of the veth, as a NIC has it
(``rx-gro``, and ``rx-udp-gro-forwarding``, which veth wants before it
coalesces a local socket's datagrams): a UDP socket with ``UDP_GRO`` on,
as tunwg's, then receives b's datagrams coalesced; wireguard-go's (no
``UDP_GRO`` in 0.0.20220316) gets them one by one as before.

``--variant LABEL:CMD:DIR:CPUS:MINOR:OPTS`` adds another tunwg end,
measured in the same rounds as path ``tunwg[LABEL]``: its own devfsd,
given module directory DIR (searched before the tree's, so a changed copy
of ``modules/tunwg`` there is what loads) and ``-o OPTS`` (``public_only``:
devfsd without its fast paths; ``isolate``, not passed on: tunwg loaded
with ``modload -I``, in a host process of its own, whose CPU time counts
as a's), its own bridge, command CMD (split as a
shell would, given NODE IFNAME; default ``tunwg-bridge``), both (and an
isolated end's host) pinned to CPUS with ``taskset`` if given, its node
minor MINOR; empty fields keep
the default.
Variant i uses UDP port 51821 + i and addresses 198.51.100.(3 + 2i) and
(4 + 2i). That is how a change is measured against the unchanged tunwg and
wireguard-go with the machine's conditions shared. With ``--profile``,
every variant is profiled in turn.

Prints a table and writes every sample as JSON to ``bench/results/``. A
benchmark, not a test: it checks only that pings come back (lost ones are
counted) and that iperf3 succeeds. Everything it makes (namespaces, veth, TUN, daemons, mount, UAPI
sockets) is removed in ``finally`` blocks whatever happens.

Needs root, /dev/net/tun, /dev/fuse, ``ip netns``, ``nsenter``,
wireguard-go, ``wg``, ``ping``, ``iperf3`` and ``ss``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import ctypes
import io
import json
import os
import pstats
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.* and tests.*

from bench.benchinfo import machine_info, machine_ticks, proc_ticks, rotations, tool_version
from devfsd.testing.mount import DevfsdMount, run, tool
from devfsd.tools.tunwg_bridge import BATCH as TUNWG_BATCH
from tests.netns import (
    KeyPair,
    check_address,
    iperf3_tcp,
    missing_capability,
    ping,
    udp_in_errors,
    unique_name,
    wait_until,
    wg,
    wireguard_go_pair,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from tests.netns import NetNs, WgPair

BENCH_DIR: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH_DIR.parent
RESULTS_DIR: Final = BENCH_DIR / "results"

PING_INTERVAL: Final = 0.01
IPERF3_PORT: Final = 5201
#: tunwg's UDP port in a; variant i takes TUNWG_PORT + i.
TUNWG_PORT: Final = 51821
#: a's veth features ``--veth-gro`` turns on (``ethfeatures.py``).
VETH_GRO: Final = ("rx-gro", "rx-udp-gro-forwarding")
TUNWG_MTU: Final = 1420  # tunwg's default; the TUN link must not exceed it
TUNWG_MAJOR_NAME: Final = "tunwg"
TOOLS: Final = ("wireguard-go", "wg", "ping", "iperf3", "ss", "nsenter")
TICK: Final = os.sysconf("SC_CLK_TCK")
SHIM_FLAG: Final = "--daemon-shim"
SHIM_COMM: Final = b"devfsd-shim"
PR_SET_NAME: Final = 15
#: Opens and closes the shim's counting windows: a real-time signal, since
#: devfsd's stall watchdog has SIGUSR2 and its fault log SIGUSR1.
SHIM_SIGNAL: Final = signal.SIGRTMIN + 3


# -- the tunwg end ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One tunwg end to measure: a bridge command and a module directory.

    Variant ``index`` i gets UDP port ``TUNWG_PORT + i``, tunnel address
    198.51.100.(3 + 2i) in a and 198.51.100.(4 + 2i) on b's wireguard-go.
    """

    index: int
    label: str  # "" for the tree's tunwg and tunwg-bridge
    bridge: tuple[str, ...] = ()  # () = tunwg-bridge
    modpath: tuple[str, ...] = ()
    cpus: str = ""  # taskset(1) list for the daemon and the bridge; "" = unpinned
    minor: int = 0  # the node's minor: 0, or tunwg's BATCH bit (65536) for batch framing
    options: str = ""  # the daemon's -o (e.g. public_only: no fast paths); "" = none

    @property
    def name(self) -> str:
        return f"tunwg[{self.label}]" if self.label else "tunwg"

    @property
    def port(self) -> int:
        return TUNWG_PORT + self.index

    @property
    def local(self) -> str:
        """tunwg's tunnel address (a's end of the TUN link)."""
        return check_address(f"198.51.100.{3 + 2 * self.index}")

    @property
    def remote(self) -> str:
        """The address of b's wireguard-go this end talks to."""
        return check_address(f"198.51.100.{4 + 2 * self.index}")


def parse_variant(index: int, text: str) -> Variant:
    """``LABEL[:BRIDGE-CMD[:MODPATH[:CPUS[:MINOR[:OPTS]]]]]`` (empty fields: the defaults)."""
    label, _, rest = text.partition(":")
    bridge, _, rest = rest.partition(":")
    modpath, _, rest = rest.partition(":")
    cpus, _, rest = rest.partition(":")
    minor, _, options = rest.partition(":")
    if not re.fullmatch(r"[\w.+-]+", label):
        raise argparse.ArgumentTypeError(f"{text!r}: a variant needs a label (letters, digits, . + -)")
    if minor and not minor.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: MINOR must be a number")
    return Variant(
        index=index,
        label=label,
        bridge=tuple(shlex.split(bridge)),
        modpath=(modpath,) if modpath else (),
        cpus=cpus,
        minor=int(minor or 0),
        options=options,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class TunwgEnd:
    """tunwg in namespace a: the daemon, its interface, the bridge."""

    variant: Variant
    mount: DevfsdMount
    node: Path
    ifname: str  # the tunwg interface (and UAPI socket name)
    tun: str  # the bridge's Linux TUN interface
    key: KeyPair
    daemon_pid: int
    bridge: subprocess.Popen[bytes]


@contextlib.contextmanager
def tunwg_end(pair: WgPair, tmp: Path, v: Variant, *, shim: Sequence[str] = ()) -> Iterator[TunwgEnd]:
    """tunwg in ``pair.a``'s namespace, peered with ``pair.b``'s wireguard-go.

    Its own devfsd (with ``v.modpath``), run under ``nsenter --net`` and
    ``shim`` (the profiling shim, or nothing), and its own bridge
    (``v.bridge``, given NODE IFNAME, or ``tunwg-bridge``). Everything is
    undone on exit: the bridge stopped, the daemon stopped and its mount
    gone (which removes the UAPI socket); b's extra peer, address and route
    go with b's namespace.
    """
    a, b = pair.a, pair.b
    prefix = unique_name("tw")
    ifname = f"{prefix}0"
    tun = unique_name("tb")
    key = KeyPair.generate()
    local, remote = v.local, v.remote
    args = [x for d in v.modpath for x in ("--modpath", d)]
    opts = [o for o in v.options.split(",") if o]
    isolated = "isolate" in opts  # devfsd's -I, not a mount option
    if [o for o in opts if o != "isolate"]:
        args += ["-o", ",".join(o for o in opts if o != "isolate")]
    mount = DevfsdMount(
        tmp / f"devfsd{v.index}", args=args, wrapper=["nsenter", f"--net=/var/run/netns/{a.ns.name}", *shim]
    )
    with mount:
        assert mount.proc is not None
        mount.client().modload("tunwg", {"ifname": prefix}, isolated=isolated)
        node = mount.path / "tunwg0"
        r = run(["devfs-mknod", str(node), "c", TUNWG_MAJOR_NAME, str(v.minor)], env=mount.env)
        if r.returncode != 0:
            raise RuntimeError(f"devfs-mknod: {r.stderr.decode().strip()}")
        wg(
            a.ns,
            "set",
            ifname,
            "private-key",
            str(key.write_private(tmp)),
            "listen-port",
            str(v.port),
            "peer",
            b.key.public,
            "endpoint",
            check_address(b.endpoint),
            "allowed-ips",
            check_address(f"{remote}/32"),
        )
        b.wg.set(
            "peer",
            key.public,
            "endpoint",
            check_address(f"{a.outer}:{v.port}"),
            "allowed-ips",
            check_address(f"{local}/32"),
        )
        b.ns.addr_add(b.wg.ifname, f"{remote}/32")
        # b reaches tunwg from ``remote``, so that a's answers take the TUN
        # interface back, not a's wireguard-go (whose peer b would drop
        # them: its allowed-ips are wireguard-go a's).
        b.ns.run(["ip", "route", "add", f"{local}/32", "dev", b.wg.ifname, "src", remote])
        argv = [*(v.bridge or [tool("tunwg-bridge")]), str(node), tun]
        bridge = a.ns.popen(argv, stderr=subprocess.PIPE)
        try:
            wait_until(
                lambda: (
                    a.ns.run(["ip", "link", "show", tun], check=False).returncode == 0
                    or bridge.poll() is not None
                ),
                10,
                f"TUN interface {tun}",
            )
            if bridge.poll() is not None:
                err = bridge.stderr.read().decode() if bridge.stderr else ""
                raise RuntimeError(f"bridge exited with {bridge.returncode}: {err}")
            a.ns.run(["ip", "link", "set", tun, "mtu", str(TUNWG_MTU)])
            a.ns.run(["ip", "addr", "add", local, "peer", f"{remote}/32", "dev", tun])
            a.ns.link_up(tun)
            if v.cpus:
                # An isolated end's host too: it inherits the daemon's CPUs
                # only when started, and it was started (modload) before.
                host = _host_pid(mount.proc.pid) if isolated else None
                for pid in (mount.proc.pid, bridge.pid, *([host] if host else [])):
                    subprocess.run(
                        ["taskset", "-a", "-p", "-c", v.cpus, str(pid)],
                        capture_output=True,
                        timeout=10,
                        check=True,
                    )
            yield TunwgEnd(
                variant=v,
                mount=mount,
                node=node,
                ifname=ifname,
                tun=tun,
                key=key,
                daemon_pid=mount.proc.pid,
                bridge=bridge,
            )
        finally:
            if bridge.poll() is None:
                bridge.send_signal(signal.SIGTERM)
            try:
                bridge.wait(10)
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait(10)
            if bridge.stderr is not None:
                bridge.stderr.close()


def handshake(pair: WgPair, ends: Sequence[TunwgEnd]) -> None:
    """Every tunnel up both ways, so no measurement waits for a handshake."""
    todo = [(pair.a.ns, pair.b.inner4), (pair.b.ns, pair.a.inner4)]
    for e in ends:
        todo += [(pair.a.ns, e.variant.remote), (pair.b.ns, e.variant.local)]
    for ns, addr in todo:

        def answered(ns: NetNs = ns, addr: str = addr) -> bool:
            return ping(ns, addr, count=1).received == 1

        wait_until(answered, 15, f"{addr} to answer a ping from {ns.name}")


# -- measuring ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One way from the client namespace to an address in the server's."""

    name: str
    client: NetNs
    server: NetNs
    addr: str
    kind: str  # "veth", "wireguard-go" or "tunwg"
    direction: str  # "a->b" or "b->a"
    pids: dict[str, int]  # processes whose CPU time is recorded: "a" (a's end), "bridge", "b"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One round on one path."""

    path: str
    kind: str
    direction: str
    round: int
    ping_sent: int
    ping_received: int
    rtts_ms: tuple[float, ...]
    rtt_avg_ms: float | None
    rtt_median_ms: float | None
    tcp_seconds: float
    tcp_bytes_received: int
    tcp_gbit_per_s: float
    tcp_retransmits: int
    udp_drops: int  # UDP InErrors in the server's namespace during the stream
    wall_s: float  # the stream's wall time, for the CPU figures
    cpu_s: dict[str, float]  # CPU seconds of a's end, the bridge, b's end during the stream
    machine_busy: float  # fraction of all CPUs busy during the stream


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    path: str
    rtt_median_ms: float
    rtt_min_ms: float
    rtt_max_ms: float
    gbit_per_s: float
    gbit_min: float
    gbit_max: float
    pings_lost: int
    retransmits: int
    udp_drops: int
    cpu_percent: dict[str, float]  # median over rounds, of one CPU


@dataclass(frozen=True, slots=True, kw_only=True)
class Ratio:
    path: str
    direction: str
    gbit_ratio: float  # tunwg / wireguard-go, medians
    gbit_ratio_min: float  # per-round ratios
    gbit_ratio_max: float
    rtt_ratio: float
    rtt_ratio_min: float
    rtt_ratio_max: float
    gbit_target_met: bool  # >= 0.5
    rtt_target_met: bool  # <= 2


def _paths(pair: WgPair, ends: Sequence[TunwgEnd], *, both_ways: bool) -> list[Link]:
    """veth, then per direction wireguard-go and every tunwg end."""
    a, b = pair.a, pair.b
    assert a.wg.proc is not None and b.wg.proc is not None
    go = {"a": a.wg.proc.pid, "b": b.wg.proc.pid}
    links = [
        Link(name="veth", client=a.ns, server=b.ns, addr=b.outer, kind="veth", direction="a->b", pids={})
    ]
    for direction in ("a->b", "b->a") if both_ways else ("a->b",):
        fwd = direction == "a->b"
        suffix = "" if fwd else " b->a"
        links.append(
            Link(
                name=f"wireguard-go{suffix}",
                client=a.ns if fwd else b.ns,
                server=b.ns if fwd else a.ns,
                addr=b.inner4 if fwd else a.inner4,
                kind="wireguard-go",
                direction=direction,
                pids=go,
            )
        )
        for e in ends:
            links.append(
                Link(
                    name=f"{e.variant.name}{suffix}",
                    client=a.ns if fwd else b.ns,
                    server=b.ns if fwd else a.ns,
                    addr=e.variant.remote if fwd else e.variant.local,
                    kind="tunwg",
                    direction=direction,
                    pids={"a": e.daemon_pid, "bridge": e.bridge.pid, "b": go["b"], **_host(e)},
                )
            )
    return links


def _host(e: TunwgEnd) -> dict[str, int]:
    """``{"host": PID}`` of an isolated end's module host (its CPU time is
    a's too), else nothing."""
    if "isolate" not in e.variant.options.split(","):
        return {}
    host = _host_pid(e.daemon_pid)
    return {"host": host} if host else {}


def _host_pid(daemon_pid: int) -> int | None:
    """The daemon's one child (its module host), if it has exactly one."""
    kids = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{daemon_pid}/task"):
            with open(f"/proc/{daemon_pid}/task/{tid}/children") as f:
                kids += [int(p) for p in f.read().split()]
    return kids[0] if len(kids) == 1 else None


@contextlib.contextmanager
def _cpu_window(pids: dict[str, int], out: dict[str, float]) -> Iterator[None]:
    """CPU seconds each of ``pids`` used inside the block, and the machine's
    busy fraction (``out["machine"]``)."""
    t0 = {k: proc_ticks(p) for k, p in pids.items()}
    m0 = machine_ticks()
    yield
    for k, p in pids.items():
        out[k] = (proc_ticks(p) - t0[k]) / TICK
    m1 = machine_ticks()
    out["machine"] = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])


def _measure(path: Link, rnd: int, count: int, seconds: float, interval: float = PING_INTERVAL) -> Sample:
    p = ping(path.client, path.addr, count=count, interval=interval, wait=2)
    if not p.received:
        raise RuntimeError(f"{path.name}: no ping came back")
    drops0 = udp_in_errors(path.server)
    cpu: dict[str, float] = {}
    t0 = time.monotonic()
    with _cpu_window(path.pids, cpu):
        t = iperf3_tcp(
            path.client, path.server, path.addr, seconds=seconds, port=IPERF3_PORT, timeout=seconds + 20
        )
    wall = time.monotonic() - t0
    drops = udp_in_errors(path.server) - drops0
    busy = cpu.pop("machine")
    if "host" in cpu:  # an isolated end: a's CPU is its daemon's and its host's
        cpu["a"] += cpu["host"]
    return Sample(
        path=path.name,
        kind=path.kind,
        direction=path.direction,
        round=rnd,
        ping_sent=p.transmitted,
        ping_received=p.received,
        rtts_ms=p.rtts,
        rtt_avg_ms=p.avg,
        rtt_median_ms=p.median,
        tcp_seconds=t.seconds,
        tcp_bytes_received=t.bytes_received,
        tcp_gbit_per_s=t.bits_per_second / 1e9,
        tcp_retransmits=t.retransmits,
        udp_drops=drops,
        wall_s=wall,
        cpu_s=cpu,
        machine_busy=busy,
    )


def _summarise(names: list[str], samples: list[Sample]) -> list[Row]:
    rows = []
    for name in names:
        mine = [s for s in samples if s.path == name]
        medians = [s.rtt_median_ms for s in mine if s.rtt_median_ms is not None]
        gbits = [s.tcp_gbit_per_s for s in mine]
        procs = sorted({k for s in mine for k in s.cpu_s})
        cpu = {k: 100 * statistics.median(s.cpu_s.get(k, 0.0) / s.wall_s for s in mine) for k in procs}
        cpu["machine"] = 100 * (os.cpu_count() or 1) * statistics.median(s.machine_busy for s in mine)
        rows.append(
            Row(
                path=name,
                rtt_median_ms=statistics.median(medians),
                rtt_min_ms=min(medians),
                rtt_max_ms=max(medians),
                gbit_per_s=statistics.median(gbits),
                gbit_min=min(gbits),
                gbit_max=max(gbits),
                pings_lost=sum(s.ping_sent - s.ping_received for s in mine),
                retransmits=sum(s.tcp_retransmits for s in mine),
                udp_drops=sum(s.udp_drops for s in mine),
                cpu_percent=cpu,
            )
        )
    return rows


def _ratios(samples: list[Sample], rows: list[Row]) -> list[Ratio]:
    """Each tunwg path against wireguard-go in the same direction."""
    out = []
    by_name = {r.path: r for r in rows}
    kinds = {s.path: (s.kind, s.direction) for s in samples}
    for tw in rows:
        kind, direction = kinds[tw.path]
        go = by_name.get("wireguard-go" if direction == "a->b" else "wireguard-go b->a")
        if kind != "tunwg" or go is None:
            continue
        per_gbit, per_rtt = [], []
        for rnd in sorted({s.round for s in samples}):
            t = [s for s in samples if s.round == rnd and s.path == tw.path]
            g = [s for s in samples if s.round == rnd and s.path == go.path]
            if t and g and t[0].rtt_median_ms and g[0].rtt_median_ms:
                per_gbit.append(t[0].tcp_gbit_per_s / g[0].tcp_gbit_per_s)
                per_rtt.append(t[0].rtt_median_ms / g[0].rtt_median_ms)
        gr = tw.gbit_per_s / go.gbit_per_s
        rr = tw.rtt_median_ms / go.rtt_median_ms
        out.append(
            Ratio(
                path=tw.path,
                direction=direction,
                gbit_ratio=gr,
                gbit_ratio_min=min(per_gbit),
                gbit_ratio_max=max(per_gbit),
                rtt_ratio=rr,
                rtt_ratio_min=min(per_rtt),
                rtt_ratio_max=max(per_rtt),
                gbit_target_met=gr >= 0.5,
                rtt_target_met=rr <= 2.0,
            )
        )
    return out


def _table(rows: list[Row], ratios: list[Ratio], args: argparse.Namespace) -> str:
    w = max(len(r.path) for r in rows)
    head = (
        f"{'path':<{w}}  {'RTT ms':>6}  {'(min-max)':<13}  {'lost':>4}  {'TCP Gbit/s':>10}  {'(min-max)':<13}"
        f"  {'retrans':>7}  {'drops':>6}  {'CPU %: a':>8}  {'bridge':>6}  {'b':>3}  {'all':>3}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r.cpu_percent
        cpu = "  ".join(
            f"{f'{c[k]:.0f}' if k in c else '-':>{n}}" for k, n in (("a", 8), ("bridge", 6), ("b", 3))
        )
        lines.append(
            f"{r.path:<{w}}  {r.rtt_median_ms:6.3f}  {f'({r.rtt_min_ms:.3f}-{r.rtt_max_ms:.3f})':<13}"
            f"  {r.pings_lost:4d}  {r.gbit_per_s:10.3f}  {f'({r.gbit_min:.3f}-{r.gbit_max:.3f})':<13}"
            f"  {r.retransmits:7d}  {r.udp_drops:6d}  {cpu}  {c['machine']:3.0f}"
        )
    lines.append("")
    for q in ratios:
        lines.append(
            f"{q.path} / wireguard-go: throughput {q.gbit_ratio:.2f}"
            f" ({q.gbit_ratio_min:.2f}-{q.gbit_ratio_max:.2f}; target >= 0.5:"
            f" {'met' if q.gbit_target_met else 'MISSED'}), RTT {q.rtt_ratio:.2f}"
            f" ({q.rtt_ratio_min:.2f}-{q.rtt_ratio_max:.2f}; target <= 2:"
            f" {'met' if q.rtt_target_met else 'MISSED'})"
        )
    lines.append("")
    lines.append(
        f"{args.rounds} round(s); each: ping -c {args.count} -i {args.interval} (median of the replies;"
        f" lost: summed), iperf3 TCP -t {args.seconds}; medians over the rounds, (min-max) over the rounds;"
    )
    lines.append(
        "ratios: of the medians, (range of the per-round ratios); CPU: % of one CPU during the stream,"
    )
    lines.append(
        f"median over the rounds: a's end (wireguard-go or devfsd), the bridge, b's wireguard-go, and all"
        f" of the machine's {os.cpu_count()} CPUs (so up to {100 * (os.cpu_count() or 1)})."
    )
    return "\n".join(lines)


# -- the record -----------------------------------------------------------


def _git_head() -> str:
    r = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "modules/tunwg", "devfsd"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


def _machine() -> dict[str, object]:
    return machine_info(
        git=_git_head(), **{t: tool_version([t, "--version"]) for t in ("wireguard-go", "wg", "iperf3")}
    )


def _write_json(name: str, args: argparse.Namespace, doc: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = f"-{args.label}" if args.label else ""
    quick = "-quick" if getattr(args, "quick", False) else ""
    out = RESULTS_DIR / f"{name}-{stamp}{quick}{label}.json"
    full = {"benchmark": "bench_tunwg", "machine": _machine(), "options": _options(args), **doc}
    out.write_text(json.dumps(full, indent=2) + "\n")
    return out


def _options(args: argparse.Namespace) -> dict[str, object]:
    opts: dict[str, object] = {
        k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool | None)
    }
    opts["variants"] = [asdict(v) for v in args.variants]
    return opts


# -- the benchmark ----------------------------------------------------------


def bench(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    samples: list[Sample] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench_tunwg.") as tmpdir,
        wireguard_go_pair(tmpdir) as pair,
        contextlib.ExitStack() as stack,
    ):
        if args.veth_gro:  # as a NIC: GRO, and UDP GRO for local sockets (veth wants the second too)
            pair.a.ns.run(
                [sys.executable, str(BENCH_DIR / "ethfeatures.py"), pair.veth.dev_a, "on", *VETH_GRO]
            )
        ends = [stack.enter_context(tunwg_end(pair, Path(tmpdir), v)) for v in args.variants]
        say(
            f"namespaces {pair.a.ns.name} and {pair.b.ns.name}; wireguard-go {pair.a.wg.ifname},"
            f" {pair.b.wg.ifname}; "
            + "; ".join(f"{e.variant.name} {e.ifname} on {e.node}, bridged to {e.tun}" for e in ends)
        )
        handshake(pair, ends)
        paths = {p.name: p for p in _paths(pair, ends, both_ways=not args.one_way)}
        for path in paths.values():
            iperf3_tcp(path.client, path.server, path.addr, seconds=1, port=IPERF3_PORT)
        say("warmed up")
        for rnd, order in enumerate(rotations(list(paths), args.rounds)):
            for name in order:
                samples.append(_measure(paths[name], rnd, args.count, args.seconds, args.interval))
            say(f"round {rnd + 1}/{args.rounds} done")
        for e in ends:
            if e.bridge.poll() is not None:
                raise RuntimeError(f"{e.variant.name}: the bridge exited with {e.bridge.returncode}")
    rows = _summarise(list(paths), samples)
    ratios = _ratios(samples, rows)
    print(_table(rows, ratios, args))
    if not args.no_json:
        out = _write_json(
            "wg-baseline" if args.baseline else "tunwg",
            args,
            {
                "summary": [asdict(r) for r in rows],
                "ratios": [asdict(q) for q in ratios],
                "samples": [asdict(s) for s in samples],
            },
        )
        print(f"\nsamples: {out.relative_to(ROOT)}")
    return 0


# -- profiling: the daemon shim -------------------------------------------------
#
# ``python bench_tunwg.py --daemon-shim DIR DEVFSD [ARGS...]`` runs devfsd's
# main in this process with DevFs.read, write and poll wrapped to count
# their requests. SHIM_SIGNAL opens a window (counters zeroed; cProfile started
# if DIR/cprofile exists) and the next one closes it, writing
# DIR/window-N.json (and window-N.pstats). The benchmark puts this between
# nsenter and the daemon.


@dataclass(slots=True)
class _Counts:
    calls: dict[str, int] = field(default_factory=dict)
    ns: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, dt: int) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        self.ns[what] = self.ns.get(what, 0) + dt


def _shim(argv: list[str]) -> int:
    outdir = Path(argv[0])
    daemon_argv = argv[2:]  # argv[1] is the devfsd script DevfsdMount names
    import errno as errno_

    import pyfuse3

    from devfsd import daemon
    from devfsd.fs import DevFs

    counts = _Counts()
    prof: list[cProfile.Profile] = []
    window = [0, 0]  # [number, open]
    clock = time.perf_counter_ns

    orig_read, orig_write, orig_poll = DevFs.read, DevFs.write, DevFs.poll

    async def read(self: DevFs, fh: int, off: int, size: int) -> bytes:
        t = clock()
        try:
            data = await orig_read(self, fh, off, size)
        except pyfuse3.FUSEError as exc:
            counts.add("READ EAGAIN" if exc.errno == errno_.EAGAIN else "READ error", clock() - t)
            raise
        counts.add("READ", clock() - t)
        return data

    async def write(self: DevFs, fh: int, off: int, buf: bytes) -> int:
        t = clock()
        try:
            n = await orig_write(self, fh, off, buf)
        except pyfuse3.FUSEError:
            counts.add("WRITE error", clock() - t)
            raise
        counts.add("WRITE", clock() - t)
        return n

    async def poll(self: DevFs, inode: int, fh: int, poll_handle: Any, ctx: pyfuse3.RequestContext) -> int:
        t = clock()
        rv = await orig_poll(self, inode, fh, poll_handle, ctx)
        counts.add("POLL ready" if rv & 1 else "POLL wait", clock() - t)
        return rv

    DevFs.read = read  # type: ignore[method-assign]
    DevFs.write = write  # type: ignore[method-assign]
    DevFs.poll = poll  # type: ignore[method-assign]

    def toggle(signum: int, frame: object) -> None:
        if not window[1]:
            window[0] += 1
            window[1] = 1
            counts.calls.clear()
            counts.ns.clear()
            if (outdir / "cprofile").exists():
                p = cProfile.Profile()
                prof[:] = [p]
                p.enable()
            return
        window[1] = 0
        if prof:
            prof[0].disable()
            prof[0].dump_stats(str(outdir / f"window-{window[0]}.pstats"))
            prof.clear()
        doc = {"calls": counts.calls, "ns": counts.ns}
        (outdir / f"window-{window[0]}.json").write_text(json.dumps(doc))

    signal.signal(SHIM_SIGNAL, toggle)
    # Named apart from other Python processes in perf's "comm" column.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, SHIM_COMM, 0, 0, 0)
    return daemon.main(daemon_argv)


# -- profiling: the runs -----------------------------------------------------------


def _link_packets(ns: NetNs, dev: str) -> tuple[int, int]:
    """(RX, TX) packets of ``dev``: RX = written by the bridge, TX = for it to read."""
    st = json.loads(ns.run(["ip", "-j", "-s", "link", "show", dev]).stdout)[0]["stats64"]
    return int(st["rx"]["packets"]), int(st["tx"]["packets"])


def _shim_window(pid: int, outdir: Path, n: int, fn: Callable[[], object]) -> dict[str, Any]:
    os.kill(pid, SHIM_SIGNAL)
    try:
        fn()
    finally:
        os.kill(pid, SHIM_SIGNAL)
    path = outdir / f"window-{n}.json"
    wait_until(path.exists, 10, f"{path}")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _top(pstats_path: Path, n: int = 25) -> str:
    buf = io.StringIO()
    st = pstats.Stats(str(pstats_path), stream=buf)
    st.sort_stats("tottime").print_stats(n)
    text = buf.getvalue()
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


def _perf(seconds: float, out: Path) -> dict[str, Any] | None:
    """``perf record -a`` for ``seconds``; CPU samples by process and by library."""
    if shutil.which("perf") is None:
        return None
    rec = subprocess.run(
        ["perf", "record", "-a", "-F", "997", "-o", str(out), "--", "sleep", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if rec.returncode != 0:
        return {"error": rec.stderr.strip()[-500:]}
    result: dict[str, Any] = {}
    for key in ("comm", "comm,dso", "comm,dso,sym"):
        rep = subprocess.run(
            ["perf", "report", "-i", str(out), "--stdio", "--sort", key, "--percent-limit", "0.5"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        rows = []
        for line in rep.stdout.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
            if m:
                rows.append([float(m.group(1)), re.split(r"\s{2,}", m.group(2))])
        result[key] = rows
    return result


def _sans_io(n: int = 20000) -> dict[str, float]:
    """Microseconds per 1420-byte packet in the sans-I/O core: encrypt
    (``packet_from_tun``) and decrypt (``datagram_received``), no I/O."""
    sys.path.insert(0, str(ROOT))
    from modules.tunwg.wg import DeliverPacket, Device, Endpoint, SendDatagram, UapiReader
    from modules.tunwg.wg.crypto import public_key

    def req(text: str) -> Any:
        r = UapiReader()
        r.receive_data(b"set=1\n" + text.encode() + b"\n")
        return r.next_request()

    sk = [bytes([i] * 31 + [64]) for i in (1, 2)]
    pk = [public_key(k) for k in sk]
    devs = [Device(rng=os.urandom, bind=lambda p: p, mtu=TUNWG_MTU) for _ in range(2)]
    eps = [Endpoint(host="192.0.2.1", port=51820), Endpoint(host="192.0.2.2", port=51821)]
    for i, d in enumerate(devs):
        j = 1 - i
        text = (
            f"private_key={sk[i].hex()}\nlisten_port={eps[i].port}\npublic_key={pk[j].hex()}\n"
            f"endpoint={eps[j].host}:{eps[j].port}\nallowed_ip=198.51.100.{j + 1}/32\n"
        )
        d.uapi_set(req(text), now=0.0, wall_ns=time.time_ns())
        d.up(now=0.0)
    ip = bytes.fromhex("4500058c000000004006") + bytes(2) + bytes([198, 51, 100, 1, 198, 51, 100, 2])
    packet = ip + bytes(TUNWG_MTU - len(ip))
    # Handshake: carry datagrams between the two until quiet.
    pending = [(1, e) for e in devs[0].packet_from_tun(packet, now=0.0, wall_ns=time.time_ns())]
    for _ in range(20):
        nxt = []
        for to, e in pending:
            if isinstance(e, SendDatagram):
                nxt += [
                    (1 - to, f)
                    for f in devs[to].datagram_received(e.data, eps[1 - to], now=0.0, wall_ns=time.time_ns())
                ]
        pending = nxt
    now, wall = 1.0, time.time_ns()
    t0 = time.perf_counter()
    datagrams = []
    for _ in range(n):
        for e in devs[0].packet_from_tun(packet, now=now, wall_ns=wall):
            if isinstance(e, SendDatagram):
                datagrams.append(e.data)
    t1 = time.perf_counter()
    delivered = 0
    for data in datagrams:
        for e in devs[1].datagram_received(data, eps[0], now=now, wall_ns=wall):
            delivered += isinstance(e, DeliverPacket)
    t2 = time.perf_counter()
    if delivered != n:
        raise RuntimeError(f"sans-I/O: {delivered} of {n} packets delivered")
    return {"encrypt_us": (t1 - t0) / n * 1e6, "decrypt_us": (t2 - t1) / n * 1e6, "packets": n}


def _profile_end(
    args: argparse.Namespace, pair: WgPair, end: TunwgEnd, outdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Counted windows, cProfile windows, then perf, one stream per direction."""
    report: dict[str, Any] = {}
    paths = {p.name: p for p in _paths(pair, [end], both_ways=True) if p.kind == "tunwg"}
    for p in paths.values():
        iperf3_tcp(p.client, p.server, p.addr, seconds=1, port=IPERF3_PORT)
    n = 0
    for prof_on in (False, True):
        if prof_on:
            (outdir / "cprofile").touch()
        for name, path in paths.items():
            n += 1
            rx0, tx0 = _link_packets(pair.a.ns, end.tun)
            res: list[Any] = []

            def stream(path: Link = path, res: list[Any] = res) -> None:
                res.append(
                    iperf3_tcp(
                        path.client,
                        path.server,
                        path.addr,
                        seconds=args.seconds,
                        port=IPERF3_PORT,
                        timeout=args.seconds + 20,
                    )
                )

            win = _shim_window(end.daemon_pid, outdir, n, stream)
            rx1, tx1 = _link_packets(pair.a.ns, end.tun)
            to_node, from_node = tx1 - tx0, rx1 - rx0
            key = f"{name}{' cProfile' if prof_on else ''}"
            entry: dict[str, Any] = {
                "gbit_per_s": res[0].bits_per_second / 1e9,
                "seconds": res[0].seconds,
                "packets_to_node": to_node,
                "packets_from_node": from_node,
                "requests": win["calls"],
                "request_us": {k: win["ns"][k] / win["calls"][k] / 1e3 for k in win["calls"]},
                "requests_per_packet": {
                    k: v / max(1, to_node if k.startswith("WRITE") else from_node)
                    for k, v in win["calls"].items()
                },
            }
            if prof_on:
                entry["top"] = _top(outdir / f"window-{n}.pstats")
            report[key] = entry
            say(f"{key}: {entry['gbit_per_s']:.3f} Gbit/s")
    (outdir / "cprofile").unlink()
    for name, path in paths.items():
        got: list[Any] = []

        def longer(path: Link = path, got: list[Any] = got) -> None:
            got.append(
                iperf3_tcp(
                    path.client,
                    path.server,
                    path.addr,
                    seconds=args.seconds + 2,
                    port=IPERF3_PORT,
                    timeout=args.seconds + 30,
                )
            )

        th = threading.Thread(target=longer)
        th.start()
        try:
            report[f"{name} perf"] = _perf(max(1.0, args.seconds - 1), outdir / "perf.data")
        finally:
            th.join(args.seconds + 40)
        say(f"{name} perf: done")
    return report


def profile(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    report: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench_tunwg.") as tmpdir,
        wireguard_go_pair(tmpdir) as pair,
    ):
        tmp = Path(tmpdir)
        for v in args.variants:
            outdir = tmp / f"shim{v.index}"
            outdir.mkdir()
            shim = [sys.executable, str(Path(__file__).resolve()), SHIM_FLAG, str(outdir)]
            with tunwg_end(pair, tmp, v, shim=shim) as end:
                handshake(pair, [end])
                report.update(_profile_end(args, pair, end, outdir, say))
    report["sans-io"] = _sans_io()
    _print_profile(report)
    if not args.no_json:
        out = _write_json("tunwg-profile", args, {"profile": report})
        print(f"\nprofile: {out.relative_to(ROOT)}")
    return 0


def _print_profile(report: dict[str, Any]) -> None:
    for key, entry in report.items():
        print(f"== {key}")
        if entry is None:
            print("(perf not installed)")
            continue
        if key == "sans-io":
            print(
                f"encrypt {entry['encrypt_us']:.2f} us/packet, decrypt {entry['decrypt_us']:.2f} us/packet"
                f" ({entry['packets']} packets of {TUNWG_MTU} bytes)"
            )
            continue
        if key.endswith(" perf"):
            for k in ("comm", "comm,dso", "comm,dso,sym"):
                for pct, cols in entry.get(k, [])[:25]:
                    print(f"{pct:6.2f}%  {'  '.join(cols)}")
                print()
            continue
        print(
            f"{entry['gbit_per_s']:.3f} Gbit/s; packets to the node {entry['packets_to_node']},"
            f" from it {entry['packets_from_node']}"
        )
        for k in sorted(entry["requests"]):
            print(
                f"  {k:<12} {entry['requests'][k]:8d} requests, {entry['requests_per_packet'][k]:.2f}"
                f" per packet, {entry['request_us'][k]:.1f} us in the handler"
            )
        if "top" in entry:
            print(entry["top"])


# -- main ----------------------------------------------------------------------------


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, more than 0."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text}: not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
        return value

    return convert


def _minor(text: str) -> int:
    if not text.isdigit() or not 0 <= (value := int(text)) <= 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text}: a minor is 0 to {0xFFFFFFFF}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="one round, 20 pings, 2 s streams")
    p.add_argument(
        "--rounds", type=_positive(int), default=None, help="interleaved rounds (default 3, quick 1)"
    )
    p.add_argument(
        "--count", type=_positive(int), default=None, help="pings per round (default 50, quick 20)"
    )
    p.add_argument(
        "--seconds", type=_positive(float), default=None, help="iperf3 -t per round (default 5, quick 2)"
    )
    p.add_argument("--one-way", action="store_true", help="only a -> b (tunwg encrypts the stream)")
    p.add_argument(
        "--interval",
        type=_positive(float),
        default=PING_INTERVAL,
        help=f"ping -i, seconds (default {PING_INTERVAL}; the RTT ratio grows with it, see README)",
    )
    p.add_argument("--profile", action="store_true", help="count FUSE requests, cProfile, perf; no table")
    p.add_argument(
        "--baseline", action="store_true", help="only veth and wireguard-go, no tunwg (the reference alone)"
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL[:CMD[:DIR[:CPUS[:MINOR[:OPTS]]]]]",
        help=(
            "also measure tunwg: bridge command CMD, module directory DIR, pinned to CPUS, node minor MINOR,"
            " daemon option -o OPTS"
        ),
    )
    p.add_argument(
        "--minor",
        type=_minor,
        default=TUNWG_BATCH,
        help=f"the tunwg node's minor (default {TUNWG_BATCH}: batch framing; 0: one packet per call)",
    )
    p.add_argument(
        "--in-daemon",
        action="store_true",
        help="also measure tunwg[daemon]: carried in its daemon (tunwg-bridge -d), beside the bridge",
    )
    p.add_argument(
        "--veth-gro",
        action="store_true",
        help="GRO on a's end of the veth (rx-gro, rx-udp-gro-forwarding), as on a NIC: UDP GRO sockets"
        " then receive b's datagrams coalesced",
    )
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    p.add_argument("--label", default="", help="a word for the JSON file name and record")
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == [SHIM_FLAG]:
        return _shim(raw[1:])
    args = _parser().parse_args(raw)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.count = args.count or (20 if args.quick else 50)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    if args.baseline and (args.variant or args.profile):
        _parser().error("--baseline measures no tunwg: no --variant or --profile with it")
    try:
        args.variants = [] if args.baseline else [Variant(index=0, label="", minor=args.minor)]
        args.variants += [parse_variant(i + 1, text) for i, text in enumerate(args.variant)]
        if args.in_daemon:  # tunwg carried in its daemon: no FUSE per packet
            args.variants.append(
                Variant(index=len(args.variants), label="daemon", bridge=(tool("tunwg-bridge"), "-d"))
            )
    except argparse.ArgumentTypeError as exc:
        _parser().error(str(exc))

    def say(msg: str) -> None:
        print(f"bench_tunwg: {msg}", file=sys.stderr, flush=True)

    why = missing_capability(TOOLS)
    if why is not None:
        say(why)
        return 1
    if not args.baseline and not os.path.exists("/dev/fuse"):
        say("needs /dev/fuse")
        return 1
    return profile(args, say) if args.profile else bench(args, say)


if __name__ == "__main__":
    sys.exit(main())
