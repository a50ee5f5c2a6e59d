"""The command line both fuzz scripts share: ``--seeds DIR``, or libFuzzer's own arguments."""

from __future__ import annotations

import importlib
import sys


def fuzz_main(kind: str, target: str) -> None:
    """Write ``kind``'s seeds (``--seeds DIR``), or fuzz ``fuzz._targets.<target>`` under atheris.

    The target is imported inside ``atheris.instrument_imports``, so the
    project's code it runs is instrumented for coverage.
    """
    if len(sys.argv) == 3 and sys.argv[1] == "--seeds":
        from fuzz._targets import write_seeds

        print(write_seeds(kind, sys.argv[2]), "seeds written")
        return
    import atheris

    with atheris.instrument_imports(include=["devfsd", "modules", "fuzz"]):
        one_input = getattr(importlib.import_module("fuzz._targets"), target)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
