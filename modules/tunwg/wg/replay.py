"""The replay filter: a sliding window over received counters (RFC 6479 style).

Pure; imports only this package's constants. A transcription of
wireguard-go's ``replay/replay.go`` (reference section 5): a ring of 128
64-bit blocks, of which 127 are the window, so a counter up to ``WINDOW``
(8128) behind the greatest seen can still arrive once, late. The bitmap
is a Python list of ints, each used as a u64.

Caller must validate only after the message authenticated: a forged
counter must not move the window.
"""

from __future__ import annotations

from typing import Final, final

from .constants import (
    REJECT_AFTER_MESSAGES,
    REPLAY_BLOCK_BITS,
    REPLAY_BLOCK_BITS_LOG,
    REPLAY_RING_BLOCKS,
    REPLAY_WINDOW,
)

__all__ = ["WINDOW", "ReplayFilter"]

WINDOW: Final = REPLAY_WINDOW  # 8128
_BLOCK_MASK: Final = REPLAY_RING_BLOCKS - 1
_BIT_MASK: Final = REPLAY_BLOCK_BITS - 1


@final
class ReplayFilter:
    """Accepts each counter at most once, and none more than ``WINDOW`` behind the greatest."""

    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = 0
        self._ring = [0] * REPLAY_RING_BLOCKS

    def reset(self) -> None:
        """Forget every counter seen (a fresh keypair)."""
        self._last = 0
        self._ring = [0] * REPLAY_RING_BLOCKS

    def validate_counter(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """Mark ``counter`` as seen; say whether it was new.

        Args:
            counter: the authenticated message's counter (u64).
            limit: counters at or above this are refused (REJECT_AFTER_MESSAGES).
        Returns:
            True if ``counter`` is below ``limit``, within the window and not
            seen before (it is now); False otherwise.
        """
        if counter >= limit:
            return False
        ring = self._ring
        index_block = counter >> REPLAY_BLOCK_BITS_LOG
        if counter > self._last:
            # move the window forward, clearing the blocks it passes over (all, at most)
            current = self._last >> REPLAY_BLOCK_BITS_LOG
            diff = min(index_block - current, REPLAY_RING_BLOCKS)
            for i in range(current + 1, current + diff + 1):
                ring[i & _BLOCK_MASK] = 0
            self._last = counter
        elif self._last - counter > WINDOW:
            return False  # behind the window
        # check and set the bit
        index_block &= _BLOCK_MASK
        old = ring[index_block]
        new = old | (1 << (counter & _BIT_MASK))
        ring[index_block] = new
        return new != old
