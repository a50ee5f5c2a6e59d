"""What a module host may use: its user, its environment, its memory.

Touches the world: the user database, ``/proc/self/mountinfo``, the cgroup
file systems (``mkdir``, ``rmdir``, writes of limits and pids), signals to
processes left in a host's cgroup.

*User.* ``-s user=NAME`` (root's alone, as a privileged property) names
the user a host runs as: ``resolve_user`` looks it up once, at load, and
the host is started through ``devfsd.isolate.launch`` (``launch_argv``),
which narrows its bounding set to the module's capabilities, sets its
groups, gid and uid and executes the host's interpreter as the user (no
module code, no devfsd code but the launcher's runs as root in it). The
host then sets ``no_new_privs`` and makes itself not dumpable, as root
too (``host.main``).

*Capabilities.* A host started as root keeps only the Linux capabilities
its module declares (``ModuleInfo.caps``, read from its checked source
before any of its code runs: ``declared_caps``) and those root gives at
load (``-s caps=net_admin,net_raw``, root's alone): ``host_caps`` makes
the set, which the daemon passes on the host's command line, and the
host, still alone in its process (one thread), drops every other before
it imports anything of the module's (``drop_capabilities``): from the
bounding set first, while it still holds ``CAP_SETPCAP``, then the
ambient and inheritable sets, then the permitted and effective ones
(``capset(2)``), and checks that what is left is what it asked for. A
failure is fatal: the host answers ``LOAD`` with its errno and runs
nothing. A host run as another user holds none (``setuid`` took them);
its bounding set is its module's declared capabilities, narrowed by the
launcher while it was root (``devfsd.isolate.launch``; a daemon without
``CAP_SETPCAP`` leaves it as it was, from which, with ``no_new_privs`` and
nothing permitted, the host gains nothing all the same).

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
  swap is accounted, ``memory.memsw.limit_in_bytes``, both the limit;
- a cgroup v2 hierarchy without the memory controller (where v1 has it,
  or nothing does): no limit written (``HostCgroup.limit`` ``None``), the
  host's ``RLIMIT_AS`` is its limit; the cgroup still holds what it starts.

Every host gets a cgroup there, with a limit or without (``make``'s
``None``): a cgroup holds every process the host's driver starts, whatever
its session or process group (a double fork and ``setsid`` leave the
host's process group, which is all the daemon killed before the ninth
session, not its cgroup), and they are killed with it. A host as another
user cannot leave it (cgroup files are root's); one as root can (it is
uid 0: see devfsd-module(9), ISOLATION).

``devfsd --host-cgroup DIR`` names another directory for ``devfsd/`` (one
delegated to the daemon), ``none`` turns cgroups off. A host's cgroup goes
with the host (``remove``: what is left in it is killed first, by
``cgroup.kill`` on v2); a daemon's
directory goes with its last host; ``sweep`` (at the daemon's start)
removes the directories of daemons that are gone (killed with ``-9``:
their hosts died with them, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import logging
import os
import pwd
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, final

from devfsd import _trioloop
from devfsd._trioloop import ENV_PUBLIC_ONLY
from devfsd.errors import DeviceError
from devfsd.isolate.launch import bounding as _bounding
from devfsd.isolate.launch import last_cap as last_cap
from devfsd.isolate.launch import libc as _libc
from devfsd.isolate.launch import narrow_bounding
from devfsd.kern.caps import CAP_NAMES, cap_number, parse_caps

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "HostCgroup",
    "HostUser",
    "cap_list",
    "cap_names",
    "check_memlimit",
    "configure",
    "declared_caps",
    "drop_capabilities",
    "host_caps",
    "host_env",
    "launch_argv",
    "memlimit_of",
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


def launch_argv(user: HostUser | None, caps: int, status: int) -> list[str]:
    """What a host's command line starts with to run as ``user``: the
    launcher (``devfsd.isolate.launch``), which narrows its bounding set
    to ``caps`` (a mask), sets groups, gid and uid, in that order, and
    executes the rest as ``user``, telling a failure's errno on ``status``.
    Nothing for a host of the daemon's own user."""
    if user is None:
        return []
    groups = ",".join(map(str, user.groups))
    return [
        *(sys.executable, "-P", "-s", "-m", "devfsd.isolate.launch"),
        f"--user={user.uid}:{user.gid}:{groups}",
        f"--caps={caps:x}",
        f"--status={status}",
        "--",
    ]


# -- capabilities -----------------------------------------------------------------

_PR_CAP_AMBIENT: Final = 47
_PR_CAP_AMBIENT_CLEAR_ALL: Final = 4
_CAP_SETPCAP: Final = 8
_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def cap_names(mask: int) -> tuple[str, ...]:
    """``mask``'s capabilities by name (``cap_N`` for one past the table)."""
    return tuple(CAP_NAMES[i] if i < len(CAP_NAMES) else f"cap_{i}" for i in range(64) if mask >> i & 1)


def cap_list(mask: int) -> str:
    """``mask``'s capabilities by name (``net_admin,net_raw``), or ``none``."""
    return ",".join(cap_names(mask)) or "none"


def declared_caps(source: bytes, name: str) -> tuple[str, ...]:
    """The ``caps`` of the ``MODULE = ModuleInfo(...)`` at the top level of
    ``source``, read without running it; none if it has no such line (its
    import then tells), or does not parse (nor will it import).

    Raises:
        DeviceError: ``EINVAL`` for ``caps`` that are not a literal, or
            not capability names.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == "MODULE" for t in targets):
            continue
        if not isinstance(value, ast.Call):
            continue
        for kw in value.keywords:
            if kw.arg != "caps":
                continue
            try:
                caps = ast.literal_eval(kw.value)
            except ValueError:
                raise DeviceError(
                    errno.EINVAL, f"module {name}: write caps as a literal in MODULE = ModuleInfo(...)"
                ) from None
            return parse_caps(caps, f"module {name}: caps")
    return ()


def host_caps(*names: tuple[str, ...]) -> int:
    """The capabilities a host keeps: those ``names`` list, as a mask.

    Raises:
        DeviceError: ``EINVAL`` for one this kernel does not have.
    """
    last, mask = last_cap(), 0
    for group in names:
        for n in group:
            i = cap_number(n)
            if i > last:
                raise DeviceError(errno.EINVAL, f"caps: this kernel has no CAP_{n.upper()}")
            mask |= 1 << i
    return mask


def _capget() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) capabilities."""
    head = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc().capget(ctypes.byref(head), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capget: {os.strerror(code)}")
    lo, hi = data[0], data[1]
    return (
        lo.effective | hi.effective << 32,
        lo.permitted | hi.permitted << 32,
        lo.inheritable | hi.inheritable << 32,
    )


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    head = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for k in range(2):
        data[k].effective = effective >> 32 * k & 0xFFFFFFFF
        data[k].permitted = permitted >> 32 * k & 0xFFFFFFFF
        data[k].inheritable = inheritable >> 32 * k & 0xFFFFFFFF
    if _libc().capset(ctypes.byref(head), data) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"capset: {os.strerror(code)}")


def drop_capabilities(keep: int) -> int:
    """Drop every capability of this thread's but ``keep`` (a mask), from
    every set; the thread must be its process's only one (capabilities are
    a thread's, and a thread started later copies its starter's).

    Returns:
        The capabilities kept (``keep`` and what the thread held).

    Raises:
        OSError: a step failed; its errno, and what failed in the text.
    """
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        threads = 1
    if threads != 1:
        raise OSError(errno.EBUSY, f"{threads} threads: capabilities are dropped alone")
    libc = _libc()
    _, permitted, _ = _capget()
    kept = permitted & keep
    bounding = _bounding()
    if permitted and bounding & ~keep:
        # Narrowing the bounding set takes CAP_SETPCAP: it goes first. A
        # thread with no capability at all (another user's) can gain none
        # with no_new_privs, whatever its bounding set says.
        if not permitted >> _CAP_SETPCAP & 1:
            raise OSError(
                errno.EPERM,
                "cannot narrow the bounding set without CAP_SETPCAP"
                " (give the daemon CAP_SETPCAP, or run the host as another user: -s user=)",
            )
        narrow_bounding(keep)
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        if code != errno.EINVAL:  # EINVAL: a kernel before 4.3, with no ambient set
            raise OSError(code, f"PR_CAP_AMBIENT_CLEAR_ALL: {os.strerror(code)}")
    _capset(kept, kept, 0)
    got = _capget()
    if got != (kept, kept, 0) or (permitted and _bounding() & ~keep):
        raise OSError(errno.EPERM, f"capabilities still held: {cap_list(got[1] & ~keep)}")
    return kept


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


def check_memlimit(props: Mapping[str, object]) -> None:
    """The ``memlimit`` property, if given: an int of bytes above 0 (as
    ``modload -i memlimit=BYTES`` gives it), not a limit that silently
    is none (``-1``, ``0``, a string, a bool).

    Raises:
        DeviceError: ``EINVAL``.
    """
    if "memlimit" in props:
        v = props["memlimit"]
        if type(v) is not int or v <= 0:
            raise DeviceError(errno.EINVAL, f"property memlimit: {v!r:.40} is not a number of bytes above 0")


def memlimit_of(props: Mapping[str, object]) -> int | None:
    """A host's memory limit: its ``memlimit`` property (``check_memlimit``
    passed it at load), else the daemon's."""
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
    """1 for a directory in v1's memory hierarchy, 2 in a cgroup2 one
    (with the memory controller or without: ``_v2_memory``), else 0."""
    if os.path.exists(os.path.join(directory, "memory.limit_in_bytes")):
        return 1
    return 2 if os.path.exists(os.path.join(directory, "cgroup.controllers")) else 0


def _v2_memory(directory: str) -> bool:
    """Whether the cgroup2 directory ``directory`` may have the memory controller."""
    try:
        return "memory" in _read(os.path.join(directory, "cgroup.controllers")).split()
    except OSError:
        return False


def _candidates() -> list[str]:
    """Directories ``devfsd/`` may go in, best first: v2 with memory, v1's
    memory, then v2 without memory (its cgroups hold a host's processes, a
    limit is ``RLIMIT_AS``)."""
    if _setting == "none":
        return []
    if _setting:
        return [_setting]
    v2 = [p for p, t, _ in _mounts() if t == "cgroup2" and _version(p) == 2]
    v1 = [p for p, t, o in _mounts() if t == "cgroup" and "memory" in o]
    return [p for p in v2 if _v2_memory(p)] + v1 + [p for p in v2 if not _v2_memory(p)]


def _enable_memory(directory: str) -> None:
    """cgroup v2: let ``directory``'s children have memory limits, where it may."""
    if not _v2_memory(directory):
        return
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
            why = f"{base}: not a cgroup"
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
    """Kill what is left in the cgroup ``path`` and remove it; False if it is still busy.

    cgroup v2's ``cgroup.kill`` (Linux 5.14) kills all of it at once, a
    process that forks meanwhile included; elsewhere each process listed
    is killed, and one forked since waits for the next try."""
    procs = _procs(path)
    if procs:
        with contextlib.suppress(OSError):
            _write(os.path.join(path, "cgroup.kill"), "1")
            procs = []
    for pid in procs:
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

    def __init__(self, path: str, version: int, limit: int | None) -> None:
        self.path = path
        self.version = version
        #: The limit it holds the host to (``None``: none; a host with a
        #: limit in a v2 hierarchy without the memory controller sets
        #: ``RLIMIT_AS`` to it instead).
        self.limit = limit

    def __str__(self) -> str:
        return f"cgroup v{self.version} {self.path}"

    @classmethod
    def make(cls, pid: int, limit: int | None) -> HostCgroup | str:
        """A cgroup for the host ``pid``, limited to ``limit`` bytes (``None``:
        no limit, only what the host starts kept in it, to be killed with
        it), with the host in it; or why there is none (then ``RLIMIT_AS``
        it is, for a limit)."""
        got = _daemon_dir()
        if isinstance(got, str):
            return got
        mine, v = got
        path = os.path.join(mine, f"h{pid}")
        if v == 2 and not _v2_memory(mine):
            limit = None  # (rlimit_as: the host's own RLIMIT_AS, in this cgroup)
        try:
            _mkdir(path)
            self = cls(path, v, limit)
            try:
                if limit is None:
                    pass
                elif v == 2:
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
