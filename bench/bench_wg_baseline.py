"""wireguard-go <-> wireguard-go over veth: the reference for tunwg's benchmark.

``python bench/bench_wg_baseline.py [--quick] [--rounds N] [--count N] [--seconds S]``
``[--label WORD] [--no-json]``

Builds two network namespaces joined by a veth pair (192.0.2.1, .2) with
wireguard-go in each, peered with each other over the real ``wg`` tool
(``devfsd.testing.netns.wireguard_go_pair``; tunnel 198.51.100.1-2), makes
the handshake, then measures from a to b, over each *path*:

- ``veth``: the outer addresses, no WireGuard (the floor, for scale);
- ``wireguard-go``: the tunnel addresses.

For each path and round: ``ping -c COUNT -i 0.01`` (RTT of every reply:
median, and ping's own average) and one ``iperf3 -t SECONDS -J`` TCP stream
(throughput as received, sender retransmits, and the UDP datagrams the
receiving namespace dropped: wireguard-go 0.0.20220316 leaves ``SO_RCVBUF``
at the default and overflows it under TCP, which is why it retransmits).
The rounds interleave the paths, rotating their order, so a slow spell of
the machine falls on both; the table gives medians over the rounds with
their range. tunwg's benchmark will add its paths (tunwg <-> wireguard-go,
tunwg <-> tunwg) to the same rounds: a ``Link`` is all a new one needs.

Nothing is pinned: wireguard-go spreads over both CPUs of this machine,
and iperf3's client and server take their share, so the throughput figures
are "the machine's", not one core's.

Prints a table and writes every sample as JSON to ``bench/results/``. A
benchmark, not a test: it asserts only that pings come back and iperf3
succeeds. The namespaces, daemons and sockets are removed in ``finally``
blocks (context managers) whatever happens.

Needs root, /dev/net/tun, ``ip netns``, wireguard-go, ``wg``, ``ping``,
``iperf3`` and ``ss``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devfsd.testing.benchinfo import machine_info, rotations, tool_version
from devfsd.testing.netns import (
    iperf3_tcp,
    missing_capability,
    ping,
    udp_in_errors,
    wireguard_go_pair,
)

if TYPE_CHECKING:
    from devfsd.testing.netns import NetNs, WgPair

BENCH_DIR: Final = Path(__file__).resolve().parent
RESULTS_DIR: Final = BENCH_DIR / "results"

PING_INTERVAL: Final = 0.01
IPERF3_PORT: Final = 5201
TOOLS: Final = ("wireguard-go", "wg", "ping", "iperf3", "ss")


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """One way from the client namespace to an address in the server's."""

    name: str
    client: NetNs
    server: NetNs
    addr: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One round on one path."""

    path: str
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
    cpu_host_percent: float | None
    cpu_remote_percent: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    path: str
    rtt_median_ms: float
    rtt_avg_ms: float
    rtt_min_ms: float
    rtt_max_ms: float
    gbit_per_s: float
    gbit_min: float
    gbit_max: float
    retransmits: int
    udp_drops: int


def _paths(pair: WgPair) -> list[Link]:
    return [
        Link(name="veth", client=pair.a.ns, server=pair.b.ns, addr=pair.b.outer),
        Link(name="wireguard-go", client=pair.a.ns, server=pair.b.ns, addr=pair.b.inner4),
    ]


def _measure(path: Link, rnd: int, count: int, seconds: float) -> Sample:
    p = ping(path.client, path.addr, count=count, interval=PING_INTERVAL, wait=2)
    if p.received != p.transmitted:
        raise RuntimeError(f"{path.name}: {p.transmitted - p.received} of {p.transmitted} pings lost")
    drops0 = udp_in_errors(path.server)
    t = iperf3_tcp(
        path.client, path.server, path.addr, seconds=seconds, port=IPERF3_PORT, timeout=seconds + 20
    )
    drops = udp_in_errors(path.server) - drops0
    cpu = t.report["end"].get("cpu_utilization_percent", {})
    return Sample(
        path=path.name,
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
        cpu_host_percent=cpu.get("host_total"),
        cpu_remote_percent=cpu.get("remote_total"),
    )


def _summarise(names: list[str], samples: list[Sample]) -> list[Row]:
    rows = []
    for name in names:
        mine = [s for s in samples if s.path == name]
        medians = [s.rtt_median_ms for s in mine if s.rtt_median_ms is not None]
        avgs = [s.rtt_avg_ms for s in mine if s.rtt_avg_ms is not None]
        gbits = [s.tcp_gbit_per_s for s in mine]
        rows.append(
            Row(
                path=name,
                rtt_median_ms=statistics.median(medians),
                rtt_avg_ms=statistics.median(avgs),
                rtt_min_ms=min(medians),
                rtt_max_ms=max(medians),
                gbit_per_s=statistics.median(gbits),
                gbit_min=min(gbits),
                gbit_max=max(gbits),
                retransmits=sum(s.tcp_retransmits for s in mine),
                udp_drops=sum(s.udp_drops for s in mine),
            )
        )
    return rows


def _table(rows: list[Row], args: argparse.Namespace) -> str:
    head = (
        f"{'path':<13}  {'RTT median ms':>13}  {'(min-max)':<13}  {'avg ms':>6}  "
        f"{'TCP Gbit/s':>10}  {'(min-max)':<13}  {'retrans':>7}  {'UDP drops':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.path:<13}  {r.rtt_median_ms:13.3f}  {f'({r.rtt_min_ms:.3f}-{r.rtt_max_ms:.3f})':<13}"
            f"  {r.rtt_avg_ms:6.3f}  {r.gbit_per_s:10.3f}  "
            f"{f'({r.gbit_min:.3f}-{r.gbit_max:.3f})':<13}  {r.retransmits:7d}  {r.udp_drops:9d}"
        )
    lines.append("")
    lines.append(
        f"a -> b; {args.rounds} round(s); each: ping -c {args.count} -i {PING_INTERVAL}"
        f" (median of the replies), iperf3 TCP -t {args.seconds};"
    )
    lines.append("medians over the rounds, (min-max) over the rounds; retransmits and drops summed.")
    return "\n".join(lines)


def _machine() -> dict[str, object]:
    return machine_info(**{t: tool_version([t, "--version"]) for t in ("wireguard-go", "wg", "iperf3")})


def _write_json(args: argparse.Namespace, samples: list[Sample], rows: list[Row]) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    label = f"-{args.label}" if args.label else ""
    out = RESULTS_DIR / f"wg-baseline-{stamp}{'-quick' if args.quick else ''}{label}.json"
    doc = {
        "benchmark": "bench_wg_baseline",
        "machine": _machine(),
        "options": {
            "quick": args.quick,
            "rounds": args.rounds,
            "count": args.count,
            "seconds": args.seconds,
            "ping_interval": PING_INTERVAL,
            "label": args.label,
        },
        "summary": [asdict(r) for r in rows],
        "samples": [asdict(s) for s in samples],
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="one round, 20 pings, 2 s streams")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    p.add_argument("--count", type=int, default=None, help="pings per round (default 50, quick 20)")
    p.add_argument("--seconds", type=float, default=None, help="iperf3 -t per round (default 5, quick 2)")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    p.add_argument("--label", default="", help="a word for the JSON file name and record")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.count = args.count or (20 if args.quick else 50)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)

    def say(msg: str) -> None:
        print(f"bench_wg_baseline: {msg}", file=sys.stderr, flush=True)

    why = missing_capability(TOOLS)
    if why is not None:
        say(why)
        return 1
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="bench_wg.") as tmp, wireguard_go_pair(tmp) as pair:
        say(
            f"namespaces {pair.a.ns.name} and {pair.b.ns.name}, wireguard-go"
            f" {pair.a.wg.ifname} and {pair.b.wg.ifname}"
        )
        # Handshake (both ways, so neither stream waits for one), then warm up.
        for me, other in ((pair.a, pair.b), (pair.b, pair.a)):
            if ping(me.ns, other.inner4, count=1).received != 1:
                raise RuntimeError(f"no answer from {other.inner4} through the tunnel")
            me.wg.wait_handshake(other.key.public)
        paths = {p.name: p for p in _paths(pair)}
        for path in paths.values():
            iperf3_tcp(path.client, path.server, path.addr, seconds=1, port=IPERF3_PORT)
        say("warmed up")
        for rnd, order in enumerate(rotations(list(paths), args.rounds)):
            for name in order:
                samples.append(_measure(paths[name], rnd, args.count, args.seconds))
            say(f"round {rnd + 1}/{args.rounds} done")
    rows = _summarise(list(paths), samples)
    print(_table(rows, args))
    if not args.no_json:
        out = _write_json(args, samples, rows)
        print(f"\nsamples: {out.relative_to(BENCH_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
