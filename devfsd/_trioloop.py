"""Making trio's run loop cheaper for a daemon that handles every request in it.

Trio checks for instruments (``trio.abc.Instrument``) at every task step,
every reschedule and every I/O wait, with ``"hook" in runner.instruments``.
``runner.instruments`` is a ``collections.UserDict``, so each of those
checks is a Python-level ``__contains__`` call: about 30 calls for every
packet a tunwg node moves, on a path where a Python daemon woken after a
pause pays for every call several times over (bench/README.md, tunwg,
"Round-trip time"). ``fast_instruments`` swaps in a ``dict`` subclass with
the same contents and methods, whose ``in`` is the C one: one packet's trip
through two cold tunwg daemons (``bench/bench_oneway.py``) 0.94-0.96x.

This touches trio's private run-loop state (trio is pinned to 0.35.x in
pyproject.toml for that reason, as for ``devfsd.cdevsw._wait``): anything
not as expected leaves the loop as it is.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from trio._core._instrumentation import Instruments
from trio._core._run import GLOBAL_RUN_CONTEXT

__all__ = ["fast_instruments"]

log = logging.getLogger(__name__)


class _DictInstruments(dict[str, dict[Any, None]]):
    """``trio._core._instrumentation.Instruments`` on a plain ``dict``."""

    __slots__ = ()

    @property
    def data(self) -> dict[str, dict[Any, None]]:
        return self

    add_instrument = Instruments.add_instrument
    remove_instrument = Instruments.remove_instrument
    call = Instruments.call


def fast_instruments() -> bool:
    """Give the running trio loop C-speed instrument checks; True if done.

    Call from inside ``trio.run``. Instruments added before or after keep
    working (``trio.lowlevel.add_instrument`` goes to the new object).
    """
    trio.lowlevel.current_task()  # RuntimeError outside trio.run
    runner = getattr(GLOBAL_RUN_CONTEXT, "runner", None)
    old = getattr(runner, "instruments", None)
    if type(old) is not Instruments:
        log.debug("trio's instruments are %r: left as they are", type(old))
        return False
    runner.instruments = _DictInstruments(old.data)  # type: ignore[union-attr]
    return True
