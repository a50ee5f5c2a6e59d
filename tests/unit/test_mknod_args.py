"""devfs-mknod's pure parts: the argument parser, ``-F`` formats and ``-m`` modes.

The parser gets a dictionary-backed ``Lookup``, so nothing here touches the
file system or a daemon; the messages are mknod(8)'s, checked exactly.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from typing import TYPE_CHECKING, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.mknod.args import (
    NO_REPLACE,
    REPLACE,
    REPLACE_FIX,
    ListDrivers,
    MakeNode,
    MknodError,
    parse,
)
from devfsd.mknod.mode import ModeError, getmode, setmode
from devfsd.mknod.pack import FORMATS, ULONG_MAX, PackError, pack_find

if TYPE_CHECKING:
    from collections.abc import Callable

UMASK = 0o022

T = TypeVar("T")
E = TypeVar("E", bound=Exception)


class FakeLookup:
    """Names from dictionaries; records which drivers were asked about."""

    def __init__(self) -> None:
        self.users = {"daemon": 1, "operator": 2}
        self.groups = {"wheel": 0, "tty": 5, "42": 4242}
        self.drivers = {"crandom": 420, "tunwg": 421, "9lives": 99}
        self.asked: list[tuple[str, bool, str, str | None]] = []

    def user(self, name: str) -> int | None:
        return self.users.get(name)

    def group(self, name: str) -> int | None:
        return self.groups.get(name)

    def major(self, driver: str, *, block: bool, node: str, control: str | None) -> int | None:
        self.asked.append((driver, block, node, control))
        return None if block else self.drivers.get(driver)


def node(*argv: str, umask: int = UMASK, lookup: FakeLookup | None = None) -> MakeNode:
    result = parse(list(argv), umask=umask, lookup=lookup or FakeLookup())
    assert isinstance(result, MakeNode)
    return result


def error(*argv: str) -> MknodError:
    with pytest.raises(MknodError) as info:
        parse(list(argv), umask=UMASK, lookup=FakeLookup())
    return info.value


def message(*argv: str) -> str | None:
    exc = error(*argv)
    assert not exc.usage
    return exc.message


def is_usage(*argv: str) -> bool:
    exc = error(*argv)
    return exc.usage and exc.message is None


# -- node forms ---------------------------------------------------------------------


def test_major_minor() -> None:
    assert node("n", "c", "420", "3") == MakeNode(
        name="n", type="c", mode=stat.S_IFCHR | 0o644, dev=os.makedev(420, 3)
    )


def test_block() -> None:
    req = node("n", "b", "8", "1")
    assert (req.mode, req.dev) == (stat.S_IFBLK | 0o644, os.makedev(8, 1))


def test_fifo() -> None:
    assert node("f", "p") == MakeNode(name="f", type="p", mode=stat.S_IFIFO | 0o644, dev=0)


def test_single_number_is_the_whole_dev() -> None:
    assert node("n", "c", "0x1234").dev == 0x1234


def test_numbers_are_strtoul_base_0() -> None:
    assert node("n", "c", "0x1A", "010").dev == os.makedev(26, 8)
    assert node("n", "c", " +7", "0").dev == os.makedev(7, 0)


def test_negative_number_wraps_like_strtoul() -> None:
    assert node("n", "c", "-1").dev == ULONG_MAX


@pytest.mark.parametrize("bad", ["08", "0x", "1a", "", " ", "1 ", "- 1", "0x1g", "18446744073709551616"])
def test_invalid_second_number(bad: str) -> None:
    assert message("n", "c", "1", bad) == f"invalid number: {bad}"


def test_umask_sets_the_default_mode() -> None:
    assert node("n", "c", "1", "2", umask=0o077).mode == stat.S_IFCHR | 0o600


def test_driver_name_resolves_through_lookup() -> None:
    lookup = FakeLookup()
    req = node("-c", "/s.sock", "dev/cr", "c", "crandom", "5", lookup=lookup)
    assert req.dev == os.makedev(420, 5)
    assert req.control == "/s.sock"
    assert lookup.asked == [("crandom", False, "dev/cr", "/s.sock")]


def test_only_the_first_number_may_be_a_driver() -> None:
    assert message("n", "c", "1", "crandom") == "invalid number: crandom"


def test_numbers_never_consult_the_lookup() -> None:
    lookup = FakeLookup()
    node("n", "c", "1", "2", lookup=lookup)
    assert lookup.asked == []


def test_unknown_driver() -> None:
    assert message("n", "c", "nosuch", "0") == "unknown driver: nosuch"


def test_unknown_driver_with_a_leading_digit_is_an_invalid_number() -> None:
    assert message("n", "c", "1abc", "0") == "invalid number: 1abc"


def test_driver_with_a_leading_digit_resolves() -> None:
    assert node("n", "c", "9lives", "0").dev == os.makedev(99, 0)


def test_block_driver_asks_for_a_block_major() -> None:
    lookup = FakeLookup()
    with pytest.raises(MknodError, match=r"^unknown driver: crandom$"):
        parse(["n", "b", "crandom", "0"], umask=UMASK, lookup=lookup)
    assert lookup.asked == [("crandom", True, "n", None)]


def test_unknown_driver_comes_before_later_bad_numbers() -> None:
    assert message("n", "c", "nosuch", "junk") == "unknown driver: nosuch"


def test_lone_driver_name_is_an_invalid_number_as_in_netbsd() -> None:
    # mknod.c 1.42 looks a driver up only with exactly two numbers.
    assert message("n", "c", "crandom") == "invalid number: crandom"
    assert message("-F", "bsdos", "n", "c", "crandom", "1", "2") == "invalid number: crandom"


# -- type and counts ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["x", "cc", "", "C", "u"])
def test_bad_type(kind: str) -> None:
    assert message("n", kind, "1", "2") == "node type must be 'b', 'c' or 'p'."


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("n",),
        ("n", "c"),
        ("n", "c", "1", "2", "3", "4"),
        ("n", "p", "1"),
        ("n", "c", *["1"] * 9),
    ],
)
def test_usage(argv: tuple[str, ...]) -> None:
    assert is_usage(*argv)


def test_too_many_operands_is_usage_before_the_type() -> None:
    assert is_usage("n", "x", *["1"] * 9)


def test_three_numbers_need_bsdos() -> None:
    assert message("n", "c", "1", "2", "3") == "too many fields for format"
    assert node("-F", "bsdos", "n", "c", "1", "2", "3").dev == (1 << 20) | (2 << 8) | 3


def test_format_is_meaningless_for_fifos() -> None:
    assert message("-F", "native", "f", "p") == "format is meaningless for fifos"


def test_invalid_format() -> None:
    assert message("-F", "NetBSD", "n", "c", "1", "2") == "invalid format: NetBSD"


def test_format_packs() -> None:
    assert node("-F", "netbsd", "n", "c", "3", "0x12345").dev == 0x12300345
    assert node("-F", "linux", "n", "c", "3", "4").dev == 0x0304


def test_pack_error_becomes_the_message() -> None:
    assert message("-F", "linux", "n", "c", "256", "0") == "invalid major number"


# -- options ---------------------------------------------------------------------------


def test_r_and_R() -> None:
    assert node("n", "p").replace == NO_REPLACE
    assert node("-r", "n", "p").replace == REPLACE
    assert node("-R", "n", "p").replace == REPLACE_FIX
    assert node("-Rr", "n", "p").replace == REPLACE


def test_mode_option() -> None:
    assert node("-m", "0640", "n", "c", "1", "2").mode == stat.S_IFCHR | 0o640
    assert node("-m", "go-r,u+x", "n", "c", "1", "2").mode == stat.S_IFCHR | 0o700


def test_bad_mode() -> None:
    assert message("-m", "u+q", "n", "p") == "Cannot set file mode `u+q': Invalid argument"


def test_bad_mode_is_reported_before_a_bad_type() -> None:
    assert message("-m", "9", "n", "x") == "Cannot set file mode `9': Invalid argument"


@pytest.mark.parametrize(
    ("arg", "uid"),
    [("daemon", 1), ("77", 77), ("#2", 2), (" 5", 5), ("-1", None), ("4294967294", 4294967294)],
)
def test_user(arg: str, uid: int | None) -> None:
    assert node("-u", arg, "n", "p").uid == uid


def test_hash_forces_a_number_even_when_a_name_matches() -> None:
    assert node("-g", "#42", "n", "p").gid == 42
    assert node("-g", "42", "n", "p").gid == 4242


@pytest.mark.parametrize("arg", ["nobody-here", "#x", "", "#", "1x"])
def test_invalid_user(arg: str) -> None:
    assert message("-u", arg, "n", "p") == f"{arg}: invalid user name"


def test_invalid_group() -> None:
    assert message("-g", "staff", "n", "p") == "staff: invalid group name"


def test_getopt_complaint_comes_with_usage() -> None:
    exc = error("-x", "n", "p")
    assert (exc.message, exc.usage) == ("unknown option -- x", True)
    exc = error("n", "p", "-m")  # options stop at the first operand: -m is an operand
    assert (exc.message, exc.usage) == (None, True)
    exc = error("-m")
    assert (exc.message, exc.usage) == ("option requires an argument -- m", True)


def test_options_are_checked_in_order() -> None:
    assert message("-F", "bad", "-x") == "invalid format: bad"


def test_list() -> None:
    result = parse(["-c", "/s", "-l", "tunwg", "crandom"], umask=UMASK, lookup=FakeLookup())
    assert result == ListDrivers(names=("tunwg", "crandom"), control="/s")
    assert parse(["-l"], umask=UMASK, lookup=FakeLookup()) == ListDrivers()


def test_list_still_checks_the_options() -> None:
    assert message("-l", "-F", "bad") == "invalid format: bad"


def _outcome(fn: Callable[[], T], exc_type: type[E]) -> T | E:
    """``fn()``, or the ``exc_type`` it raised (anything else propagates)."""
    try:
        return fn()
    except exc_type as exc:
        return exc


# -- property tests --------------------------------------------------------------------

OPTION_WORDS = ["-r", "-R", "-l", "-F", "native", "bsdos", "-m", "u+x", "0640", "-u", "-g"]
WORDS = ["n", "c", "b", "p", "crandom", "0", "1", "0x10", "-1", "nosuch", "9lives", "--"]
argv_strategy = st.lists(st.one_of(st.sampled_from(OPTION_WORDS + WORDS), st.text(max_size=12)), max_size=12)


@given(argv_strategy, st.integers(0, 0o777))
def test_parse_returns_a_request_or_raises_mknod_error(argv: list[str], umask: int) -> None:
    result = _outcome(lambda: parse(argv, umask=umask, lookup=FakeLookup()), MknodError)
    if isinstance(result, MknodError):
        assert result.usage or result.message
    elif isinstance(result, MakeNode):
        assert result.type in ("b", "c", "p")
        assert 0 <= result.dev <= ULONG_MAX
        assert stat.S_IFMT(result.mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
def test_native_numbers_round_trip(maj: int, mnr: int) -> None:
    dev = node("n", "c", str(maj), hex(mnr)).dev
    assert (os.major(dev), os.minor(dev)) == (maj, mnr)


@given(st.integers(0, 2**64 + 5), st.integers(0, 2**64 + 5), st.sampled_from(sorted(FORMATS)))
def test_every_format_packs_losslessly_or_refuses(maj: int, mnr: int, fmt: str) -> None:
    pack = pack_find(fmt)
    assert pack is not None
    dev = _outcome(lambda: pack([maj, mnr]), PackError)
    if isinstance(dev, PackError):
        assert str(dev) in ("invalid major number", "invalid minor number")
        return
    assert dev >= 0
    # Bit 0 is in every format's minor field: flipping it fits, and changes dev.
    assert pack([maj, mnr ^ 1]) != dev


# -- -F formats -------------------------------------------------------------------------


def test_format_table_is_netbsds() -> None:
    assert sorted(FORMATS) == [
        "386bsd", "4bsd", "bsdos", "freebsd", "hpux", "isc", "linux", "native",
        "netbsd", "osf1", "sco", "solaris", "sunos", "svr3", "svr4", "ultrix",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "maj", "mnr", "dev"),
    [
        ("native", 420, 3, os.makedev(420, 3)),
        ("netbsd", 0xABC, 0xFFFFF, 0xFFF00000 | 0xABC00 | 0xFF),
        ("linux", 0xAB, 0xCD, 0xABCD),
        ("386bsd", 1, 2, 0x0102),
        ("freebsd", 0x12, 0x3456_0078, 0x3456_1278),
        ("hpux", 0x12, 0x345678, 0x12345678),
        ("osf1", 0x123, 0x45678, 0x12345678),
        ("solaris", 0x48D, 0x5678, 0x12345678),
        ("bsdos", 0x123, 0x45678, 0x12345678),
    ],
)
def test_pack_vectors(fmt: str, maj: int, mnr: int, dev: int) -> None:
    pack = pack_find(fmt)
    assert pack is not None
    assert pack([maj, mnr]) == dev


@pytest.mark.parametrize(
    ("fmt", "numbers", "text"),
    [
        ("native", [2**32, 0], "invalid major number"),
        ("native", [0, 2**32], "invalid minor number"),
        ("native", [1, 2, 3], "too many fields for format"),
        ("linux", [256, 256], "invalid minor number"),
        ("linux", [256, 0], "invalid major number"),
        ("netbsd", [4096, 1 << 20], "invalid major number"),
        ("linux", [1, 256], "invalid minor number"),
        ("netbsd", [4096, 0], "invalid major number"),
        ("netbsd", [0, 1 << 20], "invalid minor number"),
        # The minor field's top bit reads back negative through int32_t.
        ("freebsd", [0, 0x8000_0000], "invalid minor number"),
        ("bsdos", [1, 4096, 0], "invalid unit number"),
        ("bsdos", [1, 0, 256], "invalid subunit number"),
        ("bsdos", [4096, 4096, 256], "invalid subunit number"),
        ("bsdos", [4096, 4096, 0], "invalid unit number"),
        ("bsdos", [1, 2, 3, 4], "too many fields for format"),
    ],
)
def test_pack_errors(fmt: str, numbers: list[int], text: str) -> None:
    pack = pack_find(fmt)
    assert pack is not None
    with pytest.raises(PackError, match=f"^{text}$"):
        pack(numbers)


# -- -m modes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "umask", "start", "result"),
    [
        ("0640", 0o022, 0o666, 0o640),
        ("7777", 0o777, 0o000, 0o7777),
        ("u+x", 0o022, 0o644, 0o744),
        ("go-w", 0o000, 0o666, 0o644),
        ("a=r", 0o022, 0o666, 0o444),
        ("=", 0o022, 0o666, 0o000),
        ("+w", 0o022, 0o444, 0o644),  # no who: the umask spares group and other
        ("+x", 0o022, 0o644, 0o755),
        ("u=g", 0o022, 0o640, 0o440),
        ("g=u-w", 0o022, 0o640, 0o640),
        ("o=u", 0o022, 0o750, 0o757),
        ("g+u", 0o022, 0o700, 0o770),
        ("u+r-w", 0o022, 0o200, 0o400),
        ("u=rw,g=r,o=", 0o022, 0o777, 0o640),
        ("ug+s", 0o022, 0o644, 0o6644),
        ("o+s", 0o022, 0o644, 0o644),  # set-id means nothing for "other" alone
        ("+t", 0o022, 0o644, 0o1644),
        ("a+X", 0o022, 0o644, 0o644),  # no execute bit to begin with
        ("a+X", 0o022, 0o744, 0o755),
        ("u=,g+w,a-x", 0o022, 0o755, 0o064),
    ],
)
def test_mode_vectors(text: str, umask: int, start: int, result: int) -> None:
    assert getmode(setmode(text, umask), stat.S_IFCHR | start) == stat.S_IFCHR | result


def test_mode_X_looks_at_the_starting_mode() -> None:
    # "-x" first, then "+X": X still sees the execute bit the node started with.
    assert getmode(setmode("a-x,a+X", 0), 0o755) == 0o755


@pytest.mark.parametrize("bad", ["", "8", "0778", "10000", "u", "u+q", "u+r,", ",", "a+r x", "+z"])
def test_mode_invalid(bad: str) -> None:
    with pytest.raises(ModeError) as info:
        setmode(bad, 0o022)
    assert info.value.errno == 22  # EINVAL


def test_mode_octal_overflow_is_erange() -> None:
    with pytest.raises(ModeError) as info:
        setmode("7" * 30, 0)
    assert info.value.errno == 34  # ERANGE


@given(st.text(alphabet="augo+-=rwxXst,01234567", max_size=12), st.integers(0, 0o777))
def test_mode_compiles_or_raises_mode_error(text: str, umask: int) -> None:
    try:
        cmds = setmode(text, umask)
    except ModeError:
        return
    mode = getmode(cmds, stat.S_IFCHR | 0o644)
    assert stat.S_IFMT(mode) == stat.S_IFCHR
    assert mode & ~0o177777 == 0


# -- purity -----------------------------------------------------------------------------

_BLOCKED = """
import sys
for name in ("socket", "trio", "pyfuse3", "devfsd.control.client"):
    sys.modules[name] = None
import devfsd.mknod.args, devfsd.mknod.mode, devfsd.mknod.pack, devfsd.tools
print("ok")
"""


@pytest.mark.slow
def test_the_pure_modules_import_without_socket_trio_or_pyfuse3() -> None:
    proc = subprocess.run([sys.executable, "-c", _BLOCKED], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "ok\n", "")
