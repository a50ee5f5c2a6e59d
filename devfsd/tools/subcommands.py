"""``devfsd WORD ...``: the developer subcommands, dispatched by devfsd's main.

``devfsd new-module NAME [DIR]`` writes a module skeleton
(``devfsd.tools.newmodule``); ``devfsd regress [-Iv] [-m M]... SCRIPT...``
runs shell scenarios against fresh mounts (``devfsd.testing.regress``);
``devfsd trace [-b events] [-c path] [-n count] node|-m driver`` prints
the calls reaching a driver as they happen (``devfsd.tools.trace``);
``devfsd unit [MOUNTPOINT]`` and ``devfsd logrotate [FILE]`` print a
systemd unit and a logrotate file for this installation
(``devfsd.service.unit``).
Any other first argument is a mountpoint; one named like a subcommand is
given with a ``/`` (``./new-module``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["EPILOG", "NAMES", "main"]

NAMES: Final = frozenset({"new-module", "regress", "trace", "unit", "logrotate"})

EPILOG: Final = (
    "subcommands: 'devfsd new-module NAME [DIR]' writes a driver module skeleton with tests; "
    "'devfsd regress [-Iv] [-m M]... SCRIPT...' runs shell scenarios against fresh mounts; "
    "'devfsd trace [-b events] [-c path] [-n count] node|-m driver' prints the calls reaching a driver; "
    "'devfsd unit [MOUNTPOINT]' and 'devfsd logrotate [FILE]' print a systemd unit and a logrotate file. "
    "A mountpoint named like a subcommand is given as ./NAME."
)


def main(argv: Sequence[str]) -> int:
    """Run subcommand ``argv[0]`` with the rest of ``argv``."""
    word, rest = argv[0], list(argv[1:])
    if rest[:1] == ["--version"]:  # --help is each subcommand's own
        from devfsd.tools import long_option

        long_option(f"devfsd {word}", "", "devfsd(8)", rest)
        return 0
    if word == "new-module":
        from devfsd.tools import newmodule

        return newmodule.main(rest)
    if word in ("unit", "logrotate"):
        from devfsd.service import unit

        return unit.main(word, rest)
    if word == "trace":
        from devfsd.tools import trace

        return trace.main(rest)
    assert word == "regress", word
    from devfsd.testing import regress

    return regress.main(rest)
