"""NetBSD's sbin/mknod: mknod.c 1.42 and pack_dev.c, against devfs-mknod.

mknod.c line numbers are those of the copy named in ``__init__.py``;
pack_dev.c's are NetBSD/src's 1.9.6.1, whose checks 1.12 keeps. Most cases
are the command line parser's (``devfsd.mknod.args.parse``, pure); the
driver-name case also runs the real devfs-mknod against a mount.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devfsd.mknod.args import MakeNode, MknodError, parse
from devfsd.testing.mount import DevfsdMount, run

from .netbsd import MODS, departure

if TYPE_CHECKING:
    from pathlib import Path

UMASK = 0o022


class Lookup:
    """Users, groups and drivers as the tests need them."""

    def user(self, name: str) -> int | None:
        return {"root": 0}.get(name)

    def group(self, name: str) -> int | None:
        return {"wheel": 0}.get(name)

    def major(self, driver: str, *, block: bool, node: str, control: str | None) -> int | None:
        return None if block else {"crandom": 420}.get(driver)


def message(*argv: str) -> str | None:
    with pytest.raises(MknodError) as ei:
        parse(list(argv), umask=UMASK, lookup=Lookup())
    return ei.value.message


def node(*argv: str) -> MakeNode:
    r = parse(list(argv), umask=UMASK, lookup=Lookup())
    assert isinstance(r, MakeNode)
    return r


def test_driver_name_with_two_numbers() -> None:
    """mknod.c:223-227: with two numbers, a first that is not a number is
    looked up as a driver name (crandom is major 420)."""
    assert node("n", "c", "crandom", "3").dev == node("n", "c", "420", "3").dev


def test_driver_name_alone_is_an_invalid_number() -> None:
    """mknod.c:223,233: a name is looked up only when ``argc == 2``; alone
    it is ``invalid number: crandom``."""
    assert message("n", "c", "crandom") == "invalid number: crandom"


def test_driver_name_among_three_numbers_is_an_invalid_number() -> None:
    """mknod.c:223,233: nor with three numbers (bsdos)."""
    assert message("-F", "bsdos", "n", "c", "crandom", "1", "2") == "invalid number: crandom"


def test_unknown_driver() -> None:
    """mknod.c:229-230: a name that is no driver's: ``unknown driver``."""
    assert message("n", "c", "nosuch", "0") == "unknown driver: nosuch"


def test_unknown_driver_with_a_leading_digit() -> None:
    """mknod.c:229-233: ... unless it starts with a digit: ``invalid number``."""
    assert message("n", "c", "9x", "0") == "invalid number: 9x"


def test_second_number_is_never_a_driver() -> None:
    """mknod.c:223,233: only the first of the two numbers may be a name."""
    assert message("n", "c", "1", "crandom") == "invalid number: crandom"


@pytest.mark.fuse
@pytest.mark.slow
def test_driver_name_alone_through_the_tool(tmp_path: Path) -> None:
    """mknod.c:223,233, through the real devfs-mknod and a mount with
    crandom loaded: ``devfs-mknod NODE c crandom`` says ``invalid number:
    crandom``, exits 1 and makes nothing."""
    with DevfsdMount(tmp_path, modpath=[MODS]) as m:
        m.client().modload("crandom")
        r = run(["devfs-mknod", str(m.path / "cr"), "c", "crandom"], env=m.env)
        assert (r.returncode, r.stdout, r.stderr) == (1, b"", b"devfs-mknod: invalid number: crandom\n")
        assert not (m.path / "cr").exists()
        r = run(["devfs-mknod", str(m.path / "cr"), "c", "crandom", "0"], env=m.env)
        assert (r.returncode, r.stderr) == (0, b"")
        assert (m.path / "cr").exists()  # a node (shown as a regular file: DESIGN.md)


#: (pack_dev.c lines, -F format, numbers, message)
PACK_CASES = [
    ("135-137", "386bsd", "256 256", "invalid minor number"),
    ("134-135", "386bsd", "256 0", "invalid major number"),
    ("135-137", "linux", "256 256", "invalid minor number"),
    ("113-115", "freebsd", "256 0x80000000", "invalid minor number"),
    ("157-159", "osf1", "4096 1048576", "invalid minor number"),
    ("179-181", "svr4", "16384 262144", "invalid minor number"),
    ("201-203", "hpux", "256 16777216", "invalid minor number"),
    ("224-227", "bsdos", "4096 1048576", "invalid minor number"),
    ("230-235", "bsdos", "4096 4096 256", "invalid subunit number"),
    ("230-233", "bsdos", "4096 4096 0", "invalid unit number"),
    ("230-231", "bsdos", "4096 0 0", "invalid major number"),
    ("90-93", "netbsd", "4096 1048576", "invalid major number"),
    ("73-76", "native", "4294967296 4294967296", "invalid major number"),
    ("138-139", "386bsd", "1 2 3", "too many fields for format"),
]


@pytest.mark.parametrize(
    ("fmt", "numbers", "text"),
    [pytest.param(f, n, t, id=f"pack_dev.c:{lines},{f}") for lines, f, n, t in PACK_CASES],
)
def test_pack_range_messages(fmt: str, numbers: str, text: str) -> None:
    """pack_dev.c:128-141 and the other packers: ``native`` and ``netbsd``
    test the major first and stop (``else if``); the rest test every field
    and the last failure's message stands."""
    assert message("-F", fmt, "n", "c", *numbers.split()) == text


@pytest.mark.parametrize(
    ("opt", "arg", "attr", "want"),
    [
        pytest.param("-u", "#12", "uid", 12, id="mknod.c:147-150"),
        pytest.param("-g", "#12", "gid", 12, id="mknod.c:128-131"),
        pytest.param("-u", "root", "uid", 0, id="mknod.c:152-153"),
        pytest.param("-u", "7", "uid", 7, id="mknod.c:154-156"),
    ],
)
def test_owner_forms(opt: str, arg: str, attr: str, want: int) -> None:
    """mknod.c:127-158: ``#N`` forces a number, else a name, else a number."""
    assert getattr(node(opt, arg, "n", "c", "1", "2"), attr) == want


@pytest.mark.parametrize("opt", ["-u", "-g"])
def test_owner_bad(opt: str) -> None:
    """mknod.c:137,157: neither name nor number: ``X: invalid user name``."""
    what = "user" if opt == "-u" else "group"
    assert message(opt, "#12x", "n", "c", "1", "2") == f"#12x: invalid {what} name"


@departure("hash-id")
@pytest.mark.parametrize(("opt", "attr"), [("-u", "uid"), ("-g", "gid")])
def test_owner_lone_hash_is_zero(opt: str, attr: str) -> None:
    """mknod.c:147-150 (``-g``: 128-131): ``#`` alone is ``strtol("")``,
    which stops at once at the NUL: id 0, root."""
    try:
        made = node(opt, "#", "n", "c", "1", "2")
    except MknodError as exc:
        raise AssertionError(exc.message) from None
    assert getattr(made, attr) == 0
