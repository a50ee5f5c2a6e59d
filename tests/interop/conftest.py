"""Fixtures for tunwg's interop tests (the tunnels are in ``tunnels.py``).

Every test here needs root, /dev/net/tun, /dev/fuse, ``ip netns``,
``nsenter``, wireguard-go, ``wg`` and ``ping``, and skips naming the first
one missing. Every test is checked for leftovers (namespaces, UAPI
sockets, processes, mounts) after its fixtures are torn down.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Protocol

import pytest

from tests.interop.tunnels import MODES, leftovers, tunwg_tunnel
from tests.netns import missing_capability

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.interop.tunnels import Tunnel


@pytest.fixture(scope="session")
def capable() -> None:
    why = missing_capability(("wireguard-go", "wg", "ping", "nsenter"))
    if why is None and not os.path.exists("/dev/fuse"):
        why = "needs /dev/fuse"
    if why is not None:
        pytest.skip(why)


@pytest.fixture(autouse=True)
def no_leaks(capable: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test leaves no namespace, socket, process or mount of ours behind."""
    yield
    assert leftovers(tmp_path_factory.getbasetemp()) == []


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """How tunwg's interface is joined to its TUN (``tunnels.MODES``): each test in each mode."""
    return str(request.param)


@pytest.fixture(params=["in-process", "isolated"])
def isolated(request: pytest.FixtureRequest) -> bool:
    """tunwg in the daemon, or in a module host of its own (``devfsd
    --isolate``, issue 14): each test that makes a tunnel runs both ways."""
    return bool(request.param == "isolated")


@pytest.fixture
def tunnel(tmp_path: Path, mode: str, isolated: bool) -> Iterator[Tunnel]:
    """A tunwg - wireguard-go tunnel with the default options, in each ``mode``, in process and isolated."""
    with tunwg_tunnel(tmp_path, mode=mode, isolate=isolated) as t:
        yield t


class MakeTunnel(Protocol):
    def __call__(
        self,
        *,
        props: dict[str, str | int | bool] | None = None,
        count: int = 1,
        go_knows_tunwg_as: str | None = None,
        tunwg_knows_go_as: str | None = None,
        batch: bool = False,
        mode: str = "bridge",
        isolate: bool | None = None,
    ) -> Tunnel: ...


@pytest.fixture
def make_tunnel(tmp_path: Path, isolated: bool) -> Iterator[MakeTunnel]:
    """``make_tunnel(**options)``: a tunnel with ``tunwg_tunnel``'s options, torn
    down after the test; tunwg isolated as the ``isolated`` fixture says
    unless ``isolate`` is given."""
    with contextlib.ExitStack() as stack:

        def make(
            *,
            props: dict[str, str | int | bool] | None = None,
            count: int = 1,
            go_knows_tunwg_as: str | None = None,
            tunwg_knows_go_as: str | None = None,
            batch: bool = False,
            mode: str = "bridge",
            isolate: bool | None = None,
        ) -> Tunnel:
            return stack.enter_context(
                tunwg_tunnel(
                    tmp_path,
                    props=props,
                    count=count,
                    go_knows_tunwg_as=go_knows_tunwg_as,
                    tunwg_knows_go_as=tunwg_knows_go_as,
                    batch=batch,
                    mode=mode,
                    isolate=isolated if isolate is None else isolate,
                )
            )

        yield make
