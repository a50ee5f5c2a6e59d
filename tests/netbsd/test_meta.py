"""The ports' own rules: every test names its NetBSD source line, and every
departure is written in its man page's COMPATIBILITY section."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .netbsd import DEPARTURES, MAN

HERE = Path(__file__).resolve().parent
#: ``t_modload.sh:52``, ``pack_dev.c:135-137``, ``kern_module.c:858,881-885``.
SOURCE_LINE = re.compile(r"[\w/]+\.(?:c|sh):\d+")


def port_tests() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out = []
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == "test_meta.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                out.append((f"{path.name}::{node.name}", node))
    return out


@pytest.mark.parametrize(("name", "fn"), port_tests(), ids=[n for n, _ in port_tests()])
def test_every_port_names_its_netbsd_line(name: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    doc = ast.get_docstring(fn) or ""
    assert SOURCE_LINE.match(doc), f"{name}: docstring must start with FILE:LINE, not {doc[:40]!r}"


def compatibility(page: str) -> str:
    """The rendered COMPATIBILITY section of ``man/<page>``, white space squeezed."""
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("needs mandoc")
    text = subprocess.run(
        [mandoc, "-Tutf8", "-Owidth=1000", str(MAN / page)], capture_output=True, text=True, check=True
    ).stdout
    text = re.sub(r".\x08", "", text)  # overstrike (bold, underline)
    m = re.search(r"^COMPATIBILITY\n(.*?)^[A-Z][A-Z ]+\n", text, re.S | re.M)
    assert m, f"{page} has no COMPATIBILITY section"
    return " ".join(m.group(1).split())


@pytest.mark.parametrize("key", sorted(DEPARTURES))
def test_every_departure_is_documented(key: str) -> None:
    d = DEPARTURES[key]
    assert " ".join(d.phrase.split()) in compatibility(d.page), f"{key}: {d.phrase!r} not in {d.page}"
