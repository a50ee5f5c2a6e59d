"""An isolated module's host when the module is stopped without its FINI.

At shutdown (and when a load is undone) a module whose FINI refuses, such
as crandom with a file open, is undone: in process its code simply stops
being called. Isolated, its host must be told the same way as after a
FINI, by the end of its socket, and exit by itself at once; it used to be
left serving until ``hostproc.EXIT_GRACE`` (2 s) ran out and then killed
with SIGKILL, so a daemon stopped with files open on N isolated modules
took 2N s more to stop.
"""

from __future__ import annotations

import trio

from devfsd.isolate.hostproc import EXIT_GRACE
from devfsd.isolate.supervisor import Supervisor
from devfsd.testing.harness import Kernel


async def test_undone_with_a_file_open_the_host_exits_by_itself() -> None:
    async with Kernel.running(isolate=True) as k:
        await k.modload("crandom")
        f = await k.open("crandom", 0)
        await f.write(b"abc")  # crandom's FINI refuses while a string is stored and open
        sup: object = k.loader.modules["crandom"].pymod  # the loader's module object, when isolated
        assert isinstance(sup, Supervisor) and sup.host is not None and sup.host.proc is not None
        proc = sup.host.proc
        t0 = trio.current_time()
    assert proc.returncode == 0  # exited at the end of its socket, not killed (-9)
    assert trio.current_time() - t0 < EXIT_GRACE
