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
import sys
from pathlib import Path

__all__ = ["python_as_nobody"]

ROOT = Path(__file__).resolve().parent.parent


def python_as_nobody(scratch: Path, *, gid: int = 65534) -> tuple[list[str], dict[str, str]]:
    """(argv prefix to run ``python`` as uid 65534 and ``gid``, its environment).

    ``scratch`` must be a directory nobody can reach (e.g. 0755 under /tmp);
    the copy goes to ``scratch/py``.
    """
    dst = scratch / "py"
    shutil.copytree(ROOT / "devfsd", dst / "devfsd", ignore=shutil.ignore_patterns("__pycache__"))
    for d, _dirs, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    argv = ["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", os.path.realpath(sys.executable)]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(dst), "PYTHONSAFEPATH": "1"}
    return argv, env
