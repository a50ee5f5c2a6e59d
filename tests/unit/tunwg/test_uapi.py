"""UAPI: request framing, every set key and error, the get reply, and what ``wg`` sends.

The fake device records each call ``apply_set`` makes, keeps its peers'
allowed IPs in a real ``AllowedIPs`` and renders a ``DeviceSnapshot``, so a
``wg`` transcript can be applied and read back. ``wg_get_status`` and
``wg_set_status`` re-implement how wireguard-tools' ``ipc-uapi.h`` reads a
reply, to check that ``wg`` accepts ours.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modules.tunwg.wg.allowedips import AllowedIPs, Prefix
from modules.tunwg.wg.uapi import (
    CLOSED,
    MAX_LINE,
    NEED_DATA,
    DeviceSnapshot,
    Endpoint,
    GetRequest,
    PeerSnapshot,
    ReaderState,
    SetRequest,
    UapiError,
    UapiReader,
    apply_set,
    format_errno,
    format_get,
    parse_endpoint,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

ZERO = bytes(32)
OWN_PRIV = bytes.fromhex("e8" + "11" * 30 + "5f")  # clamped already
OWN = bytes.fromhex("ee" * 32)  # the fake device's public key
PUB_A = bytes.fromhex("aa" * 32)
PUB_B = bytes.fromhex("bb" * 32)
PUB_C = bytes.fromhex("cc" * 32)
PSK = bytes.fromhex("5c" * 32)
NAMES = {OWN: "OWN", PUB_A: "A", PUB_B: "B", PUB_C: "C"}


# --- A recording fake of the Device layer -------------------------------------


class FakePeer:
    def __init__(self, device: FakeDevice, public_key: bytes) -> None:
        self.device = device
        self.public_key = public_key
        self.name = NAMES.get(public_key, public_key.hex()[:8])
        self.preshared_key = ZERO
        self.endpoint: Endpoint | None = None
        self.keepalive = 0
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.last_handshake_ns = 0

    def _log(self, what: str) -> None:
        self.device.calls.append(f"{self.name}: {what}")

    def remove(self) -> None:
        self._log("remove")
        del self.device.peers[self.public_key]
        self.device.allowed.remove_by_peer(self.public_key)

    def set_preshared_key(self, key: bytes) -> None:
        self._log(f"set_preshared_key {key.hex()[:4]}")
        self.preshared_key = key

    def set_endpoint(self, endpoint: Endpoint) -> None:
        self._log(f"set_endpoint {endpoint}")
        self.endpoint = endpoint

    def set_persistent_keepalive_interval(self, interval: int) -> int:
        self._log(f"set_persistent_keepalive_interval {interval}")
        old, self.keepalive = self.keepalive, interval
        return old

    def replace_allowed_ips(self) -> None:
        self._log("replace_allowed_ips")
        self.device.allowed.remove_by_peer(self.public_key)

    def add_allowed_ip(self, prefix: Prefix) -> None:
        self._log(f"add_allowed_ip {prefix}")
        self.device.allowed.insert(prefix, self.public_key)

    def remove_allowed_ip(self, prefix: Prefix) -> None:
        self._log(f"remove_allowed_ip {prefix}")
        self.device.allowed.remove(prefix, self.public_key)

    def post_config(self, *, keepalive_turned_on: bool) -> None:
        self._log(f"post_config keepalive={keepalive_turned_on}")


class FakeDevice:
    def __init__(self, *, busy_ports: Iterable[int] = (), max_peers: int = 100) -> None:
        self.calls: list[str] = []
        self.peers: dict[bytes, FakePeer] = {}
        self.allowed: AllowedIPs[bytes] = AllowedIPs()
        self.private_key = ZERO
        self.listen_port = 0
        self.fwmark = 0
        self.busy_ports = set(busy_ports)
        self.max_peers = max_peers

    def set_private_key(self, key: bytes) -> None:
        self.calls.append(f"set_private_key {key.hex()}")
        self.private_key = key

    def set_listen_port(self, port: int) -> None:
        self.calls.append(f"set_listen_port {port}")
        if port in self.busy_ports:
            raise UapiError(errno.EADDRINUSE)
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.calls.append(f"set_fwmark {mark}")
        self.fwmark = mark

    def replace_peers(self) -> None:
        self.calls.append("replace_peers")
        for key in list(self.peers):
            self.allowed.remove_by_peer(key)
        self.peers.clear()

    def is_own_public_key(self, public_key: bytes) -> bool:
        return public_key == OWN

    def lookup_peer(self, public_key: bytes) -> FakePeer | None:
        return self.peers.get(public_key)

    def create_peer(self, public_key: bytes) -> FakePeer:
        if len(self.peers) >= self.max_peers:
            raise UapiError(errno.EINVAL, "too many peers")
        peer = self.peers[public_key] = FakePeer(self, public_key)
        self.calls.append(f"{peer.name}: create")
        return peer

    def snapshot(self) -> DeviceSnapshot:
        return DeviceSnapshot(
            private_key=self.private_key,
            listen_port=self.listen_port,
            fwmark=self.fwmark,
            peers=tuple(
                PeerSnapshot(
                    public_key=peer.public_key,
                    preshared_key=peer.preshared_key,
                    endpoint=peer.endpoint,
                    last_handshake_time_ns=peer.last_handshake_ns,
                    tx_bytes=peer.tx_bytes,
                    rx_bytes=peer.rx_bytes,
                    persistent_keepalive_interval=peer.keepalive,
                    allowed_ips=tuple(self.allowed.entries_for(peer.public_key)),
                )
                for peer in self.peers.values()
            ),
        )


Event = GetRequest | SetRequest | ReaderState | tuple[str, int]


def events(reader: UapiReader) -> list[Event]:
    """Every event up to NEED_DATA or CLOSED; a raised UapiError shows as ("error", errno)."""
    out: list[Event] = []
    while True:
        try:
            ev = reader.next_request()
        except UapiError as exc:
            out.append(("error", exc.errno))
            continue
        out.append(ev)
        if isinstance(ev, ReaderState):
            return out


def feed(data: bytes, *, eof: bool = True, chunk: int = 0) -> list[Event]:
    """Feed ``data`` (whole, or ``chunk`` bytes at a time), then EOF; collect events."""
    reader = UapiReader()
    out: list[Event] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        reader.receive_data(piece)
        out += [e for e in events(reader) if e is not NEED_DATA]
        if out and out[-1] is CLOSED:
            return out
    if eof:
        reader.receive_data(b"")
    out += events(reader)
    return out


def run_set(body: str, device: FakeDevice | None = None) -> FakeDevice:
    """Parse ``set=1\\n`` + body + blank line and apply it; UapiError propagates."""
    device = device if device is not None else FakeDevice()
    reader = UapiReader()
    reader.receive_data(f"set=1\n{body}\n".encode())
    request = reader.next_request()
    assert isinstance(request, SetRequest), request
    apply_set(request, device)
    return device


def H(key: bytes) -> str:
    return key.hex()


# --- Framing -------------------------------------------------------------------


def test_get_request() -> None:
    assert feed(b"get=1\n\n") == [GetRequest(), CLOSED]


def test_set_request_lines() -> None:
    assert feed(b"set=1\nlisten_port=1\npublic_key=ab\nallowed_ip=a=b\n\n") == [
        SetRequest(lines=(("listen_port", "1"), ("public_key", "ab"), ("allowed_ip", "a=b"))),
        CLOSED,
    ]


def test_need_data_until_request_is_complete() -> None:
    reader = UapiReader()
    for part in (b"se", b"t=1\nlisten", b"_port=1\n"):
        reader.receive_data(part)
        assert reader.next_request() is NEED_DATA
    reader.receive_data(b"\n")
    assert reader.next_request() == SetRequest(lines=(("listen_port", "1"),))
    assert reader.next_request() is NEED_DATA


STREAM = (
    b"get=1\n\n"
    b"set=1\r\nignored\n"  # an odd op line ends it all ...
)
MANY = (
    b"get=1\n\n"
    b"set=1\nprivate_key=" + ZERO.hex().encode() + b"\r\nlisten_port=9\n\r\n"
    b"get=1\nx"
    b"set=1\nfwmark=1\nbroken line\nreplace_peers=true\n\n"
    b"get=1\n\n"
    b"set=1\nfwmark=2"
)
MANY_EVENTS: list[Event] = [
    GetRequest(),
    SetRequest(lines=(("private_key", ZERO.hex()), ("listen_port", "9"))),
    ("error", errno.EINVAL),
    SetRequest(lines=(("fwmark", "1"),), errno=errno.EPROTO),
    GetRequest(),
    SetRequest(lines=(("fwmark", "2"),)),
    CLOSED,
]


def test_several_requests_per_connection() -> None:
    assert feed(MANY) == MANY_EVENTS


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_byte_by_byte_gives_the_same_requests(chunk: int) -> None:
    assert feed(MANY, chunk=chunk) == MANY_EVENTS


@pytest.mark.parametrize(
    "data",
    [
        b"GET=1\n\n",
        b"get=1\r\n\n",
        b"set=1\r\n\n",
        b"get=2\n\n",
        b"\n",
        b"hello\n",
        b"get=1 \n\n",
        b"get=1",  # EOF inside the op line
        b"",
        b"get=1\n",  # EOF where the blank line should be
    ],
)
def test_other_first_line_or_eof_closes_silently(data: bytes) -> None:
    assert feed(data) == [CLOSED]


def test_closed_stays_closed() -> None:
    reader = UapiReader()
    reader.receive_data(b"nope\n")
    assert reader.next_request() is CLOSED
    reader.receive_data(b"get=1\n\n")
    assert reader.next_request() is CLOSED


def test_garbage_closes_before_its_newline() -> None:
    # wireguard-go waits for the '\n'; refusing early keeps the buffer bounded.
    assert feed(b"getx", eof=False) == [CLOSED]
    assert feed(b"x" * 100_000, eof=False) == [CLOSED]


def test_get_followed_by_another_byte_is_einval_and_reading_goes_on() -> None:
    assert feed(b"get=1\nxget=1\n\n") == [("error", errno.EINVAL), GetRequest(), CLOSED]


def test_set_body_drops_one_trailing_cr_and_crlf_ends_it() -> None:
    assert feed(b"set=1\nfwmark=1\r\nlisten_port=2\r\r\n\r\nget=1\n\n") == [
        SetRequest(lines=(("fwmark", "1"), ("listen_port", "2\r"))),
        GetRequest(),
        CLOSED,
    ]


def test_eof_ends_a_set_body_and_its_last_line_counts() -> None:
    assert feed(b"set=1\nfwmark=1\nlisten_port=2") == [
        SetRequest(lines=(("fwmark", "1"), ("listen_port", "2"))),
        CLOSED,
    ]
    assert feed(b"set=1\n") == [SetRequest(lines=()), CLOSED]


def test_line_without_equals_is_eproto_after_the_lines_before() -> None:
    assert feed(b"set=1\nfwmark=1\nbogus\nlisten_port=1\n\nget=1\n\n") == [
        SetRequest(lines=(("fwmark", "1"),), errno=errno.EPROTO),
        GetRequest(),  # the rest of the failed body is skipped
        CLOSED,
    ]
    assert feed(b"set=1\nfwmark=1\nbogus") == [
        SetRequest(lines=(("fwmark", "1"),), errno=errno.EPROTO),
        CLOSED,
    ]


def test_longest_line_is_accepted() -> None:
    line = b"k=" + b"v" * (MAX_LINE - 2)
    assert feed(b"set=1\n" + line + b"\n\n") == [SetRequest(lines=(("k", "v" * (MAX_LINE - 2)),)), CLOSED]


@pytest.mark.parametrize("newline", [True, False])
def test_longer_line_is_eio_and_closes(newline: bool) -> None:
    line = b"k=" + b"v" * (MAX_LINE - 1)
    data = b"set=1\nfwmark=1\n" + line + (b"\n\nget=1\n\n" if newline else b"")
    assert feed(data, eof=False) == [SetRequest(lines=(("fwmark", "1"),), errno=errno.EIO), CLOSED]


def test_non_utf8_bytes_survive_as_surrogates() -> None:
    [request, _] = feed(b"set=1\nk\xff=v\xfe\n\n")
    assert isinstance(request, SetRequest)
    assert request.lines[0][0].encode("utf-8", "surrogateescape") == b"k\xff"
    with pytest.raises(UapiError) as info:
        apply_set(request, FakeDevice())
    assert info.value.errno == errno.EINVAL


# A near-valid vocabulary, so hypothesis reaches every reader state.
TOKENS = st.sampled_from(
    [b"get=1\n", b"set=1\n", b"\n", b"\r\n", b"\r", b"=", b"x", b"public_key=", b"listen_port=1\n",
     b"allowed_ip=-10.0.0.0/8\n", b"endpoint=[::1]:1\n", H(PUB_A).encode() + b"\n", b"\xff", b"true"]
)  # fmt: skip


@given(st.one_of(st.binary(max_size=300), st.lists(TOKENS, max_size=40).map(b"".join)), st.integers(0, 9))
def test_any_bytes_give_requests_or_uapierror(data: bytes, chunk: int) -> None:
    whole = feed(data)
    assert whole[-1] is CLOSED
    assert feed(data, chunk=chunk) == whole
    failures = []
    for ev in whole:
        if isinstance(ev, SetRequest):
            try:
                apply_set(ev, FakeDevice())
            except UapiError as exc:
                failures.append(exc.errno)
    assert set(failures) <= {errno.EINVAL, errno.EPROTO, errno.EIO}


# --- Set: every key --------------------------------------------------------------


def test_private_key_is_clamped() -> None:
    device = run_set(f"private_key={'FF' * 32}\n")
    assert device.calls == ["set_private_key f8" + "ff" * 30 + "7f"]


def test_zero_private_key_stays_zero() -> None:
    assert run_set(f"private_key={H(ZERO)}\n").calls == [f"set_private_key {H(ZERO)}"]


@pytest.mark.parametrize(("value", "port"), [("0", 0), ("51820", 51820), ("65535", 65535), ("0080", 80)])
def test_listen_port(value: str, port: int) -> None:
    assert run_set(f"listen_port={value}\n").calls == [f"set_listen_port {port}"]


@pytest.mark.parametrize(("value", "mark"), [("0", 0), ("4294967295", 4294967295)])
def test_fwmark(value: str, mark: int) -> None:
    assert run_set(f"fwmark={value}\n").calls == [f"set_fwmark {mark}"]


def test_replace_peers() -> None:
    device = run_set(f"public_key={H(PUB_A)}\nallowed_ip=10.0.0.0/8\n")
    device.calls.clear()
    run_set("replace_peers=true\n", device)
    assert device.calls == ["replace_peers"]
    assert device.peers == {}
    assert device.allowed.lookup(bytes([10, 0, 0, 1])) is None


def test_public_key_creates_a_new_peer_and_finds_an_old_one() -> None:
    device = run_set(f"public_key={H(PUB_A).upper()}\n")
    assert device.calls == ["A: create", "A: post_config keepalive=False"]
    device.calls.clear()
    run_set(f"public_key={H(PUB_A)}\n", device)
    assert device.calls == ["A: post_config keepalive=False"]


def test_update_only_does_not_create() -> None:
    device = run_set(f"public_key={H(PUB_A)}\nupdate_only=true\nendpoint=192.0.2.1:1\n")
    assert device.calls == ["A: create", "A: remove"]  # as wireguard-go: created, then removed
    assert device.peers == {}


def test_update_only_updates_an_existing_peer() -> None:
    device = run_set(f"public_key={H(PUB_A)}\n")
    device.calls.clear()
    run_set(f"public_key={H(PUB_A)}\nupdate_only=true\nendpoint=192.0.2.1:1\n", device)
    assert device.calls == ["A: set_endpoint 192.0.2.1:1", "A: post_config keepalive=False"]


def test_remove_ignores_the_rest_of_the_section() -> None:
    device = run_set(f"public_key={H(PUB_A)}\n")
    device.calls.clear()
    run_set(f"public_key={H(PUB_A)}\nremove=true\nendpoint=192.0.2.1:1\npublic_key={H(PUB_B)}\n", device)
    assert device.calls == ["A: remove", "B: create", "B: post_config keepalive=False"]


def test_remove_of_a_new_peer_creates_then_removes() -> None:
    device = run_set(f"public_key={H(PUB_A)}\nremove=true\n")
    assert device.calls == ["A: create", "A: remove"]


def test_own_public_key_section_is_checked_but_ignored() -> None:
    body = (
        f"public_key={H(OWN)}\nendpoint=192.0.2.1:1\nallowed_ip=10.0.0.0/8\nremove=true\nupdate_only=true\n"
    )
    assert run_set(body).calls == []
    with pytest.raises(UapiError) as info:
        run_set(f"public_key={H(OWN)}\nendpoint=nonsense\n")
    assert info.value.errno == errno.EINVAL


def test_preshared_key() -> None:
    device = run_set(f"public_key={H(PUB_A)}\npreshared_key={H(PSK)}\npreshared_key={H(ZERO)}\n")
    assert device.calls[1:3] == ["A: set_preshared_key 5c5c", "A: set_preshared_key 0000"]


@pytest.mark.parametrize(
    ("value", "host", "port", "shown"),
    [
        ("192.0.2.1:51820", "192.0.2.1", 51820, "192.0.2.1:51820"),
        ("192.0.2.1:0", "192.0.2.1", 0, "192.0.2.1:0"),
        ("192.0.2.1:00080", "192.0.2.1", 80, "192.0.2.1:80"),
        ("[2001:DB8:0::1]:65535", "2001:db8::1", 65535, "[2001:db8::1]:65535"),
        ("[::ffff:192.0.2.1]:1", "::ffff:192.0.2.1", 1, "[::ffff:192.0.2.1]:1"),
        ("[fe80::1%eth0]:1", "fe80::1%eth0", 1, "[fe80::1%eth0]:1"),
    ],
)
def test_endpoint(value: str, host: str, port: int, shown: str) -> None:
    endpoint = parse_endpoint(value)
    assert endpoint == Endpoint(host=host, port=port)
    assert str(endpoint) == shown
    assert run_set(f"public_key={H(PUB_A)}\nendpoint={value}\n").calls[1] == f"A: set_endpoint {shown}"


@pytest.mark.parametrize(
    ("old", "new", "turned_on"), [(0, 25, True), (25, 30, False), (25, 0, False), (0, 0, False)]
)
def test_persistent_keepalive_interval(old: int, new: int, turned_on: bool) -> None:
    device = run_set(f"public_key={H(PUB_A)}\npersistent_keepalive_interval={old}\n")
    device.calls.clear()
    run_set(f"public_key={H(PUB_A)}\npersistent_keepalive_interval={new}\n", device)
    assert device.calls == [
        f"A: set_persistent_keepalive_interval {new}",
        f"A: post_config keepalive={turned_on}",
    ]


def test_keepalive_flag_is_per_peer_section() -> None:
    body = f"public_key={H(PUB_A)}\npersistent_keepalive_interval=25\npublic_key={H(PUB_B)}\n"
    assert run_set(body).calls[-1] == "B: post_config keepalive=False"


def test_allowed_ips_add_replace_remove() -> None:
    device = run_set(
        f"public_key={H(PUB_A)}\nallowed_ip=10.0.0.0/8\nallowed_ip=fd00::7/64\nallowed_ip=192.0.2.1/32\n"
        "allowed_ip=-192.0.2.1/32\nallowed_ip=-10.0.0.0/9\n"
    )
    assert device.calls[1:-1] == [
        "A: add_allowed_ip 10.0.0.0/8",
        "A: add_allowed_ip fd00::/64",
        "A: add_allowed_ip 192.0.2.1/32",
        "A: remove_allowed_ip 192.0.2.1/32",
        "A: remove_allowed_ip 10.0.0.0/9",
    ]
    assert [str(x) for x in device.allowed.entries_for(PUB_A)] == ["10.0.0.0/8", "fd00::/64"]
    run_set(f"public_key={H(PUB_A)}\nreplace_allowed_ips=true\nallowed_ip=10.1.0.0/16\n", device)
    assert [str(x) for x in device.allowed.entries_for(PUB_A)] == ["10.1.0.0/16"]


def test_protocol_version_1() -> None:
    assert run_set(f"public_key={H(PUB_A)}\nprotocol_version=1\n").calls == [
        "A: create",
        "A: post_config keepalive=False",
    ]


# --- Set: every error ----------------------------------------------------------------

BAD_DEVICE_LINES = [
    f"private_key={'0' * 63}",
    f"private_key={'0' * 66}",
    f"private_key={'zz' * 32}",
    f"private_key= {'0' * 63}",
    "private_key=",
    "listen_port=65536",
    "listen_port=-1",
    "listen_port=+1",
    "listen_port=",
    "listen_port= 1",
    "listen_port=1.0",
    "listen_port=0x10",
    "listen_port=\u0661",  # ARABIC-INDIC DIGIT ONE: str.isdigit() says yes, Go says no
    "listen_port=" + "9" * 5000,
    "fwmark=4294967296",
    "fwmark=-1",
    "fwmark=off",
    "replace_peers=false",
    "replace_peers=TRUE",
    "replace_peers=",
    "public_key=" + "0" * 63,
    "public_key=xyz",
    f"preshared_key={H(PSK)}",  # a peer key before any public_key
    "protocol_version=1",
    "endpoint=192.0.2.1:1",
    "bogus=1",
    "=1",
]


@pytest.mark.parametrize("line", BAD_DEVICE_LINES)
def test_bad_device_line_is_einval(line: str) -> None:
    with pytest.raises(UapiError) as info:
        run_set(line + "\n")
    assert info.value.errno == errno.EINVAL


BAD_PEER_LINES = [
    "update_only=false",
    "remove=1",
    "remove=",
    f"preshared_key={H(PSK)[:-1]}",
    "endpoint=host.example:51820",
    "endpoint=2001:db8::1:51820",  # IPv6 without brackets
    "endpoint=[192.0.2.1]:1",  # IPv4 in brackets
    "endpoint=192.0.2.1",
    "endpoint=192.0.2.1:",
    "endpoint=192.0.2.1:65536",
    "endpoint=192.0.2.1:+1",
    "endpoint=:51820",
    "endpoint=[::1]",
    "endpoint=[::1:1",
    "endpoint=[]:1",
    "endpoint=[fe80::1%]:1",
    "endpoint=192.0.2.1%eth0:1",
    "persistent_keepalive_interval=65536",
    "persistent_keepalive_interval=-1",
    "persistent_keepalive_interval=off",
    "replace_allowed_ips=false",
    "allowed_ip=10.0.0.0",
    "allowed_ip=10.0.0.0/33",
    "allowed_ip=--10.0.0.0/8",
    "allowed_ip=+10.0.0.0/8",
    "allowed_ip=-",
    "allowed_ip=",
    "protocol_version=2",
    "protocol_version=01",
    "listen_port=1",  # a device key in a peer section
    "private_key=" + "00" * 32,
    "bogus=1",
]


@pytest.mark.parametrize("line", BAD_PEER_LINES)
def test_bad_peer_line_is_einval(line: str) -> None:
    with pytest.raises(UapiError) as info:
        run_set(f"public_key={H(PUB_A)}\n{line}\n")
    assert info.value.errno == errno.EINVAL


def test_eaddrinuse_from_the_listen_port_setter_propagates() -> None:
    device = FakeDevice(busy_ports=[51820])
    with pytest.raises(UapiError) as info:
        run_set("fwmark=1\nlisten_port=51820\nreplace_peers=true\n", device)
    assert info.value.errno == errno.EADDRINUSE
    assert device.calls == ["set_fwmark 1", "set_listen_port 51820"]


def test_full_peer_table_is_einval() -> None:
    device = FakeDevice(max_peers=1)
    with pytest.raises(UapiError) as info:
        run_set(f"public_key={H(PUB_A)}\npublic_key={H(PUB_B)}\n", device)
    assert info.value.errno == errno.EINVAL
    assert device.calls == ["A: create", "A: post_config keepalive=False"]


def test_lines_apply_as_read_and_an_error_stops_without_rollback() -> None:
    device = FakeDevice()
    body = (
        f"listen_port=1\npublic_key={H(PUB_A)}\nallowed_ip=10.0.0.0/8\nendpoint=bad\nallowed_ip=10.1.0.0/16\n"
    )
    with pytest.raises(UapiError) as info:
        run_set(body, device)
    assert info.value.errno == errno.EINVAL
    # No rollback, and no post_config for the section the error cut short.
    assert device.calls == ["set_listen_port 1", "A: create", "A: add_allowed_ip 10.0.0.0/8"]


def test_eproto_request_applies_its_lines_then_fails_without_post_config() -> None:
    device = FakeDevice()
    request = SetRequest(lines=(("public_key", H(PUB_A)), ("allowed_ip", "10.0.0.0/8")), errno=errno.EPROTO)
    with pytest.raises(UapiError) as info:
        apply_set(request, device)
    assert info.value.errno == errno.EPROTO
    assert device.calls == ["A: create", "A: add_allowed_ip 10.0.0.0/8"]


def test_eio_request_runs_post_config_then_fails() -> None:
    device = FakeDevice()
    with pytest.raises(UapiError) as info:
        apply_set(SetRequest(lines=(("public_key", H(PUB_A)),), errno=errno.EIO), device)
    assert info.value.errno == errno.EIO
    assert device.calls == ["A: create", "A: post_config keepalive=False"]


# --- Get -----------------------------------------------------------------------------

SAMPLE_GET = (
    f"private_key={H(OWN_PRIV)}\n"
    "listen_port=51820\n"
    "fwmark=3\n"
    f"public_key={H(PUB_A)}\n"
    f"preshared_key={H(PSK)}\n"
    "protocol_version=1\n"
    "endpoint=192.0.2.1:51821\n"
    "last_handshake_time_sec=1700000000\n"
    "last_handshake_time_nsec=123456789\n"
    "tx_bytes=220\n"
    "rx_bytes=308\n"
    "persistent_keepalive_interval=25\n"
    "allowed_ip=10.0.0.2/32\n"
    "allowed_ip=fd00::/64\n"
    f"public_key={H(PUB_B)}\n"
    f"preshared_key={H(ZERO)}\n"
    "protocol_version=1\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=0\n"
    "errno=0\n"
    "\n"
)


def sample_device() -> FakeDevice:
    device = run_set(
        f"private_key={H(OWN_PRIV)}\nlisten_port=51820\nfwmark=3\n"
        f"public_key={H(PUB_A)}\npreshared_key={H(PSK)}\nendpoint=192.0.2.1:51821\n"
        "persistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\nallowed_ip=fd00::1/64\n"
        f"public_key={H(PUB_B)}\n"
    )
    peer = device.peers[PUB_A]
    peer.last_handshake_ns, peer.tx_bytes, peer.rx_bytes = 1_700_000_000_123_456_789, 220, 308
    return device


def test_get_reply_exact_text() -> None:
    assert format_get(sample_device().snapshot()).decode() == SAMPLE_GET


def test_get_reply_of_an_empty_device() -> None:
    assert format_get(DeviceSnapshot(private_key=ZERO)) == b"errno=0\n\n"


def test_get_reply_ipv6_endpoint() -> None:
    peer = PeerSnapshot(public_key=PUB_A, preshared_key=ZERO, endpoint=parse_endpoint("[::1]:9998"))
    assert b"\nendpoint=[::1]:9998\n" in format_get(DeviceSnapshot(private_key=ZERO, peers=(peer,)))


@pytest.mark.parametrize(
    ("err", "text"),
    [(0, b"errno=0\n\n"), (errno.EINVAL, b"errno=-22\n\n"), (errno.EPROTO, b"errno=-71\n\n"),
     (errno.EADDRINUSE, b"errno=-98\n\n"), (errno.EIO, b"errno=-5\n\n"), (55, b"errno=-55\n\n")],
)  # fmt: skip
def test_format_errno_is_negated_as_wireguard_go(err: int, text: bytes) -> None:
    assert format_errno(err) == text


# --- How wg reads replies (wireguard-tools src/ipc-uapi.h) ----------------------------


def wg_set_status(reply: bytes) -> int:
    """``fscanf(f, "errno=%d\\n\\n", &ret); errno = -ret``: the errno ``wg set`` reports."""
    assert reply.startswith(b"errno=") and reply.endswith(b"\n\n")
    return -int(reply[6:-2])


NUM_LIMITS = {
    b"listen_port": 0xFFFF,
    b"fwmark": 0xFFFFFFFF,
    b"persistent_keepalive_interval": 0xFFFF,
    b"last_handshake_time_sec": 2**63 - 1,
    b"last_handshake_time_nsec": 2**63 - 1,
    b"rx_bytes": 2**64 - 1,
    b"tx_bytes": 2**64 - 1,
}


def wg_get_status(reply: bytes) -> int:
    """``userspace_get_device``'s parse loop: 0, or the negative errno it returns."""

    def num(value: bytes, limit: int) -> bool:  # the NUM() macro: leading digit, all digits, <= limit
        return value[:1].isdigit() and value.isdigit() and int(value) <= limit

    ret, peer = -errno.EPROTO, False
    for line in reply.splitlines(keepends=True):
        if line == b"\n":
            return ret
        if b"=" not in line or not line.endswith(b"\n"):
            break
        key, value = line[:-1].split(b"=", 1)
        if key in (b"private_key", b"public_key", b"preshared_key"):
            if key == b"private_key" and peer:
                continue
            peer = peer or key == b"public_key"
            if len(value) != 64 or not set(value) <= set(b"0123456789abcdef"):  # ours: lowercase only
                break
        elif key in NUM_LIMITS:
            if not num(value, NUM_LIMITS[key]):
                break
        elif key == b"allowed_ip":
            _ip, slash, cidr = value.partition(b"/")
            if not slash or not cidr[:1].isdigit():
                break
        elif key == b"errno":
            if not num(value, 0x7FFFFFFF):
                break
            ret = -int(value)
    return -errno.EPROTO


def test_wg_accepts_our_get_reply() -> None:
    assert wg_get_status(SAMPLE_GET.encode()) == 0


def test_wg_needs_an_unsigned_errno_in_a_get_reply() -> None:
    assert wg_get_status(b"errno=0\n\n") == 0
    assert wg_get_status(format_errno(errno.EINVAL)) == -errno.EPROTO  # "-22" fails NUM()


def test_wg_reports_our_set_errno() -> None:
    assert wg_set_status(format_errno(0)) == 0
    assert os.strerror(wg_set_status(format_errno(errno.EINVAL))) == "Invalid argument"
    assert os.strerror(wg_set_status(format_errno(errno.EADDRINUSE))) == "Address already in use"


# --- Transcripts: exactly what wg sends (ipc-uapi.h userspace_set_device) ----------------


def transact(device: FakeDevice, data: bytes) -> bytes:
    """One wg connection: its bytes in, our reply bytes out (the glue's loop)."""
    reader = UapiReader()
    reader.receive_data(data)
    reader.receive_data(b"")
    reply = b""
    while True:
        try:
            request = reader.next_request()
        except UapiError as exc:
            reply += format_errno(exc.errno)
            continue
        if isinstance(request, ReaderState):
            return reply
        if isinstance(request, GetRequest):
            reply += format_get(device.snapshot())
            continue
        try:
            apply_set(request, device)
        except UapiError as exc:
            reply += format_errno(exc.errno)
        else:
            reply += format_errno(0)


def test_wg_set_transcript() -> None:
    # wg set wg0 private-key k listen-port 51820 fwmark 0x10 peer A preshared-key p \
    #   endpoint 192.0.2.1:51820 persistent-keepalive 25 allowed-ips 10.0.0.0/24,fd00::/64
    device = FakeDevice()
    sent = (
        "set=1\n"
        f"private_key={H(OWN_PRIV)}\n"
        "listen_port=51820\n"
        "fwmark=16\n"
        f"public_key={H(PUB_A)}\n"
        f"preshared_key={H(PSK)}\n"
        "endpoint=192.0.2.1:51820\n"
        "persistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.0/24\n"
        "allowed_ip=fd00::/64\n"
        "\n"
    )
    assert transact(device, sent.encode()) == b"errno=0\n\n"
    assert device.calls == [
        f"set_private_key {H(OWN_PRIV)}",
        "set_listen_port 51820",
        "set_fwmark 16",
        "A: create",
        "A: set_preshared_key 5c5c",
        "A: set_endpoint 192.0.2.1:51820",
        "A: set_persistent_keepalive_interval 25",
        "A: replace_allowed_ips",
        "A: add_allowed_ip 10.0.0.0/24",
        "A: add_allowed_ip fd00::/64",
        "A: post_config keepalive=True",
    ]


def test_wg_set_incremental_allowed_ips_transcript() -> None:
    # wg set wg0 peer A allowed-ips +10.1.0.0/16,-10.0.0.0/24  (tools >= 1.0.20250521)
    device = run_set(f"public_key={H(PUB_A)}\nallowed_ip=10.0.0.0/24\n")
    device.calls.clear()
    sent = f"set=1\npublic_key={H(PUB_A)}\nallowed_ip=10.1.0.0/16\nallowed_ip=-10.0.0.0/24\n\n"
    assert transact(device, sent.encode()) == b"errno=0\n\n"
    assert [str(x) for x in device.allowed.entries_for(PUB_A)] == ["10.1.0.0/16"]


def test_wg_set_remove_transcript() -> None:
    # wg set wg0 peer A remove
    device = run_set(f"public_key={H(PUB_A)}\nallowed_ip=10.0.0.0/24\n")
    device.calls.clear()
    assert transact(device, f"set=1\npublic_key={H(PUB_A)}\nremove=true\n\n".encode()) == b"errno=0\n\n"
    assert device.calls == ["A: remove"]
    assert device.allowed.lookup(bytes([10, 0, 0, 1])) is None


def test_wg_set_failure_reply() -> None:
    device = FakeDevice(busy_ports=[51820])
    reply = transact(device, b"set=1\nlisten_port=51820\n\n")
    assert reply == b"errno=-98\n\n"
    assert wg_set_status(reply) == errno.EADDRINUSE


SETCONF = (
    "set=1\n"
    f"private_key={H(OWN_PRIV)}\n"
    "listen_port=51820\n"
    "fwmark=0\n"
    "replace_peers=true\n"
    f"public_key={H(PUB_A)}\n"
    "endpoint=192.0.2.1:51821\n"
    "replace_allowed_ips=true\n"
    "allowed_ip=10.0.0.2/32\n"
    f"public_key={H(PUB_C)}\n"
    "replace_allowed_ips=true\n"
    "allowed_ip=10.0.0.3/32\n"
    "\n"
)


def test_wg_setconf_transcript() -> None:
    # [Interface] PrivateKey, ListenPort = 51820; [Peer] A, Endpoint, AllowedIPs; [Peer] C, AllowedIPs
    device = sample_device()
    device.calls.clear()
    assert transact(device, SETCONF.encode()) == b"errno=0\n\n"
    assert device.calls == [
        f"set_private_key {H(OWN_PRIV)}",
        "set_listen_port 51820",
        "set_fwmark 0",
        "replace_peers",
        "A: create",
        "A: set_endpoint 192.0.2.1:51821",
        "A: replace_allowed_ips",
        "A: add_allowed_ip 10.0.0.2/32",
        "A: post_config keepalive=False",
        "C: create",
        "C: replace_allowed_ips",
        "C: add_allowed_ip 10.0.0.3/32",
        "C: post_config keepalive=False",
    ]
    assert sorted(NAMES[k] for k in device.peers) == ["A", "C"]


def test_wg_setconf_without_private_key_sends_zeros() -> None:
    device = FakeDevice()
    sent = f"set=1\nprivate_key={H(ZERO)}\nlisten_port=0\nfwmark=0\nreplace_peers=true\n\n"
    assert transact(device, sent.encode()) == b"errno=0\n\n"
    assert device.calls == [
        f"set_private_key {H(ZERO)}",
        "set_listen_port 0",
        "set_fwmark 0",
        "replace_peers",
    ]


def test_wg_addconf_transcript() -> None:
    # addconf: no replace_peers, no private_key/listen_port/fwmark unless in the file
    device = sample_device()
    device.calls.clear()
    sent = f"set=1\npublic_key={H(PUB_C)}\nreplace_allowed_ips=true\nallowed_ip=10.0.0.3/32\n\n"
    assert transact(device, sent.encode()) == b"errno=0\n\n"
    assert sorted(NAMES[k] for k in device.peers) == ["A", "B", "C"]


def test_wg_syncconf_transcript() -> None:
    # The running device has A (PSK, keepalive 25) and B; the file has A without
    # either, and C. wg gets, then sends B's removal first, explicit zeros for A.
    device = sample_device()
    assert wg_get_status(transact(device, b"get=1\n\n")) == 0
    device.calls.clear()
    sent = (
        "set=1\n"
        f"private_key={H(OWN_PRIV)}\n"
        "listen_port=51820\n"
        "fwmark=0\n"
        f"public_key={H(PUB_B)}\n"
        "remove=true\n"
        f"public_key={H(PUB_A)}\n"
        f"preshared_key={H(ZERO)}\n"
        "endpoint=192.0.2.1:51821\n"
        "persistent_keepalive_interval=0\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.2/32\n"
        f"public_key={H(PUB_C)}\n"
        "replace_allowed_ips=true\n"
        "allowed_ip=10.0.0.3/32\n"
        "\n"
    )
    assert transact(device, sent.encode()) == b"errno=0\n\n"
    assert device.calls == [
        f"set_private_key {H(OWN_PRIV)}",
        "set_listen_port 51820",
        "set_fwmark 0",
        "B: remove",
        "A: set_preshared_key 0000",
        "A: set_endpoint 192.0.2.1:51821",
        "A: set_persistent_keepalive_interval 0",
        "A: replace_allowed_ips",
        "A: add_allowed_ip 10.0.0.2/32",
        "A: post_config keepalive=False",
        "C: create",
        "C: replace_allowed_ips",
        "C: add_allowed_ip 10.0.0.3/32",
        "C: post_config keepalive=False",
    ]
    # A kept its session state: same object, counters untouched.
    assert device.peers[PUB_A].rx_bytes == 308
    reply = format_get(device.snapshot()).decode()
    assert f"public_key={H(PUB_B)}" not in reply
    assert wg_get_status(reply.encode()) == 0
