"""NetBSD's tests/modules/t_builtin.c 1.3.12.1: built-in modules.

NetBSD's kernel has modules linked in (kernfs in t_builtin.c's rump
kernel); unloading one disables it, a disabled one is not autoloaded,
``-f`` revives it, modstat shows it with REFS -1, and a busy one cannot be
disabled. devfsd loads every module from a file and has none built in:
each case is kept, asserting NetBSD's behaviour, as a documented departure.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount

from .netbsd import MODS, departure

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow, departure("no-builtins")]


@pytest.fixture(scope="module")
def mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevfsdMount]:
    with DevfsdMount(tmp_path_factory.mktemp("t_builtin"), modpath=[MODS]) as m:
        yield m


def builtin(m: DevfsdMount) -> dict[str, Any]:
    """A built-in module's modstat row (NetBSD's kernfs)."""
    rows = [r for r in m.client().modstat()["modules"] if r["source"] == "builtin"]
    assert rows, "no built-in module"
    row: dict[str, Any] = rows[0]
    return row


def unload_errno(m: DevfsdMount, name: str) -> int:
    try:
        m.client().modunload(name)
    except ControlError as exc:
        return exc.errno
    return 0


def test_disable(mnt: DevfsdMount) -> None:
    """t_builtin.c:74-83: a built-in module can be unloaded (disabled)."""
    assert unload_errno(mnt, builtin(mnt)["name"]) == 0


def test_noauto(mnt: DevfsdMount) -> None:
    """t_builtin.c:92-100: a disabled built-in module is not autoloaded."""
    name = builtin(mnt)["name"]
    assert unload_errno(mnt, name) == 0
    assert all(r["name"] != name or r["refs"] == -1 for r in mnt.client().modstat()["modules"])


def test_forcereload(mnt: DevfsdMount) -> None:
    """t_builtin.c:111-131: ``modload -f`` (MODCTL_LOAD_FORCE) revives a
    disabled built-in module."""
    name = builtin(mnt)["name"]
    assert unload_errno(mnt, name) == 0
    mnt.client().call("modload", module=name, props=None, force=True)


def test_disabledstat(mnt: DevfsdMount) -> None:
    """t_builtin.c:140-178: a disabled built-in module shows in modstat with
    refcount -1."""
    name = builtin(mnt)["name"]
    assert unload_errno(mnt, name) == 0
    (row,) = mnt.client().modstat(name)["modules"]
    assert row["refs"] == -1


def test_busydisable(mnt: DevfsdMount) -> None:
    """t_builtin.c:191-199: a built-in module in use cannot be disabled: EBUSY."""
    assert unload_errno(mnt, builtin(mnt)["name"]) == errno.EBUSY
