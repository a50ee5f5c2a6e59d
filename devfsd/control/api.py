"""One method per control operation, apart from the transport.

Uses the loader and the device switch; no sockets (``server.py`` carries the
bytes). Each method takes the request's checked arguments and returns a
JSON-able result or raises ``DevfsdError`` (``DeviceError`` from the kernel
side travels as is: the reply carries its errno).
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
from typing import TYPE_CHECKING, Any, final

from devfsd._fuseintr import watching
from devfsd.cdevsw._dev import Dev
from devfsd.cdevsw._table import devsw
from devfsd.cdevsw._wait import sleepers
from devfsd.errors import ControlError, DeviceError
from devfsd.modstate import LOAD_GRACE, load_recorded, unload_recorded
from devfsd.trace import DEFAULT_BUFFER, MAX_BUFFER, Tracer

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from devfsd.cdevsw._switch import Lwp
    from devfsd.fs import DevFs
    from devfsd.kern.loader import ModuleLoader
    from devfsd.state import StateStore

__all__ = ["ControlApi", "caller_path"]


def caller_path(peer: Lwp, spec: str) -> str:
    """A module path the caller gave, made absolute against the caller's directory.

    A name (no ``/``) and an absolute path are returned as they are; ``./drv``
    is joined to the working directory of the peer process
    (``/proc/PID/cwd``), not the daemon's.

    Raises:
        ControlError: ``ENOENT`` when the caller's directory cannot be read
            (it has gone, or is not a directory any more).
    """
    if "/" not in spec or spec.startswith("/") or "\0" in spec:
        return spec
    try:
        cwd = os.readlink(f"/proc/{peer.pid}/cwd")
    except OSError as exc:
        raise ControlError(exc.errno or errno.ENOENT, "cannot read the caller's working directory") from None
    if not cwd.startswith("/") or cwd.endswith(" (deleted)"):
        raise ControlError(errno.ENOENT, "the caller's working directory is gone")
    return os.path.join(cwd, spec)


@final
class ControlApi:
    """The operations the control socket offers."""

    def __init__(
        self, loader: ModuleLoader, fs: DevFs | None, mountpoint: str, state: StateStore | None = None
    ) -> None:
        self.loader = loader
        self.fs = fs
        self.mountpoint = mountpoint
        self.state = state

    async def ping(self, peer: Lwp) -> None:
        return None

    async def modload(
        self, peer: Lwp, module: str, props: dict[str, Any] | None, isolated: bool | None = None
    ) -> None:
        if peer.uid == 0:  # others may not load by path (the loader says EPERM)
            module = caller_path(peer, module)
        # Marked, loaded, recorded (isolated or not) in the state: devfsd.modstate.
        isolated = bool(isolated) or self.loader.isolate_all
        mod = await load_recorded(
            self.loader, self.state, module, props, uid=peer.uid, isolated=isolated, grace=LOAD_GRACE
        )
        # Remembered for autoload and --reload-modules (devfsd.isolate).
        if mod.host is not None:
            self.loader.isolated_names.add(mod.name)
        else:
            self.loader.isolated_names.discard(mod.name)

    async def modunload(self, peer: Lwp, module: str) -> None:
        await unload_recorded(self.loader, self.state, module)
        self.loader.isolated_names.discard(module)

    async def modstat(self, peer: Lwp, module: str | None) -> dict[str, Any]:
        rows = [
            {
                "name": s.name,
                "class": s.cls,
                "source": s.source,
                "flags": s.flags,
                "refs": s.refs,
                "size": s.size,
                "requires": list(s.requires),
            }
            for s in self.loader.stat()
        ]
        width_names = [r["name"] for r in rows]
        if module is not None:
            rows = [r for r in rows if r["name"] == module]
        return {"modules": rows, "autoload": self.loader.autoload_enabled, "names": width_names}

    async def drivers(self, peer: Lwp) -> list[list[Any]]:
        return [[n, m, a] for n, m, a in devsw.entries()]

    async def ioctl(self, peer: Lwp, path: str, cmd: int, data: str) -> str:
        if self.fs is None:
            raise ControlError(errno.ENODEV, "no file system")
        if not 0 <= cmd < 1 << 32:
            raise ControlError(errno.EINVAL, "ioctl command out of range")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ControlError(errno.EINVAL, "ioctl data is not base64") from None
        node = self.fs.resolve(self.mountpoint, path)
        if not node.is_chr:
            raise DeviceError(errno.ENOTTY)
        out = await self.fs.spec.ioctl(Dev(node.rdev), cmd, raw, peer)
        return base64.b64encode(out).decode()

    async def status(self, peer: Lwp) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "sleepers": sleepers(),
            "sleepers_interruptible": watching(),
            "open_files": len(self.fs.files) if self.fs is not None else 0,
            "tracers": self.fs.spec.tracers if self.fs is not None else 0,
            "nodes": len(self.fs.table.nodes) if self.fs is not None else 0,
            "modules": sorted(self.loader.modules),
        }

    async def trace(
        self, peer: Lwp, path: str | None, driver: str | None, buffer: int | None, count: int | None
    ) -> Tracer:
        """A tracer for the node at ``path`` or every node of ``driver``, not yet attached.

        The server streams its events (``tracing``; protocol.py, Streams).

        Raises:
            ControlError: ``EINVAL`` for both or neither of ``path`` and
                ``driver``, or ``buffer``/``count`` out of range; ``ENODEV``
                without a file system.
            DeviceError: ``ENODEV`` if ``path`` is not a device node,
                ``ENXIO`` for a driver name with no major, lookup errors
                (``EXDEV`` off this mount, ``ENOENT``).
        """
        if (path is None) == (driver is None):
            raise ControlError(errno.EINVAL, "trace: give a node or a driver")
        if buffer is None:
            buffer = DEFAULT_BUFFER
        if not 1 <= buffer <= MAX_BUFFER:
            raise ControlError(errno.EINVAL, f"trace: buffer must be 1 to {MAX_BUFFER}")
        if count is not None and count < 1:
            raise ControlError(errno.EINVAL, "trace: count must be positive")
        if self.fs is None:
            raise ControlError(errno.ENODEV, "no file system")
        if driver is not None:
            maj = devsw.getmajor(driver)
            if maj is None:
                raise DeviceError(errno.ENXIO)
            return Tracer(major=maj, buffer=buffer, count=count)
        assert path is not None
        node = self.fs.resolve(self.mountpoint, path)
        if not node.is_chr:
            raise DeviceError(errno.ENODEV)
        return Tracer(dev=node.rdev, buffer=buffer, count=count)

    def tracing(self, tracer: Tracer) -> AbstractContextManager[None]:
        """Attach ``tracer`` to the I/O path for a ``with`` block."""
        assert self.fs is not None
        return self.fs.spec.tracing(tracer)
