"""k_helper: the test module of NetBSD's tests/modules, for devfsd.

After NetBSD's ``tests/modules/k_helper/k_helper.c`` (1.6): a MISC module
that records what its INIT was given and reports it. NetBSD's reports
through sysctl ``vendor.k_helper.*``; this one through a device node, in
sysctl's ``name = value`` lines, so a test reads it with ``cat``::

    modload -s prop_str='1st string' tests/modules/k_helper
    devfs-mknod $DEV/k_helper c k_helper 0
    cat $DEV/k_helper

What it reports, as k_helper.c computes it:

- ``present`` is 1.
- ``prop_str_ok`` 1 and ``prop_str_val`` the value if ``prop_str`` is a
  string (cut to 127 bytes, k_helper.c's ``char prop_str_val[128]``),
  else 0 and empty.
- ``prop_int_ok`` 1 and ``prop_int_val`` the value if ``prop_int`` is a
  number (a bool is not), else 0 and -1.
- ``prop_int_load``: with a string ``prop_recurse``, what loading that
  module (``devfsd.kern.module_load``) gave: 0, or its errno; -2 without.
- ``props``: every property received, as JSON with sorted keys (devfsd's
  addition, so that tests see names and types exactly).

Each open reads the report once, then end of file. FINI always succeeds,
as k_helper's does.
"""

from __future__ import annotations

import errno
import json

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, devsw_attach, devsw_detach
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props, module_load

MODULE = ModuleInfo(name="k_helper", cls=ModuleClass.MISC)

#: k_helper.c's ``char prop_str_val[128]``: strlcpy keeps 127 bytes.
PROP_STR_MAX = 127

report = b""


def build_report(props: Props | None, prop_int_load: int) -> bytes:
    """The sysctl-style report of what INIT received."""
    p = dict(props or {})
    s = p.get("prop_str")
    str_ok = isinstance(s, str)
    str_val = s.encode()[:PROP_STR_MAX].decode(errors="ignore") if isinstance(s, str) else ""
    i = p.get("prop_int")
    int_ok = isinstance(i, int) and not isinstance(i, bool)
    int_val = i if int_ok else -1
    lines = [
        "vendor.k_helper.present = 1",
        f"vendor.k_helper.prop_str_ok = {int(str_ok)}",
        f"vendor.k_helper.prop_str_val = {str_val}",
        f"vendor.k_helper.prop_int_ok = {int(int_ok)}",
        f"vendor.k_helper.prop_int_val = {int_val}",
        f"vendor.k_helper.prop_int_load = {prop_int_load}",
        f"vendor.k_helper.props = {json.dumps(p, sort_keys=True)}",
    ]
    return ("\n".join(lines) + "\n").encode()


async def k_helper_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if l.fp is not None:
        l.fp.data = 0  # this open's offset into the report


async def k_helper_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    fp = uio.lwp.fp
    pos = fp.data if fp is not None and isinstance(fp.data, int) else 0
    n = uio.uiomove(report[pos : pos + uio.resid])
    if fp is not None:
        fp.data = pos + n


k_helper_cdevsw = Cdevsw(d_open=k_helper_open, d_read=k_helper_read)


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    global report
    if cmd == ModCmd.INIT:
        recurse = (props or {}).get("prop_recurse")
        load = -2
        if isinstance(recurse, str):
            try:
                await module_load(recurse)
                load = 0
            except DeviceError as exc:
                load = exc.errno
        report = build_report(props, load)
        devsw_attach("k_helper", k_helper_cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(k_helper_cdevsw)
        report = b""
    else:
        raise DeviceError(errno.ENOTTY)
