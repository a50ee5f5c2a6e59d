"""A bounded two-way TCP exchange whose bytes are checked, for interop tests.

``python tcpcheck.py listen|connect ADDR PORT NBYTES SEED TIMEOUT``

Run one end in each network namespace (``ip netns exec``). Once connected,
each end sends ``payload(SEED, NBYTES)`` (its own seed) and, at the same
time, reads until the other end's EOF, then prints one line,
``<bytes received> <sha256 of them>``, and exits 0. The test compares that
with ``digest(payload(other seed, NBYTES))``. ``connect`` retries a refused
connection until TIMEOUT (the listener may not be up yet: a state polled
against a deadline); every socket call is bounded by TIMEOUT too, and the
whole run by the caller's subprocess timeout. Standard library only.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import threading
import time
from typing import Final

__all__ = ["digest", "payload"]

USAGE: Final = "usage: tcpcheck.py listen|connect ADDR PORT NBYTES SEED TIMEOUT\n"
CHUNK: Final = 65536


def payload(seed: int, n: int) -> bytes:
    """``n`` pseudo-random bytes, the same for the same seed everywhere."""
    return random.Random(seed).randbytes(n)


def digest(data: bytes) -> str:
    """What an end prints for ``data`` received."""
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"


def _connect(addr: str, port: int, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
        except ConnectionRefusedError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        return s


def _accept(addr: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as lsn:
        lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsn.bind((addr, port))
        lsn.listen(1)
        lsn.settimeout(timeout)
        conn, _ = lsn.accept()
    conn.settimeout(timeout)
    return conn


def exchange(conn: socket.socket, data: bytes) -> tuple[int, str]:
    """Send ``data`` (then shut down the sending side) while reading to EOF."""
    failed: list[BaseException] = []

    def send() -> None:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    h = hashlib.sha256()
    n = 0
    while chunk := conn.recv(CHUNK):
        h.update(chunk)
        n += len(chunk)
    sender.join(conn.gettimeout())
    if sender.is_alive():
        raise TimeoutError("send did not finish")
    if failed:
        raise failed[0]
    return n, h.hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[0] not in ("listen", "connect"):
        sys.stderr.write(USAGE)
        return 2
    mode, addr, port, nbytes, seed, timeout = argv
    data = payload(int(seed), int(nbytes))
    opener = _accept if mode == "listen" else _connect
    with opener(addr, int(port), float(timeout)) as conn:
        n, hexdigest = exchange(conn, data)
    print(f"{n} {hexdigest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
