"""The WireGuard protocol core of tunwg, sans-I/O.

Plain functions and state machines: bytes in, bytes (or frozen records) out.
Time comes in as ``now`` (monotonic seconds, a float) and, for TAI64N
stamps, wall-clock nanoseconds; randomness as ``rng(n) -> bytes``. Nothing
in this package may import ``socket``, ``trio``, ``time``, ``threading``,
``os`` I/O, ``logging`` or ``pyfuse3``: a unit test imports every module
here with those blocked. The driver glue (``modules/tunwg/net.py``) does all
I/O.

One concept per file, after wireguard-go's ``device/``: ``constants``,
``crypto``, ``keys``, ``messages``, ``handshake``, ``cookie``, ``replay``,
``keypair``, ``allowedips``, ``timers``, ``uapi``, ``peer`` and ``device``.
The glue needs only the names exported here: a ``Device``, the effects it
returns, and the UAPI framing.
"""

from .device import Device, DeviceStats
from .peer import DeliverPacket, Effect, KeyLog, SendDatagram
from .uapi import (
    CLOSED,
    IPC_ERROR_UNKNOWN,
    NEED_DATA,
    Endpoint,
    GetRequest,
    SetRequest,
    UapiError,
    UapiReader,
    format_errno,
)

__all__ = [
    "CLOSED",
    "IPC_ERROR_UNKNOWN",
    "NEED_DATA",
    "DeliverPacket",
    "Device",
    "DeviceStats",
    "Effect",
    "Endpoint",
    "GetRequest",
    "KeyLog",
    "SendDatagram",
    "SetRequest",
    "UapiError",
    "UapiReader",
    "format_errno",
]
