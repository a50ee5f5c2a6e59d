"""crashy: a test driver that kills its own process on request (for modload -I).

Minor 0: a read returns ``ok\\n`` and a write of a command does it:
``segv`` (a NULL read through ctypes), ``abort``, ``exit`` (``os._exit(3)``),
``kill`` (SIGKILL to itself), ``stop`` (SIGSTOP to itself: a host that no
longer answers), ``hog`` (allocate 1 GiB), ``spin`` (a Python loop the stall watchdog ends),
``child`` (start ``sleep 600``, a child process), ``orphan`` (a
double fork: a grandchild in a session of its own, its parent gone, that
keeps every descriptor and mapping of the host's and sleeps 600 s without
``exec``), anything else is taken and ignored. Minor 1: reads sleep until
a write to minor 1 queues a message (as msgq). Minor 2: a read returns
the process id; minor 3, the last child's (or orphan's).
Load property ``initcrash`` (bool): INIT segfaults; ``inithang`` (a
path): INIT says so in the log and waits while that file exists.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
import time
from collections import deque

import trio

from devfsd.cdevsw import (
    POLLIN,
    POLLOUT,
    POLLRDNORM,
    POLLWRNORM,
    Cdevsw,
    Dev,
    DeviceError,
    Lwp,
    Uio,
    WaitChannel,
    devsw_attach,
    devsw_detach,
    minor,
    nullclose,
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="crashy", cls=ModuleClass.DRIVER)

queue: deque[bytes] = deque()
chan = WaitChannel("crashy")
hog: list[bytearray] = []
children: list[subprocess.Popen[bytes]] = []
#: The last child's or orphan's pid.
last_child = 0


def orphan() -> int:
    """Start a grandchild that leaves the host's session and outlives its
    parent, holding the host's descriptors (no exec); its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.write(w, b"%d" % os.getpid())
                os.close(w)
                time.sleep(600)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        return int(f.read() or 0)


def segv() -> None:
    ctypes.string_at(0)


def do(cmd: bytes) -> None:
    global last_child
    if cmd == b"segv":
        segv()
    elif cmd == b"abort":
        os.abort()
    elif cmd == b"exit":
        os._exit(3)
    elif cmd == b"kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif cmd == b"stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif cmd == b"hog":
        hog.append(bytearray(1 << 30))
    elif cmd == b"child":
        children.append(subprocess.Popen(["sleep", "600"]))
        last_child = children[-1].pid
    elif cmd == b"orphan":
        last_child = orphan()
    elif cmd == b"spin":
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass


async def crashy_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    m = minor(dev)
    if m == 0:
        uio.uiomove(b"ok\n")
    elif m == 1:
        while not queue:
            if uio.nonblock:
                raise DeviceError(errno.EAGAIN)
            await chan.sleep(uio.lwp)
        uio.uiomove(queue.popleft())
    elif m == 2:
        uio.uiomove(f"{os.getpid()}\n".encode())
    else:
        uio.uiomove(f"{last_child}\n".encode())


async def crashy_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    data = uio.getbytes()
    if minor(dev) == 1:
        queue.append(data)
        chan.wakeup()
    else:
        do(data.strip())


async def crashy_poll(dev: Dev, events: int, l: Lwp) -> int:
    revents = events & (POLLOUT | POLLWRNORM)
    if minor(dev) != 1 or queue:
        revents |= events & (POLLIN | POLLRDNORM)
    else:
        chan.selrecord(l)
    return revents


async def crashy_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if minor(dev) > 3:
        raise DeviceError(errno.ENXIO)


cdevsw = Cdevsw(
    d_open=crashy_open,
    d_close=nullclose,
    d_read=crashy_read,
    d_write=crashy_write,
    d_poll=crashy_poll,
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    if cmd == ModCmd.INIT:
        if props and props.get("initcrash") is True:
            segv()
        hang = props.get("inithang") if props else None
        if isinstance(hang, str) and await trio.Path(hang).exists():
            logging.getLogger(__name__).warning("INIT waits while %s exists", hang)
            while await trio.Path(hang).exists():  # noqa: ASYNC110 - a file, no event
                await trio.sleep(0.05)
        devsw_attach("crashy", cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
