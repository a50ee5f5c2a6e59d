"""Coverage-guided fuzzing (atheris/libFuzzer) of
the state loader: StateStore's checks (schema, rows, tree) on any database.

Run from the repository root (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_state.py --seeds /tmp/seeds-state   # write seed inputs
    mkdir -p /tmp/corpus-state
    .venv/bin/python fuzz/fuzz_state.py /tmp/corpus-state /tmp/seeds-state -max_total_time=3600

The body is ``fuzz._state_target.state_one_input``: an input whose load
raises anything but ``StateError``, or is served as a tree that does not
hold together, is a crash (written to crash-* in the current directory).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from fuzz._main import fuzz_main

    fuzz_main("state", "state_one_input")


if __name__ == "__main__":
    main()
