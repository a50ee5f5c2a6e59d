"""Replay filter: wireguard-go's replay_test.go sequence step by step, and a slow reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.tunwg.wg.constants import REJECT_AFTER_MESSAGES
from modules.tunwg.wg.replay import WINDOW, ReplayFilter

T = WINDOW + 1
L = REJECT_AFTER_MESSAGES

# (counter, accepted), in order, on one fresh filter (reference section 9)
SEQUENCE = [
    (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
    (T, True), (T - 1, True), (T - 1, False), (T - 2, True), (2, True), (2, False),
    (T + 16, True), (3, False), (T + 16, False),
    (4 * T, True), (4 * T - (T - 1), True), (10, False), (4 * T - T, False),
    (4 * T - (T + 1), False), (4 * T - (T - 2), True), (4 * T + 1 - T, False), (0, False),
    (L, False), (L - 1, True), (L, False), (L - 1, False), (L - 2, True),
    (L + 1, False), (L + 2, False), (L - 2, False), (L - 3, True), (0, False),
]  # fmt: skip


def test_window_is_8128() -> None:
    assert WINDOW == 8128


def test_wireguard_go_sequence() -> None:
    f = ReplayFilter()
    for step, (counter, accepted) in enumerate(SEQUENCE, 1):
        assert f.validate_counter(counter) is accepted, f"step {step}: counter {counter}"


def _fresh_with_last(x: int) -> ReplayFilter:
    f = ReplayFilter()
    assert f.validate_counter(x)
    return f


def test_window_edge() -> None:
    x = 100_000
    assert _fresh_with_last(x).validate_counter(x - WINDOW)
    assert not _fresh_with_last(x).validate_counter(x - WINDOW - 1)


def test_reset_forgets() -> None:
    f = _fresh_with_last(5)
    f.reset()
    assert f.validate_counter(5)


def test_limit_argument() -> None:
    assert not ReplayFilter().validate_counter(10, limit=10)
    assert ReplayFilter().validate_counter(9, limit=10)


# wireguard-go's bulk tests: (ascending or descending runs, then probes)
def test_bulk_ascending_then_zero() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(1, WINDOW + 1))
    assert f.validate_counter(0)
    assert not f.validate_counter(0)


def test_bulk_ascending_past_window_loses_zero() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(2, WINDOW + 2))
    assert f.validate_counter(1)
    assert not f.validate_counter(0)


def test_bulk_descending() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(WINDOW + 1, 0, -1))


def test_bulk_descending_then_zero_out_of_window() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(WINDOW + 2, 1, -1))
    assert not f.validate_counter(0)


def test_big_jump_clears_whole_ring() -> None:
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(200))
    assert f.validate_counter(10**9)
    assert f.validate_counter(10**9 - 1)
    assert not f.validate_counter(199)


def test_jump_of_a_whole_ring_clears_the_block_it_lands_on() -> None:
    # block 0 and block 1280 share ring slot 0: the jump must clear it
    f = ReplayFilter()
    assert all(f.validate_counter(i) for i in range(64))
    base = 64 * 128 * 10
    assert f.validate_counter(base + 63)
    assert all(f.validate_counter(base + i) for i in range(63))


class SlowFilter:
    """The definition: below the limit, not seen, not more than WINDOW behind the greatest."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.last = 0

    def validate(self, counter: int) -> bool:
        if counter >= L or counter in self.seen or self.last - counter > WINDOW:
            return False
        self.seen.add(counter)
        self.last = max(self.last, counter)
        return True


@given(st.lists(st.integers(min_value=0, max_value=40_000), max_size=300))
def test_matches_slow_reference(counters: list[int]) -> None:
    fast, slow = ReplayFilter(), SlowFilter()
    for c in counters:
        assert fast.validate_counter(c) == slow.validate(c), c


@pytest.mark.parametrize("start", [0, 63, 64, 8127, 8128, 2**63])
def test_matches_slow_reference_dense(start: int) -> None:
    fast, slow = ReplayFilter(), SlowFilter()
    order = [start + (i * 7919) % 20_000 for i in range(20_000)]
    for c in order + order[:100]:
        assert fast.validate_counter(c) == slow.validate(c), c
