"""devfsd._trioloop.fast_instruments: trio's instruments keep working on the swapped-in dict."""

from __future__ import annotations

import pytest
import trio
import trio.abc
from trio._core._run import GLOBAL_RUN_CONTEXT

from devfsd._trioloop import fast_instruments


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0
        self.spawned: list[str] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned.append(task.name)


def test_instruments_given_to_run_and_added_later_are_called() -> None:
    early, late = Steps(), Steps()

    async def main() -> None:
        assert fast_instruments()
        # A dict: ``in`` at C speed, the point of the swap.
        instruments: object = GLOBAL_RUN_CONTEXT.runner.instruments
        assert isinstance(instruments, dict)
        assert not fast_instruments()  # already swapped: left as it is
        trio.lowlevel.add_instrument(late)
        async with trio.open_nursery() as n:
            n.start_soon(trio.sleep, 0, name="child")
        trio.lowlevel.remove_instrument(late)
        before = late.steps
        await trio.lowlevel.checkpoint()
        assert late.steps == before  # removed: no longer called
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(late)

    trio.run(main, instruments=[early])
    assert early.steps > 0 and "child" in early.spawned
    assert late.steps > 0 and "child" in late.spawned


def test_outside_trio_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        fast_instruments()
