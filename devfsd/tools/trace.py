"""``devfsd trace``: watch the calls reaching a driver live (ktrace + kdump, one device).

``devfsd trace [-b events] [-c path] [-n count] node`` and
``devfsd trace [-b events] [-c path] [-n count] -m driver`` print one line
per call into the node's driver (or into every node of ``driver``) until
interrupted, or until ``count`` calls; devfsd(8), TRACING, has the format.

Which daemon: ``-c PATH`` if given, else the one serving the node (its
mount answers ``user.devfsd.control``, as for devfs-mknod); with ``-m``,
``-c``, then ``$DEVFSD_CONTROL``, then the default socket.

Output is flushed after every batch, so a pipe sees lines as they come.
Lost events (the daemon holds ``-b`` of them for a tracer that falls
behind) are reported on stderr as ``devfsd trace: N events dropped``. On
SIGINT the stream is asked to end (the daemon sends what it holds) and the
exit status is 0. Errors are ``devfsd trace: arg: strerror`` and exit 1,
as the other tools'; so is a usage error (getopt's complaint, the usage).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw._dev import major, minor
from devfsd.cdevsw._switch import FNONBLOCK, FREAD, FWRITE
from devfsd.control import path_for_node, resolve_path
from devfsd.control.client import Client
from devfsd.control.protocol import StreamEnded, decode_trace_event
from devfsd.errors import ControlError
from devfsd.tools import EXIT_SUCCESS, Getopt, GetoptError, err, failed, long_option, usage, warnx
from devfsd.trace import MAX_BUFFER

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devfsd.control.client import Stream
    from devfsd.trace import TraceEvent

__all__ = ["PROG", "USAGE", "format_event", "main"]

PROG: Final = "devfsd trace"
USAGE: Final = (
    "Usage: devfsd trace [-b events] [-c path] [-n count] node\n"
    "       devfsd trace [-b events] [-c path] [-n count] -m driver\n"
)
#: Seconds to wait for the daemon's last events after SIGINT.
DRAIN_TIMEOUT: Final = 2.0

_FLAGS: Final = ((FREAD, "FREAD"), (FWRITE, "FWRITE"), (FNONBLOCK, "FNONBLOCK"))
_POLL: Final = tuple(
    (getattr(select, n), n)
    for n in ("POLLIN", "POLLPRI", "POLLOUT", "POLLERR", "POLLHUP", "POLLNVAL", "POLLRDNORM", "POLLWRNORM")
)


def _bits(value: int, names: Sequence[tuple[int, str]]) -> str:
    """``FREAD|FWRITE``; unnamed bits in hex; ``0`` for none."""
    out = []
    for bit, name in names:
        if value & bit:
            out.append(name)
            value &= ~bit
    if value:
        out.append(f"{value:#x}")
    return "|".join(out) or "0"


def format_event(ev: TraceEvent) -> str:
    """One trace line (devfsd(8), TRACING), without the newline."""
    when = datetime.fromtimestamp(ev.time_ns / 1e9).strftime("%H:%M:%S.%f")
    if ev.call in ("read", "write"):
        args = f"asked={ev.a} moved={ev.b}"
    elif ev.call == "poll":
        args = f"events={_bits(ev.a, _POLL)} revents={_bits(ev.b, _POLL)}"
    elif ev.call == "ioctl":
        args = f"cmd={ev.a:#x} len={ev.b}"
    else:
        args = f"flags={_bits(ev.a, _FLAGS)}"
    result = (errno.errorcode.get(ev.errno, str(ev.errno))) if ev.errno else "0"
    dev = f"{major(ev.dev)},{minor(ev.dev)}"
    return f"{when} {ev.pid:>7} {dev:<8} {ev.call:<5} {args} {result} {ev.usec}us"


def _positive(text: str, top: int | None = None) -> int | None:
    try:
        n = int(text, 10)
    except ValueError:
        return None
    return n if n >= 1 and (top is None or n <= top) else None


def main(argv: Sequence[str]) -> int:
    """Run ``devfsd trace``; returns the exit status."""
    if (asked := long_option(PROG, USAGE, "devfsd(8)", argv)) is not None:
        return asked
    control: str | None = None
    driver: str | None = None
    buffer: int | None = None
    count: int | None = None
    opts = Getopt(argv, "b:c:m:n:")
    try:
        for opt, arg in opts:
            if opt == "c":
                control = arg
            elif opt == "m":
                driver = arg
            elif opt == "b":
                buffer = _positive(arg, MAX_BUFFER)
                if buffer is None:
                    return usage(PROG, USAGE, f"-b: 1 to {MAX_BUFFER} events: {arg}")
            else:
                count = _positive(arg)
                if count is None:
                    return usage(PROG, USAGE, f"-n: a positive count: {arg}")
    except GetoptError as exc:
        return usage(PROG, USAGE, str(exc))
    if len(opts.operands) != (0 if driver is not None else 1):
        return usage(PROG, USAGE)
    if driver is not None:
        arg, path, sock = driver, None, resolve_path(control)
    else:
        arg = opts.operands[0]
        path = os.path.realpath(arg)
        try:
            os.stat(path)
        except OSError as exc:
            return err(PROG, arg, exc.errno or errno.EIO)
        found = control or path_for_node(path)
        if found is None:
            return err(PROG, arg, errno.ENODEV)  # not on a devfsd mount
        sock = found
    client = Client(sock)
    try:
        stream = client.trace(path=path, driver=driver, buffer=buffer, count=count)
    except (ControlError, UnicodeError) as exc:
        return failed(PROG, arg, client.path, exc)
    except KeyboardInterrupt:
        return EXIT_SUCCESS  # interrupted before the first line: nothing to show
    with stream:
        return _follow(stream, client.path)


def _follow(stream: Stream, sock: str) -> int:
    """Print the stream's events until its end, SIGINT or a closed stdout."""
    try:
        try:
            _print(stream)
        except KeyboardInterrupt:
            stream.stop()
            stream.timeout = DRAIN_TIMEOUT
            # What arrives in time is printed; a second SIGINT stops that.
            with contextlib.suppress(ControlError, KeyboardInterrupt):
                _print(stream)
    except BrokenPipeError:
        # The reader went away (``| head``): that ends the trace, quietly.
        _silence_stdout()
        return EXIT_SUCCESS
    except ControlError as exc:
        return failed(PROG, sock, sock, exc)
    return EXIT_SUCCESS


def _print(stream: Stream) -> None:
    for msg in stream:
        if isinstance(msg, StreamEnded):
            return
        lines = [format_event(decode_trace_event(item)) for item in msg.items]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        if msg.dropped:
            warnx(PROG, f"{msg.dropped} events dropped")


def _silence_stdout() -> None:
    # Python flushes stdout at exit and would complain of the broken pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
