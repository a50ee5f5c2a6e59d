"""The search order for ``modload NAME``: --modpath, built-in drivers, entry points.

In process: a distribution is a ``*.dist-info`` directory with an
``entry_points.txt`` on ``sys.path``, as pip leaves one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import DeviceError
from devfsd.kern.loader import ModuleLoader
from devfsd.kern.modpath import builtin_modules, entry_point_code

if TYPE_CHECKING:
    from pathlib import Path


def _dist(site: Path, dist: str, entries: dict[str, str], pkgs: list[str]) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[devfsd.modules]\n{lines}")
    for p in pkgs:
        (site / p).mkdir()
        (site / p / "__init__.py").write_text("")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    s = tmp_path / "site"
    s.mkdir()
    monkeypatch.syspath_prepend(str(s))
    return s


def test_builtin_drivers_are_found() -> None:
    d = builtin_modules()
    assert d is not None
    assert {p.name for p in d.iterdir() if (p / "__init__.py").is_file()} >= {"crandom", "mm", "tunwg"}


def test_order(site: Path, tmp_path: Path) -> None:
    _dist(site, "devfsd_x", {"foo": "devfsd_foo", "mm": "devfsd_mm", "bar": "devfsd_bar.sub:ignored"}, [])
    for p in ("devfsd_foo", "devfsd_mm", "devfsd_bar", "devfsd_bar/sub"):
        (site / p).mkdir()
        (site / p / "__init__.py").write_text("")
    mods = tmp_path / "mods"
    (mods / "foo").mkdir(parents=True)
    (mods / "foo" / "__init__.py").write_text("")
    loader = ModuleLoader([mods])
    builtin = builtin_modules()
    assert builtin is not None
    assert loader.modpath == [mods, builtin]
    # --modpath first, then the built-in drivers, then distributions.
    assert loader.locate("foo")[2] == (mods / "foo").resolve()
    assert loader.locate("mm")[2] == (builtin / "mm").resolve()
    assert loader.locate("bar")[2] == site / "devfsd_bar" / "sub"
    os.rename(mods / "foo", mods / "gone")
    assert loader.locate("foo")[2] == site / "devfsd_foo"
    with pytest.raises(DeviceError):
        loader.locate("nosuch")


def test_entry_points_that_name_nothing_are_passed_over(site: Path) -> None:
    _dist(site, "devfsd_y", {"a": "not-a-name", "b": "devfsd_missing"}, [])
    assert entry_point_code("a") is None
    assert entry_point_code("b") is None
    (site / "devfsd_single.py").write_text("")
    _dist(site, "devfsd_z", {"c": "devfsd_single"}, [])
    assert entry_point_code("c") == (site / "devfsd_single.py", False)
