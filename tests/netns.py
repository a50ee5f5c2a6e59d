"""Hosts in network namespaces, veth wires and wireguard-go, for interop tests.

Touches the world: runs ``ip``, ``wireguard-go``, ``wg``, ``ping``,
``iperf3`` and ``ss`` as root. Imports only the standard library and
``cryptography`` (keys), nothing from devfsd, so interop tests and
benchmarks can use it with or without a devfsd running. One module rather
than several, past the usual 500 lines, so that a test imports one name
space; the sections below (names, namespaces, veth, keys, wg, pair,
traffic) would split cleanly if it grows.

Rules this module keeps, and why:

- **Only documentation addresses** (RFC 5737 ``192.0.2.0/24``,
  ``198.51.100.0/24``, ``203.0.113.0/24``; RFC 3849 ``2001:db8::/32``):
  every address handed to ``ip addr``, a veth pair, a ``wg`` endpoint or an
  allowed-IP goes through :func:`check_address`, which raises ``ValueError``
  for anything else. Outer (underlay) wires use :data:`OUTER_NET`; tunnel
  addresses use :data:`INNER_NET4` and :data:`INNER_NET6`. Nothing is made
  in the root namespace: veth ends are created directly inside their
  namespaces.
- **Unique names.** wireguard-go's UAPI socket is
  ``/var/run/wireguard/IFNAME.sock``, a path that network namespaces do not
  separate (and ``wg show all`` in any namespace lists every one of them),
  so every name made here carries the pid and a counter
  (:func:`unique_name`), at most 15 characters (``IFNAMSIZ - 1``).
- **Bounded.** Every subprocess has a timeout, every wait polls a state
  against a deadline (:func:`wait_until`), never a fixed sleep; ping and
  iperf3 are always given a count or a byte/time budget.
- **Always cleaned up.** :class:`NetNs` and :class:`WireguardGo` are
  context managers; leaving a :class:`NetNs` stops the processes it started,
  then kills whatever else ``ip netns pids`` still finds inside, then
  deletes it. :class:`WireguardGo` removes its socket file if the daemon
  left it behind.

wireguard-go facts (Debian 0.0.20220316 on this machine), measured:

- ``wireguard-go -f IFNAME`` stays in the foreground; ``ip netns exec``
  execs it, so the ``Popen`` pid *is* the daemon. Without
  ``WG_PROCESS_FOREGROUND=1`` it prints a box claiming "this kernel has
  first class support for WireGuard" (it only checks the kernel version;
  this kernel has no WireGuard): the variable silences it. ``LOG_LEVEL``
  (``verbose``, ``error``, ``silent``) logs to stdout.
- The socket file appears at ``bind()`` and is listened on right after.
  ``wg`` *unlinks* a socket that refuses its connection, so the socket is
  waited for by connecting to it here (:meth:`WireguardGo.start`), never by
  letting ``wg`` race the daemon.
- SIGTERM makes it unlink the socket and exit 0; the tun link goes with it.
- Until configured it listens on a random UDP port.
- ``wg`` talks to any ``NAME.sock`` whatever namespace it runs in (the
  socket is a path); it is still run inside the namespace here, as tunwg's
  users will.
- It leaves ``SO_RCVBUF`` at the 212992-byte default, which a TCP stream
  overflows (hundreds of drops for 4 MiB); ``net.core.rmem_default``
  cannot be raised inside a non-initial namespace (``EINVAL``). See
  :func:`wait_counters_settled` for what that does to the counters.

Other measured facts: the veth end brought up second reads
``NO-CARRIER``/``DOWN`` in ``ip link`` for up to a second (linkwatch) while
already passing traffic, so readiness is a ping answered, never a link
state; ``ip netns del`` returns before the kernel has torn the namespace
down (its veth peer lingers a moment).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar, final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = [
    "INNER_NET4",
    "INNER_NET6",
    "OUTER_NET",
    "WG_RUN_DIR",
    "CommandError",
    "Iperf3Result",
    "KeyPair",
    "NetNs",
    "PingResult",
    "Veth",
    "WgDevice",
    "WgDump",
    "WgHost",
    "WgPair",
    "WgPeer",
    "WireguardGo",
    "check_address",
    "iperf3_tcp",
    "missing_capability",
    "parse_ping",
    "parse_wg_dump",
    "ping",
    "udp_in_errors",
    "unique_name",
    "veth_pair",
    "wait_counters_settled",
    "wait_handshake",
    "wait_ping",
    "wait_steady",
    "wait_until",
    "wg",
    "wg_pubkey",
    "wg_show_dump",
    "wireguard_go_pair",
]

_T = TypeVar("_T")

#: Where wireguard-go (and tunwg) keep ``NAME.sock``; the same in every netns.
WG_RUN_DIR: Final = Path("/var/run/wireguard")

OUTER_NET: Final = ipaddress.ip_network("192.0.2.0/24")
INNER_NET4: Final = ipaddress.ip_network("198.51.100.0/24")
INNER_NET6: Final = ipaddress.ip_network("2001:db8::/64")
_ALLOWED_NETS: Final = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

IFNAME_MAX: Final = 15  # IFNAMSIZ - 1
CMD_TIMEOUT: Final = 10.0
START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0

_counter = itertools.count()


class CommandError(RuntimeError):
    """A command exited non-zero; the message has its argv, status and stderr."""


# -- names, addresses, waiting --------------------------------------------


def unique_name(prefix: str) -> str:
    """``prefix`` + pid + ``x`` + counter: unique on the machine while we run.

    Raises:
        ValueError: the name would be longer than 15 characters.
    """
    name = f"{prefix}{os.getpid()}x{next(_counter)}"
    if len(name) > IFNAME_MAX:
        raise ValueError(f"{name!r}: longer than {IFNAME_MAX} characters")
    return name


def check_address(addr: str) -> str:
    """``addr`` (an address, ``addr/prefix`` or ``addr:port``) if it is a
    documentation address, the only kind these tests may use.

    Raises:
        ValueError: anything outside 192.0.2/24, 198.51.100/24, 203.0.113/24
            and 2001:db8::/32.
    """
    host = addr
    m = re.fullmatch(r"\[(.+)\]:\d+|([\d.]+):\d+", addr)
    if m:
        host = m.group(1) or m.group(2)
    net = ipaddress.ip_network(host, strict=False)
    if not any(net.version == ok.version and net.subnet_of(ok) for ok in _ALLOWED_NETS):  # type: ignore[arg-type]
        raise ValueError(f"{addr}: not a documentation address (RFC 5737 / RFC 3849)")
    return addr


def wait_until(cond: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.01) -> _T:
    """Poll ``cond()`` until it returns something other than None or False.

    Returns:
        That value.

    Raises:
        TimeoutError: naming ``what``, after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got is not None and got is not False:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(map(str, proc.args))}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _run(
    argv: Sequence[str], *, timeout: float = CMD_TIMEOUT, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    return _check(proc) if check else proc


def missing_capability(tools: Iterable[str] = ("wireguard-go", "wg", "ping")) -> str | None:
    """None when interop tests can run here, else why not, for ``pytest.skip``.

    Checks root, ``/dev/net/tun``, each program in ``tools`` on ``PATH``, and
    that a namespace can really be added and deleted (a probe namespace,
    removed before returning).
    """
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"needs {tool}" if tool != "wg" else "needs wg (wireguard-tools)"
    name = unique_name("probe")
    try:
        added = _run(["ip", "netns", "add", name], check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"needs ip netns ({exc})"
    if added.returncode != 0:
        return f"needs ip netns ({added.stderr.strip()})"
    _run(["ip", "netns", "del", name], check=False)
    return None


# -- namespaces -----------------------------------------------------------

_Redirect = int | IO[Any] | None


@final
class NetNs:
    """A network namespace named ``unique_name(prefix)``, with ``lo`` up.

    Use as a context manager: leaving it stops every process started with
    :meth:`popen` (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``), kills any
    other process ``ip netns pids`` still finds inside, and deletes it.
    """

    def __init__(self, prefix: str = "dvt") -> None:
        self.name = unique_name(prefix)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._added = False

    def __enter__(self) -> NetNs:
        _run(["ip", "netns", "add", self.name])
        self._added = True
        try:
            self.run(["ip", "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NetNs({self.name!r})"

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = CMD_TIMEOUT,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside, text output captured.

        Raises:
            CommandError: non-zero exit and ``check``.
            subprocess.TimeoutExpired: past ``timeout`` (the child is killed).
        """
        return _run(self.argv(argv), timeout=timeout, check=check, input=input)

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdin: _Redirect = subprocess.DEVNULL,
        stdout: _Redirect = subprocess.DEVNULL,
        stderr: _Redirect = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside; it is stopped and reaped when the namespace closes."""
        proc = subprocess.Popen(self.argv(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env)
        self._procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Processes whose network namespace this is (``ip netns pids``)."""
        if not self._added:
            return []
        out = _run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split()]

    def addr_add(self, dev: str, cidr: str) -> None:
        """``ip addr add CIDR dev DEV`` (IPv6 without duplicate address detection).

        Raises:
            ValueError: ``cidr`` is not a documentation address.
        """
        check_address(cidr)
        extra = ["nodad"] if ":" in cidr else []
        self.run(["ip", "addr", "add", cidr, "dev", dev, *extra])

    def link_up(self, dev: str) -> None:
        self.run(["ip", "link", "set", dev, "up"])

    def close(self) -> None:
        """Stop what runs inside and delete the namespace; idempotent."""
        procs, self._procs = self._procs, []
        try:
            for p in procs:
                _stop(p, signal.SIGTERM)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                try:
                    wait_until(lambda: not self.pids(), STOP_TIMEOUT, f"processes in {self.name} to exit")
                    break
                except TimeoutError:
                    if sig == signal.SIGKILL:
                        raise
        finally:
            if self._added:
                _run(["ip", "netns", "del", self.name])
                self._added = False


def _stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    """Signal ``proc`` if running, wait, SIGKILL past ``STOP_TIMEOUT``; reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        rc = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(STOP_TIMEOUT)
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    return rc


# -- veth -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Veth:
    """Both ends of a veth pair: ``dev_a`` with ``addr_a`` in ``ns_a``, and b."""

    ns_a: NetNs
    ns_b: NetNs
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str
    prefix: int

    def wait_ping(self, timeout: float = 5.0) -> None:
        """Until each end answers a ping from the other (bounded)."""
        wait_ping(self.ns_a, self.addr_b, timeout)
        wait_ping(self.ns_b, self.addr_a, timeout)


def veth_pair(ns_a: NetNs, ns_b: NetNs, addr_a: str, addr_b: str, prefix: int = 24) -> Veth:
    """A veth pair between two namespaces, addressed and up.

    Both ends are created directly inside their namespaces (never in the
    root namespace) and vanish with them.

    Raises:
        ValueError: an address is not a documentation address.
    """
    check_address(addr_a)
    check_address(addr_b)
    dev_a, dev_b = unique_name("va"), unique_name("vb")
    _run(f"ip link add {dev_a} netns {ns_a.name} type veth peer name {dev_b} netns {ns_b.name}".split())
    for ns, dev, addr in ((ns_a, dev_a, addr_a), (ns_b, dev_b, addr_b)):
        ns.addr_add(dev, f"{addr}/{prefix}")
        ns.link_up(dev)
    return Veth(ns_a=ns_a, ns_b=ns_b, dev_a=dev_a, dev_b=dev_b, addr_a=addr_a, addr_b=addr_b, prefix=prefix)


def wait_ping(ns: NetNs, addr: str, timeout: float = 5.0) -> None:
    """One-packet pings (``-W 1``) from ``ns`` until ``addr`` answers.

    Raises:
        TimeoutError: no answer within ``timeout``.
    """
    check_address(addr)

    def answered() -> bool:
        return ns.run(["ping", "-n", "-c", "1", "-W", "1", addr], check=False, timeout=5).returncode == 0

    wait_until(answered, timeout, f"{addr} to answer a ping from {ns.name}")


# -- keys -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPair:
    """A Curve25519 key pair in WireGuard's base64 form."""

    private: str
    public: str

    @classmethod
    def generate(cls) -> KeyPair:
        priv = X25519PrivateKey.generate()
        return cls(
            private=base64.b64encode(priv.private_bytes_raw()).decode(),
            public=base64.b64encode(priv.public_key().public_bytes_raw()).decode(),
        )

    def write_private(self, directory: str | os.PathLike[str]) -> Path:
        """The private key in a new mode-0600 file under ``directory`` (for ``wg set``)."""
        path = Path(directory) / f"{unique_name('key')}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.private + "\n")
        return path


def public_key(private: str) -> str:
    """The base64 public key of a base64 private key (``wg pubkey``, in-process)."""
    priv = X25519PrivateKey.from_private_bytes(base64.b64decode(private))
    pub: X25519PublicKey = priv.public_key()
    return base64.b64encode(pub.public_bytes_raw()).decode()


def wg_pubkey(private: str) -> str:
    """The public key as the real ``wg pubkey`` computes it."""
    return _run(["wg", "pubkey"], input=private + "\n").stdout.strip()


# -- wg -------------------------------------------------------------------


def wg(ns: NetNs, *args: str, timeout: float = CMD_TIMEOUT) -> str:
    """Run the real ``wg`` inside ``ns``; its stdout.

    Raises:
        CommandError: ``wg`` failed (its stderr is in the message).
    """
    return ns.run(["wg", *args], timeout=timeout).stdout


@dataclass(frozen=True, slots=True, kw_only=True)
class WgDevice:
    """The first line of ``wg show IFNAME dump``."""

    private_key: str | None
    public_key: str | None
    listen_port: int
    fwmark: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WgPeer:
    """A peer line of ``wg show IFNAME dump``.

    ``latest_handshake`` is seconds since the epoch, 0 for never;
    ``rx``/``tx`` are bytes of WireGuard messages (handshakes included)
    received from and sent to this peer; ``keepalive`` None means off.
    """

    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int
    rx: int
    tx: int
    keepalive: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class WgDump:
    device: WgDevice
    peers: tuple[WgPeer, ...]

    def peer(self, public_key: str) -> WgPeer:
        """The peer with that key.

        Raises:
            KeyError: no such peer.
        """
        for p in self.peers:
            if p.public_key == public_key:
                return p
        raise KeyError(public_key)


def _none(field_: str) -> str | None:
    return None if field_ == "(none)" else field_


def _off(field_: str) -> int | None:
    return None if field_ == "off" else int(field_)


def parse_wg_dump(text: str) -> WgDump:
    """Parse ``wg show IFNAME dump`` (tab-separated; one device line, then peers).

    Raises:
        ValueError: not the shape ``wg`` 1.0 prints.
    """
    lines = [ln.split("\t") for ln in text.splitlines() if ln]
    if not lines or len(lines[0]) != 4:
        raise ValueError(f"not a wg dump: {text!r}")
    priv, pub, port, fwmark = lines[0]
    dev = WgDevice(private_key=_none(priv), public_key=_none(pub), listen_port=int(port), fwmark=_off(fwmark))
    peers = []
    for f in lines[1:]:
        if len(f) != 8:
            raise ValueError(f"not a wg dump peer line: {f!r}")
        allowed = () if f[3] == "(none)" else tuple(f[3].split(","))
        peers.append(
            WgPeer(
                public_key=f[0],
                preshared_key=_none(f[1]),
                endpoint=_none(f[2]),
                allowed_ips=allowed,
                latest_handshake=int(f[4]),
                rx=int(f[5]),
                tx=int(f[6]),
                keepalive=_off(f[7]),
            )
        )
    return WgDump(device=dev, peers=tuple(peers))


def wg_show_dump(ns: NetNs, ifname: str) -> WgDump:
    """``wg show IFNAME dump`` run inside ``ns``, parsed (wireguard-go or tunwg alike)."""
    return parse_wg_dump(wg(ns, "show", ifname, "dump"))


def wait_handshake(ns: NetNs, ifname: str, peer: str, timeout: float = 5.0) -> WgPeer:
    """Until ``IFNAME`` reports a handshake with ``peer`` (a public key).

    Does not cause one: send a packet (a ping) or set a keepalive first.

    Raises:
        TimeoutError: none within ``timeout``.
    """

    def done() -> WgPeer | None:
        p = wg_show_dump(ns, ifname).peer(peer)
        return p if p.latest_handshake else None

    return wait_until(done, timeout, f"a handshake on {ifname} with peer {peer}", interval=0.02)


@final
class WireguardGo:
    """``wireguard-go -f IFNAME`` inside ``ns``; a context manager.

    ``start()`` returns once the UAPI socket accepts connections, so ``wg``
    can be used at once. ``log`` (a file) gets the daemon's output at
    ``log_level``.
    """

    def __init__(
        self, ns: NetNs, ifname: str | None = None, *, log: Path | None = None, log_level: str = "error"
    ) -> None:
        self.ns = ns
        self.ifname = ifname if ifname is not None else unique_name("wg")
        if len(self.ifname) > IFNAME_MAX:
            raise ValueError(f"{self.ifname!r}: longer than {IFNAME_MAX} characters")
        self.socket = WG_RUN_DIR / f"{self.ifname}.sock"
        self.log = log
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WireguardGo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> WireguardGo:
        """Start the daemon; return once its UAPI socket accepts connections.

        Raises:
            RuntimeError: the socket is already in use (left untouched), or
                the daemon exited (its log in the message).
            TimeoutError: no socket within ``START_TIMEOUT``.
        """
        if self._accepts():
            raise RuntimeError(f"{self.socket}: in use by another daemon")
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": self.log_level}
        out = self.log.open("ab") if self.log is not None else None
        try:
            self.proc = self.ns.popen(
                ["wireguard-go", "-f", self.ifname],
                stdout=out if out is not None else subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            if out is not None:
                out.close()
        try:
            wait_until(self._ready, START_TIMEOUT, f"wireguard-go's socket {self.socket}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"wireguard-go {self.ifname} exited with {self.proc.returncode}: {self.log_text()}"
            )
        return self._accepts()

    def _accepts(self) -> bool:
        """Whether something listens on the socket (not ``wg``'s probe: never unlinks)."""
        try:
            if not stat.S_ISSOCK(os.stat(self.socket).st_mode):
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return False
            raise
        return True

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace") if self.log is not None else ""
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL past the deadline); remove a socket left behind.

        Returns:
            The exit status (0 after a clean SIGTERM), None if never started.
        """
        proc, self.proc = self.proc, None
        rc = _stop(proc, signal.SIGTERM) if proc is not None else None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        return rc

    # -- configuration with the real wg tool --

    def set(self, *args: str) -> None:
        """``wg set IFNAME ARGS...`` inside the namespace."""
        wg(self.ns, "set", self.ifname, *args)

    def configure(
        self,
        *,
        private_key: Path,
        listen_port: int,
        peer: str,
        endpoint: str | None,
        allowed_ips: Sequence[str],
        keepalive: int | None = None,
    ) -> None:
        """One ``wg set`` with the device key and port and one peer.

        Raises:
            ValueError: a non-documentation endpoint or allowed IP.
        """
        args = ["private-key", str(private_key), "listen-port", str(listen_port), "peer", peer]
        if endpoint is not None:
            args += ["endpoint", check_address(endpoint)]
        args += ["allowed-ips", ",".join(check_address(a) for a in allowed_ips)]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive)]
        self.set(*args)

    def address(self, *cidrs: str) -> None:
        """Add the tunnel addresses and bring the link up."""
        for cidr in cidrs:
            self.ns.addr_add(self.ifname, cidr)
        self.ns.link_up(self.ifname)

    def dump(self) -> WgDump:
        return wg_show_dump(self.ns, self.ifname)

    def wait_handshake(self, peer: str, timeout: float = 5.0) -> WgPeer:
        return wait_handshake(self.ns, self.ifname, peer, timeout)


# -- two wireguard-go hosts -----------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WgHost:
    """One end: its namespace, outer (veth) address, tunnel addresses, key."""

    ns: NetNs
    outer: str
    inner4: str
    inner6: str
    port: int
    key: KeyPair
    wg: WireguardGo

    @property
    def endpoint(self) -> str:
        return f"{self.outer}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class WgPair:
    a: WgHost
    b: WgHost
    veth: Veth
    names: tuple[str, ...]  # every namespace and interface made, for leak checks


@contextlib.contextmanager
def wireguard_go_pair(
    tmp: str | os.PathLike[str], *, log_level: str = "error", keepalive: int | None = None, port: int = 51820
) -> Iterator[WgPair]:
    """Two namespaces on a veth wire (192.0.2.1, .2), wireguard-go in each,
    peered with each other, tunnel 198.51.100.1-2/24 and 2001:db8::1-2/64.

    No handshake is made yet (send a packet, or pass ``keepalive``). Logs
    and key files go to ``tmp``. Everything is removed on exit.
    """
    tmpdir = Path(tmp)
    with contextlib.ExitStack() as stack:
        ns_a = stack.enter_context(NetNs("wga"))
        ns_b = stack.enter_context(NetNs("wgb"))
        veth = veth_pair(ns_a, ns_b, "192.0.2.1", "192.0.2.2", 24)
        hosts = []
        for ns, outer, n in ((ns_a, veth.addr_a, 1), (ns_b, veth.addr_b, 2)):
            wgo = WireguardGo(ns, log=tmpdir / f"{ns.name}.log", log_level=log_level)
            stack.enter_context(wgo)
            hosts.append(
                WgHost(
                    ns=ns,
                    outer=outer,
                    inner4=str(INNER_NET4[n]),
                    inner6=str(INNER_NET6[n]),
                    port=port,
                    key=KeyPair.generate(),
                    wg=wgo,
                )
            )
        a, b = hosts
        for me, other in ((a, b), (b, a)):
            me.wg.configure(
                private_key=me.key.write_private(tmpdir),
                listen_port=me.port,
                peer=other.key.public,
                endpoint=other.endpoint,
                allowed_ips=[f"{other.inner4}/32", f"{other.inner6}/128"],
                keepalive=keepalive,
            )
            me.wg.address(f"{me.inner4}/{INNER_NET4.prefixlen}", f"{me.inner6}/{INNER_NET6.prefixlen}")
        veth.wait_ping()
        yield WgPair(
            a=a,
            b=b,
            veth=veth,
            names=(ns_a.name, ns_b.name, veth.dev_a, veth.dev_b, a.wg.ifname, b.wg.ifname),
        )


def wait_counters_settled(pair: WgPair, timeout: float = 5.0, quiet: float = 0.1) -> tuple[WgPeer, WgPeer]:
    """Until neither side's transfer counters move for ``quiet`` seconds.

    How the counters relate once settled (wireguard-go; tunwg must match):
    a's ``tx`` to b counts every datagram a sent (handshake messages 148 or
    92 bytes, cookie replies 64, transport 32 + padded payload), and b's
    ``rx`` from a every one of them b accepted, so ``a.tx == b.rx`` exactly
    unless datagrams were lost between the two sockets. Here they are, under
    a TCP stream: wireguard-go 0.0.20220316 leaves ``SO_RCVBUF`` at the
    212992-byte default and the kernel drops what overflows it
    (:func:`udp_in_errors` counts them; each costs its full size, 1452
    bytes for a 1420-MTU packet). Quiet is needed because the two ``wg
    show`` readings are not atomic, and it comes: with no persistent
    keepalive the only traffic without data is the passive keepalive (32
    bytes) a side sends 10 s after it last received data if it sent
    nothing since; read within those 10 s, or expect it.

    Returns:
        (a's record of b, b's record of a), unchanged over ``quiet`` seconds.

    Raises:
        TimeoutError: still moving after ``timeout``.
    """
    return wait_steady(
        lambda: (pair.a.wg.dump().peer(pair.b.key.public), pair.b.wg.dump().peer(pair.a.key.public)),
        timeout,
        "wg transfer counters to settle",
        quiet=quiet,
    )


def wait_steady(read: Callable[[], _T], timeout: float, what: str, *, quiet: float = 0.1) -> _T:
    """Until two readings ``quiet`` seconds apart are equal; that reading.

    For counters that move while traffic flows (``wg show`` of two ends:
    see :func:`wait_counters_settled`).

    Raises:
        TimeoutError: naming ``what``, still changing after ``timeout``.
    """
    prev: list[_T] = []

    def steady() -> tuple[_T] | None:
        now = read()
        same = prev == [now]
        prev[:] = [now]
        return (now,) if same else None

    return wait_until(steady, timeout, what, interval=quiet)[0]


def udp_in_errors(ns: NetNs) -> int:
    """``Udp: InErrors`` of the namespace (includes receive-buffer overflows)."""
    lines = [
        ln.split() for ln in ns.run(["cat", "/proc/net/snmp"]).stdout.splitlines() if ln.startswith("Udp:")
    ]
    names, values = lines[0], lines[1]
    return int(values[names.index("InErrors")])


# -- traffic --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    """A ping run: counts and the RTT of every reply, in milliseconds."""

    transmitted: int
    received: int
    rtts: tuple[float, ...]
    avg: float | None  # from ping's own summary line

    @property
    def median(self) -> float | None:
        return statistics.median(self.rtts) if self.rtts else None


_PING_COUNTS: Final = re.compile(r"(\d+) packets transmitted, (\d+) received")
_PING_TIME: Final = re.compile(r"icmp_seq=\d+ .*time=([\d.]+) ms")
_PING_RTT: Final = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")


def parse_ping(text: str) -> PingResult:
    """Parse iputils ``ping`` output (per-reply lines and the summary).

    Raises:
        ValueError: no statistics line.
    """
    counts = _PING_COUNTS.search(text)
    if counts is None:
        raise ValueError(f"no ping statistics in {text!r}")
    avg = _PING_RTT.search(text)
    return PingResult(
        transmitted=int(counts.group(1)),
        received=int(counts.group(2)),
        rtts=tuple(float(t) for t in _PING_TIME.findall(text)),
        avg=float(avg.group(1)) if avg else None,
    )


def ping(ns: NetNs, addr: str, *, count: int = 3, interval: float = 0.2, wait: float = 2.0) -> PingResult:
    """``ping -c COUNT -i INTERVAL -W WAIT`` from ``ns``, bounded by ``-w`` too.

    Loss is reported, not raised: check ``received``.
    """
    check_address(addr)
    deadline = int(count * interval + wait) + 2
    proc = ns.run(
        ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait), "-w", str(deadline), addr],
        check=False,
        timeout=deadline + 5,
    )
    return parse_ping(proc.stdout)


@dataclass(frozen=True, slots=True, kw_only=True)
class Iperf3Result:
    """The client's JSON report, and the figures the tests and bench use."""

    bytes_sent: int
    bytes_received: int
    seconds: float
    bits_per_second: float  # as received
    retransmits: int
    report: dict[str, Any]


def iperf3_tcp(
    client: NetNs,
    server: NetNs,
    addr: str,
    *,
    nbytes: int | None = None,
    seconds: float | None = None,
    port: int = 5201,
    timeout: float = 30.0,
) -> Iperf3Result:
    """One iperf3 TCP test from ``client`` to ``addr`` (inside ``server``).

    Exactly one of ``nbytes`` (``-n``) and ``seconds`` (``-t``) bounds it;
    ``--connect-timeout`` bounds the connection, ``timeout`` the whole run.
    The one-off server is always stopped.

    Raises:
        CommandError: the client failed; the message has iperf3's error.
    """
    check_address(addr)
    if (nbytes is None) == (seconds is None):
        raise ValueError("give exactly one of nbytes and seconds")
    srv = server.popen(["iperf3", "-s", "-1", "-B", addr, "-p", str(port)], stderr=subprocess.PIPE)
    try:
        wait_until(
            lambda: bool(server.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip()),
            START_TIMEOUT,
            f"iperf3 listening on {addr} port {port}",
        )
        budget = ["-n", str(nbytes)] if nbytes is not None else ["-t", str(seconds)]
        proc = client.run(
            ["iperf3", "-c", addr, "-p", str(port), "-J", "--connect-timeout", "3000", *budget],
            check=False,
            timeout=timeout,
        )
        try:
            report: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            report = {"error": proc.stdout + proc.stderr}
        if proc.returncode != 0 or "error" in report:
            raise CommandError(f"iperf3 -c {addr}: exit {proc.returncode}: {report.get('error')}")
        srv.wait(timeout)
    finally:
        _stop(srv, signal.SIGTERM)
    end = report["end"]
    return Iperf3Result(
        bytes_sent=int(end["sum_sent"]["bytes"]),
        bytes_received=int(end["sum_received"]["bytes"]),
        seconds=float(end["sum_received"]["seconds"]),
        bits_per_second=float(end["sum_received"]["bits_per_second"]),
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        report=report,
    )
