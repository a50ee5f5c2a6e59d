"""NetBSD's tests/modules/t_modload.sh 1.13, through a real mount and the real tools.

t_modload.sh runs modload(8) and modunload(8) and reads k_helper's sysctl
nodes; here the same commands run against a devfsd mount and k_helper
(tests/modules/k_helper) reports through a device node instead. NetBSD's
``k_helper/k_helper.kmod`` is the package directory ``k_helper``; a bare
``k_helper.kmod`` (bflag's) is a name that is never loaded, since every
case there is refused before the load.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount, run

from .netbsd import MODS, departure, k_helper_report

if TYPE_CHECKING:
    from collections.abc import Iterator
    from subprocess import CompletedProcess

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

K_HELPER = str(MODS / "k_helper")


@pytest.fixture(scope="module", params=["in-process", "isolated"])
def mnt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevfsdMount]:
    """k_helper in process, or in a host of its own (``--isolate``): every test here runs both ways."""
    isolate = ["--isolate"] if request.param == "isolated" else []
    with DevfsdMount(tmp_path_factory.mktemp("t_modload"), modpath=[MODS], args=isolate) as m:
        yield m


@pytest.fixture(autouse=True)
def _cleanup(mnt: DevfsdMount) -> Iterator[None]:
    """Each case's cleanup: ``modunload k_helper >/dev/null 2>&1``."""
    yield
    tool(mnt, "modunload", "k_helper")


def tool(m: DevfsdMount, *argv: str) -> CompletedProcess[bytes]:
    return run(list(argv), env=m.env, timeout=30)


def check_fails(m: DevfsdMount, argv: list[str], pattern: str) -> None:
    """``atf_check -s eq:1 -o empty -e save:stderr``, then grep stderr."""
    r = tool(m, *argv)
    assert (r.returncode, r.stdout) == (1, b""), r
    assert re.search(pattern, r.stderr.decode()), r.stderr


def check_silent(r: CompletedProcess[bytes]) -> None:
    """``atf_check -s eq:0 -o empty -e empty``."""
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")


def test_plain_nonexistent(mnt: DevfsdMount) -> None:
    """t_modload.sh:52: ``modload non-existent.o`` exits 1, stdout empty."""
    r = tool(mnt, "modload", "non-existent.o")
    assert (r.returncode, r.stdout) == (1, b"")


def test_plain_load_unload(mnt: DevfsdMount) -> None:
    """t_modload.sh:54-59: load k_helper by path, silently; present = 1,
    prop_int_ok = 0, prop_str_ok = 0; modunload k_helper silently."""
    check_silent(tool(mnt, "modload", K_HELPER))
    rep = k_helper_report(mnt)
    assert (rep["present"], rep["prop_int_ok"], rep["prop_str_ok"]) == ("1", "0", "0")
    check_silent(tool(mnt, "modunload", "k_helper"))
    assert k_helper_report(mnt) == {}


@pytest.mark.parametrize(
    ("arg", "pattern"),
    [
        pytest.param("foo", "Invalid parameter.*foo", id="t_modload.sh:75"),
        pytest.param("foo=", "Invalid boolean value", id="t_modload.sh:80"),
        pytest.param("foo=bar", "Invalid boolean value.*bar", id="t_modload.sh:85"),
        pytest.param("foo=falsea", "Invalid boolean value.*falsea", id="t_modload.sh:90"),
        pytest.param("foo=truea", "Invalid boolean value.*truea", id="t_modload.sh:95"),
    ],
)
def test_bflag_errors(mnt: DevfsdMount, arg: str, pattern: str) -> None:
    """t_modload.sh:74-98: ``modload -b`` refusals, exit 1, nothing on stdout."""
    check_fails(mnt, ["modload", "-b", arg, "k_helper.kmod"], pattern)


@pytest.mark.parametrize(
    ("arg", "pattern"),
    [
        pytest.param("foo", "Invalid parameter.*foo", id="t_modload.sh:124"),
        pytest.param("foo=", "Invalid integer value", id="t_modload.sh:129"),
        pytest.param("foo=bar", "Invalid integer value.*bar", id="t_modload.sh:135"),
        pytest.param("foo=123a", "Invalid integer value.*123a", id="t_modload.sh:140"),
    ],
)
def test_iflag_errors(mnt: DevfsdMount, arg: str, pattern: str) -> None:
    """t_modload.sh:124-143: ``modload -i`` refusals, exit 1, nothing on stdout."""
    check_fails(mnt, ["modload", "-i", arg, "k_helper/k_helper.kmod"], pattern)


@pytest.mark.parametrize("value", ["5", "10"])
def test_iflag_values(mnt: DevfsdMount, value: str) -> None:
    """t_modload.sh:147-153: ``modload -i prop_int=V``: prop_int_ok = 1, prop_int_val = V."""
    check_silent(tool(mnt, "modload", "-i", f"prop_int={value}", K_HELPER))
    rep = k_helper_report(mnt)
    assert (rep["prop_int_ok"], rep["prop_int_val"]) == ("1", value)
    check_silent(tool(mnt, "modunload", "k_helper"))


def test_sflag_error(mnt: DevfsdMount) -> None:
    """t_modload.sh:178-181: ``modload -s foo``: Invalid parameter, exit 1."""
    check_fails(mnt, ["modload", "-s", "foo", "k_helper/k_helper.kmod"], "Invalid parameter.*foo")


@pytest.mark.parametrize("value", ["1st string", "2nd string"])
def test_sflag_values(mnt: DevfsdMount, value: str) -> None:
    """t_modload.sh:186-192: ``modload -s prop_str=V``: prop_str_ok = 1, prop_str_val = V."""
    check_silent(tool(mnt, "modload", "-s", f"prop_str={value}", K_HELPER))
    rep = k_helper_report(mnt)
    assert (rep["prop_str_ok"], rep["prop_str_val"]) == ("1", value)
    check_silent(tool(mnt, "modunload", "k_helper"))


def test_sflag_empty_name(mnt: DevfsdMount) -> None:
    """main.c:226-231 (modload 1.12): ``-s =x`` splits at the first ``=``
    into an empty name, which proplib accepts: k_helper gets ``{"": "x"}``."""
    check_silent(tool(mnt, "modload", "-s", "=x", K_HELPER))
    assert k_helper_report(mnt)["props"] == '{"": "x"}'


def test_sflag_128_byte_name(mnt: DevfsdMount) -> None:
    """prop_dictionary.c:62-66,85 (PDK_MAXKEY), modload/main.c:246: a
    property name of 128 bytes is the longest proplib keeps; k_helper gets it."""
    name = "k" * 128
    check_silent(tool(mnt, "modload", "-s", f"{name}=v", K_HELPER))
    assert f'"{name}": "v"' in k_helper_report(mnt)["props"]


@departure("long-key-modload")
def test_sflag_long_name_is_dropped(mnt: DevfsdMount) -> None:
    """main.c:246 (modload 1.12): the result of ``prop_dictionary_set`` is
    not checked, so a name past PDK_MAXKEY (128 bytes) is dropped and the
    module loads without it."""
    r = tool(mnt, "modload", "-s", f"{'k' * 129}=v", K_HELPER)
    assert r.returncode == 0, r.stderr
    assert k_helper_report(mnt)["props"] == "{}"
