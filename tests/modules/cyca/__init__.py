"""cyca: requires cycb, which requires it back (EDEADLK)."""

from __future__ import annotations

from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="cyca", cls=ModuleClass.MISC, required=("cycb",))


async def modcmd(cmd: ModCmd, props: Props | None) -> None:
    return None
