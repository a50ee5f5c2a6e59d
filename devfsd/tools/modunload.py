"""modunload(8): unload modules from devfsd.

``modunload [-c path] name ...`` unloads each named module in turn and
stops at the first failure (``modunload: crandom: Device or resource
busy``, exit 1), as NetBSD's ``sbin/modunload/main.c`` does. Names are
module names as modstat shows them, not files.

NetBSD's modunload takes no options at all (every argument is a name);
devfsd's needs ``-c``, so it parses options with getopt: options come
first, and ``--`` lets a name start with ``-``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from devfsd.control.client import Client
from devfsd.errors import ControlError
from devfsd.tools import EXIT_SUCCESS, Getopt, GetoptError, failed, interruptible, long_option, usage

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PROG", "USAGE", "main"]

PROG: Final = "modunload"
USAGE: Final = "Usage: modunload [-c path] <module_name ...>\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run modunload; returns the exit status (^C: killed by SIGINT, ``interrupted``)."""
    return interruptible(_main, argv)


def _main(argv: Sequence[str]) -> int:
    if (asked := long_option(PROG, USAGE, "modunload(8)", argv)) is not None:
        return asked
    control: str | None = None
    opts = Getopt(argv, "c:")
    try:
        for _opt, arg in opts:
            control = arg
    except GetoptError as exc:
        return usage(PROG, USAGE, str(exc))
    if not opts.operands:
        return usage(PROG, USAGE)
    client = Client(control)
    for name in opts.operands:
        try:
            client.modunload(name)
        except (ControlError, UnicodeError) as exc:
            return failed(PROG, name, client.path, exc)
    return EXIT_SUCCESS
