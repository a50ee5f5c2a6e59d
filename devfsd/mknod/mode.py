"""chmod(1) modes for ``devfs-mknod -m``: NetBSD's setmode(3) and getmode(3).

Pure: the umask is an argument, not read from the process.

``setmode(text, umask)`` compiles a mode (``0640``, ``u+rw,go-w``,
``a=r``, ``g=u-w``) into a list of bit commands; ``getmode(cmds, mode)``
applies them to a starting mode. The grammar is chmod(1)'s::

    mode   ::= octal | clause [, clause ...]
    clause ::= [who ...] [action ...] action
    action ::= op [perm ...]
    who    ::= a | u | g | o
    op     ::= + | - | =
    perm   ::= r | s | t | w | x | X | u | g | o

An octal mode sets all twelve permission bits and ignores the umask. A
clause without ``who`` applies to the bits the umask leaves alone (``+w``
under umask 022 adds only the owner's write bit); ``=`` clears before it
sets; ``u``, ``g`` and ``o`` as perms copy bits from the mode as it stands;
``X`` adds execute only if the *starting* mode has an execute bit (or is a
directory; ``S_IFBLK`` shares the directory bit, as in C).

This follows the order of NetBSD's ``lib/libc/gen/setmode.c`` command for
command, without its ``compress_mode`` step, which merges runs of
``+``/``-``/``X`` without changing the result.
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass
from typing import Final, final

__all__ = ["BitCmd", "ModeError", "getmode", "setmode"]

S_ISTXT: Final = stat.S_ISVTX
#: Every permission bit but the sticky bit (``STANDARD_BITS``).
STANDARD_BITS: Final = stat.S_ISUID | stat.S_ISGID | 0o777
_ALL: Final = 0xFFFFFFFF

_CMD2_CLR: Final = 0x01
_CMD2_SET: Final = 0x02
_CMD2_GBITS: Final = 0x04
_CMD2_OBITS: Final = 0x08
_CMD2_UBITS: Final = 0x10

_WHO: Final = {
    "a": STANDARD_BITS,
    "u": stat.S_ISUID | stat.S_IRWXU,
    "g": stat.S_ISGID | stat.S_IRWXG,
    "o": stat.S_IRWXO,
}


class ModeError(ValueError):
    """A mode setmode(3) rejects; ``errno`` is what it would set (``EINVAL``)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


@final
@dataclass(frozen=True, slots=True)
class BitCmd:
    """One ``BITCMD``: ``+``, ``-``, ``X``, or a ``u``/``g``/``o`` copy."""

    cmd: str
    bits: int
    cmd2: int = 0


def _addcmd(cmds: list[BitCmd], op: str, who: int, oparg: int, mask: int) -> None:
    """``addcmd()``: append the command(s) for ``op``."""
    if op == "=":
        cmds.append(BitCmd("-", who if who else STANDARD_BITS))
        op = "+"
    if op in ("+", "-", "X"):
        cmds.append(BitCmd(op, (who if who else mask) & oparg))
        return
    # op is "u", "g" or "o"; oparg is the operator's character code.
    if who:
        cmd2 = (
            (_CMD2_UBITS if who & stat.S_IRUSR else 0)
            | (_CMD2_GBITS if who & stat.S_IRGRP else 0)
            | (_CMD2_OBITS if who & stat.S_IROTH else 0)
        )
        bits = _ALL
    else:
        cmd2 = _CMD2_UBITS | _CMD2_GBITS | _CMD2_OBITS
        bits = mask
    if oparg == ord("+"):
        cmd2 |= _CMD2_SET
    elif oparg == ord("-"):
        cmd2 |= _CMD2_CLR
    elif oparg == ord("="):
        cmd2 |= _CMD2_SET | _CMD2_CLR
    cmds.append(BitCmd(op, bits, cmd2))


def _octal(text: str, mask: int) -> tuple[BitCmd, ...]:
    end = 0
    while end < len(text) and text[end] in "01234567":
        end += 1
    if end != len(text):
        raise ModeError(errno.EINVAL)
    value = int(text, 8)
    if value > (1 << 63) - 1:
        raise ModeError(errno.ERANGE)  # strtol's overflow
    if value & ~(STANDARD_BITS | S_ISTXT):
        raise ModeError(errno.EINVAL)
    cmds: list[BitCmd] = []
    _addcmd(cmds, "=", STANDARD_BITS | S_ISTXT, value, mask)
    return tuple(cmds)


def setmode(text: str, umask: int) -> tuple[BitCmd, ...]:
    """Compile a chmod(1) mode.

    Args:
        text: the mode.
        umask: the process umask; clauses without ``who`` spare its bits.

    Returns:
        The commands, for ``getmode``.

    Raises:
        ModeError: ``EINVAL`` for anything outside the grammar (an empty
            mode, a trailing comma, an octal digit 8 or 9, bits beyond
            07777), ``ERANGE`` for an octal number past ``LONG_MAX``.
    """
    mask = ~umask & _ALL
    if text[:1] in tuple("0123456789"):
        return _octal(text, mask)

    cmds: list[BitCmd] = []
    n = len(text)
    p = 0

    def at(i: int) -> str:
        return text[i] if i < n else ""

    while True:  # one clause per turn
        who = 0
        while at(p) in _WHO:
            who |= _WHO[at(p)]
            p += 1
        while True:  # one action per turn ("getop")
            op = at(p)
            p += 1
            if op not in ("+", "-", "="):
                raise ModeError(errno.EINVAL)
            equalopdone = False
            who &= ~S_ISTXT
            perm = perm_x = 0
            while True:
                c = at(p)
                if c == "r":
                    perm |= stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                elif c == "s":
                    # Set-id bits mean nothing for "other" alone.
                    if not who or who & ~stat.S_IRWXO:
                        perm |= stat.S_ISUID | stat.S_ISGID
                elif c == "t":
                    # Nor does the sticky bit.
                    if not who or who & ~stat.S_IRWXO:
                        who |= S_ISTXT
                        perm |= S_ISTXT
                elif c == "w":
                    perm |= stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
                elif c == "X":
                    perm_x = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                elif c == "x":
                    perm |= stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
                elif c in ("u", "g", "o"):
                    # Flush what was gathered, then copy bits.
                    if perm:
                        _addcmd(cmds, op, who, perm, mask)
                        perm = 0
                    if op == "=":
                        equalopdone = True
                    if op == "+" and perm_x:
                        _addcmd(cmds, "X", who, perm_x, mask)
                        perm_x = 0
                    _addcmd(cmds, c, who, ord(op), mask)
                else:
                    if perm or (op == "=" and not equalopdone):
                        if op == "=":
                            equalopdone = True
                        _addcmd(cmds, op, who, perm, mask)
                        perm = 0
                    if perm_x:
                        _addcmd(cmds, "X", who, perm_x, mask)
                        perm_x = 0
                    break
                p += 1
            if at(p) == "":
                return tuple(cmds)
            if at(p) == ",":
                p += 1
                break
            # Another op follows directly ("u+r-w").


def getmode(cmds: tuple[BitCmd, ...], omode: int) -> int:
    """Apply compiled ``cmds`` to ``omode`` (file type bits pass through)."""
    newmode = omode
    for c in cmds:
        if c.cmd in ("u", "g", "o"):
            if c.cmd == "u":
                value = (newmode & stat.S_IRWXU) >> 6
            elif c.cmd == "g":
                value = (newmode & stat.S_IRWXG) >> 3
            else:
                value = newmode & stat.S_IRWXO
            if c.cmd2 & _CMD2_CLR:
                clrval = stat.S_IRWXO if c.cmd2 & _CMD2_SET else value
                if c.cmd2 & _CMD2_UBITS:
                    newmode &= ~((clrval << 6) & c.bits)
                if c.cmd2 & _CMD2_GBITS:
                    newmode &= ~((clrval << 3) & c.bits)
                if c.cmd2 & _CMD2_OBITS:
                    newmode &= ~(clrval & c.bits)
            if c.cmd2 & _CMD2_SET:
                if c.cmd2 & _CMD2_UBITS:
                    newmode |= (value << 6) & c.bits
                if c.cmd2 & _CMD2_GBITS:
                    newmode |= (value << 3) & c.bits
                if c.cmd2 & _CMD2_OBITS:
                    newmode |= value & c.bits
        elif c.cmd == "+":
            newmode |= c.bits
        elif c.cmd == "-":
            newmode &= ~c.bits
        elif omode & (stat.S_IFDIR | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):  # "X"
            newmode |= c.bits
    return newmode
