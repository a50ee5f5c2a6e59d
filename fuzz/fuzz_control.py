"""Coverage-guided fuzzing (atheris/libFuzzer) of
the control protocol: Framer, parse_request, ControlServer.handle (fake api), encode_reply.

Run from the repository root (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_control.py --seeds /tmp/seeds-control   # write seed inputs
    mkdir -p /tmp/corpus-control
    .venv/bin/python fuzz/fuzz_control.py /tmp/corpus-control /tmp/seeds-control -max_total_time=3600

libFuzzer adds what it finds to the first directory; a crash is written
to crash-* in the current directory and reproduces with
``.venv/bin/python fuzz/fuzz_control.py crash-...``. The body is
``fuzz._targets.control_one_input``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from fuzz._main import fuzz_main

    fuzz_main("control", "control_one_input")


if __name__ == "__main__":
    main()
