"""Tracing the calls that reach drivers: events, tracers and the hub.

Imports no trio, pyfuse3, socket or time: the clocks are passed in. What
``devfsd trace`` shows (devfsd(8), TRACING) is made here; ``specfs.py``
feeds it, ``control/server.py`` carries it to the tracer.

Theory of operation. ``SpecFs`` holds ``trace``: ``None`` while nobody
traces, which is all the I/O path ever tests (one attribute and ``is
None`` per call, so an untraced daemon pays nothing measurable: see
bench/README.md). While a ``Tracer`` is attached it is the ``TraceHub``,
and each entry point's call runs through ``TraceHub.call`` or
``TraceHub.rw``, which time it and hand one ``TraceEvent`` to every
attached tracer whose filter (one ``dev``, or every ``dev`` of one major)
takes it.

A tracer must never slow or block the daemon or the traced process, so
``Tracer.push`` does not wait for anything: it appends to a bounded buffer
and, once that is full, counts the event as dropped instead. The transport
drains the buffer at its own pace (``Tracer.take``), reports the drops
with the next batch, and is woken by ``Tracer.on_ready``, a plain
callback. A tracer limited to ``count`` events stops taking them after the
last (shown or dropped) and says so with ``done``; detaching it is the
transport's job (``SpecFs.tracing``), which it does also when its client
goes away.

What is traced is what reaches a driver's entry point: a call refused
before it (``ENXIO``: no driver, or a file whose driver was unloaded; a
0-byte read) is not shown. The result is what the caller gets, after the
I/O path's rules (a driver's bug is ``EIO``, a hang ``ETIMEDOUT``, bytes
moved win over ``EINTR``); the duration includes time asleep.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final, NamedTuple, TypeVar, final

from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from devfsd.cdevsw._uio import Uio

__all__ = [
    "CALLS",
    "DEFAULT_BUFFER",
    "MAX_BATCH",
    "MAX_BUFFER",
    "TraceEvent",
    "TraceHub",
    "Tracer",
]

#: The entry points traced, by the names events carry.
CALLS: Final = ("open", "read", "write", "poll", "ioctl", "close")
#: Events a tracer holds, unsent, before it drops (``devfsd trace -b``).
DEFAULT_BUFFER: Final = 4096
MAX_BUFFER: Final = 1 << 16
#: Events ``take`` hands out at a time (one control message).
MAX_BATCH: Final = 512

_T = TypeVar("_T")


class TraceEvent(NamedTuple):
    """One call into a driver, as a tuple (a JSON array on the wire).

    ``a`` and ``b`` depend on ``call``:

    =====================  ==================  ===================
    call                   a                   b
    =====================  ==================  ===================
    ``open``, ``close``    the file's flags    0
    ``read``, ``write``    bytes asked         bytes moved
    ``poll``               events asked        revents answered
    ``ioctl``              the command         parameter bytes
    =====================  ==================  ===================

    Flags are devfsd's ``FREAD``, ``FWRITE``, ``FNONBLOCK``.
    """

    #: Wall clock when the call returned, ns since the epoch (its start
    #: plus its duration): events come in the order calls return, as
    #: kdump(1)'s RET lines, so their times never go backwards.
    time_ns: int
    pid: int
    dev: int
    call: str
    a: int
    b: int
    #: 0, or the errno the caller got.
    errno: int
    #: How long the call took, in µs.
    usec: int


@final
class Tracer:
    """One client's view: a filter, a bounded buffer and a drop count.

    Args:
        dev: trace this device number only, or
        major: every device number of this major (exactly one of the two).
        buffer: events held before dropping (1 to ``MAX_BUFFER``).
        count: stop after this many events (shown or dropped), or ``None``.
    """

    __slots__ = ("_buf", "buffer", "count", "dev", "dropped", "major", "on_ready", "seen", "total_dropped")

    def __init__(
        self,
        *,
        dev: int | None = None,
        major: int | None = None,
        buffer: int = DEFAULT_BUFFER,
        count: int | None = None,
    ) -> None:
        if (dev is None) == (major is None):
            raise ValueError("a tracer takes exactly one of dev and major")
        if not 1 <= buffer <= MAX_BUFFER:
            raise ValueError(f"buffer must be 1 to {MAX_BUFFER}")
        if count is not None and count < 1:
            raise ValueError("count must be positive")
        self.dev = dev
        self.major = major
        self.buffer = buffer
        self.count = count
        self._buf: list[TraceEvent] = []
        #: Events dropped since the last ``take``.
        self.dropped = 0
        self.total_dropped = 0
        #: Events pushed (shown or dropped).
        self.seen = 0
        #: Called after each push, to wake the transport. Must not block.
        self.on_ready: Callable[[], object] | None = None

    def wants(self, dev: int) -> bool:
        """Whether this tracer takes events of ``dev``."""
        if self.dev is not None:
            return dev == self.dev
        return _major(dev) == self.major

    @property
    def done(self) -> bool:
        """``count`` events seen: nothing more will be taken."""
        return self.count is not None and self.seen >= self.count

    @property
    def pending(self) -> bool:
        """Events or drops not yet handed out by ``take``."""
        return bool(self._buf) or self.dropped > 0

    def push(self, ev: TraceEvent) -> None:
        """Take one event, or count it dropped if the buffer is full. Never blocks."""
        if self.done:
            return
        self.seen += 1
        if len(self._buf) < self.buffer:
            self._buf.append(ev)
        else:
            self.dropped += 1
            self.total_dropped += 1
        if self.on_ready is not None:
            self.on_ready()

    def take(self, limit: int = MAX_BATCH) -> tuple[list[TraceEvent], int]:
        """The oldest ``limit`` events held, and the drops since the last take."""
        out, self._buf = self._buf[:limit], self._buf[limit:]
        dropped, self.dropped = self.dropped, 0
        return out, dropped


def _major(dev: int) -> int:
    # devfsd.cdevsw._dev.major, repeated: importing devfsd.cdevsw imports trio.
    return ((dev >> 32) & 0xFFFFF000) | ((dev >> 8) & 0xFFF)


@final
class TraceHub:
    """The attached tracers, and the wrappers the I/O path calls through.

    Args:
        clock: wall clock in ns since the epoch (``time.time_ns``).
        timer: a monotonic ns counter for durations (``time.perf_counter_ns``).
    """

    __slots__ = ("clock", "timer", "tracers")

    def __init__(self, clock: Callable[[], int], timer: Callable[[], int]) -> None:
        self.clock = clock
        self.timer = timer
        self.tracers: list[Tracer] = []

    def attach(self, tracer: Tracer) -> None:
        self.tracers.append(tracer)

    def detach(self, tracer: Tracer) -> None:
        """Remove ``tracer``; one that is not attached is ignored."""
        if tracer in self.tracers:
            self.tracers.remove(tracer)

    def _emit(self, tracers: list[Tracer], ev: TraceEvent) -> None:
        for t in tracers:
            t.push(ev)

    async def call(self, aw: Awaitable[_T], call: str, dev: int, pid: int, a: int = 0, b: int = 0) -> _T:
        """Await ``aw`` (one entry point, through ``SpecFs``) and record it.

        For ``poll``, ``b`` is taken from the result (revents).
        """
        tracers = [t for t in self.tracers if t.wants(dev)]
        if not tracers:
            return await aw
        start, t0 = self.clock(), self.timer()
        err = errno.ECANCELED
        try:
            rv = await aw
            err = 0
            if call == "poll" and isinstance(rv, int):
                b = rv
            return rv
        except DeviceError as exc:
            err = exc.errno
            raise
        finally:
            ns = self.timer() - t0
            self._emit(tracers, TraceEvent(start + ns, pid, dev, call, a, b, err, ns // 1000))

    async def rw(self, aw: Awaitable[None], call: str, dev: int, pid: int, uio: Uio) -> None:
        """``call`` for ``d_read``/``d_write``: bytes asked and moved from ``uio``."""
        tracers = [t for t in self.tracers if t.wants(dev)]
        if not tracers:
            return await aw
        asked = uio.resid
        start, t0 = self.clock(), self.timer()
        err = errno.ECANCELED
        try:
            await aw
            err = 0
        except DeviceError as exc:
            err = exc.errno
            raise
        finally:
            ns = self.timer() - t0
            ev = TraceEvent(start + ns, pid, dev, call, asked, asked - uio.resid, err, ns // 1000)
            self._emit(tracers, ev)
