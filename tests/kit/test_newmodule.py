"""``devfsd new-module``: the skeleton passes its own tests as generated."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import run

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def test_generated_module_passes_its_tests_and_lint(tmp_path: Path) -> None:
    r = run(["devfsd", "new-module", "loop9", str(tmp_path)])
    assert (r.returncode, r.stderr) == (0, b""), r.stderr
    mod = tmp_path / "loop9"
    assert sorted(str(p.relative_to(mod)) for p in mod.rglob("*") if p.is_file()) == [
        "__init__.py",
        "loop9.4",
        "regress.sh",
        "tests/test_loop9.py",
    ]
    t = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(mod / "tests")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert t.returncode == 0, t.stdout + t.stderr
    assert " passed" in t.stdout and "failed" not in t.stdout
    m = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(mod)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert m.returncode == 0, m.stdout + m.stderr
    if shutil.which("mandoc") is None:
        pytest.skip("needs mandoc")
    lint = subprocess.run(
        ["mandoc", "-Tlint", str(mod / "loop9.4")],
        capture_output=True,
        text=True,
        check=False,
    )
    # Plain -Tlint (every level, STYLE too), as a newcomer runs it; only
    # this machine's stale mandoc.db note is not about the page.
    err = "".join(line for line in lint.stderr.splitlines(True) if "outdated mandoc.db" not in line)
    assert (lint.returncode, lint.stdout, err) == (0, "", "")


def test_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    r = run(["devfsd", "new-module", "taken", str(tmp_path)])
    assert (r.returncode, r.stderr) == (1, f"devfsd: {tmp_path}/taken: File exists\n".encode())
    assert list((tmp_path / "taken").iterdir()) == []
    r = run(["devfsd", "new-module", "a b", str(tmp_path)])
    assert (r.returncode, r.stderr) == (1, b"devfsd: a b: Invalid argument\n")
    r = run(["devfsd", "new-module", "x" * 32, str(tmp_path)])
    assert (r.returncode, r.stderr) == (1, f"devfsd: {'x' * 32}: File name too long\n".encode())
    # A module name its driver cannot take (devsw_attach's rule): the
    # skeleton's INIT would fail, so none is written.
    for name, shown in (("2fast", "2fast"), ("caf\u00e9", "caf\u00e9"), ("esc\x1b", "esc\\x1b")):
        r = run(["devfsd", "new-module", name, str(tmp_path)])
        assert (r.returncode, r.stderr) == (1, f"devfsd: {shown}: Invalid argument\n".encode())  # escaped
        assert not (tmp_path / name).exists()


def test_help_names_the_subcommands() -> None:
    r = run(["devfsd", "--help"])
    assert r.returncode == 0
    assert b"new-module NAME [DIR]" in r.stdout and b"regress" in r.stdout
