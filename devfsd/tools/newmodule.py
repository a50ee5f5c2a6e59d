"""``devfsd new-module NAME [DIR]``: write a driver module skeleton.

Touches the world (writes files). ``DIR/NAME`` gets a small working driver
(a loopback: what is written to a unit is read back from it, in order),
its tests (in-process through the ``devfsd_kernel`` fixture, and on a real
mount through ``devfsd_mount``), a man page stub and a ``devfsd regress``
scenario. All of it passes, and the page lints clean (plain ``mandoc
-Tlint``: devfsd's own pages are named, not ``.Xr``-referenced, since
mandoc reports a reference to a page it cannot find), as generated. An
existing ``DIR/NAME`` is never touched.
"""

from __future__ import annotations

import errno
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from devfsd.cdevsw._table import check_name
from devfsd.errors import DeviceError
from devfsd.kern.module import validate_module_name
from devfsd.tools import err
from devfsd.tools.argparser import ArgumentParser

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

__all__ = ["main", "render", "write_module"]

PROG: Final = "devfsd"

DRIVER: Final = '''\
"""@NAME@: a loopback device; what is written to a unit is read back from it.

Each minor keeps the bytes written to it, up to "maxlen" (a load
property, default 65536; a write past it is EAGAIN).  A read takes the
oldest bytes, sleeping while there are none (EAGAIN if the open is
non-blocking).  poll: readable when the unit holds bytes, writable
while it has room.  FINI refuses (EBUSY) while a unit is open.
"""

from __future__ import annotations

import errno

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
)
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="@NAME@", cls=ModuleClass.DRIVER)


class Unit:
    """One minor's state (its softc)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.chan = WaitChannel("@NAME@")


maxlen = 65536
units: dict[int, Unit] = {}
open_devs: set[Dev] = set()


def unit(dev: Dev) -> Unit:
    return units.setdefault(minor(dev), Unit())


async def @ID@_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    open_devs.add(dev)


async def @ID@_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    open_devs.discard(dev)  # the last close of dev


async def @ID@_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    while not u.buf:
        if uio.nonblock:
            raise DeviceError(errno.EWOULDBLOCK)
        await u.chan.sleep(uio.lwp)  # EINTR, ENXIO: passed on
    n = uio.uiomove(bytes(u.buf[: uio.resid]))
    del u.buf[:n]
    u.chan.wakeup()  # room for writers' pollers


async def @ID@_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    u = unit(dev)
    if len(u.buf) + uio.resid > maxlen:
        raise DeviceError(errno.EAGAIN)
    u.buf += uio.getbytes()
    u.chan.wakeup()  # sleeping readers and waiting pollers


async def @ID@_poll(dev: Dev, events: int, l: Lwp) -> int:
    # Record the poll for each condition asked for and not ready, even
    # when another is: poll(2) asks for POLLIN and POLLOUT together.
    u = unit(dev)
    revents = 0
    if u.buf:
        revents |= events & (POLLIN | POLLRDNORM)
    elif events & (POLLIN | POLLRDNORM):
        u.chan.selrecord(l)  # the next wakeup() notifies this poll
    if len(u.buf) < maxlen:
        revents |= events & (POLLOUT | POLLWRNORM)
    elif events & (POLLOUT | POLLWRNORM):
        u.chan.selrecord(l)
    return revents


@ID@_cdevsw = Cdevsw(
    d_open=@ID@_open,
    d_close=@ID@_close,
    d_read=@ID@_read,
    d_write=@ID@_write,
    d_poll=@ID@_poll,
)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global maxlen
    if cmd == ModCmd.INIT:
        n = (props or {}).get("maxlen", 65536)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DeviceError(errno.EINVAL, "maxlen must be >= 1")
        maxlen = n
        units.clear()
        devsw_attach("@NAME@", @ID@_cdevsw)
    elif cmd == ModCmd.FINI:
        if open_devs:
            raise DeviceError(errno.EBUSY)
        devsw_detach(@ID@_cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
'''

TESTS: Final = '''\
"""@NAME@'s tests: in-process through devfsd's pytest plugin, and on a real mount.

Run with ``python -m pytest @NAME@/tests``. The fixtures (devfsd_kernel,
devfsd_mount, devfsd_run) come with devfsd; see devfsd-module(9), TESTING.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from devfsd.cdevsw import POLLIN, POLLOUT
from devfsd.errors import DeviceError
from devfsd.testing.mount import wait_for
from devfsd.testing.regress import run_script

if TYPE_CHECKING:
    from devfsd.testing.harness import Kernel
    from devfsd.testing.plugin import MountFactory, RunFn

HERE = Path(__file__).resolve().parent.parent  # the module's directory
MODDIR = HERE.parent  # the module directory it is searched in

pytestmark = pytest.mark.devfsd_modpath(MODDIR)


@pytest.mark.trio
async def test_reads_back_what_was_written(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("@NAME@")
    f = await k.open("@NAME@", 0)
    assert await f.write(b"hello") == 5
    assert await f.read(3) == b"hel"
    assert await f.read(100) == b"lo"
    await f.close()


@pytest.mark.trio
async def test_read_sleeps_until_a_write(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("@NAME@")
    r = await k.open("@NAME@", 0, os.O_RDONLY)
    w = await k.open("@NAME@", 0, os.O_WRONLY)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await r.read(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await w.write(b"wake")
    assert got == [b"wake"]


@pytest.mark.trio
async def test_nonblocking_read_and_poll(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("@NAME@", {"maxlen": 4})
    f = await k.open("@NAME@", 1, os.O_RDWR | os.O_NONBLOCK)
    with pytest.raises(DeviceError) as ei:
        await f.read(10)
    assert ei.value.errno == errno.EWOULDBLOCK
    assert await f.poll(POLLIN | POLLOUT) == POLLOUT
    await f.write(b"full")
    with pytest.raises(DeviceError) as ei:
        await f.write(b"x")
    assert ei.value.errno == errno.EAGAIN
    assert await f.poll(POLLIN | POLLOUT) == POLLIN


class PollHandle:
    """Stands in for the kernel's poll handle: counts notifications."""

    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


@pytest.mark.trio
async def test_a_write_notifies_a_waiting_poll(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("@NAME@")
    f = await k.open("@NAME@", 2, os.O_RDWR | os.O_NONBLOCK)
    h = PollHandle()
    # As the kernel asks: POLLIN and POLLOUT together, on an empty unit.
    assert await f.poll(POLLIN | POLLOUT, h) == POLLOUT
    await f.write(b"x")
    assert h.notified == 1


@pytest.mark.trio
async def test_fini_refuses_while_open(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload("@NAME@")
    f = await k.open("@NAME@", 0)
    with pytest.raises(DeviceError) as ei:
        await k.modunload("@NAME@")
    assert ei.value.errno == errno.EBUSY
    await f.close()
    await k.modunload("@NAME@")


@pytest.mark.fuse
def test_on_a_real_mount(devfsd_mount: MountFactory, devfsd_run: RunFn) -> None:
    m = devfsd_mount(modules=["@NAME@"], nodes={"@NAME@0": ("@NAME@", 0)})
    r = devfsd_run('printf hello > "$DEV/@NAME@0" && head -c 5 "$DEV/@NAME@0"', m)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"hello", b"")


#: Seconds a wait that should end may take before the test fails.
BOUND = 5.0

POLLER = """\\
import os, select, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
p = select.poll()
p.register(fd, select.POLLIN)
print(p.poll(-1) == [(fd, select.POLLIN)], os.read(fd, 100).decode(), flush=True)
"""


def asleep_in_poll(pid: int) -> bool:
    with open(f"/proc/{pid}/wchan") as f:
        return "poll" in f.read()


@pytest.mark.fuse
def test_poll_on_a_real_mount_wakes_on_a_write(devfsd_mount: MountFactory) -> None:
    m = devfsd_mount(modules=["@NAME@"], nodes={"@NAME@0": ("@NAME@", 0)})
    node = m.path / "@NAME@0"
    p = subprocess.Popen([sys.executable, "-c", POLLER, str(node)], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: asleep_in_poll(p.pid), BOUND, "the poller to block")
        with open(node, "wb", buffering=0) as w:
            w.write(b"wake")
        out, _ = p.communicate(timeout=BOUND)  # a poll never woken fails here
        assert out == "True wake\\n"
    finally:
        p.kill()
        p.communicate()


@pytest.mark.fuse
def test_regress_script() -> None:
    r = run_script(HERE / "regress.sh", [str(HERE)])
    assert r.passed, r.stdout + r.stderr + r.log
'''

PAGE: Final = """\
.Dd @DATE@
.Dt @UNAME@ 4
.Os
.Sh NAME
.Nm @NAME@
.Nd loopback device for devfsd
.Sh SYNOPSIS
.Nm modload Ar @NAME@
.Nm devfs-mknod Pa /dev/@NAME@0 Cm c Ar @NAME@ 0
.Sh DESCRIPTION
Each unit of
.Nm
keeps the bytes written to it, up to
.Va maxlen
.Pq a load property, default 65536 ,
and a read returns the oldest of them.
A read of an empty unit sleeps until a write, or fails with
.Er EAGAIN
if the file is non-blocking.
The unit is readable for
.Xr poll 2
while it holds bytes and writable while it has room.
.Sh ERRORS
.Bl -tag -width Er
.It Bq Er EAGAIN
A write would pass
.Va maxlen ,
or a non-blocking read found the unit empty.
.It Bq Er EBUSY
.Sy modunload Ns (8)
while a unit is open.
.El
.Sh SEE ALSO
.Xr poll 2 ,
.Sy devfsd Ns (8) ,
.Sy devfsd-module Ns (9)
"""

REGRESS: Final = """\
# @NAME@ at the shell, against a fresh devfsd:
#   devfsd regress --module @DIR@ @DIR@/regress.sh
. "$DEVFSD_REGRESS_LIB"

mknod_c @NAME@0 @NAME@ 0
check_exit 0 sh -c 'printf hello > "$DEV/@NAME@0"'
check_out hello head -c 5 "$DEV/@NAME@0"
exec 3<>"$DEV/@NAME@0"
check_err "modunload: @NAME@: Device or resource busy" modunload @NAME@
exec 3<&-
check_exit 0 modunload @NAME@
"""


def _ident(name: str) -> str:
    ident = re.sub(r"\W", "_", name)
    return f"_{ident}" if ident[0].isdigit() else ident


def render(name: str, moddir: Path) -> dict[str, str]:
    """The skeleton's files, relative path to text."""
    subst = {
        "@NAME@": name,
        "@UNAME@": name.upper(),
        "@ID@": _ident(name),
        "@DATE@": time.strftime("%B %-d, %Y"),
        "@DIR@": str(moddir),
    }

    def fill(text: str) -> str:
        return re.sub("|".join(map(re.escape, subst)), lambda m: subst[m.group(0)], text)

    return {
        "__init__.py": fill(DRIVER),
        f"tests/test_{_ident(name)}.py": fill(TESTS),
        f"{name}.4": fill(PAGE),
        "regress.sh": fill(REGRESS),
    }


def write_module(name: str, directory: str | os.PathLike[str] = ".") -> Path:
    """Write ``directory/name``; returns it.

    Raises:
        DeviceError: a bad module name, or one its driver cannot take
            (``check_name``: the generated INIT attaches under it).
        FileExistsError: ``directory/name`` exists.
    """
    validate_module_name(name)
    check_name(name)
    moddir = Path(directory) / name
    moddir.mkdir()  # FileExistsError: never overwrite
    for rel, text in render(name, moddir).items():
        p = moddir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return moddir


def main(argv: Sequence[str] | None = None) -> int:
    """``devfsd new-module NAME [DIR]``."""
    p = ArgumentParser(
        prog=f"{PROG} new-module",
        description="Write a working driver module skeleton, with tests, a man page and a regress script.",
    )
    p.add_argument("name", metavar="NAME", help="the module's name (and its driver's)")
    p.add_argument("dir", metavar="DIR", nargs="?", default=".", help="where to put NAME/ (default: .)")
    a = p.parse_args(argv)
    try:
        moddir = write_module(a.name, a.dir)
    except DeviceError as exc:
        return err(PROG, a.name, exc.errno)
    except OSError as exc:
        return err(PROG, exc.filename, exc.errno or errno.EIO)
    print(f"{moddir}: test with: python -m pytest {moddir}/tests")
    return 0
