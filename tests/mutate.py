"""Mutation testing of devfsd's core, with the in-process suite as the judge.

    .venv/bin/python -m tests.mutate                      # every package of the core
    .venv/bin/python -m tests.mutate 'modules.tunwg.wg.*' # some mutants (mutmut name globs)
    .venv/bin/python -m tests.mutate --summary            # the table of the last run only
    .venv/bin/python -m tests.mutate -j 2 'devfsd.state.*' 'devfsd.cdevsw.*'  # in turn, 2 workers

The packages mutated and the judge (tests/unit) are set in pyproject.toml's
``[tool.mutmut]``. mutmut copies the tree to ``mutants/``, makes every
mutant there, learns which tests reach which function, then runs for each
mutant only the tests that reach it. The run is niced; it takes about an
hour for the whole core on one CPU (docs/reliability.md has the figures).
Each glob is run in turn, in the order given (one mutmut run per glob, so
that what finished is whole packages when a run must stop early); the
mutants made and the tests' coverage are kept between runs.
Surviving mutants: ``mutmut results``, ``mutmut show NAME``.

The table counts, per package, the mutants mutmut judged: killed (a test
failed), survived (every test passed: a behaviour change no test sees, or
an equivalent mutant), no tests (no test of the judge reaches the code),
and timeouts (a mutant that made the judge hang: killed, in effect).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Package of a mutant's name: the longest of these that prefixes it.
PACKAGES = (
    "devfsd.cdevsw",
    "devfsd.kern",
    "devfsd.specfs",
    "devfsd.fs",
    "devfsd.state",
    "modules.tunwg.wg",
)
#: mutmut's exit-code meanings (mutmut/__main__.py status_by_exit_code), folded.
KILLED = {1, 3, 36, 37, -24, 24, 152, 255, -11, -9}
SURVIVED = {0}
NO_TESTS = {5, 33}


def package_of(mutant: str) -> str:
    return max((p for p in PACKAGES if mutant.startswith(p + ".")), key=len, default="other")


def tally(mutants_dir: Path) -> dict[str, collections.Counter[str]]:
    """Per package: how many mutants were killed, survived, had no tests, or were not checked."""
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for meta in mutants_dir.rglob("*.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None:
                kind = "not checked"
            elif code in KILLED:
                kind = "killed"
            elif code in SURVIVED:
                kind = "survived"
            elif code in NO_TESTS:
                kind = "no tests"
            else:
                kind = "other"
            out[package_of(name)][kind] += 1
    return out


def table(counts: dict[str, collections.Counter[str]]) -> str:
    cols = ("killed", "survived", "no tests", "other", "not checked")
    rows = [f"{'package':<18}" + "".join(f"{c:>12}" for c in cols) + f"{'survival':>10}"]
    for pkg in sorted(counts):
        c = counts[pkg]
        judged = c["killed"] + c["survived"]
        rate = f"{100 * c['survived'] / judged:.1f}%" if judged else "-"
        rows.append(f"{pkg:<18}" + "".join(f"{c[k]:>12}" for k in cols) + f"{rate:>10}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests.mutate", description=__doc__.split("\n\n")[0])
    ap.add_argument("globs", nargs="*", help="mutmut mutant-name globs (default: all of the core)")
    ap.add_argument("--summary", action="store_true", help="print the last run's table only")
    ap.add_argument("-j", "--max-children", type=int, help="mutmut workers (default: max_children)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    if not args.summary:
        tool = Path(sys.executable).with_name("mutmut")
        if not tool.exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", ".[mutate]"], check=True)
        jobs = ["--max-children", str(args.max_children)] if args.max_children else []
        for globs in [[g] for g in args.globs] or [[]]:
            r = subprocess.run(["nice", "-n", "10", str(tool), "run", *jobs, *globs], check=False)
            if r.returncode:
                return r.returncode
    print(table(tally(ROOT / "mutants")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
