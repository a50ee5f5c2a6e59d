"""Shared fixtures: markers' skips and a real devfsd mount."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from devfsd.testing.mount import DevfsdMount

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mknod, mounts, allow_other)"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = _can_mount()
    if why is None:
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "fuse" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def devfs(tmp_path: Path) -> Iterator[DevfsdMount]:
    """A running devfsd on ``tmp_path/dev``; torn down even if the test fails."""
    m = DevfsdMount(tmp_path, args=["--debug"])
    with m:
        yield m
