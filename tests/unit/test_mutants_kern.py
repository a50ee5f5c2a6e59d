"""Tests that kill mutants of devfsd.kern the rest of the suite let live (issue 18).

Each test names the behaviour it pins; docs/reliability.md lists the
mutants they kill and the equivalent ones left alive. The loader is driven
in process (``devfsd.testing.harness.Kernel``) with small modules written
for each test, as tests/netbsd does.
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.cdevsw import devsw
from devfsd.cdevsw._wait import sleepers
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd, ModuleInfo, current_module, kthread_create
from devfsd.kern.loader import LoadedModule, ModStat, ModuleLoader
from devfsd.kern.modpath import builtin_modules, entry_point_code
from devfsd.kern.module import parse_required, validate_module_name
from devfsd.kern.props import PropError, check_props, parse_bool, parse_int, parse_param
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
    async with Kernel.running([tmp_path], autotime=autotime) as k:
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

        # A callable without a __name__ (a partial) is a "thread".
        names: list[str] = []

        async def named(out: list[str]) -> None:
            out.append(trio.lowlevel.current_task().name)

        kthread_create(functools.partial(named, names), module=mod)
        await _until(lambda: names, "partial ran")
        assert names == ["threaded:thread"]
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


@pytest.mark.parametrize("privileged", [("a", 1), ("a", ""), [None]])
def test_privileged_names_anything_but_property_names_is_einval(privileged: object) -> None:
    with pytest.raises(DeviceError) as ei:
        ModuleInfo(name="m", privileged=privileged)  # type: ignore[arg-type]
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value) == "privileged: property names, as strings"


@pytest.mark.parametrize(
    "source",
    [
        "async def modcmd(cmd, props):\n    return None\n",  # no MODULE
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='half')\n",  # no modcmd
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='half')\nmodcmd = 1\n",
    ],
)
async def test_a_module_without_module_or_modcmd_is_enoexec(tmp_path: Path, source: str) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "__init__.py").write_text(source)
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("half")
        assert ei.value.errno == errno.ENOEXEC
        assert loaded(k) == []


_FRESH = """\
import sys, trio
from devfsd.testing.harness import Kernel

async def main():
    async with Kernel.running([sys.argv[1]]) as k:
        await k.modload("quiet")
        import devfsd_modules.quiet as q  # the loaded module, by its import name
        assert q is k.loader.modules["quiet"].pymod
        print("ok")

trio.run(main)
"""


def test_a_loaded_module_is_importable_by_its_name_in_a_fresh_process(tmp_path: Path) -> None:
    # A fresh interpreter: the devfsd_modules package is made by the first load.
    recorder(tmp_path, "quiet")
    r = subprocess.run(
        [sys.executable, "-c", _FRESH, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr[-2000:]


# -- loading: names, files, submodules, module_load ----------------------------------------


async def test_a_module_is_imported_by_its_name_and_all_of_it_purged_at_unload(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    (tmp_path / "quiet" / "sub.py").write_text("X = 1\n")
    with (tmp_path / "quiet" / "__init__.py").open("a") as f:
        f.write("from . import sub\n")
    (tmp_path / "solo.py").write_text(
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='solo')\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        await k.modload("solo")  # a single file, found by name
        assert sys.modules["devfsd_modules.quiet"] is k.loader.modules["quiet"].pymod
        assert sys.modules["devfsd_modules.quiet.sub"].X == 1
        assert sys.modules["devfsd_modules.solo"] is k.loader.modules["solo"].pymod
        await k.modunload("quiet")
        assert not [m for m in sys.modules if m.startswith("devfsd_modules.quiet")]


async def test_an_untrusted_submodule_refuses_the_load_and_leaves_nothing(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    (tmp_path / "quiet" / "sub.py").write_text("X = 1\n")
    (tmp_path / "quiet" / "sub.py").chmod(0o666)
    with (tmp_path / "quiet" / "__init__.py").open("a") as f:
        f.write("from . import sub\n")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("quiet")
        assert ei.value.errno == errno.EPERM
        assert "writable by others" in str(ei.value)
        assert not [m for m in sys.modules if m.startswith("devfsd_modules.quiet")]


async def test_a_module_whose_import_raises_is_enoexec(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("1 / 0\n")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("broken")
        assert ei.value.errno == errno.ENOEXEC


_LOADS = """\
import os
from devfsd.kern import ModCmd, ModuleInfo, module_load

MODULE = ModuleInfo(name={name!r})


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        await module_load({spec}, {props!r})
    return None
"""


async def test_module_load_from_init_is_roots_load_and_a_load_under_way_is_edeadlk(tmp_path: Path) -> None:
    (tmp_path / "priv").mkdir()
    (tmp_path / "priv" / "__init__.py").write_text(
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='priv', privileged=('secret',))\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )
    for name, spec, props in [
        ("loader", "'priv'", {"secret": "s"}),  # a privileged property: INIT loads as root does
        ("selfish", "os.path.dirname(__file__)", None),  # itself, by path, while it loads
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(_LOADS.format(name=name, spec=spec, props=props))
    async with Kernel.running([tmp_path]) as k:
        await k.modload("loader")
        assert k.loader.modules["priv"].props == {"secret": "s"}
        with pytest.raises(DeviceError) as ei:
            await k.modload("selfish")
        assert ei.value.errno == errno.EDEADLK
        assert sorted(loaded(k)) == ["loader", "priv"]


def declaring(d: Path, dirname: str, name: str) -> Path:
    """A module in ``d/dirname`` that declares itself ``name``."""
    (d / dirname).mkdir()
    (d / dirname / "__init__.py").write_text(
        f"from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name={name!r})\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )
    return d / dirname


async def test_a_module_declaring_another_name_is_enoent_by_name_that_name_by_path(tmp_path: Path) -> None:
    alias = declaring(tmp_path, "alias", "other")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("alias")  # by name: the name asked for is not its name
        assert ei.value.errno == errno.ENOENT
        assert "devfsd_modules.alias" not in sys.modules
        await k.modload(str(alias))  # by path: loaded under the name it declares
        assert loaded(k) == ["other"]
        assert sys.modules["devfsd_modules.other"] is k.loader.modules["other"].pymod
        assert "devfsd_modules.alias" not in sys.modules
        with pytest.raises(DeviceError) as ei:
            await k.modload(str(alias))  # that name is loaded
        assert ei.value.errno == errno.EEXIST
        assert "devfsd_modules.alias" not in sys.modules


async def test_only_the_privileged_properties_given_are_roots_alone(tmp_path: Path) -> None:
    (tmp_path / "priv").mkdir()
    (tmp_path / "priv" / "__init__.py").write_text(
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='priv', privileged=('secret',))\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )
    async with Kernel.running([tmp_path]) as k:
        await k.loader.load("priv", {"plain": 1}, uid=1000)  # no privileged one given: fine
        await k.modunload("priv")
        with pytest.raises(DeviceError) as ei:
            await k.loader.load("priv", {"plain": 1, "secret": "s"}, uid=1000)
        assert ei.value.errno == errno.EPERM
        assert str(ei.value) == "property secret of priv is root's alone"
        with pytest.raises(DeviceError) as ei:
            await k.loader.load(str(tmp_path / "priv"), uid=1000)
        assert ei.value.errno == errno.EPERM
        assert str(ei.value) == "loading a module by path is root's alone"
        await k.loader.load("priv", {"secret": "s"}, uid=0)
        assert loaded(k) == ["priv"]


async def test_which_loads_go_to_a_host_of_their_own(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    recorder(tmp_path, "held")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.loader.load("quiet", {"user": "nobody"})  # a host's user, in process
        assert ei.value.errno == errno.EINVAL
        assert str(ei.value) == "property user: only with an isolated load (-I)"
        k.loader.isolated_names = {"quiet"}
        await k.loader.load("quiet", {"p": 1}, autoload=True, uid=0)  # named: isolated
        await k.loader.load("held")  # not named: in process
        quiet, held = k.loader.modules["quiet"], k.loader.modules["held"]
        assert quiet.host is not None and held.host is None
        assert (quiet.autoload, quiet.props) == (True, {"p": 1})
        await k.modunload("held")
        k.loader.isolate_all = True
        await k.loader.load("held", isolated=False)  # told: in process
        assert k.loader.modules["held"].host is None
        await k.modunload("held")
        await k.loader.load("held")  # every module isolated
        assert k.loader.modules["held"].host is not None


async def test_module_code_runs_as_its_own_file_without_devfsds_future_imports(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    with (tmp_path / "quiet" / "__init__.py").open("a") as f:
        f.write("def typed(x: int) -> None:\n    pass\nANNOTATION = typed.__annotations__['x']\n")
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        pymod = k.loader.modules["quiet"].pymod
        assert pymod.__file__ == str(k.loader.modules["quiet"].path)  # the real path of __init__.py
        assert pymod.ANNOTATION is int  # not the string "int" of `from __future__ import annotations`


async def test_a_submodule_that_is_a_symbolic_link_is_not_found(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    (tmp_path / "real.py").write_text("X = 1\n")
    (tmp_path / "quiet" / "sub.py").symlink_to(tmp_path / "real.py")
    with (tmp_path / "quiet" / "__init__.py").open("a") as f:
        f.write("from . import sub\n")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("quiet")
        assert ei.value.errno == errno.ENOEXEC  # ImportError: no such submodule


@pytest.mark.parametrize("spec", ["a\0b", "/tmp/a\0b", "a/\0"])
def test_a_module_spec_with_nul_is_einval(spec: str) -> None:
    with pytest.raises(DeviceError) as ei:
        ModuleLoader().locate(spec)
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value) == "module name or path contains NUL"


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_unloading_a_package_closes_its_directories_and_no_others(tmp_path: Path) -> None:
    for name in ("quiet", "held"):
        recorder(tmp_path, name)
        (tmp_path / name / "sub.py").write_text("X = 1\n")
        (tmp_path / name / "deep").mkdir()
        (tmp_path / name / "deep" / "__init__.py").write_text("from . import leaf\n")
        (tmp_path / name / "deep" / "leaf.py").write_text("Y = 2\n")
        with (tmp_path / name / "__init__.py").open("a") as f:
            f.write("from . import deep\n\ndef late():\n    from . import sub\n    return sub.X\n")
    async with Kernel.running([tmp_path]) as k:
        before = _fds()
        await k.modload("quiet")
        await k.modload("held")
        assert str(sys.modules["devfsd_modules.held.deep.leaf"].__file__).endswith("/held/deep/leaf.py")
        await k.modunload("quiet")
        # held's directories are still open: its submodules still import.
        assert k.loader.modules["held"].pymod.late() == 1
        assert str(sys.modules["devfsd_modules.held.sub"].__file__).endswith("/held/sub.py")
        await k.modunload("held")
        assert _fds() == before


@pytest.mark.parametrize(
    ("name", "err", "text"),
    [
        (b"x", errno.EINVAL, "module name must be a string"),
        ("", errno.ENOENT, os.strerror(errno.ENOENT)),
        ("m" * 31, 0, ""),
        ("m" * 32, errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)),
        ("a/b", errno.EINVAL, "invalid module name 'a/b'"),
        ("a\0b", errno.EINVAL, "invalid module name 'a\\x00b'"),
        (".a", errno.EINVAL, "invalid module name '.a'"),
        ("a b", errno.EINVAL, "invalid module name 'a b'"),
    ],
)
def test_module_names_as_kern_module_c_takes_them(name: object, err: int, text: str) -> None:
    if not err:
        assert validate_module_name(name) == name
        return
    with pytest.raises(DeviceError) as ei:
        validate_module_name(name)
    assert (ei.value.errno, str(ei.value)) == (err, text)


def test_the_built_in_drivers_follow_the_module_path_unless_left_out(tmp_path: Path) -> None:
    builtin = builtin_modules()
    assert builtin is not None
    assert ModuleLoader([tmp_path]).modpath == [tmp_path, builtin]
    assert ModuleLoader([builtin, tmp_path]).modpath == [builtin, tmp_path]  # not twice
    assert ModuleLoader([tmp_path], include_project_modules=False).modpath == [tmp_path]


@pytest.mark.parametrize(
    ("props", "err", "text"),
    [
        (5, errno.EINVAL, "properties must be a dictionary"),
        ([("a", 1)], errno.EINVAL, "properties must be a dictionary"),
        ({1: 2}, errno.EINVAL, "property names must be strings"),
        ({"k" * 129: 1}, errno.EINVAL, "property name longer than 128 bytes"),
        ({"k": 1.5}, errno.EINVAL, "property k: value must be a string, int64 or bool"),
        ({"k": 2**63}, errno.EINVAL, "property k: value must be a string, int64 or bool"),
        ({"k": "v" * 4096}, errno.ENOMEM, "properties larger than 4096 bytes"),
    ],
)
def test_properties_refused_say_why(props: object, err: int, text: str) -> None:
    with pytest.raises(DeviceError) as ei:
        check_props(props)
    assert (ei.value.errno, str(ei.value)) == (err, text)


def test_properties_of_exactly_4096_bytes_are_taken() -> None:
    props = {"k": "v" * 4087}  # {"k": "vvv..."}: 4096 bytes as JSON
    assert check_props(props) == props


def test_locate_by_name_path_or_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "solo.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "bare").mkdir()
    loader = ModuleLoader([tmp_path], include_project_modules=False)
    real = tmp_path.resolve()
    assert loader.locate("solo") == ("solo", real / "solo.py", None)
    assert loader.locate(str(tmp_path / "solo.py")) == ("solo", tmp_path / "solo.py", None)
    for spec, err, text in [
        (str(tmp_path / "bare"), errno.ENOENT, f"{tmp_path / 'bare'}: no __init__.py"),
        (str(tmp_path / "notes.txt"), errno.ENOENT, os.strerror(errno.ENOENT)),
        ("/" + "a" * 4095, errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)),
    ]:
        with pytest.raises(DeviceError) as ei:
            loader.locate(spec)
        assert (ei.value.errno, str(ei.value)) == (err, text)
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    site.mkdir()
    (site / "devfsd_one.py").write_text("")
    _entry_points(site, "devfsd_one", "[devfsd.modules]\none = devfsd_one\n")
    assert loader.locate("one") == ("one", site / "devfsd_one.py", None)


async def test_requirements_are_counted_and_a_load_owns_only_what_it_attached(tmp_path: Path) -> None:
    for name in ("needs1", "needs2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name={name!r}, required=('msgq',))\n"
            "async def modcmd(cmd, props):\n    return None\n"
        )
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path, MODS]) as k:
        await k.modload("needs1")
        await k.modload("needs2")
        assert {s.name: s.refs for s in k.loader.stat()}["msgq"] == 2
        await k.modunload("needs1")
        with pytest.raises(DeviceError) as ei:
            await k.modunload("msgq")  # needs2 still requires it
        assert ei.value.errno == errno.EBUSY
        # quiet attaches its own cdevsw only; unloading it leaves msgq's.
        await k.modload("quiet")
        assert k.loader.modules["quiet"].majors == [devsw.getmajor("quiet")]
        await k.modunload("quiet")
        f = await k.open("msgq", 0)
        await f.write(b"x")
        assert await f.read(10) == b"x"
        await f.close()
        await k.modunload("needs2")
