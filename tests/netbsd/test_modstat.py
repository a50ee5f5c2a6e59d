"""NetBSD's sbin/modstat/main.c (1.15.2.1), through a mount and the real modstat.

devfsd's modstat prints the later layout (with FLAG); these are the rules
both layouts share, line numbers of 1.15.2.1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount, run

from .netbsd import module

if TYPE_CHECKING:
    from collections.abc import Iterator
    from subprocess import CompletedProcess

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

LONG = "a_module_with_a_long_name"


@pytest.fixture(scope="module")
def mnt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevfsdMount]:
    mods = tmp_path_factory.mktemp("mods")
    for name in ("Zed", "alpha", LONG):
        module(mods, name)
    module(mods, "needy", "alpha")
    with DevfsdMount(tmp_path_factory.mktemp("modstat"), modpath=[mods]) as m:
        for name in ("Zed", LONG, "needy"):
            m.client().modload(name)
        yield m


def modstat(m: DevfsdMount, *args: str) -> CompletedProcess[bytes]:
    return run(["modstat", *args], env=m.env, timeout=30)


def rows(r: CompletedProcess[bytes]) -> list[list[str]]:
    assert (r.returncode, r.stderr) == (0, b""), r
    return [line.split() for line in r.stdout.decode().splitlines()[1:]]


def test_rows_sorted_by_strcmp(mnt: DevfsdMount) -> None:
    """main.c:172,231: rows sorted by strcmp of the names (upper case first)."""
    assert [r[0] for r in rows(modstat(mnt))] == ["Zed", LONG, "alpha", "needy"]


def test_name_operand_is_dash_n(mnt: DevfsdMount) -> None:
    """main.c:100-101: one operand is the name, as ``-n name``."""
    assert modstat(mnt, "alpha").stdout == modstat(mnt, "-n", "alpha").stdout
    assert [r[0] for r in rows(modstat(mnt, "alpha"))] == ["alpha"]


def test_unknown_name_prints_the_header_only(mnt: DevfsdMount) -> None:
    """main.c:185-187: a name no module has: no row, the header, exit 0."""
    r = modstat(mnt, "nosuch")
    assert rows(r) == []
    assert r.stdout.decode().startswith("NAME ")


def test_name_column_fits_every_module(mnt: DevfsdMount) -> None:
    """main.c:77,173-176: NAME is as wide as the longest name of all
    modules (at least 16), also when one row is shown."""
    header, row = modstat(mnt, "Zed").stdout.decode().splitlines()
    assert header.index("CLASS") == len(LONG) + 1
    assert row.index("misc") == len(LONG) + 1


def test_requires_dash_or_list(mnt: DevfsdMount) -> None:
    """main.c:188-191: REQUIRES is ``-`` when empty, else the list."""
    by_name = {r[0]: r[-1] for r in rows(modstat(mnt))}
    assert (by_name["needy"], by_name["alpha"]) == ("alpha", "-")


def test_two_operands_is_usage(mnt: DevfsdMount) -> None:
    """main.c:102-103,216-221: more than one name: usage on stderr, exit 1."""
    r = modstat(mnt, "alpha", "Zed")
    assert (r.returncode, r.stdout) == (1, b"")
    assert r.stderr.decode().startswith("Usage: modstat ")


def test_e_answers_on_stderr(mnt: DevfsdMount) -> None:
    """main.c:154: ``-e``: ``You can load modules.`` on stderr, exit 0."""
    r = modstat(mnt, "-e")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"modstat: You can load modules.\n")


def test_a_answers_on_stderr(mnt: DevfsdMount) -> None:
    """main.c:133-134: ``-a``: ``Modules can be autoloaded.`` on stderr, exit 0."""
    r = modstat(mnt, "-a")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"modstat: Modules can be autoloaded.\n")
