"""What a module declares: ``ModuleInfo``, ``ModuleClass``, ``ModCmd``.

Pure: no trio, no pyfuse3. A module (a package on the module path) defines,
as NetBSD's ``MODULE(class, name, required)`` macro does::

    MODULE = ModuleInfo(name="crandom", cls=ModuleClass.DRIVER, required=())

    async def modcmd(cmd: ModCmd, props: Props | None) -> None:
        if cmd == ModCmd.INIT: ...        # attach; raise DeviceError to fail
        elif cmd == ModCmd.FINI: ...      # detach; raise DeviceError(EBUSY) to refuse
        else:
            raise DeviceError(errno.ENOTTY)
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, final

from devfsd.errors import DeviceError

__all__ = ["MAXMODNAME", "ModCmd", "ModuleClass", "ModuleInfo", "Props", "validate_module_name"]

#: Module names are shorter than this (NetBSD ``MAXMODNAME``).
MAXMODNAME: Final = 32

#: Load-time properties: modload's ``-b`` (bool), ``-i`` (int), ``-s`` (str).
Props = Mapping[str, "str | int | bool"]


class ModuleClass(enum.IntEnum):
    """``modinfo_t.mi_class`` values (NetBSD ``modclass_t``)."""

    ANY = 0
    MISC = 1
    VFS = 2
    DRIVER = 3
    EXEC = 4
    SECMODEL = 5
    BUFQ = 6

    @property
    def label(self) -> str:
        """The word modstat shows in CLASS."""
        return self.name.lower()


class ModCmd(enum.IntEnum):
    """The commands a ``modcmd`` gets (NetBSD ``modcmd_t``)."""

    INIT = 0
    FINI = 1
    STAT = 2
    AUTOUNLOAD = 3


ModcmdFn = Callable[[ModCmd, "Props | None"], Awaitable[int | None]]


def validate_module_name(name: object) -> str:
    """Check a module name.

    Returns:
        ``name``.

    Raises:
        DeviceError: ``ENOENT`` (empty), ``ENAMETOOLONG`` (``MAXMODNAME`` or
            longer), ``EINVAL`` (not a string, or has ``/``, NUL, ``..``,
            white space or a leading ``.``).
    """
    if not isinstance(name, str):
        raise DeviceError(errno.EINVAL, "module name must be a string")
    if not name:
        raise DeviceError(errno.ENOENT)
    if len(name) >= MAXMODNAME:
        raise DeviceError(errno.ENAMETOOLONG)
    if "/" in name or "\0" in name or name.startswith(".") or any(c.isspace() for c in name):
        raise DeviceError(errno.EINVAL, f"invalid module name {name!r}")
    return name


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleInfo:
    """A module's declaration (NetBSD ``modinfo_t``).

    Attributes:
        name: unique module name, shorter than ``MAXMODNAME``.
        cls: the module class (``DRIVER`` for device drivers).
        required: names of modules that must be loaded first.
    """

    name: str
    cls: ModuleClass = ModuleClass.MISC
    required: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_module_name(self.name)
        req: object = self.required
        if isinstance(req, str):
            # NetBSD writes "a,b": accept it, store a tuple.
            object.__setattr__(self, "required", tuple(r for r in req.split(",") if r))
        for r in self.required:
            validate_module_name(r)
