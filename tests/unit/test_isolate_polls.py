"""An isolated driver's polls, as the daemon keeps them (``HostProcess.polls``).

The kernel has one poll handle per open file. The daemon keeps, per file
of a host, the handle of its last poll until the host's ``NOTIFY`` for it
(the file id is the poll token): one entry per file, however often the
file is polled and whatever the host keeps. It used to keep one per poll
until a ``NOTIFY``: a poll that found the file ready (the host keeps that
handle for a later ``EWOULDBLOCK``) was never notified, so a poller of a
writable node grew the daemon by an entry per poll; and a host that says
it keeps every poll and never notifies could do the same on purpose. The
host, in turn, sends one ``NOTIFY`` per ``POLL`` that armed the file's
token, not one per poll its driver recorded.
"""

from __future__ import annotations

from pathlib import Path
from unittest.mock import Mock

from devfsd.isolate.supervisor import Supervisor
from devfsd.testing.harness import Kernel

MODS = Path(__file__).resolve().parent.parent / "modules"


def poll_handle() -> Mock:
    """A poll handle (its notify calls counted)."""
    return Mock(spec=["notify"])


async def test_one_armed_poll_per_file_and_a_wakeup_notifies_it() -> None:
    async with Kernel.running([MODS], isolate=True) as k:
        await k.modload("msgq")
        sup: object = k.loader.modules["msgq"].pymod  # the loader's module object, when isolated
        assert isinstance(sup, Supervisor) and sup.host is not None
        host = sup.host
        f = await k.open("msgq", 0)
        await f.write(b"ready")
        for _ in range(300):  # ready: msgq records nothing
            await f.poll(poll_handle=poll_handle())
        assert len(host.polls) <= 1
        assert await f.read(10) == b"ready"
        handles = [poll_handle() for _ in range(300)]
        for h in handles:  # not ready: msgq records each
            await f.poll(poll_handle=h)
        assert list(host.polls.values()) == [handles[-1]]
        g = await k.open("msgq", 0)
        await g.write(b"wake")  # msgq's wakeup: the host's NOTIFYs, one per recorded poll
        await f.poll(poll_handle=poll_handle())  # (a round trip: the NOTIFYs came before its reply)
        assert handles[-1].notify.call_count == 1  # the file's handle, once: the kernel polls again
        assert sum(h.notify.call_count for h in handles) == 1
        # And the host sent one NOTIFY, not one per poll msgq recorded: none
        # was a stray (hostproc.STRAY_RATE paces those).
        assert host.strays == 0
        await f.read(10)
        await f.poll(poll_handle=poll_handle())
        assert len(host.polls) == 1
        # The file's entry goes with it: at its release (``_HostFile``'s
        # finaliser, whenever the collector frees its File), or at its
        # dev's last close, as here.
        await g.close()
        await f.close()
        assert host.polls == {}
