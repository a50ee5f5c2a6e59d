"""The five per-peer timers of WireGuard and the rekey rules tied to them, sans-I/O.

Pure; imports ``enum``, ``typing`` and this package's constants: no clock,
no thread. ``now`` (monotonic float seconds) and ``rng(n) -> bytes`` come in
as arguments. After wireguard-go's ``device/timers.go`` (itself the
kernel's ``timers.c``) and reference section 6.

Theory of operation
-------------------

*What.* Each peer has five timers. wireguard-go runs each as a
``time.Timer`` whose expiry function sends or wipes something; here a timer
is a deadline (``float`` or ``None`` = not pending, Go's ``isPending``), the
Peer layer reports events through the ``on_*`` methods (Go's ``timers*``
functions), asks ``next_deadline()`` when to call back, and at that time
calls ``due(now)``, which fires every expired timer, earliest first, and
returns what the Peer must do as ``TimerAction`` values, in order:

===================  ===============================  =========================================
timer                armed by                         on expiry
===================  ===============================  =========================================
retransmit           ``on_handshake_initiated``:      attempts > 18: ``GIVE_UP`` (send-keepalive
handshake            5 s + jitter; cancelled by       cancelled, wipe armed if not pending);
                     ``on_handshake_complete``        else attempts += 1, ``SEND_INITIATION``
send keepalive       ``on_data_received``: 10 s if    ``SEND_KEEPALIVE``; if another was asked
                     not pending, else "need          for, clear that and re-arm 10 s
                     another"; cancelled by
                     ``on_any_authenticated_packet
                     _sent``
new handshake        ``on_data_sent``: 15 s + jitter  ``NEW_HANDSHAKE``
                     if not pending; cancelled by
                     ``on_any_authenticated_packet
                     _received``
zero key material    ``on_session_derived``: 540 s    ``WIPE_KEYS``
persistent           ``on_any_authenticated_packet    ``PERSISTENT_KEEPALIVE`` if the interval
keepalive            _traversal``: interval, if > 0   is still > 0
===================  ===============================  =========================================

Jitter is 0..333 whole milliseconds (Go ``fastrandn(334)``), drawn from 4
bytes of ``rng`` modulo 334: the bias (334 / 2**32) does not matter for a
retry delay, and unlike rejection sampling it always terminates, even with
a constant test ``rng``.

*What the Peer does with an action* (wireguard-go's expiry functions, the
parts that are not timers):

- ``SEND_INITIATION`` (a retry): forget the sticky source address, then
  initiate with ``is_retry=True``.
- ``NEW_HANDSHAKE``: forget the sticky source address, then initiate with
  ``is_retry=False``.
- ``GIVE_UP``: drop the staged packets; log "Handshake did not complete
  after 20 attempts, giving up" (``MAX_TIMER_HANDSHAKES + 2``).
- ``SEND_KEEPALIVE``, ``PERSISTENT_KEEPALIVE``: send a keepalive (stage an
  empty packet if none is staged, flush).
- ``WIPE_KEYS``: delete all keypairs, the handshake and staged packets.

"Initiate" is Go's ``SendHandshakeInitiation``: call
``begin_initiation(now, is_retry=...)``; if it returns False (an
initiation or response went out less than ``REKEY_TIMEOUT`` ago) do
nothing; else create and send the initiation, then call
``on_any_authenticated_packet_traversal``, ``on_any_authenticated_packet_sent``
and ``on_handshake_initiated``, in that order.

*Counting to give-up.* ``begin_initiation(is_retry=False)`` zeroes the
attempt count; each retransmit expiry with ``attempts <= 18`` adds one and
retries. So the first initiation is followed by retries 1..19 and the 20th
expiry gives up: 20 initiations in all, about 20 x 5 s = 100 s plus jitter,
which is why Go logs ``MaxTimerHandshakes + 2``. The next packet to send
starts over (a non-retry initiation).

*Running.* Go arms or cancels most timers only while ``timersActive()``
(peer running and device up); ``start``/``stop`` stand for both: call
``stop()`` when the peer stops or the device goes down, ``start(now)``
when it (re)starts. Events while stopped change only the counters and
flags, as in Go.

XXX: Go's keepalive re-arm in ``expiredSendKeepalive`` is usually undone at
once, because sending that keepalive runs ``timersAnyAuthenticatedPacketSent``
which cancels the timer again; here the same happens when the Peer reports
the keepalive it sent. Faithful, if odd.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final, final

from .constants import (
    KEEPALIVE_TIMEOUT,
    MAX_PERSISTENT_KEEPALIVE,
    MAX_TIMER_HANDSHAKES,
    NEW_HANDSHAKE_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_AFTER_TIME_RECEIVING,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    WIPE_AFTER_TIME,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["GIVE_UP_AFTER_ATTEMPTS", "PeerTimers", "TimerAction", "jitter"]

# Initiations sent before giving up, as wireguard-go logs it.
GIVE_UP_AFTER_ATTEMPTS: Final = MAX_TIMER_HANDSHAKES + 2  # 20
_JITTER_MS: Final = round(REKEY_TIMEOUT_JITTER_MAX * 1000)  # 334: 0..333 ms
# Peer.Start back-dates the last initiation so the first one may go at once.
_START_BACKDATE: Final = REKEY_TIMEOUT + 1.0


class TimerAction(enum.Enum):
    """What an expired timer asks the Peer to do (module docstring)."""

    SEND_INITIATION = "send initiation"  # a retry
    GIVE_UP = "give up"
    SEND_KEEPALIVE = "send keepalive"
    NEW_HANDSHAKE = "new handshake"
    WIPE_KEYS = "wipe keys"
    PERSISTENT_KEEPALIVE = "persistent keepalive"


def jitter(rng: Callable[[int], bytes]) -> float:
    """A retransmit jitter: 0..333 whole milliseconds, in seconds."""
    return (int.from_bytes(rng(4), "little") % _JITTER_MS) / 1000


@final
class PeerTimers:
    """One peer's timers, counters and the handshake rate limit."""

    __slots__ = (
        "_handshake_attempts",
        "_last_sent_handshake",
        "_need_another_keepalive",
        "_new_handshake",
        "_persistent_keepalive",
        "_persistent_keepalive_interval",
        "_retransmit_handshake",
        "_running",
        "_send_keepalive",
        "_sent_last_minute_handshake",
        "_zero_key_material",
    )

    def __init__(self) -> None:
        self._retransmit_handshake: float | None = None
        self._send_keepalive: float | None = None
        self._new_handshake: float | None = None
        self._zero_key_material: float | None = None
        self._persistent_keepalive: float | None = None
        self._handshake_attempts = 0
        self._need_another_keepalive = False
        self._sent_last_minute_handshake = False
        self._persistent_keepalive_interval = 0
        self._last_sent_handshake = float("-inf")
        self._running = False

    # --- Named deadlines and state (read-only) --------------------------------

    @property
    def retransmit_handshake_at(self) -> float | None:
        return self._retransmit_handshake

    @property
    def send_keepalive_at(self) -> float | None:
        return self._send_keepalive

    @property
    def new_handshake_at(self) -> float | None:
        return self._new_handshake

    @property
    def zero_key_material_at(self) -> float | None:
        return self._zero_key_material

    @property
    def persistent_keepalive_at(self) -> float | None:
        return self._persistent_keepalive

    @property
    def handshake_attempts(self) -> int:
        """Retries since the last non-retry initiation (Go ``handshakeAttempts``)."""
        return self._handshake_attempts

    @property
    def need_another_keepalive(self) -> bool:
        return self._need_another_keepalive

    @property
    def sent_last_minute_handshake(self) -> bool:
        return self._sent_last_minute_handshake

    @property
    def last_sent_handshake(self) -> float:
        """When the last initiation or response went out (``-inf``: never)."""
        return self._last_sent_handshake

    @property
    def running(self) -> bool:
        return self._running

    @property
    def persistent_keepalive_interval(self) -> int:
        """Seconds, 0 = off; UAPI ``persistent_keepalive_interval`` sets it."""
        return self._persistent_keepalive_interval

    @persistent_keepalive_interval.setter
    def persistent_keepalive_interval(self, interval: int) -> None:
        if not 0 <= interval <= MAX_PERSISTENT_KEEPALIVE:
            raise ValueError(f"persistent keepalive interval {interval} out of range")
        self._persistent_keepalive_interval = interval

    # --- Lifecycle ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """The peer starts (device up, peer configured): Go ``Peer.Start``.

        Resets the counters and flags (``timersStart``) and back-dates the
        last sent handshake so the first initiation is not rate limited. A
        no-op if already running: UAPI's post-config starts a peer on every
        ``set`` that names it, and Go's ``Start`` returns early then too.
        """
        if self._running:
            return
        self._running = True
        self._handshake_attempts = 0
        self._sent_last_minute_handshake = False
        self._need_another_keepalive = False
        self._last_sent_handshake = now - _START_BACKDATE

    def stop(self) -> None:
        """The peer stops or the device goes down: cancel every timer (``timersStop``)."""
        self._running = False
        self._retransmit_handshake = None
        self._send_keepalive = None
        self._new_handshake = None
        self._zero_key_material = None
        self._persistent_keepalive = None

    # --- Events (wireguard-go timers*) ----------------------------------------------

    def on_data_sent(self, now: float, rng: Callable[[int], bytes]) -> None:
        """A non-empty transport packet was sent (``timersDataSent``)."""
        if self._running and self._new_handshake is None:
            self._new_handshake = now + NEW_HANDSHAKE_TIME + jitter(rng)

    def on_data_received(self, now: float) -> None:
        """A non-empty transport packet was received (``timersDataReceived``)."""
        if self._running:
            if self._send_keepalive is None:
                self._send_keepalive = now + KEEPALIVE_TIMEOUT
            else:
                self._need_another_keepalive = True

    def on_any_authenticated_packet_sent(self, now: float) -> None:
        """Any keepalive, data or handshake packet was sent."""
        if self._running:
            self._send_keepalive = None

    def on_any_authenticated_packet_received(self, now: float) -> None:
        """Any keepalive, data or handshake packet was received and authenticated."""
        if self._running:
            self._new_handshake = None

    def on_handshake_initiated(self, now: float, rng: Callable[[int], bytes]) -> None:
        """An initiation was sent (``timersHandshakeInitiated``)."""
        if self._running:
            self._retransmit_handshake = now + REKEY_TIMEOUT + jitter(rng)

    def on_handshake_complete(self, now: float) -> None:
        """A response was consumed, or the first data on a responder's new
        keypair arrived (``timersHandshakeComplete``).

        The Peer also records ``last_handshake_time`` from the wall clock,
        which this object never sees.
        """
        if self._running:
            self._retransmit_handshake = None
        self._handshake_attempts = 0
        self._sent_last_minute_handshake = False

    def on_session_derived(self, now: float) -> None:
        """New session keys: before sending a response, or after consuming one."""
        if self._running:
            self._zero_key_material = now + WIPE_AFTER_TIME

    def on_any_authenticated_packet_traversal(self, now: float) -> None:
        """Before an authenticated packet is sent, or after one is received."""
        if self._persistent_keepalive_interval > 0 and self._running:
            self._persistent_keepalive = now + self._persistent_keepalive_interval

    def on_data_packet_sent(self, now: float, rng: Callable[[int], bytes]) -> None:
        """A non-empty transport packet was sent: ``on_any_authenticated_packet_traversal``,
        ``on_any_authenticated_packet_sent`` and ``on_data_sent``, in wireguard-go's
        order, as one call (the per-packet path)."""
        if self._running:
            if self._persistent_keepalive_interval > 0:
                self._persistent_keepalive = now + self._persistent_keepalive_interval
            self._send_keepalive = None
            if self._new_handshake is None:
                self._new_handshake = now + NEW_HANDSHAKE_TIME + jitter(rng)

    def on_data_packet_received(self, now: float) -> None:
        """A non-empty transport packet was received: ``on_any_authenticated_packet_traversal``,
        ``on_any_authenticated_packet_received`` and ``on_data_received``, in
        wireguard-go's order, as one call (the per-packet path)."""
        if self._running:
            if self._persistent_keepalive_interval > 0:
                self._persistent_keepalive = now + self._persistent_keepalive_interval
            self._new_handshake = None
            if self._send_keepalive is None:
                self._send_keepalive = now + KEEPALIVE_TIMEOUT
            else:
                self._need_another_keepalive = True

    # --- Rekey rules -------------------------------------------------------------

    def begin_initiation(self, now: float, *, is_retry: bool) -> bool:
        """May an initiation go out now? The head of Go's ``SendHandshakeInitiation``.

        A non-retry zeroes the attempt count first. Then no: an initiation or
        response went out less than ``REKEY_TIMEOUT`` ago. Yes: that time
        becomes ``now`` and the caller must send (see the module docstring).
        """
        if not is_retry:
            self._handshake_attempts = 0
        if now - self._last_sent_handshake < REKEY_TIMEOUT:
            return False
        self._last_sent_handshake = now
        return True

    def on_handshake_response_sent(self, now: float) -> None:
        """A response is going out: it counts as a handshake sent (``SendHandshakeResponse``)."""
        self._last_sent_handshake = now

    def on_keypairs_expired(self, now: float) -> None:
        """The private key changed and the sessions were expired
        (``ExpireCurrentKeypairs``): the next initiation may go at once."""
        self._last_sent_handshake = now - _START_BACKDATE

    def keep_key_fresh_sending(
        self, now: float, *, keypair_created: float, is_initiator: bool, send_counter: int
    ) -> bool:
        """After sending on the current keypair: should we rekey? (``keepKeyFreshSending``)

        Yes if its counter passed ``REKEY_AFTER_MESSAGES``, or we initiated it
        and it is older than ``REKEY_AFTER_TIME``; the caller then initiates
        with ``is_retry=False``. Caller must have a current keypair.
        """
        return send_counter > REKEY_AFTER_MESSAGES or (
            is_initiator and now - keypair_created > REKEY_AFTER_TIME
        )

    def keep_key_fresh_receiving(self, now: float, *, keypair_created: float, is_initiator: bool) -> bool:
        """After receiving data on the current keypair: rekey at the last minute?

        Once per session (until ``on_handshake_complete``): yes if we
        initiated the keypair and it is older than 165 s, so a new one is in
        place before the old is rejected at 180 s (``keepKeyFreshReceiving``).
        Caller then initiates with ``is_retry=False``.
        """
        if self._sent_last_minute_handshake:
            return False
        if is_initiator and now - keypair_created > REKEY_AFTER_TIME_RECEIVING:
            self._sent_last_minute_handshake = True
            return True
        return False

    # --- Expiry ------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest pending deadline: call ``due`` then. None if nothing is pending."""
        # A loop, not min() over a comprehension: this runs for every packet
        # (the interface's ``_poke``), where a comprehension is one more
        # function to run cold (bench/README.md, tunwg, fourth session).
        best = None
        for t in (
            self._retransmit_handshake,
            self._send_keepalive,
            self._new_handshake,
            self._zero_key_material,
            self._persistent_keepalive,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def due(self, now: float) -> list[TimerAction]:
        """Fire every timer whose deadline is <= ``now``, earliest first.

        Timers re-armed while firing are due later than ``now``, so each
        fires at most once per call. Ties go in the table's order.

        Returns:
            The actions, in order; empty if nothing was due.
        """
        actions: list[TimerAction] = []
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                return actions
            if self._retransmit_handshake == deadline:
                self._retransmit_handshake = None
                self._expired_retransmit_handshake(now, actions)
            elif self._send_keepalive == deadline:
                self._send_keepalive = None
                self._expired_send_keepalive(now, actions)
            elif self._new_handshake == deadline:
                self._new_handshake = None
                actions.append(TimerAction.NEW_HANDSHAKE)
            elif self._zero_key_material == deadline:
                self._zero_key_material = None
                actions.append(TimerAction.WIPE_KEYS)
            else:
                self._persistent_keepalive = None
                if self._persistent_keepalive_interval > 0:
                    actions.append(TimerAction.PERSISTENT_KEEPALIVE)

    def _expired_retransmit_handshake(self, now: float, actions: list[TimerAction]) -> None:
        if self._handshake_attempts > MAX_TIMER_HANDSHAKES:
            # Give up: no keepalive for a session we do not have; the Peer
            # drops staged packets; wipe any residue of the partial exchange.
            if self._running:
                self._send_keepalive = None
            actions.append(TimerAction.GIVE_UP)
            if self._running and self._zero_key_material is None:
                self._zero_key_material = now + WIPE_AFTER_TIME
        else:
            self._handshake_attempts += 1
            actions.append(TimerAction.SEND_INITIATION)

    def _expired_send_keepalive(self, now: float, actions: list[TimerAction]) -> None:
        actions.append(TimerAction.SEND_KEEPALIVE)
        if self._need_another_keepalive:
            self._need_another_keepalive = False
            if self._running:
                self._send_keepalive = now + KEEPALIVE_TIMEOUT
