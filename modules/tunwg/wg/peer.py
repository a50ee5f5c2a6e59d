"""One peer of a WireGuard device: sessions, staged packets, timers, counters; and the effects.

Pure; imports ``collections``, ``dataclasses``, ``typing`` and this package,
no clock, socket or thread: ``now`` (monotonic seconds) and ``wall_ns``
(wall-clock nanoseconds) come in as arguments, randomness through the
Device's ``rng``. After wireguard-go's ``device/peer.go`` and the per-peer
halves of ``send.go``, ``receive.go`` and ``timers.go``; the Device
(``device.py``, whose docstring is the theory of operation) owns the index
table, the allowed-IPs table, mac1/mac2 and cookies, and calls in here.

The effects live here, where they are made, and ``device.py`` re-exports
them: ``SendDatagram`` (a UDP payload for an endpoint), ``DeliverPacket``
(a decrypted, trimmed, source-checked IP packet for the node's readers),
``KeyLog`` (key-log lines for tshark). Methods that may produce effects
take ``out: list[Effect]`` and append to it, in the order they happen.

Per peer, as wireguard-go keeps it:

- ``handshake`` (one ``Handshake``) and the keypair slots ``previous``,
  ``current``, ``next``: an initiator's new session becomes current at
  once; a responder's waits in ``next`` until the first transport message
  on it authenticates (``receive_transports`` promotes it: "handshake
  complete"). Only ``current`` sends; every keypair in the index table
  receives until it is 180 s old.
- ``staged``: up to 128 packets waiting for a usable keypair (oldest
  dropped); a keepalive is an empty staged packet. They are flushed when a
  session exists, dropped on give-up, wipe, stop and removal.
- ``timers`` (``PeerTimers``), whose actions ``run_timers`` carries out.
- ``endpoint``: set by UAPI, moved by every authenticated initiation,
  response and transport message (roaming).
- ``tx_bytes``/``rx_bytes`` as wireguard-go counts them (UDP payload bytes:
  every datagram sent to the peer; authenticated transport as padded
  plaintext + 32 and accepted handshakes as 148 or 92), and
  ``last_handshake_ns`` (wall clock at handshake completion, 0 = never).

Hot paths: ``send_packets`` and ``receive_transports`` run once per batch;
they call ``Keypair.encrypt``/``decrypt`` directly, build no record but the
effect, and format no log text. The rest runs per handshake or timer.

XXX: over the style's ~500 lines; the effects would move out if the brief
allowed another file.
Sticky source: the ``Endpoint`` a datagram came from carries the local
address it arrived on (``Endpoint.source``), so a roamed-to endpoint sends
replies from it; ``forget_source`` drops it on a handshake retry (both
timers, as wireguard-go and the kernel do) or when the edge finds the
address gone.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, TypeAlias, final

from .constants import (
    MAX_STAGED_PACKETS,
    MESSAGE_INITIATION_SIZE,
    MESSAGE_RESPONSE_SIZE,
    MESSAGE_TRANSPORT_MIN_SIZE,
    PADDING_MULTIPLE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
)
from .cookie import CookieGenerator
from .handshake import Handshake, HandshakeError
from .keypair import Keypair, TransportError, padding_size
from .keys import short, to_base64
from .timers import GIVE_UP_AFTER_ATTEMPTS, PeerTimers, TimerAction
from .uapi import PeerSnapshot

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .device import Device
    from .handshake import OpenedInitiation, StaticIdentity
    from .keys import PublicKey
    from .messages import Response
    from .uapi import Endpoint

__all__ = ["DeliverPacket", "Effect", "KeyLog", "Peer", "SendDatagram"]


# --- Effects -----------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class SendDatagram:
    """Send ``data`` as one UDP datagram to ``endpoint`` (from the bound port).

    ``peer`` is the peer whose ``tx_bytes`` already count it (``None`` for a
    cookie reply): if the send fails, the edge calls ``peer.unsent(data)``,
    since wireguard-go counts only datagrams its bind accepted.
    """

    data: bytes
    endpoint: Endpoint
    peer: Peer | None = field(default=None, compare=False, repr=False)


@final
@dataclass(frozen=True, slots=True)
class DeliverPacket:
    """A decrypted IP packet, trimmed to its header's length, whose source the
    sending peer may use: queue it for the node's readers (one ``read(2)`` each)."""

    packet: bytes


@final
@dataclass(frozen=True, slots=True)
class KeyLog:
    """Key-log text for tshark (``wg.keylog_file``): complete lines, each ending
    in ``\\n``; append them to the file as they are."""

    line: str


Effect: TypeAlias = SendDatagram | DeliverPacket | KeyLog

_PADS: Final = tuple(bytes(n) for n in range(PADDING_MULTIPLE))
_PAD_MASK: Final = PADDING_MULTIPLE - 1
_IPV4_HEADER: Final = 20
_IPV6_HEADER: Final = 40


@final
class Peer:
    """One configured peer (wireguard-go ``Peer``); made and owned by a ``Device``.

    Args:
        device: the owner; the peer uses its identity, rng, MTU, index and
            allowed-IPs tables, counters and log.
        public_key: the peer's static public key.
        static_static: ``precompute_static_static(identity, public_key)``, or
            zeros without an identity (then no handshake is possible).
    """

    __slots__ = (
        "_allowed",
        "_device",
        "_mtu",
        "_rekey_after_time",
        "_rng",
        "_stats",
        "cookie_generator",
        "current",
        "endpoint",
        "handshake",
        "last_handshake_ns",
        "next",
        "previous",
        "public_key",
        "rx_bytes",
        "staged",
        "timers",
        "tx_bytes",
    )

    def __init__(self, device: Device, public_key: PublicKey, static_static: bytes) -> None:
        self._device: Final = device
        self._allowed: Final = device.allowed_ips
        self._stats: Final = device.stats
        self._mtu = device.mtu
        self._rng: Final = device.rng
        self._rekey_after_time: Final = device.rekey_after_time
        self.public_key: Final = public_key
        self.handshake: Final = Handshake(remote_static=public_key, static_static=static_static)
        self.cookie_generator: Final = CookieGenerator(public_key)
        self.timers: Final = PeerTimers()
        self.endpoint: Endpoint | None = None
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None
        self.staged: Final[collections.deque[bytes]] = collections.deque()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.last_handshake_ns = 0

    def __repr__(self) -> str:
        return f"<Peer {short(self.public_key)}>"

    def __str__(self) -> str:
        return short(self.public_key)

    @property
    def running(self) -> bool:
        """Started (device up and configured) and not stopped."""
        return self.timers.running

    def unsent(self, data: bytes) -> None:
        """A datagram counted in ``tx_bytes`` did not go out (the send failed)."""
        self.tx_bytes -= len(data)

    def snapshot(self) -> PeerSnapshot:
        """The peer as a UAPI get reply shows it."""
        return PeerSnapshot(
            public_key=self.public_key,
            preshared_key=self.handshake.preshared_key,
            endpoint=self.endpoint,
            last_handshake_time_ns=self.last_handshake_ns,
            tx_bytes=self.tx_bytes,
            rx_bytes=self.rx_bytes,
            persistent_keepalive_interval=self.timers.persistent_keepalive_interval,
            allowed_ips=tuple(self._allowed.entries_for(self)),
        )

    # --- Lifecycle (wireguard-go Peer.Start / Stop / ZeroAndFlushAll) ------------------

    def start(self, now: float) -> None:
        """Start the timers (a no-op if running); the first initiation may go at once."""
        self.timers.start(now)

    def stop(self) -> None:
        """Stop the timers and forget every session, the handshake and staged packets."""
        self.timers.stop()
        self.zero_and_flush_all()

    def zero_and_flush_all(self) -> None:
        """Delete all keypairs and the handshake (freeing their indices) and drop staged packets."""
        for keypair in (self.previous, self.current, self.next):
            self._delete_keypair(keypair)
        self.previous = self.current = self.next = None
        self._clear_handshake()
        self.flush_staged()

    def _clear_handshake(self) -> None:
        hs = self.handshake
        if hs.local_index is not None:
            self._device.index_free(hs.local_index)
        hs.clear()

    def expire_current_keypairs(self, now: float) -> None:
        """After a private-key change: no more sending on current/next, clear the handshake.

        The keypairs still receive until they age out (wireguard-go ``ExpireCurrentKeypairs``).
        """
        self._clear_handshake()
        self.timers.on_keypairs_expired(now)
        for keypair in (self.current, self.next):
            if keypair is not None:
                keypair.send_counter = REJECT_AFTER_MESSAGES

    def flush_staged(self) -> None:
        """Drop every staged packet (counted)."""
        if self.staged:
            self._stats.dropped_staged_flushed += len(self.staged)
            self.staged.clear()

    # --- Send path (wireguard-go send.go) -------------------------------------------

    def send_packets(self, packets: Sequence[bytes], now: float, wall_ns: int, out: list[Effect]) -> None:
        """Send the IP packets the node was given, in order, appending to ``out``;
        each is sent, or staged with a handshake started.

        The fast path: nothing staged, a current keypair that may still send,
        an endpoint and a bound port. Anything else stages the packet and runs
        ``send_staged``, as wireguard-go's ``StagePackets`` + ``SendStagedPackets``.
        Caller must have routed each packet to this peer (allowed IPs).

        The effects, counters and timers come out exactly as from the calls
        one by one; what a run of packets on the fast path shares is done
        once: the checks of the path, whether the session is old enough to
        rekey (the same ``now``), and the timer event of a data packet sent
        (``on_data_packet_sent``: after the first packet of a run, a second
        call would arm nothing new, as no event in between disarms what it
        arms). A packet the keypair refuses (``TransportError``) and every
        packet off the fast path is staged, one at a time, as ever.
        """
        i, n = 0, len(packets)
        while i < n:
            keypair = self.current
            endpoint = self.endpoint
            if keypair is not None and endpoint is not None and not self.staged and self._device.bound:
                mtu = self._mtu
                rekey_by_age = keypair.is_initiator and now - keypair.created > self._rekey_after_time
                encrypt = keypair.encrypt
                first = i
                tx = 0
                while i < n:
                    packet = packets[i]
                    # pad(packet, mtu), inlined: multiple of 16, not past the MTU
                    size = len(packet)
                    pad = -size & _PAD_MASK
                    if size + pad > mtu:
                        pad = padding_size(size, mtu)
                    try:
                        data = encrypt(packet + _PADS[pad] if pad else packet, now=now)
                    except TransportError:
                        break  # exhausted or 180 s old: stage and rekey below
                    if i == first:
                        self.timers.on_data_packet_sent(now, self._rng)
                    tx += len(data)
                    out.append(SendDatagram(data, endpoint, self))
                    i += 1
                    if rekey_by_age or keypair.send_counter > REKEY_AFTER_MESSAGES:  # keepKeyFreshSending
                        self.initiate(now, wall_ns, out, is_retry=False)
                self.tx_bytes += tx
                if i == n:
                    return
            packet = packets[i]
            i += 1
            if not self.timers.running:
                self._stats.dropped_down += 1
                continue
            self._stage(packet)
            self.send_staged(now, wall_ns, out)

    def _stage(self, packet: bytes) -> None:
        staged = self.staged
        if len(staged) >= MAX_STAGED_PACKETS:
            staged.popleft()
            self._stats.dropped_staged_overflow += 1
        staged.append(packet)

    def send_staged(self, now: float, wall_ns: int, out: list[Effect]) -> None:
        """Send the staged packets with the current keypair, or initiate if there is none usable.

        Without an endpoint or a bound port they stay staged (until a UAPI set
        gives one, or the handshake gives up).
        """
        staged = self.staged
        if not staged or not self.timers.running:
            return
        keypair = self.current
        if (
            keypair is None
            or keypair.send_counter >= REJECT_AFTER_MESSAGES
            or now - keypair.created >= REJECT_AFTER_TIME
        ):
            self.initiate(now, wall_ns, out, is_retry=False)
            return
        endpoint = self.endpoint
        if endpoint is None or not self._device.bound:
            return
        timers = self.timers
        while staged:
            packet = staged.popleft()
            n = len(packet)
            pad = padding_size(n, self._mtu)
            try:
                data = keypair.encrypt(packet + _PADS[pad] if pad else packet, now=now)
            except TransportError:
                staged.appendleft(packet)
                self.initiate(now, wall_ns, out, is_retry=False)
                return
            timers.on_any_authenticated_packet_traversal(now)
            timers.on_any_authenticated_packet_sent(now)
            out.append(SendDatagram(data, endpoint, self))
            self.tx_bytes += len(data)
            if n:
                timers.on_data_sent(now, self._rng)
            if keypair.needs_rekey_sending(now, self._rekey_after_time):
                self.initiate(now, wall_ns, out, is_retry=False)

    def send_keepalive(self, now: float, wall_ns: int, out: list[Effect]) -> None:
        """Stage an empty packet unless something is staged already, then flush (``SendKeepalive``)."""
        if not self.staged and self.timers.running:
            self.staged.append(b"")
        self.send_staged(now, wall_ns, out)

    def _send(self, data: bytes, out: list[Effect]) -> None:
        """Send a handshake message (or fail quietly without an endpoint or port, as Go's ``SendBuffers``)."""
        endpoint = self.endpoint
        if endpoint is None or not self._device.bound:
            self._stats.dropped_no_endpoint += 1
            return
        out.append(SendDatagram(data, endpoint, self))
        self.tx_bytes += len(data)

    # --- Handshake (wireguard-go SendHandshakeInitiation / Response, BeginSymmetricSession) ---

    def initiate(self, now: float, wall_ns: int, out: list[Effect], *, is_retry: bool) -> None:
        """Send a handshake initiation, unless one (or a response) went out under 5 s ago.

        Nothing at all without a device identity, while stopped, or for a
        low-order peer key.
        """
        device = self._device
        identity = device.identity
        timers = self.timers
        if identity is None or not timers.running:
            return
        if not timers.begin_initiation(now, is_retry=is_retry):
            return
        hs = self.handshake
        msg = self._handshake_message(
            lambda index: hs.create_initiation(identity, local_index=index, rng=self._rng, wall_ns=wall_ns),
            now,
        )
        if msg is None:
            return
        if device.keylog:
            out.append(self._keylog(identity))
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent(now)
        self._send(msg, out)
        timers.on_handshake_initiated(now, self._rng)

    def _handshake_message(self, create: Callable[[int], bytes], now: float) -> bytes | None:
        """A handshake message under a fresh local index, with its MACs.

        ``create(index)`` makes it; the handshake's previous index is freed
        once it has, the new one if it fails (logged; ``None``), as
        wireguard-go's ``CreateMessageInitiation``/``CreateMessageResponse``
        callers do.
        """
        device = self._device
        old_index = self.handshake.local_index
        index = device.index_new(self, None)
        try:
            msg = create(index)
        except HandshakeError as exc:
            device.index_free(index)
            device.debug(self, exc)
            return None
        if old_index is not None:
            device.index_free(old_index)
        return self.cookie_generator.add_macs(msg, now=now)

    def accept_initiation(
        self, opened: OpenedInitiation, source: Endpoint, now: float, out: list[Effect]
    ) -> None:
        """Responder: consume an initiation that opened to this peer's key, then respond.

        Raises:
            HandshakeError: refused (replayed timestamp, flood, does not
            authenticate); nothing changed.
        """
        self.handshake.consume_initiation(opened, now=now)
        timers = self.timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received(now)
        self.endpoint = source
        self.rx_bytes += MESSAGE_INITIATION_SIZE
        self._respond(now, out)

    def _respond(self, now: float, out: list[Effect]) -> None:
        device = self._device
        identity = device.identity
        assert identity is not None  # an initiation was just consumed with it
        timers = self.timers
        timers.on_handshake_response_sent(now)
        hs = self.handshake
        msg = self._handshake_message(lambda index: hs.create_response(local_index=index, rng=self._rng), now)
        if msg is None:
            return
        if device.keylog:
            out.append(self._keylog(identity))
        self._begin_session(now)
        timers.on_session_derived(now)
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_sent(now)
        self._send(msg, out)

    def accept_response(
        self, msg: Response, source: Endpoint, now: float, wall_ns: int, out: list[Effect]
    ) -> None:
        """Initiator: consume the response to our initiation; the session starts; send a keepalive
        (or what is staged) so the responder gets key confirmation.

        Raises:
            HandshakeError: refused; nothing changed.
        """
        identity = self._device.identity
        assert identity is not None  # its mac1 was checked with it
        self.handshake.consume_response(identity, msg)
        self.endpoint = source
        self.rx_bytes += MESSAGE_RESPONSE_SIZE
        timers = self.timers
        timers.on_any_authenticated_packet_traversal(now)
        timers.on_any_authenticated_packet_received(now)
        self._begin_session(now)
        timers.on_session_derived(now)
        timers.on_handshake_complete(now)
        self.last_handshake_ns = wall_ns
        self.send_keepalive(now, wall_ns, out)

    def _begin_session(self, now: float) -> None:
        """Turn the finished handshake into a keypair and rotate the slots (whitepaper 5.4.5)."""
        keys = self.handshake.begin_session()
        keypair = Keypair.from_session(keys, now=now)
        self._device.index_set(keys.local_index, self, keypair)
        previous, current, nxt = self.previous, self.current, self.next
        if keys.is_initiator:
            if nxt is not None:
                self.next = None
                self.previous = nxt
                self._delete_keypair(current)
            else:
                self.previous = current
            self._delete_keypair(previous)
            self.current = keypair
        else:
            self.next = keypair
            self._delete_keypair(nxt)
            self.previous = None
            self._delete_keypair(previous)

    def _delete_keypair(self, keypair: Keypair | None) -> None:
        if keypair is not None:
            self._device.index_free(keypair.local_index)

    def _keylog(self, identity: StaticIdentity) -> KeyLog:
        hs = self.handshake
        return KeyLog(
            f"LOCAL_STATIC_PRIVATE_KEY = {to_base64(identity.private_key)}\n"
            f"REMOTE_STATIC_PUBLIC_KEY = {to_base64(self.public_key)}\n"
            f"LOCAL_EPHEMERAL_PRIVATE_KEY = {to_base64(hs.local_ephemeral)}\n"
            f"PRESHARED_KEY = {to_base64(hs.preshared_key)}\n"
        )

    # --- Receive path (wireguard-go receive.go RoutineSequentialReceiver) --------------

    def receive_transports(
        self,
        keypair: Keypair,
        datagrams: Sequence[bytes],
        source: Endpoint,
        now: float,
        wall_ns: int,
        out: list[Effect],
    ) -> None:
        """Open transport messages (all from ``source``) addressed to one of this
        peer's keypairs, in order, appending to ``out``.

        Order per message as wireguard-go: authenticate and check replay
        (``decrypt``); promote a responder's next keypair (handshake
        complete, flush staged); count; roam; maybe rekey at the last
        minute; timers; then, unless it is a keepalive, check the IP header,
        trim the padding and check the inner source against allowed IPs
        before delivering. Caller must have found ``keypair`` by the
        message's receiver index. The same effects, counters and timers as
        one message at a time. An inner source address allowed for one packet
        is not looked up again for the next (the table does not change in
        between)."""
        allowed_src = b""
        stats = self._stats
        timers = self.timers
        for data in datagrams:
            try:
                plaintext = keypair.decrypt(data, now=now)
            except TransportError as exc:
                stats.dropped_invalid += 1
                self._device.debug(self, exc)
                continue
            if keypair is self.next:  # ReceivedWithKeypair
                old = self.previous
                self.previous = self.current
                self._delete_keypair(old)
                self.current = keypair
                self.next = None
                self.endpoint = source
                timers.on_handshake_complete(now)
                self.last_handshake_ns = wall_ns
                self.send_staged(now, wall_ns, out)
            n = len(plaintext)
            self.rx_bytes += n + MESSAGE_TRANSPORT_MIN_SIZE
            self.endpoint = source
            current = self.current
            if current is not None and timers.keep_key_fresh_receiving(
                now, keypair_created=current.created, is_initiator=current.is_initiator
            ):
                self.initiate(now, wall_ns, out, is_retry=False)
            if not n:  # keepalive
                timers.on_any_authenticated_packet_traversal(now)
                timers.on_any_authenticated_packet_received(now)
                continue
            timers.on_data_packet_received(now)
            version = plaintext[0] >> 4
            if version == 4:
                if n < _IPV4_HEADER:
                    self._drop_inner(out)
                    continue
                length = (plaintext[2] << 8) | plaintext[3]
                if length > n or length < _IPV4_HEADER:
                    self._drop_inner(out)
                    continue
                packet = plaintext[:length] if length != n else plaintext
                src = packet[12:16]
            elif version == 6:
                if n < _IPV6_HEADER:
                    self._drop_inner(out)
                    continue
                length = ((plaintext[4] << 8) | plaintext[5]) + _IPV6_HEADER
                if length > n:
                    self._drop_inner(out)
                    continue
                packet = plaintext[:length] if length != n else plaintext
                src = packet[8:24]
            else:
                self._drop_inner(out)
                continue
            if src != allowed_src:
                if self._allowed.lookup(src) is not self:
                    self._drop_inner(out)
                    continue
                allowed_src = src
            out.append(DeliverPacket(packet))

    def _drop_inner(self, out: list[Effect]) -> None:
        self._stats.dropped_inner += 1
        self._device.debug(self, "packet with a malformed IP header or a disallowed source address")

    def set_mtu(self, mtu: int) -> None:
        """Pad to ``mtu`` from now on (``Device.set_mtu``)."""
        self._mtu = mtu

    def forget_source(self, endpoint: Endpoint | None = None) -> None:
        """Send from whatever local address the host chooses, no longer the one the
        peer last sent to; with ``endpoint``, only if that is still the peer's."""
        ep = self.endpoint
        if ep is not None and ep.source and (endpoint is None or ep == endpoint):
            self.endpoint = replace(ep, source="")

    # --- Timers (wireguard-go timers.go expiry functions) ------------------------------

    def run_timers(self, now: float, wall_ns: int, out: list[Effect]) -> None:
        """Carry out every timer due at ``now``."""
        for action in self.timers.due(now):
            if action is TimerAction.SEND_INITIATION:
                self.forget_source()
                self.initiate(now, wall_ns, out, is_retry=True)
            elif action is TimerAction.SEND_KEEPALIVE or action is TimerAction.PERSISTENT_KEEPALIVE:
                self.send_keepalive(now, wall_ns, out)
            elif action is TimerAction.NEW_HANDSHAKE:
                self._device.debug(self, "retrying handshake because we stopped hearing back")
                self.forget_source()
                self.initiate(now, wall_ns, out, is_retry=False)
            elif action is TimerAction.GIVE_UP:
                self._device.debug(
                    self, f"handshake did not complete after {GIVE_UP_AFTER_ATTEMPTS} attempts, giving up"
                )
                self.flush_staged()
            else:  # TimerAction.WIPE_KEYS
                self._device.debug(self, "removing all keys, since we haven't received a new one")
                self.zero_and_flush_all()
