"""devfsd.isolate.confine: the user and environment a module host gets."""

from __future__ import annotations

import errno
import os
import pwd
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from devfsd.errors import DeviceError
from devfsd.isolate import confine

if TYPE_CHECKING:
    from pathlib import Path


def test_user_by_name_or_uid() -> None:
    pw = pwd.getpwnam("nobody")
    u = confine.resolve_user("nobody")
    assert (u.name, u.uid, u.gid) == ("nobody", pw.pw_uid, pw.pw_gid)
    assert set(u.groups) == set(os.getgrouplist("nobody", pw.pw_gid))
    assert confine.resolve_user(str(pw.pw_uid)) == u == confine.resolve_user(pw.pw_uid)
    groups = ",".join(map(str, u.groups))
    assert confine.launch_argv(u, 0x3000, 9) == [
        *(sys.executable, "-P", "-s", "-m", "devfsd.isolate.launch"),
        *(f"--user={u.uid}:{u.gid}:{groups}", "--caps=3000", "--status=9", "--"),
    ]
    assert confine.launch_argv(None, 0x3000, 9) == []


@pytest.mark.parametrize("value", ["no-such-user-here", True, -1, 1 << 40, "", b"nobody"])
def test_unknown_user_is_einval(value: object) -> None:
    with pytest.raises(DeviceError) as ei:
        confine.resolve_user(value)
    assert ei.value.errno == errno.EINVAL


def test_host_env_keeps_only_what_the_host_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/x")
    monkeypatch.setenv("DEVFSD_CONTROL", "/secret.sock")
    monkeypatch.setenv("LD_PRELOAD", "/evil.so")
    monkeypatch.delenv("DEVFSD_PUBLIC_ONLY", raising=False)
    assert confine.host_env() == {"PATH": confine.HOST_PATH, "LANG": "C.UTF-8", "PYTHONPATH": "/x"}
    monkeypatch.setenv("DEVFSD_PUBLIC_ONLY", "1")
    assert confine.host_env()["DEVFSD_PUBLIC_ONLY"] == "1"


def _v2_tree(root: Path, pid: int) -> Path:
    """A directory laid out as a cgroup v2 hierarchy with the memory
    controller would be once the kernel has made the host's cgroup:
    files the kernel makes are made here beforehand, empty."""
    host = root / "devfsd" / f"d{os.getpid()}" / f"h{pid}"
    host.mkdir(parents=True)
    for d in (root, root / "devfsd", host.parent):
        (d / "cgroup.controllers").write_text("cpu io memory pids\n")
        (d / "cgroup.subtree_control").write_text("")
    for name in ("memory.max", "memory.swap.max", "memory.oom.group", "cgroup.procs"):
        (host / name).write_text("")
    (host / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    return host


def test_cgroup_v2_limit_swap_oom_group_and_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What HostCgroup writes on a cgroup v2 machine (this one may have
    only v1): the controller enabled on the way down, the limit, no swap,
    the whole group killed on OOM, the host moved in; OOM kills read back."""
    monkeypatch.setattr(confine, "_setting", str(tmp_path))
    host = _v2_tree(tmp_path, 4242)
    cg = confine.HostCgroup.make(4242, 200 << 20)
    assert isinstance(cg, confine.HostCgroup), cg
    assert (cg.version, cg.path) == (2, str(host))
    assert [(host / n).read_text() for n in ("memory.max", "memory.swap.max", "memory.oom.group")] == [
        str(200 << 20),
        "0",
        "1",
    ]
    assert (host / "cgroup.procs").read_text() == "4242"
    for d in (tmp_path, tmp_path / "devfsd", host.parent):
        assert (d / "cgroup.subtree_control").read_text() == "+memory"
    assert cg.oom_kills() == 1


def test_no_memory_cgroup_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(confine, "_setting", str(tmp_path))  # no controller files: not a cgroup
    assert confine.HostCgroup.make(4242, 1 << 20) == f"{tmp_path}: not a cgroup"
    monkeypatch.setattr(confine, "_setting", "none")
    assert confine.HostCgroup.make(4242, 1 << 20) == "devfsd --host-cgroup none"
    assert confine.memlimit_of({"memlimit": 5}) == 5
    monkeypatch.setattr(confine, "_memlimit", 7)
    assert (confine.memlimit_of({}), confine.memlimit_of({"memlimit": True})) == (7, 7)


def _launch(caps: int, *host: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    """The launcher as hostproc starts it (as root), executing ``host`` as nobody."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        nobody = confine.resolve_user("nobody")
        argv = [*confine.launch_argv(nobody, caps, w), *host]
        p = subprocess.run(
            argv, pass_fds=(w,), capture_output=True, text=True, timeout=30, env=confine.host_env()
        )
        os.close(w)
        w = -1
        return p, os.read(r, 16)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as nobody")
def test_the_launcher_narrows_the_bounding_set_then_becomes_the_user() -> None:
    p, told = _launch(0x3000, "/bin/cat", "/proc/self/status")
    assert (p.returncode, told) == (0, b""), p.stderr  # the exec closed the status pipe
    st = {k: v.strip() for k, _, v in (line.partition(":") for line in p.stdout.splitlines())}
    nobody = confine.resolve_user("nobody")
    assert st["Uid"].split() == [str(nobody.uid)] * 4 and st["Gid"].split() == [str(nobody.gid)] * 4
    assert sorted(map(int, st["Groups"].split())) == sorted(nobody.groups)
    assert (st["CapBnd"], st["CapPrm"], st["CapEff"]) == ("0000000000003000", "0" * 16, "0" * 16)


@pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as nobody")
def test_the_launcher_tells_an_exec_that_fails_by_its_errno(tmp_path: Path) -> None:
    """A program the user may not run: EACCES on the status pipe, as
    subprocess tells a failed exec (hostproc raises it: modload's errno)."""
    prog = tmp_path / "roots-only"
    prog.write_text("#!/bin/sh\n")
    prog.chmod(0o700)
    p, told = _launch(0, str(prog))
    assert (p.returncode, told) == (127, str(errno.EACCES).encode())
    assert "devfsd: host launcher: [Errno 13] Permission denied" in p.stderr
