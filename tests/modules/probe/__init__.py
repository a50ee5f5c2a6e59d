"""probe: a test driver that tries what its process may do (for modload -I).

A write to minor 0 is a command; the next read returns its outcome, ``ok``
(or a value) or the errno's name (``EACCES``):

- ``pid``: the process id;
- ``open PATH``: open PATH for reading;
- ``connect PATH``: connect a stream socket to the AF_UNIX socket PATH;
- ``kill PID``: signal 0 to PID (may it signal it at all);
- ``ptrace PID``: ``PTRACE_ATTACH`` to PID (detached again at once);
- ``eat BYTES``: allocate and touch BYTES of memory, kept until FINI;
- ``caps``: its capability sets, ``Inh Prm Eff Bnd Amb`` as /proc shows
  them (hexadecimal masks);
- ``packet``: open an ``AF_PACKET`` socket and close it at once (it takes
  ``CAP_NET_RAW``; it changes nothing);
- ``dumpable``: ``PR_GET_DUMPABLE``.

Load property ``load`` (string): INIT loads that module with
``module_load`` first; a read of minor 1 returns what it gave (``ok`` or
the errno's name).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, devsw_attach, devsw_detach, minor, nullclose
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, module_load

MODULE = ModuleInfo(name="probe", cls=ModuleClass.DRIVER)

_PTRACE_ATTACH = 16
_PTRACE_DETACH = 17
_PR_GET_DUMPABLE = 3

result = b""
loaded = b"-"
eaten: list[bytearray] = []


def _errname(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def run(cmd: str) -> str:
    verb, _, arg = cmd.partition(" ")
    try:
        if verb == "pid":
            return str(os.getpid())
        if verb == "open":
            os.close(os.open(arg, os.O_RDONLY | os.O_NONBLOCK))
        elif verb == "connect":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(arg)
        elif verb == "kill":
            os.kill(int(arg), 0)
        elif verb == "ptrace":
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.ptrace(_PTRACE_ATTACH, int(arg), None, None) != 0:
                return _errname(ctypes.get_errno())
            libc.ptrace(_PTRACE_DETACH, int(arg), None, None)
        elif verb == "caps":
            with open("/proc/self/status") as f:
                sets = dict(line.split(":", 1) for line in f if line.startswith("Cap"))
            return " ".join(sets[f"Cap{k}"].strip() for k in ("Inh", "Prm", "Eff", "Bnd", "Amb"))
        elif verb == "dumpable":
            return str(ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
        elif verb == "packet":
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        elif verb == "eat":
            eaten.append(bytearray(b"\x01") * int(arg))
        else:
            return "EINVAL"
    except OSError as exc:
        return _errname(exc.errno or 0)
    return "ok"


async def probe_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    uio.uiomove(result if minor(dev) == 0 else loaded)


async def probe_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    global result
    result = run(uio.getbytes().decode().strip()).encode()


async def probe_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if minor(dev) > 1:
        raise DeviceError(errno.ENXIO)


cdevsw = Cdevsw(d_open=probe_open, d_close=nullclose, d_read=probe_read, d_write=probe_write)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global loaded
    if cmd == ModCmd.INIT:
        other = (props or {}).get("load")
        if isinstance(other, str):
            try:
                await module_load(other)
                loaded = b"ok"
            except DeviceError as exc:
                loaded = _errname(exc.errno).encode()
        devsw_attach("probe", cdevsw)
    elif cmd == ModCmd.FINI:
        eaten.clear()
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
