"""The fuzz targets' bodies, shared by the atheris scripts and the tests.

Each ``*_one_input(data)`` takes any bytes and returns normally: it raises
only on a bug (an exception the code under test must never let out, or a
reply that is not a well-formed message). Both are deterministic: fixed
keys, a seeded rng, ``now`` a number.

- ``control_one_input``: the first byte picks a chunk size; the rest is fed
  to a ``Framer`` in chunks of it; each message goes through
  ``ControlServer.handle`` (``parse_request`` and a fake api) and its reply
  through ``encode_reply`` and back through a ``Framer``.
- ``wg_one_input``: one datagram to a configured ``Device`` that holds a
  session with its peer (so transport data, keepalives, handshakes and
  cookie replies all reach real code), from the peer's endpoint.
"""

from __future__ import annotations

import base64
import copy
import errno
import os
import random
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from devfsd.cdevsw import Lwp
from devfsd.control.protocol import (
    BufferPool,
    Framer,
    FramingError,
    ProtocolError,
    decode_reply,
    encode,
    encode_reply,
    error_reply,
)
from devfsd.control.server import ControlServer
from devfsd.errors import ControlError, DeviceError
from fuzz._state_target import state_one_input, state_seeds
from modules.tunwg.wg import DeliverPacket, Device, Endpoint, KeyLog, SendDatagram, SetRequest, UapiReader
from modules.tunwg.wg.crypto import generate_private_key, public_key

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from devfsd.control.api import ControlApi

__all__ = [
    "control_one_input",
    "control_seeds",
    "state_one_input",
    "state_seeds",
    "wg_one_input",
    "wg_seeds",
    "write_seeds",
]

# --- Control protocol ----------------------------------------------------------------


class FakeApi:
    """ControlApi's methods, answering from memory; errors echo their input
    (as the real ones do: ``modload: x: No such file or directory``)."""

    async def ping(self, peer: Lwp) -> None:
        return None

    async def modload(
        self, peer: Lwp, module: str, props: dict[str, Any] | None, isolated: bool | None = None
    ) -> None:
        from devfsd.kern.props import check_props

        check_props(props)
        if module != "crandom":
            raise DeviceError(errno.ENOENT, f"{module}: module not found")

    async def modunload(self, peer: Lwp, module: str) -> None:
        raise DeviceError(errno.ENOENT, f"{module}: not loaded")

    async def modstat(self, peer: Lwp, module: str | None) -> dict[str, Any]:
        rows = [] if module not in (None, "crandom") else [{"name": "crandom", "refs": 0}]
        return {"modules": rows, "autoload": True, "names": 7}

    async def drivers(self, peer: Lwp) -> list[list[Any]]:
        return [["crandom", 420, True]]

    async def ioctl(self, peer: Lwp, path: str, cmd: int, data: str) -> str:
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            raise DeviceError(errno.EINVAL, "data is not base64") from None
        if not path.startswith("/dev/"):
            raise DeviceError(errno.EXDEV, f"{path} is not on /dev")
        return base64.b64encode(raw[: cmd & 0x1FFF]).decode()

    async def status(self, peer: Lwp) -> dict[str, Any]:
        return {"pid": 1, "sleepers": 0}


_PEER: Final = Lwp(1, 0, 0)
_server: ControlServer | None = None


def _control_server() -> ControlServer:
    global _server
    if _server is None:
        api: ControlApi = FakeApi()  # type: ignore[assignment]
        _server = ControlServer(api, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    return _server


def _run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a coroutine that never awaits (the fake api does not) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: dict[str, Any] = stop.value
        return result
    coro.close()
    raise AssertionError("handle() awaited something")


def _check_reply(data: bytes) -> None:
    f = Framer()
    f.feed(data)
    msg = f.next_message()
    assert msg is not None and f.pending == 0, data
    if msg.get("ok") is True:
        return
    assert msg.get("ok") is False and isinstance(msg.get("error"), str), msg
    try:
        decode_reply(msg)
    except ControlError as exc:
        err = exc.errno
        assert err == msg["errno"] > 0, msg
    else:
        raise AssertionError(f"an error reply decoded as a result: {msg}")


#: The fuzzed framer's pool: small, so that inputs reach its limit.
_POOL_FREE: Final = 64
_POOL_LIMIT: Final = 512


def control_one_input(data: bytes) -> None:
    server = _control_server()
    chunk = data[0] % 17 + 1 if data else 1
    pool = BufferPool(_POOL_LIMIT, free=_POOL_FREE)
    framer = Framer(pool)
    try:
        for i in range(1, len(data), chunk):
            try:
                framer.feed(data[i : i + chunk])
            except FramingError as exc:  # the pool is spent: the server closes
                if exc.errno != errno.ENOBUFS:
                    raise AssertionError(f"feed raised {exc!r}") from None
                _check_reply(encode_reply(error_reply(exc.errno, str(exc))))
                return
            while True:
                try:
                    msg = framer.next_message()
                except ProtocolError as exc:
                    _check_reply(encode_reply(error_reply(exc.errno, str(exc))))
                    if isinstance(exc, FramingError):
                        return  # framing lost: the server closes
                    continue  # the message was consumed: the server reads on
                if msg is None:
                    break
                _check_reply(encode_reply(_run(server.handle(msg, _PEER))))
            assert 0 <= pool.used <= pool.limit, pool.used
            assert framer.pending <= pool.free + pool.used, (framer.pending, pool.used)
    finally:
        framer.close()
        assert pool.used == 0, pool.used


def control_seeds() -> list[bytes]:
    reqs: list[dict[str, Any]] = [
        {"op": "ping"},
        {"op": "modload", "module": "crandom", "props": {"maxlen": 16, "oneshot": True, "s": "x"}},
        {"op": "modunload", "module": "crandom"},
        {"op": "modstat", "module": None},
        {"op": "modstat", "module": "crandom"},
        {"op": "drivers"},
        {"op": "ioctl", "path": "/dev/q", "cmd": 0x40046D01, "data": "AAAAAA=="},
        {"op": "status"},
    ]
    deep = [_raw(b"[" * 100_000), _raw(b'{"op": "ping", "x": ' + b"[" * 40 + b"]" * 40 + b"}")]
    return (
        [b"\x10" + encode(r) for r in reqs]
        + [b"\x00" + b"".join(encode(r) for r in reqs)]
        + [b"\x10" + d for d in deep]
    )


def _raw(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


# --- WireGuard receive path ---------------------------------------------------------

_WALL0: Final = 1_700_000_000 * 1_000_000_000
_HOST: Final = "127.0.0.1"
_PORT_A: Final = 51820
_PORT_B: Final = 51821


def _uapi(text: str) -> SetRequest:
    reader = UapiReader()
    reader.receive_data(b"set=1\n" + text.encode() + b"\n")
    req = reader.next_request()
    assert isinstance(req, SetRequest)
    return req


def _ipv4(src: str, dst: str) -> bytes:
    import struct

    total = 20 + 8 + 32
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 1, 0, socket.inet_aton(src), socket.inet_aton(dst)
    )
    return hdr + b"\x08\x00\x00\x00\x00\x01\x00\x01" + bytes(32)


class _Pair:
    """Device A (the one fuzzed) and its peer B, after a handshake."""

    def __init__(self) -> None:
        a_sk = generate_private_key(random.Random(1).randbytes)
        b_sk = generate_private_key(random.Random(2).randbytes)
        self.a = Device(rng=random.Random(100).randbytes, bind=lambda p: p or _PORT_A)
        self.b = Device(rng=random.Random(200).randbytes, bind=lambda p: p or _PORT_B)
        self.now = 0.0
        self.to_a: list[bytes] = []  # every datagram B sent A
        for dev, sk, port, pk, peer_port, ips in (
            (self.a, a_sk, _PORT_A, public_key(b_sk), _PORT_B, "10.0.0.2/32"),
            (self.b, b_sk, _PORT_B, public_key(a_sk), _PORT_A, "10.0.0.1/32"),
        ):
            text = (
                f"private_key={sk.hex()}\nlisten_port={port}\nreplace_peers=true\n"
                f"public_key={pk.hex()}\nendpoint={_HOST}:{peer_port}\nallowed_ip={ips}\n"
            )
            dev.uapi_set(_uapi(text), now=self.now, wall_ns=_WALL0)
        for dev in (self.a, self.b):
            self._carry(dev, dev.up(now=self.now))
        # B starts a handshake by sending to A, then data both ways.
        self._carry(
            self.b, self.b.packet_from_tun(_ipv4("10.0.0.2", "10.0.0.1"), now=self.now, wall_ns=_WALL0)
        )
        self._carry(
            self.a, self.a.packet_from_tun(_ipv4("10.0.0.1", "10.0.0.2"), now=self.now, wall_ns=_WALL0)
        )
        self._carry(
            self.b, self.b.packet_from_tun(_ipv4("10.0.0.2", "10.0.0.1"), now=self.now, wall_ns=_WALL0)
        )
        # Data A has not seen yet (fresh counters): each decrypts and is
        # delivered on a copy of A, so mutants start inside the session.
        for _ in range(2):
            for e in self.b.packet_from_tun(_ipv4("10.0.0.2", "10.0.0.1"), now=self.now, wall_ns=_WALL0):
                if isinstance(e, SendDatagram):
                    self.to_a.append(e.data)

    def _carry(self, src: Device, effects: list[Any]) -> None:
        queue = deque((src, e) for e in effects)
        while queue:
            dev, e = queue.popleft()
            if not isinstance(e, SendDatagram):
                continue
            dst, from_port = (self.a, _PORT_B) if dev is self.b else (self.b, _PORT_A)
            if dst is self.a:
                self.to_a.append(e.data)
            out = dst.datagram_received(
                e.data, Endpoint(host=_HOST, port=from_port), now=self.now, wall_ns=_WALL0
            )
            queue.extend((dst, x) for x in out)


_pair: _Pair | None = None
#: Fuzz a copy of A taken after the handshake, afresh for every input, so
#: that one input's effect (a replayed counter, a new session) does not
#: change what the next one meets: a crash reproduces from its input alone.
FRESH_DEVICE = os.environ.get("WG_FUZZ_STATEFUL") != "1"


def _pair_now() -> _Pair:
    global _pair
    if _pair is None:
        _pair = _Pair()
    return _pair


_EFFECTS: Final = (SendDatagram, DeliverPacket, KeyLog)


def wg_one_input(data: bytes) -> None:
    pair = _pair_now()
    dev = copy.deepcopy(pair.a) if FRESH_DEVICE else pair.a
    src = Endpoint(host=_HOST, port=_PORT_B)
    effects = dev.datagram_received(data, src, now=pair.now + 1.0, wall_ns=_WALL0 + 10**9)
    assert isinstance(effects, list)
    for e in effects:
        assert isinstance(e, _EFFECTS), e


def wg_seeds() -> list[bytes]:
    return list(_pair_now().to_a)


def write_seeds(kind: str, directory: str) -> int:
    """Write the seed inputs of target ``kind`` (``control``/``wg``/``state``) as files."""
    seeds = {"control": control_seeds, "wg": wg_seeds, "state": state_seeds}[kind]()
    os.makedirs(directory, exist_ok=True)
    for i, s in enumerate(seeds):
        with open(os.path.join(directory, f"seed-{i:03d}"), "wb") as f:
            f.write(s)
    return len(seeds)
