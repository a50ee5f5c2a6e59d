"""``devfsd regress``: shell scenarios against a fresh mount."""

from __future__ import annotations

from pathlib import Path

import pytest

from devfsd.testing.mount import run
from devfsd.testing.regress import run_script

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


@pytest.mark.parametrize("args", [[], ["--isolate"]], ids=["in-process", "isolated"])
def test_crandom_scenario_passes(args: list[str]) -> None:
    r = run_script(ROOT / "tests" / "regress" / "crandom.sh", ["crandom"], args=args)
    assert r.passed, r.stdout + r.stderr + r.log
    assert "ok: five reads are permutations" in r.stdout
    assert ("loaded module crandom isolated" in r.log) == bool(args)


def test_a_failing_check_fails_the_script_with_its_output(tmp_path: Path) -> None:
    s = tmp_path / "bad.sh"
    s.write_text('. "$DEVFSD_REGRESS_LIB"\ncheck_out nope echo yes\necho unreachable\n')
    r = run_script(s)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == "FAIL: echo yes: printed 'yes', expected 'nope'\n"


def test_cli_reports_pass_and_fail(tmp_path: Path) -> None:
    s = tmp_path / "bad.sh"
    s.write_text('. "$DEVFSD_REGRESS_LIB"\ncheck_exit 0 false\n')
    good = ROOT / "tests" / "regress" / "crandom.sh"
    r = run(["devfsd", "regress", "-I", "--module", "crandom", str(good), str(s)])
    assert r.returncode == 1
    out = r.stdout.decode()
    assert f"{good}: passed" in out and f"{s}: FAILED (exit 1)" in out
    assert b"FAIL: false: exit 1, expected 0" in r.stderr
