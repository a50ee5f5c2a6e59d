"""devfsd's pytest plugin, seen from a driver's own test suite (pytester).

The suite below lives in a fresh directory with its own module directory,
finds the plugin through its ``pytest11`` entry point (no conftest) and
uses each fixture: ``devfsd_kernel`` with the ini option and with the
marker, ``devfsd_mount`` and ``devfsd_run``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parents[2]
MANEXAMPLE = ROOT / "tests" / "modules" / "manexample" / "__init__.py"

SUITE = '''
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


@pytest.mark.fuse
def test_mount_and_run(devfsd_mount, devfsd_run):
    m = devfsd_mount(modules=["bcast"], nodes={"b0": ("bcast", 0)})
    assert isinstance(m, DevfsdMount)
    r = devfsd_run('modstat bcast | tail -n 1 | cut -c1-5; test -e "$DEV/b0"', m)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"bcast\\n", b"")
    r = devfsd_run(["sh", "-c", "exit 3"], timeout=5)
    assert r.returncode == 3


@pytest.mark.fuse
def test_failing_test_still_tears_down(devfsd_mount):
    devfsd_mount(modules=["bcast"])
    raise AssertionError("deliberately")
'''


def ours(base: Path) -> set[str]:
    """devfsd mounts the suite may have made: under its directory, or the
    plugin's short scratch directories (other tests' mounts do not count)."""
    # The plugin's scratch is mkdtemp(prefix="devfsd-"): eight characters
    # after the prefix, no dash (devfsd regress's and other tests' have more).
    scratch = re.compile(re.escape(os.path.join(tempfile.gettempdir(), "devfsd-")) + r"[a-z0-9_]{8}(/|$)")
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return {p for p in points if p.startswith(str(base)) or scratch.match(p)}


def test_a_driver_suite_uses_the_fixtures(pytester: pytest.Pytester) -> None:
    (pytester.path / "mods" / "bcast").mkdir(parents=True)
    (pytester.path / "mods" / "bcast" / "__init__.py").write_text(MANEXAMPLE.read_text())
    pytester.makeini("[pytest]\ndevfsd_modpath = mods\naddopts = --strict-markers\n")
    pytester.makepyfile(test_driver=SUITE)
    mounts_before = ours(pytester.path)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    fuse = "skipped" not in outcomes
    assert outcomes.get("passed") == (3 if fuse else 2), result.stdout.str()
    if fuse:
        assert outcomes.get("failed") == 1
        result.stdout.fnmatch_lines(["*deliberately*"])
    else:
        assert outcomes.get("skipped") == 2
        result.stdout.fnmatch_lines(["*needs*"])
    assert ours(pytester.path) == mounts_before
