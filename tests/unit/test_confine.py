"""devfsd.isolate.confine: the user and environment a module host gets."""

from __future__ import annotations

import errno
import os
import pwd
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
    assert confine.popen_args(u) == {"user": u.uid, "group": u.gid, "extra_groups": list(u.groups)}
    assert confine.popen_args(None) == {}


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
    assert confine.HostCgroup.make(4242, 1 << 20) == f"{tmp_path}: not a memory cgroup"
    monkeypatch.setattr(confine, "_setting", "none")
    assert confine.HostCgroup.make(4242, 1 << 20) == "devfsd --host-cgroup none"
    assert confine.memlimit_of({"memlimit": 5}) == 5
    monkeypatch.setattr(confine, "_memlimit", 7)
    assert (confine.memlimit_of({}), confine.memlimit_of({"memlimit": True})) == (7, 7)
