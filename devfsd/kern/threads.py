"""Running CPU-heavy driver work off the trio thread.

Entry points run on the daemon's one trio thread; a driver that computes
for long (crandom permuting a MiB) would hold up every other request.
``run_in_thread`` runs a plain function in a worker thread and awaits it,
as ``trio.to_thread.run_sync`` does, which is all it is: drivers import the
driver API only, so it is offered here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_in_thread"]

T = TypeVar("T")


async def run_in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in a worker thread and return its result.

    Caller must pass data the function may use without locks (a snapshot):
    other entry points run meanwhile. The call is not cancelled halfway; a
    cancelled caller (a signal, an unload) waits for the function to end.
    Exceptions from ``fn`` propagate.
    """
    return await trio.to_thread.run_sync(fn, *args)
