"""NetBSD's tests/modules/t_modctl.c 1.12, through the control socket.

t_modctl.c calls modctl(2) (MODCTL_LOAD with an externalized property
dictionary, MODCTL_UNLOAD, MODCTL_STAT) and reads k_helper's sysctl nodes;
devfsd's modctl is its control socket (``Client``), and k_helper
(tests/modules/k_helper) reports through a device node on the mount.
"""

from __future__ import annotations

import contextlib
import errno
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount

from .netbsd import MODS, departure, k_helper_report, report

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

K_HELPER = str(MODS / "k_helper")
K_HELPER2 = str(MODS / "k_helper2")


@pytest.fixture(scope="module", params=["in-process", "isolated"])
def mnt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevfsdMount]:
    """k_helper in process, or in a host of its own (``--isolate``): every test here runs both ways."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path_factory.mktemp("t_modctl"), modpath=[MODS], args=isolate) as m:
        yield m


@pytest.fixture(autouse=True)
def _cleanup(mnt: DevfsdMount) -> Iterator[None]:
    """ATF_TC_CLEANUP: ``unload_cleanup("k_helper")`` (and k_helper2)."""
    yield
    for name in ("k_helper", "k_helper2"):
        with contextlib.suppress(ControlError):
            mnt.client().modunload(name)


def load(m: DevfsdMount, spec: str, props: Any = None) -> int:
    """t_modctl.c's ``load()``: MODCTL_LOAD, 0 or the errno."""
    try:
        m.client().call("modload", module=spec, props=props)
    except ControlError as exc:
        return exc.errno
    return 0


def unload(m: DevfsdMount, name: str) -> int:
    """t_modctl.c's ``unload()``: MODCTL_UNLOAD, 0 or the errno."""
    try:
        m.client().modunload(name)
    except ControlError as exc:
        return exc.errno
    return 0


def present(m: DevfsdMount) -> bool:
    """``k_helper_is_present(stat_check)``: k_helper is in MODCTL_STAT's list."""
    return any(r["name"] == "k_helper" for r in m.client().modstat()["modules"])


def test_cmd_load_nonexistent(mnt: DevfsdMount) -> None:
    """t_modctl.c:299: ``load("non-existent.o")`` is ENOENT."""
    assert load(mnt, "non-existent.o") == errno.ENOENT


@departure("name-checked")
def test_cmd_load_blank(mnt: DevfsdMount) -> None:
    """t_modctl.c:298: ``load(" ")`` is ENOENT (NetBSD looks for the file)."""
    assert load(mnt, " ") == errno.ENOENT


def test_cmd_load_longname(mnt: DevfsdMount) -> None:
    """t_modctl.c:301-304: a name of MAXPATHLEN - 1 bytes is ENAMETOOLONG."""
    assert load(mnt, "a" * 4095) == errno.ENAMETOOLONG


def test_cmd_load(mnt: DevfsdMount) -> None:
    """t_modctl.c:306-310: k_helper absent, loaded by path, then present."""
    assert not present(mnt)
    assert load(mnt, K_HELPER) == 0
    assert present(mnt)


@pytest.mark.parametrize(
    ("props", "ok", "val"),
    [
        pytest.param({}, "0", "", id="t_modctl.c:328-339"),
        pytest.param({"prop_str": "1st string"}, "1", "1st string", id="t_modctl.c:341-359"),
        pytest.param({"prop_str": "2nd string"}, "1", "2nd string", id="t_modctl.c:361-379"),
    ],
)
def test_cmd_load_props(mnt: DevfsdMount, props: dict[str, str], ok: str, val: str) -> None:
    """t_modctl.c:324-380: load-time properties reach INIT: prop_str_ok and
    prop_str_val, then unload."""
    assert load(mnt, K_HELPER, props) == 0
    rep = k_helper_report(mnt)
    assert (rep["prop_str_ok"], rep["prop_str_val"]) == (ok, val)
    assert unload(mnt, "k_helper") == 0


@departure("json-props")
def test_cmd_load_props_xml(mnt: DevfsdMount) -> None:
    """t_modctl.c:229-236: the properties travel externalized, as an XML
    property list (``prop_dictionary_externalize``)."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<plist version="1.0">\n<dict>\n'
        "\t<key>prop_str</key>\n\t<string>1st string</string>\n</dict>\n</plist>\n"
    )
    assert load(mnt, K_HELPER, xml) == 0


def test_cmd_load_recurse(mnt: DevfsdMount) -> None:
    """t_modctl.c:393-417: k_helper's INIT loads k_helper2 (``prop_recurse``,
    module_load(9)): prop_int_load = 0, k_helper2 present; both unload, in
    that order (k_helper does not hold k_helper2). Isolated, k_helper2
    loads inside k_helper's host (devfsd-module(9) ISOLATION): its node
    works, it is no module of modstat's, and it goes with k_helper."""
    assert load(mnt, K_HELPER, {"prop_recurse": K_HELPER2}) == 0
    assert k_helper_report(mnt)["prop_int_load"] == "0"
    assert report(mnt, "k_helper2")["vendor.k_helper2.present"] == "1"
    (row,) = mnt.client().modstat("k_helper")["modules"]
    if "i" in row["flags"]:
        assert mnt.client().modstat("k_helper2")["modules"] == []
        assert unload(mnt, "k_helper") == 0
        assert report(mnt, "k_helper2") == {}
        return
    assert unload(mnt, "k_helper") == 0
    assert unload(mnt, "k_helper2") == 0


def test_cmd_load_recurse_failure_is_reported(mnt: DevfsdMount) -> None:
    """k_helper.c:155-164: module_load's error lands in prop_int_load, and
    k_helper itself still loads."""
    assert load(mnt, K_HELPER, {"prop_recurse": "non-existent"}) == 0
    assert k_helper_report(mnt)["prop_int_load"] == str(errno.ENOENT)


def test_cmd_stat(mnt: DevfsdMount) -> None:
    """t_modctl.c:430-447: absent by both checks; loaded: class MISC, source
    FILESYS, refcnt 0, and the sysctl (here the node) agrees; unloaded:
    absent again."""
    assert not present(mnt)
    assert report(mnt) == {}
    assert load(mnt, K_HELPER) == 0
    assert present(mnt)
    assert k_helper_report(mnt)["present"] == "1"
    (row,) = mnt.client().modstat("k_helper")["modules"]
    assert (row["class"], row["source"], row["refs"]) == ("misc", "filesys", 0)
    assert unload(mnt, "k_helper") == 0
    assert not present(mnt)
    assert report(mnt) == {}


def test_cmd_unload(mnt: DevfsdMount) -> None:
    """t_modctl.c:460-472: unload of "", "non-existent.kmod" and
    "k_helper.kmod" (a file name, not the module's) is ENOENT; "k_helper"
    unloads it."""
    assert load(mnt, K_HELPER) == 0
    assert unload(mnt, "") == errno.ENOENT
    assert unload(mnt, "non-existent.kmod") == errno.ENOENT
    assert unload(mnt, "k_helper.kmod") == errno.ENOENT
    assert present(mnt)
    assert unload(mnt, "k_helper") == 0
    assert not present(mnt)
