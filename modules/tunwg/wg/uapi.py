"""UAPI: the cross-platform configuration protocol ``wg`` speaks, sans-I/O.

Pure; imports ``enum``, ``errno``, ``ipaddress``, ``dataclasses``, ``typing``,
``devfsd.errors`` and this package. No socket: the glue feeds bytes in and
writes the bytes it gets back. After wireguard-go's ``device/uapi.go`` and
wireguard-tools' ``src/ipc-uapi.h`` (reference section 8).

Theory of operation
-------------------

*Three parts.* ``UapiReader`` cuts a connection's byte stream into requests,
as ``h11`` does for HTTP: ``receive_data(bytes)`` (``b""`` is end of file),
then ``next_request()`` until it says ``NEED_DATA`` or ``CLOSED``.
``apply_set`` runs a ``SetRequest`` against an abstract ``DeviceConfig``.
``format_get`` renders a ``DeviceSnapshot`` as wireguard-go's reply, and
``format_errno`` the status line that ends every reply. The glue::

    reader.receive_data(data)            # b"" on EOF
    while True:
        try:
            req = reader.next_request()
        except UapiError as e:           # EINVAL: "get=1\\n" not followed by "\\n"
            send(format_errno(e.errno)); continue
        if req is NEED_DATA: break       # read more
        if req is CLOSED: close(); break # silent, as wireguard-go
        if isinstance(req, GetRequest):
            send(format_get(device.snapshot()))
        else:
            try:
                apply_set(req, device_config)
            except UapiError as e:
                send(format_errno(e.errno))
            else:
                send(format_errno(0))

*Framing, as wireguard-go's ``IpcHandle``.* A request starts with the line
``get=1`` or ``set=1``, byte for byte; any other first line closes the
connection without a reply (so does end of file anywhere outside a set
body). ``get=1\\n`` must be followed by one ``\\n``, else EINVAL (the odd byte
is consumed and reading goes on). A set body is ``key=value`` lines up to a
blank line; like Go's ``bufio.Scanner`` one trailing ``\\r`` is dropped from
each body line, end of file also ends the body (a last line without
``\\n`` counts), and a line over 65535 bytes fails EIO. A body line without
``=`` fails EPROTO. Several requests may share a connection.

*Lines apply as read.* wireguard-go applies each set line as it parses it
and stops at the first error without rolling back, so ``apply_set`` does
the same: a ``SetRequest`` whose body broke off (``errno`` EPROTO or EIO)
still carries the lines before the break, which are applied before the
error is raised. Values are checked exactly as Go parses them (hex keys of
64 digits, ``strconv.ParseUint`` numbers, ``true`` flags, ``netip``
prefixes and ``ip:port`` endpoints); every failure is EINVAL, except what
the ``DeviceConfig`` raises itself (EADDRINUSE from the listen port or
fwmark setters, EINVAL from a full peer table).

*Peer sections.* ``public_key=`` ends the device section and selects (or
creates) a peer; a key equal to the device's own public key selects a
"dummy" that checks but ignores the lines up to the next ``public_key=``.
``remove=true`` deletes the peer and turns the rest of its section into a
dummy; ``update_only=true`` does so only for a peer this section created.
When a peer's section ends (next ``public_key=``, blank line, end of file,
or EIO) its ``post_config`` runs: wireguard-go starts the peer, sends a
keepalive if ``persistent_keepalive_interval`` just went from 0 to
non-zero, and flushes staged packets. It does not run for a section an
error cut short.

*Errno on the wire.* ``UapiError.errno`` is a positive errno (EINVAL = 22).
The reply carries it negated, ``errno=-22``, because wireguard-go writes
``IpcErrorInvalid = -EINVAL`` (``ipc/uapi_unix.go``) and ``wg`` needs that:
for a set it does ``fscanf("errno=%d")``, sets ``errno = -ret`` and prints
``strerror(errno)`` ("Unable to modify interface: Invalid argument"); a
positive value would print "Unknown error -22". Success is ``errno=0``. A
get reply's ``errno`` must be unsigned: ``wg``'s get parser reads it with
its ``NUM()`` macro, which requires a leading digit, so ``errno=0`` works
and a negative one aborts the parse as EPROTO ("Protocol error"). That is
also what ``wg`` would report for wireguard-go's only readable get failure
(EINVAL for a bad ``get=1`` line, which ``wg`` never sends; the other, EIO,
is a failed write), so ``format_errno`` writes the negative form in every
case, as wireguard-go does.

XXX: after a failed set, wireguard-go's next operation read starts after
the bad line (and its Scanner may have buffered past it), so it usually
closes; this reader resumes after the blank line that ends the body. ``wg``
sends one request per connection, so only a hand-written client can tell.
XXX: a set body is buffered whole before it is applied; nothing bounds its
size but the socket's permissions (root only).
XXX: ~650 lines, past STYLE's ~500: the reader, the set interpreter and the
get formatter share one wire vocabulary and are reviewed together; the
reader (``UapiReader``, ``SetRequest``) is the piece to move out first.
Deliberate difference: wireguard-go keeps its "keepalive just turned on"
flag from one peer section to the next, so a peer without a
``persistent_keepalive_interval`` line after one that turned it on also
gets a keepalive; here the flag is per section.
"""

from __future__ import annotations

import enum
import errno as _errno
import ipaddress
from dataclasses import dataclass
from typing import Final, Protocol, final

from devfsd.errors import DevfsdError

from .allowedips import Prefix, format_ip
from .keys import clamp, from_hex, is_zero, to_hex

__all__ = [
    "CLOSED",
    "IPC_ERROR_UNKNOWN",
    "MAX_LINE",
    "NEED_DATA",
    "DeviceConfig",
    "DeviceSnapshot",
    "Endpoint",
    "GetRequest",
    "PeerConfig",
    "PeerSnapshot",
    "ReaderState",
    "SetRequest",
    "UapiError",
    "UapiReader",
    "apply_set",
    "format_errno",
    "format_get",
    "parse_endpoint",
]

# wireguard-go's catch-all IpcErrorUnknown is a hard-coded -55 (ENOANO on
# Linux) on every Unix; the glue replies it for an unexpected exception.
IPC_ERROR_UNKNOWN: Final = 55
# Go's bufio.Scanner holds at most 64 KiB, the line's '\n' included.
MAX_LINE: Final = 65535

_GET: Final = b"get=1\n"
_SET: Final = b"set=1\n"


class UapiError(DevfsdError):
    """A UAPI request failed: reply ``format_errno(e.errno)``.

    The only exception ``UapiReader.next_request`` and ``apply_set`` raise
    (``DeviceConfig`` implementations raise it too). ``errno`` is positive;
    the wire form is negated (module docstring).
    """


# --- Requests ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequest:
    """``get=1``: reply ``format_get(snapshot)``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRequest:
    """``set=1`` and its body, for ``apply_set``.

    Attributes:
        lines: the ``(key, value)`` body lines in order (bytes that are not
            UTF-8 arrive as surrogate escapes and match no key).
        errno: 0 if the body ended normally (blank line or end of file);
            EPROTO if it broke off at a line without ``=``, EIO at a line
            over ``MAX_LINE`` bytes: ``apply_set`` applies ``lines`` and then
            raises it.
    """

    lines: tuple[tuple[str, str], ...]
    errno: int = 0


class ReaderState(enum.Enum):
    NEED_DATA = "need data"  # call receive_data, then next_request again
    CLOSED = "closed"  # close the connection without a reply


NEED_DATA: Final = ReaderState.NEED_DATA
CLOSED: Final = ReaderState.CLOSED


class _Mode(enum.Enum):
    OP = enum.auto()  # expecting "get=1\n" or "set=1\n"
    GET = enum.auto()  # after "get=1\n": expecting "\n"
    SET = enum.auto()  # collecting a set body
    SKIP = enum.auto()  # discarding the rest of a set body after EPROTO
    CLOSED = enum.auto()


@final
class UapiReader:
    """Cuts one UAPI connection's bytes into requests (see the module docstring)."""

    __slots__ = ("_buf", "_eof", "_lines", "_mode")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._mode = _Mode.OP
        self._lines: list[tuple[str, str]] = []

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the connection; ``b""`` means end of file.

        Data after end of file, or after the reader closed, is ignored.
        """
        if self._eof or self._mode is _Mode.CLOSED:
            return
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_request(self) -> GetRequest | SetRequest | ReaderState:
        """The next complete request, or what to do instead.

        Returns:
            ``GetRequest`` or ``SetRequest`` (reply to each, in order);
            ``NEED_DATA`` (feed more bytes, or ``b""`` at end of file);
            ``CLOSED`` (close without a reply; stays ``CLOSED``).
        Raises:
            UapiError: EINVAL, ``get=1\\n`` was followed by a byte other than
                ``\\n``; reply ``format_errno(EINVAL)`` and call again.
        """
        while True:
            mode = self._mode
            if mode is _Mode.OP:
                result = self._op()
            elif mode is _Mode.GET:
                result = self._get()
            elif mode is _Mode.SET:
                result = self._set()
            elif mode is _Mode.SKIP:
                result = self._skip()
            else:
                return CLOSED
            if result is not None:
                return result

    def _close(self) -> ReaderState:
        self._mode = _Mode.CLOSED
        self._buf.clear()
        self._lines.clear()
        return CLOSED

    def _op(self) -> GetRequest | SetRequest | ReaderState | None:
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            # wireguard-go reads the whole line before refusing it; refusing
            # as soon as it cannot become "get=1"/"set=1" bounds the buffer.
            if self._eof or not (_GET.startswith(buf) or _SET.startswith(buf)):
                return self._close()
            return NEED_DATA
        op = bytes(buf[: nl + 1])
        del buf[: nl + 1]
        if op == _GET:
            self._mode = _Mode.GET
        elif op == _SET:
            self._mode = _Mode.SET
        else:
            return self._close()
        return None

    def _get(self) -> GetRequest | ReaderState | None:
        if not self._buf:
            return self._close() if self._eof else NEED_DATA
        byte = self._buf[0]
        del self._buf[:1]
        self._mode = _Mode.OP
        if byte != 0x0A:
            raise UapiError(_errno.EINVAL, f"trailing character in UAPI get: {bytes((byte,))!r}")
        return GetRequest()

    def _set(self) -> SetRequest | ReaderState | None:
        buf = self._buf
        start = 0
        try:
            while True:
                nl = buf.find(b"\n", start)
                if nl < 0:
                    if len(buf) - start > MAX_LINE:
                        return self._end_set(_errno.EIO, close=True)
                    if not self._eof:
                        return NEED_DATA
                    if start == len(buf):  # EOF at a line boundary ends the body
                        return self._end_set(0, close=True)
                    raw = bytes(buf[start:])  # Scanner returns a last line without '\n'
                    start = len(buf)
                    result = self._body_line(raw)
                    return result if result is not None else self._end_set(0, close=True)
                if nl - start > MAX_LINE:
                    return self._end_set(_errno.EIO, close=True)
                raw = bytes(buf[start:nl])
                start = nl + 1
                result = self._body_line(raw)
                if result is not None:
                    return result
        finally:
            if self._mode is not _Mode.CLOSED:
                del buf[:start]

    def _body_line(self, raw: bytes) -> SetRequest | None:
        """Take one body line; a request if it ended the body."""
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            return self._end_set(0)
        key, eq, value = raw.partition(b"=")
        if not eq:
            return self._end_set(_errno.EPROTO)
        self._lines.append((key.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
        return None

    def _end_set(self, err: int, *, close: bool = False) -> SetRequest:
        request = SetRequest(lines=tuple(self._lines), errno=err)
        self._lines.clear()
        if close or err == _errno.EIO:
            self._close()
        elif err:
            self._mode = _Mode.SKIP
        else:
            self._mode = _Mode.OP
        return request

    def _skip(self) -> ReaderState | None:
        buf = self._buf
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if self._eof:
                    return self._close()
                # Two bytes of a partial line tell whether it can still be
                # blank ("" or "\r"); drop the rest to keep the buffer small.
                del buf[2:]
                return NEED_DATA
            blank = nl == 0 or (nl == 1 and buf[0] == 0x0D)
            del buf[: nl + 1]
            if blank:
                self._mode = _Mode.OP
                return None


# --- Set -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A peer's numeric UDP endpoint.

    ``host`` is the address as Go prints it (``192.0.2.1``, ``2001:db8::1``,
    ``::ffff:192.0.2.1``, ``fe80::1%eth0``); ``str()`` is ``ip:port`` or
    ``[ip6]:port``, wireguard-go's ``DstToString``.

    ``source`` is the local address the peer's datagram arrived on (same
    notation, no port), which replies are sent from, as the kernel and
    wireguard-go do ("sticky source"); empty when unknown (set by UAPI,
    or forgotten), and the host then chooses. ``str()`` leaves it out.
    """

    host: str
    port: int
    source: str = ""

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """Parse a UAPI ``endpoint=`` value as Go's ``netip.ParseAddrPort``.

    Numeric only: ``ip:port`` for IPv4, ``[ip6]:port`` (optionally with a
    ``%zone``) for IPv6; the port is decimal 0..65535, leading zeros allowed.

    Raises:
        UapiError: EINVAL for anything else (host names, IPv6 without
            brackets, IPv4 in brackets, a missing or bad port).
    """
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text:
        raise UapiError(_errno.EINVAL, f"not an ip:port: {text!r}")
    bracketed = host.startswith("[")
    if bracketed:
        if len(host) < 2 or not host.endswith("]"):
            raise UapiError(_errno.EINVAL, f"missing ]: {text!r}")
        host = host[1:-1]
    port = _parse_uint(port_text, 16)
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise UapiError(_errno.EINVAL, f"bad address in endpoint {text!r}") from None
    if isinstance(addr, ipaddress.IPv4Address):
        if bracketed:
            raise UapiError(_errno.EINVAL, "square brackets can only be used with IPv6 addresses")
        return Endpoint(host=format_ip(addr.packed), port=port)
    if not bracketed:
        raise UapiError(_errno.EINVAL, "IPv6 addresses must be surrounded by square brackets")
    zone = f"%{addr.scope_id}" if addr.scope_id else ""
    return Endpoint(host=format_ip(addr.packed) + zone, port=port)


def _parse_uint(text: str, bits: int) -> int:
    """Go's ``strconv.ParseUint(text, 10, bits)``; EINVAL on failure."""
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(digits) > 20 or int(text) >> bits:
        raise UapiError(_errno.EINVAL, f"invalid {bits}-bit number: {text!r}")
    return int(text)


def _parse_key(text: str) -> bytes:
    try:
        return from_hex(text)
    except ValueError:
        raise UapiError(_errno.EINVAL, f"invalid hex key: {text!r}") from None


def _parse_true(key: str, value: str) -> None:
    if value != "true":
        raise UapiError(_errno.EINVAL, f"failed to set {key}, invalid value: {value!r}")


class PeerConfig(Protocol):
    """One peer as ``apply_set`` changes it; the Device layer implements it."""

    def remove(self) -> None:
        """Delete this peer from the device (and its allowed IPs)."""

    def set_preshared_key(self, key: bytes) -> None:
        """32 bytes; all zero means none."""

    def set_endpoint(self, endpoint: Endpoint) -> None:
        """Set the endpoint until traffic roams it."""

    def set_persistent_keepalive_interval(self, interval: int) -> int:
        """Set 0..65535 seconds (0 = off); return the previous interval."""

    def replace_allowed_ips(self) -> None:
        """Drop all of this peer's allowed IPs (``AllowedIPs.remove_by_peer``)."""

    def add_allowed_ip(self, prefix: Prefix) -> None:
        """Insert ``prefix`` for this peer, moving it from any other."""

    def remove_allowed_ip(self, prefix: Prefix) -> None:
        """Drop ``prefix`` if this peer holds exactly it (``AllowedIPs.remove``)."""

    def post_config(self, *, keepalive_turned_on: bool) -> None:
        """The section ended: if the device is up, start the peer, send a
        keepalive if ``keepalive_turned_on``, then flush staged packets."""


class DeviceConfig(Protocol):
    """The device as ``apply_set`` changes it; the Device layer implements it."""

    def set_private_key(self, key: bytes) -> None:
        """Already clamped, or 32 zero bytes (remove the key). The device
        drops any peer whose public key is the new public key, recomputes
        static-static secrets and expires sessions (reference section 6)."""

    def set_listen_port(self, port: int) -> None:
        """0 means a random port; rebind. Raises ``UapiError(EADDRINUSE)``."""

    def set_fwmark(self, mark: int) -> None:
        """A u32, 0 = off. Raises ``UapiError(EADDRINUSE)`` if it cannot be applied."""

    def replace_peers(self) -> None:
        """Delete every peer."""

    def is_own_public_key(self, public_key: bytes) -> bool:
        """True if ``public_key`` is this device's (such a peer is ignored)."""

    def lookup_peer(self, public_key: bytes) -> PeerConfig | None:
        """The peer with this public key, or None."""

    def create_peer(self, public_key: bytes) -> PeerConfig:
        """Add a stopped peer. Raises ``UapiError(EINVAL)`` if the table is full."""


@final
class _SetSession:
    """The state of one set request: which section, which peer (Go ``ipcSetPeer``)."""

    __slots__ = ("_config", "_created", "_device_section", "_keepalive_on", "_peer")

    def __init__(self, config: DeviceConfig) -> None:
        self._config = config
        self._device_section = True
        self._peer: PeerConfig | None = None  # None in a dummy section or before any
        self._created = False
        self._keepalive_on = False

    def line(self, key: str, value: str) -> None:
        if key == "public_key":
            self._device_section = False
            self.finish_peer()
            self._select_peer(_parse_key(value))
        elif self._device_section:
            self._device_line(key, value)
        else:
            self._peer_line(key, value)

    def finish_peer(self) -> None:
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.post_config(keepalive_turned_on=self._keepalive_on)

    def _select_peer(self, public_key: bytes) -> None:
        self._keepalive_on = False
        self._created = False
        if self._config.is_own_public_key(public_key):
            return  # dummy section
        peer = self._config.lookup_peer(public_key)
        if peer is None:
            peer = self._config.create_peer(public_key)
            self._created = True
        self._peer = peer

    def _device_line(self, key: str, value: str) -> None:
        config = self._config
        if key == "private_key":
            sk = _parse_key(value)
            config.set_private_key(sk if is_zero(sk) else clamp(sk))
        elif key == "listen_port":
            config.set_listen_port(_parse_uint(value, 16))
        elif key == "fwmark":
            config.set_fwmark(_parse_uint(value, 32))
        elif key == "replace_peers":
            _parse_true(key, value)
            config.replace_peers()
        else:
            raise UapiError(_errno.EINVAL, f"invalid UAPI device key: {key!r}")

    def _peer_line(self, key: str, value: str) -> None:
        peer = self._peer  # None: a dummy section, lines are checked and dropped
        if key == "update_only":
            _parse_true(key, value)
            if peer is not None and self._created:
                peer.remove()
                self._peer = None
        elif key == "remove":
            _parse_true(key, value)
            if peer is not None:
                peer.remove()
                self._peer = None
        elif key == "preshared_key":
            psk = _parse_key(value)
            if peer is not None:
                peer.set_preshared_key(psk)
        elif key == "endpoint":
            endpoint = parse_endpoint(value)
            if peer is not None:
                peer.set_endpoint(endpoint)
        elif key == "persistent_keepalive_interval":
            secs = _parse_uint(value, 16)
            if peer is not None:
                old = peer.set_persistent_keepalive_interval(secs)
                self._keepalive_on = old == 0 and secs != 0
        elif key == "replace_allowed_ips":
            _parse_true(key, value)
            if peer is not None:
                peer.replace_allowed_ips()
        elif key == "allowed_ip":
            remove = value.startswith("-")
            try:
                prefix = Prefix.parse(value[1:] if remove else value)
            except ValueError as exc:
                raise UapiError(_errno.EINVAL, f"failed to set allowed ip: {exc}") from None
            if peer is None:
                pass
            elif remove:
                peer.remove_allowed_ip(prefix)
            else:
                peer.add_allowed_ip(prefix)
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(_errno.EINVAL, f"invalid protocol version: {value!r}")
        else:
            raise UapiError(_errno.EINVAL, f"invalid UAPI peer key: {key!r}")


def apply_set(request: SetRequest, config: DeviceConfig) -> None:
    """Apply a set request's lines to ``config`` in order, as wireguard-go.

    Each line takes effect before the next is read; the first error stops
    the request and nothing is rolled back. The current peer's
    ``post_config`` runs when its section ends normally (module docstring).

    Args:
        request: from ``UapiReader.next_request``.
        config: the device, as the Device layer exposes it.
    Raises:
        UapiError: EINVAL for a bad key or value (hex, number, flag not
            ``true``, endpoint, prefix, ``protocol_version`` other than 1);
            ``request.errno`` (EPROTO, EIO) after its lines; whatever
            ``config`` raises (EADDRINUSE, EINVAL), unchanged.
    """
    session = _SetSession(config)
    for key, value in request.lines:
        session.line(key, value)
    if request.errno == _errno.EIO:
        session.finish_peer()  # Go's Scan loop ends, post-config runs, then Err()
    if request.errno:
        raise UapiError(request.errno)
    session.finish_peer()


# --- Get ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSnapshot:
    """One peer as a get reply shows it.

    Attributes:
        last_handshake_time_ns: wall clock (Unix epoch) nanoseconds of the
            last completed handshake, 0 if never.
        tx_bytes, rx_bytes: UDP payload bytes, as wireguard-go counts them.
        allowed_ips: ``AllowedIPs.entries_for(peer)``, in that order.
    """

    public_key: bytes
    preshared_key: bytes
    endpoint: Endpoint | None = None
    last_handshake_time_ns: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    persistent_keepalive_interval: int = 0
    allowed_ips: tuple[Prefix, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSnapshot:
    """The device as a get reply shows it; ``private_key`` zero means unset."""

    private_key: bytes
    listen_port: int = 0
    fwmark: int = 0
    peers: tuple[PeerSnapshot, ...] = ()


def format_get(device: DeviceSnapshot) -> bytes:
    """wireguard-go's whole get reply, ``errno=0`` and blank line included.

    Device keys first (``private_key`` only if set, ``listen_port`` and
    ``fwmark`` only if non-zero), then per peer: ``public_key``,
    ``preshared_key`` (always; zeros mean none), ``protocol_version=1``,
    ``endpoint`` (if known), ``last_handshake_time_sec``/``_nsec``,
    ``tx_bytes``, ``rx_bytes``, ``persistent_keepalive_interval``, one
    ``allowed_ip`` per prefix. Keys are 64 lowercase hex digits.
    """
    out: list[str] = []
    if not is_zero(device.private_key):
        out.append(f"private_key={to_hex(device.private_key)}\n")
    if device.listen_port:
        out.append(f"listen_port={device.listen_port}\n")
    if device.fwmark:
        out.append(f"fwmark={device.fwmark}\n")
    for peer in device.peers:
        secs, nsecs = divmod(peer.last_handshake_time_ns, 1_000_000_000)
        out.append(f"public_key={to_hex(peer.public_key)}\n")
        out.append(f"preshared_key={to_hex(peer.preshared_key)}\n")
        out.append("protocol_version=1\n")
        if peer.endpoint is not None:
            out.append(f"endpoint={peer.endpoint}\n")
        out.append(f"last_handshake_time_sec={secs}\n")
        out.append(f"last_handshake_time_nsec={nsecs}\n")
        out.append(f"tx_bytes={peer.tx_bytes}\n")
        out.append(f"rx_bytes={peer.rx_bytes}\n")
        out.append(f"persistent_keepalive_interval={peer.persistent_keepalive_interval}\n")
        out.extend(f"allowed_ip={prefix}\n" for prefix in peer.allowed_ips)
    out.append("errno=0\n\n")
    return "".join(out).encode()


def format_errno(err: int) -> bytes:
    """The status that ends a reply: ``errno=0`` or ``errno=-N``, then a blank line.

    Args:
        err: 0 for success, else a positive errno (``UapiError.errno``).
    Returns:
        ``b"errno=0\\n\\n"``, or ``b"errno=-22\\n\\n"`` for EINVAL: negated, as
        wireguard-go sends it and ``wg set`` expects (module docstring).
    """
    return f"errno={-err if err else 0}\n\n".encode()
