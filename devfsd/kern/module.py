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
from devfsd.kern.caps import parse_caps

__all__ = [
    "MAXMODNAME",
    "MODULE_MAX_DEPTH",
    "ModCmd",
    "ModuleClass",
    "ModuleInfo",
    "Props",
    "parse_required",
    "required_name_fits",
    "validate_module_name",
]

#: Module names are shorter than this (NetBSD ``MAXMODNAME``).
MAXMODNAME: Final = 32
#: Loads nested deeper than this (a module, its requirement, theirs, ...)
#: fail ``EMLINK``: kern_module.c 1.106's limit, which NetBSD later dropped.
MODULE_MAX_DEPTH: Final = 6

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
            white space, another character that does not print (a name
            is printed by modstat and logged: no terminal escape
            sequences) or a leading ``.``).
    """
    if not isinstance(name, str):
        raise DeviceError(errno.EINVAL, "module name must be a string")
    if not name:
        raise DeviceError(errno.ENOENT)
    if len(name) >= MAXMODNAME:
        raise DeviceError(errno.ENAMETOOLONG)
    if "/" in name or not name.isprintable() or name.startswith(".") or any(c.isspace() for c in name):
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
        privileged: load properties only root may give: those that name
            paths or otherwise make the daemon (root) touch the file system
            (tunwg's ``keylog`` and ``sockdir``). A control-group member who
            is not root giving one gets ``EPERM`` (the loader checks it
            against the caller's ``SO_PEERCRED`` before INIT).
        caps: the Linux capabilities the module needs when it is isolated
            (``"net_admin"`` for ``CAP_NET_ADMIN``; ``devfsd.kern.caps``): a
            host started as root keeps these (and those root adds with
            ``modload -I -s caps=...``) and drops every other before the
            module's code runs. The daemon reads them from the module's
            source, without running it, so write them as a literal in a
            top-level ``MODULE = ModuleInfo(..., caps=(...))`` (a module
            whose import declares others is refused, ``EPERM``). In
            process they mean nothing: the module runs in the daemon.
    """

    name: str
    cls: ModuleClass = ModuleClass.MISC
    required: tuple[str, ...] = field(default=())
    privileged: tuple[str, ...] = field(default=())
    caps: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_module_name(self.name)
        object.__setattr__(self, "required", parse_required(self.required))
        for r in self.required:
            # A name too long to be required is refused at load time
            # (EINVAL), where kern_module.c refuses it.
            if required_name_fits(r):
                validate_module_name(r)
        priv: object = self.privileged
        if isinstance(priv, str):
            object.__setattr__(self, "privileged", tuple(p for p in priv.split(",") if p))
        names: tuple[object, ...] = self.privileged
        if not all(isinstance(p, str) and p for p in names):
            raise DeviceError(errno.EINVAL, "privileged: property names, as strings")
        object.__setattr__(self, "caps", parse_caps(self.caps, f"module {self.name}: caps"))


def required_name_fits(name: str) -> bool:
    """Whether ``name`` may be required: kern_module.c copies it into
    ``buf[MAXMODNAME]`` with its NUL and refuses ``len >= MAXMODNAME``,
    so a required name is at most ``MAXMODNAME - 2`` bytes (30), one less
    than a module's own name."""
    return len(name.encode("utf-8", "surrogatepass")) + 1 < MAXMODNAME


def parse_required(required: object) -> tuple[str, ...]:
    """Read a requirement list as NetBSD's ``module_do_load`` walks ``mi_required``.

    ``"a,b"`` (NetBSD's form) or a sequence of names. One leading comma
    before an item is skipped (``",a"`` requires ``a``); an empty item ends
    the list (``"a,,b"`` and ``("a", "", "b")`` require only ``a``).

    Raises:
        DeviceError: ``EINVAL`` if it is neither a string nor a sequence of
            strings.
    """
    if isinstance(required, str):
        items: list[str] = []
        i = 0
        while i < len(required):
            if required[i] == ",":
                i += 1
            j = required.find(",", i)
            j = len(required) if j < 0 else j
            if i == j:
                break
            items.append(required[i:j])
            i = j
        return tuple(items)
    if not isinstance(required, tuple | list) or not all(isinstance(r, str) for r in required):
        raise DeviceError(errno.EINVAL, "required must be a string or a sequence of names")
    out: list[str] = []
    for r in required:
        if not r:
            break
        out.append(r)
    return tuple(out)
