"""What the command-line tools share: getopt(3), err(3) and exit statuses.

Imports no socket, trio or pyfuse3: ``devfsd.mknod.args`` builds on
``Getopt`` and stays pure. Each tool imports ``Client`` itself.

The tools behave as NetBSD's: silent on success with exit 0; a failure is one
line ``prog: arg: strerror`` on stderr (``modload: tunwg: File exists``) and
exit 1; bad usage prints getopt's complaint, if any, then the usage text, and
exits 1. NetBSD's modload, modunload, modstat and mknod all exit 1 on usage,
so devfsd's do too (STYLE.md's "usage errors exit 2" is the one place these
tools do not follow it: scripts written for NetBSD test for 1).

The strerror texts are the host's (``os.strerror``), not NetBSD's, and not
the text a daemon reply carries: what a tool prints depends only on the
errno, as with err(3).

That line is made in one place, ``errline``, for the tools and for the
daemon's own start-up errors alike: its argument goes through
``devfsd.errors.printable``, as the log's arguments do, so a path with a
line break or a terminal escape sequence in it (``mkdir $'a\nb'`` is
anyone's to make) prints as one line, escaped, not as a line of its own or
a command to the terminal.

When the daemon cannot be reached at all, ``modload: crandom: No such file
or directory`` would blame the module; the tools name the socket instead
(``modload: /run/devfsd/control.sock: Connection refused``). ``unreachable``
tells the two apart.

``--help`` and ``--version`` as the first argument, as Linux users type
them, are answered before getopt sees anything (``long_option``): the usage
text on stdout and exit 0, or ``prog (devfsd) VERSION``. NetBSD's getopt
has no long options, so nothing a NetBSD script passes changes meaning
(``modload -- --help`` is still a module named ``--help``).

^C (SIGINT) ends a tool as it ends NetBSD's, which leave SIGINT alone: the
process is killed by SIGINT, with no traceback (the shell sees status 130,
and a script's loop stops as after any tool's ^C). Its connection to the
daemon closes with it, and the daemon cancels the request
(``interruptible``; devfsd(8), CONTROL SOCKET).
"""

from __future__ import annotations

import contextlib
import errno as errno_
import os
import signal
import sys
from typing import TYPE_CHECKING, Final, final

from devfsd.errors import printable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from devfsd.errors import ControlError

__all__ = [
    "EXIT_FAILURE",
    "EXIT_SUCCESS",
    "Getopt",
    "GetoptError",
    "UsageError",
    "err",
    "errline",
    "errx",
    "failed",
    "interrupted",
    "interruptible",
    "long_option",
    "out",
    "unreachable",
    "usage",
    "warn",
    "warnx",
]

EXIT_SUCCESS: Final = 0
EXIT_FAILURE: Final = 1


class GetoptError(Exception):
    """A bad option; ``str()`` is getopt(3)'s complaint (``unknown option -- x``)."""


class UsageError(Exception):
    """The arguments do not fit the usage text.

    Args:
        complaint: getopt's complaint to print before the usage, if any.
    """

    def __init__(self, complaint: str | None = None) -> None:
        super().__init__(complaint)
        self.complaint = complaint


@final
class Getopt:
    """NetBSD's getopt(3), as an iterator of ``(option, argument)`` pairs.

    Options come before operands: the first argument that is not an option
    (``-`` alone counts as an operand) ends them, and so does ``--``, which
    is dropped. ``-fP`` is ``-f -P``; an option taking an argument takes the
    rest of its word or else the next word (``-bx=1``, ``-b x=1``). Options
    are yielded one at a time, so a tool that checks each as it comes
    reports the first bad one first, as getopt's callers in C do. After the
    loop, ``operands`` holds the rest.

    A ``-`` met inside a word (``--x``, ``-a-``) ends the options there and
    that word becomes the first operand: NetBSD's getopt does the same when
    ``-`` is not in ``optstring``.

    Raises (while iterating):
        GetoptError: ``unknown option -- x`` or
            ``option requires an argument -- x``.
    """

    __slots__ = ("_argv", "_optstring", "operands")

    def __init__(self, argv: Sequence[str], optstring: str) -> None:
        self._argv = list(argv)
        self._optstring = optstring
        self.operands: list[str] = []

    def __iter__(self) -> Iterator[tuple[str, str]]:
        argv = self._argv
        i = 0
        while i < len(argv):
            word = argv[i]
            if word == "--":
                i += 1
                break
            if len(word) < 2 or word[0] != "-":
                break
            j = 1
            ended = False
            while j < len(word):
                c = word[j]
                k = self._optstring.find(c) if c != ":" else -1
                if k < 0:
                    if c == "-":
                        ended = True
                        break
                    raise GetoptError(f"unknown option -- {c}")
                if self._optstring[k + 1 : k + 2] == ":":
                    if j + 1 < len(word):
                        yield c, word[j + 1 :]
                    elif i + 1 < len(argv):
                        i += 1
                        yield c, argv[i]
                    else:
                        raise GetoptError(f"option requires an argument -- {c}")
                    break
                yield c, ""
                j += 1
            if ended:
                break
            i += 1
        self.operands = argv[i:]


def errline(prog: str, arg: object, text: int | str | None = None) -> str:
    """err(3)'s line, ``prog: arg: text`` and a newline, for stderr.

    ``text`` is an errno (its ``os.strerror``), what follows ``arg``, or
    ``None`` for ``prog: arg`` alone. ``arg`` and ``text`` go through
    ``printable``: whatever a path holds, this is one line.
    """
    if text is None:
        return f"{prog}: {printable(arg)}\n"
    if isinstance(text, int):
        text = os.strerror(text)
    return f"{prog}: {printable(arg)}: {printable(text)}\n"


def warnx(prog: str, message: str) -> None:
    """``prog: message`` on stderr (warnx(3)), one line (``errline``)."""
    sys.stderr.write(errline(prog, message))
    sys.stderr.flush()


def warn(prog: str, message: str, errno: int) -> None:
    """``prog: message: strerror`` on stderr (warn(3)), one line (``errline``)."""
    sys.stderr.write(errline(prog, message, errno))
    sys.stderr.flush()


def err(prog: str, arg: str, errno: int) -> int:
    """Report ``prog: arg: strerror``.

    Returns:
        ``EXIT_FAILURE``, for ``return err(...)`` from ``main``.
    """
    warn(prog, arg, errno)
    return EXIT_FAILURE


def errx(prog: str, message: str) -> int:
    """Report ``prog: message``; returns ``EXIT_FAILURE``."""
    warnx(prog, message)
    return EXIT_FAILURE


def usage(prog: str, text: str, complaint: str | None = None) -> int:
    """getopt's complaint (as ``prog: complaint``), then ``text``; returns 1."""
    if complaint is not None:
        warnx(prog, complaint)
    sys.stderr.write(text)
    sys.stderr.flush()
    return EXIT_FAILURE


def out(text: str) -> None:
    """Write ``text`` to stdout, passing undecodable argv bytes through.

    Arguments that were not valid UTF-8 reach Python as surrogate escapes;
    encoding them back with ``surrogateescape`` prints the bytes the user
    typed instead of raising ``UnicodeEncodeError`` halfway through.
    """
    buf = getattr(sys.stdout, "buffer", None)
    if buf is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        buf.write(text.encode("utf-8", "surrogateescape"))
    sys.stdout.flush()


def long_option(prog: str, text: str, manual: str, argv: Sequence[str]) -> int | None:
    """Answer ``--help`` or ``--version`` given as ``argv[0]``.

    Args:
        prog: the tool's name, as its messages begin (``devfsd trace``).
        text: its usage text.
        manual: its manual page (``modload(8)``), named after the usage.

    Returns:
        ``EXIT_SUCCESS`` once answered on stdout, or ``None``: not asked.
    """
    if not argv or argv[0] not in ("--help", "--version"):
        return None
    if argv[0] == "--help":
        out(f"{text}See {manual}.\n")
    else:
        from devfsd import __version__

        out(f"{prog} (devfsd) {__version__}\n")
    return EXIT_SUCCESS


def unreachable(exc: ControlError) -> bool:
    """Whether ``exc`` is about reaching the daemon, not about the request."""
    # Imported here: the pure parsers import this package with socket blocked.
    from devfsd.control.client import Unreachable

    return isinstance(exc, Unreachable)


def failed(prog: str, arg: str, socket_path: str, exc: ControlError | UnicodeError) -> int:
    """Report a failed control call and return ``EXIT_FAILURE``.

    Names ``socket_path`` when the daemon could not be reached, else
    ``arg``. An argument that is not valid UTF-8 (``UnicodeError`` from
    encoding the request) is ``EILSEQ``: no module or driver can have
    such a name.
    """
    if isinstance(exc, UnicodeError):
        return err(prog, arg, errno_.EILSEQ)
    return err(prog, socket_path if unreachable(exc) else arg, exc.errno)


def interrupted() -> int:
    """End the process as SIGINT's default action does (killed by SIGINT,
    no traceback); call from ``except KeyboardInterrupt``, after the
    ``with`` blocks that close its sockets have run.

    Returns:
        130 (128 + SIGINT), should the signal not end it (blocked).
    """
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr
        sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    return 128 + signal.SIGINT


def interruptible(main: Callable[[Sequence[str]], int], argv: Sequence[str] | None) -> int:
    """``main(argv)`` (``sys.argv[1:]`` for ``None``), ended by ^C as a C
    tool is (``interrupted``)."""
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return interrupted()
