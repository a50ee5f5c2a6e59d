"""The control socket: where it is and the names the tools use.

``resolve_path`` gives the socket the tools talk to: ``-c PATH`` first, then
``$DEVFSD_CONTROL``, then ``DEFAULT_CONTROL``. ``path_for_node`` asks a
mount itself: every inode of a devfsd mount answers the extended attribute
``user.devfsd.control`` with its daemon's socket path.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["CONTROL_XATTR", "DEFAULT_CONTROL", "ENV_CONTROL", "path_for_node", "resolve_path"]

DEFAULT_CONTROL: Final = "/run/devfsd/control.sock"
ENV_CONTROL: Final = "DEVFSD_CONTROL"
CONTROL_XATTR: Final = "user.devfsd.control"


def resolve_path(explicit: str | None = None) -> str:
    """The control socket path: ``explicit``, ``$DEVFSD_CONTROL`` or the default."""
    if explicit:
        return explicit
    return os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL


def path_for_node(path: str) -> str | None:
    """The control socket of the devfsd mount holding ``path`` (or its directory).

    Returns:
        The socket path, or ``None`` if ``path`` is not on a devfsd mount.
    """
    for p in (path, os.path.dirname(os.path.abspath(path)) or "/"):
        try:
            return os.getxattr(p, CONTROL_XATTR, follow_symlinks=False).decode()
        except OSError:
            continue
    return None
