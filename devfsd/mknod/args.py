"""devfs-mknod's command line: NetBSD mknod(8) syntax, parsed without I/O.

Pure: no socket, no file system. What needs the world is passed in, as
``rng`` is elsewhere: the umask, and a ``Lookup`` that turns user, group
and driver names into numbers (the CLI's asks the password file and the
daemon; tests pass a dictionary).

``parse(argv, umask=..., lookup=...)`` returns ``MakeNode`` or
``ListDrivers`` and raises only ``MknodError``, whose ``message`` is
mknod's exact text and whose ``usage`` says to print the usage after it.

The order of checks is ``sbin/mknod/mknod.c``'s, because it decides which
message a bad command line gets:

1. Options, one by one as getopt returns them: ``-F`` (``invalid format:
   X``), ``-g``/``-u`` (``#`` forces a number, else a name, else a number:
   ``X: invalid group name``), ``-m`` (``Cannot set file mode `X':
   strerror``), ``-r``/``-R``/``-l``/``-c``.
2. ``-l``: done; the operands are driver names to show.
3. Two to ten operands, else usage. The type is exactly ``b``, ``c`` or
   ``p`` (``node type must be 'b', 'c' or 'p'.``); ``p`` with ``-F`` is
   ``format is meaningless for fifos``. ``p`` takes no numbers, ``b`` and
   ``c`` one to three, else usage.
4. Numbers, left to right, C ``strtoul`` base 0 (``0x10``, ``010``, ``-1``
   wraps). With exactly two numbers, the first, if it is not a number,
   may be a driver name: the lookup gives its major, else ``unknown
   driver: X`` (or ``invalid number: X`` if it starts with a digit). Other
   bad numbers, a driver name alone or with three numbers among them, are
   ``invalid number: X`` (mknod.c 1.42 looks a name up only when
   ``argc == 2``).
5. One number is the whole ``dev_t``; two or three go through the
   format's pack function (``invalid major number``, ...).

Where C and this parser differ, on purpose: an empty number, uid or gid is
invalid here, while C's ``strtoul("")`` gives 0 (``-u ''`` would chown to
root), and so is ``#`` alone (C's ``strtol("")`` again).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, final

from devfsd.mknod.mode import BitCmd, ModeError, getmode, setmode
from devfsd.mknod.pack import ULONG_MAX, Pack, PackError, pack_find, pack_native
from devfsd.tools import Getopt, GetoptError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "NO_REPLACE",
    "REPLACE",
    "REPLACE_FIX",
    "USAGE",
    "ListDrivers",
    "Lookup",
    "MakeNode",
    "MknodError",
    "parse",
]

PROG: Final = "devfs-mknod"
USAGE: Final = (
    "usage: devfs-mknod [-rR] [-F format] [-c path] [-m mode] [-u user] [-g group]\n"
    "                   [ name [b | c] [major | driver] minor\n"
    "                   | name [b | c] major unit subunit\n"
    "                   | name [b | c] number\n"
    "                   | name p ]\n"
    "       devfs-mknod [-c path] -l [driver] ...\n"
)

#: ``replace`` values: no ``-r``; ``-r``; ``-R``.
NO_REPLACE: Final = 0
REPLACE: Final = 1
REPLACE_FIX: Final = 2

_MAXARGS: Final = 3  # numbers: three for bsdos, two for the rest
_DIGITS: Final = "0123456789"
_HEXDIGITS: Final = "0123456789abcdefABCDEF"
_SPACE: Final = " \t\n\v\f\r"
_LONG_MIN: Final = -(1 << 63)
_LONG_MAX: Final = (1 << 63) - 1
_NO_ID: Final = 0xFFFFFFFF  # (uid_t)-1: leave unchanged
_TYPES: Final = {"b": stat.S_IFBLK, "c": stat.S_IFCHR, "p": stat.S_IFIFO}


class MknodError(Exception):
    """A command line mknod rejects.

    Attributes:
        message: the text after ``devfs-mknod: ``, or ``None`` (usage only).
        usage: print the usage text after ``message``.
    """

    def __init__(self, message: str | None, *, usage: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage


class Lookup(Protocol):
    """Names to numbers; each returns ``None`` for an unknown name."""

    def user(self, name: str) -> int | None:
        """A user's uid (getpwnam)."""
        ...

    def group(self, name: str) -> int | None:
        """A group's gid (getgrnam)."""
        ...

    def major(self, driver: str, *, block: bool, node: str, control: str | None) -> int | None:
        """A driver's character (or, if ``block``, block) major.

        ``node`` and ``control`` say which daemon to ask: the one serving
        ``node``, else the one at ``-c control`` (or the default).
        """
        ...


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class MakeNode:
    """Make one node."""

    name: str
    #: ``"b"``, ``"c"`` or ``"p"``.
    type: str
    #: The full mode: file type bits and permissions, umask already applied.
    mode: int
    #: The device number (0 for a FIFO).
    dev: int
    #: ``chown`` to these; ``None`` leaves that id alone.
    uid: int | None = None
    gid: int | None = None
    #: ``NO_REPLACE``, ``REPLACE`` (``-r``) or ``REPLACE_FIX`` (``-R``).
    replace: int = NO_REPLACE
    #: ``-c``: the control socket.
    control: str | None = None


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ListDrivers:
    """``-l``: show the name <-> major table, or these entries of it."""

    names: tuple[str, ...] = ()
    control: str | None = None


def _strtoul(text: str) -> int | None:
    """C ``strtoul(text, &end, 0)`` when all of ``text`` is used, else ``None``.

    Leading white space and a sign are allowed; ``0x`` means hex and a
    leading ``0`` octal; a minus wraps modulo 2**64; past ``ULONG_MAX`` is
    ``ERANGE`` (``None``).
    """
    s = text.lstrip(_SPACE)
    negative = s[:1] == "-"
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s[:2] in ("0x", "0X") and s[2:3] and s[2] in _HEXDIGITS:
        base, digits, allowed = 16, s[2:], _HEXDIGITS
    elif s[:1] == "0":
        base, digits, allowed = 8, s, _DIGITS[:8]
    else:
        base, digits, allowed = 10, s, _DIGITS
    if not digits or any(c not in allowed for c in digits):
        return None
    value = int(digits, base)
    if value > ULONG_MAX:
        return None
    return (-value) & ULONG_MAX if negative else value


def _strtol10(text: str) -> int | None:
    """C ``strtol(text, &end, 10)`` when all of ``text`` is used, else ``None``.

    Overflow clamps to ``LONG_MIN``/``LONG_MAX``, as in C (the callers do
    not check ``errno``).
    """
    s = text.lstrip(_SPACE)
    sign = -1 if s[:1] == "-" else 1
    if s[:1] in ("+", "-"):
        s = s[1:]
    if not s or any(c not in _DIGITS for c in s):
        return None
    return max(_LONG_MIN, min(_LONG_MAX, sign * int(s)))


def _id(arg: str, by_name: Callable[[str], int | None], what: str) -> int | None:
    """A ``-u``/``-g`` argument: ``#number``, a name, or a number.

    Returns:
        The id, or ``None`` for ``(uid_t)-1`` (leave it alone).
    """
    value: int | None = None
    if arg.startswith("#"):
        value = _strtol10(arg[1:])
    if value is None:
        named = by_name(arg)
        if named is not None:
            return named
        value = _strtol10(arg)
    if value is None:
        raise MknodError(f"{arg}: invalid {what} name")
    value &= 0xFFFFFFFF
    return None if value == _NO_ID else value


def parse(argv: Sequence[str], *, umask: int, lookup: Lookup) -> MakeNode | ListDrivers:
    """Parse devfs-mknod's arguments.

    Args:
        argv: the arguments after the program name.
        umask: the process umask (the default mode is ``0666 & ~umask``).
        lookup: user, group and driver names to numbers.

    Returns:
        ``ListDrivers`` for ``-l``, else ``MakeNode``.

    Raises:
        MknodError: with mknod's message and whether to print the usage.
    """
    pack: Pack = pack_native
    has_format = False
    list_flag = False
    replace = NO_REPLACE
    uid: int | None = None
    gid: int | None = None
    modes: tuple[BitCmd, ...] | None = None
    control: str | None = None

    opts = Getopt(argv, "F:Rc:g:lm:ru:")
    try:
        for opt, arg in opts:
            if opt == "F":
                found = pack_find(arg)
                if found is None:
                    raise MknodError(f"invalid format: {arg}")
                pack = found
                has_format = True
            elif opt == "R":
                replace = REPLACE_FIX
            elif opt == "c":
                control = arg
            elif opt == "g":
                gid = _id(arg, lookup.group, "group")
            elif opt == "l":
                list_flag = True
            elif opt == "m":
                try:
                    modes = setmode(arg, umask)
                except ModeError as exc:
                    raise MknodError(f"Cannot set file mode `{arg}': {os.strerror(exc.errno)}") from None
            elif opt == "r":
                replace = REPLACE
            else:  # "u"
                uid = _id(arg, lookup.user, "user")
    except GetoptError as exc:
        raise MknodError(str(exc), usage=True) from None

    operands = opts.operands
    if list_flag:
        return ListDrivers(names=tuple(operands), control=control)
    if not 2 <= len(operands) <= 10:
        raise MknodError(None, usage=True)

    name, kind, numbers_text = operands[0], operands[1], operands[2:]
    file_type = _TYPES.get(kind)
    if file_type is None:
        raise MknodError("node type must be 'b', 'c' or 'p'.")
    if kind == "p" and has_format:
        raise MknodError("format is meaningless for fifos")
    mode = (0o666 & ~umask) | file_type
    if kind == "p":
        if numbers_text:
            raise MknodError(None, usage=True)
    elif not 1 <= len(numbers_text) <= _MAXARGS:
        raise MknodError(None, usage=True)

    numbers: list[int] = []
    for n, text in enumerate(numbers_text):
        value = _strtoul(text)
        if value is None and n == 0 and len(numbers_text) == 2:
            value = lookup.major(text, block=kind == "b", node=name, control=control)
            if value is None and text[:1] not in tuple(_DIGITS):
                raise MknodError(f"unknown driver: {text}")
        if value is None:
            raise MknodError(f"invalid number: {text}")
        numbers.append(value)

    if not numbers:
        dev = 0
    elif len(numbers) == 1:
        dev = numbers[0]
    else:
        try:
            dev = pack(numbers)
        except PackError as exc:
            raise MknodError(str(exc)) from None

    if modes is not None:
        mode = getmode(modes, mode)
    return MakeNode(
        name=name,
        type=kind,
        mode=mode,
        dev=dev,
        uid=uid,
        gid=gid,
        replace=replace,
        control=control,
    )
