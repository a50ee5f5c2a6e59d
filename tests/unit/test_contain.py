"""devfsd.contain in-process: the driver's faults become errnos, the daemon's own
cancellation and SIGINT go through; AUTOUNLOAD and a wrong modcmd return too."""

from __future__ import annotations

import errno
import os
import shutil
import signal
from pathlib import Path

import pytest
import trio

from devfsd.contain import contain, daemon_signal
from devfsd.errors import DeviceError
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"


def test_device_error_is_its_errno() -> None:
    e = DeviceError(errno.EPERM)
    assert contain(e, "x") is e


@pytest.mark.parametrize(
    "exc", [SystemExit(1), KeyboardInterrupt(), GeneratorExit(), BaseExceptionGroup("g", [SystemExit()])]
)
def test_base_exceptions_are_eio(exc: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    assert contain(exc, "driver d_read").errno == errno.EIO
    assert f"driver d_read raised {type(exc).__name__}" in caplog.text


def test_group_of_one_errno_is_that_errno() -> None:
    g = ExceptionGroup("g", [DeviceError(errno.EAGAIN), ExceptionGroup("h", [DeviceError(errno.EAGAIN)])])
    assert contain(g, "x").errno == errno.EAGAIN
    mixed = ExceptionGroup("g", [DeviceError(errno.EAGAIN), DeviceError(errno.EPERM)])
    assert contain(mixed, "x").errno == errno.EIO


def test_import_default() -> None:
    assert contain(ValueError(), "import", errno.ENOEXEC).errno == errno.ENOEXEC


async def test_genuine_cancel_goes_through_and_kept_one_does_not() -> None:
    kept: list[BaseException] = []
    with trio.CancelScope() as cs:
        cs.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            kept.append(exc)
            # Still cancelled here: the daemon's (the scope's) own.
            with pytest.raises(trio.Cancelled):
                raise contain(exc, "x") from None
            group = BaseExceptionGroup("g", [exc])
            with pytest.raises(BaseExceptionGroup):
                raise contain(group, "x") from None
    # Out of the scope, the same Cancelled raised again is a driver's misuse.
    assert contain(kept[0], "driver d_read").errno == errno.EIO


async def test_real_sigint_goes_through() -> None:
    """SIGINT as trio delivers it (its handler raises in unprotected code)
    is the daemon's own; the same class raised by code is not."""
    got: list[BaseException] = []
    try:
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    except KeyboardInterrupt as exc:
        got.append(exc)
    assert got and daemon_signal(got[0])
    with pytest.raises(KeyboardInterrupt):
        raise contain(got[0], "x") from None
    with pytest.raises(KeyboardInterrupt) as ei:
        raise KeyboardInterrupt
    assert not daemon_signal(ei.value)
    assert contain(ei.value, "driver").errno == errno.EIO


async def test_autounload_fault_is_a_veto(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shutil.copytree(MODS / "raiser", tmp_path / "raiser")
    (tmp_path / "raiser" / "raise.json").write_text('{"autounload": "SystemExit"}')
    async with Kernel.running([tmp_path], autotime=10.0) as k:
        await k.modload("raiser")  # gives "raiser" its major
        await k.modunload("raiser")
        f = await k.open("raiser", 0)  # autoloads it
        await f.close()
        k.loader.modules["raiser"].last_used -= 11
        await k.loader._autounload_pass()
        assert [s.name for s in k.loader.stat()] == ["raiser"]  # vetoed, not dead
        assert "modcmd(AUTOUNLOAD) raised SystemExit" in caplog.text


@pytest.mark.parametrize("rv", ["ret:-1", 'ret:"x"', "ret:99999", "ret:true"])
async def test_wrong_modcmd_return(rv: str) -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("raiser", {"init": rv})
        assert ei.value.errno == errno.EIO
        assert k.loader.stat() == []


async def test_modcmd_errno_return() -> None:
    async with Kernel.running([MODS]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("raiser", {"init": "ret:1"})
        assert ei.value.errno == errno.EPERM


def test_device_error_with_a_bad_message_is_rebuilt() -> None:
    e = DeviceError(errno.EAGAIN)
    e.msg = 42  # type: ignore[assignment]
    out = contain(e, "driver d_read")
    assert out is not e and out.errno == errno.EAGAIN and str(out) == os.strerror(errno.EAGAIN)


class _OddError(DeviceError):
    """A driver's own subclass: rebuilt as a plain DeviceError, errno kept."""


def test_driver_subclass_keeps_its_errno() -> None:
    out = contain(_OddError(errno.EBUSY, "busy"), "x")
    assert type(out) is DeviceError and out.errno == errno.EBUSY and str(out) == "busy"
