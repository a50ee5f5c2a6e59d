"""Shared fixtures. The ``fuse`` marker's skip and the devfsd_* fixtures
come from devfsd's own pytest plugin (``devfsd.testing.plugin``); ``devfs``
is the project's older name for a plain mount."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from devfsd.testing.mount import DevfsdMount
    from devfsd.testing.plugin import MountFactory

pytest_plugins = ["pytester"]


@pytest.fixture
def devfs(devfsd_mount: MountFactory) -> DevfsdMount:
    """A running devfsd (``--debug``) on a temporary mountpoint; torn down even if the test fails."""
    return devfsd_mount(args=["--debug"])
