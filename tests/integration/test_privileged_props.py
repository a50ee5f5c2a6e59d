"""Load requests that make root touch the file system are root's alone (issue 13.7).

A real non-root member of ``--control-group`` (uid and gid 65534, through
``setpriv``) runs the real ``modload``: tunwg's ``keylog`` and ``sockdir``
(declared ``privileged`` in its ``ModuleInfo``) and a load by path are
``EPERM``, and nothing is created, not even inside a 0700 directory of
root's; the same member may load tunwg without them, and root may give them.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount
from tests.nobody import modload_on

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"


@pytest.fixture
def mnt() -> Iterator[DevfsdMount]:
    with tempfile.TemporaryDirectory(dir="/tmp") as base:
        os.chmod(base, 0o755)  # the member reaches the socket
        secret = Path(base) / "secret"
        secret.mkdir(mode=0o700)
        with DevfsdMount(base, modpath=[MODS], args=["--control-group", "65534"]) as m:
            yield m


def modload(m: DevfsdMount, *args: str, member: bool = True) -> subprocess.CompletedProcess[str]:
    return modload_on(m, *args, member=member)  # nobody may not read the checkout (a clone under /root)


def loaded(m: DevfsdMount) -> list[str]:
    return [str(r["name"]) for r in m.client().modstat()["modules"]]


@pytest.mark.parametrize("prop", ["keylog=secret/keys", "sockdir=secret/wg"])
def test_member_may_not_give_a_path_property(mnt: DevfsdMount, prop: str) -> None:
    name, _, rel = prop.partition("=")
    target = mnt.base / rel
    r = modload(mnt, "-i", "count=0", "-s", f"{name}={target}", "tunwg")
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "modload: tunwg: Operation not permitted\n")
    assert not target.exists()
    assert loaded(mnt) == []
    assert f"may not give property {name}: root's alone" in mnt.log_text()


def test_member_may_not_load_by_path(mnt: DevfsdMount) -> None:
    r = modload(mnt, str(MODS / "msgq"))
    assert (r.returncode, r.stderr) == (1, f"modload: {MODS / 'msgq'}: Operation not permitted\n")
    # Nor learn, from the errno, what a directory it cannot read holds.
    r = modload(mnt, str(mnt.base / "secret" / "nothing"))
    assert r.stderr.endswith(": Operation not permitted\n")
    assert loaded(mnt) == []


def test_member_may_load_without_them_and_root_may_give_them(mnt: DevfsdMount) -> None:
    r = modload(mnt, "-i", "count=0", "tunwg")
    assert (r.returncode, r.stderr) == (0, "")
    assert loaded(mnt) == ["tunwg"]
    mnt.client().modunload("tunwg")
    keys = mnt.base / "secret" / "keys"
    r = modload(mnt, "-i", "count=0", "-s", f"keylog={keys}", "tunwg", member=False)
    assert (r.returncode, r.stderr) == (0, "")
    assert stat.S_ISREG(keys.stat().st_mode)
    mnt.client().modunload("tunwg")
    r = modload(mnt, str(MODS / "msgq"), member=False)
    assert (r.returncode, r.stderr) == (0, "")
