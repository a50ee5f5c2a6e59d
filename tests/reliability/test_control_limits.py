"""The control socket's input limits against a real daemon (issue 13.11).

A message nested 100,000 deep gets ``EBADMSG`` and the connection goes on;
512 connections each sending about 1 MiB of a frame they never finish are
held to the shared pool (``MAX_BUFFERED``; those past it get ``ENOBUFS``
and are closed); a ping is answered all the while; and once they have gone
the daemon's memory is back near where it started and its descriptors are
back exactly.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import resource
import select
import socket
import struct
import termios
import time
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.control.protocol import MAX_BUFFERED, MAX_MESSAGE, encode
from devfsd.testing.mount import DevfsdMount, wait_for
from tests.reliability.test_control_abuse import assert_serving, connect, connect_when_accepted, raw, reply
from tests.reliability.test_load import daemon_usage

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

ATTACKERS = 512
#: Bytes each attacker tries to send: its frame announces one more.
ATTACK_BYTES = MAX_MESSAGE - 1


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[DevfsdMount]:
    with DevfsdMount(tmp_path, args=["--control-idle", "120"]) as m:
        yield m
        assert_serving(m)
        assert "Traceback" not in m.log_text()


def test_deep_nesting_is_an_error_reply_and_the_connection_goes_on(mnt: DevfsdMount) -> None:
    with connect(mnt) as s:
        s.sendall(raw(b"[" * 100_000))
        r = reply(s)
        assert r is not None and r["ok"] is False and r["errno"] == errno.EBADMSG, r
        s.sendall(encode({"op": "ping"}))
        assert reply(s) == {"ok": True, "result": None}
    assert "RecursionError" not in mnt.log_text()


def _attack(socks: list[socket.socket], deadline: float, sample: Any) -> tuple[int, int]:
    """Send each socket its unfinished frame, round-robin, without blocking.

    Returns:
        (sockets that sent it all and are still open, sockets the daemon closed).
    """
    left = {s: (ATTACK_BYTES + 1).to_bytes(4, "big") + b"\0" * ATTACK_BYTES for s in socks}
    closed = 0
    while left:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(left)} attackers still sending")
        progress = False
        for s in list(left):
            data = left[s]
            try:
                n = s.send(data[:262144])
            except BlockingIOError:
                continue
            except OSError:  # EPIPE, ECONNRESET: the daemon closed it
                del left[s]
                closed += 1
                continue
            progress = True
            if n == len(data):
                del left[s]
            else:
                left[s] = data[n:]
        sample()
        if not progress:
            time.sleep(0.005)  # the daemon drains at its pace
    return len(socks) - closed, closed


def _peer_state(s: socket.socket) -> str:
    """ "closed": the daemon hung up (after its ENOBUFS reply); "kept": it
    has read all this attacker sent (nothing left in the socket's queue) and
    holds it; "pending": bytes still wait to be read."""
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLRDHUP)
    if p.poll(0):
        return "closed"
    queued = struct.unpack("i", fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return "kept" if queued == 0 else "pending"


def test_unfinished_frames_are_bounded_and_memory_comes_back(mnt: DevfsdMount) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = ATTACKERS + 256
    if hard < need:
        pytest.skip(f"needs RLIMIT_NOFILE >= {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    before = daemon_usage(mnt)
    peak = [before[0]]

    def sample() -> None:
        peak[0] = max(peak[0], daemon_usage(mnt)[0])

    socks: list[socket.socket] = []
    try:
        for _ in range(ATTACKERS):
            s = connect_when_accepted(mnt)
            s.setblocking(False)
            socks.append(s)
        _attack(socks, time.monotonic() + 120, sample)
        # Sent is not yet read: on a busy machine the daemon is still taking
        # in (or refusing) the last frames. Count once it has done either.
        wait_for(lambda: "pending" not in map(_peer_state, socks), 60, "the daemon to read or refuse each")
        states = [_peer_state(s) for s in socks]
        kept, refused = states.count("kept"), states.count("closed")
        during = daemon_usage(mnt)
        # A fresh client is served while they hold what they hold (it may
        # push the longest-waiting attacker out: all 512 slots are taken).
        mnt.client().ping()
        sample()
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: daemon_usage(mnt)[1] <= before[1], 30, "the daemon to close the attackers")
    mib = 1024
    # The last attackers' buffers are freed as the daemon gets to them: on a
    # busy machine that is after their descriptors are gone.
    wait_for(lambda: daemon_usage(mnt)[0] - before[0] < 8 * mib, 30, "memory back near the start")
    after = daemon_usage(mnt)
    print(
        f"\ncontrol limits: {kept} attackers kept, {refused} refused (ENOBUFS); daemon"
        f" VmRSS kB before {before[0]}, peak {peak[0]}, with them {during[0]}, after {after[0]};"
        f" fds {before[1]} -> {during[1]} -> {after[1]}"
    )
    assert refused > 0  # the pool ran out: the cap is real
    assert kept * ATTACK_BYTES <= MAX_BUFFERED + ATTACKERS * 4096
    assert peak[0] - before[0] < 3 * MAX_BUFFERED // mib + 32 * mib  # kB
    assert after[0] - before[0] < 8 * mib  # back near the start
    assert after[1] <= before[1]
    with contextlib.suppress(Exception):
        assert_serving(mnt)
