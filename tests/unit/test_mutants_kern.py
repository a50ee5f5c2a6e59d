"""Tests that kill mutants of devfsd.kern the rest of the suite let live (issue 18).

Each test names the behaviour it pins; docs/reliability.md lists the
mutants they kill and the equivalent ones left alive. The loader is driven
in process (``devfsd.testing.harness.Kernel``) with small modules written
for each test, as tests/netbsd does.
"""

from __future__ import annotations

import errno
import os
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.cdevsw._wait import sleepers
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd, ModuleInfo, current_module, kthread_create
from devfsd.kern.loader import LoadedModule, ModStat
from devfsd.kern.modpath import entry_point_code
from devfsd.kern.module import parse_required
from devfsd.kern.props import PropError, parse_bool, parse_int, parse_param
from devfsd.testing.harness import Kernel, OpenFile

if TYPE_CHECKING:
    from collections.abc import Callable

MODS = Path(__file__).resolve().parent.parent / "modules"

#: A module that records the commands it is given; ``{veto}`` is AUTOUNLOAD's answer.
_RECORDER = """\
import errno
from devfsd.cdevsw import Cdevsw, devsw_attach, devsw_detach, nullclose, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

MODULE = ModuleInfo(name={name!r}, cls=ModuleClass.DRIVER)
calls = []
cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose)


async def modcmd(cmd, props):
    calls.append(cmd.name)
    if cmd == ModCmd.INIT:
        devsw_attach({name!r}, cdevsw)
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    elif cmd == ModCmd.AUTOUNLOAD:
        return {veto}
    return None
"""


def recorder(d: Path, name: str, *, veto: int = 0) -> None:
    """Write the driver ``name`` into ``d``: it attaches a cdevsw of its name
    and keeps the commands it was given in ``calls``."""
    (d / name).mkdir()
    (d / name / "__init__.py").write_text(_RECORDER.format(name=name, veto=veto))


def calls(k: Kernel, name: str) -> list[str]:
    got: list[str] = k.loader.modules[name].pymod.calls
    return got


def loaded(k: Kernel) -> list[str]:
    return [s.name for s in k.loader.stat()]


def age(k: Kernel, *names: str, seconds: float = 100.0) -> None:
    """Make modules look quiet for ``seconds`` (the loader's clock is time.monotonic)."""
    for n in names:
        k.loader.modules[n].last_used -= seconds


# -- autounload -----------------------------------------------------------------


async def test_autounload_offers_every_quiet_autoloaded_module_and_only_those(tmp_path: Path) -> None:
    recorder(tmp_path, "plain")
    recorder(tmp_path, "veto", veto=errno.EBUSY)
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path], autotime=0.0) as k:
        k.loader.autotime = 10.0
        await k.loader.load("plain")  # modload'ed: never autounloaded
        await k.loader.load("veto", autoload=True)
        await k.loader.load("quiet", autoload=True)
        age(k, "plain", "veto", "quiet")
        await k.loader._autounload_pass()
        # Each module is looked at, whatever the one before it did.
        assert loaded(k) == ["plain", "veto"]
        assert calls(k, "plain") == ["INIT"]
        assert calls(k, "veto") == ["INIT", "AUTOUNLOAD"]
        # A veto starts a new quiet period: not asked again at once.
        await k.loader._autounload_pass()
        assert calls(k, "veto") == ["INIT", "AUTOUNLOAD"]
        age(k, "veto")
        await k.loader._autounload_pass()
        assert calls(k, "veto") == ["INIT", "AUTOUNLOAD", "AUTOUNLOAD"]


async def test_autounload_spares_a_module_with_open_files_however_long_quiet(tmp_path: Path) -> None:
    recorder(tmp_path, "held")
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path], autotime=0.0) as k:
        k.loader.autotime = 10.0
        await k.loader.load("held", autoload=True)
        await k.loader.load("quiet", autoload=True)
        f = await k.open("held", 3)
        age(k, "held", "quiet")
        await k.loader._autounload_pass()
        assert loaded(k) == ["held"]
        assert calls(k, "held") == ["INIT"]  # not even asked
        # An open file restarts the quiet period.
        await f.close()
        await k.loader._autounload_pass()
        assert calls(k, "held") == ["INIT"]
        age(k, "held")
        await k.loader._autounload_pass()
        assert loaded(k) == []


@pytest.mark.parametrize(("autotime", "unloaded"), [(0.0, False), (1.0, True), (0.5, True)])
async def test_autotime_zero_never_autounloads_and_a_short_one_does(
    tmp_path: Path, autotime: float, unloaded: bool
) -> None:
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path], autotime=0.0) as k:
        k.loader.autotime = autotime
        await k.loader.load("quiet", autoload=True)
        age(k, "quiet", seconds=1000.0)
        await k.loader._autounload_pass()
        assert loaded(k) == ([] if unloaded else ["quiet"])


# -- kthread_create ---------------------------------------------------------------

_THREADED = """\
import trio
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, current_module, kthread_create

MODULE = ModuleInfo(name="threaded", cls=ModuleClass.MISC)
seen = []


async def worker(tag):
    seen.append((tag, current_module() is not None and current_module().name,
                 trio.lowlevel.current_task().name))


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        kthread_create(worker, "named", name="w")
        kthread_create(worker, "unnamed")
    return None
"""


async def _until(cond: Callable[[], object], what: str) -> None:
    """Wait (5 s at most) until ``cond()`` holds."""
    deadline = trio.current_time() + 5
    while not cond():
        assert trio.current_time() < deadline, what
        await trio.sleep(0.01)


async def test_a_modules_threads_know_their_module_and_are_named_after_it(tmp_path: Path) -> None:
    (tmp_path / "threaded").mkdir()
    (tmp_path / "threaded" / "__init__.py").write_text(_THREADED)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("threaded")
        mod = k.loader.modules["threaded"]
        seen: list[tuple[str, str, str]] = mod.pymod.seen
        await _until(lambda: len(seen) == 2, "both threads ran")
        assert sorted(seen) == [
            ("named", "threaded", "threaded:w"),
            ("unnamed", "threaded", "threaded:worker"),
        ]
        # Ended threads leave the module's list; the loader goes on.
        await _until(lambda: not mod.threads, "threads forgotten")

        # From outside a modcmd (an entry point), module= names the owner.
        ran: list[object] = []

        async def later() -> None:
            ran.append(current_module())

        assert current_module() is None
        kthread_create(later, module=mod)
        await _until(lambda: ran, "thread given module= ran")
        assert ran == [mod]
        await k.modunload("threaded")


async def test_kthread_create_outside_a_module_or_a_loader_says_why(tmp_path: Path) -> None:
    async def nothing() -> None:
        pass

    outside = r"^kthread_create\(\) outside a module's modcmd or thread, and no module=$"
    with pytest.raises(RuntimeError, match=outside):
        kthread_create(nothing)
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        mod = k.loader.modules["quiet"]
    # The loader has stopped running.
    with pytest.raises(RuntimeError, match=r"^kthread_create\(\) with no module loader running$"):
        kthread_create(nothing, module=mod)


# -- LoadedModule.modcmd's answers ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "err"),
    [
        (None, 0),
        (0, 0),
        (errno.EBUSY, errno.EBUSY),
        (1, 1),
        (4095, 4095),
        (4096, errno.EIO),
        (-1, errno.EIO),
        (True, errno.EIO),
        (False, errno.EIO),
        ("0", errno.EIO),
        (0.0, errno.EIO),
    ],
)
async def test_modcmd_answer_none_or_0_is_success_an_errno_is_it_else_eio(answer: object, err: int) -> None:
    pymod = types.ModuleType("answering")

    async def modcmd(cmd: ModCmd, props: object) -> object:
        return answer

    pymod.modcmd = modcmd  # type: ignore[attr-defined]
    mod = LoadedModule(ModuleInfo(name="answering"), pymod, Path("/nonexistent"), 0)
    if not err:
        await mod.modcmd(ModCmd.STAT, None)
        return
    with pytest.raises(DeviceError) as ei:
        await mod.modcmd(ModCmd.STAT, None)
    assert ei.value.errno == err


# -- modstat's rows ---------------------------------------------------------------


async def test_modstat_row_of_a_module(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    (tmp_path / "quiet" / "sub.py").write_text("X = 1\n")
    (tmp_path / "quiet" / "notes.txt").write_text("not code\n" * 100)
    size = sum(len((tmp_path / "quiet" / f).read_bytes()) for f in ("__init__.py", "sub.py"))
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        assert k.loader.stat() == [
            ModStat(name="quiet", cls="driver", source="filesys", flags="-", refs=0, size=size, requires=())
        ]


# -- autoload -----------------------------------------------------------------------


async def test_autoload_answers_whether_to_look_again(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    recorder(tmp_path, "Xmod")
    async with Kernel.running([tmp_path]) as k:
        k.loader.autoload_enabled = False
        assert await k.loader.autoload("quiet") is False
        assert loaded(k) == []
        k.loader.autoload_enabled = True
        for bad in ("a/b", "a.b", "a@b"):
            assert await k.loader.autoload(bad) is False
        assert await k.loader.autoload("nosuch") is False  # the load failed
        assert await k.loader.autoload("Xmod") is True
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("Xmod", "a")]
        assert await k.loader.autoload("Xmod") is True  # loaded already (EEXIST): look again


async def test_an_open_restarts_the_quiet_period_of_its_module(tmp_path: Path) -> None:
    recorder(tmp_path, "held")
    async with Kernel.running([tmp_path], autotime=0.0) as k:
        k.loader.autotime = 10.0
        await k.loader.load("held", autoload=True)
        age(k, "held")
        f = await k.open("held", 0)
        await f.close()
        await k.loader._autounload_pass()
        assert loaded(k) == ["held"]


# -- unload and shutdown ------------------------------------------------------------

_SLOPPY = """\
from devfsd.cdevsw import Cdevsw, WaitChannel, devsw_attach, nullclose, nullopen
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo

MODULE = ModuleInfo(name="sloppy", cls=ModuleClass.DRIVER)
chan = WaitChannel("sloppy")


async def sloppy_read(dev, uio, ioflag):
    while True:
        await chan.sleep(uio.lwp)


cdevsw = Cdevsw(d_open=nullopen, d_close=nullclose, d_read=sloppy_read)


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        devsw_attach("sloppy", cdevsw)
    return None  # FINI leaves the cdevsw attached
"""


async def test_unload_ends_the_sleeps_of_what_fini_left_attached_and_no_others(tmp_path: Path) -> None:
    (tmp_path / "sloppy").mkdir()
    (tmp_path / "sloppy" / "__init__.py").write_text(_SLOPPY)
    got: dict[str, object] = {}

    async def read(f: OpenFile, key: str) -> None:
        try:
            got[key] = await f.read(10)
        except DeviceError as exc:
            got[key] = exc.errno

    async with Kernel.running([tmp_path, MODS]) as k:
        await k.modload("msgq")
        await k.modload("sloppy")
        q = await k.open("msgq", 0)
        s = await k.open("sloppy", 0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, q, "msgq")
            nursery.start_soon(read, s, "sloppy")
            await _until(lambda: sleepers() == 2, "both readers asleep")
            await k.modunload("sloppy")
            await _until(lambda: "sloppy" in got, "the sloppy driver's reader woken")
            assert got == {"sloppy": errno.ENXIO}
            assert sleepers() == 1  # the msgq reader sleeps on
            await q.write(b"x")
        assert got == {"sloppy": errno.ENXIO, "msgq": b"x"}
        await q.close()
        await s.close()


async def test_shutdown_unloads_every_module_dependants_first(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    recorder(tmp_path, "held")
    (tmp_path / "refuser").mkdir()
    (tmp_path / "refuser" / "__init__.py").write_text(
        _RECORDER.format(name="refuser", veto=0).replace(
            "        devsw_detach(cdevsw)\n", "        raise DeviceError(errno.EBUSY)\n"
        )
    )
    async with Kernel.running([tmp_path, MODS]) as k:
        await k.modload("needsmsgq")
        await k.modload("quiet")
        await k.modload("refuser")
        await k.modload("held")
        pymods = [k.loader.modules[n].pymod for n in ("quiet", "refuser", "held")]
    # A module refusing FINI is dropped all the same, and the others go on.
    assert k.loader.modules == {}
    assert [m.calls for m in pymods] == [["INIT", "FINI"]] * 3


# -- modload's -b / -i / -s ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", True),
        ("true", True),
        ("TRUE", True),
        ("True", True),
        ("yes", True),
        ("YeS", True),
        ("0", False),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("No", False),
        ("NO", False),
    ],
)
def test_every_boolean_word_in_any_case(text: str, value: bool) -> None:
    assert parse_bool(text) is value


@pytest.mark.parametrize("text", ["", "2", "y", "n", "on", "off", "truee", " true", "XX1XX"])
def test_other_boolean_words_are_refused(text: str) -> None:
    with pytest.raises(PropError, match=f"^Invalid boolean value `{text}'$"):
        parse_bool(text)


def test_a_parameter_splits_at_its_first_equals_sign() -> None:
    assert parse_param("a=b=c") == ("a", "b=c")
    assert parse_param("==") == ("", "=")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("010", 8),
        ("0", 0),
        ("0x10", 16),
        ("0X1f", 31),
        ("10", 10),
        ("-010", -8),
        ("2k", 2048),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_integers_are_decimal_octal_or_hex_as_strtoll_reads_them(text: str, value: int) -> None:
    assert parse_int(text) == value


def test_an_integer_past_int64_says_out_of_range() -> None:
    with pytest.raises(PropError) as ei:
        parse_int("9223372036854775808")
    assert str(ei.value) == f"Invalid integer value `9223372036854775808': {os.strerror(errno.ERANGE)}"
    with pytest.raises(PropError) as ei:
        parse_int("x")
    assert str(ei.value) == f"Invalid integer value `x': {os.strerror(errno.EINVAL)}"


# -- drivers declared by installed distributions ----------------------------------------


def _entry_points(site: Path, dist: str, text: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(text)


def _package(site: Path, rel: str) -> Path:
    (site / rel).mkdir(parents=True)
    (site / rel / "__init__.py").write_text("")
    return site / rel


@pytest.mark.parametrize(
    ("package", "entry_points"),
    [
        # Only the devfsd.modules group declares drivers.
        ("devfsd_other", "[console_scripts]\ndrv = devfsd_other\n"),
        # A value that is a path, not a module name, is ignored.
        ("sub/pkg", "[devfsd.modules]\ndrv = sub/pkg\n"),
    ],
)
def test_an_entry_point_that_declares_no_driver_is_not_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, entry_points: str
) -> None:
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    _package(site, package)
    _entry_points(site, "devfsd_other", entry_points)
    assert entry_point_code("drv") is None


def test_a_later_distribution_declaring_the_driver_properly_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later, first = tmp_path / "later", tmp_path / "first"
    monkeypatch.syspath_prepend(str(later))
    monkeypatch.syspath_prepend(str(first))  # searched before later
    _entry_points(first, "devfsd_bad", "[devfsd.modules]\ndrv = not-a-name\n")
    pkg = _package(later, "devfsd_drv")
    _entry_points(later, "devfsd_good", "[devfsd.modules]\ndrv = devfsd_drv\n")
    assert entry_point_code("drv") == (pkg, True)


# -- MODULE's declaration -----------------------------------------------------------------


@pytest.mark.parametrize("required", [5, None, ("a", 1), ["a", b"b"], {"a": 1}])
def test_a_requirement_list_of_anything_but_names_is_einval(required: object) -> None:
    with pytest.raises(DeviceError) as ei:
        parse_required(required)
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value) == "required must be a string or a sequence of names"
