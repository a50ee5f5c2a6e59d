"""Figures the reliability tests measured, collected for docs/reliability.md."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Set to a path to collect every test's figures there as JSON (one object
#: per test id), e.g. ``DEVFSD_FIGURES=figures.json pytest tests/reliability``.
ENV_FIGURES = "DEVFSD_FIGURES"


@pytest.fixture
def figures(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Iterator[dict[str, Any]]:
    """A dict a test fills with what it measured; printed, recorded as
    properties (junit XML) and, with ``$DEVFSD_FIGURES``, merged into a file."""
    out: dict[str, Any] = {}
    yield out
    if not out:
        return
    for k, v in out.items():
        record_property(k, v)
    print(f"\n{request.node.nodeid}: {json.dumps(out, sort_keys=True)}")
    path = os.environ.get(ENV_FIGURES)
    if path:
        try:
            with open(path) as f:
                allf = json.load(f)
        except (OSError, ValueError):
            allf = {}
        allf["_machine"] = {
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        }
        allf[request.node.nodeid] = out
        with open(path, "w") as f:
            json.dump(allf, f, indent=1, sort_keys=True)
