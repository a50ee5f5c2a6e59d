"""tunwg inside a network namespace, for interop tests and benchmarks.

Touches the world: runs ``devfsd`` (a child of this process, under
``nsenter --net``), ``devfs-mknod``, ``wg``, ``ip`` and ``tunwg-bridge``.

Why ``nsenter --net`` and not ``ip netns exec``: the daemon must open its
UDP sockets inside the namespace, and its FUSE mount must be visible to
this process. ``ip netns exec`` also enters a new mount namespace (to
remount ``/sys``), where the daemon's mount would stay hidden from us;
``nsenter --net`` changes the network namespace only. ``nsenter`` without
``--fork`` execs the program, so the ``Popen`` pid is the daemon (or the
bridge) itself, and signals reach it directly.

The interfaces keep their UAPI sockets in ``/var/run/wireguard``, shared by
every namespace, so the name prefix is ``unique_name("tw")`` and the real
``wg`` finds them (``wg show tw1234x50``). A node is joined to a Linux
TUN interface by ``tunwg-bridge``; the TUN interface gets the tunwg MTU
(1420 unless the ``mtu`` property says otherwise), or a TCP stream would
write 1500-byte packets that the node refuses (EIO).

Always cleaned up (:meth:`TunwgHost.stop`, idempotent, also after a failed
start): bridges are stopped (SIGTERM, then SIGKILL past the deadline), the
daemon is stopped and its mount removed (``DevfsdMount.stop``), and any
UAPI socket a killed daemon left behind is unlinked. Leave the host before
its namespace (an ``ExitStack`` does it in that order).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from typing import TYPE_CHECKING, Final, final

from devfsd.testing.mount import DevfsdMount, run, tool
from devfsd.tools.tunwg_bridge import BATCH
from tests.netns import WG_RUN_DIR, WgDump, unique_name, wait_until, wg, wg_show_dump

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from tests.netns import NetNs

__all__ = ["TunwgHost", "nsenter_argv"]

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0
DEFAULT_MTU: Final = 1420


def nsenter_argv(ns: NetNs, argv: Sequence[str] = ()) -> list[str]:
    """``argv`` run in ``ns``'s network namespace, in our mount namespace."""
    return ["nsenter", f"--net=/var/run/netns/{ns.name}", *argv]


@final
class TunwgHost:
    """A devfsd whose UDP sockets live in ``ns``, with tunwg loaded; a context manager.

    Args:
        ns: the namespace (entered, not owned: close it after this).
        base: a directory for the mount, control socket and daemon log.
        count: interfaces made at load (``count`` property).
        props: more load properties (``mtu``, ``keylog``, ``rekey_after_time``).
        isolate: tunwg in a module host of its own (``devfsd --isolate``).
    """

    def __init__(
        self,
        ns: NetNs,
        base: Path,
        *,
        count: int = 1,
        props: Mapping[str, str | int | bool] | None = None,
        isolate: bool = False,
    ) -> None:
        self.ns = ns
        self.prefix = unique_name("tw")
        self.count = count
        self.props: dict[str, str | int | bool] = {"ifname": self.prefix, "count": count, **(props or {})}
        self.mtu = int(self.props.get("mtu", DEFAULT_MTU))
        self.isolate = isolate
        isolated = ["--isolate"] if isolate else []
        self.mount = DevfsdMount(base, args=["--debug", *isolated], wrapper=nsenter_argv(ns))
        self._bridges: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> TunwgHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TunwgHost:
        """Start the daemon and load tunwg; its interfaces and UAPI sockets exist on return."""
        try:
            self.mount.start()
            client = self.mount.client()
            client.modload("tunwg", self.props)
            (row,) = client.modstat("tunwg")["modules"]
            if ("i" in row["flags"]) != self.isolate:  # modstat FLAG i: loaded isolated
                raise RuntimeError(f"tunwg loaded with flags {row['flags']!r}, isolate={self.isolate}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the bridges and the daemon; remove sockets a killed daemon left. Idempotent."""
        bridges, self._bridges = self._bridges, []
        try:
            for proc in bridges:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT)
                if proc.stderr is not None:
                    proc.stderr.close()
        finally:
            self.mount.stop()
            for unit in range(self.count):
                with contextlib.suppress(FileNotFoundError):
                    (WG_RUN_DIR / f"{self.ifname(unit)}.sock").unlink()

    @property
    def bridges(self) -> list[subprocess.Popen[bytes]]:
        """The tunwg-bridge processes started so far (``bridge``), oldest first."""
        return list(self._bridges)

    # -- names and configuration --

    def ifname(self, unit: int = 0) -> str:
        """Interface ``unit``'s name: what ``wg`` calls it."""
        return f"{self.prefix}{unit}"

    def node(self, unit: int = 0, *, batch: bool = False) -> Path:
        return self.mount.path / f"tunwg{unit}{'b' if batch else ''}"

    def mknod(self, unit: int = 0, *, batch: bool = False) -> Path:
        """``devfs-mknod /dev/tunwgN c tunwg N`` on our mount; the node's path.

        With ``batch``, node ``tunwgNb`` with minor ``BATCH | N``: tunwg's batch framing.
        """
        node = self.node(unit, batch=batch)
        minor = unit | BATCH if batch else unit
        r = run(["devfs-mknod", str(node), "c", "tunwg", str(minor)], env=self.mount.env, timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"devfs-mknod {node}: exit {r.returncode}: {r.stderr.decode().strip()}")
        return node

    def wg(self, *args: str) -> str:
        """The real ``wg`` inside the namespace; its stdout."""
        return wg(self.ns, *args)

    def set(self, *args: str, unit: int = 0) -> None:
        """``wg set IFNAME ARGS...``."""
        self.wg("set", self.ifname(unit), *args)

    def dump(self, unit: int = 0) -> WgDump:
        return wg_show_dump(self.ns, self.ifname(unit))

    def log_text(self) -> str:
        return self.mount.log_text()

    # -- the data path --

    def bridge(
        self, tun: str, *cidrs: str, unit: int = 0, batch: bool = False, in_daemon: bool = False
    ) -> subprocess.Popen[bytes]:
        """Open node ``unit`` (bringing its interface up) and join it to a new Linux
        TUN interface ``tun`` with ``cidrs`` (documentation addresses), MTU and up.
        With ``batch``, through the batch-framed node (``mknod(batch=True)``);
        with ``in_daemon``, the daemon carries the interface (``-d``).

        Raises:
            RuntimeError: the bridge exited (its stderr in the message).
            TimeoutError: ``tun`` did not appear within ``START_TIMEOUT``.
        """
        node = self.node(unit, batch=batch)
        if not node.exists():
            self.mknod(unit, batch=batch)
        proc = subprocess.Popen(
            nsenter_argv(self.ns, [tool("tunwg-bridge"), *(["-d"] if in_daemon else []), str(node), tun]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._bridges.append(proc)

        def ready() -> bool:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"tunwg-bridge {node} {tun} exited with {proc.returncode}: {err}")
            return self.ns.run(["ip", "link", "show", tun], check=False).returncode == 0

        wait_until(ready, START_TIMEOUT, f"tunwg-bridge's interface {tun}", interval=0.02)
        self.ns.run(["ip", "link", "set", tun, "mtu", str(self.mtu)])
        for cidr in cidrs:
            self.ns.addr_add(tun, cidr)
        self.ns.link_up(tun)
        return proc
