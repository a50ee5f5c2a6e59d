"""Linux capability names, as a module declares them (``ModuleInfo.caps``)
and root gives them at load (``modload -I -s caps=net_admin,net_raw``).

Pure. A name is the kernel's without its ``CAP_`` prefix, in any case
(``net_admin``, ``CAP_NET_ADMIN``); ``parse_caps`` gives each in its
canonical form (``net_admin``), in the kernel's order, once. Which of them
the running kernel has is the isolating side's business
(``devfsd.isolate.confine``: ``/proc/sys/kernel/cap_last_cap``).
"""

from __future__ import annotations

import errno
from typing import Final

from devfsd.errors import DeviceError

__all__ = ["CAP_NAMES", "cap_number", "parse_caps"]

#: <linux/capability.h>, by number: ``CAP_NAMES[12]`` is ``net_admin``.
CAP_NAMES: Final = (
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
)
_NUMBERS: Final = {name: i for i, name in enumerate(CAP_NAMES)}


def cap_number(name: str) -> int:
    """The number of the canonical capability name ``name`` (``KeyError`` if none)."""
    return _NUMBERS[name]


def parse_caps(value: object, what: str = "caps") -> tuple[str, ...]:
    """Capability names: ``"net_admin,net_raw"`` or a sequence of names.

    Empty items are skipped; ``cap_`` prefixes and case do not matter.

    Returns:
        The canonical names, each once, in the kernel's order.

    Raises:
        DeviceError: ``EINVAL`` for another type or an unknown name
            (``what`` begins the message).
    """
    items: list[object]
    if isinstance(value, str):
        items = list(value.split(","))
    elif isinstance(value, tuple | list):
        items = list(value)
    else:
        raise DeviceError(errno.EINVAL, f"{what}: capability names, as a string or a sequence of strings")
    found: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise DeviceError(errno.EINVAL, f"{what}: capability names must be strings")
        name = item.strip().lower()
        if not name:
            continue
        name = name.removeprefix("cap_")
        if name not in _NUMBERS:
            raise DeviceError(errno.EINVAL, f"{what}: no capability {item.strip()!r}")
        found.add(_NUMBERS[name])
    return tuple(CAP_NAMES[i] for i in sorted(found))
