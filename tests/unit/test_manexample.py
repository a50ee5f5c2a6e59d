"""The example driver of devfsd-module(9), in-process.

``tests/modules/manexample`` is the EXAMPLES section of
``man/devfsd-module.9`` copied verbatim (the first test checks that it
still is), so these tests show that a driver written from the page works:
open, write, read, sleep and wake, non-blocking reads, poll and its
notification, ioctl, load properties, FINI and AUTOUNLOAD, autoload.
Each test gets its kernel from the ``devfsd_kernel`` fixture of devfsd's
pytest plugin, searching the directories of the ``devfsd_modpath`` marker,
and runs twice: the driver in process and isolated, in a module host of its
own (the plugin's ``devfsd_isolated``).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
import trio
import trio.testing

from devfsd.cdevsw import IOR, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, devsw
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd
from devfsd.testing.harness import Kernel

ROOT = Path(__file__).resolve().parents[2]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of ``devfsd_kernel`` both ways (the plugin's ``devfsd_isolated``)."""
    if "devfsd_kernel" in metafunc.fixturenames:
        metafunc.parametrize("devfsd_isolated", [False, True], ids=["in-process", "isolated"])


MODS = ROOT / "tests" / "modules"
MANEXAMPLE = MODS / "manexample"
PAGE = ROOT / "man" / "devfsd-module.9"

#: As the page documents it: _IOR('b', 1, uint32_t).
BCASTGLEN = IOR(ord("b"), 1, 4)
#: A thread id above Linux's PID_MAX_LIMIT (2**22): never a live process.
GONE_PID = (1 << 22) + 1
#: Seconds before a read that should not sleep counts as hung.
FAIL_AFTER = 5

# The example lives in ``tests/modules/manexample`` but calls itself
# ``bcast``, and a load by name looks for ``DIR/bcast``: tests load it by path.
pytestmark = pytest.mark.devfsd_modpath(MODS)


class FakePollHandle:
    """Stands in for pyfuse3's poll handle: counts notifications."""

    def __init__(self) -> None:
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


def page_example() -> str:
    """The driver printed in the page's EXAMPLES section, unescaped."""
    src = PAGE.read_text()
    m = re.search(r'^\.\\" BEGIN bcast\n\.Bd -literal\n(.*?)^\.Ed\n\.\\" END bcast$', src, re.M | re.S)
    assert m, "no bcast example in the page"
    return re.sub(r"^\\&", "", m.group(1), flags=re.M).replace("\\e", "\\")


def test_module_is_the_pages_example() -> None:
    assert (MANEXAMPLE / "__init__.py").read_text() == page_example()


async def test_an_open_reads_only_what_follows_it(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    w = await k.open("bcast", 0)
    assert await w.write(b"early ") == 6
    r = await k.open("bcast", 0, os.O_RDONLY)
    assert await w.write(b"late") == 4
    assert await r.read(100) == b"late"
    assert await w.read(3) == b"ear"
    assert await w.read(100) == b"ly late"


async def test_read_sleeps_until_a_write(devfsd_kernel: Kernel) -> None:
    got: list[bytes] = []
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    r = await k.open("bcast", 0)
    w = await k.open("bcast", 0)

    async def reader() -> None:
        got.append(await r.read(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await w.write(b"wake up")
    assert got == [b"wake up"]


async def test_nonblocking_read_with_nothing_is_ewouldblock(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    r = await k.open("bcast", 0, os.O_RDONLY | os.O_NONBLOCK)
    with pytest.raises(DeviceError) as ei, trio.fail_after(FAIL_AFTER):
        await r.read(10)
    assert ei.value.errno == errno.EWOULDBLOCK


async def test_minors_are_separate_units(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    a = await k.open("bcast", 0)
    b = await k.open("bcast", 1, os.O_RDWR | os.O_NONBLOCK)
    await a.write(b"for unit 0")
    with pytest.raises(DeviceError) as ei, trio.fail_after(FAIL_AFTER):
        await b.read(10)
    assert ei.value.errno == errno.EWOULDBLOCK


async def test_sleeping_reader_whose_process_is_gone_gets_eintr(devfsd_kernel: Kernel) -> None:
    # In real time (the first look at the caller is 50 ms in): a virtual
    # clock cannot drive an isolated driver's host process.
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    r = await k.open("bcast", 0, pid=GONE_PID)
    with pytest.raises(DeviceError) as ei, trio.fail_after(FAIL_AFTER):
        await r.read(10)
    assert ei.value.errno == errno.EINTR


async def test_poll_and_its_notification(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    r = await k.open("bcast", 0)
    w = await k.open("bcast", 0)
    h = FakePollHandle()
    assert await k.spec.poll(r.fp, poll_handle=h) == POLLOUT | POLLWRNORM
    assert h.notified == 0
    await w.write(b"x")
    assert h.notified == 1
    assert await r.poll() == POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM
    assert await r.poll(POLLIN) == POLLIN
    await w.write(b"y")
    assert h.notified == 1  # a handle is notified once


async def test_reader_that_fell_behind_loses_the_oldest_bytes(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE), {"maxlen": 4})
    r = await k.open("bcast", 0)
    w = await k.open("bcast", 0)
    await w.write(b"abc")
    await w.write(b"def")
    assert await r.read(100) == b"cdef"


@pytest.mark.parametrize("bad", [0, -1, True, "8"])
async def test_bad_maxlen_fails_init_and_leaves_nothing(devfsd_kernel: Kernel, bad: int | bool | str) -> None:
    k = devfsd_kernel
    with pytest.raises(DeviceError) as ei:
        await k.modload(str(MANEXAMPLE), {"maxlen": bad})
    assert ei.value.errno == errno.EINVAL
    assert k.loader.stat() == []
    assert devsw.getmajor("bcast") is None


async def test_ioctl_reports_the_bytes_kept(devfsd_kernel: Kernel) -> None:
    assert BCASTGLEN == 0x40046201
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    w = await k.open("bcast", 3)
    await w.write(b"hello")
    out = await k.ioctl("bcast", 3, BCASTGLEN)
    assert struct.unpack("=I", out[:4]) == (5,)
    with pytest.raises(DeviceError) as ei:
        await k.ioctl("bcast", 3, IOR(ord("b"), 2, 4))
    assert ei.value.errno == errno.ENOTTY


async def test_fini_refuses_while_a_node_is_open(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    a = await k.open("bcast", 0)
    b = await k.open("bcast", 0)
    await a.close()
    with pytest.raises(DeviceError) as ei:
        await k.modunload("bcast")
    assert ei.value.errno == errno.EBUSY
    await b.close()  # the last close of the dev
    await k.modunload("bcast")
    maj = devsw.getmajor("bcast")
    assert maj is not None and devsw.lookup(maj) is None


async def test_autounload_is_vetoed_while_bytes_are_kept(devfsd_kernel: Kernel) -> None:
    k = devfsd_kernel
    await k.modload(str(MANEXAMPLE))
    mod = k.loader.modules["bcast"]
    await mod.modcmd(ModCmd.AUTOUNLOAD, None)
    w = await k.open("bcast", 0)
    await w.write(b"keep me")
    with pytest.raises(DeviceError) as ei:
        await mod.modcmd(ModCmd.AUTOUNLOAD, None)
    assert ei.value.errno == errno.EBUSY


async def test_opening_a_node_autoloads_the_module_of_that_name(tmp_path: Path) -> None:
    # Autoload finds a module by name only: give the example its own, and a
    # kernel of this test's own rather than the devfsd_kernel fixture.
    shutil.copytree(MANEXAMPLE, tmp_path / "bcast")  # a symlink out of the module path is refused
    async with Kernel.running([tmp_path]) as k:
        await k.modload("bcast")
        await k.modunload("bcast")
        f = await k.open("bcast", 0)
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("bcast", "a")]
        await f.close()
