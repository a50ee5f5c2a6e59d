"""What a module host may use: its user, its environment, its memory.

Touches the world: the user database, ``/proc/self/mountinfo``, the cgroup
file systems (``mkdir``, ``rmdir``, writes of limits and pids), signals to
processes left in a host's cgroup.

*User.* ``-s user=NAME`` (root's alone, as a privileged property) names
the user a host runs as: ``resolve_user`` looks it up once, at load, and
``popen_args`` has ``subprocess`` set its groups, gid and uid in the child
before the interpreter starts (no module code, no devfsd code runs as root
in it). The host then sets ``no_new_privs`` and, as another user than
root, makes itself not dumpable (``host.main``).

*Environment.* ``host_env``: a fixed ``PATH``, ``LANG``, and of the
daemon's own only ``PYTHONPATH`` (so the host imports the daemon's devfsd)
and ``DEVFSD_PUBLIC_ONLY``.

*Memory.* ``memlimit`` (or ``devfsd --host-memlimit``) caps a host with a memory cgroup of its own where
the machine has one the daemon can use, else with ``RLIMIT_AS``
(``HostCgroup.make`` returns ``None`` and says why). The cgroups live in a
directory devfsd owns at the top of the hierarchy, ``devfsd/``, one
directory per daemon, ``d<PID>``, one per host below it, ``h<PID>``:

- cgroup v2 with the memory controller: ``memory.max`` the limit,
  ``memory.swap.max`` 0, ``memory.oom.group`` 1 (an OOM kill takes the
  host's children with it), the controller enabled in ``subtree_control``
  on the way down;
- cgroup v1's memory hierarchy: ``memory.limit_in_bytes`` and, where
  swap is accounted, ``memory.memsw.limit_in_bytes``, both the limit.

``devfsd --host-cgroup DIR`` names another directory for ``devfsd/`` (one
delegated to the daemon), ``none`` turns cgroups off. A host's cgroup goes
with the host (``remove``: what is left in it is killed first); a daemon's
directory goes with its last host; ``sweep`` (at the daemon's start)
removes the directories of daemons that are gone (killed with ``-9``:
their hosts died with them, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from devfsd import _trioloop
from devfsd._trioloop import ENV_PUBLIC_ONLY
from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HostCgroup",
    "HostUser",
    "configure",
    "host_env",
    "memlimit_of",
    "popen_args",
    "resolve_user",
    "sweep",
]

log = logging.getLogger("devfsd.isolate")

#: A host's PATH (the daemon's own is not passed on).
HOST_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Variables of the daemon's environment a host gets.
KEPT_ENV: Final = ("PYTHONPATH", ENV_PUBLIC_ONLY)
#: The directory devfsd owns in a cgroup hierarchy.
TOP: Final = "devfsd"


# -- user and environment ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostUser:
    """The user a host runs as, looked up at load."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def resolve_user(value: object) -> HostUser:
    """The ``user`` property: a user name, or a uid the user database knows.

    Raises:
        DeviceError: ``EINVAL`` for another type or an unknown user.
    """
    try:
        if isinstance(value, str) and not value.isdigit():
            pw = pwd.getpwnam(value)
        elif isinstance(value, int | str) and not isinstance(value, bool):
            pw = pwd.getpwuid(int(value))
        else:
            raise KeyError(value)
    except (KeyError, ValueError, OverflowError):
        raise DeviceError(errno.EINVAL, f"property user: no user {value!r}") from None
    groups = tuple(sorted(set(os.getgrouplist(pw.pw_name, pw.pw_gid))))
    return HostUser(pw.pw_name, pw.pw_uid, pw.pw_gid, groups)


def host_env() -> dict[str, str]:
    """A host's whole environment."""
    env = {"PATH": HOST_PATH, "LANG": "C.UTF-8"}
    for k in KEPT_ENV:
        v = os.environ.get(k)
        if v is not None:
            env[k] = v
    if _trioloop.PRIVATE is None:  # the daemon's -o public_only is the host's too
        env[ENV_PUBLIC_ONLY] = "1"
    return env


def popen_args(user: HostUser | None) -> dict[str, object]:
    """``subprocess.Popen`` arguments that start a host as ``user``
    (groups, then gid, then uid, in the child before it runs Python)."""
    if user is None:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


# -- memory cgroups ------------------------------------------------------------------


#: ``devfsd --host-cgroup``: "" = find one, "none" = off, else a directory.
_setting = ""
#: ``devfsd --host-memlimit``: every host's limit in bytes (0: none).
_memlimit = 0


def configure(setting: str = "", memlimit: int = 0) -> None:
    """The daemon's ``--host-cgroup`` ("" finds one) and ``--host-memlimit``;
    removes what dead daemons left."""
    global _setting, _memlimit
    _setting = setting
    _memlimit = memlimit
    sweep()


def memlimit_of(props: Mapping[str, object]) -> int | None:
    """A host's memory limit: its ``memlimit`` property, else the daemon's."""
    v = props.get("memlimit")
    if type(v) is int and v > 0:
        return v
    return _memlimit or None


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of each cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.readlines()
    except OSError:
        return []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if sep and len(fields) >= 5 and len(rest) >= 3 and rest[0] in ("cgroup", "cgroup2"):
            point = fields[4].replace("\\040", " ")
            out.append((point, rest[0], set(rest[2].split(","))))
    return out


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _version(directory: str) -> int:
    """2 for a directory in a cgroup2 hierarchy with memory, 1 in v1's memory one, else 0."""
    if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
        return 1
    try:
        return 2 if "memory" in _read(os.path.join(directory, "cgroup.controllers")).split() else 0
    except OSError:
        return 0


def _candidates() -> list[str]:
    """Directories ``devfsd/`` may go in, best first: v2 with memory, then v1's memory."""
    if _setting == "none":
        return []
    if _setting:
        return [_setting]
    v2 = [p for p, t, _ in _mounts() if t == "cgroup2"]
    v1 = [p for p, t, o in _mounts() if t == "cgroup" and "memory" in o]
    return [p for p in v2 if _version(p) == 2] + v1


def _enable_memory(directory: str) -> None:
    """cgroup v2: let ``directory``'s children have memory limits."""
    path = os.path.join(directory, "cgroup.subtree_control")
    if "memory" not in _read(path).split():
        _write(path, "+memory")


def _mkdir(path: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o755)


def _daemon_dir() -> tuple[str, int] | str:
    """This daemon's directory and its version, made if need be; or why none."""
    if os.geteuid() != 0 and not _setting:
        return "the daemon is not root"
    why = "no memory cgroup hierarchy mounted" if _setting != "none" else "devfsd --host-cgroup none"
    for base in _candidates():
        v = _version(base)
        if v == 0:
            why = f"{base}: not a memory cgroup"
            continue
        top, mine = os.path.join(base, TOP), os.path.join(base, TOP, f"d{os.getpid()}")
        for _ in range(3):  # another daemon may remove an empty top meanwhile
            try:
                if v == 2:
                    _enable_memory(base)
                _mkdir(top)
                if v == 2:
                    _enable_memory(top)
                _mkdir(mine)
                if v == 2:
                    _enable_memory(mine)
                return mine, v
            except FileNotFoundError:
                continue
            except OSError as exc:
                why = f"{base}: {exc.strerror}"
                break
    return why


def _procs(path: str) -> list[int]:
    try:
        return [int(p) for p in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def _rmdir(path: str) -> bool:
    """Kill what is left in the cgroup ``path`` and remove it; False if it is still busy."""
    for pid in _procs(path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _remove_daemon_dir(mine: str) -> None:
    """``mine`` once empty, then ``devfsd/`` if no other daemon has one."""
    with contextlib.suppress(OSError):
        os.rmdir(mine)
        os.rmdir(os.path.dirname(mine))


def sweep() -> None:
    """Remove the cgroups of daemons that are gone (and their hosts')."""
    for base in _candidates():
        top = os.path.join(base, TOP)
        try:
            names = os.listdir(top)
        except OSError:
            continue
        for name in names:
            if not (name.startswith("d") and name[1:].isdigit()):
                continue
            pid = int(name[1:])
            if pid != os.getpid() and _alive(pid):  # ours now: a dead namesake's
                continue
            d = os.path.join(top, name)
            with contextlib.suppress(OSError):
                for h in os.listdir(d):
                    if os.path.isdir(os.path.join(d, h)) and not _rmdir(os.path.join(d, h)):
                        log.warning("cgroup %s: still busy, left", os.path.join(d, h))
            if _rmdir(d):
                log.info("removed cgroup %s of a devfsd that is gone", d)
        with contextlib.suppress(OSError):
            os.rmdir(top)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@final
class HostCgroup:
    """One host's memory cgroup."""

    def __init__(self, path: str, version: int, limit: int) -> None:
        self.path = path
        self.version = version
        self.limit = limit

    def __str__(self) -> str:
        return f"cgroup v{self.version} {self.path}"

    @classmethod
    def make(cls, pid: int, limit: int) -> HostCgroup | str:
        """A cgroup for the host ``pid``, limited to ``limit`` bytes, with
        the host in it; or why there is none (then ``RLIMIT_AS`` it is)."""
        got = _daemon_dir()
        if isinstance(got, str):
            return got
        mine, v = got
        path = os.path.join(mine, f"h{pid}")
        try:
            _mkdir(path)
            self = cls(path, v, limit)
            try:
                if v == 2:
                    _write(os.path.join(path, "memory.max"), str(limit))
                    for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                        if os.path.exists(os.path.join(path, name)):
                            _write(os.path.join(path, name), value)
                else:
                    _write(os.path.join(path, "memory.limit_in_bytes"), str(limit))
                    if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                        _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(limit))
                _write(os.path.join(path, "cgroup.procs"), str(pid))
            except BaseException:
                self.remove()
                raise
        except OSError as exc:
            _remove_daemon_dir(mine)
            return f"{path}: {exc.strerror}"
        return self

    def oom_kills(self) -> int:
        """How many processes the kernel killed in it for want of memory."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in _read(os.path.join(self.path, name)).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> bool:
        """Kill what is left in it and remove it (and the daemon's
        directory, if it was the last); False if it is still busy."""
        if not _rmdir(self.path):
            return False
        _remove_daemon_dir(os.path.dirname(self.path))
        return True
