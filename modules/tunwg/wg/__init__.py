"""The WireGuard protocol core of tunwg, sans-I/O.

Plain functions and state machines: bytes in, bytes (or frozen records) out.
Time comes in as ``now`` (monotonic seconds, a float) and, for TAI64N
stamps, wall-clock nanoseconds; randomness as ``rng(n) -> bytes``. Nothing
in this package may import ``socket``, ``trio``, ``time``, ``threading``,
``os`` I/O or ``pyfuse3``: a unit test imports every module here with those
blocked. The driver glue (``modules/tunwg/net.py``) does all I/O.

One concept per file, after wireguard-go's ``device/``: ``constants``,
``crypto``, ``keys``, ``messages``, ``handshake``, ``cookie``, ``replay``,
``keypair`` (and ``allowedips``, ``timers``, ``uapi``). Public names are
exported here once the Device layer exists.
"""
