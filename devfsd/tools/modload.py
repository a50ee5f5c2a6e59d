"""modload(8): load a module into devfsd.

``modload [-fIP] [-b var=boolean] [-i var=integer] [-s var=string]
[-c path] module`` asks the daemon to load ``module`` (a name, or a path
when it has a ``/``) with the properties given, with ``-I`` (devfsd's
own) in a process of its own (see devfsd-module(9), ISOLATION); ``modload -p ...`` prints
the properties as the XML property list NetBSD's modload prints, and loads
nothing.

Follows NetBSD's ``sbin/modload/main.c``: options are checked in order as
getopt returns them, so the first bad ``-b``/``-i``/``-s`` is reported
(``modload: Invalid boolean value `x'``, exit 1) before anything is sent;
a later property of the same name replaces an earlier one, whatever its
type. ``-f`` and ``-P`` are accepted and do nothing: devfsd checks no
versions and reads no ``.plist`` files. ``-d`` and ``-m``, which edit a
plist file for ``-p``, are not offered.

``parse_args`` and ``externalize`` are pure; ``main`` talks to the daemon.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, final

from devfsd.control.client import Client
from devfsd.control.protocol import Explained
from devfsd.errors import ControlError
from devfsd.kern.props import PropError, parse_bool, parse_int, parse_param
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
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["PROG", "USAGE", "ModloadArgs", "externalize", "main", "parse_args"]

PROG: Final = "modload"
USAGE: Final = (
    "Usage: modload [-fIP] [-b var=boolean] [-i var=integer] [-s var=string] [-c path]\n"
    "               module\n"
    "       modload -p [-b var=boolean] [-i var=integer] [-s var=string]\n"
)

Props = dict[str, str | int | bool]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ModloadArgs:
    """What the command line asks for."""

    #: The module to load; ``None`` with ``-p``.
    module: str | None
    props: Props = field(default_factory=dict)
    #: ``-p``: print ``props`` instead of loading.
    print_props: bool = False
    #: ``-f`` and ``-P``: accepted, no effect.
    force: bool = False
    no_plist: bool = False
    #: ``-c``: the control socket.
    control: str | None = None
    #: ``-I``: load it isolated, in a module host.
    isolated: bool = False


def parse_args(argv: Sequence[str]) -> ModloadArgs:
    """Parse modload's arguments.

    Raises:
        UsageError: an unknown option, a missing option argument, or (without
            ``-p``) not exactly one operand.
        PropError: a bad ``-b``/``-i``/``-s``; ``str()`` is the message.
    """
    props: Props = {}
    print_props = force = no_plist = isolated = False
    control: str | None = None
    opts = Getopt(argv, "IPb:c:fi:ps:")
    try:
        for opt, arg in opts:
            if opt == "I":
                isolated = True
            elif opt == "P":
                no_plist = True
            elif opt == "b":
                name, value = parse_param(arg)
                props[name] = parse_bool(value)
            elif opt == "c":
                control = arg
            elif opt == "f":
                force = True
            elif opt == "i":
                name, value = parse_param(arg)
                props[name] = parse_int(value)
            elif opt == "p":
                print_props = True
            else:  # "s"
                name, value = parse_param(arg)
                props[name] = value
    except GetoptError as exc:
        raise UsageError(str(exc)) from None
    if print_props:
        # NetBSD's modload ignores operands with -p.
        module = None
    elif len(opts.operands) != 1:
        raise UsageError()
    else:
        module = opts.operands[0]
    return ModloadArgs(
        module=module,
        props=props,
        print_props=print_props,
        force=force,
        no_plist=no_plist,
        control=control,
        isolated=isolated,
    )


# proplib's XML externalization (prop_dictionary_externalize): the header,
# one tab per nesting level, keys sorted by strcmp, key and value each on its
# own line, only <, > and & escaped, signed integers in decimal, the empty
# string and the empty dictionary as empty tags.
_HEADER: Final = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE plist PUBLIC "-//Apple Computer//DTD PLIST 1.0//EN"'
    ' "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
    '<plist version="1.0">\n'
)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _strcmp_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def externalize(props: Mapping[str, str | int | bool]) -> str:
    """``props`` as the XML property list ``modload -p`` prints."""
    if not props:
        return _HEADER + "<dict/>\n</plist>\n"
    lines = [_HEADER, "<dict>\n"]
    for key in sorted(props, key=_strcmp_key):
        value = props[key]
        lines.append(f"\t<key>{_escape(key)}</key>\n")
        if isinstance(value, bool):
            lines.append("\t<true/>\n" if value else "\t<false/>\n")
        elif isinstance(value, int):
            lines.append(f"\t<integer>{value}</integer>\n")
        elif value:
            lines.append(f"\t<string>{_escape(value)}</string>\n")
        else:
            lines.append("\t<string/>\n")
    lines.append("</dict>\n</plist>\n")
    return "".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run modload; returns the exit status (^C: killed by SIGINT, ``interrupted``)."""
    return interruptible(_main, argv)


def _main(argv: Sequence[str]) -> int:
    if (asked := long_option(PROG, USAGE, "modload(8)", argv)) is not None:
        return asked
    try:
        args = parse_args(argv)
    except UsageError as exc:
        return usage(PROG, USAGE, exc.complaint)
    except PropError as exc:
        return errx(PROG, str(exc))
    if args.print_props:
        out(externalize(args.props))
        return EXIT_SUCCESS
    assert args.module is not None
    client = Client(args.control)
    module = args.module
    if "/" in module and not module.startswith("/"):
        # The daemon's working directory is not ours (it resolves one too).
        try:
            module = os.path.join(os.getcwd(), module)
        except OSError as exc:
            return err(PROG, module, exc.errno or errno.ENOENT)
    try:
        client.modload(module, args.props, isolated=args.isolated)
    except Explained as exc:  # module code refused: say why, in one line
        return errx(PROG, f"{args.module}: {exc.why}")
    except (ControlError, UnicodeError) as exc:
        return failed(PROG, args.module, client.path, exc)
    return EXIT_SUCCESS
