"""``devfsd trace`` under test: run it against a mount, collect its lines.

Touches the world: starts ``devfsd trace ARGS...`` as a child process,
returns once the daemon reports the tracer attached (never a fixed sleep),
gathers stdout and stderr lines in threads as they come, and always stops
it: SIGINT (the tool's own clean end), then SIGKILL past the deadline.

``parse_line`` splits a trace line (devfsd(8), TRACING) for assertions.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from typing import IO, TYPE_CHECKING, Final, NamedTuple, final

from devfsd.testing.mount import tool, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from devfsd.testing.mount import DevfsdMount

__all__ = ["DROPPED", "TraceLine", "TraceRun", "parse_line"]

STOP_TIMEOUT: Final = 20.0
#: stderr's report of lost events; group 1 is how many.
DROPPED: Final = re.compile(r"^devfsd trace: (\d+) events dropped$")
_LINE: Final = re.compile(
    r"^(\d\d:\d\d:\d\d\.\d{6}) +(\d+) (\d+),(\d+) +(open|read|write|poll|ioctl|close) +"
    r"((?:\w+=\S+ ?)+) (0|E[A-Z0-9]+) (\d+)us$"
)


class TraceLine(NamedTuple):
    time: str
    pid: int
    major: int
    minor: int
    call: str
    #: ``asked``, ``moved``, ``flags``, ``events``, ``revents``, ``cmd``, ``len``.
    args: dict[str, str]
    #: ``"0"`` or the errno's name.
    result: str
    usec: int


def parse_line(line: str) -> TraceLine:
    """One trace line, split.

    Raises:
        ValueError: not a trace line.
    """
    m = _LINE.match(line)
    if m is None:
        raise ValueError(f"not a trace line: {line!r}")
    args = dict(kv.split("=", 1) for kv in m[6].split())
    return TraceLine(m[1], int(m[2]), int(m[3]), int(m[4]), m[5], args, m[7], int(m[8]))


@final
class TraceRun:
    """``devfsd trace ARGS...`` against ``mount``; use as a context manager.

    Attributes:
        lines: stdout lines so far (without newlines).
        errors: stderr lines so far.
        returncode: the exit status once it has ended, else ``None``.
    """

    def __init__(self, mount: DevfsdMount, args: Sequence[str], *, attach_timeout: float = 20.0) -> None:
        self.mount = mount
        self.args = list(args)
        self.attach_timeout = attach_timeout
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> TraceRun:
        """Start the tracer; returns once the daemon has one more tracer attached."""
        before = self.mount.client().status()["tracers"]
        self.proc = subprocess.Popen(
            [tool("devfsd"), "trace", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for pipe, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            t = threading.Thread(target=_gather, args=(pipe, into), daemon=True)
            t.start()
            self._threads.append(t)
        try:
            wait_for(
                lambda: self._ended() or self.mount.client().status()["tracers"] > before,
                self.attach_timeout,
                "the tracer to attach",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _ended(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def parsed(self) -> list[TraceLine]:
        return [parse_line(s) for s in list(self.lines)]

    def wait(self, cond: Callable[[TraceRun], bool], timeout: float, what: str) -> None:
        """Poll ``cond(self)`` until true; ``TimeoutError`` (with the output so far) after ``timeout``."""
        try:
            wait_for(lambda: cond(self), timeout, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nstdout: {self.lines[-20:]}\nstderr: {self.errors}") from None

    def join(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the tracer to end by itself and for its output; its exit status."""
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return rc

    def stop(self, sig: int = signal.SIGINT) -> int | None:
        """Send ``sig`` (SIGKILL past the deadline) and wait; the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        for t in self._threads:
            t.join(STOP_TIMEOUT)
        return proc.returncode

    def __enter__(self) -> TraceRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for pipe in (self.proc.stdout, self.proc.stderr) if self.proc is not None else ():
            if pipe is not None:
                pipe.close()


def _gather(pipe: IO[bytes], into: list[str]) -> None:
    for raw in pipe:
        into.append(raw.decode(errors="replace").rstrip("\n"))
