"""tunwg: a tun(4)-style device whose packets travel as real WireGuard.

``modload tunwg`` makes ``count`` interfaces (default 1) named
``<ifname>N`` (default ``tunwg0``...), each with its UAPI socket at
``<sockdir>/<name>.sock`` (default ``/var/run/wireguard``), so the real
``wg`` tool configures them (``wg set tunwg0 private-key ...``) before any
node is opened. ``devfs-mknod /dev/tunwg0 c tunwg 0`` makes the node; each
packet written to it travels encrypted to the peer its destination routes
to, and the peers' packets come out of reads. See tunwg(4).

Load properties: ``count`` (int, 0..256), ``ifname`` (str, a prefix; names
must stay below 16 bytes), ``sockdir`` (str), ``mtu`` (int, 576..65535,
default 1420; a live interface's can change, ``SIOCSIFMTU`` in tun.py),
``keylog`` (str: a file that gets each session's keys in the format
tshark's ``wg.keylog_file`` reads), ``rekey_after_time`` (int seconds,
1..120, default 120: for tests only, as NetBSD's ``net.wg.rekey_after_time`` debug sysctl; see ``wg.Device``),
``offload`` (int 0 or 1, default 1: a carried interface's TUN gets TCP
segmentation and coalescing offloads, carrier.py).

``statistics(unit)`` returns an interface's counters (``InterfaceStats``),
for tests and debugging.

FINI refuses (``EBUSY``) while a node is open; AUTOUNLOAD refuses while an
interface has a private key (unloading loses its configuration).
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Final, TextIO

from devfsd.cdevsw import DeviceError, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, current_module

from .iface import MTU_MAX, MTU_MIN, Interface, InterfaceStats
from .tun import make_cdevsw
from .wg.constants import REKEY_AFTER_TIME

if TYPE_CHECKING:
    from devfsd.kern import Props
    from devfsd.kern.loader import LoadedModule

log = logging.getLogger(__name__)

#: keylog and sockdir make root write files and make directories: root's alone.
#: Isolated, its host keeps CAP_NET_ADMIN: carrying (carrier.py) makes a TUN
#: interface (TUNSETIFF), sets its MTU (SIOCSIFMTU) and finds its network
#: namespace (TUNGETDEVNETNS). Following a TUN moved to another namespace
#: enters it (setns(2), follow.py), which takes CAP_SYS_ADMIN: not kept
#: unless root gives it (modload -I -s caps=sys_admin). Nothing else takes one.
MODULE = ModuleInfo(
    name="tunwg", cls=ModuleClass.DRIVER, privileged=("keylog", "sockdir"), caps=("net_admin",)
)

MAX_UNITS: Final = 256


class _State:
    def __init__(
        self,
        module: LoadedModule,
        ifname: str,
        sockdir: str,
        mtu: int,
        keylog: TextIO | None,
        rekey_after_time: int,
    ) -> None:
        self.module = module
        self.ifname = ifname
        self.sockdir = sockdir
        self.mtu = mtu
        self.keylog = keylog
        self.rekey_after_time = rekey_after_time
        self.units: dict[int, Interface] = {}
        self.offload = True

    def get(self, unit: int, create: bool) -> Interface:
        ifp = self.units.get(unit)
        if ifp is None:
            if not create or unit >= MAX_UNITS:
                raise DeviceError(errno.ENXIO)
            ifp = self.make(unit)
        return ifp

    def make(self, unit: int) -> Interface:
        try:
            ifp = Interface(
                unit,
                f"{self.ifname}{unit}",
                self.sockdir,
                mtu=self.mtu,
                keylog=self.keylog,
                rekey_after_time=self.rekey_after_time,
            )
        except ValueError as exc:
            raise DeviceError(errno.EINVAL, str(exc)) from None
        ifp.offload = self.offload
        try:
            ifp.start(self.module)
        except OSError as exc:
            log.error("tunwg: %s: %s", ifp.uapi_path, exc)
            raise DeviceError(exc.errno or errno.EIO) from None
        self.units[unit] = ifp
        return ifp

    def stop(self) -> None:
        for ifp in self.units.values():
            ifp.stop()
        self.units.clear()
        if self.keylog is not None:
            self.keylog.close()


_state: _State | None = None


def _get(unit: int, create: bool) -> Interface:
    state = _state
    if state is None:
        raise DeviceError(errno.ENXIO)
    ifp = state.units.get(unit)  # every read and write: no second call when it exists
    return ifp if ifp is not None else state.get(unit, create)


cdevsw: Final = make_cdevsw(_get)


def statistics(unit: int) -> InterfaceStats:
    """Interface ``unit``'s counters.

    Raises:
        DeviceError: ENXIO, no such interface (or the module is not loaded).
    """
    return _get(unit, False).statistics()


def _prop(props: Props, name: str, kind: type, default: object) -> object:
    v = props.get(name, default)
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise DeviceError(errno.EINVAL, f"{name} must be an integer")
    if kind is str and not isinstance(v, str):
        raise DeviceError(errno.EINVAL, f"{name} must be a string")
    return v


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global _state
    if cmd == ModCmd.INIT:
        p = props or {}
        count = _prop(p, "count", int, 1)
        ifname = _prop(p, "ifname", str, "tunwg")
        sockdir = _prop(p, "sockdir", str, "/var/run/wireguard")
        mtu = _prop(p, "mtu", int, 1420)
        keylog_path = _prop(p, "keylog", str, "")
        rekey_after_time = _prop(p, "rekey_after_time", int, int(REKEY_AFTER_TIME))
        offload = _prop(p, "offload", int, 1)
        if offload not in (0, 1):
            raise DeviceError(errno.EINVAL, "offload must be 0 or 1")
        assert isinstance(count, int) and isinstance(mtu, int) and isinstance(rekey_after_time, int)
        assert isinstance(ifname, str) and isinstance(sockdir, str) and isinstance(keylog_path, str)
        if not 0 <= count <= MAX_UNITS or not MTU_MIN <= mtu <= MTU_MAX or not sockdir.startswith("/"):
            raise DeviceError(errno.EINVAL)
        if not 1 <= rekey_after_time <= REKEY_AFTER_TIME:
            raise DeviceError(errno.EINVAL, f"rekey_after_time must be 1..{int(REKEY_AFTER_TIME)}")
        module = current_module()
        assert module is not None
        keylog: TextIO | None = None
        if keylog_path:
            try:
                keylog = open(keylog_path, "a")  # noqa: SIM115, ASYNC230 - once, at load; lives until FINI
            except OSError as exc:
                raise DeviceError(exc.errno or errno.EIO) from None
        state = _State(module, ifname, sockdir, mtu, keylog, rekey_after_time)
        state.offload = offload == 1
        try:
            for unit in range(count):
                state.make(unit)
            devsw_attach("tunwg", cdevsw)
        except BaseException:
            state.stop()
            raise
        _state = state
    elif cmd == ModCmd.FINI:
        if _state is not None and any(i.is_open for i in _state.units.values()):
            raise DeviceError(errno.EBUSY)
        devsw_detach(cdevsw)
        if _state is not None:
            _state.stop()
        _state = None
    elif cmd == ModCmd.AUTOUNLOAD:
        if _state is not None and any(i.device.configured for i in _state.units.values()):
            raise DeviceError(errno.EBUSY)
    else:
        raise DeviceError(errno.ENOTTY)
