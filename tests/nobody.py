"""Running Python as user nobody, whoever can read the checkout.

The checkout may be where nobody cannot read it (a clone under ``/root``,
0700), and so may this venv's ``bin/python``. ``python_as_nobody`` copies
the ``devfsd`` package into a directory nobody can read and runs the
interpreter the venv was made from (resolved through its links, in a
system directory) with that copy on ``PYTHONPATH``, from ``/``. Enough for
what the control client needs: the standard library and ``devfsd``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import trio as trio_package

from devfsd.testing.mount import tool

if TYPE_CHECKING:
    from devfsd.testing.mount import DevfsdMount

__all__ = ["modload_on", "python_as_nobody", "tool_as_nobody"]

ROOT = Path(__file__).resolve().parent.parent


def python_as_nobody(
    scratch: Path, *, gid: int = 65534, trio: bool = False
) -> tuple[list[str], dict[str, str]]:
    """(argv prefix to run ``python`` as uid 65534 and ``gid``, its environment).

    ``scratch`` must be a directory nobody can reach (e.g. 0755 under /tmp);
    the copy goes to ``scratch/py``; with ``trio``, ``TOOL_DEPS`` too (what
    devfsd's tools and most of its modules import).
    """
    dst = scratch / "py"
    _readable_copy(ROOT / "devfsd", dst / "devfsd")
    os.chmod(dst, 0o755)
    if trio:
        site = Path(trio_package.__file__).resolve().parent.parent
        for dep in TOOL_DEPS:
            _readable_copy(site / dep, dst / dep)
    argv = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", os.path.realpath(sys.executable)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(dst), "PYTHONSAFEPATH": "1"}
    return argv, env


#: What the tools import besides devfsd and the standard library: trio
#: and its dependencies (pure Python), copied from this venv.
TOOL_DEPS = ("trio", "sniffio", "outcome", "attr", "attrs", "sortedcontainers", "idna")


def tool_as_nobody(scratch: Path, name: str, *, gid: int = 65534) -> tuple[list[str], dict[str, str]]:
    """(argv prefix to run devfsd's tool ``name``, e.g. ``modload``, as uid
    65534 and ``gid``, its environment): ``python_as_nobody`` running the
    tool's ``main``, which names itself (``modload: arg: strerror``), with
    ``TOOL_DEPS`` copied next to devfsd."""
    argv, env = python_as_nobody(scratch, gid=gid, trio=True)
    code = f"import sys; from devfsd.tools.{name} import main; sys.exit(main())"
    return [*argv, "-c", code], env


def _readable_copy(src: Path, dst: Path) -> None:
    """``src``'s tree at ``dst``, every directory 0755 and file 0644."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    os.chmod(dst, 0o755)
    for d, _dirs, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)


def modload_on(
    m: DevfsdMount, *args: str, member: bool, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """modload(8) ``args`` against ``m``: as root, or as nobody (a member of
    its control group) from ``tool_as_nobody``'s copy under ``m.base``."""
    if member:
        prefix, env = tool_as_nobody(m.base / "nobody", "modload")
        env["DEVFSD_CONTROL"] = m.control
    else:
        prefix, env = [tool("modload")], m.env
    return subprocess.run([*prefix, *args], env=env, capture_output=True, text=True, timeout=timeout)
