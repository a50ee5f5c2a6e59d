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
The globs are run package by package, in the order given (one mutmut run
per package, so that what finished is whole packages when a run must stop
early); the mutants made and the tests' coverage are kept between runs.
Surviving mutants: ``mutmut results``, ``mutmut show NAME``.

The table counts, per package, the mutants mutmut judged: killed (a test
failed), timeout (the mutant's tests overran their wall-clock limit or
mutmut's CPU limit: a hang, killed in effect), survived (every test passed:
a behaviour change no test sees, or an equivalent mutant), no tests (no
test of the judge reaches the code).

This module is also the pytest plugin mutmut's test runs load (``-p
tests.mutate`` in ``[tool.mutmut]``'s ``pytest_add_cli_args``). It does
nothing unless ``MUTANT_UNDER_TEST`` names a mutant; then

- the judge of the mutant's package is narrowed to :data:`JUDGES` (the
  tests mutmut found reaching the mutated function, less those outside
  the package's judge; none left is "no tests"), and
- the mutant's tests get a wall-clock limit (:func:`wall_limit`): a mutant
  that makes a test hang (a trio test whose cancellation the mutant broke
  uses no CPU, so mutmut's CPU limit never fires) ends as a timeout.

``MUTANT_UNDER_TEST=NAME pytest ...`` in ``mutants/`` checks one mutant
against chosen tests the same way.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

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
TIMEOUT = {36, 24, -24, 152, 255}
NO_TESTS = {5, 33}
#: The judge of a package whose functions most of tests/unit reaches (its
#: mutants would each run hundreds of tests, 175 s a survivor for kern):
#: pytest node-id prefixes. A package not listed is judged by every test of
#: the test selection reaching the mutated function. Changing this keeps
#: mutmut's earlier verdicts (only a change of ``[tool.mutmut]`` resets
#: them): re-run the package's mutants.
JUDGES: dict[str, tuple[str, ...]] = {
    # Every in-process test loads a driver through kern's loader; these
    # test kern itself: loading, trust, properties, the module path.
    "devfsd.kern": (
        "tests/unit/test_loader.py",
        "tests/unit/test_trust.py",
        "tests/unit/test_props.py",
        "tests/unit/test_modpath.py",
        "tests/unit/test_privileged.py",
        "tests/unit/test_mutants_kern.py",
        "tests/netbsd/test_kern_module.py",
    ),
    # Every driver test sleeps, wakes and is timed through cdevsw: these
    # test the switch, sleep/wakeup, the entry-point limit and its fast paths.
    "devfsd.cdevsw": (
        "tests/unit/test_cdevsw.py",
        "tests/unit/test_wait.py",
        "tests/unit/test_wakeup.py",
        "tests/unit/test_faults.py",
        "tests/unit/test_idle_wait.py",
        "tests/unit/test_fuseintr.py",
        "tests/unit/test_fastpath_guard.py",
        "tests/unit/test_trioloop.py",
        "tests/unit/test_loader.py",
        "tests/unit/test_mutants_core.py",
        "tests/unit/test_mutants_cdevsw.py",
    ),
    # Every in-process driver test does its I/O through SpecFs: these test
    # the I/O path itself (open/close counts, detach, wrong returns, limits,
    # tracing, the file system's handlers over it).
    "devfsd.specfs": (
        "tests/unit/test_cdevsw.py",
        "tests/unit/test_devfs_ops.py",
        "tests/unit/test_trace.py",
        "tests/unit/test_faults.py",
        "tests/unit/test_fastpath_guard.py",
        "tests/unit/test_loader.py",
        "tests/unit/test_wait.py",
        "tests/unit/test_mm.py",
        "tests/unit/test_mutants_core.py",
        "tests/unit/test_mutants_specfs.py",
    ),
    # Only tests that import modules.tunwg.wg reach its functions under
    # their mutmut names: the driver tests load tunwg through the module
    # loader (as devfsd_modules.tunwg), which never switches to a mutant, and
    # use the core only for keys (crypto); test_tunwg_bridge, _carrier and
    # _offload import tunwg's other modules only.
    "modules.tunwg.wg": (
        "tests/unit/tunwg/",
        "tests/unit/test_tunwg_driver.py",
        "tests/unit/test_tunwg_gro.py",
        "tests/unit/test_fuzz_targets.py",
    ),
}
#: A mutant's tests may take this many times their clean run (mutmut's
#: timings, ``mutants/mutmut-stats.json``), plus :data:`WALL_GRACE` seconds.
#: 4 times plus 15 s ended two mutants whose code the tests never ran, at
#: load 10-20 with the run getting a tenth of a CPU.
WALL_FACTOR = 10.0
WALL_GRACE = 30.0


def package_of(mutant: str) -> str:
    return max((p for p in PACKAGES if mutant.startswith(p + ".")), key=len, default="other")


def tally(mutants_dir: Path) -> dict[str, collections.Counter[str]]:
    """Per package: how many mutants were killed, survived, had no tests, or were not checked."""
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for meta in mutants_dir.rglob("*.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is None:
                kind = "not checked"
            elif code in TIMEOUT:
                kind = "timeout"
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
    cols = ("killed", "timeout", "survived", "no tests", "other", "not checked")
    rows = [f"{'package':<18}" + "".join(f"{c:>12}" for c in cols) + f"{'survival':>10}"]
    for pkg in sorted(counts):
        c = counts[pkg]
        judged = c["killed"] + c["timeout"] + c["survived"]
        rate = f"{100 * c['survived'] / judged:.1f}%" if judged else "-"
        rows.append(f"{pkg:<18}" + "".join(f"{c[k]:>12}" for k in cols) + f"{rate:>10}")
    return "\n".join(rows)


def by_package(globs: list[str]) -> list[list[str]]:
    """The globs grouped by package, packages in the order first named: one mutmut run each."""
    groups: dict[str, list[str]] = {}
    for g in globs:
        groups.setdefault(package_of(g), []).append(g)
    return list(groups.values())


def judged(mutant: str, nodeids: list[str]) -> list[str]:
    """Of the tests mutmut picked for ``mutant``, those of its package's judge."""
    judge = JUDGES.get(package_of(mutant))
    return nodeids if judge is None else [n for n in nodeids if n.startswith(judge)]


def wall_limit(nodeids: list[str], stats: Path) -> float:
    """Seconds ``nodeids`` may run under a mutant: a multiple of their clean run."""
    try:
        durations = json.loads(stats.read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        durations = {}
    return WALL_GRACE + WALL_FACTOR * sum(float(durations.get(n, 1.0)) for n in nodeids)


#: Set by ``main`` for a glob of one package: mutmut's own runs (listing the
#: tests, timing them and mapping them to functions, the clean and the forced
#: failing run) see that package's judge only, so a narrow judge is timed and
#: mapped in seconds, not the whole of tests/unit.
JUDGE_ENV = "DEVFSD_MUTATE_PACKAGE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the judge of the package under test; under a mutant, bound the run's wall-clock time."""
    name = os.environ.get("MUTANT_UNDER_TEST", "")
    mutant = name if "__mutmut_" in name else ""
    package = os.environ.get(JUDGE_ENV, "")
    if not mutant and not package:
        return
    keep = set(judged(mutant or package + ".", [item.nodeid for item in items]))
    dropped = [item for item in items if item.nodeid not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item.nodeid in keep]
    if not mutant:
        return
    seconds = wall_limit(sorted(keep), Path("mutmut-stats.json"))

    def overran() -> None:
        # Any thread, any state of the test: leave as a timeout (mutmut's 36).
        os.write(2, f"tests.mutate: {mutant}: tests still running after {seconds:.0f} s\n".encode())
        faulthandler.dump_traceback(all_threads=True)
        os._exit(36)

    timer = threading.Timer(seconds, overran)
    timer.daemon = True
    timer.start()


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
        for globs in by_package(args.globs) or [[]]:
            env = dict(os.environ)
            env.pop(JUDGE_ENV, None)
            if package_of(globs[0]) in JUDGES:
                env[JUDGE_ENV] = package_of(globs[0])
            r = subprocess.run(["nice", "-n", "10", str(tool), "run", *jobs, *globs], check=False, env=env)
            if r.returncode:
                return r.returncode
    print(table(tally(ROOT / "mutants")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
