"""ModuleInfo.privileged and the loader's check of the caller's uid (in process)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from devfsd.errors import DeviceError
from devfsd.kern import ModuleClass, ModuleInfo
from devfsd.kern.loader import ModuleLoader

MODS = Path(__file__).resolve().parent.parent / "modules"


def test_declared_as_tuple_or_comma_string() -> None:
    assert ModuleInfo(name="x", privileged="a,b").privileged == ("a", "b")  # type: ignore[arg-type]
    assert ModuleInfo(name="x", cls=ModuleClass.DRIVER, privileged=("p",)).privileged == ("p",)
    with pytest.raises(DeviceError):
        ModuleInfo(name="x", privileged=(1,))  # type: ignore[arg-type]


async def test_non_root_may_not_give_privileged_props(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    loader = ModuleLoader([MODS])
    with pytest.raises(DeviceError) as ei:
        await loader.load("tunwg", {"count": 0, "keylog": str(keys)}, uid=1000)
    assert ei.value.errno == errno.EPERM
    assert not keys.exists() and loader.modules == {}
    with pytest.raises(DeviceError) as ei:
        await loader.load(str(MODS / "msgq"), None, uid=1000)
    assert ei.value.errno == errno.EPERM


async def test_root_may() -> None:
    loader = ModuleLoader([MODS])
    mod = await loader.load("msgq", None, uid=0)
    assert mod.name == "msgq"
    await loader.unload("msgq")
