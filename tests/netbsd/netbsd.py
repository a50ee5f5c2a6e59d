"""Shared pieces of the NetBSD ports: documented departures, k_helper's report.

A departure is NetBSD behaviour devfsd does not have, on purpose, and says
so in a man page's COMPATIBILITY section. ``departure(key)`` marks a test
that asserts NetBSD's behaviour as an expected failure (strict, and only by
``AssertionError``, so a crash still fails); ``test_meta.py`` checks that
each departure's phrase is in its page's COMPATIBILITY section.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

from devfsd.cdevsw import makedev

if TYPE_CHECKING:
    from devfsd.testing.mount import DevfsdMount

__all__ = ["DEPARTURES", "MODS", "Departure", "departure", "k_helper_report", "module", "report"]

#: The test modules (k_helper, k_helper2, ...).
MODS: Final = Path(__file__).resolve().parent.parent / "modules"
#: The project's man pages.
MAN: Final = Path(__file__).resolve().parent.parent.parent / "man"


@dataclass(frozen=True, slots=True, kw_only=True)
class Departure:
    """Where devfsd departs from NetBSD on purpose, and where it says so."""

    page: str
    #: Words found, white space aside, in the page's rendered COMPATIBILITY section.
    phrase: str
    why: str


DEPARTURES: Final = {
    "name-checked": Departure(
        page="modload.8",
        phrase="is refused with EINVAL before any search",
        why="a module name with white space, NUL or a leading dot never reaches a search",
    ),
    "json-props": Departure(
        page="modload.8",
        phrase="a JSON object, not an XML property list",
        why="properties cross the control socket as JSON",
    ),
    "modinfo-name": Departure(
        page="modload.8",
        phrase="fails to import (ENOEXEC)",
        why="MODULE = ModuleInfo(...) checks its own name when the module is imported",
    ),
    "long-key-modload": Departure(
        page="modload.8",
        phrase="a property name longer than 128 bytes",
        why="NetBSD's modload drops such a property without a word; devfsd refuses the load",
    ),
    "no-builtins": Departure(
        page="modunload.8",
        phrase="devfsd has no built-in modules",
        why="every devfsd module is loaded from a file; none can be disabled",
    ),
    "hash-id": Departure(
        page="devfs-mknod.8",
        phrase="or a lone # as a user or group, is invalid",
        why="C's strtol reads '#' (as '') as 0, which would chown to root by accident",
    ),
}


def departure(key: str) -> pytest.MarkDecorator:
    """Mark a test of NetBSD behaviour that devfsd departs from, on purpose."""
    d = DEPARTURES[key]
    return pytest.mark.xfail(
        strict=True,
        raises=AssertionError,
        reason=f"documented departure ({d.page} COMPATIBILITY): {d.why}",
    )


def report(m: DevfsdMount, driver: str = "k_helper") -> dict[str, str]:
    """A k_helper-style report, read through a node on the mount with cat(1).

    Returns:
        ``{"vendor.k_helper.present": "1", ...}``, or ``{}`` when the
        driver is not attached (the sysctl nodes are gone).
    """
    from devfsd.testing.mount import run

    majors = {n: mj for n, mj, attached in m.client().drivers() if attached}
    if driver not in majors:
        return {}
    node = m.path / driver
    if not node.exists():
        os.mknod(node, stat.S_IFCHR | 0o444, makedev(majors[driver], 0))
    r = run(["cat", str(node)], timeout=10)
    assert r.returncode == 0, r.stderr
    out: dict[str, str] = {}
    for line in r.stdout.decode().splitlines():
        name, _, value = line.partition(" = ")
        out[name] = value
    return out


def k_helper_report(m: DevfsdMount) -> dict[str, str]:
    """k_helper's sysctl nodes, without the ``vendor.k_helper.`` prefix."""
    prefix = "vendor.k_helper."
    return {k[len(prefix) :]: v for k, v in report(m).items() if k.startswith(prefix)}


def module(d: Path, name: str, required: object = (), *, declared: str | None = None) -> None:
    """Write module ``name`` (a MISC module that does nothing) into ``d``."""
    (d / name).mkdir()
    (d / name / "__init__.py").write_text(
        "from devfsd.kern import ModuleClass, ModuleInfo\n"
        f"MODULE = ModuleInfo(name={declared or name!r}, cls=ModuleClass.MISC, required={required!r})\n"
        "async def modcmd(cmd, props):\n"
        "    return None\n"
    )
