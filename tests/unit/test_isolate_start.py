"""A host that cannot be started: modload fails at once with its errno.

The host is ``sys.executable -m devfsd.isolate.host`` as the module's
user; a user who may not run that interpreter (a checkout under /root and
``-s user=nobody``) made ``subprocess`` raise inside the supervisor's
nursery, where trio wraps it in an ExceptionGroup that the supervisor's
``except OSError`` never saw: its thread died, and modload waited until
its client gave up (60 s), with the daemon's loader lock held meanwhile.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.cdevsw import devsw
from devfsd.errors import DeviceError
from devfsd.isolate.hostproc import HostProcess
from devfsd.testing.harness import Kernel

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("interpreter", "err"),
    [("not-executable", errno.EACCES), ("missing", errno.ENOENT)],
)
async def test_a_host_that_cannot_start_fails_modload_at_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    interpreter: str,
    err: int,
) -> None:
    exe = tmp_path / interpreter
    if interpreter == "not-executable":
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o644)
    async with Kernel.running(isolate=True) as k:
        fds = len(os.listdir("/proc/self/fd"))
        monkeypatch.setattr(sys, "executable", str(exe))
        with trio.fail_after(10), pytest.raises(DeviceError) as exc:
            await k.modload("crandom")
        assert exc.value.errno == err
        assert "cannot start a host" in str(exc.value)
        assert "cannot start a host" in caplog.text
        assert "crandom" not in k.loader.modules
        major = devsw.getmajor("crandom")
        assert major is None or devsw.lookup(major) is None
        assert len(os.listdir("/proc/self/fd")) == fds  # no socket, memfd or pipe left
        monkeypatch.undo()  # the loader is free, and the module loads
        with trio.fail_after(30):
            await k.modload("crandom")
        assert "crandom" in k.loader.modules


async def test_a_supervisor_that_fails_fails_its_modload_not_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any other failure of the supervisor's thread (a bug) before the first
    # load has ended: EIO at once, and the loader goes on.
    async def broken(self: object, nursery: trio.Nursery) -> None:
        raise RuntimeError("a bug")

    async with Kernel.running(isolate=True) as k:
        monkeypatch.setattr(HostProcess, "start", broken)
        with trio.fail_after(10), pytest.raises(DeviceError) as exc:
            await k.modload("crandom")
        assert exc.value.errno == errno.EIO
        assert "crandom" not in k.loader.modules
        monkeypatch.undo()
        with trio.fail_after(30):
            await k.modload("crandom")
