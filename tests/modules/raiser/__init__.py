"""raiser: a test driver that raises (or returns) whatever it is told to.

Properties name, per place, a *fault*: ``init``, ``fini``, ``autounload``,
``thread`` (a task INIT starts), ``d_open``, ``d_close``, ``d_read``,
``d_write``, ``d_poll``, ``d_ioctl``. A file ``raise.json`` beside this one
(``{"import": FAULT, ...}``) gives faults too, read at import, so that the
import itself, and an autoload (which has no properties), can be told.

A fault is one of ``FAULTS``' names (raise that), ``ret:VALUE`` (return the
JSON ``VALUE`` instead of what the entry point should), ``resid:N`` (set the
uio's ``resid`` to ``N``, then move a byte), or ``overmove`` (make the uio
move more than asked for). Without a fault each entry point works: read
gives ``ok\\n``, write takes everything, poll says ready.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import trio

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, kthread_create

MODULE = ModuleInfo(name="raiser", cls=ModuleClass.DRIVER)


class WeirdBase(BaseException):
    """A BaseException that is none of Python's own."""


class BadErrno(DeviceError):
    """A DeviceError whose errno is no errno."""

    def __init__(self) -> None:
        super().__init__(errno.EPERM)
        self.errno = 99999


#: The faults raised by name, and the errno the caller should see (None: EIO,
#: or ENOEXEC at import).
FAULTS: dict[str, tuple[Any, int | None]] = {
    "SystemExit": (lambda: SystemExit(3), None),
    "KeyboardInterrupt": (KeyboardInterrupt, None),
    "GeneratorExit": (GeneratorExit, None),
    "BaseExceptionGroup": (
        lambda: BaseExceptionGroup("driver's group", [KeyboardInterrupt(), ValueError("inner")]),
        None,
    ),
    "ExceptionGroup-EPERM": (lambda: ExceptionGroup("g", [DeviceError(errno.EPERM)]), errno.EPERM),
    "BaseException": (WeirdBase, None),
    "RecursionError": (RecursionError, None),
    "BadErrno": (BadErrno, None),
    "DeviceError-EPERM": (lambda: DeviceError(errno.EPERM), errno.EPERM),
    # FUSE's "no such operation" for OPEN and POLL: ENODEV from d_open (fs._err_mountwide).
    "DeviceError-ENOSYS": (lambda: DeviceError(errno.ENOSYS), errno.ENOSYS),
    "Cancelled": (None, None),  # a genuine trio.Cancelled, kept and raised later
}

_conf_file = Path(__file__).with_name("raise.json")
conf: dict[str, str] = json.loads(_conf_file.read_text()) if _conf_file.exists() else {}
props: dict[str, Any] = {}


def _cancelled_sync() -> BaseException:
    return trio.Cancelled._create()


async def _cancelled() -> BaseException:
    """A real ``Cancelled``, caught in a scope that is then left behind."""
    with trio.CancelScope() as cs:
        cs.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            return exc
    raise AssertionError("not cancelled")


def _make(name: str, exc: BaseException | None = None) -> BaseException:
    make, _ = FAULTS[name]
    if make is None:
        return exc if exc is not None else _cancelled_sync()
    out: BaseException = make()
    return out


async def fault(where: str, uio: Uio | None = None) -> Any:
    """Apply the fault configured for ``where``; returns what to return."""
    what = props.get(where, conf.get(where))
    if not isinstance(what, str):
        return None
    if what.startswith("ret:"):
        return json.loads(what[4:])
    if what.startswith("resid:") and uio is not None:
        uio.resid = int(what[6:])
        uio.getbytes(1) if uio.rw else uio.uiomove(b"x")
        return None
    if what == "overmove" and uio is not None:
        uio.resid += 1 << 20
        uio.uiomove(bytes(uio.resid))
        return None
    raise _make(what, await _cancelled() if what == "Cancelled" else None)


if "import" in conf:
    raise _make(conf["import"])


async def raiser_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return await fault("d_open")  # type: ignore[no-any-return]


async def raiser_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return await fault("d_close")  # type: ignore[no-any-return]


async def raiser_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    rv = await fault("d_read", uio)
    if uio.resid and rv is None and "d_read" not in props:
        uio.uiomove(b"ok\n")
    return rv  # type: ignore[no-any-return]


async def raiser_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    rv = await fault("d_write", uio)
    uio.getbytes()
    return rv  # type: ignore[no-any-return]


async def raiser_poll(dev: Dev, events: int, l: Lwp) -> int:
    rv = await fault("d_poll")
    return events if rv is None else rv


async def raiser_ioctl(dev: Dev, cmd: int, data: bytearray, flag: int, l: Lwp) -> None:
    return await fault("d_ioctl")  # type: ignore[no-any-return]


cdevsw = Cdevsw(
    d_open=raiser_open,
    d_close=raiser_close,
    d_read=raiser_read,
    d_write=raiser_write,
    d_poll=raiser_poll,
    d_ioctl=raiser_ioctl,
)


async def _thread() -> None:
    await trio.lowlevel.checkpoint()
    await fault("thread")


async def modcmd(cmd: ModCmd, p: Props | None) -> Any:
    if cmd == ModCmd.INIT:
        props.clear()
        props.update(p or {})
        rv = await fault("init")
        devsw_attach("raiser", cdevsw)
        if "thread" in props:
            kthread_create(_thread, name="faulty")
        return rv
    if cmd == ModCmd.FINI:
        rv = await fault("fini")
        devsw_detach(cdevsw)
        return rv
    if cmd == ModCmd.AUTOUNLOAD:
        return await fault("autounload")
    raise DeviceError(errno.ENOTTY)
