"""devfsd's pytest plugin, seen from a driver's own test suite (pytester).

The suite below lives in a fresh directory with its own module directory,
finds the plugin through its ``pytest11`` entry point (no conftest) and
uses each fixture: ``devfsd_kernel`` with the ini option and with the
marker, ``devfsd_mount`` and ``devfsd_run``; and runs again with every
module isolated (``devfsd_isolated``: the ini option, the command line),
where the same tests pass through module hosts.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANEXAMPLE = ROOT / "tests" / "modules" / "manexample" / "__init__.py"

SUITE = """
import os

import pytest

from devfsd.errors import DeviceError
from devfsd.testing.mount import DevfsdMount


@pytest.mark.trio
async def test_kernel_from_the_ini_option(devfsd_kernel):
    await devfsd_kernel.modload("bcast")
    w = await devfsd_kernel.open("bcast", 0)
    r = await devfsd_kernel.open("bcast", 0, os.O_RDONLY)
    await w.write(b"hi")
    assert await r.read(10) == b"hi"


@pytest.mark.trio
@pytest.mark.devfsd_modpath("elsewhere")
async def test_marker_wins(devfsd_kernel, devfsd_modpath):
    assert devfsd_modpath == [__import__("pathlib").Path("elsewhere")]
    with pytest.raises(DeviceError):
        await devfsd_kernel.modload("bcast")


@pytest.mark.trio
async def test_kernel_isolated_as_asked(devfsd_kernel, devfsd_isolated):
    await devfsd_kernel.modload("bcast")
    host = devfsd_kernel.loader.modules["bcast"].host
    assert (host is not None) == devfsd_isolated
    print(f"isolated={devfsd_isolated}")
    r = await devfsd_kernel.open("bcast", 0, os.O_RDONLY)
    w = await devfsd_kernel.open("bcast", 0)
    await w.write(b"through")
    assert await r.read(10) == b"through"
    await r.close()
    await w.close()


@pytest.mark.fuse
def test_mount_and_run(devfsd_mount, devfsd_run, devfsd_isolated):
    m = devfsd_mount(modules=["bcast"], nodes={"b0": ("bcast", 0)})
    assert isinstance(m, DevfsdMount)
    r = devfsd_run('modstat bcast | tail -n 1 | cut -c1-5; test -e "$DEV/b0"', m)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"bcast\\n", b"")
    r = devfsd_run("modstat bcast | awk 'NR == 2 { print $4 }'", m)
    assert r.stdout == (b"i\\n" if devfsd_isolated else b"-\\n")
    r = devfsd_run('printf hi > "$DEV/b0"', m)
    assert r.returncode == 0, r.stderr
    r = devfsd_run(["sh", "-c", "exit 3"], timeout=5)
    assert r.returncode == 3


@pytest.mark.devfsd_isolated
def test_marker_isolates(devfsd_isolated):
    assert devfsd_isolated is True


@pytest.mark.devfsd_isolated(False)
def test_marker_false_wins(devfsd_isolated):
    assert devfsd_isolated is False


@pytest.mark.parametrize("devfsd_isolated", [False, True])
@pytest.mark.trio
async def test_both_ways(devfsd_kernel, devfsd_isolated):
    await devfsd_kernel.modload("bcast")
    assert (devfsd_kernel.loader.modules["bcast"].host is not None) == devfsd_isolated


@pytest.mark.fuse
def test_failing_test_still_tears_down(devfsd_mount):
    devfsd_mount(modules=["bcast"])
    raise AssertionError("deliberately")
"""


def ours(base: Path) -> set[str]:
    """devfsd mounts the suite may have made: under its directory, or the
    plugin's short scratch directories (other tests' mounts do not count)."""
    # The plugin's scratch is mkdtemp(prefix="devfsd-"): eight characters
    # after the prefix, no dash (devfsd regress's and other tests' have more).
    scratch = re.compile(re.escape(os.path.join(tempfile.gettempdir(), "devfsd-")) + r"[a-z0-9_]{8}(/|$)")
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return {p for p in points if p.startswith(str(base)) or scratch.match(p)}


def run_suite(pytester: pytest.Pytester, ini: str, *args: str) -> tuple[pytest.RunResult, bool]:
    """The suite (module directory, ini file ``ini``), run in a pytest of its
    own; its result and whether mounts were possible."""
    (pytester.path / "mods" / "bcast").mkdir(parents=True, exist_ok=True)
    (pytester.path / "mods" / "bcast" / "__init__.py").write_text(MANEXAMPLE.read_text())
    pytester.makeini(f"[pytest]\ndevfsd_modpath = mods\naddopts = --strict-markers\n{ini}")
    pytester.makepyfile(test_driver=SUITE)
    mounts_before = ours(pytester.path)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *args)
    assert ours(pytester.path) == mounts_before
    return result, "skipped" not in result.parseoutcomes()


@pytest.mark.parametrize(
    ("ini", "args"),
    [("", ()), ("devfsd_isolated = true\n", ())],
    ids=["in-process", "isolated"],
)
def test_a_driver_suite_uses_the_fixtures(pytester: pytest.Pytester, ini: str, args: tuple[str, ...]) -> None:
    result, fuse = run_suite(pytester, ini, *args)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == (8 if fuse else 7), result.stdout.str()
    if fuse:
        assert outcomes.get("failed") == 1
        result.stdout.fnmatch_lines(["*deliberately*"])
    else:
        assert outcomes.get("skipped") == 2
        result.stdout.fnmatch_lines(["*needs*"])


def test_the_command_line_isolates_over_the_ini(pytester: pytest.Pytester) -> None:
    result, _ = run_suite(
        pytester, "devfsd_isolated = false\n", "--devfsd-isolated", "-s", "-k", "isolated_as_asked"
    )
    assert result.parseoutcomes().get("passed") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*isolated=True*"])
