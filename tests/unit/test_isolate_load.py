"""A module host's LOAD reply as hostile input (``supervisor.attach_list``).

A host may run as another user (``-i user=...``) and its driver's code is
not trusted: what its LOAD reply asks to attach is checked whole before
anything is attached, since every new driver name is recorded for ever
(``devsw.on_new_name``: the state directory). tests/modules/hostile's INIT
answers the daemon's LOAD itself, before its host does, as its properties
say. A refused load leaves nothing: no name recorded, nothing attached, no
module, and the next load of an honest module goes through.
"""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from devfsd.cdevsw import Cdevsw, devsw
from devfsd.cdevsw._table import MAXDEVNAME
from devfsd.errors import DevfsdError, DeviceError
from devfsd.isolate import protocol as P
from devfsd.isolate.hostproc import check_reply_json
from devfsd.isolate.supervisor import MAX_ATTACH, attach_list
from devfsd.testing.harness import Kernel

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

MODS = Path(__file__).resolve().parent.parent / "modules"
#: Bound on one load (a host starts a Python interpreter; a loaded machine).
WAIT = 30.0


class Recorded:
    """A kernel whose new driver names are recorded (as a state directory's)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.names: list[tuple[str, int]] = []
        devsw.on_new_name = lambda n, m: self.names.append((n, m))

    async def refused(self, props: dict[str, Any]) -> DeviceError:
        """hostile loaded with ``props``, which must fail: its error."""
        before = devsw.entries()
        with pytest.raises(DeviceError) as ei, trio.fail_after(WAIT):
            await self.k.modload("hostile", props)
        assert self.names == []
        assert devsw.entries() == before
        assert devsw.attached() == {}
        assert "hostile" not in self.k.loader.modules
        return ei.value

    async def loads_honestly(self) -> None:
        """hostile without lies loads, and its node answers."""
        with trio.fail_after(WAIT):
            await self.k.modload("hostile")
            f = await self.k.open("hostile", 0)
            assert await f.read(64) == b"fast\n"
            await f.close()
        assert [n for n, _ in self.names] == ["hostile"]


@pytest.fixture
async def rec() -> AsyncIterator[Recorded]:
    async with Kernel.running([MODS], isolate=True) as k:
        yield Recorded(k)


def reply(majors: list[Any]) -> str:
    return json.dumps({"name": "hostile", "cls": 3, "majors": majors})


async def test_a_host_that_attaches_500_names_is_refused_and_records_none(rec: Recorded) -> None:
    err = await rec.refused({"names": 500})
    assert err.errno == errno.E2BIG
    assert str(MAX_ATTACH) in str(err)
    await rec.loads_honestly()


async def test_up_to_the_cap_is_allowed() -> None:
    # (attach_list alone: the cap is not one less than it says)
    ok = attach_list({"majors": [[f"j{i}", 300 + i] for i in range(MAX_ATTACH)]})
    assert len(ok) == MAX_ATTACH


@pytest.mark.parametrize(
    ("majors", "err"),
    [
        # A good name first: checked whole, so "ok" is not recorded either.
        ([["ok", 300], ["evil\nline", 301]], errno.EINVAL),
        ([["ok", 300], ["esc\x1b[2J", 301]], errno.EINVAL),
        ([["ok", 300], ["x" * 3000, 301]], errno.ENAMETOOLONG),
        ([["ok", 300], ["", 301]], errno.EINVAL),
        ([["dup", 300], ["dup", 300]], errno.EINVAL),
        ([["a", 300], ["b", 300]], errno.EINVAL),
        ([["ok", 300], ["theft", 420]], errno.EEXIST),  # crandom's, reserved
        ([["ok", 300], ["crandom", 421]], errno.EINVAL),  # crandom has 420
        ([["ok", 300], ["far", 512]], errno.EINVAL),
        ([["ok", 300], ["neg", -1]], errno.EINVAL),
        ([["ok", 300], ["flag", True]], errno.EBADMSG),
        ([["ok", 300], [7, 301]], errno.EBADMSG),
        ([["ok", 300], ["three", 301, 1]], errno.EBADMSG),
    ],
)
async def test_a_bad_pair_refuses_the_load_and_records_nothing(
    rec: Recorded, majors: list[Any], err: int
) -> None:
    assert (await rec.refused({"reply": reply(majors)})).errno == err
    await rec.loads_honestly()


async def test_a_reply_nested_past_the_stack_is_ebadmsg_not_a_hung_modload(rec: Recorded) -> None:
    # json.loads raised RecursionError, which nothing caught: the load's
    # thread died, modload never returned and held the loader's lock.
    assert (await rec.refused({"nest": 50_000})).errno == errno.EBADMSG
    await rec.loads_honestly()


async def test_a_reply_past_its_size_limit_is_not_parsed(rec: Recorded) -> None:
    # 20,000 names (~300 KiB): refused by its size before any JSON is
    # parsed (4 MiB of it took the daemon's thread a quarter of a second).
    assert (await rec.refused({"names": 20_000})).errno == errno.EMSGSIZE
    await rec.loads_honestly()


@pytest.mark.parametrize(
    "reply_text",
    [
        "null",
        "[]",
        '{"name": "hostile"}',
        '{"name": "hostile", "cls": "3", "majors": []}',
        '{"name": 5, "cls": 3, "majors": []}',
        '{"name": "hostile", "cls": 3, "majors": {"a": 300}}',
        '{"name": "hostile", "cls": 3, "majors": [["a"]]}',
        '"\\ud800"',
    ],
)
async def test_a_malformed_reply_is_ebadmsg(rec: Recorded, reply_text: str) -> None:
    assert (await rec.refused({"reply": reply_text})).errno == errno.EBADMSG


async def test_an_error_reply_s_text_reaches_modload_without_control_characters(rec: Recorded) -> None:
    err = await rec.refused({"errno": errno.EPERM, "text": "no\n\x1b[31mforged line\r"})
    assert err.errno == errno.EPERM
    assert str(err) == "no\\n\\x1b[31mforged line\\r"


def test_printable_escapes_only_what_is_not_printable() -> None:
    assert P.printable("plain text: ok") == "plain text: ok"
    assert P.printable("a\tb\nc\x00d\x7f\u2028") == "a\\tb\\nc\\x00d\\x7f\\u2028"


# -- a seeded fuzz of attach_list against the switch ----------------------------


def _junk(rng: random.Random) -> object:
    return rng.choice(
        [
            None,
            True,
            1.5,
            -1,
            rng.randrange(-(1 << 70), 1 << 70),
            rng.randrange(0, 600),
            "",
            "".join(chr(rng.randrange(0, 0x250)) for _ in range(rng.randrange(1, 40))),
            "".join(rng.choice("abc_-.0/ ") for _ in range(rng.randrange(1, 40))),
            [],
            {},
        ]
    )


def _pair(rng: random.Random) -> object:
    if rng.random() < 0.5:
        name = rng.choice(["tunwg", "mm", "crandom", "x", "y", "z"]) + rng.choice(["", "", "1"])
        return [name, rng.choice([2, 40, 420, 300, 301, 302, 511, 512])]
    k = rng.randrange(4)
    return [_junk(rng) for _ in range(k)] if k != 2 else [_junk(rng), _junk(rng)]


@pytest.mark.parametrize("seed", range(20))
def test_fuzzed_attach_lists_attach_whole_or_change_nothing(seed: int) -> None:
    # Whatever a host's reply names: attach_list raises a DevfsdError and
    # the table is as before, or what it returns attaches whole (no
    # attach raises), within the cap, each name recorded once.
    rng = random.Random(seed)
    devsw.reset()
    recorded: list[tuple[str, int]] = []
    devsw.on_new_name = lambda n, m: recorded.append((n, m))
    try:
        devsw.attach("mm", Cdevsw())  # a driver in the daemon already
        for _ in range(200):
            info: dict[str, Any] = {"majors": [_pair(rng) for _ in range(rng.choice([0, 1, 2, 3, 9]))]}
            before, attached, was = devsw.entries(), devsw.attached(), list(recorded)
            try:
                pairs = attach_list(info)
            except DevfsdError:
                assert (devsw.entries(), devsw.attached(), recorded) == (before, attached, was)
                continue
            assert len(pairs) <= MAX_ATTACH
            proxy = Cdevsw()
            for n, m in pairs:
                assert devsw.attach(n, proxy, m) == m
                assert n.isprintable() and 0 < len(n) <= MAXDEVNAME
            assert len(recorded) - len(was) <= len(pairs)
            devsw.detach(proxy)
    finally:
        devsw.reset()


@pytest.mark.parametrize("seed", range(10))
def test_fuzzed_load_replies_are_a_dict_or_ebadmsg(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        obj: object = {
            "name": _junk(rng),
            "cls": _junk(rng),
            "majors": rng.choice([_junk(rng), [_pair(rng) for _ in range(3)]]),
        }
        raw = json.dumps(obj).encode()
        if rng.random() < 0.3:  # cut, or a byte changed
            i = rng.randrange(len(raw))
            raw = raw[:i] if rng.random() < 0.5 else raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]
        try:
            info = check_reply_json(raw)
        except P.ProtocolError as exc:
            errs = {exc.errno}
        else:
            errs = set()
            assert isinstance(info["name"], str) and isinstance(info["cls"], int)
        assert errs <= {errno.EBADMSG}
