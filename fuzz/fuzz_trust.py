"""Coverage-guided fuzzing (atheris/libFuzzer) of the module trust check:
trees of directories, links and a module file with any owners and modes,
built on disk, against an oracle (fuzz/_trust.py). Run as root.

Run from the repository root (see docs/reliability.md)::

    .venv/bin/python fuzz/fuzz_trust.py --seeds /tmp/seeds-trust
    mkdir -p /tmp/corpus-trust
    .venv/bin/python fuzz/fuzz_trust.py /tmp/corpus-trust /tmp/seeds-trust -max_total_time=600

A crash is written to crash-* in the current directory and reproduces with
``.venv/bin/python fuzz/fuzz_trust.py crash-...``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        from fuzz._trust import trust_seeds

        os.makedirs(sys.argv[2], exist_ok=True)
        for i, s in enumerate(trust_seeds()):
            with open(os.path.join(sys.argv[2], f"seed-{i:03d}"), "wb") as f:
                f.write(s)
        print(len(trust_seeds()), "seeds written")
        return
    import atheris

    with atheris.instrument_imports(include=["devfsd", "fuzz"]):
        from fuzz._trust import trust_one_input

    atheris.Setup(sys.argv, trust_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
