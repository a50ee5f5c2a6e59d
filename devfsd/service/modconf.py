"""modules.conf: the modules devfsd loads at start, as NetBSD's
/etc/modules.conf is for its kernel.

One module per line, its name first and then modload(8)'s options for it::

    # name     options
    crandom    -i maxlen=4096
    mm

Everything from a ``#`` to the end of the line is a comment; blank lines
are skipped; words are split on white space with no quoting, as NetBSD's
rc.d/modules passes the rest of the line to ``modload $args $name``. The
options are parsed by modload's own parser (``modload.parse_args``), so a
line means what the same words mean on modload's command line; ``-c`` and
``-p``, which choose another daemon or load nothing, have no place here.

``parse`` is pure: it takes the text and returns, in file order, one
``Entry`` per module to load and one ``BadLine`` per line that cannot be
parsed; the daemon loads the entries in order and logs the rest with their
line numbers. ``read`` opens the file at start-up: it names modules that
root will load, so it must be root's (or the daemon user's) and writable by
no one else, as module code must be.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Final, final

from devfsd.kern.props import PropError
from devfsd.kern.trust import check_path
from devfsd.tools import UsageError
from devfsd.tools.modload import parse_args

__all__ = ["DEFAULT_MODULES_CONF", "MAX_SIZE", "BadLine", "Entry", "parse", "read"]

DEFAULT_MODULES_CONF: Final = "/etc/devfsd/modules.conf"
#: Bytes read at most: a longer file is refused (EFBIG).
MAX_SIZE: Final = 1 << 20
_SHAPE: Final = "not: name [-fIP] [-b var=boolean] [-i var=integer] [-s var=string]"


@final
@dataclass(frozen=True, slots=True)
class Entry:
    """Line ``lineno`` asks for ``module`` with ``props`` (``isolated``: ``-I``)."""

    lineno: int
    module: str
    props: dict[str, str | int | bool]
    isolated: bool = False


@final
@dataclass(frozen=True, slots=True)
class BadLine:
    """Line ``lineno`` cannot be parsed; ``reason`` says why."""

    lineno: int
    reason: str


def parse(text: str) -> list[Entry | BadLine]:
    """The entries and bad lines of a modules.conf, in file order."""
    result: list[Entry | BadLine] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        module, options = words[0], words[1:]
        if module.startswith("-"):
            result.append(BadLine(lineno, f"{module}: a line starts with the module's name"))
            continue
        try:
            args = parse_args([*options, module])
        except UsageError as exc:
            result.append(BadLine(lineno, exc.complaint or _SHAPE))
            continue
        except PropError as exc:
            result.append(BadLine(lineno, str(exc)))
            continue
        if args.control is not None or args.print_props:
            result.append(BadLine(lineno, "-c and -p are not for modules.conf"))
            continue
        assert args.module == module
        result.append(Entry(lineno, module, dict(args.props), args.isolated))
    return result


def read(path: str | None) -> tuple[str, list[Entry | BadLine]]:
    """The file ``path`` (``None``: the default, which may be missing) and its entries.

    Raises:
        OSError: ``path`` cannot be read; ``EPERM`` if someone other than
            root or the daemon's user owns it or a directory above it, or
            may write one of them (group root aside; sticky directories
            aside), ``EFBIG`` past ``MAX_SIZE``.
    """
    name = path or DEFAULT_MODULES_CONF
    if name == os.devnull:  # the way to say "none", even where the default exists
        return name, []
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        if path is None:
            return name, []
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        # Module code's trust rule (devfsd.kern.trust), with root and the
        # daemon's user as the owners allowed: the file names modules root loads.
        owners = frozenset({0, os.geteuid()})
        why = check_path(name, st, owners)
        if why is not None:
            why = why.removeprefix(f"{name}: ")  # the file's name leads the message already
            raise OSError(errno.EPERM, why, name)
        chunks = []
        size = 0
        while size <= MAX_SIZE and (chunk := os.read(fd, MAX_SIZE + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), name)
    return name, parse(data.decode("utf-8", "replace"))
