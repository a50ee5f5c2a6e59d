"""Capabilities a module declares and a host keeps (devfsd.kern.caps, confine).

The names and their parsing, the declaration read from source without
running it, the kernel's check, the host loader's refusal of a module that
declares more than its host was given, and the drop itself (in a child
process: it cannot be undone).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devfsd.errors import DeviceError
from devfsd.isolate import confine
from devfsd.kern import ModuleInfo
from devfsd.kern.caps import CAP_NAMES, cap_number, parse_caps
from devfsd.kern.loader import ModuleLoader
from tests.nobody import python_as_nobody


def test_names_in_any_case_with_or_without_cap_prefix_once_in_the_kernels_order() -> None:
    assert parse_caps("net_raw,CAP_NET_ADMIN, net_raw,,") == ("net_admin", "net_raw")
    assert parse_caps(["Cap_Sys_Admin", "chown"]) == ("chown", "sys_admin")
    assert parse_caps(()) == parse_caps("") == ()
    assert cap_number("net_admin") == 12 and CAP_NAMES[40] == "checkpoint_restore"


@pytest.mark.parametrize(
    "value", ["net_admin,no_such_cap", "cap_", 12, ["net_raw", 13], None, {"net_raw": 1}]
)
def test_anything_else_is_einval(value: object) -> None:
    with pytest.raises(DeviceError) as ei:
        parse_caps(value, "property caps")
    assert ei.value.errno == errno.EINVAL
    assert str(ei.value).startswith("property caps: ")


def test_module_info_declares_them() -> None:
    assert ModuleInfo(name="x").caps == ()
    assert ModuleInfo(name="x", caps=("NET_RAW", "net_admin")).caps == ("net_admin", "net_raw")
    assert ModuleInfo(name="x", caps="net_raw").caps == ("net_raw",)  # type: ignore[arg-type]
    with pytest.raises(DeviceError) as ei:
        ModuleInfo(name="x", caps=("root",))
    assert ei.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("source", "caps"),
    [
        (b'MODULE = ModuleInfo(name="x", caps=("net_raw", "CAP_NET_ADMIN"))', ("net_admin", "net_raw")),
        (b'MODULE: Final = kern.ModuleInfo(name="x", caps="sys_admin")', ("sys_admin",)),
        (b'MODULE = ModuleInfo(name="x")', ()),
        (b'if True:\n    MODULE = ModuleInfo(name="x", caps=("net_raw",))', ()),  # its import tells
        (b'OTHER = ModuleInfo(name="x", caps=("net_raw",))', ()),
        (b"MODULE = 1", ()),
        (b"MODULE = (", ()),  # nor will it import
    ],
)
def test_declared_caps_are_read_without_running_the_code(source: bytes, caps: tuple[str, ...]) -> None:
    assert confine.declared_caps(b"import os\nos._exit(3)\n" + source, "x") == caps


@pytest.mark.parametrize(
    "source",
    [b'CAPS = ("net_raw",)\nMODULE = ModuleInfo(name="x", caps=CAPS)', b'MODULE = ModuleInfo(caps=("x",))'],
)
def test_declared_caps_not_a_literal_or_not_names_are_einval(source: bytes) -> None:
    with pytest.raises(DeviceError) as ei:
        confine.declared_caps(source, "x")
    assert ei.value.errno == errno.EINVAL


def test_host_caps_is_a_mask_of_what_this_kernel_has(monkeypatch: pytest.MonkeyPatch) -> None:
    assert confine.host_caps(("net_admin",), ("net_raw", "net_admin")) == 1 << 12 | 1 << 13
    assert confine.host_caps() == 0
    assert confine.cap_list(1 << 12 | 1 << 13) == "net_admin,net_raw"
    assert confine.cap_list(1 << 50) == "cap_50" and confine.cap_list(0) == "none"
    monkeypatch.setattr(confine, "last_cap", lambda: 37)
    with pytest.raises(DeviceError) as ei:
        confine.host_caps((), ("bpf",))
    assert (ei.value.errno, str(ei.value)) == (errno.EINVAL, "caps: this kernel has no CAP_BPF")


def test_last_cap_is_the_kernels() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert confine.last_cap() == int(f.read())


async def test_a_host_loader_refuses_a_module_declaring_more_than_its_host_was_given(tmp_path: Path) -> None:
    mod = tmp_path / "needy.py"
    mod.write_text(
        "from devfsd.kern import ModuleInfo\n"
        'MODULE = ModuleInfo(name="needy", caps=("net_raw",))\n'
        "async def modcmd(cmd, props):\n"
        "    pass\n"
    )
    loader = ModuleLoader([tmp_path])
    loader.host_caps = frozenset()
    with pytest.raises(DeviceError) as ei:
        await loader.load("needy")
    assert ei.value.errno == errno.EPERM
    assert "declares capability net_raw, which its host was not given" in str(ei.value)
    assert loader.modules == {}
    loader.host_caps = frozenset({"net_raw"})
    await loader.load("needy")
    await loader.unload("needy")
    loader.host_caps = None  # the daemon's loader: in process, no check
    await loader.load("needy")


def _run(code: str, *wrapper: str) -> str:
    r = subprocess.run(
        [*wrapper, sys.executable, "-c", f"from devfsd.isolate import confine\n{code}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


_SETS = """
with open("/proc/self/status") as f:
    print(" ".join(l.split()[1] for l in f if l.startswith("Cap")))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="drops a root process's capabilities")


@needs_root
@pytest.mark.parametrize("keep", [0, 1 << 13, 1 << 12 | 1 << 21])
def test_drop_leaves_only_what_it_keeps_in_every_set(keep: int) -> None:
    out = _run(f"print(confine.drop_capabilities({keep}))" + _SETS).split("\n")
    assert int(out[0]) == keep
    inh, prm, eff, bnd, amb = (int(x, 16) for x in out[1].split())
    assert (inh, prm, eff, bnd, amb) == (0, keep, keep, keep, 0)


@needs_root
def test_drop_is_refused_with_a_second_thread_or_without_setpcap() -> None:
    code = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(1,), daemon=True).start()\n"
        "try:\n"
        "    confine.drop_capabilities(0)\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
    )
    assert _run(code) == f"{errno.EBUSY}\n"
    code = "try:\n    confine.drop_capabilities(0)\nexcept OSError as e:\n    print(e.errno, e.strerror)\n"
    out = _run(code, "setpriv", "--bounding-set=-setpcap")
    assert out.startswith(f"{errno.EPERM} cannot narrow the bounding set without CAP_SETPCAP")


@needs_root
def test_a_process_with_no_capability_drops_nothing_more_and_succeeds() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:  # nobody may not read the checkout (under /root)
        os.chmod(d, 0o755)
        argv, env = python_as_nobody(Path(d), trio=True)
        code = "from devfsd.isolate import confine\nprint(confine.drop_capabilities(1 << 13))" + _SETS
        r = subprocess.run([*argv, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    kept, sets = out.split("\n")[:2]
    assert kept == "0"
    inh, prm, eff, _bnd, amb = (int(x, 16) for x in sets.split())
    assert (inh, prm, eff, amb) == (0, 0, 0, 0)
