"""The fuzz targets (fuzz/) run briefly: under hypothesis always, under
atheris (coverage-guided) when it is installed. docs/reliability.md says
how to run them at length."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz._targets import (
    control_one_input,
    control_seeds,
    state_one_input,
    state_seeds,
    wg_one_input,
    wg_seeds,
    write_seeds,
)
from modules.tunwg.wg import DeliverPacket, Endpoint

if TYPE_CHECKING:
    from devfsd.nodes import NodeTable

ROOT = Path(__file__).resolve().parent.parent.parent


def _mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few bytes changed, cut or extended."""

    def mutate(seed: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> bytes:
        b = bytearray(seed)
        for pos, val in edits:
            if b:
                b[pos % len(b)] = val
        if cut is not None:
            del b[cut:]
        return bytes(b) + tail

    return st.builds(
        mutate,
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4),
        st.none() | st.integers(0, 200),
        st.binary(max_size=8),
    )


def test_seeds_reach_the_session() -> None:
    # The data seed decrypts and delivers on a fresh copy of the device:
    # the fuzzer starts inside the transport path, not only at the parser.
    from fuzz import _targets

    seeds = wg_seeds()
    assert len(seeds[0]) == 148  # the initiation
    pair = _targets._pair_now()
    import copy

    dev = copy.deepcopy(pair.a)
    effects = dev.datagram_received(seeds[-1], Endpoint(host="127.0.0.1", port=51821), now=1.0, wall_ns=0)
    assert any(isinstance(e, DeliverPacket) for e in effects)
    for s in control_seeds():
        control_one_input(s)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _mutated(control_seeds()))
def test_control_target(data: bytes) -> None:
    control_one_input(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | _mutated(wg_seeds()))
def test_wg_receive_target(data: bytes) -> None:
    wg_one_input(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _mutated(state_seeds()))
def test_state_loader_target(data: bytes) -> None:
    state_one_input(data)


def test_state_seeds_reach_the_tree() -> None:
    """A valid tree's rows and its database file are served; a bad name is
    refused; rows a reservation overrides are served, and checked."""
    from fuzz import _state_target

    served = []
    tables: list[dict[str, int]] = []
    check, check_majors = _state_target._check_served, _state_target._check_majors
    try:

        def counting(t: NodeTable) -> None:
            served.append(len(t.nodes))
            check(t)

        def recording(majors: dict[str, int]) -> None:
            tables.append(majors)
            check_majors(majors)

        _state_target._check_served = counting
        _state_target._check_majors = recording
        for s in state_seeds():
            state_one_input(s)
    finally:
        _state_target._check_served, _state_target._check_majors = check, check_majors
    assert served == [5, 5, 5]
    assert {"msgq": 256, "mm": 257, "bar": 40} in tables


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "kind"),
    [("fuzz_control.py", "control"), ("fuzz_wg_receive.py", "wg"), ("fuzz_state.py", "state")],
)
def test_atheris_run(script: str, kind: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="needs atheris (pip install atheris)")
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    write_seeds(kind, str(seeds))
    corpus.mkdir()
    r = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / script), str(corpus), str(seeds), "-runs=2000"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert b"Done 2000 runs" in r.stderr
    assert not list(tmp_path.glob("crash-*"))
