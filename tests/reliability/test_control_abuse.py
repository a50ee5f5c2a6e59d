"""Hostile control-socket clients against a real daemon.

Each test talks raw bytes to the socket: truncated, oversized and malformed
messages, wrong types, unknown ops, a client trickling one byte per 10 ms,
one saying nothing, thousands connecting at once. After each the daemon
must still answer ``ping`` and ``modstat`` on a fresh connection.
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devfsd.control.protocol import MAX_MESSAGE, Framer, encode
from devfsd.control.server import MAX_CONNECTIONS
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

MODS = Path(__file__).resolve().parent.parent / "modules"
#: The daemon's --control-idle in these tests (seconds).
IDLE = 1.0
CONNECTIONS = 2000


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[DevfsdMount]:
    with DevfsdMount(tmp_path, modpath=[MODS], args=["--control-idle", str(IDLE)]) as m:
        yield m
        assert_serving(m)
        # No request reached a bug (a logged traceback) in the daemon.
        assert "Traceback" not in m.log_text()


def assert_serving(m: DevfsdMount) -> None:
    c = m.client()
    c.ping()
    assert "modules" in c.modstat()


def connect(m: DevfsdMount, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(m.control)
    return s


def connect_when_accepted(m: DevfsdMount, timeout: float = 10.0) -> socket.socket:
    """``connect``, tried again while the listen backlog is full (``EAGAIN``)."""
    got: list[socket.socket] = []

    def accepted() -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(m.control)
        except BlockingIOError:
            s.close()
            return False
        got.append(s)
        return True

    wait_for(accepted, timeout, "room in the control socket's backlog", 0.001)
    return got[0]


def reply(s: socket.socket) -> dict[str, Any] | None:
    """The next reply, or ``None`` if the daemon closed the connection."""
    f = Framer()
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        f.feed(data)
        msg = f.next_message()
        if msg is not None:
            return msg


def raw(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "err"),
    [
        (struct.pack(">I", MAX_MESSAGE + 1), errno.EMSGSIZE),
        (struct.pack(">I", 0xFFFFFFFF) + b"{}", errno.EMSGSIZE),
        (raw(b"\xff\xfe"), errno.EBADMSG),
        (raw(b"{not json"), errno.EBADMSG),
        (raw(b"[1, 2]"), errno.EBADMSG),
        (raw(b'"ping"'), errno.EBADMSG),
        (raw(b"{}"), errno.EINVAL),
        (raw(b'{"op": 7}'), errno.EINVAL),
        (raw(b'{"op": "reboot"}'), errno.EOPNOTSUPP),
        (raw(b'{"op": "ping", "extra": 1}'), errno.EINVAL),
        (raw(b'{"op": "modload", "module": 5, "props": {}}'), errno.EINVAL),
        (raw(b'{"op": "modload", "module": "x", "props": [1]}'), errno.EINVAL),
        (raw(b'{"op": "modload", "module": "crandom", "props": {"maxlen": 1e300}}'), errno.EINVAL),
        # A name past proplib's 128 bytes (the empty name is allowed, as in NetBSD).
        (raw(b'{"op": "modload", "module": "crandom", "props": {"' + b"k" * 129 + b'": 1}}'), errno.EINVAL),
        (raw(b'{"op": "ioctl", "path": "/", "cmd": true, "data": ""}'), errno.EINVAL),
        (raw(b'{"op": "ioctl", "path": "/", "cmd": 1, "data": "!!"}'), None),
        (raw(b'{"op": "modunload", "module": "\\udc80"}'), None),
        (raw(b'{"op": "modload", "module": "../../etc", "props": {}}'), None),
        (raw(b'{"op": "modload", "module": "' + b"a" * 100_000 + b'", "props": {}}'), None),
        (
            raw(json.dumps({"op": "modload", "module": "x", "props": {"k": "v" * 5000}}).encode()),
            errno.ENOMEM,
        ),
    ],
)
def test_malformed_request_gets_error_reply(mnt: DevfsdMount, data: bytes, err: int | None) -> None:
    with connect(mnt) as s:
        s.sendall(data)
        r = reply(s)
    assert r is not None
    assert r["ok"] is False
    assert isinstance(r["errno"], int) and r["errno"] > 0
    if err is not None:
        assert r["errno"] == err, r


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_truncated_then_hang_up(mnt: DevfsdMount, cut: int) -> None:
    with connect(mnt) as s:
        s.sendall(encode({"op": "modstat", "module": None})[:cut])
    assert_serving(mnt)


def test_truncated_then_silent_is_dropped(mnt: DevfsdMount) -> None:
    with connect(mnt) as s:
        s.sendall(encode({"op": "ping"})[:6])
        t0 = time.monotonic()
        assert reply(s) is None
        waited = time.monotonic() - t0
    assert IDLE * 0.5 <= waited < IDLE + 10


def test_silent_client_is_dropped_after_idle(mnt: DevfsdMount) -> None:
    with connect(mnt) as s:
        t0 = time.monotonic()
        assert reply(s) is None
        waited = time.monotonic() - t0
    assert IDLE * 0.5 <= waited < IDLE + 10


def test_slow_client_within_idle_is_served(mnt: DevfsdMount) -> None:
    req = encode({"op": "ping"})  # 17 bytes: about 0.2 s at 10 ms a byte
    with connect(mnt) as s:
        for b in req:
            s.send(bytes([b]))
            time.sleep(0.01)  # the client's pace, not a wait for a state
        assert reply(s) == {"ok": True, "result": None}


def test_slow_client_past_idle_is_dropped(mnt: DevfsdMount) -> None:
    req = encode({"op": "modstat", "module": "x" * 200})  # > 2 s at 10 ms a byte
    sent = 0
    with connect(mnt) as s:
        try:
            for b in req:
                s.send(bytes([b]))
                sent += 1
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < len(req)
        assert reply(s) is None


def test_many_requests_on_one_connection(mnt: DevfsdMount) -> None:
    with connect(mnt) as s:
        s.sendall(b"".join(encode({"op": "ping"}) for _ in range(200)))
        f = Framer()
        got = 0
        while got < 200:
            f.feed(s.recv(65536))
            while (msg := f.next_message()) is not None:
                assert msg == {"ok": True, "result": None}
                got += 1


def test_thousands_of_connections(mnt: DevfsdMount) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = CONNECTIONS + 256
    if hard < need:
        pytest.skip(f"needs RLIMIT_NOFILE >= {need} (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    socks: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            # Backlog full (EAGAIN): the daemon is busy, which is the point.
            with contextlib.suppress(OSError):
                s.connect(mnt.control)
        # Extras past MAX_CONNECTIONS are closed at once; the ones served
        # idle out; then a new client is served again.
        wait_for(_pings(mnt), IDLE + 30, "ping while thousands are connected", 0.05)
        assert_serving(mnt)
        alive = 0
        for s in socks:
            try:
                if s.recv(1) == b"":
                    continue
            except BlockingIOError:
                alive += 1
            except OSError:
                continue
        assert alive <= MAX_CONNECTIONS
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _pings(m: DevfsdMount) -> Any:
    def ok() -> bool:
        try:
            m.client().ping()
        except ControlError:
            return False
        return True

    return ok


def test_silent_clients_at_the_cap_give_way_to_a_new_one(tmp_path: Path) -> None:
    """With every connection taken by clients that say nothing (and a long
    idle limit), a new client is still served at once: the connection that
    has waited longest for its client is dropped to make room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = MAX_CONNECTIONS + 256
    if hard < need:
        pytest.skip(f"needs RLIMIT_NOFILE >= {need} (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    socks: list[socket.socket] = []
    try:
        with DevfsdMount(tmp_path, modpath=[MODS], args=["--control-idle", "300"]) as m:
            for _ in range(MAX_CONNECTIONS):
                socks.append(connect_when_accepted(m))
            # Each is served (not closed) once the daemon has accepted it: a
            # ping on the last one answers when all before it are in.
            socks[-1].sendall(encode({"op": "ping"}))
            assert reply(socks[-1]) == {"ok": True, "result": None}
            started = time.monotonic()
            assert_serving(m)  # a fresh connection, past the cap
            assert time.monotonic() - started < 10  # not after the 300 s idle limit
            socks[0].settimeout(10)
            assert socks[0].recv(1) == b""  # the longest idle one made room
            socks[-1].sendall(encode({"op": "ping"}))  # the busiest-recently one still served
            assert reply(socks[-1]) == {"ok": True, "result": None}
            assert "Traceback" not in m.log_text()
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
