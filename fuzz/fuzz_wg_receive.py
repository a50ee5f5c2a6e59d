"""Coverage-guided fuzzing (atheris/libFuzzer) of
the WireGuard receive path: Device.datagram_received on a device holding a session.

Run from the repository root (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_wg_receive.py --seeds /tmp/seeds-wg   # write seed inputs
    mkdir -p /tmp/corpus-wg
    .venv/bin/python fuzz/fuzz_wg_receive.py /tmp/corpus-wg /tmp/seeds-wg -max_total_time=3600

libFuzzer adds what it finds to the first directory; a crash is written
to crash-* in the current directory and reproduces with
``.venv/bin/python fuzz/fuzz_wg_receive.py crash-...``. The body is
``fuzz._targets.wg_one_input``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from fuzz._main import fuzz_main

    fuzz_main("wg", "wg_one_input")


if __name__ == "__main__":
    main()
