"""The module framework in-process: load, unload, requirements, errors, autoload."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from devfsd.cdevsw import devsw
from devfsd.errors import DeviceError
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"


def errno_of(excinfo: pytest.ExceptionInfo[DeviceError]) -> int:
    return excinfo.value.errno


async def test_load_attach_unload_detach() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        maj = devsw.getmajor("msgq")
        assert maj is not None and devsw.lookup(maj) is not None
        assert [s.name for s in k.loader.stat()] == ["msgq"]
        await k.modunload("msgq")
        assert devsw.lookup(maj) is None
        assert devsw.getmajor("msgq") == maj  # the name keeps its major
        await k.modload("msgq")
        assert devsw.getmajor("msgq") == maj


@pytest.mark.parametrize(
    ("spec", "err"),
    [
        ("nonexistent", errno.ENOENT),
        ("", errno.ENOENT),
        ("x" * 40, errno.ENAMETOOLONG),
        ("/nonexistent/module", errno.ENOENT),
        ("a\0b", errno.EINVAL),
        ("cyca", errno.EDEADLK),
    ],
)
async def test_load_errors(spec: str, err: int) -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload(spec)
        assert errno_of(ei) == err
        assert k.loader.stat() == []


async def test_load_twice_is_eexist() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        with pytest.raises(DeviceError) as ei:
            await k.modload("msgq")
        assert errno_of(ei) == errno.EEXIST
        with pytest.raises(DeviceError) as ei:
            await k.modload(str(MODS / "msgq"))
        assert errno_of(ei) == errno.EEXIST


async def test_unload_unknown_is_enoent() -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modunload("msgq")
        assert errno_of(ei) == errno.ENOENT


async def test_load_by_path() -> None:
    async with Kernel.running([]) as k:
        await k.modload(str(MODS / "msgq"))
        assert [s.name for s in k.loader.stat()] == ["msgq"]


async def test_requirements_autoload_and_pin() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("needsmsgq")
        rows = {s.name: s for s in k.loader.stat()}
        assert rows["msgq"].flags == "a" and rows["msgq"].refs == 1
        assert rows["needsmsgq"].flags == "-" and rows["needsmsgq"].requires == ("msgq",)
        with pytest.raises(DeviceError) as ei:
            await k.modunload("msgq")
        assert errno_of(ei) == errno.EBUSY
        await k.modunload("needsmsgq")
        assert {s.name: s.refs for s in k.loader.stat()} == {"msgq": 0}


async def test_failed_init_leaves_nothing() -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("badinit")
        assert errno_of(ei) == errno.ENOSPC
        maj = devsw.getmajor("badinit")
        assert maj is not None and devsw.lookup(maj) is None
        await trio.testing.wait_all_tasks_blocked()
        import sys

        assert not any(m.startswith("devfsd_modules.badinit") for m in sys.modules)
        assert k.loader.stat() == []
        await k.modload("badinit", {"ok": True})
        assert devsw.lookup(maj) is not None


async def test_fini_ebusy_keeps_module() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        f = await k.open("msgq", 0)
        with pytest.raises(DeviceError) as ei:
            await k.modunload("msgq")
        assert errno_of(ei) == errno.EBUSY
        assert [s.name for s in k.loader.stat()] == ["msgq"]
        await f.close()
        await k.modunload("msgq")


async def test_props_validated() -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("msgq", {"x": 1.5})  # type: ignore[dict-item]
        assert errno_of(ei) == errno.EINVAL
        with pytest.raises(DeviceError) as ei:
            await k.modload("msgq", {"x": "y" * 5000})
        assert errno_of(ei) == errno.ENOMEM


async def test_open_autoloads_a_named_major() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        await k.modunload("msgq")  # msgq keeps its major, with no driver
        f = await k.open("msgq", 3)
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("msgq", "a")]
        await f.close()


async def _slowinit_unloaded(k: Kernel, tmp_path: Path) -> int:
    """slowinit's major, its driver not loaded: an open autoloads it with no
    properties, and its INIT never ends."""
    await k.modload("slowinit", {"hold": str(tmp_path / "no-such-file")})  # returns at once
    await k.modunload("slowinit")
    maj = devsw.getmajor("slowinit")
    assert maj is not None
    return maj


async def _open_slowinit(k: Kernel, errs: list[int]) -> None:
    """Open slowinit's unit 0; its errno to ``errs``."""
    try:
        await k.open("slowinit", 0)
    except DeviceError as exc:
        errs.append(exc.errno)


async def test_an_autoload_past_its_limit_is_undone_and_its_open_times_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Kernel.running([MODS], entry_timeout=0.1) as k:  # an autoload's limit: 0.2 s
        maj = await _slowinit_unloaded(k, tmp_path)
        for tries in (1, 2):  # the next open tries again
            with pytest.raises(DeviceError) as ei:
                await k.open("slowinit", 0)
            assert errno_of(ei) == errno.ETIMEDOUT
            assert caplog.text.count("autoload of slowinit cancelled: not loaded within 0.2 s") == tries
            assert k.loader.stat() == [] and devsw.lookup(maj) is None and not k.loader.autoloads
            with trio.fail_after(5):  # the lock is free
                await k.modload("msgq")
                await k.modunload("msgq")


async def test_openers_wait_for_one_autoload_even_once_init_attached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # In process, slowinit's INIT attaches its driver before it waits: an
    # open meanwhile waits for the load all the same, and shares its end.
    errs: list[int] = []
    async with Kernel.running([MODS], entry_timeout=0.1) as k:
        maj = await _slowinit_unloaded(k, tmp_path)
        async with trio.open_nursery() as n:
            n.start_soon(_open_slowinit, k, errs)
            with trio.fail_after(5):  # attached by the INIT under way (its import done in a thread)
                while devsw.lookup(maj) is None:  # noqa: ASYNC110 - the switch has no event
                    await trio.sleep(0.005)
            n.start_soon(_open_slowinit, k, errs)
        assert errs == [errno.ETIMEDOUT, errno.ETIMEDOUT]
        assert caplog.text.count("autoload of slowinit cancelled") == 1


async def test_shutdown_cancels_an_autoload_without_a_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errs: list[int] = []
    # The kernel's end wakes the opener (ENXIO) and cancels the load, which
    # holds the lock unload_all takes.
    with trio.fail_after(10):
        async with trio.open_nursery() as n, Kernel.running([MODS], entry_timeout=None) as k:
            await _slowinit_unloaded(k, tmp_path)
            n.start_soon(_open_slowinit, k, errs)
            await trio.testing.wait_all_tasks_blocked()
    assert errs == [errno.ENXIO]
    assert "autoload of slowinit cancelled: devfsd is stopping" in caplog.text


async def test_an_autoload_s_bug_fails_its_open_not_the_loader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The load runs in the loader's nursery: an exception there that no
    # one catches would end the loader (and the daemon), not the open.
    async with Kernel.running([MODS]) as k:
        await _slowinit_unloaded(k, tmp_path)

        async def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a bug")

        with monkeypatch.context() as mp:
            mp.setattr(k.loader, "load", broken)
            with pytest.raises(DeviceError) as ei:
                await k.open("slowinit", 0)
        assert errno_of(ei) == errno.EIO
        assert "autoload of slowinit" in caplog.text and "RuntimeError: a bug" in caplog.text
        await k.modload("msgq")  # the loader runs on
        await k.modunload("msgq")
        assert not k.loader.autoloads


async def test_an_autoload_with_no_loader_running_loads_in_its_caller() -> None:
    from devfsd.kern.loader import ModuleLoader

    loader = ModuleLoader([MODS])  # not run(): no nursery of its own
    devsw.reset()
    try:
        assert await loader.autoload("msgq", limit=5) is True
        assert [(s.name, s.flags) for s in loader.stat()] == [("msgq", "a")]
        assert not loader.autoloads
        await loader.unload("msgq")
    finally:
        devsw.reset()


async def test_open_of_unnamed_major_is_enxio() -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.open(300, 0)
        assert errno_of(ei) == errno.ENXIO


async def test_autoload_by_reserved_name(tmp_path: Path) -> None:
    (tmp_path / "mm").mkdir()
    (tmp_path / "mm" / "__init__.py").write_text(
        (MODS / "msgq" / "__init__.py")
        .read_text()
        .replace('name="msgq"', 'name="mm"')
        .replace('devsw_attach("msgq"', 'devsw_attach("mm"')
    )
    async with Kernel.running([tmp_path]) as k:
        f = await k.open("mm", 0)  # major 2 is reserved for "mm"
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("mm", "a")]
        await f.close()


async def test_autounload_after_quiet_period() -> None:
    async with Kernel.running([MODS], autotime=0.0) as k:
        k.loader.autotime = 10.0
        await k.modload("msgq")
        await k.modunload("msgq")
        f = await k.open("msgq", 0)
        await f.write(b"x")
        assert await f.read(10) == b"x"
        await k.loader._autounload_pass()  # open: not quiet
        assert [s.name for s in k.loader.stat()] == ["msgq"]
        await f.close()
        await k.loader._autounload_pass()  # quiet, but not for 10 s yet
        assert [s.name for s in k.loader.stat()] == ["msgq"]
        # The loader's clock is time.monotonic; make the module look old.
        k.loader.modules["msgq"].last_used -= 11
        await k.loader._autounload_pass()
        assert k.loader.stat() == []


@pytest.mark.parametrize("autounload", [True, False])
async def test_a_loader_run_without_autounload_never_unloads(
    autounload: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """``run(autounload=False)`` (a module host's loader) keeps no
    autounload timer at all: a module quiet for long stays loaded."""
    k = Kernel([MODS], autotime=1.0)
    devsw.reset()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(k.loader.run, autounload=autounload))
            await k.modload("msgq")
            await k.modunload("msgq")
            f = await k.open("msgq", 0)  # autoloaded
            await f.close()
            k.loader.modules["msgq"].last_used -= 100  # quiet for long enough
            await trio.sleep(60)
            assert [s.name for s in k.loader.stat()] == ([] if autounload else ["msgq"])
            if not autounload:
                await k.modunload("msgq")
            nursery.cancel_scope.cancel()
    finally:
        devsw.reset()


async def test_driver_exception_is_eio_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 0)
        with pytest.raises(DeviceError) as ei:
            await f.read(10)
        assert errno_of(ei) == errno.EIO
        assert "ZeroDivisionError" in caplog.text
        g = await k.open("faulty", 1)
        assert await g.read(10) == b"fine\n"
        assert await g.poll() == __import__("select").POLLERR
        await f.close()
        await g.close()


async def test_enxio_after_unload_of_open_file() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("faulty")
        f = await k.open("faulty", 1)
        await k.modunload("faulty")
        with pytest.raises(DeviceError) as ei:
            await f.read(10)
        assert errno_of(ei) == errno.ENXIO
        with pytest.raises(DeviceError) as ei:
            await f.write(b"x")
        assert errno_of(ei) == errno.ENXIO
        await f.close()


async def test_blocking_read_wakes_on_write() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        r = await k.open("msgq", 0, os.O_RDONLY)
        w = await k.open("msgq", 0, os.O_WRONLY)
        got: list[bytes] = []
        async with trio.open_nursery() as n:

            async def reader() -> None:
                got.append(await r.read(100))

            n.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await w.write(b"hello")
        assert got == [b"hello"]
        nb = await k.open("msgq", 0, os.O_RDONLY | os.O_NONBLOCK)
        with pytest.raises(DeviceError) as ei:
            await nb.read(10)
        assert errno_of(ei) == errno.EAGAIN
        for f in (r, w, nb):
            await f.close()


async def test_unload_wakes_sleepers_with_enxio() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        r = await k.open("msgq", 0)
        errs: list[int] = []
        async with trio.open_nursery() as n:

            async def reader() -> None:
                try:
                    await r.read(100)
                except DeviceError as exc:
                    errs.append(exc.errno)

            n.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            # Module refuses while open; the shutdown path aborts sleepers.
            from devfsd.cdevsw._wait import abort_sleepers

            assert abort_sleepers() == 1
        assert errs == [errno.ENXIO]
        await r.close()


async def test_unload_ends_a_sleep_in_d_ioctl() -> None:
    from devfsd.cdevsw import IO

    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        errs: list[int] = []
        async with trio.open_nursery() as n:

            async def waiter() -> None:
                try:
                    await k.ioctl("msgq", 0, IO(ord("m"), 3))
                except DeviceError as exc:
                    errs.append(exc.errno)

            n.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await k.modunload("msgq")  # no file is open: FINI agrees
        assert errs == [errno.ENXIO]


async def test_d_close_only_on_last_close() -> None:
    async with Kernel.running([MODS]) as k:
        await k.modload("msgq")
        mod = k.loader.modules["msgq"].pymod
        a = await k.open("msgq", 0)
        b = await k.open("msgq", 0)
        assert mod.open_devs[a.dev] == 2
        await a.close()
        assert a.dev in mod.open_devs  # d_close not called yet
        await b.close()
        assert a.dev not in mod.open_devs


def _copy_msgq(dst: Path) -> Path:
    import shutil

    shutil.copytree(MODS / "msgq", dst / "msgq", ignore=shutil.ignore_patterns("__pycache__"))
    return dst / "msgq"


@pytest.mark.parametrize("how", ["group-writable", "other-writable", "not-root", "file-writable"])
async def test_unsafe_module_code_is_eperm(tmp_path: Path, how: str) -> None:
    pkg = _copy_msgq(tmp_path)
    if how == "group-writable":  # by a group other than root's
        pkg.chmod(0o775)
        os.chown(pkg, 0, 65534)
    elif how == "other-writable":
        (pkg / "__init__.py").chmod(0o646)
    elif how == "not-root":
        os.chown(pkg / "__init__.py", 65534, 65534)
    else:
        (pkg / "__init__.py").chmod(0o666)
    async with Kernel.running([tmp_path]) as k:
        for spec in ("msgq", str(pkg)):
            with pytest.raises(DeviceError) as ei:
                await k.modload(spec)
            assert errno_of(ei) == errno.EPERM


async def test_module_path_cannot_be_escaped(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _copy_msgq(outside)
    modpath = tmp_path / "mods"
    modpath.mkdir()
    (modpath / "msgq").symlink_to(outside / "msgq")
    async with Kernel.running([modpath]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("msgq")
        assert errno_of(ei) == errno.EPERM
        for bad in ("..", "../msgq", ".hidden", "a b"):
            with pytest.raises(DeviceError) as ei:
                await k.modload(bad) if "/" not in bad else await k.loader.unload(bad)
            assert errno_of(ei) == errno.EINVAL


REQUIRED = """
import trio
from devfsd.cdevsw import Cdevsw, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

MODULE = ModuleInfo(name="req", cls=ModuleClass.DRIVER)
cdevsw = Cdevsw()

async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        devsw_attach("req", cdevsw)
    elif cmd == ModCmd.FINI:
        await trio.sleep(0)  # a wait: a cancellation would end FINI here
        devsw_detach(cdevsw)
"""

NEVER = """
import trio
from devfsd.cdevsw import Cdevsw, devsw_attach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

MODULE = ModuleInfo(name="never", cls=ModuleClass.DRIVER, required=("req",))

async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        devsw_attach("never", Cdevsw())
        await trio.sleep_forever()
"""


async def test_a_cancelled_load_takes_back_the_requirements_it_brought(tmp_path: Path) -> None:
    # A modload whose client went (devfsd.control.server): INIT is cancelled,
    # and the requirement it brought in is unloaded, its FINI run to the end.
    (tmp_path / "req.py").write_text(REQUIRED)
    (tmp_path / "never.py").write_text(NEVER)
    async with Kernel.running([tmp_path]) as k:
        async with trio.open_nursery() as n:
            n.start_soon(k.modload, "never")
            with trio.fail_after(10):
                while (maj := devsw.getmajor("never")) is None or devsw.lookup(maj) is None:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # INIT attached, and now waits for ever
            req = devsw.getmajor("req")
            assert req is not None and devsw.lookup(req) is not None
            n.cancel_scope.cancel()
        assert k.loader.stat() == []
        assert devsw.lookup(maj) is None
        assert devsw.lookup(req) is None  # its FINI ran to the end
        await k.modload("req")  # the lock is free, nothing in the way
        assert [s.name for s in k.loader.stat()] == ["req"]
