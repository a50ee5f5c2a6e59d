"""devfsd.isolate.confine: the user and environment a module host gets."""

from __future__ import annotations

import errno
import os
import pwd

import pytest

from devfsd.errors import DeviceError
from devfsd.isolate import confine


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
