"""devfsd's pytest plugin: fixtures for a driver's own tests.

Registered through the ``pytest11`` entry point, so any project with devfsd
installed has these fixtures without a conftest:

``devfsd_kernel``
    (async, pytest-trio) an in-process ``Kernel`` searching
    ``devfsd_modpath``; everything is unloaded when the test ends. With
    ``devfsd_isolated``, each module it loads runs in a host of its own.
``devfsd_modpath``
    the module directories: the ``devfsd_modpath`` marker's arguments, else
    the ``devfsd_modpath`` ini option (paths relative to the ini file), else
    none. Override the fixture to compute them.
``devfsd_mount``
    a factory: ``devfsd_mount(modules=[...], nodes={...}, args=[...],
    modpath=[...])`` starts a real devfsd on a temporary mountpoint, loads
    the modules and makes the nodes (``{"name": ("driver", unit)}``), and
    returns the ``DevfsdMount``; every daemon is stopped after the test, even
    one that failed. Skips naming the missing capability (root,
    ``/dev/fuse``). With ``devfsd_isolated``, the daemon runs with
    ``--isolate`` (every module in a host of its own).
``devfsd_isolated``
    whether ``devfsd_kernel`` and ``devfsd_mount`` load modules isolated
    (``modload -I``, devfsd.isolate): the ``devfsd_isolated`` marker's
    argument (``True`` if none), else ``--devfsd-isolated`` on the command
    line or the ``devfsd_isolated`` ini option, else False. A test
    parametrized on it (``@pytest.mark.parametrize("devfsd_isolated",
    [False, True])``) runs both ways.
``devfsd_run``
    ``devfsd_run(cmd, mount=None, input=None, timeout=60)`` runs a program
    (a list) or a shell command (a string) with the venv's tools on
    ``PATH`` and, given a mount, ``DEV`` and ``DEVFSD_CONTROL`` set, and
    returns the ``subprocess.CompletedProcess`` (stdout, stderr as bytes).

Tests marked ``fuse`` are skipped, with the reason, where mounts are
impossible.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from devfsd.testing.mount import DevfsdMount, run

if TYPE_CHECKING:
    import subprocess
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

    from devfsd.testing.harness import Kernel

__all__ = ["MountFactory", "RunFn", "missing_mount_capability", "tool_env"]


def missing_mount_capability() -> str | None:
    """Why a real mount cannot be made here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "needs root (mknod, mounts, allow_other)"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    return None


def tool_env(mount: DevfsdMount | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment with this venv's tools first on ``PATH``; with ``mount``,
    ``DEV`` (its mountpoint) and ``DEVFSD_CONTROL`` (its socket)."""
    out = dict(os.environ if env is None else env)
    out["PATH"] = f"{os.path.dirname(sys.executable)}:{out.get('PATH', os.defpath)}"
    if mount is not None:
        out["DEV"] = str(mount.path)
        out["DEVFSD_CONTROL"] = mount.control
    return out


class MountFactory(Protocol):
    def __call__(
        self,
        modules: Sequence[str] = (),
        nodes: Mapping[str, tuple[str, int]] | None = None,
        *,
        args: Sequence[str] = (),
        modpath: Sequence[str | os.PathLike[str]] | None = None,
    ) -> DevfsdMount: ...


class RunFn(Protocol):
    def __call__(
        self,
        cmd: Sequence[str] | str,
        mount: DevfsdMount | None = None,
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[bytes]: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "devfsd_modpath",
        "module directories for devfsd_kernel and devfsd_mount (relative to the ini file)",
        type="paths",
        default=[],
    )
    parser.addini(
        "devfsd_isolated",
        "devfsd_kernel and devfsd_mount load every module isolated (modload -I)",
        type="bool",
        default=False,
    )
    parser.getgroup("devfsd").addoption(
        "--devfsd-isolated",
        action="store_true",
        default=None,
        help="devfsd_kernel and devfsd_mount load every module isolated (modload -I)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuse: needs /dev/fuse and root (real mount)")
    config.addinivalue_line(
        "markers", "devfsd_modpath(*dirs): module directories for devfsd_kernel and devfsd_mount"
    )
    config.addinivalue_line(
        "markers",
        "devfsd_isolated(on=True): devfsd_kernel and devfsd_mount load every module isolated (modload -I)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = missing_mount_capability()
    if why is None:
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "fuse" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def devfsd_modpath(request: pytest.FixtureRequest) -> list[Path]:
    """Module directories: the marker's, else the ini option's, else none."""
    marker = request.node.get_closest_marker("devfsd_modpath")
    if marker is not None:
        return [Path(d) for d in marker.args]
    paths: list[Path] = request.config.getini("devfsd_modpath")
    return list(paths)


@pytest.fixture
def devfsd_isolated(request: pytest.FixtureRequest) -> bool:
    """Modules isolated: the marker's, else the command line's or ini option's."""
    marker = request.node.get_closest_marker("devfsd_isolated")
    if marker is not None:
        return bool(marker.args[0]) if marker.args else True
    opt = request.config.getoption("devfsd_isolated")
    return bool(request.config.getini("devfsd_isolated") if opt is None else opt)


@pytest.fixture
async def devfsd_kernel(devfsd_modpath: list[Path], devfsd_isolated: bool) -> AsyncIterator[Kernel]:
    """An in-process kernel (loader, device switch, I/O path) for this test."""
    # Imported here: the plugin loads in every pytest run of this
    # environment, which a broken driver API must not stop.
    from devfsd.testing.harness import Kernel

    async with Kernel.running(devfsd_modpath, isolate=devfsd_isolated) as k:
        yield k


@pytest.fixture
def devfsd_mount(tmp_path: Path, devfsd_modpath: list[Path], devfsd_isolated: bool) -> Iterator[MountFactory]:
    """A factory of real mounts, all torn down after the test."""
    why = missing_mount_capability()
    if why is not None:
        pytest.skip(why)
    mounts: list[DevfsdMount] = []
    scratch: list[str] = []

    def start(
        modules: Sequence[str] = (),
        nodes: Mapping[str, tuple[str, int]] | None = None,
        *,
        args: Sequence[str] = (),
        modpath: Sequence[str | os.PathLike[str]] | None = None,
    ) -> DevfsdMount:
        isolate = ["--isolate"] if devfsd_isolated and "--isolate" not in args else []
        m = DevfsdMount(
            _base(tmp_path, len(mounts), scratch),
            modpath=devfsd_modpath if modpath is None else modpath,
            args=[*args, *isolate],
        )
        mounts.append(m)
        m.start()
        for mod in modules:
            m.client().modload(mod)
        for name, (driver, unit) in (nodes or {}).items():
            r = run(["devfs-mknod", str(m.path / name), "c", driver, str(unit)], env=m.env)
            if r.returncode != 0:
                raise RuntimeError(f"devfs-mknod {name}: {r.stderr.decode(errors='replace').strip()}")
        return m

    try:
        yield start
    finally:
        for m in reversed(mounts):
            m.stop()
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)


#: The longest control socket path left room under AF_UNIX's 108 bytes.
_MAX_SOCKET_PATH = 100


def _base(tmp_path: Path, i: int, scratch: list[str]) -> Path:
    """``tmp_path/devfsdI`` (kept, with its log, for a failed test to show),
    or a short temporary directory if the control socket's path would be
    too long for ``bind``."""
    base = tmp_path / f"devfsd{i}"
    if len(str(base / "control.sock")) < _MAX_SOCKET_PATH:
        return base
    scratch.append(tempfile.mkdtemp(prefix="devfsd-"))
    return Path(scratch[-1])


@pytest.fixture
def devfsd_run() -> RunFn:
    """Run a program or shell command against nodes; collects output and status."""

    def go(
        cmd: Sequence[str] | str,
        mount: DevfsdMount | None = None,
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return run(argv, input=input, timeout=timeout, env=tool_env(mount))

    return go
