"""Turn a network device's offload features on or off, as ``ethtool -K`` does.

``python bench/ethfeatures.py DEV on|off FEATURE...`` (root; run it in the
device's network namespace). For benchmarks, where ``ethtool`` may not be
installed: the ``SIOCETHTOOL`` ioctl with ``ETHTOOL_GSSET_INFO`` and
``ETHTOOL_GSTRINGS`` (the kernel's names of the features, such as
``rx-gro``) and ``ETHTOOL_SFEATURES``; then ``ETHTOOL_GFEATURES`` checks
that each is active as asked (exit 1 if not).
"""

from __future__ import annotations

import ctypes
import fcntl
import socket
import struct
import sys
from typing import Final

SIOCETHTOOL: Final = 0x8946
ETHTOOL_GSSET_INFO: Final = 0x37
ETHTOOL_GSTRINGS: Final = 0x1B
ETHTOOL_GFEATURES: Final = 0x3A
ETHTOOL_SFEATURES: Final = 0x3B
ETH_SS_FEATURES: Final = 4
ETH_GSTRING_LEN: Final = 32


def _ethtool(sock: socket.socket, dev: str, request: bytes) -> bytes:
    """One ``SIOCETHTOOL`` with ``request`` (it starts with the command); the kernel's answer."""
    buf = ctypes.create_string_buffer(request, len(request))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, struct.pack("16sP8x", dev.encode(), ctypes.addressof(buf)))
    return buf.raw


def feature_names(sock: socket.socket, dev: str) -> list[str]:
    info = _ethtool(sock, dev, struct.pack("=IIQI", ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0))
    (count,) = struct.unpack_from("=I", info, 16)
    raw = _ethtool(
        sock, dev, struct.pack("=III", ETHTOOL_GSTRINGS, ETH_SS_FEATURES, count) + bytes(32 * count)
    )
    return [raw[12 + 32 * i : 12 + 32 * (i + 1)].rstrip(b"\0").decode() for i in range(count)]


def set_features(dev: str, features: list[str], on: bool) -> dict[str, bool]:
    """Ask for ``features`` on (or off) on ``dev``; which of them are active after."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        names = feature_names(sock, dev)
        blocks = (len(names) + 31) // 32
        valid = [0] * blocks
        for f in features:
            i = names.index(f)
            valid[i // 32] |= 1 << (i % 32)
        body = b"".join(struct.pack("=II", v, v if on else 0) for v in valid)
        _ethtool(sock, dev, struct.pack("=II", ETHTOOL_SFEATURES, blocks) + body)
        got = _ethtool(sock, dev, struct.pack("=II", ETHTOOL_GFEATURES, blocks) + bytes(16 * blocks))
        active = {}
        for f in features:
            i = names.index(f)
            word = struct.unpack_from("=IIII", got, 8 + 16 * (i // 32))[2]
            active[f] = bool(word >> (i % 32) & 1)
        return active


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in ("on", "off"):
        print("usage: ethfeatures.py dev on|off feature...", file=sys.stderr)
        return 2
    on = argv[1] == "on"
    active = set_features(argv[0], argv[2:], on)
    wrong = [f for f, a in active.items() if a != on]
    if wrong:
        print(f"ethfeatures.py: {argv[0]}: not {argv[1]}: {' '.join(wrong)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
