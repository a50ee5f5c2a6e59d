"""Regression scripts: a driver's shell-level scenario against a fresh mount.

Touches the world. After NetBSD's ATF shell tests: a script is plain
``sh``, run with a devfsd of its own on a temporary mountpoint, the given
modules loaded, and passes if it exits 0. Its environment has

``DEV``                 the mountpoint;
``DEVFSD_CONTROL``      the daemon's control socket (the tools use it);
``DEVFSD_REGRESS_LIB``  the helper library, to source first;
``REGRESS_TMP``         a scratch directory, removed afterwards;
``PATH``                this venv's ``bin`` first (``modload``, ``devfs-mknod``...).

The library (``LIBRARY`` below) gives ``check_exit CODE CMD...``,
``check_out TEXT CMD...``, ``check_err TEXT CMD...``, ``mknod_c NAME DRIVER
UNIT`` and ``fail MESSAGE``. Each check prints ``ok: CMD`` or, on stderr,
``FAIL: ...`` and exits 1. The daemon is stopped, and its mount gone, however
the script ends::

    devfsd regress tests/regress/crandom.sh
    devfsd regress --module ~/mods/bcast bcast.sh
    devfsd regress -I --module crandom tests/regress/crandom.sh   # isolated
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount
from devfsd.tools import errline
from devfsd.tools.argparser import ArgumentParser

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["LIBRARY", "RegressResult", "main", "run_script"]

PROG: Final = "devfsd regress"

LIBRARY: Final = r"""# devfsd regress helpers: source "$DEVFSD_REGRESS_LIB" first.

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# check_exit CODE CMD...: CMD exits with CODE.
check_exit() {
	_want=$1; shift
	_out=$("$@" 2>"$REGRESS_TMP/.err"); _rc=$?
	[ "$_rc" -eq "$_want" ] || fail "$*: exit $_rc, expected $_want: $(cat "$REGRESS_TMP/.err")"
	echo "ok: $*"
}

# check_out TEXT CMD...: CMD exits 0 and prints TEXT (trailing newlines ignored).
check_out() {
	_want=$1; shift
	_out=$("$@" 2>"$REGRESS_TMP/.err"); _rc=$?
	[ "$_rc" -eq 0 ] || fail "$*: exit $_rc: $(cat "$REGRESS_TMP/.err")"
	[ "$_out" = "$_want" ] || fail "$*: printed '$_out', expected '$_want'"
	echo "ok: $*"
}

# check_err TEXT CMD...: CMD writes TEXT to stderr (its exit status is not checked).
check_err() {
	_want=$1; shift
	"$@" >/dev/null 2>"$REGRESS_TMP/.err"
	_err=$(cat "$REGRESS_TMP/.err")
	[ "$_err" = "$_want" ] || fail "$*: stderr '$_err', expected '$_want'"
	echo "ok: $*"
}

# mknod_c NAME DRIVER UNIT: make "$DEV/NAME".
mknod_c() {
	devfs-mknod "$DEV/$1" c "$2" "$3" || fail "devfs-mknod $DEV/$1 c $2 $3"
}
"""


@final
@dataclass(frozen=True, slots=True)
class RegressResult:
    """How a script ended: its status and output, and the daemon's log."""

    script: str
    returncode: int
    stdout: str
    stderr: str
    log: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


def _module_args(modules: Iterable[str]) -> tuple[list[str], list[str]]:
    """Modules to load and directories to search: a path's parent is searched
    (so autoload finds it) and the path loaded; a name is loaded as it is."""
    loads: list[str] = []
    dirs: list[str] = []
    for m in modules:
        if "/" in m:
            p = Path(m).resolve()
            dirs.append(str(p.parent))
            loads.append(str(p))
        else:
            loads.append(m)
    return loads, dirs


def run_script(
    script: str | os.PathLike[str],
    modules: Iterable[str] = (),
    *,
    modpath: Iterable[str | os.PathLike[str]] = (),
    args: Sequence[str] = (),
    timeout: float = 300.0,
) -> RegressResult:
    """Run ``script`` with ``sh`` against a fresh devfsd with ``modules`` loaded.

    Raises:
        RuntimeError: the daemon did not start.
        ControlError: a module did not load (``errno`` set).
    """
    loads, dirs = _module_args(modules)
    with tempfile.TemporaryDirectory(prefix="devfsd-regress-") as base:
        m = DevfsdMount(base, modpath=[*map(str, modpath), *dirs], args=args)
        with m:
            for mod in loads:
                m.client().modload(mod)
            scratch = Path(base) / "tmp"
            scratch.mkdir()
            lib = Path(base) / "regress.subr"
            lib.write_text(LIBRARY)
            env = {
                **m.env,
                "DEV": str(m.path),
                "DEVFSD_REGRESS_LIB": str(lib),
                "REGRESS_TMP": str(scratch),
                "PATH": f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', os.defpath)}",
            }
            try:
                r = subprocess.run(
                    ["sh", os.fspath(script)],
                    capture_output=True,
                    env=env,
                    timeout=timeout,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
                rc, out, err = r.returncode, r.stdout, r.stderr
            except subprocess.TimeoutExpired as exc:
                rc, out = 124, exc.stdout or b""
                err = (exc.stderr or b"") + f"timed out after {timeout}s\n".encode()
        return RegressResult(
            os.fspath(script), rc, out.decode(errors="replace"), err.decode(errors="replace"), m.log_text()
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``devfsd regress [-I] [--module M]... [--modpath DIR]... SCRIPT...``: exit 0 if all pass."""
    p = ArgumentParser(prog=PROG, description="Run shell scenarios against fresh devfsd mounts.")
    p.add_argument(
        "-m", "--module", action="append", default=[], help="load module M (a name or a directory)"
    )
    p.add_argument("--modpath", metavar="DIR", action="append", default=[], help="search DIR for modules")
    p.add_argument(
        "-I", "--isolate", action="store_true", help="load every module isolated (devfsd --isolate)"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a script may run (default 300)")
    p.add_argument("-v", "--verbose", action="store_true", help="print a passing script's output too")
    p.add_argument("scripts", metavar="SCRIPT", nargs="+")
    a = p.parse_args(argv)
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print(f"{PROG}: needs root and /dev/fuse", file=sys.stderr)
        return 1
    failed = 0
    for script in a.scripts:
        if not os.path.isfile(script):
            sys.stderr.write(errline(PROG, script, errno.ENOENT))
            failed += 1
            continue
        try:
            args = ["--isolate"] if a.isolate else []
            r = run_script(script, a.module, modpath=a.modpath, args=args, timeout=a.timeout)
        except ControlError as exc:
            sys.stderr.write(errline(PROG, script, f"modload: {exc}"))
            failed += 1
            continue
        except (RuntimeError, TimeoutError) as exc:
            sys.stderr.write(errline(PROG, script, str(exc)))
            failed += 1
            continue
        if not r.passed or a.verbose:
            sys.stdout.write(r.stdout)
            sys.stderr.write(r.stderr)
        if r.passed:
            print(f"{script}: passed")
        else:
            failed += 1
            print(f"{script}: FAILED (exit {r.returncode})")
            if r.log:
                print(f"--- devfsd log\n{r.log}", end="" if r.log.endswith("\n") else "\n")
    return 1 if failed else 0
