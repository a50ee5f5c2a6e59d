"""modstat(8): show devfsd's modules.

``modstat [-Aaek] [-c path] [-n name | name]`` prints one row per module,
sorted by name, in the column layout of NetBSD's ``sbin/modstat/main.c``::

    NAME             CLASS    SOURCE   FLAG  REFS    SIZE REQUIRES
    crandom          driver   filesys  -        0    2048 -

The NAME column is as wide as the longest name of *all* modules (at least
16), also when only one row is shown. The header ends with a space after
REQUIRES (not shown above); rows do not. SIZE is ``-`` for 0, REQUIRES is
comma-joined or ``-``. A name shows only that row; an unknown name shows
the header alone and exits 0.

``-k`` adds an ADDRESS column. NetBSD prints the kernel address there (0
when the caller may not see kernel addresses); a Python module has none,
so devfsd always prints 0.

``-A``, ``-a`` and ``-e`` answer a question on stderr and exit, as NetBSD's:

- ``-a``: can modules be autoloaded? ``Modules can be autoloaded.`` once the
  daemon answers; NetBSD's kauth question has no devfsd counterpart.
- ``-A``: the same, and also reads the daemon's autoload setting
  (NetBSD's ``kern.module.autoload``): ``Modules can be autoloaded, but
  kern.module.autoload = 0.`` when it is off.
- ``-e``: may the caller load modules? Loading goes through the control
  socket, so ``You can load modules.`` if the daemon answers us, and
  ``You are not allowed to load modules right now.`` (exit 1) if the socket
  or the daemon refuses us (``EACCES``, ``EPERM``).

A daemon that cannot be reached is reported as ``modstat: SOCKET:
strerror`` (exit 1) by all of them.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, final

from devfsd.control.client import Client
from devfsd.errors import ControlError
from devfsd.tools import (
    EXIT_SUCCESS,
    Getopt,
    GetoptError,
    UsageError,
    err,
    errx,
    failed,
    interruptible,
    long_option,
    out,
    usage,
    warnx,
)

__all__ = ["PROG", "USAGE", "ModstatArgs", "format_table", "main", "parse_args"]

PROG: Final = "modstat"
USAGE: Final = "Usage: modstat [-Aaek] [-c path] [-n name | name]\n"

#: NAME is at least this wide.
MIN_NAME_WIDTH: Final = 16

_DENIED: Final = (errno.EPERM, errno.EACCES)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ModstatArgs:
    """What the command line asks for."""

    #: ``"A"``, ``"a"`` or ``"e"`` (the last one given), or ``None`` to list.
    question: str | None = None
    #: ``-k``: add the ADDRESS column.
    address: bool = False
    #: ``-n name`` or the operand: show only this module.
    name: str | None = None
    control: str | None = None


def parse_args(argv: Sequence[str]) -> ModstatArgs:
    """Parse modstat's arguments.

    Raises:
        UsageError: a bad option, or operands beyond one name (two names, or
            ``-n`` and a name).
    """
    question: str | None = None
    address = False
    name: str | None = None
    control: str | None = None
    opts = Getopt(argv, "Aac:ekn:")
    try:
        for opt, arg in opts:
            if opt in ("A", "a", "e"):
                question = opt
            elif opt == "k":
                address = True
            elif opt == "n":
                name = arg
            else:  # "c"
                control = arg
    except GetoptError as exc:
        raise UsageError(str(exc)) from None
    if len(opts.operands) == 1 and name is None:
        name = opts.operands[0]
    elif opts.operands:
        raise UsageError()
    return ModstatArgs(question=question, address=address, name=name, control=control)


def _width(text: str) -> int:
    # printf pads by bytes: measure as the C code does.
    return len(text.encode("utf-8", "surrogateescape"))


def _ljust(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _requires(value: object) -> str:
    if isinstance(value, str):
        return value or "-"
    if isinstance(value, Sequence):
        return ",".join(str(v) for v in value) or "-"
    return "-"


def format_table(
    modules: Sequence[Mapping[str, Any]], *, name: str | None = None, address: bool = False
) -> str:
    """modstat's output for the daemon's rows.

    Args:
        modules: every module, as ``Client.modstat()["modules"]`` gives them
            (``name class source flags refs size requires``).
        name: show only this module's row (none if it is absent).
        address: add the ADDRESS column (always 0 here).
    """
    rows = sorted(modules, key=lambda m: str(m["name"]).encode("utf-8", "surrogateescape"))
    w = max([MIN_NAME_WIDTH, *(_width(str(m["name"])) for m in rows)])
    header = f"{_ljust('NAME', w)} {'CLASS':<8} {'SOURCE':<8} {'FLAG':<4} {'REFS':>5} "
    if address:
        header += f"{'ADDRESS':<16} "
    lines = [header + f"{'SIZE':>7} {'REQUIRES'} \n"]
    for m in rows:
        if name is not None and m["name"] != name:
            continue
        size = int(m.get("size") or 0)
        cls = str(m.get("class", "UNKNOWN"))
        source = str(m.get("source", "UNKNOWN"))
        flags = str(m.get("flags") or "-")
        refs = int(m.get("refs", 0))
        line = f"{_ljust(str(m['name']), w)} {cls:<8} {source:<8} {flags:<4} {refs:>5} "
        if address:
            line += f"{0:<16x} "
        line += f"{str(size) if size else '-':>7} {_requires(m.get('requires'))}\n"
        lines.append(line)
    return "".join(lines)


def _answer(client: Client, question: str) -> int:
    """``-A``, ``-a`` or ``-e``: the answer on stderr, and the exit status."""
    try:
        if question == "e":
            client.ping()
        else:
            autoload = bool(client.modstat().get("autoload", True))
    except ControlError as exc:
        if exc.errno in _DENIED:
            if question == "e":
                return errx(PROG, "You are not allowed to load modules right now.")
            return errx(PROG, "Modules can not be autoloaded right now.")
        return failed(PROG, client.path, client.path, exc)
    if question == "e":
        warnx(PROG, "You can load modules.")
    elif question == "A" and not autoload:
        warnx(PROG, "Modules can be autoloaded, but kern.module.autoload = 0.")
    else:
        warnx(PROG, "Modules can be autoloaded.")
    return EXIT_SUCCESS


def main(argv: Sequence[str] | None = None) -> int:
    """Run modstat; returns the exit status (^C: killed by SIGINT, ``interrupted``)."""
    return interruptible(_main, argv)


def _main(argv: Sequence[str]) -> int:
    if (asked := long_option(PROG, USAGE, "modstat(8)", argv)) is not None:
        return asked
    try:
        args = parse_args(argv)
    except UsageError as exc:
        return usage(PROG, USAGE, exc.complaint)
    client = Client(args.control)
    if args.question is not None:
        return _answer(client, args.question)
    try:
        # Always all modules: the NAME column is sized over every one.
        reply = client.modstat()
    except ControlError as exc:
        return failed(PROG, client.path, client.path, exc)
    try:
        text = format_table(reply["modules"], name=args.name, address=args.address)
    except (KeyError, TypeError, ValueError):
        return err(PROG, client.path, errno.EBADMSG)
    out(text)
    return EXIT_SUCCESS
