"""cycb: requires cyca, which requires it back (EDEADLK)."""

from __future__ import annotations

from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="cycb", cls=ModuleClass.MISC, required=("cyca",))


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    return None
