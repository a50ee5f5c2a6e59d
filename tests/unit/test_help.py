"""--help and --version on every tool (issue 12, point 6), NetBSD's options untouched.

The real console scripts of this venv, as a user runs them; none needs a daemon.
"""

from __future__ import annotations

import subprocess

import pytest

from devfsd import __version__
from devfsd.testing.mount import tool

TOOLS = [
    (["modload"], "Usage: modload ", "modload(8)"),
    (["modunload"], "Usage: modunload ", "modunload(8)"),
    (["modstat"], "Usage: modstat ", "modstat(8)"),
    (["devfs-mknod"], "usage: devfs-mknod ", "devfs-mknod(8)"),
    (["tunwg-bridge"], "usage: tunwg-bridge ", "tunwg-bridge(8)"),
    (["devfsd", "trace"], "Usage: devfsd trace ", "devfsd(8)"),
]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "DEVFSD_CONTROL": "/nonexistent/control.sock"}
    return subprocess.run([tool(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(("argv", "usage", "manual"), TOOLS)
def test_help_and_version(argv: list[str], usage: str, manual: str) -> None:
    r = _run([*argv, "--help"])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.startswith(usage)
    assert r.stdout.endswith(f"See {manual}.\n")
    r = _run([*argv, "--version"])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"{' '.join(argv)} (devfsd) {__version__}\n"


@pytest.mark.parametrize(("argv", "usage", "manual"), TOOLS)
def test_netbsd_usage_errors_stay(argv: list[str], usage: str, manual: str) -> None:
    """An unknown short option: getopt's complaint and the usage on stderr, exit 1, as before."""
    r = _run([*argv, "-Z"])
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"{' '.join(argv)}: unknown option -- Z\n{usage}")


def test_modload_dashdash_help_is_still_a_module_name() -> None:
    r = _run(["modload", "--", "--help"])  # asks the daemon, which is not there
    assert r.returncode == 1
    assert r.stderr == "modload: /nonexistent/control.sock: No such file or directory\n"


@pytest.mark.parametrize("sub", [[], ["new-module"], ["regress"], ["unit"], ["logrotate"]])
def test_devfsd_and_its_subcommands(sub: list[str]) -> None:
    r = _run(["devfsd", *sub, "--help"])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.lower().startswith("usage: devfsd")
    r = _run(["devfsd", *sub, "--version"])
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout in (f"devfsd {__version__}\n", f"devfsd {' '.join(sub)} (devfsd) {__version__}\n")
