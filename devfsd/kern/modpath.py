"""Where modules are found by name, after the ``--modpath`` directories.

Touches the world (stats files, reads installed distributions' metadata);
imports and runs nothing it finds: ``devfsd.kern.trust`` checks and loads.

Search order for ``modload NAME`` (devfsd(8), MODULES):

1. each ``--modpath`` directory, in order: ``DIR/NAME/__init__.py``, then
   ``DIR/NAME.py``;
2. the built-in drivers (crandom, mm, tunwg): ``devfsd/modules/`` in an
   installed devfsd, the top-level ``modules/`` of a source tree;
3. installed Python distributions that declare the driver in the entry
   point group ``devfsd.modules`` (``NAME = "package"``), so that a
   third-party driver is ``pip install devfsd-foo`` and ``modload foo``.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path
from typing import Final

__all__ = ["ENTRY_POINT_GROUP", "builtin_modules", "entry_point_code"]

log = logging.getLogger(__name__)

#: The entry point group a distribution declares its drivers in.
ENTRY_POINT_GROUP: Final = "devfsd.modules"


def builtin_modules(package: Path | None = None) -> Path | None:
    """The directory of the built-in drivers, if there is one.

    An installed devfsd carries them as ``devfsd/modules`` (the wheel maps
    the source tree's top-level ``modules/`` there); run from a source tree
    (an editable install, ``PYTHONPATH``), they are ``modules/`` beside
    ``devfsd/``, recognised by the ``pyproject.toml`` next to them.

    Args:
        package: the ``devfsd`` package directory to look from (default:
            this one's).
    """
    pkg = Path(__file__).resolve().parent.parent if package is None else package
    if (pkg / "modules").is_dir():
        return pkg / "modules"
    tree = pkg.parent
    if (tree / "pyproject.toml").is_file() and (tree / "modules").is_dir():
        return tree / "modules"
    return None


def entry_point_code(name: str) -> tuple[Path, bool] | None:
    """The code of the driver ``name`` declared by an installed distribution.

    The entry point's value names a module (``devfsd_foo`` or
    ``devfsd_foo:anything``; what follows ``:`` is ignored): its package
    directory or ``.py`` file inside the distribution is returned, without
    importing anything. The first distribution that has it wins.

    Returns:
        (package directory or ``.py`` file, whether a package), or ``None``.
    """
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        # Not ep.module: a value it cannot parse raises AttributeError there.
        parts = ep.value.partition(":")[0].strip().split(".")
        if not all(p.isidentifier() for p in parts) or ep.dist is None:
            log.warning("entry point %s = %r: not a module name; ignored", name, ep.value)
            continue
        rel = "/".join(parts)
        pkg = Path(str(ep.dist.locate_file(rel)))
        if (pkg / "__init__.py").is_file():
            return pkg, True
        mod = Path(str(ep.dist.locate_file(rel + ".py")))
        if mod.is_file():
            return mod, False
        log.warning("entry point %s = %r: %s not found; ignored", name, ep.value, pkg)
    return None
