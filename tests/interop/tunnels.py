"""Tunnels between network namespaces for tunwg's interop tests, and the leak check.

A *tunnel* is two network namespaces on a veth wire (outer 192.0.2.1 and
.2): tunwg (a devfsd run under ``nsenter --net``, ``modload tunwg``) in
the first, wireguard-go in the second, each configured with the real
``wg`` (tunwg before its node is first opened, as a user would), the tunwg
node joined to a Linux TUN interface by ``tunwg-bridge``. Tunnel addresses
198.51.100.1 (tunwg) and .2, 2001:db8::1 and ::2. Documentation addresses
only; every name carries this process's pid (``unique_name``).

Teardown runs in reverse order of setup, also when setup or the test
fails: bridge, daemon and its mount, wireguard-go, namespaces (which kill
whatever still runs inside). :func:`leftovers` lists what is left.

:class:`Capture` records a namespace's UDP datagrams with ``dumpcap`` (from
tshark) for the key-log tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tests.netns import (
    INNER_NET4,
    INNER_NET6,
    START_TIMEOUT,
    WG_RUN_DIR,
    KeyPair,
    NetNs,
    Veth,
    WgDump,
    WgHost,
    WgPeer,
    WireguardGo,
    _stop,
    unique_name,
    veth_pair,
    wait_steady,
    wait_until,
)
from tests.tunwg import TunwgHost

if TYPE_CHECKING:
    from collections.abc import Iterator

TUNWG_PORT: Final = 51821
#: How tunwg's interface is joined to its Linux TUN: by tunwg-bridge moving
#: packets through the node, or carried inside the daemon (``-d``).
MODES: Final = ("bridge", "daemon")
GO_PORT: Final = 51820


# -- leak check ------------------------------------------------------------------


def _ours() -> re.Pattern[str]:
    """The infix every name this process makes carries (``unique_name``: pid, x, counter)."""
    return re.compile(rf"(?<!\d){os.getpid()}x\d")


def leftovers(base: Path) -> list[str]:
    """Namespaces, UAPI sockets, processes and mounts of ours still present: names
    with our infix, and processes and mounts under ``base`` (pytest's base
    temporary directory)."""
    under, ours = f"{base}/", _ours()
    left = [
        f"netns {n}"
        for n in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.split()
        if ours.search(n)
    ]
    if WG_RUN_DIR.exists():
        left += [f"socket {p}" for p in WG_RUN_DIR.iterdir() if ours.search(p.name)]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(ours.search(a) or under in a for a in argv):
            left.append(f"process {pid} {argv!r}")
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {ln.split()[4]}" for ln in f if ln.split()[4].startswith(under)]
    return left


# -- tunnels -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TunwgEnd:
    """tunwg's end: namespace, daemon, key, outer and tunnel addresses, TUN name."""

    ns: NetNs
    host: TunwgHost
    key: KeyPair
    outer: str
    port: int
    inner4: str
    inner6: str
    tun: str

    @property
    def endpoint(self) -> str:
        return f"{self.outer}:{self.port}"

    @property
    def ifname(self) -> str:
        return self.host.ifname(0)

    def dump(self) -> WgDump:
        return self.host.dump()

    def log_count(self, text: str) -> int:
        """How often the daemon's debug log has ``text`` (e.g. "received handshake response")."""
        return self.host.log_text().count(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tunnel:
    t: TunwgEnd
    g: WgHost  # wireguard-go's end
    veth: Veth
    tmp: Path
    go_knows_tunwg_as: str  # the public key wireguard-go has for tunwg

    def configure_go(self) -> None:
        """Configure wireguard-go (again, after a restart) and address its interface."""
        g, t = self.g, self.t
        g.wg.configure(
            private_key=g.key.write_private(self.tmp),
            listen_port=g.port,
            peer=self.go_knows_tunwg_as,
            endpoint=t.endpoint,
            allowed_ips=[f"{t.inner4}/32", f"{t.inner6}/128"],
        )
        g.wg.address(f"{g.inner4}/{INNER_NET4.prefixlen}", f"{g.inner6}/{INNER_NET6.prefixlen}")

    def records(self) -> tuple[WgPeer, WgPeer]:
        """(tunwg's record of wireguard-go, wireguard-go's record of tunwg), now."""
        return self.t.dump().peers[0], self.g.wg.dump().peers[0]

    def settled(self) -> tuple[WgPeer, WgPeer]:
        """``records()`` once neither side's counters move (``wait_counters_settled``)."""
        return wait_steady(self.records, 5.0, "wg transfer counters to settle")


@contextlib.contextmanager
def tunwg_tunnel(
    tmp: Path,
    *,
    props: dict[str, str | int | bool] | None = None,
    count: int = 1,
    go_knows_tunwg_as: str | None = None,
    tunwg_knows_go_as: str | None = None,
    batch: bool = False,
    mode: str = "bridge",
    isolate: bool = False,
) -> Iterator[Tunnel]:
    """A tunnel (module docstring); ``props`` are tunwg's load properties.

    ``batch``: the bridge joins the batch-framed node (minor ``BATCH | 0``).
    ``isolate``: tunwg runs in a module host of its own (``devfsd --isolate``).
    ``mode``: ``"bridge"`` (packets through the node) or ``"daemon"`` (the
    daemon carries the interface itself, ``tunwg-bridge -d``; see ``MODES``).

    ``go_knows_tunwg_as`` / ``tunwg_knows_go_as``: a wrong public key to
    configure for the other end instead of the right one.
    """
    with contextlib.ExitStack() as stack:
        ns_t = stack.enter_context(NetNs("twt"))
        ns_g = stack.enter_context(NetNs("twg"))
        veth = veth_pair(ns_t, ns_g, "192.0.2.1", "192.0.2.2", 24)
        kt, kg = KeyPair.generate(), KeyPair.generate()
        wgo = stack.enter_context(WireguardGo(ns_g, log=tmp / "wireguard-go.log", log_level="verbose"))
        g = WgHost(
            ns=ns_g,
            outer=veth.addr_b,
            inner4=str(INNER_NET4[2]),
            inner6=str(INNER_NET6[2]),
            port=GO_PORT,
            key=kg,
            wg=wgo,
        )
        host = stack.enter_context(TunwgHost(ns_t, tmp / "tunwg", count=count, props=props, isolate=isolate))
        t = TunwgEnd(
            ns=ns_t,
            host=host,
            key=kt,
            outer=veth.addr_a,
            port=TUNWG_PORT,
            inner4=str(INNER_NET4[1]),
            inner6=str(INNER_NET6[1]),
            tun=unique_name("tb"),
        )
        tunnel = Tunnel(t=t, g=g, veth=veth, tmp=tmp, go_knows_tunwg_as=go_knows_tunwg_as or kt.public)
        tunnel.configure_go()
        # tunwg: configured through its UAPI socket before its node is opened.
        host.set(
            "private-key",
            str(kt.write_private(tmp)),
            "listen-port",
            str(t.port),
            "peer",
            tunwg_knows_go_as or kg.public,
            "endpoint",
            g.endpoint,
            "allowed-ips",
            f"{g.inner4}/32,{g.inner6}/128",
        )
        host.bridge(
            t.tun,
            f"{t.inner4}/{INNER_NET4.prefixlen}",
            f"{t.inner6}/{INNER_NET6.prefixlen}",
            batch=batch,
            in_daemon=mode == "daemon",
        )
        veth.wait_ping()
        yield tunnel


# -- captures ------------------------------------------------------------------------


class Capture:
    """``dumpcap`` on ``dev`` inside ``ns``, writing pcapng to ``path``; a context manager.

    Entering returns once dumpcap has its capture (filter ``bpf``) open and
    its file made (it says ``File: PATH``), so every packet after that is
    in it. :meth:`wait` waits until a display filter matches enough packets
    in the growing file; :meth:`stop` (also on leaving, idempotent) ends it
    with SIGINT, as Ctrl-C would, so the file is complete, and returns its
    exit status (SIGKILL past netns's ``STOP_TIMEOUT``). dumpcap is a process of
    ``ns``, which stops it anyway when closed.
    """

    def __init__(self, ns: NetNs, dev: str, path: Path, *, bpf: str = "udp") -> None:
        self.ns, self.dev, self.path, self.bpf = ns, dev, path, bpf
        self.log = path.with_name(path.name + ".log")
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Capture:
        with self.log.open("wb") as err:
            self._proc = self.ns.popen(
                ["dumpcap", "-q", "-i", self.dev, "-f", self.bpf, "-w", str(self.path)], stderr=err
            )
        try:
            wait_until(self._ready, START_TIMEOUT, f"dumpcap on {self.dev} to open {self.path}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise RuntimeError(f"dumpcap exited with {self._proc.returncode}: {self.log.read_text()}")
        return f"File: {self.path}" in self.log.read_text(errors="replace")

    def count(self, display_filter: str) -> int:
        """Packets in the file so far that ``display_filter`` matches (tshark, no keys)."""
        r = subprocess.run(
            ["tshark", "-n", "-r", str(self.path), "-o", "wg.keylog_file:", "-Y", display_filter],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return len(r.stdout.splitlines())  # a file cut short mid-packet still lists the rest

    def wait(self, display_filter: str, n: int, timeout: float = 5.0) -> None:
        """Until at least ``n`` packets in the file match ``display_filter``."""
        wait_until(
            lambda: self.count(display_filter) >= n,
            timeout,
            f"{n} packets matching {display_filter!r} in {self.path}",
            interval=0.1,
        )

    def stop(self) -> int | None:
        """SIGINT, wait (SIGKILL past ``STOP_TIMEOUT``); the exit status, None if not started."""
        proc, self._proc = self._proc, None
        return _stop(proc, signal.SIGINT) if proc is not None else None
