"""Per-peer timers on a number clock with a fixed rng: each timer, give-up, rekey rules.

``Sim`` plays the Peer layer as the timers module docstring prescribes
(initiate = ``begin_initiation`` then the three events; a keepalive sent is
an authenticated packet sent), so the retry chain runs end to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.tunwg.wg.constants import MAX_TIMER_HANDSHAKES
from modules.tunwg.wg.timers import GIVE_UP_AFTER_ATTEMPTS, PeerTimers, TimerAction, jitter

if TYPE_CHECKING:
    from collections.abc import Callable

A = TimerAction


def zero_rng(n: int) -> bytes:
    return bytes(n)


def rng_1000(n: int) -> bytes:
    return (1000).to_bytes(n, "little")  # 1000 % 334 = 332 ms


@dataclass
class Sim:
    """The Peer layer's side of the contract, recording what it sent."""

    timers: PeerTimers = field(default_factory=PeerTimers)
    rng: Callable[[int], bytes] = zero_rng
    initiations: list[float] = field(default_factory=list)
    keepalives: list[float] = field(default_factory=list)
    gave_up: list[float] = field(default_factory=list)
    wiped: list[float] = field(default_factory=list)

    def initiate(self, now: float, *, is_retry: bool) -> None:
        t = self.timers
        if not t.begin_initiation(now, is_retry=is_retry):
            return
        self.initiations.append(now)
        t.on_any_authenticated_packet_traversal(now)
        t.on_any_authenticated_packet_sent(now)
        t.on_handshake_initiated(now, self.rng)

    def keepalive(self, now: float) -> None:
        self.keepalives.append(now)
        self.timers.on_any_authenticated_packet_traversal(now)
        self.timers.on_any_authenticated_packet_sent(now)

    def tick(self, now: float) -> list[TimerAction]:
        actions = self.timers.due(now)
        for action in actions:
            if action is A.SEND_INITIATION:
                self.initiate(now, is_retry=True)
            elif action is A.NEW_HANDSHAKE:
                self.initiate(now, is_retry=False)
            elif action is A.GIVE_UP:
                self.gave_up.append(now)
            elif action in (A.SEND_KEEPALIVE, A.PERSISTENT_KEEPALIVE):
                self.keepalive(now)
            else:
                self.wiped.append(now)
        return actions

    def run_until(self, end: float) -> None:
        """Tick at every deadline up to ``end``, as the glue's timer loop would."""
        while (deadline := self.timers.next_deadline()) is not None and deadline <= end:
            self.tick(deadline)


def started(now: float = 0.0) -> Sim:
    sim = Sim()
    sim.timers.start(now)
    return sim


# --- Jitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"), [(0, 0.0), (1, 0.001), (333, 0.333), (334, 0.0), (1000, 0.332), (2**32 - 1, 0.173)]
)
def test_jitter_is_whole_milliseconds_below_334(raw: int, seconds: float) -> None:
    assert jitter(lambda n: raw.to_bytes(n, "little")) == seconds


# --- Retransmit and give-up ----------------------------------------------------------


def test_first_initiation_goes_at_once_after_start() -> None:
    sim = started(100.0)
    sim.initiate(100.0, is_retry=False)
    assert sim.initiations == [100.0]
    assert sim.timers.retransmit_handshake_at == 105.0


def test_retransmit_every_5s_plus_jitter() -> None:
    sim = started()
    sim.rng = rng_1000
    sim.initiate(0.0, is_retry=False)
    assert sim.timers.retransmit_handshake_at == pytest.approx(5.332)
    assert sim.tick(5.331) == []
    assert sim.tick(5.332) == [A.SEND_INITIATION]
    assert sim.initiations == [0.0, 5.332]
    assert sim.timers.handshake_attempts == 1
    assert sim.timers.retransmit_handshake_at == pytest.approx(10.664)


def test_gives_up_after_20_initiations() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.run_until(1000.0)
    assert GIVE_UP_AFTER_ATTEMPTS == MAX_TIMER_HANDSHAKES + 2 == 20
    assert len(sim.initiations) == 20
    assert sim.initiations == [5.0 * i for i in range(20)]
    assert sim.gave_up == [100.0]
    assert sim.timers.retransmit_handshake_at is None
    # Residue of the partial exchange is wiped 540 s after giving up.
    assert sim.wiped == [640.0]
    assert sim.timers.next_deadline() is None


def test_give_up_cancels_the_keepalive_timer() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.run_until(95.0)
    sim.timers.on_data_received(99.0)
    assert sim.tick(100.0) == [A.GIVE_UP]
    assert sim.timers.send_keepalive_at is None


def test_give_up_keeps_a_pending_wipe() -> None:
    sim = started()
    sim.timers.on_session_derived(0.0)
    sim.initiate(0.0, is_retry=False)
    sim.run_until(100.0)
    assert sim.gave_up == [100.0]
    assert sim.timers.zero_key_material_at == 540.0


def test_next_packet_after_give_up_starts_over() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.run_until(100.0)
    sim.initiate(200.0, is_retry=False)
    assert sim.timers.handshake_attempts == 0
    sim.run_until(299.0)
    assert len(sim.initiations) == 40


def test_handshake_complete_cancels_retransmit() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.tick(5.0)
    sim.timers.on_handshake_complete(5.5)
    assert sim.timers.retransmit_handshake_at is None
    assert sim.timers.handshake_attempts == 0
    assert sim.tick(10.0) == []


def test_no_initiation_within_rekey_timeout_of_the_last() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.initiate(4.9, is_retry=False)
    assert sim.initiations == [0.0]
    sim.initiate(5.0, is_retry=False)
    assert sim.initiations == [0.0, 5.0]


def test_a_sent_response_counts_as_a_handshake_sent() -> None:
    sim = started()
    sim.timers.on_handshake_response_sent(10.0)
    sim.initiate(12.0, is_retry=False)
    assert sim.initiations == []
    sim.initiate(15.0, is_retry=False)
    assert sim.initiations == [15.0]


def test_expired_keypairs_allow_an_immediate_initiation() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.timers.on_keypairs_expired(1.0)
    sim.initiate(1.0, is_retry=False)
    assert sim.initiations == [0.0, 1.0]


# --- Keepalive ------------------------------------------------------------------------


def test_keepalive_10s_after_data_received_when_nothing_sent() -> None:
    sim = started()
    sim.timers.on_data_received(3.0)
    assert sim.timers.send_keepalive_at == 13.0
    assert sim.tick(12.9) == []
    assert sim.tick(13.0) == [A.SEND_KEEPALIVE]
    assert sim.keepalives == [13.0]


def test_no_keepalive_when_something_was_sent() -> None:
    sim = started()
    sim.timers.on_data_received(3.0)
    sim.timers.on_any_authenticated_packet_sent(4.0)
    assert sim.timers.send_keepalive_at is None
    assert sim.tick(20.0) == []


def need_another(t: PeerTimers) -> bool:  # a call, so mypy does not narrow it across due()
    return t.need_another_keepalive


def test_data_received_while_pending_asks_for_another_keepalive() -> None:
    sim = started()
    sim.timers.on_data_received(0.0)
    sim.timers.on_data_received(5.0)
    assert sim.timers.send_keepalive_at == 10.0  # not pushed back
    assert need_another(sim.timers)
    assert sim.timers.due(10.0) == [A.SEND_KEEPALIVE]
    assert not need_another(sim.timers)
    assert sim.timers.send_keepalive_at == 20.0


def test_a_start_asks_for_no_second_keepalive_not_even_one_asked_before_a_stop() -> None:
    # wireguard-go's timersStart clears needAnotherKeepalive. A keepalive the
    # peer could not send (no session, no endpoint: nothing sent cancels a
    # re-arm) is not tried again 10 s later unless data came while it was
    # pending, and a request for another made before a stop is forgotten.
    t = PeerTimers()
    t.start(0.0)
    assert not need_another(t)
    t.on_data_received(3.0)
    assert t.due(13.0) == [A.SEND_KEEPALIVE]  # (and not sent)
    assert t.send_keepalive_at is None
    t.on_data_received(14.0)
    t.on_data_received(15.0)
    assert need_another(t)
    t.stop()
    t.start(16.0)
    assert not need_another(t)
    t.on_data_received(17.0)
    assert t.due(27.0) == [A.SEND_KEEPALIVE]
    assert t.send_keepalive_at is None


# --- New handshake ---------------------------------------------------------------------


def test_new_handshake_15s_after_data_sent_without_reply() -> None:
    sim = started()
    sim.timers.on_data_sent(2.0, rng_1000)
    assert sim.timers.new_handshake_at == pytest.approx(17.332)
    assert sim.tick(17.0) == []
    assert sim.tick(17.332) == [A.NEW_HANDSHAKE]
    assert sim.initiations == [17.332]


def test_data_sent_while_pending_does_not_push_it_back() -> None:
    sim = started()
    sim.timers.on_data_sent(0.0, zero_rng)
    sim.timers.on_data_sent(10.0, zero_rng)
    assert sim.timers.new_handshake_at == 15.0


def test_any_authenticated_packet_received_cancels_new_handshake() -> None:
    sim = started()
    sim.timers.on_data_sent(0.0, zero_rng)
    sim.timers.on_any_authenticated_packet_received(14.0)
    assert sim.timers.new_handshake_at is None
    assert sim.tick(30.0) == []


# --- Wipe and persistent keepalive ---------------------------------------------------


def test_wipe_540s_after_the_last_session() -> None:
    sim = started()
    sim.timers.on_session_derived(10.0)
    sim.timers.on_session_derived(100.0)
    assert sim.tick(639.9) == []
    assert sim.tick(640.0) == [A.WIPE_KEYS]


def test_persistent_keepalive_interval() -> None:
    sim = started()
    sim.timers.persistent_keepalive_interval = 25
    sim.timers.on_any_authenticated_packet_traversal(1.0)
    assert sim.timers.persistent_keepalive_at == 26.0
    sim.run_until(100.0)
    # Each keepalive is itself a traversal, so it re-arms: one every 25 s.
    assert sim.keepalives == [26.0, 51.0, 76.0]


def test_persistent_keepalive_turned_off_before_expiry_sends_nothing() -> None:
    sim = started()
    sim.timers.persistent_keepalive_interval = 25
    sim.timers.on_any_authenticated_packet_traversal(0.0)
    sim.timers.persistent_keepalive_interval = 0
    assert sim.tick(25.0) == []
    assert sim.timers.next_deadline() is None


def test_persistent_keepalive_off_arms_nothing() -> None:
    sim = started()
    sim.timers.on_any_authenticated_packet_traversal(0.0)
    assert sim.timers.persistent_keepalive_at is None


@pytest.mark.parametrize("bad", [-1, 65536])
def test_persistent_keepalive_interval_range(bad: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        PeerTimers().persistent_keepalive_interval = bad


# --- Running -------------------------------------------------------------------------


def test_stopped_timers_arm_nothing() -> None:
    t = PeerTimers()
    t.persistent_keepalive_interval = 5
    t.on_data_sent(0.0, zero_rng)
    t.on_data_received(0.0)
    t.on_handshake_initiated(0.0, zero_rng)
    t.on_session_derived(0.0)
    t.on_any_authenticated_packet_traversal(0.0)
    assert t.next_deadline() is None
    assert t.due(1000.0) == []


def test_stop_cancels_everything() -> None:
    sim = started()
    sim.timers.persistent_keepalive_interval = 5
    sim.initiate(0.0, is_retry=False)
    sim.timers.on_data_sent(0.0, zero_rng)
    sim.timers.on_data_received(0.0)
    sim.timers.on_session_derived(0.0)
    sim.timers.stop()
    assert not sim.timers.running
    assert sim.timers.next_deadline() is None


def test_start_resets_counters() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.run_until(20.0)
    assert sim.timers.handshake_attempts == 4
    sim.timers.stop()
    sim.timers.start(21.0)
    assert sim.timers.handshake_attempts == 0
    assert sim.timers.last_sent_handshake == 15.0


def test_start_while_running_changes_nothing() -> None:
    sim = started()
    sim.initiate(0.0, is_retry=False)
    sim.run_until(10.0)
    sim.timers.start(11.0)
    assert sim.timers.handshake_attempts == 2
    assert sim.timers.last_sent_handshake == 10.0


# --- Rekey rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "initiator", "counter", "rekey"),
    [
        (120.0, True, 0, False),
        (120.001, True, 0, True),
        (179.0, False, 0, False),  # only the initiator rekeys on age
        (0.0, False, 2**60, False),
        (0.0, False, 2**60 + 1, True),
    ],
)
def test_keep_key_fresh_sending(age: float, initiator: bool, counter: int, rekey: bool) -> None:
    t = PeerTimers()
    assert t.keep_key_fresh_sending(1000.0 + age, keypair_created=1000.0, is_initiator=initiator,
                                    send_counter=counter) is rekey  # fmt: skip


def test_keep_key_fresh_receiving_once_per_session() -> None:
    t = PeerTimers()
    assert not t.keep_key_fresh_receiving(165.0, keypair_created=0.0, is_initiator=True)
    assert not t.keep_key_fresh_receiving(170.0, keypair_created=0.0, is_initiator=False)
    assert t.keep_key_fresh_receiving(165.5, keypair_created=0.0, is_initiator=True)
    assert t.sent_last_minute_handshake
    assert not t.keep_key_fresh_receiving(170.0, keypair_created=0.0, is_initiator=True)
    t.on_handshake_complete(171.0)
    assert t.keep_key_fresh_receiving(172.0, keypair_created=0.0, is_initiator=True)


# --- next_deadline agrees with due ------------------------------------------------------

EVENTS = st.sampled_from(
    ["data_sent", "data_received", "sent", "received", "initiated", "complete", "session", "traversal",
     "keepalive_on", "keepalive_off", "stop", "start"]
)  # fmt: skip


def apply_event(t: PeerTimers, event: str, now: float, rng: Callable[[int], bytes]) -> None:
    if event == "data_sent":
        t.on_data_sent(now, rng)
    elif event == "data_received":
        t.on_data_received(now)
    elif event == "sent":
        t.on_any_authenticated_packet_sent(now)
    elif event == "received":
        t.on_any_authenticated_packet_received(now)
    elif event == "initiated":
        t.on_handshake_initiated(now, rng)
    elif event == "complete":
        t.on_handshake_complete(now)
    elif event == "session":
        t.on_session_derived(now)
    elif event == "traversal":
        t.on_any_authenticated_packet_traversal(now)
    elif event == "keepalive_on":
        t.persistent_keepalive_interval = 7
    elif event == "keepalive_off":
        t.persistent_keepalive_interval = 0
    elif event == "stop":
        t.stop()
    else:
        t.start(now)


@given(st.lists(st.tuples(EVENTS, st.floats(0.0, 30.0)), max_size=30), st.integers(0, 2**32 - 1))
def test_next_deadline_agrees_with_due(steps: list[tuple[str, float]], seed: int) -> None:
    def rng(n: int) -> bytes:
        return seed.to_bytes(n, "little")

    t = PeerTimers()
    t.start(0.0)
    now = 0.0
    for event, dt in steps:
        now += dt
        # Whatever was due before this event fires now, as the glue would.
        while (deadline := t.next_deadline()) is not None and deadline <= now:
            assert t.due(deadline - 1e-6) == []
            t.due(deadline)
            after = t.next_deadline()
            assert after is None or after > deadline
        apply_event(t, event, now, rng)
        deadline = t.next_deadline()
        assert deadline is None or deadline > now
        assert t.due(now) == []


# --- The per-packet events -------------------------------------------------------------


def _state(t: PeerTimers) -> dict[str, object]:
    return {name: getattr(t, name) for name in PeerTimers.__slots__}


@given(
    running=st.booleans(),
    interval=st.sampled_from([0, 25]),
    armed=st.sampled_from([None, 3.0]),
    now=st.floats(0, 1e6),
)
def test_data_packet_events_are_the_three_in_order(
    running: bool, interval: int, armed: float | None, now: float
) -> None:
    # on_data_packet_sent/received (the data path's single calls) leave the
    # timers exactly as wireguard-go's three calls each, in its order, do.
    def sent(t: PeerTimers) -> None:
        t.on_data_packet_sent(now, rng_1000)

    def sent_in_three(t: PeerTimers) -> None:
        t.on_any_authenticated_packet_traversal(now)
        t.on_any_authenticated_packet_sent(now)
        t.on_data_sent(now, rng_1000)

    def received(t: PeerTimers) -> None:
        t.on_data_packet_received(now)

    def received_in_three(t: PeerTimers) -> None:
        t.on_any_authenticated_packet_traversal(now)
        t.on_any_authenticated_packet_received(now)
        t.on_data_received(now)

    for combined, sequence in ((sent, sent_in_three), (received, received_in_three)):
        pair = [PeerTimers(), PeerTimers()]
        for t in pair:
            if running:
                t.start(0.0)
            t.persistent_keepalive_interval = interval
            t._new_handshake = t._send_keepalive = armed
        combined(pair[0])
        sequence(pair[1])
        assert _state(pair[0]) == _state(pair[1])
