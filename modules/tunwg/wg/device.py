"""The WireGuard device, sans-I/O: packets, datagrams, timers and UAPI in; effects out.

Pure; imports ``collections``, ``dataclasses``, ``errno``, ``typing`` and this
package, no clock, socket, thread or logging (``logging`` imports
``threading``): ``now`` (monotonic float seconds), ``wall_ns`` (wall-clock
nanoseconds, for TAI64N stamps and ``last_handshake_time``) and
``rng(n) -> bytes`` come in; debug text goes to an optional ``log``
callable. After wireguard-go's ``device/device.go``, ``indextable.go``,
``receive.go`` (the handshake worker) and ``uapi.go``, shaped like
boringtun's ``Tunn``: every call returns the effects the glue must carry out.

Theory of operation
-------------------

*What.* ``Device`` is one tunwg interface: its static identity, peers,
allowed-IPs table, index table, cookie checker and load meter. The glue
(``modules/tunwg/net.py``) owns the UDP socket, the node and the clock and
calls in; every call returns a list of effects, in order:

=============  ===========================================================
effect         the glue must
=============  ===========================================================
SendDatagram   send ``data`` to ``endpoint`` from the bound UDP port
DeliverPacket  queue ``packet`` for the node's readers (one per read(2))
KeyLog         append ``line`` (whole lines) to the key-log file
=============  ===========================================================

=========================================  ====================================
call                                       when
=========================================  ====================================
``uapi_set(request, now, wall_ns)``        a UAPI ``set=1`` (raises UapiError)
``uapi_get()``                             a UAPI ``get=1``: the reply bytes
``packet_from_tun(packet, now, wall_ns)``  write(2) on the node: one IP packet
``datagram_received(data, source, ...)``   any UDP datagram; never raises
``tick(now, wall_ns)``                     at ``next_deadline()`` (or later)
``up(now)`` / ``down()``                   first open / last close of the node
=========================================  ====================================

Caller must re-read ``next_deadline()`` after every call: any of them may
arm a timer. ``up`` returns no effects of its own (it has no wall clock for
a TAI64N stamp): the keepalives it owes persistent-keepalive peers go out
at the next ``tick``, which ``next_deadline()`` makes due at once.

*Sending* (``packet_from_tun``): the destination (IPv4 offset 16, IPv6
offset 24) picks the peer by longest-prefix match; no peer, drop and count.
The peer encrypts with its current keypair, or stages the packet (128 at
most, oldest dropped) and initiates. See ``peer.py`` for keypair slots,
staging and the per-peer rules.

*Receiving* (``datagram_received``): a transport message goes by its
receiver index straight to the keypair and its peer (the hot path). A
handshake message of its exact size counts toward the load meter, then:
mac1 must be valid (always); under load mac2 must be valid too, else a
cookie reply goes back and the message is dropped, and then the
per-source-IP rate limiter must allow it; then the crypto. An initiation
names its sender only inside (``open_initiation``): unknown key, drop. A
response names our handshake by its receiver index. A cookie reply names a
handshake or keypair index; it only stores a cookie (no endpoint, timer or
counter change). Whatever fails is dropped, counted in ``stats`` and sent to
``log``: remote input never raises and never gets a reply the protocol
does not allow (only a cookie reply, and only for a valid mac1 under load).

*Under load.* wireguard-go is under load while its handshake queue holds
>= 128 entries, and for 1 s after. tunwg has no queue (each datagram is
handled when it arrives), so it measures a rate: the device is under load
when more than ``under_load_threshold`` (default 128) handshake messages
(initiations and responses of the right size, before any check, as Go's
queue fills before mac1 is checked) arrived within the last second, and
stays so for ``UNDER_LOAD_AFTER_TIME`` (1 s) after the last time that held.
A Python responder does a few thousand handshakes a second, so 128/s keeps
crypto under a few percent of a CPU before cookies are demanded.

*Index table.* Random u32s from ``rng``, unique within the device, each
naming a peer's handshake in flight or one of its keypairs
(``index -> (peer, keypair or None)``). A new handshake frees the previous
handshake index; a finished one hands its index to the new keypair; a
deleted keypair, a stopped peer and a removed peer free theirs.

*Port.* ``bind(port)`` is called when UAPI sets ``listen_port`` (0: any),
and by ``up`` if no port is bound yet (wireguard-go binds on up); it
returns the real port or raises ``UapiError(EADDRINUSE)``, after which the
device counts as unbound (wireguard-go closes the old socket first). While
unbound nothing is sent: handshake messages are dropped (and counted),
data stays staged.

*Up and down.* Configuration applies at any time. Peers run (timers,
handshakes, sending) only while the device is up: ``up`` starts them,
``down`` stops them, which drops every session, handshake and staged packet
but keeps keys, endpoints, allowed IPs and counters, as wireguard-go's
device down. Datagrams and packets arriving while down are dropped.

*Private key* (UAPI ``private_key``, wireguard-go ``SetPrivateKey``): the
same key again does nothing; otherwise peers whose public key is the new
public key are removed, the cookie checker is rekeyed, every peer's
static-static secret is recomputed, its handshake cleared, and its
current/next keypairs may no longer send (they still receive until they
age out), so the next packet starts a handshake. A zero key removes the
identity: no handshakes at all until a key is set.

XXX: longer than the style's ~500 lines because the brief gave this layer
two files; the UAPI adapters (``_Config``, ``_PeerConfig``) could move out.
XXX: ``next_deadline`` asks every peer (about 0.5 us each); a heap would
scale to many peers.
"""

from __future__ import annotations

import collections
import errno
import struct
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, final

from .allowedips import AllowedIPs
from .constants import (
    DEFAULT_MTU,
    MAX_CONTENT_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_TRANSPORT_MIN_SIZE,
    MESSAGE_TRANSPORT_TYPE,
    REKEY_AFTER_TIME,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_QUEUE_SIZE,
)
from .cookie import CookieChecker, RateLimiter, address_bytes, cookie_source
from .handshake import StaticIdentity, open_initiation, precompute_static_static
from .keys import ZERO_KEY, PresharedKey, PublicKey, is_zero
from .messages import CookieReply, Initiation, MessageError, Response, parse
from .peer import DeliverPacket, Effect, KeyLog, Peer, SendDatagram
from .uapi import DeviceSnapshot, UapiError, apply_set, format_get

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .allowedips import Prefix
    from .keypair import Keypair
    from .uapi import Endpoint, SetRequest

__all__ = ["DeliverPacket", "Device", "DeviceStats", "Effect", "KeyLog", "SendDatagram"]

MAX_PEERS: Final = 1 << 16  # wireguard-go MaxPeers
_TYPE_RECEIVER: Final = struct.Struct("<II")  # type (u32), receiver or sender


@dataclass(slots=True, kw_only=True)
class DeviceStats:
    """Device-wide drop and event counters (per-peer bytes are in the UAPI get reply).

    Live: the Device increments these fields; callers read them (copy with
    ``dataclasses.replace(device.stats)`` to keep a snapshot).

    Attributes:
        dropped_no_route: written packets whose destination no peer's allowed IPs cover.
        dropped_bad_packet: written packets that are not IPv4/IPv6, shorter than
            their fixed header, or longer than 65503 bytes.
        dropped_down: written packets and received datagrams while the device
            is down (or the routed peer is not started).
        dropped_staged_overflow: staged packets pushed out by newer ones (128 per peer).
        dropped_staged_flushed: staged packets dropped on give-up, key wipe,
            down, peer removal.
        dropped_invalid: datagrams dropped: malformed, unknown type or index,
            bad mac1, unknown peer, failed authentication, replayed, stale.
        dropped_rate_limited: handshake messages with a valid mac2 under load
            refused by the per-source rate limiter.
        dropped_inner: authenticated data whose plaintext is not a well-formed
            IPv4/IPv6 packet or whose source address is not the peer's.
        dropped_no_endpoint: handshake messages not sent for want of an
            endpoint or a bound port.
        cookie_replies_sent: handshake messages answered with a cookie reply under load.
    """

    dropped_no_route: int = 0
    dropped_bad_packet: int = 0
    dropped_down: int = 0
    dropped_staged_overflow: int = 0
    dropped_staged_flushed: int = 0
    dropped_invalid: int = 0
    dropped_rate_limited: int = 0
    dropped_inner: int = 0
    dropped_no_endpoint: int = 0
    cookie_replies_sent: int = 0


@final
class _LoadMeter:
    """Under load: more than ``threshold`` handshake messages within the last second, and 1 s after."""

    __slots__ = ("_times", "_until", "threshold")

    def __init__(self, threshold: int) -> None:
        if threshold < 0:
            raise ValueError("under_load_threshold must be >= 0")
        self.threshold: Final = threshold
        # The arrival times of the last threshold + 1 messages: more than
        # threshold in a second iff the oldest of them is under a second old.
        self._times: collections.deque[float] = collections.deque(maxlen=threshold + 1)
        self._until = float("-inf")

    def note(self, now: float) -> bool:
        """Count one handshake message arriving ``now``; say whether the device is under load."""
        times = self._times
        times.append(now)
        if len(times) > self.threshold and now - times[0] < 1.0:
            self._until = now + UNDER_LOAD_AFTER_TIME
        return now < self._until


@final
class Device:
    """One WireGuard interface; see the module docstring.

    Args:
        rng: ``rng(n) -> bytes``, cryptographically random (``os.urandom``).
        bind: ``bind(port) -> port``: bind the UDP socket(s) to ``port`` (0:
            any) and return the port bound. Raises ``UapiError(EADDRINUSE)``.
        mtu: the interface MTU, for padding (0: pad to 16 only).
        keylog: emit ``KeyLog`` effects for each handshake (section 10 format).
        under_load_threshold: handshake messages per second above which
            mac2 (cookies) and the rate limiter apply.
        log: called with one line of debug text per dropped datagram and
            protocol event, if given (never on the per-packet success path).
        rekey_after_time: REKEY_AFTER_TIME (120 s), the age at which the
            initiator of a session starts the next handshake when it sends.
            For tests only, as NetBSD's ``net.wg.rekey_after_time`` debug
            sysctl: a shorter value makes a rekey happen within a test's
            budget (no sooner than REKEY_TIMEOUT, 5 s, after the previous
            initiation). No other timer moves.

    Attributes (read-only for callers): ``is_up``, ``listen_port`` (the bound
    port, or the configured one while unbound), ``fwmark``, ``stats``.
    """

    __slots__ = (
        "_bind",
        "_checker",
        "_deferred",
        "_indices",
        "_kick",
        "_load",
        "_peers",
        "_port_set",
        "_rate_limiter",
        "_soon",
        "allowed_ips",
        "bound",
        "fwmark",
        "identity",
        "is_up",
        "keylog",
        "listen_port",
        "log",
        "mtu",
        "rekey_after_time",
        "rng",
        "stats",
    )

    def __init__(
        self,
        *,
        rng: Callable[[int], bytes],
        bind: Callable[[int], int],
        mtu: int = DEFAULT_MTU,
        keylog: bool = False,
        under_load_threshold: int = UNDER_LOAD_QUEUE_SIZE,
        log: Callable[[str], None] | None = None,
        rekey_after_time: float = REKEY_AFTER_TIME,
    ) -> None:
        if not 0 < rekey_after_time <= REKEY_AFTER_TIME:
            raise ValueError(f"rekey_after_time must be in (0, {REKEY_AFTER_TIME}]")
        self.rng: Final = rng
        self.rekey_after_time: Final = rekey_after_time
        self._bind: Final = bind
        self.mtu = mtu
        self.keylog = keylog
        self.log = log
        self.is_up = False
        self.listen_port = 0
        self._port_set = False  # UAPI set listen_port (for ``configured``)
        self.bound = False  # a port is bound: datagrams can be sent
        self.fwmark = 0
        self.identity: StaticIdentity | None = None
        self._checker: CookieChecker | None = None
        self._rate_limiter: Final = RateLimiter()
        self._load: Final = _LoadMeter(under_load_threshold)
        self._peers: dict[bytes, Peer] = {}
        self.allowed_ips: Final[AllowedIPs[Peer]] = AllowedIPs()
        self._indices: dict[int, tuple[Peer, Keypair | None]] = {}
        self.stats: Final = DeviceStats()
        self._soon: float | None = None  # tick() is due at once: deferred effects or kicks
        self._deferred: list[Effect] = []
        self._kick: list[Peer] = []  # persistent-keepalive peers owed a keepalive by up()

    # --- Introspection ---------------------------------------------------------------

    @property
    def peers(self) -> Mapping[bytes, Peer]:
        """The peers by public key, in creation order (read-only view)."""
        return MappingProxyType(self._peers)

    @property
    def under_load_threshold(self) -> int:
        return self._load.threshold

    @property
    def configured(self) -> bool:
        """UAPI gave this device a private key, a peer, a listen port or a fwmark."""
        return self.identity is not None or bool(self._peers) or self._port_set or self.fwmark != 0

    def snapshot(self) -> DeviceSnapshot:
        """The device as a UAPI get reply shows it."""
        return DeviceSnapshot(
            private_key=self.identity.private_key if self.identity is not None else ZERO_KEY,
            listen_port=self.listen_port,
            fwmark=self.fwmark,
            peers=tuple(peer.snapshot() for peer in self._peers.values()),
        )

    def debug(self, peer: Peer | None, message: object) -> None:
        """Log one line of debug text, prefixed by the peer (``peer(AbCd...wXyZ) - ...``)."""
        log = self.log
        if log is not None:
            log(f"{peer} - {message}" if peer is not None else str(message))

    # --- Index table (wireguard-go indextable.go), for peer.py ------------------------

    def index_new(self, peer: Peer, keypair: Keypair | None) -> int:
        """Reserve a fresh random u32 index for ``peer``'s handshake (or ``keypair``)."""
        indices = self._indices
        index = int.from_bytes(self.rng(4), "little")
        tries = 1
        while index in indices:
            # A fresh draw, as wireguard-go; after a few collisions (a test
            # rng that repeats itself) probe upward, which always ends.
            if tries < 8:
                index = int.from_bytes(self.rng(4), "little")
                tries += 1
            else:
                index = (index + 1) & 0xFFFFFFFF
        indices[index] = (peer, keypair)
        return index

    def index_set(self, index: int, peer: Peer, keypair: Keypair) -> None:
        """Point ``index`` (a finished handshake's) at the keypair it became."""
        self._indices[index] = (peer, keypair)

    def index_free(self, index: int) -> None:
        """Forget ``index`` (a no-op if it is not in the table)."""
        self._indices.pop(index, None)

    # --- UAPI ------------------------------------------------------------------------

    def uapi_set(self, request: SetRequest, *, now: float, wall_ns: int) -> list[Effect]:
        """Apply a UAPI set request (``uapi.apply_set``), line by line, as wireguard-go.

        Args:
            request: from ``uapi.UapiReader``.
            now: monotonic seconds.
            wall_ns: wall-clock nanoseconds (an initiation may go out).
        Returns:
            The effects of the peers' post-config: a keepalive (so a handshake)
            when persistent keepalive was just turned on, staged packets flushed.
        Raises:
            UapiError: EINVAL (bad line), EPROTO/EIO (broken body),
            EADDRINUSE (``bind`` failed); lines before the error stay applied,
            and effects they caused are returned by the next ``tick``
            (``next_deadline()`` is then ``now``).
        """
        out: list[Effect] = []
        try:
            apply_set(request, _Config(self, now, wall_ns, out))
        except UapiError:
            if out:
                self._deferred.extend(out)
                self._soon = now
            raise
        return out

    def uapi_get(self) -> bytes:
        """The whole reply to a UAPI get (``errno=0`` and the blank line included)."""
        return format_get(self.snapshot())

    def _bind_port(self, port: int) -> None:
        self.bound = False
        self.listen_port = port
        self.listen_port = self._bind(port)
        self.bound = True

    def _set_private_key(self, key: bytes, now: float) -> None:
        old = self.identity
        new = None if is_zero(key) else StaticIdentity.from_private_key(key)
        if (old.private_key if old else None) == (new.private_key if new else None):
            return
        if new is not None:
            for peer in [p for p in self._peers.values() if p.public_key == new.public_key]:
                self._remove_peer(peer)
        self.identity = new
        self._checker = CookieChecker(new.public_key) if new is not None else None
        for peer in self._peers.values():
            peer.handshake.static_static = (
                precompute_static_static(new, peer.public_key) if new is not None else ZERO_KEY
            )
            peer.expire_current_keypairs(now)
        self.debug(None, "private key changed")

    def _create_peer(self, public_key: bytes) -> Peer:
        if len(self._peers) >= MAX_PEERS:
            raise UapiError(errno.EINVAL, "too many peers")
        identity = self.identity
        static_static = precompute_static_static(identity, public_key) if identity is not None else ZERO_KEY
        peer = Peer(self, PublicKey(public_key), static_static)
        self._peers[public_key] = peer
        self.debug(peer, "created")
        return peer

    def _remove_peer(self, peer: Peer) -> None:
        self.allowed_ips.remove_by_peer(peer)
        peer.stop()
        del self._peers[peer.public_key]
        if peer in self._kick:
            self._kick.remove(peer)
        self.debug(peer, "removed")

    def set_mtu(self, mtu: int) -> None:
        """The interface MTU changed (while live): pad to ``mtu`` from now on."""
        self.mtu = mtu
        for peer in self._peers.values():
            peer.set_mtu(mtu)

    # --- Up and down -------------------------------------------------------------------

    def up(self, *, now: float) -> list[Effect]:
        """The node was opened: bind a port if none is, start every peer.

        Returns:
            No effects (see the module docstring): persistent-keepalive peers
            get their keepalive at the next ``tick``, due at once.
        """
        if self.is_up:
            return []
        self.is_up = True
        if not self.bound:
            try:
                self._bind_port(self.listen_port)
            except UapiError as exc:
                self.debug(None, f"unable to bind port {self.listen_port}: {exc}")
        for peer in self._peers.values():
            peer.start(now)
            if peer.timers.persistent_keepalive_interval > 0:
                self._kick.append(peer)
        if self._kick:
            self._soon = now
        return []

    def down(self) -> None:
        """The node's last close: stop every peer (sessions dropped), keep the configuration."""
        if not self.is_up:
            return
        self.is_up = False
        for peer in self._peers.values():
            peer.stop()
        self._kick.clear()
        self._deferred.clear()
        self._soon = None

    # --- Timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (monotonic seconds), or None if nothing is pending."""
        best = self._soon
        for peer in self._peers.values():
            deadline = peer.timers.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def tick(self, *, now: float, wall_ns: int) -> list[Effect]:
        """Run every peer's timers due at ``now`` (retries, keepalives, rekeys, wipes)."""
        out = self._deferred
        self._deferred = []
        if self._soon is not None and now >= self._soon:
            self._soon = None
            kick, self._kick = self._kick, []
            for peer in kick:
                if peer.timers.persistent_keepalive_interval > 0:
                    peer.send_keepalive(now, wall_ns, out)
        for peer in list(self._peers.values()):
            deadline = peer.timers.next_deadline()
            if deadline is not None and deadline <= now:
                peer.run_timers(now, wall_ns, out)
        return out

    # --- Data path ---------------------------------------------------------------------

    def packet_from_tun(self, packet: bytes, *, now: float, wall_ns: int) -> list[Effect]:
        """One IP packet written to the node: route it by destination, encrypt or stage it.

        Args:
            packet: the whole IPv4 or IPv6 packet (one write(2)).
            now: monotonic seconds.
            wall_ns: wall-clock nanoseconds (an initiation may go out).
        Returns:
            The transport message (and maybe an initiation), or an initiation
            while the packet waits staged, or nothing (dropped and counted:
            no route, not IP, down).
        """
        return self.packets_from_tun((packet,), now=now, wall_ns=wall_ns)

    def packets_from_tun(self, packets: Sequence[bytes], *, now: float, wall_ns: int) -> list[Effect]:
        """``packet_from_tun`` for each of ``packets`` (a batch the TUN had ready), in order.

        The effects, counters and timers are exactly those of the calls one
        by one. A destination is looked up once for the packets after it
        that share it (the table does not change within the call), and
        each run of consecutive packets for one peer goes to it as one
        batch (``Peer.send_packets``).
        """
        out: list[Effect] = []
        stats = self.stats
        lookup = self.allowed_ips.lookup
        last_dst = b""
        peer: Peer | None = None
        run: list[bytes] = []
        run_peer: Peer | None = None
        for packet in packets:
            n = len(packet)
            dst = None
            if 0 < n <= MAX_CONTENT_SIZE:
                version = packet[0] >> 4
                if version == 4:
                    if n >= 20:
                        dst = packet[16:20]
                elif version == 6 and n >= 40:
                    dst = packet[24:40]
            if dst is None:
                stats.dropped_bad_packet += 1
                continue
            if dst != last_dst:
                last_dst, peer = dst, lookup(dst)
            if peer is None:
                stats.dropped_no_route += 1
                continue
            if peer is not run_peer:
                if run_peer is not None:
                    run_peer.send_packets(run, now, wall_ns, out)
                run, run_peer = [], peer
            run.append(packet)
        if run_peer is not None:
            run_peer.send_packets(run, now, wall_ns, out)
        return out

    def datagram_received(self, data: bytes, source: Endpoint, *, now: float, wall_ns: int) -> list[Effect]:
        """Any UDP datagram that arrived on the bound port, from ``source``.

        Never raises: whatever is not a valid message for us is dropped,
        counted in ``stats`` and logged.

        Returns:
            DeliverPacket for authenticated data; SendDatagram for a response
            to an initiation, a keepalive after a response, staged packets now
            sendable, a cookie reply under load, a rekey initiation.
        """
        return self.datagrams_received((data,), source, now=now, wall_ns=wall_ns)

    def datagrams_received(
        self, datagrams: Sequence[bytes], source: Endpoint, *, now: float, wall_ns: int
    ) -> list[Effect]:
        """``datagram_received`` for each of ``datagrams``, all from ``source``, in order
        (the segments of one coalesced receive, UDP GRO).

        The effects, counters and timers are exactly those of the calls one
        by one; a malformed datagram is dropped alone. Consecutive transport
        messages for one keypair go to its peer as one batch
        (``Peer.receive_transports``): nothing a transport message does can
        free the index of the keypair it arrived on (a promotion frees the
        previous keypair's, an initiation a handshake's), so the lookup of
        the first stands for the rest of its run.
        """
        out: list[Effect] = []
        i, count = 0, len(datagrams)
        while i < count:
            data = datagrams[i]
            i += 1
            try:
                if not self.is_up:
                    self.stats.dropped_down += 1
                    continue
                n = len(data)
                if MESSAGE_TRANSPORT_MIN_SIZE <= n <= MAX_MESSAGE_SIZE:
                    kind, receiver = _TYPE_RECEIVER.unpack_from(data)
                    if kind == MESSAGE_TRANSPORT_TYPE:
                        entry = self._indices.get(receiver)
                        if entry is None or entry[1] is None:
                            self._drop("transport message for an unknown index")
                            continue
                        head = data[:8]
                        j = i
                        while (
                            j < count
                            and datagrams[j][:8] == head
                            and MESSAGE_TRANSPORT_MIN_SIZE <= len(datagrams[j]) <= MAX_MESSAGE_SIZE
                        ):
                            j += 1
                        run = datagrams[i - 1 : j] if j > i else (data,)
                        i = j
                        entry[0].receive_transports(entry[1], run, source, now, wall_ns, out)
                        continue
                out += self._handshake_datagram(data, source, now, wall_ns)
            except (MessageError, ValueError) as exc:
                self._drop(exc)
        return out

    def _drop(self, why: object) -> list[Effect]:
        self.stats.dropped_invalid += 1
        self.debug(None, why)
        return []

    def _handshake_datagram(self, data: bytes, source: Endpoint, now: float, wall_ns: int) -> list[Effect]:
        """Initiations, responses and cookie replies (wireguard-go ``RoutineHandshake``).

        Raises:
            MessageError: any reason to drop (caller counts it).
            ValueError: ``source`` is not a numeric address.
        """
        msg = parse(data)
        if isinstance(msg, CookieReply):
            entry = self._indices.get(msg.receiver)
            if entry is None:
                return self._drop("cookie reply for an unknown index")
            entry[0].cookie_generator.consume_reply(msg, now=now)
            self.debug(entry[0], f"received cookie reply from {source}")
            return []
        if not isinstance(msg, Initiation | Response):
            return self._drop("transport message for an unknown index")
        under_load = self._load.note(now)
        checker = self._checker
        if checker is None:
            return self._drop("handshake message, but no private key")
        if not checker.check_mac1(data):
            return self._drop(f"handshake message with an invalid mac1 from {source}")
        if under_load:
            cookie_src = cookie_source(source.host, source.port)
            if not checker.check_mac2(data, cookie_src, now=now):
                if not self.bound:
                    return []
                reply = checker.create_reply(data, msg.sender, cookie_src, now=now, rng=self.rng)
                self.stats.cookie_replies_sent += 1
                self.debug(None, f"sending cookie reply to {source}")
                return [SendDatagram(reply, source)]
            if not self._rate_limiter.allow(address_bytes(source.host), now=now):
                self.stats.dropped_rate_limited += 1
                self.debug(None, f"handshake message from {source} rate limited")
                return []
        out: list[Effect] = []
        if isinstance(msg, Initiation):
            identity = self.identity
            assert identity is not None  # the checker exists
            opened = open_initiation(identity, msg)
            peer = self._peers.get(opened.initiator_static)
            if peer is None or not peer.running:
                return self._drop(f"initiation from an unknown peer at {source}")
            peer.accept_initiation(opened, source, now, out)
            self.debug(peer, "received handshake initiation")
        else:
            entry = self._indices.get(msg.receiver)
            if entry is None or entry[1] is not None:
                return self._drop(f"response for an unknown index from {source}")
            peer = entry[0]
            peer.accept_response(msg, source, now, wall_ns, out)
            self.debug(peer, "received handshake response")
        return out


# --- UAPI adapters (uapi.DeviceConfig / PeerConfig) -------------------------------------


@final
class _Config:
    """The device as one ``apply_set`` run changes it; collects post-config effects."""

    __slots__ = ("device", "now", "out", "wall_ns")

    def __init__(self, device: Device, now: float, wall_ns: int, out: list[Effect]) -> None:
        self.device: Final = device
        self.now: Final = now
        self.wall_ns: Final = wall_ns
        self.out: Final = out

    def set_private_key(self, key: bytes) -> None:
        self.device._set_private_key(key, self.now)

    def set_listen_port(self, port: int) -> None:
        self.device._port_set = True
        self.device._bind_port(port)

    def set_fwmark(self, mark: int) -> None:
        self.device.fwmark = mark  # stored and reported; the glue may apply it

    def replace_peers(self) -> None:
        device = self.device
        for peer in list(device._peers.values()):
            device._remove_peer(peer)

    def is_own_public_key(self, public_key: bytes) -> bool:
        identity = self.device.identity
        return identity is not None and identity.public_key == public_key

    def lookup_peer(self, public_key: bytes) -> _PeerConfig | None:
        peer = self.device._peers.get(public_key)
        return _PeerConfig(self, peer) if peer is not None else None

    def create_peer(self, public_key: bytes) -> _PeerConfig:
        return _PeerConfig(self, self.device._create_peer(public_key))


@final
class _PeerConfig:
    """One peer as ``apply_set`` changes it."""

    __slots__ = ("config", "peer")

    def __init__(self, config: _Config, peer: Peer) -> None:
        self.config: Final = config
        self.peer: Final = peer

    def remove(self) -> None:
        self.config.device._remove_peer(self.peer)

    def set_preshared_key(self, key: bytes) -> None:
        self.peer.handshake.preshared_key = PresharedKey(key)

    def set_endpoint(self, endpoint: Endpoint) -> None:
        self.peer.endpoint = endpoint

    def set_persistent_keepalive_interval(self, interval: int) -> int:
        timers = self.peer.timers
        old = timers.persistent_keepalive_interval
        timers.persistent_keepalive_interval = interval
        return old

    def replace_allowed_ips(self) -> None:
        self.config.device.allowed_ips.remove_by_peer(self.peer)

    def add_allowed_ip(self, prefix: Prefix) -> None:
        self.config.device.allowed_ips.insert(prefix, self.peer)

    def remove_allowed_ip(self, prefix: Prefix) -> None:
        self.config.device.allowed_ips.remove(prefix, self.peer)

    def post_config(self, *, keepalive_turned_on: bool) -> None:
        config = self.config
        if not config.device.is_up:
            return
        peer = self.peer
        peer.start(config.now)
        if keepalive_turned_on:
            peer.send_keepalive(config.now, config.wall_ns, config.out)
        peer.send_staged(config.now, config.wall_ns, config.out)
