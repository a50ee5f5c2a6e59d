"""Hot reload: ``modunload X; modload X`` runs the code as it is now.

The loader imports a module afresh on every load (it purges
``devfsd_modules.X`` at unload and never trusts a stale bytecode cache), so
a driver can be edited and reloaded without remounting. With files open
the NetBSD rules hold: FINI may refuse (``EBUSY``, the old code stays);
if it agrees, the old files get ``ENXIO`` and new opens reach the new code.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from pathlib import Path

    from devfsd.testing.harness import Kernel
    from devfsd.testing.plugin import MountFactory, RunFn

#: A driver whose reads answer VERSION; "keep" makes FINI refuse while open.
SOURCE = """\
import errno

from devfsd.cdevsw import Cdevsw, DeviceError, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

MODULE = ModuleInfo(name="hot", cls=ModuleClass.DRIVER)
VERSION = b"v1"
KEEP = False
opens = 0


async def hot_open(dev, flag, mode, l):
    global opens
    opens += 1


async def hot_close(dev, flag, mode, l):
    global opens
    opens = 0


async def hot_read(dev, uio, ioflag):
    uio.uiomove(VERSION[: uio.resid])


sw = Cdevsw(d_open=hot_open, d_close=hot_close, d_read=hot_read)


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        devsw_attach("hot", sw)
    elif cmd == ModCmd.FINI:
        if KEEP and opens:
            raise DeviceError(errno.EBUSY)
        devsw_detach(sw)
    else:
        raise DeviceError(errno.ENOTTY)
"""


def read(node: Path) -> bytes:
    """One read(2) of a fresh open (the driver never says end of file)."""
    fd = os.open(node, os.O_RDONLY)
    try:
        return os.read(fd, 10)
    finally:
        os.close(fd)


def write(mods: Path, version: bytes, *, keep: bool = False) -> None:
    """The same size whatever the version: a bytecode cache checked by
    size and whole-second mtime alone would not see the change."""
    (mods / "hot").mkdir(exist_ok=True)
    src = SOURCE.replace('b"v1"', repr(version)).replace("KEEP = False", f"KEEP = {keep!s:5}")
    (mods / "hot" / "__init__.py").write_text(src)


async def test_reload_in_process_runs_the_new_code(devfsd_kernel: Kernel, tmp_path: Path) -> None:
    write(tmp_path, b"v1")
    devfsd_kernel.loader.modpath.insert(0, tmp_path)
    await devfsd_kernel.modload("hot")
    f = await devfsd_kernel.open("hot", 0)
    assert await f.read(10) == b"v1"
    await f.close()
    await devfsd_kernel.modunload("hot")
    write(tmp_path, b"v2")
    await devfsd_kernel.modload("hot")
    f = await devfsd_kernel.open("hot", 0)
    assert await f.read(10) == b"v2"
    await f.close()


@pytest.mark.fuse
@pytest.mark.slow
@pytest.mark.parametrize("isolate", [[], ["--isolate"]], ids=["in-process", "isolated"])
def test_reload_on_a_mount(
    devfsd_mount: MountFactory, devfsd_run: RunFn, tmp_path: Path, isolate: list[str]
) -> None:
    mods = tmp_path / "mods"
    mods.mkdir()
    write(mods, b"v1")
    m = devfsd_mount(modules=["hot"], nodes={"hot": ("hot", 0)}, modpath=[mods], args=isolate)
    node = m.path / "hot"
    assert read(node) == b"v1"
    for version in (b"v2", b"v3"):
        write(mods, version)
        r = devfsd_run("modunload hot && modload hot", m)
        assert r.returncode == 0, r.stderr
        assert read(node) == version

    # Open files: FINI refuses, the old code stays.
    write(mods, b"v4", keep=True)
    devfsd_run("modunload hot && modload hot", m)
    fd = os.open(node, os.O_RDONLY)
    try:
        r = devfsd_run("modunload hot", m)
        assert (r.returncode, r.stderr) == (1, b"modunload: hot: Device or resource busy\n")
        assert os.read(fd, 10) == b"v4"
    finally:
        os.close(fd)

    # FINI agrees: the old file gets ENXIO, a new open the new code.
    write(mods, b"v5")
    devfsd_run("modunload hot && modload hot", m)
    fd = os.open(node, os.O_RDONLY)
    try:
        write(mods, b"v6")
        r = devfsd_run("modunload hot && modload hot", m)
        assert r.returncode == 0, r.stderr
        with pytest.raises(OSError) as ei:
            os.read(fd, 10)
        assert ei.value.errno == errno.ENXIO
    finally:
        os.close(fd)
    assert read(node) == b"v6"


def test_a_module_that_no_longer_imports_fails_and_leaves_nothing(tmp_path: Path) -> None:
    # Kept sync: just the loader's answer, through a fresh kernel.
    import trio

    from devfsd.testing.harness import Kernel as K

    async def go() -> None:
        write(tmp_path, b"v1")
        async with K.running([tmp_path]) as k:
            await k.modload("hot")
            await k.modunload("hot")
            (tmp_path / "hot" / "__init__.py").write_text("syntax error(\n")
            with pytest.raises(DeviceError) as ei:
                await k.modload("hot")
            assert ei.value.errno == errno.ENOEXEC
            assert k.loader.stat() == []
            write(tmp_path, b"v7")
            await k.modload("hot")
            f = await k.open("hot", 0)
            assert await f.read(10) == b"v7"
            await f.close()

    trio.run(go)
