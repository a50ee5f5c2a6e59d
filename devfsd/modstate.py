"""modload/modunload with their rows in the state directory, nothing half-done.

A load writes its ``loading`` mark first (durably: a crash while the
module's code runs leaves the mark, and the next start quarantines the
module), runs the load, then records the module and clears the mark in one
transaction, or, with a ``grace`` (the daemon's ``LOAD_GRACE``), records it
at once and clears the mark that long after or when the next load begins,
so that a module whose thread kills the daemon just after INIT returned is
quarantined too (a clean stop clears the mark left). A state write that fails fails the call with its errno
(``ENOSPC``, ``EROFS``, ``EIO``) and leaves the module as it was: a load
whose record fails is unloaded again. An unload drops the row first and puts
it back if the module refuses to go.

Cancellation (a control request whose client went): a load cancelled
before the module is in clears its mark and records nothing; once it is
in, the record and the mark's clearing are one synchronous transaction (no
checkpoint, nothing to cut in half), and the unload of a module whose
record failed is shielded. An unload cancelled in FINI puts the row back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Final

import trio

from devfsd.state import StateError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from devfsd.kern.loader import LoadedModule, ModuleLoader
    from devfsd.state import StateStore

__all__ = ["LOAD_GRACE", "expected_name", "load_recorded", "unload_recorded"]

log = logging.getLogger(__name__)

#: Seconds a loading mark outlives the load it marks, in the daemon (or
#: until the next load begins).
LOAD_GRACE: Final = 5.0

#: Loads one at a time per state, so that their marks do not overlap.
_locks: weakref.WeakKeyDictionary[StateStore, trio.Lock] = weakref.WeakKeyDictionary()


def expected_name(spec: str) -> str:
    """The name a module ``spec`` loads under, as far as the spec says
    (a path's last component, less ``.py``)."""
    if "/" not in spec:
        return spec
    base = os.path.basename(os.path.normpath(spec))
    return base.removesuffix(".py")


async def load_recorded(
    loader: ModuleLoader,
    state: StateStore | None,
    spec: str,
    props: Mapping[str, Any] | None,
    *,
    record: bool = True,
    uid: int = 0,
    isolated: bool | None = None,
    grace: float = 0.0,
) -> LoadedModule:
    """``loader.load(spec, props)``, marked and recorded in ``state``
    (``record=False``: marked only, for modules.conf's, which are not state).
    ``uid`` and ``isolated`` go to ``loader.load``. With ``grace`` (a trio
    run needed), the mark is cleared that many seconds after the load.

    Raises:
        DeviceError: the load's errors; ``StateError`` if a state write
            failed (the module is then not loaded).
    """
    if state is None:
        return await loader.load(spec, props, uid=uid, isolated=isolated)
    lock = _locks.get(state)
    if lock is None:
        lock = _locks[state] = trio.Lock()
    async with lock:
        return await _load_marked(loader, state, spec, props, record, uid, isolated, grace)


async def _load_marked(
    loader: ModuleLoader,
    state: StateStore,
    spec: str,
    props: Mapping[str, Any] | None,
    record: bool,
    uid: int,
    isolated: bool | None,
    grace: float,
) -> LoadedModule:
    # One mark at a time: the last load's (a crash in its grace is the last
    # module's doing more likely than an earlier one's).
    state.mark_loading(spec, expected_name(spec), only=True)
    try:
        mod = await loader.load(spec, props, uid=uid, isolated=isolated)
    except BaseException:
        with contextlib.suppress(StateError):  # a mark left behind quarantines it: safe
            state.clear_loading(spec)
        raise
    try:
        if record:
            state.put_module(mod.name, spec, mod.props, isolated=mod.host is not None, keep_mark=grace > 0)
        elif not grace:
            state.clear_loading(spec)
    except StateError as exc:
        log.error("module %s: %s; unloading it again", mod.name, exc)
        try:
            # Shielded: a module loaded but not recorded must go, even if
            # the modload asking for it has been cancelled meanwhile.
            with trio.CancelScope(shield=True):
                await loader.unload(mod.name)
        finally:
            with contextlib.suppress(StateError):
                state.clear_loading(spec)
        raise
    if grace:
        trio.lowlevel.spawn_system_task(_clear_later, state, spec, grace)
    return mod


async def _clear_later(state: StateStore, spec: str, grace: float) -> None:
    """Clear ``spec``'s mark after ``grace`` seconds (cancelled: the daemon
    stops, and ``finish`` clears it)."""
    await trio.sleep(grace)
    try:
        state.clear_loading(spec)
    except StateError as exc:  # left: the next start quarantines it, which is safe
        log.error("module %s: %s", spec, exc)


async def unload_recorded(loader: ModuleLoader, state: StateStore | None, name: str) -> None:
    """``loader.unload(name)`` and its row dropped; for a module not loaded
    but quarantined, only the row (the quarantine is lifted).

    Raises:
        DeviceError: the unload's errors (``ENOENT``: neither loaded nor
            quarantined); ``StateError`` if the state write failed (the
            module is then still loaded).
    """
    if state is None:
        await loader.unload(name)
        return
    if name not in loader.modules:
        if name in state.quarantined() and state.drop_module(name):
            log.info("module %s: quarantine lifted", name)
            return
        await loader.unload(name)  # ENOENT, or the name's own error
        return
    row = state.module_row(name)
    isolated = name in state.isolated()
    state.drop_module(name)
    try:
        await loader.unload(name)
    except BaseException:
        if row is not None:
            with contextlib.suppress(StateError):
                state.put_module(name, *row, isolated=isolated)
        raise
