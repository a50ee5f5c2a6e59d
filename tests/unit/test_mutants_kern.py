"""Tests that kill mutants of devfsd.kern the rest of the suite let live (issue 18).

Each test names the behaviour it pins; docs/reliability.md lists the
mutants they kill and the equivalent ones left alive. The loader is driven
in process (``devfsd.testing.harness.Kernel``) with small modules written
for each test, as tests/netbsd does.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import stat
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.cdevsw import devsw
from devfsd.cdevsw._wait import sleepers
from devfsd.errors import DeviceError
from devfsd.kern import (
    ModCmd,
    ModuleInfo,
    current_module,
    kthread_create,
    memory,
    module_load,
    run_in_thread,
    trust,
)
from devfsd.kern.loader import LoadedModule, ModStat, ModuleLoader, autounload_interval
from devfsd.kern.memory import release_free_memory
from devfsd.kern.modpath import builtin_modules, entry_point_code
from devfsd.kern.module import parse_required, validate_module_name
from devfsd.kern.props import PropError, check_props, parse_bool, parse_int, parse_param
from devfsd.kern.sockets import bind_unix_listener
from devfsd.kern.trust import Untrusted, check_code
from devfsd.testing.harness import Kernel, OpenFile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from trio.testing import MockClock

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


async def test_the_first_load_makes_the_devfsd_modules_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a fresh process, but in this one, so that the mutation judge runs it
    # (mutmut maps tests to functions in process: the subprocess above is never
    # picked for _import's mutants).
    recorder(tmp_path, "quiet")
    for name in [n for n in sys.modules if n == "devfsd_modules" or n.startswith("devfsd_modules.")]:
        monkeypatch.delitem(sys.modules, name)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        import devfsd_modules.quiet as q  # type: ignore[import-not-found]  # the loaded module, by its name

        assert q is k.loader.modules["quiet"].pymod
        # Only loaded modules are there: the package searches nowhere.
        with pytest.raises(ModuleNotFoundError):
            __import__("devfsd_modules.json")
        package = sys.modules["devfsd_modules"]
        await k.modunload("quiet")
        await k.modload("quiet")  # the package made is kept
        assert sys.modules["devfsd_modules"] is package


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


def privileged(d: Path) -> None:
    """The module ``priv`` in ``d``, whose property ``secret`` is root's alone."""
    (d / "priv").mkdir()
    (d / "priv" / "__init__.py").write_text(
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='priv', privileged=('secret',))\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )


async def test_module_load_from_init_is_roots_load_and_a_load_under_way_is_edeadlk(tmp_path: Path) -> None:
    privileged(tmp_path)
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
    privileged(tmp_path)
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
        with pytest.raises(DeviceError) as ei:
            await k.loader.load("quiet", {"memlimit": 1 << 30})  # a host's limit, in process
        assert str(ei.value) == "property memlimit: only with an isolated load (-I)"
        assert not k.loader.modules
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


# -- the autounload check's interval --------------------------------------------------


@pytest.mark.parametrize(
    ("autotime", "interval"),
    [(0.0, 2.5), (0.5, 0.5), (1.0, 0.5), (2.0, 1.0), (4.0, 2.0), (5.0, 2.5), (6.0, 2.5), (100.0, 2.5)],
)
def test_the_autounload_check_runs_every_half_autotime_from_half_a_second_to_2_5(
    autotime: float, interval: float
) -> None:
    assert autounload_interval(autotime) == interval


@pytest.mark.parametrize(("autotime", "interval"), [(1.0, 0.5), (10.0, 2.5)])
async def test_the_loader_checks_for_quiet_modules_at_that_interval(
    tmp_path: Path, autojump_clock: MockClock, autotime: float, interval: float
) -> None:
    recorder(tmp_path, "first")
    recorder(tmp_path, "second")
    async with Kernel.running([tmp_path], autotime=autotime) as k:
        await k.loader.load("first", autoload=True)
        await k.loader.load("second", autoload=True)
        age(k, "second", seconds=-1e6)  # young until the first has gone
        age(k, "first", seconds=1e6)
        await _until(lambda: "first" not in k.loader.modules, "first autounloaded")
        t1 = trio.current_time()  # just after a check (polling every 0.01 s)
        age(k, "second", seconds=2e6)
        await _until(lambda: "second" not in k.loader.modules, "second autounloaded")
        assert trio.current_time() - t1 == pytest.approx(interval, abs=0.015)


# -- an isolated module that died too often ---------------------------------------------


async def test_an_isolated_module_down_is_restarted_by_modload_not_by_autoload(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    async with Kernel.running([tmp_path]) as k:
        k.loader.host_restarts = 0  # the first death leaves it down
        await k.loader.load("quiet", isolated=True, autoload=True)
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("quiet", "ai")]
        sup = k.loader.modules["quiet"].host
        sup.host.kill()
        await _until(lambda: sup.down, "the module down")
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("quiet", "aid")]
        with pytest.raises(DeviceError) as ei:
            await k.loader.load("quiet", isolated=True, autoload=True)  # an open: left down
        assert ei.value.errno == errno.EEXIST
        assert k.loader.modules["quiet"].host is sup
        await k.loader.load("quiet", isolated=True)  # modload: started afresh
        again = k.loader.modules["quiet"].host
        assert again is not sup and not again.down
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("quiet", "i")]
        f = await k.open("quiet", 0)  # its driver served again
        await f.close()


async def test_an_isolated_load_is_on_behalf_of_who_asked(tmp_path: Path) -> None:
    privileged(tmp_path)
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.loader.load("priv", {"secret": "s"}, uid=1000, isolated=True)
        assert (ei.value.errno, str(ei.value)) == (errno.EPERM, "property secret of priv is root's alone")
        assert loaded(k) == []
        await k.loader.load("priv", {"secret": "s"}, uid=0, isolated=True)
        assert [(s.name, s.flags) for s in k.loader.stat()] == [("priv", "i")]


# -- requirements and declared names ----------------------------------------------------

_SEER = """\
from devfsd.kern import ModCmd, ModuleInfo

MODULE = ModuleInfo(name="seer")
got = []


async def modcmd(cmd, props):
    if cmd == ModCmd.INIT:
        got.append(props)
    return None
"""


def requiring(d: Path, name: str, *required: str) -> None:
    (d / name).mkdir()
    (d / name / "__init__.py").write_text(
        f"from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name={name!r}, required={required!r})\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )


async def test_a_requirement_gets_no_properties_and_a_too_long_one_says_so(tmp_path: Path) -> None:
    (tmp_path / "seer").mkdir()
    (tmp_path / "seer" / "__init__.py").write_text(_SEER)
    requiring(tmp_path, "needy", "seer")
    requiring(tmp_path, "greedy", "r" * 31)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("needy", {"p": 1})
        assert k.loader.modules["seer"].pymod.got == [{}]  # a dict, not None; not needy's
        with pytest.raises(DeviceError) as ei:
            await k.modload("greedy")
        too_long = f"required module name {'r' * 31!r} too long"
        assert (ei.value.errno, str(ei.value)) == (errno.EINVAL, too_long)


async def test_a_file_or_package_loaded_by_path_under_its_declared_name_is_whole(tmp_path: Path) -> None:
    (tmp_path / "solo.py").write_text(
        "from devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='single')\n"
        "async def modcmd(cmd, props):\n    return None\n"
    )
    pkg = declaring(tmp_path, "alias", "other")
    (pkg / "sub.py").write_text("X = 1\n")
    with (pkg / "__init__.py").open("a") as f:
        f.write("from . import sub\n")
    async with Kernel.running([tmp_path]) as k:
        await k.modload(str(tmp_path / "solo.py"))
        await k.modload(str(pkg))
        assert sorted(loaded(k)) == ["other", "single"]
        assert k.loader.modules["other"].pymod.sub.X == 1
        assert sys.modules["devfsd_modules.other.sub"].X == 1


# -- the built-in drivers' directory ----------------------------------------------------


def test_the_built_in_drivers_of_an_installed_devfsd_or_a_source_tree(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "devfsd" / "modules").mkdir(parents=True)
    (site / "pyproject.toml").write_text("")
    (site / "modules").mkdir()
    # Installed: devfsd/modules, whatever is beside the package.
    assert builtin_modules(site / "devfsd") == site / "devfsd" / "modules"
    tree = tmp_path / "tree"
    (tree / "devfsd").mkdir(parents=True)
    assert builtin_modules(tree / "devfsd") is None
    (tree / "modules").mkdir()
    assert builtin_modules(tree / "devfsd") is None  # no pyproject.toml: not a source tree
    (tree / "pyproject.toml").write_text("")
    assert builtin_modules(tree / "devfsd") == tree / "modules"
    (tree / "modules").rmdir()
    assert builtin_modules(tree / "devfsd") is None  # a source tree without drivers


# -- bind_unix_listener: the control and UAPI sockets ------------------------------------


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _serves(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        try:
            c.connect(path)
        except OSError:
            return False
        return True


@pytest.mark.parametrize(
    ("mode", "gid", "mask"), [(None, None, 0), (0o660, 4321, 0o022), (0o666, 0, 0o077), (0o660, None, 0o022)]
)
def test_a_listener_has_its_mode_and_group_at_once_whatever_the_umask(
    tmp_path: Path, mode: int | None, gid: int | None, mask: int
) -> None:
    path = str(tmp_path / "run" / "devfsd" / "sock")
    with umask(mask):
        sock = bind_unix_listener(path, gid=gid) if mode is None else bind_unix_listener(path, mode, gid=gid)
        assert _umask() == mask  # the process's umask given back
    with sock:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == (0o600 if mode is None else mode)
        assert (st.st_uid, st.st_gid) == (0, os.getgid() if gid is None else gid)
        for d in (tmp_path / "run", tmp_path / "run" / "devfsd"):  # made, 0755
            assert stat.S_IMODE(d.stat().st_mode) == 0o755
        assert _serves(path)
        # Its directory there already: fine.
        with bind_unix_listener(str(tmp_path / "run" / "devfsd" / "other")):
            pass


def test_a_listener_at_a_relative_path_is_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with bind_unix_listener("sock"):
        assert os.listdir(tmp_path) == ["sock"]
        assert _serves(str(tmp_path / "sock"))


@pytest.mark.parametrize(("backlog", "queued"), [(None, 129), (2, 3)])
def test_a_listener_queues_its_backlog(tmp_path: Path, backlog: int | None, queued: int) -> None:
    path = str(tmp_path / "sock")
    with bind_unix_listener(path) if backlog is None else bind_unix_listener(path, backlog=backlog):
        clients: list[socket.socket] = []
        try:
            while True:  # Linux queues one more than the backlog
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(c)
                c.setblocking(False)
                try:
                    c.connect(path)
                except BlockingIOError:
                    break
            assert len(clients) - 1 == queued
        finally:
            for c in clients:
                c.close()


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # its file stays, nobody serves it
    before = _fds()
    live = bind_unix_listener(path)
    with live:
        assert _fds() == before + 1  # the probe closed
        assert _serves(path)
        with pytest.raises(OSError) as ei:
            bind_unix_listener(path)
        assert (ei.value.errno, ei.value.strerror, ei.value.filename) == (
            errno.EADDRINUSE,
            os.strerror(errno.EADDRINUSE),
            path,
        )
        assert _fds() == before + 1
        assert _serves(path)  # the live one untouched


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_something_other_than_a_socket_is_eexist_and_left_alone(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "sock"
    live = str(tmp_path / "live")
    with bind_unix_listener(live):
        if kind == "file":
            path.write_text("keep")
        elif kind == "directory":
            path.mkdir()
        else:
            path.symlink_to(live)  # not followed, even to a live socket
        with pytest.raises(FileExistsError) as ei:
            bind_unix_listener(str(path))
        assert (ei.value.errno, ei.value.strerror, ei.value.filename) == (
            errno.EEXIST,
            os.strerror(errno.EEXIST),
            str(path),
        )
        assert os.path.lexists(path)
        assert kind != "file" or path.read_text() == "keep"


def test_a_listener_that_cannot_bind_leaves_no_descriptor_and_the_umask_as_it_was(tmp_path: Path) -> None:
    before = _fds()
    with umask(0o022):
        with pytest.raises(OSError, match="too long"):
            bind_unix_listener(str(tmp_path / ("s" * 120)))
        assert _umask() == 0o022
    assert _fds() == before


# -- module_load, check_code, run_in_thread and the rest of kern's API ---------------------


async def test_module_load_is_a_plain_load_with_checked_properties_from_a_modcmd(
    tmp_path: Path,
) -> None:
    (tmp_path / "seer").mkdir()
    (tmp_path / "seer" / "__init__.py").write_text(_SEER)
    for name, props in [("loader", {"p": 1}), ("badprops", {1: 2})]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(_LOADS.format(name=name, spec="'seer'", props=props))
    with pytest.raises(RuntimeError, match=r"^module_load\(\) outside a modcmd run by a load$"):
        await module_load("seer")
    async with Kernel.running([tmp_path]) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("badprops")
        assert (ei.value.errno, str(ei.value)) == (errno.EINVAL, "property names must be strings")
        assert loaded(k) == []
        await k.modload("loader")
        # Not autoloaded, held by nobody, with the properties given.
        assert [(s.name, s.flags, s.refs) for s in k.loader.stat()] == [("loader", "-", 0), ("seer", "-", 0)]
        assert k.loader.modules["seer"].pymod.got == [{"p": 1}]
        await k.modunload("seer")


def test_check_code_says_why_code_is_refused_and_keeps_nothing(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    (tmp_path / "quiet" / "sub.py").write_text("X = 1\n")
    (tmp_path / "solo.py").write_text("X = 1\n")
    (tmp_path / "open.py").write_text("X = 1\n")
    (tmp_path / "open.py").chmod(0o666)
    before, mods = _fds(), set(sys.modules)
    check_code(str(tmp_path / "quiet"), package=True)
    check_code(str(tmp_path / "solo.py"), package=False)
    assert _fds() == before  # the package's directory not held
    assert set(sys.modules) == mods
    with pytest.raises(Untrusted) as ei:
        check_code(str(tmp_path / "open.py"), package=False)
    assert (ei.value.errno, str(ei.value)) == (
        errno.EPERM,
        f"{tmp_path / 'open.py'}: mode 0666, writable by others",
    )
    with pytest.raises(DeviceError) as ej:
        check_code(str(tmp_path / "solo.py"), package=True)
    assert (ej.value.errno, str(ej.value)) == (errno.ENOENT, f"{tmp_path / 'solo.py'}: not a directory")
    assert _fds() == before


def _source(pymod: types.ModuleType) -> str:
    """The source its loader gives (PEP 302 ``get_source``)."""
    text: str = getattr(pymod.__loader__, "get_source")(pymod.__name__)  # noqa: B009
    return text


async def test_a_modules_source_is_there_for_tracebacks_even_in_another_encoding(tmp_path: Path) -> None:
    recorder(tmp_path, "quiet")
    text = (tmp_path / "quiet" / "__init__.py").read_text() + "NAME = 'caf\u00e9'\n"
    (tmp_path / "quiet" / "__init__.py").write_text(text)
    (tmp_path / "latin.py").write_bytes(
        b"# -*- coding: latin-1 -*-\nfrom devfsd.kern import ModuleInfo\nMODULE = ModuleInfo(name='latin')\n"
        b"NAME = 'caf\xe9'\nasync def modcmd(cmd, props):\n    return None\n"
    )
    async with Kernel.running([tmp_path]) as k:
        await k.modload("quiet")
        await k.modload("latin")
        quiet, latin = k.loader.modules["quiet"].pymod, k.loader.modules["latin"].pymod
        assert _source(quiet) == text
        assert latin.NAME == "caf\u00e9"
        # Never an exception: undecodable bytes are replaced.
        assert "NAME = 'caf\ufffd'\n" in _source(latin)


def test_release_free_memory_says_whether_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    assert release_free_memory() is True  # glibc's malloc_trim
    monkeypatch.setattr(memory, "_TRIM", None)  # a C library without it
    assert release_free_memory() is False


async def test_run_in_thread_runs_a_function_elsewhere_with_its_arguments() -> None:
    def where(a: int, b: str) -> tuple[int, str, int]:
        return a, b, threading.get_ident()

    a, b, ident = await run_in_thread(where, 1, "x")
    assert (a, b) == (1, "x")
    assert ident != threading.get_ident()


def test_a_host_trusts_the_daemons_user_in_place_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trust, "_daemon_uid", None)
    assert trust.trusted_uids() == {0, trust.devfsd_owner(), os.geteuid()}
    trust.trust_daemon_user(4321)
    assert trust.trusted_uids() == {0, trust.devfsd_owner(), 4321}
