"""tunwg's ``TUNWGIOCCARRY`` refusals, in-process (no FUSE, no TUN made).

The carrying itself needs a Linux TUN and so a network namespace: it is
tested in tests/interop (test_tunwg_carrier.py and the interop tests'
``daemon`` mode). Here only what is refused before any TUN is touched:
not root, the node not open, a bad name or MTU, an unknown ioctl.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import Lwp
from devfsd.errors import DeviceError
from modules.tunwg.carrier import CARRY, TUNWGIOCCARRY
from tests.unit.test_tunwg_driver import kernel, load, sockdir

if TYPE_CHECKING:
    from pathlib import Path

    from devfsd.testing.harness import Kernel

__all__ = ["kernel", "sockdir"]  # fixtures, used by name


async def _carry(k: Kernel, data: bytes, uid: int = 0, cmd: int = TUNWGIOCCARRY) -> int:
    """``cmd`` on unit 0 as ``uid``; its errno (0: accepted)."""
    try:
        await k.spec.ioctl(k.dev("tunwg", 0), cmd, data, Lwp(os.getpid(), uid, uid))
    except DeviceError as exc:
        return exc.errno
    return 0


async def test_non_root_is_eperm_even_with_the_node_open(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0)
    assert await _carry(kernel, CARRY.pack(b"tunwgtest0", 1420), uid=1000) == errno.EPERM
    await f.close()


async def test_closed_node_is_enxio(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    assert await _carry(kernel, CARRY.pack(b"tunwgtest0", 1420)) == errno.ENXIO


@pytest.mark.parametrize(
    ("name", "mtu"),
    [
        (b"", 1420),
        (b"a/b", 1420),
        (b"a\0b", 1420),
        (b"x" * 16, 1420),
        (b"\xff\xfe", 1420),
        (b"t0", 67),
        (b"t0", 65536),
    ],
    ids=["empty", "slash", "nul", "long", "not-utf8", "mtu-low", "mtu-high"],
)
async def test_bad_name_or_mtu_is_einval(kernel: Kernel, sockdir: Path, name: bytes, mtu: int) -> None:
    await load(kernel, sockdir)
    f = await kernel.open("tunwg", 0)
    assert await _carry(kernel, CARRY.pack(name, mtu)) == errno.EINVAL
    await f.close()


async def test_other_ioctl_is_enotty(kernel: Kernel, sockdir: Path) -> None:
    await load(kernel, sockdir)
    assert await _carry(kernel, CARRY.pack(b"t0", 1420), cmd=TUNWGIOCCARRY + 1) == errno.ENOTTY
