"""The tree is lint-, type- and man-page-clean, and drivers use only the driver API."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER_API = ("devfsd.cdevsw", "devfsd.kern", "devfsd.errors")

pytestmark = pytest.mark.slow


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff() -> None:
    r = _run(sys.executable, "-m", "ruff", "check", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = _run(sys.executable, "-m", "ruff", "format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = _run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr


def test_man_pages_lint_clean() -> None:
    if shutil.which("mandoc") is None:
        pytest.skip("needs mandoc")
    pages = sorted(str(p) for p in (ROOT / "man").glob("*.[1-9]"))
    assert pages, "no man pages"
    r = _run("mandoc", "-Tlint", "-W", "warning", *pages)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr


def test_drivers_import_only_the_driver_api() -> None:
    bad = []
    for f in sorted((ROOT / "modules").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] == "devfsd" and not n.startswith(DRIVER_API):
                    bad.append(f"{f.relative_to(ROOT)}: {n}")
    assert bad == []
