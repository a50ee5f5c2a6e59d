"""modload/modunload with their rows in the state directory, nothing half-done.

A load writes its ``loading`` mark first (durably: a crash while the
module's code runs leaves the mark, and the next start quarantines the
module), runs the load, then records the module and clears the mark in one
transaction. A state write that fails fails the call with its errno
(``ENOSPC``, ``EROFS``, ``EIO``) and leaves the module as it was: a load
whose record fails is unloaded again. An unload drops the row first and puts
it back if the module refuses to go.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from devfsd.state import StateError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from devfsd.kern.loader import LoadedModule, ModuleLoader
    from devfsd.state import StateStore

__all__ = ["load_recorded", "unload_recorded"]

log = logging.getLogger(__name__)


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
) -> LoadedModule:
    """``loader.load(spec, props)``, marked and recorded in ``state``
    (``record=False``: marked only, for modules.conf's, which are not state).
    ``uid`` and ``isolated`` go to ``loader.load``.

    Raises:
        DeviceError: the load's errors; ``StateError`` if a state write
            failed (the module is then not loaded).
    """
    if state is None:
        return await loader.load(spec, props, uid=uid, isolated=isolated)
    state.mark_loading(spec, expected_name(spec))
    try:
        mod = await loader.load(spec, props, uid=uid, isolated=isolated)
    except BaseException:
        with contextlib.suppress(StateError):  # a mark left behind quarantines it: safe
            state.clear_loading(spec)
        raise
    try:
        if not record:
            state.clear_loading(spec)
            return mod
        state.put_module(mod.name, spec, mod.props, isolated=mod.host is not None)
    except StateError as exc:
        log.error("module %s: %s; unloading it again", mod.name, exc)
        try:
            await loader.unload(mod.name)
        finally:
            with contextlib.suppress(StateError):
                state.clear_loading(spec)
        raise
    return mod


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
