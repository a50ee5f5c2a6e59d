"""Where devfsd's log goes, and what keeps it usable under a supervisor.

- ``--log FILE``: appended to, one line per message with a timestamp;
  ``reopen()`` (on SIGHUP) opens the path again, so that after logrotate
  has renamed the file the daemon writes to a new one.
- ``-f`` without ``--log``: standard error. Under systemd (``$JOURNAL_STREAM``
  names the device and inode of standard error) each line starts with
  sd-daemon(3)'s ``<N>`` priority and carries no timestamp or pid, which the
  journal records itself; every line of a traceback gets the prefix, so
  that journald does not file the tail of an error as info. Elsewhere the
  lines are as in a log file.
- otherwise syslog(3) through /dev/log, else ``FALLBACK_LOG``.

Whatever the destination, the arguments of every message are escaped
(``EscapeArgs``, ``devfsd.errors.printable``): a path, a name or an error
text that someone else chose (a control client, a state's row, a file
name) and that carries a line break or a terminal's escape sequence
cannot forge a line of the log or drive the reader's terminal. So text
from others goes into a message as an argument (``log.info("%s", path)``),
never into its format string.

faulthandler writes to the same file (with syslog: to ``FALLBACK_LOG``):
the Python stack of every thread on a fatal signal (SIGSEGV, SIGFPE,
SIGABRT, SIGBUS, SIGILL) and on SIGUSR1, which does not stop the daemon.
faulthandler keeps the file descriptor, not the file object, so ``reopen``
points it at the new file before the old one is closed.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import signal
import sys
from typing import IO, TYPE_CHECKING, Any, Final, final

from devfsd.errors import Verbatim, printable

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["FALLBACK_LOG", "EscapeArgs", "JournalFormatter", "Logs", "journal_priority", "under_journal"]

FALLBACK_LOG: Final = "/var/log/devfsd.log"
ENV_JOURNAL: Final = "JOURNAL_STREAM"

_FILE_FORMAT: Final = "%(asctime)s devfsd[%(process)d] %(levelname)s %(name)s: %(message)s"
_SYSLOG_FORMAT: Final = "devfsd[%(process)d]: %(levelname)s %(name)s: %(message)s"
_JOURNAL_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"


def journal_priority(levelno: int) -> int:
    """syslog(3)'s priority for a logging level: 7 debug ... 2 critical."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


@final
class JournalFormatter(logging.Formatter):
    """``<N>LEVEL name: message``, every line prefixed with the priority."""

    def __init__(self) -> None:
        super().__init__(_JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def under_journal(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd gave (``$JOURNAL_STREAM`` = ``dev:inode``)."""
    dev, _, ino = environ.get(ENV_JOURNAL, "").partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def _escaped(arg: Any) -> Any:
    """``arg``, or its text escaped if that is not printable (numbers and
    ``None`` as they are: ``%d`` still takes them; ``Verbatim`` too)."""
    if arg is None or isinstance(arg, int | float | Verbatim):
        return arg
    try:
        text = str(arg)
    except Exception:  # an object that cannot say what it is: %s will say so itself
        return arg
    return arg if text.isprintable() else printable(text)


@final
class EscapeArgs(logging.Filter):
    """Escapes the arguments of each record the handler gets (see above):
    a record's arguments are the text others may have chosen; its format
    string is devfsd's own, as is an argument marked ``Verbatim`` (a
    stack, a host's last output escaped line by line), and may hold line
    breaks."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            if args:
                record.args = tuple(map(_escaped, args))
        elif args:
            record.args = {k: _escaped(v) for k, v in args.items()}
        return True


@final
class Logs:
    """The root logger's one handler and faulthandler's file, set up once per process."""

    def __init__(self, *, log_file: str | None, foreground: bool, debug: bool) -> None:
        handler: logging.Handler
        self.path: str | None = None
        if log_file is not None:
            self.path = log_file
        elif foreground:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(JournalFormatter() if under_journal() else logging.Formatter(_FILE_FORMAT))
        elif os.path.exists("/dev/log"):
            handler = logging.handlers.SysLogHandler(
                "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
            )
            handler.setFormatter(logging.Formatter(_SYSLOG_FORMAT))
        else:
            self.path = FALLBACK_LOG
        if self.path is not None:
            handler = logging.FileHandler(self.path, encoding="utf-8")
            handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler.addFilter(EscapeArgs())
        self.handler = handler
        root = logging.getLogger()
        root.setLevel(logging.DEBUG if debug else logging.INFO)
        root.handlers[:] = [handler]
        # faulthandler needs a real file: the handler's own, else the fallback file.
        stream: IO[str] | None = handler.stream if isinstance(handler, logging.StreamHandler) else None
        self._own_fault_file = stream is None
        if stream is None:
            stream = open(FALLBACK_LOG, "a", encoding="utf-8")  # noqa: SIM115 - lives until the next reopen
        self.fault_file = stream
        self._arm_faulthandler()

    def _arm_faulthandler(self) -> None:
        faulthandler.enable(file=self.fault_file, all_threads=True)
        # SIGUSR1 dumps every thread's stack, to debug a hang.
        faulthandler.register(signal.SIGUSR1, file=self.fault_file, all_threads=True)

    def reopen(self) -> None:
        """Open the log file again by its path (after logrotate); a no-op for streams and syslog.

        If the path cannot be opened, the old file stays in use and the
        error is logged there.
        """
        if not isinstance(self.handler, logging.FileHandler) and not self._own_fault_file:
            return
        path = self.handler.baseFilename if isinstance(self.handler, logging.FileHandler) else FALLBACK_LOG
        try:
            new = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives until the next reopen
        except OSError as exc:
            logging.getLogger("devfsd").error("reopening the log %s: %s", path, exc)
            return
        old = self.fault_file
        self.fault_file = new
        self._arm_faulthandler()
        if isinstance(self.handler, logging.FileHandler):
            self.handler.setStream(new)
        old.close()
        logging.getLogger("devfsd").info("log reopened")
