"""Noise_IKpsk2 handshake state, one per peer: create/consume initiation and response.

Pure; imports ``enum``, ``dataclasses``, ``typing`` and this package, no
clock, socket or thread: ``now`` (monotonic seconds), ``wall_ns`` (for the
TAI64N stamp) and ``rng`` come in as arguments.

Theory of operation
-------------------

*What.* WireGuard's handshake is Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s
(whitepaper 5.4.2-5.4.4, reference section 3): the initiator I sends an
initiation, the responder R answers with a response, and both derive the
same two transport keys from the final chaining key ``C``. Each step mixes
into ``C`` (key material, via KDF) and ``H`` (transcript hash, AEAD
associated data); the step comments below quote the paper. The shape is
wireguard-go's ``device/noise-protocol.go``: one ``Handshake`` per peer, a
state, and ``create_*``/``consume_*`` methods that either move the state
and return bytes, or raise ``HandshakeError`` and change nothing.

*States* (wireguard-go's names in brackets)::

    ZEROED            -- create_initiation -->  INIT_SENT          [InitiationCreated]
    any               -- consume_initiation --> INIT_RECEIVED      [InitiationConsumed]
    INIT_RECEIVED     -- create_response -->    RESPONSE_SENT      [ResponseCreated]
    INIT_SENT         -- consume_response -->   RESPONSE_RECEIVED  [ResponseConsumed]
    RESPONSE_SENT / RESPONSE_RECEIVED  -- begin_session -->  ZEROED, returns SessionKeys

``create_initiation`` may be called in any state (a retry starts over);
consuming a peer's initiation overwrites a handshake in flight, so of two
crossing initiations the response to ours fails the state check and one
session results.

*Who is calling?* An initiation names its sender only inside the
encrypted static field, so consuming one is two calls: the Device's
``open_initiation(identity, msg)`` decrypts the initiator's static key
(needs only the local identity) and returns an ``OpenedInitiation``; the
Device looks that key up among its peers (unknown: drop) and calls that
peer's ``handshake.consume_initiation(opened, now=...)``, which finishes
the static-static step, decrypts the timestamp and applies the replay and
flood checks. No callback, no peer table in here (considered: passing
a ``Mapping`` of public key to handshake in; the Device would have to
keep that second table in step with its peers).

*What the caller does around it.* The Device allocates and frees indices
(``local_index`` is passed in; the handshake's previous one is
``handshake.local_index``, to free first), adds mac1/mac2 to the returned
bytes (``cookie.CookieGenerator.add_macs``) before sending, checks mac1
(and, under load, mac2) on received bytes before any crypto here, turns ``SessionKeys`` into a
``keypair.Keypair`` and rotates the peer's keypair slots, and drives the
timers. Nothing here knows about endpoints, timers or counters.

*Checks.* A zero DH result (a low-order public key, reference section 9)
refuses the message: ``precompute_static_static`` gives 32 zero bytes for
such a peer, and then the peer can neither initiate nor respond. A
consumed timestamp must be bytewise greater than the greatest accepted
from that peer (kept across handshakes, not restarts), and a peer's
initiations are accepted at most once per 20 ms (``HANDSHAKE_INITIATION_RATE``).

XXX: "wiping" key material only drops references to immutable ``bytes``;
Python cannot overwrite them in place, so secrets linger in freed memory
until reused. wireguard-go zeroes its arrays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from .constants import HANDSHAKE_INITIATION_RATE, TIMESTAMP_SIZE
from .crypto import (
    AEAD,
    DH,
    HASH,
    INITIAL_CHAIN_KEY,
    INITIAL_HASH,
    KDF1,
    KDF2,
    KDF3,
    TAI64N,
    CryptoError,
    aead_open,
    generate_private_key,
    public_key,
)
from .keys import ZERO_KEY, ZERO_PSK, PresharedKey, PrivateKey, PublicKey, clamp, is_zero
from .messages import Initiation, MessageError, Response

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Handshake",
    "HandshakeError",
    "HandshakeState",
    "OpenedInitiation",
    "SessionKeys",
    "StaticIdentity",
    "open_initiation",
    "precompute_static_static",
]

_ZERO_TIMESTAMP: Final = bytes(TIMESTAMP_SIZE)


class HandshakeError(MessageError):
    """A handshake message is refused (or cannot be made); ``str()`` says why."""


class HandshakeState(enum.Enum):
    """Where a peer's handshake stands; see the module docstring's table."""

    ZEROED = "zeroed"
    INIT_SENT = "initiation sent"
    INIT_RECEIVED = "initiation received"
    RESPONSE_SENT = "response sent"
    RESPONSE_RECEIVED = "response received"


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class StaticIdentity:
    """The interface's static key pair (the device's ``private_key``)."""

    private_key: PrivateKey
    public_key: PublicKey

    @classmethod
    def from_private_key(cls, private_key: bytes) -> StaticIdentity:
        """Clamp ``private_key`` and derive its public key.

        Raises:
            ValueError: not 32 bytes.
        """
        k = clamp(private_key)
        return cls(private_key=k, public_key=public_key(k))


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedInitiation:
    """An initiation whose static field decrypted: who it claims to come from.

    Not yet authenticated as that peer: ``Handshake.consume_initiation``
    does that with the static-static secret.
    """

    initiator_static: PublicKey
    message: Initiation
    chaining_key: bytes
    hash: bytes


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class SessionKeys:
    """What a finished handshake hands to ``keypair.Keypair``."""

    send_key: bytes
    receive_key: bytes
    local_index: int
    remote_index: int
    is_initiator: bool


def precompute_static_static(identity: StaticIdentity, remote_static: bytes) -> bytes:
    """``DH(S_priv_local, S_pub_peer)``, computed once per peer and private key.

    Args:
        identity: the local static key pair.
        remote_static: the peer's public key.
    Returns:
        The shared secret, or 32 zero bytes if ``remote_static`` is
        low-order: a handshake with that peer is then always refused.
    """
    try:
        return DH(identity.private_key, remote_static)
    except CryptoError:
        return ZERO_KEY


def open_initiation(identity: StaticIdentity, msg: Initiation) -> OpenedInitiation:
    """Responder, first half: decrypt the initiator's static key (whitepaper 5.4.2).

    Caller must have checked mac1 (and under load mac2) on the raw bytes.

    Args:
        identity: the local static key pair (R's).
        msg: the parsed initiation.
    Returns:
        The claimed initiator's public key and the transcript so far.
    Raises:
        HandshakeError: low-order ephemeral, or the static field does not
        decrypt (not meant for this key, or damaged).
    """
    # C_r := HASH(CONSTRUCTION); H_r := HASH(C_r || IDENTIFIER); H_r := HASH(H_r || S_r^pub)
    h = HASH(INITIAL_HASH + identity.public_key)
    # C_r := KDF1(C_r, msg.ephemeral); H_r := HASH(H_r || msg.ephemeral)
    c = KDF1(INITIAL_CHAIN_KEY, msg.ephemeral)
    h = HASH(h + msg.ephemeral)
    # (C_r, k) := KDF2(C_r, DH(S_r^priv, msg.ephemeral))
    try:
        c, k = KDF2(c, DH(identity.private_key, msg.ephemeral))
    except CryptoError:
        raise HandshakeError("initiation: low-order ephemeral key") from None
    # S_i^pub := AEAD-OPEN(k, 0, msg.static, H_r); H_r := HASH(H_r || msg.static)
    try:
        static = aead_open(k, 0, msg.encrypted_static, h)
    except CryptoError:
        raise HandshakeError("initiation: static key does not decrypt") from None
    h = HASH(h + msg.encrypted_static)
    return OpenedInitiation(initiator_static=PublicKey(static), message=msg, chaining_key=c, hash=h)


@final
class Handshake:
    """One peer's handshake: state, transcript, ephemeral, indices and replay marks.

    Attributes the Device reads: ``state``, ``local_index`` (the index to
    free when a new one replaces it), ``remote_index``, ``local_ephemeral``
    (for a key log, until ``begin_session``), ``last_timestamp``.
    Attributes it sets: ``preshared_key`` and ``static_static`` (after a
    UAPI change; call ``clear()`` too when the private key changes).

    Args:
        remote_static: the peer's public key.
        static_static: ``precompute_static_static(identity, remote_static)``.
        preshared_key: the peer's PSK; 32 zero bytes when unset.
    """

    __slots__ = (
        "chaining_key",
        "hash",
        "last_initiation_consumption",
        "last_timestamp",
        "local_ephemeral",
        "local_index",
        "preshared_key",
        "remote_ephemeral",
        "remote_index",
        "remote_static",
        "state",
        "static_static",
    )

    def __init__(
        self,
        *,
        remote_static: PublicKey,
        static_static: bytes,
        preshared_key: PresharedKey = ZERO_PSK,
    ) -> None:
        self.remote_static: Final = remote_static
        self.static_static = static_static
        self.preshared_key = preshared_key
        self.state = HandshakeState.ZEROED
        self.chaining_key = ZERO_KEY
        self.hash = ZERO_KEY
        self.local_ephemeral = ZERO_KEY
        self.remote_ephemeral = ZERO_KEY
        self.local_index: int | None = None
        self.remote_index = 0
        self.last_timestamp = _ZERO_TIMESTAMP
        self.last_initiation_consumption: float | None = None

    def __repr__(self) -> str:
        return f"<Handshake {self.state.name} local_index={self.local_index}>"

    def clear(self) -> None:
        """Forget a handshake in progress (wireguard-go ``Handshake.Clear``).

        Keeps ``last_timestamp`` and the flood mark, which must outlive
        handshakes. Caller must free ``local_index`` first.
        """
        self.state = HandshakeState.ZEROED
        self.chaining_key = ZERO_KEY
        self.hash = ZERO_KEY
        self.local_ephemeral = ZERO_KEY
        self.remote_ephemeral = ZERO_KEY
        self.local_index = None

    # --- initiator -------------------------------------------------------------

    def create_initiation(
        self,
        identity: StaticIdentity,
        *,
        local_index: int,
        rng: Callable[[int], bytes],
        wall_ns: int,
    ) -> bytes:
        """Initiator: make a handshake initiation (whitepaper 5.4.2); state becomes INIT_SENT.

        Args:
            identity: the local static key pair (I's).
            local_index: a fresh u32 the Device reserved; it is the sender index.
            rng: ``rng(n) -> bytes``; called once, for the ephemeral key.
            wall_ns: wall-clock nanoseconds since the epoch, for TAI64N.
        Returns:
            The 148-byte initiation with mac1 and mac2 zero. Caller must
            fill them (``CookieGenerator.add_macs``) before sending.
        Raises:
            HandshakeError: the peer's key is low-order (``static_static``
            is zero, or the ephemeral DH is zero); nothing changes.
        """
        if is_zero(self.static_static):
            raise HandshakeError("initiation: peer public key is low-order")
        # C_i := HASH(CONSTRUCTION); H_i := HASH(C_i || IDENTIFIER); H_i := HASH(H_i || S_r^pub)
        h = HASH(INITIAL_HASH + self.remote_static)
        # (E_i^priv, E_i^pub) := DH-GENERATE()
        e_priv = generate_private_key(rng)
        e_pub = public_key(e_priv)
        # C_i := KDF1(C_i, E_i^pub); msg.ephemeral := E_i^pub; H_i := HASH(H_i || msg.ephemeral)
        c = KDF1(INITIAL_CHAIN_KEY, e_pub)
        h = HASH(h + e_pub)
        # (C_i, k) := KDF2(C_i, DH(E_i^priv, S_r^pub))
        try:
            c, k = KDF2(c, DH(e_priv, self.remote_static))
        except CryptoError:
            raise HandshakeError("initiation: peer public key is low-order") from None
        # msg.static := AEAD(k, 0, S_i^pub, H_i); H_i := HASH(H_i || msg.static)
        enc_static = AEAD(k, 0, identity.public_key, h)
        h = HASH(h + enc_static)
        # (C_i, k) := KDF2(C_i, DH(S_i^priv, S_r^pub)), precomputed
        c, k = KDF2(c, self.static_static)
        # msg.timestamp := AEAD(k, 0, TIMESTAMP(), H_i); H_i := HASH(H_i || msg.timestamp)
        enc_ts = AEAD(k, 0, TAI64N(wall_ns), h)
        h = HASH(h + enc_ts)
        msg = Initiation(
            sender=local_index, ephemeral=e_pub, encrypted_static=enc_static, encrypted_timestamp=enc_ts
        )
        self.chaining_key, self.hash = c, h
        self.local_ephemeral = e_priv
        self.remote_ephemeral = ZERO_KEY
        self.local_index = local_index
        self.state = HandshakeState.INIT_SENT
        return msg.pack()

    def consume_response(self, identity: StaticIdentity, msg: Response) -> None:
        """Initiator: accept the response (whitepaper 5.4.3); state becomes RESPONSE_RECEIVED.

        Caller must have found this handshake by ``msg.receiver`` and
        checked mac1 (and, under load, mac2). Then call ``begin_session``.

        Args:
            identity: the local static key pair (I's).
            msg: the parsed response.
        Raises:
            HandshakeError: no initiation in flight with that index, a
            low-order ephemeral, or the response does not authenticate (the
            responder lacks our key, the PSKs differ, or it was tampered
            with); nothing changes.
        """
        if self.state is not HandshakeState.INIT_SENT:
            raise HandshakeError(f"response: handshake is {self.state.value}, not initiation sent")
        if msg.receiver != self.local_index:
            raise HandshakeError("response: wrong receiver index")
        e_r = msg.ephemeral
        # C_i := KDF1(C_i, msg.ephemeral); H_i := HASH(H_i || msg.ephemeral)
        c = KDF1(self.chaining_key, e_r)
        h = HASH(self.hash + e_r)
        # C_i := KDF1(C_i, DH(E_i^priv, E_r^pub)); C_i := KDF1(C_i, DH(S_i^priv, E_r^pub))
        try:
            c = KDF1(c, DH(self.local_ephemeral, e_r))
            c = KDF1(c, DH(identity.private_key, e_r))
        except CryptoError:
            raise HandshakeError("response: low-order ephemeral key") from None
        # (C_i, tau, k) := KDF3(C_i, Q); H_i := HASH(H_i || tau)
        c, tau, k = KDF3(c, self.preshared_key)
        h = HASH(h + tau)
        # msg.empty must be AEAD(k, 0, e, H_i); H_i := HASH(H_i || msg.empty)
        try:
            aead_open(k, 0, msg.encrypted_nothing, h)
        except CryptoError:
            raise HandshakeError("response: does not authenticate") from None
        h = HASH(h + msg.encrypted_nothing)
        self.chaining_key, self.hash = c, h
        self.remote_index = msg.sender
        self.state = HandshakeState.RESPONSE_RECEIVED

    # --- responder -------------------------------------------------------------

    def consume_initiation(self, opened: OpenedInitiation, *, now: float) -> None:
        """Responder, second half: authenticate the initiator (whitepaper 5.4.2).

        Overwrites any handshake in progress; state becomes INIT_RECEIVED.
        Then call ``create_response``.

        Args:
            opened: from ``open_initiation``. Caller must pass it to the
                handshake of the peer whose key is ``opened.initiator_static``.
            now: monotonic seconds, for the flood check.
        Raises:
            HandshakeError: the peer's key is low-order, the timestamp does
            not decrypt (the initiator does not hold that key, or the
            message was damaged), it is not newer than the greatest accepted
            (a replay), or an initiation was accepted from this peer 20 ms
            ago or less (a flood); nothing changes.
            ValueError: ``opened`` is for another peer (a caller bug).
        """
        if opened.initiator_static != self.remote_static:
            raise ValueError("initiation is from another peer")
        if is_zero(self.static_static):
            raise HandshakeError("initiation: peer public key is low-order")
        msg = opened.message
        # (C_r, k) := KDF2(C_r, DH(S_r^priv, S_i^pub)), precomputed
        c, k = KDF2(opened.chaining_key, self.static_static)
        # timestamp := AEAD-OPEN(k, 0, msg.timestamp, H_r); H_r := HASH(H_r || msg.timestamp)
        try:
            timestamp = aead_open(k, 0, msg.encrypted_timestamp, opened.hash)
        except CryptoError:
            raise HandshakeError("initiation: timestamp does not decrypt") from None
        h = HASH(opened.hash + msg.encrypted_timestamp)
        # Protect against replay and flood (wireguard-go's checks)
        if timestamp <= self.last_timestamp:
            raise HandshakeError("initiation: replayed timestamp")
        last = self.last_initiation_consumption
        if last is not None and now - last <= HANDSHAKE_INITIATION_RATE:
            raise HandshakeError("initiation: flood (20 ms or less since the last)")
        self.chaining_key, self.hash = c, h
        self.remote_index = msg.sender
        self.remote_ephemeral = msg.ephemeral
        self.local_ephemeral = ZERO_KEY
        self.last_timestamp = timestamp
        self.last_initiation_consumption = now
        self.state = HandshakeState.INIT_RECEIVED

    def create_response(self, *, local_index: int, rng: Callable[[int], bytes]) -> bytes:
        """Responder: answer the consumed initiation (whitepaper 5.4.3); state becomes RESPONSE_SENT.

        Then call ``begin_session``.

        Args:
            local_index: a fresh u32 the Device reserved (sender index);
                the handshake's previous ``local_index``, if any, is the
                caller's to free.
            rng: called once, for the ephemeral key.
        Returns:
            The 92-byte response with mac1 and mac2 zero. Caller must fill
            them (``CookieGenerator.add_macs``) before sending.
        Raises:
            HandshakeError: no consumed initiation, or the initiator's
            ephemeral is low-order; nothing changes.
        """
        if self.state is not HandshakeState.INIT_RECEIVED:
            raise HandshakeError(f"response: handshake is {self.state.value}, not initiation received")
        # (E_r^priv, E_r^pub) := DH-GENERATE(); msg.ephemeral := E_r^pub
        e_priv = generate_private_key(rng)
        e_pub = public_key(e_priv)
        # C_r := KDF1(C_r, E_r^pub); H_r := HASH(H_r || msg.ephemeral)
        c = KDF1(self.chaining_key, e_pub)
        h = HASH(self.hash + e_pub)
        # C_r := KDF1(C_r, DH(E_r^priv, E_i^pub)); C_r := KDF1(C_r, DH(E_r^priv, S_i^pub))
        try:
            c = KDF1(c, DH(e_priv, self.remote_ephemeral))
            c = KDF1(c, DH(e_priv, self.remote_static))
        except CryptoError:
            raise HandshakeError("response: low-order peer key") from None
        # (C_r, tau, k) := KDF3(C_r, Q); H_r := HASH(H_r || tau)
        c, tau, k = KDF3(c, self.preshared_key)
        h = HASH(h + tau)
        # msg.empty := AEAD(k, 0, e, H_r); H_r := HASH(H_r || msg.empty)
        empty = AEAD(k, 0, b"", h)
        h = HASH(h + empty)
        msg = Response(
            sender=local_index, receiver=self.remote_index, ephemeral=e_pub, encrypted_nothing=empty
        )
        self.chaining_key, self.hash = c, h
        self.local_ephemeral = e_priv
        self.local_index = local_index
        self.state = HandshakeState.RESPONSE_SENT
        return msg.pack()

    # --- both ------------------------------------------------------------------

    def begin_session(self) -> SessionKeys:
        """Derive the transport keys (whitepaper 5.4.5) and zero the handshake.

        ``(T1, T2) := KDF2(C, e)``: the initiator sends with T1 and
        receives with T2, the responder the reverse. The handshake's local
        index moves to the session (``local_index`` becomes None: the
        Device re-points its index table entry at the new keypair).

        Returns:
            The keys, both indices and the role.
        Raises:
            RuntimeError: the state is neither RESPONSE_SENT nor
            RESPONSE_RECEIVED (a caller bug).
        """
        if self.state is HandshakeState.RESPONSE_RECEIVED:
            send, receive = KDF2(self.chaining_key, b"")
            initiator = True
        elif self.state is HandshakeState.RESPONSE_SENT:
            receive, send = KDF2(self.chaining_key, b"")
            initiator = False
        else:
            raise RuntimeError(f"begin_session with handshake {self.state.value}")
        assert self.local_index is not None
        keys = SessionKeys(
            send_key=send,
            receive_key=receive,
            local_index=self.local_index,
            remote_index=self.remote_index,
            is_initiator=initiator,
        )
        self.clear()
        return keys
