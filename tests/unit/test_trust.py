"""The module trust rule (devfsd.kern.trust): unit cases, hypothesis and atheris.

Run as root: the trees are chowned to other users.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devfsd.errors import DeviceError
from devfsd.kern import trust
from fuzz._trust import trust_one_input, trust_seeds

if TYPE_CHECKING:
    import types

ROOT = Path(__file__).resolve().parent.parent.parent


def _st(uid: int, gid: int, mode: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "why"),
    [
        (0, 0, stat.S_IFDIR | 0o755, None),
        (0, 0, stat.S_IFDIR | 0o775, None),  # group root counts as root
        (0, 0, stat.S_IFREG | 0o664, None),
        (0, 0, stat.S_IFDIR | 0o1777, None),  # sticky, as /tmp
        (0, 5, stat.S_IFDIR | 0o775, "/p: mode 0775, writable by group 5"),
        (0, 0, stat.S_IFDIR | 0o777, "/p: mode 0777, writable by others"),
        (0, 0, stat.S_IFREG | 0o1777, "/p: mode 1777, writable by others"),  # no sticky files
        (1000, 0, stat.S_IFREG | 0o644, "/p: owned by uid 1000, not root"),
    ],
)
def test_check_stat(uid: int, gid: int, mode: int, why: str | None) -> None:
    assert trust.check_stat("/p", _st(uid, gid, mode), frozenset({0})) == why


def test_devfsds_owner_is_trusted() -> None:
    assert trust.check_stat("/p", _st(1000, 1000, stat.S_IFREG | 0o644), frozenset({0, 1000})) is None
    assert trust.check_stat("/p", _st(7, 7, stat.S_IFREG | 0o644), frozenset({0, 1000})) == (
        "/p: owned by uid 7, not root or devfsd's owner"
    )
    import devfsd

    assert trust.devfsd_owner() == os.stat(Path(devfsd.__file__).parent).st_uid
    assert {0, trust.devfsd_owner()} <= trust.trusted_uids()


def _tree(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o755)
    pkg = tmp_path / "mods" / "drv"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import x\nfrom . import helper\nY = x + helper.Z\n")
    (pkg / "helper.py").write_text("Z = 1\n")
    (pkg / "sub" / "__init__.py").write_text("x = 41\n")
    return pkg


def _run(qual: str, pkg: Path) -> types.ModuleType:
    import importlib.util

    spec = trust.load_code(qual, str(pkg), package=True)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[qual] = mod
    try:
        assert spec.loader is not None
        spec.loader.exec_module(mod)
        return mod
    finally:
        for k in [k for k in sys.modules if k == qual or k.startswith(qual + ".")]:
            del sys.modules[k]
        trust.forget_package(qual)


def test_package_and_submodules_load_through_the_check(tmp_path: Path) -> None:
    mod = _run("devfsd_trust_t1", _tree(tmp_path))
    assert mod.Y == 42
    assert mod.__path__ == []  # no other importer looks inside


@pytest.mark.parametrize("where", ["helper.py", "sub", "sub/__init__.py"])
def test_a_submodule_that_fails_is_refused(tmp_path: Path, where: str) -> None:
    pkg = _tree(tmp_path)
    os.chown(pkg / where, 65534, 65534)
    with pytest.raises(trust.Untrusted) as ei:
        _run("devfsd_trust_t2", pkg)
    assert str(ei.value).startswith(f"{pkg / where}: owned by uid 65534, not root")
    assert ei.value.errno == errno.EPERM


def test_every_directory_above_is_checked(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    os.chmod(tmp_path / "mods", 0o777)
    with pytest.raises(trust.Untrusted) as ei:
        _run("devfsd_trust_t3", pkg)
    assert str(ei.value) == f"{tmp_path / 'mods'}: mode 0777, writable by others"
    os.chmod(tmp_path / "mods", 0o1777)  # sticky: what is in it stays its owners'
    assert _run("devfsd_trust_t3", pkg).Y == 42


def test_links_are_followed_from_checked_directories(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    (tmp_path / "link").symlink_to("mods")
    assert _run("devfsd_trust_t4", tmp_path / "link" / "drv").Y == 42
    os.lchown(tmp_path / "link", 65534, 65534)
    with pytest.raises(trust.Untrusted) as ei:
        _run("devfsd_trust_t4", tmp_path / "link" / "drv")
    assert str(ei.value).startswith(f"{tmp_path / 'link'}: owned by uid 65534")
    assert pkg.is_dir()


def test_not_code(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    os.mkfifo(tmp_path / "f.py")
    with pytest.raises(DeviceError) as ei:  # a FIFO is neither read nor waited on
        trust.load_code("devfsd_trust_t5", str(tmp_path / "f.py"), package=False)
    assert ei.value.errno == errno.ENOEXEC
    with pytest.raises(DeviceError) as ei:
        trust.load_code("devfsd_trust_t5", str(tmp_path / "none.py"), package=False)
    assert ei.value.errno == errno.ENOENT


def test_bytes_checked_are_bytes_run(tmp_path: Path) -> None:
    """Changing the file after the check changes nothing that runs."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "m.py").write_text("V = 1\n")
    spec = trust.load_code("devfsd_trust_t6", str(tmp_path / "m.py"), package=False)
    (tmp_path / "m.py").write_text("V = 2\n")
    import importlib.util

    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    assert mod.V == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=4, max_size=24) | st.sampled_from(trust_seeds()))
def test_trust_target(data: bytes) -> None:
    trust_one_input(data)


@pytest.mark.slow
def test_atheris_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="needs atheris (pip install atheris)")
    script = str(ROOT / "fuzz" / "fuzz_trust.py")
    seeds, corpus = tmp_path / "seeds", tmp_path / "corpus"
    subprocess.run([sys.executable, script, "--seeds", str(seeds)], check=True, timeout=60)
    corpus.mkdir()
    trees = tmp_path / "trees"
    trees.mkdir(mode=0o755)
    r = subprocess.run(
        [sys.executable, script, str(corpus), str(seeds), "-runs=400"],
        env={**os.environ, "DEVFSD_TRUST_FUZZ_DIR": str(trees)},
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert b"Done 400 runs" in r.stderr
    assert not list(tmp_path.glob("crash-*"))


def test_the_reason_travels_in_the_reply() -> None:
    from devfsd.control.protocol import Explained, decode_reply, error_reply
    from devfsd.errors import ControlError

    with pytest.raises(Explained) as ei:
        decode_reply(error_reply(errno.EPERM, "x", why="/m: mode 0777, writable by others"))
    assert (ei.value.errno, ei.value.why) == (errno.EPERM, "/m: mode 0777, writable by others")
    for why in (None, "", "two\nlines", 3):
        reply = {**error_reply(errno.EPERM, "x"), **({} if why is None else {"why": why})}
        with pytest.raises(ControlError) as ei2:
            decode_reply(reply)
        assert not isinstance(ei2.value, Explained)


def test_a_link_to_the_code_itself_is_checked(tmp_path: Path) -> None:
    """modload /somewhere/drv.py, drv.py a link: the link's owner counts too."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "real.py").write_text("V = 3\n")
    (tmp_path / "drv.py").symlink_to("real.py")
    (tmp_path / "pkg").symlink_to(_tree(tmp_path))
    spec = trust.load_code("devfsd_trust_t7", str(tmp_path / "drv.py"), package=False)
    assert spec.origin == str(tmp_path / "real.py")
    assert _run("devfsd_trust_t8", tmp_path / "pkg").Y == 42
    for link in ("drv.py", "pkg"):
        os.lchown(tmp_path / link, 65534, 65534)
    with pytest.raises(trust.Untrusted) as ei:
        trust.load_code("devfsd_trust_t7", str(tmp_path / "drv.py"), package=False)
    assert str(ei.value).startswith(f"{tmp_path / 'drv.py'}: owned by uid 65534")
    with pytest.raises(trust.Untrusted):
        _run("devfsd_trust_t8", tmp_path / "pkg")


def test_absolute_links_and_dotdot(tmp_path: Path) -> None:
    pkg = _tree(tmp_path)
    (tmp_path / "abs").symlink_to(tmp_path / "mods")  # absolute: walked again from /
    assert _run("devfsd_trust_t9", tmp_path / "abs" / "drv").Y == 42
    assert _run("devfsd_trust_t9", tmp_path / "mods" / ".." / "mods" / "." / "drv").Y == 42
    os.chmod(tmp_path / "mods", 0o757)
    for via in (tmp_path / "abs" / "drv", tmp_path / "abs" / ".." / "mods" / "drv"):
        with pytest.raises(trust.Untrusted) as ei:
            _run("devfsd_trust_t9", via)
        assert str(ei.value) == f"{tmp_path / 'mods'}: mode 0757, writable by others"
    assert pkg.is_dir()
