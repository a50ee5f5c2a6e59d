"""``devfsd [-f] [--control PATH] [--modpath DIR]... [-o OPT] MOUNTPOINT``.

Touches the world: argv, logging, the mount, the control socket, signals,
the trio nursery. Start-up order: clear a stale mount, bind the control
socket (final mode), mount, then tell the waiting parent "ready" (without
``-f`` the parent exits only then, so the next command can use both).
Shutdown, on SIGTERM/SIGINT or when the mount goes (``umount``,
``fusermount3 -u``): sleepers are woken (``ENXIO``), modules unloaded
(FINI), the socket removed and the mount, if still there, unmounted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final

import pyfuse3
import trio

from devfsd import __version__, _fuseintr, _trioloop
from devfsd._trioloop import fast_instruments, fast_io_wakeups, lean_fuse_loop
from devfsd.cdevsw._dev import major
from devfsd.cdevsw._table import devsw
from devfsd.cdevsw._wait import abort_sleepers, share_sleepers
from devfsd.control import DEFAULT_CONTROL, ENV_CONTROL
from devfsd.control.api import ControlApi
from devfsd.control.client import Client, Unreachable
from devfsd.control.server import IDLE_TIMEOUT, ControlServer, bind_control_socket
from devfsd.errors import ControlError, DevfsdError
from devfsd.fs import MAX_TASKS, DevFs
from devfsd.isolate import confine
from devfsd.kern.loader import DEFAULT_AUTOTIME, ModuleLoader
from devfsd.kern.props import dehumanize_number
from devfsd.limits import split_options
from devfsd.modstate import LOAD_GRACE, load_recorded
from devfsd.modstate import expected_name as _module_name
from devfsd.service import detach, modconf
from devfsd.service.logs import Logs
from devfsd.service.mountwatch import find_mount, read_mountinfo, wait_unmounted
from devfsd.service.notify import Notifier
from devfsd.specfs import DEFAULT_ENTRY_TIMEOUT, SpecFs
from devfsd.state import DB_NAME, StateError, StateStore, default_state_dir
from devfsd.tools import errline, subcommands
from devfsd.tools.argparser import ArgumentParser
from devfsd.watchdog import Watchdog

if TYPE_CHECKING:
    import socket

    from devfsd.nodes import NodeTable

__all__ = ["main"]

log = logging.getLogger("devfsd")

PROG: Final = "devfsd"
#: Seconds the started daemon may take to answer on its own mount and control socket.
READY_TIMEOUT: Final = 30.0
#: At shutdown: seconds the control requests in flight get to end once
#: cancelled, then the modules to unload (systemd's TimeoutStopSec is 30).
SHUTDOWN_REQUESTS: Final = 5.0
SHUTDOWN_UNLOAD: Final = 20.0
#: ``-o public_only``: trio's and pyfuse3's public API only, as ``$DEVFSD_PUBLIC_ONLY``.
PUBLIC_ONLY: Final = "public_only"


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Mount a userland /dev whose character devices are loadable Python drivers.",
        epilog=subcommands.EPILOG,
    )
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground, log to stderr")
    p.add_argument(
        "-c",
        "--control",
        metavar="PATH",
        help=f"control socket (default: ${ENV_CONTROL} or {DEFAULT_CONTROL})",
    )
    p.add_argument(
        "--control-group",
        metavar="GROUP",
        type=_group,
        help="members of GROUP may use the control socket too (mode 0660)",
    )
    p.add_argument(
        "--modpath", metavar="DIR", action="append", default=[], help="search DIR for modules (repeatable)"
    )
    p.add_argument(
        "-o",
        dest="options",
        metavar="OPT",
        action="append",
        default=[],
        help=(
            "nr_inodes=N, size=BYTES, reserve=PERCENT (the tree's limits), nr_files=N (open files),"
            " share=PERCENT (one user's most of open files and sleepers), public_only (no fast"
            " paths through trio's and pyfuse3's private state), or FUSE mount options"
        ),
    )
    p.add_argument("--log", metavar="FILE", help="log to FILE instead of syslog (without -f)")
    p.add_argument("-d", "--debug", action="store_true", help="log debug messages")
    p.add_argument(
        "--autotime",
        type=_seconds,
        default=DEFAULT_AUTOTIME,
        metavar="SECONDS",
        help="quiet time before autoloaded modules are offered unloading (0: never)",
    )
    p.add_argument("--no-autoload", action="store_true", help="never load modules when a node is opened")
    p.add_argument(
        "--state",
        metavar="DIR",
        help="keep nodes, majors and loaded modules in DIR (default: /var/lib/devfsd/<mountpoint>)",
    )
    p.add_argument(
        "--reload-modules",
        action="store_true",
        help="at start, load again the modules that were loaded when the daemon last stopped",
    )
    p.add_argument(
        "--modules-conf",
        metavar="FILE",
        help=f"load the modules FILE lists at start (default: {modconf.DEFAULT_MODULES_CONF}, if it exists)",
    )
    p.add_argument(
        "--entry-timeout",
        type=_seconds,
        default=DEFAULT_ENTRY_TIMEOUT,
        metavar="SECONDS",
        help=(
            "cancel a driver entry point awake this long, or interrupt one holding the daemon"
            " without yielding, and an autoload not done in twice this, with ETIMEDOUT (0: never)"
        ),
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="load every module isolated, in a process of its own (as modload -I)",
    )
    p.add_argument(
        "--host-restarts",
        type=_count,
        default=5,
        metavar="N",
        help="an isolated module whose host dies N+1 times in a row stays down (modload -I)",
    )
    p.add_argument(
        "--host-memlimit",
        type=_bytes,
        default=0,
        metavar="BYTES",
        help="cap every isolated host's memory (a module's memlimit property wins; 0: no cap)",
    )
    p.add_argument(
        "--host-cgroup",
        default="",
        metavar="DIR",
        help=(
            "make every isolated host's cgroup in DIR/devfsd (default: at the top of the"
            " memory hierarchy, else of cgroup v2's; none: no cgroups, RLIMIT_AS and process groups)"
        ),
    )
    p.add_argument(
        "--control-idle",
        type=_seconds,
        default=IDLE_TIMEOUT,
        metavar="SECONDS",
        help="drop a control connection silent this long (0: never)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("mountpoint", help="where to mount")
    return p


def _group(text: str) -> int:
    """A group name or number, as devfs-mknod's -g takes it."""
    import grp

    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        if text.isdigit():
            return int(text)
        raise argparse.ArgumentTypeError(f"{text}: invalid group name") from None


def _bytes(text: str) -> int:
    """A number of bytes, 0 or more, as modload -i reads it (argparse type)."""
    try:
        v = dehumanize_number(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: not a number of bytes >= 0")
    return v


def _count(text: str) -> int:
    """A whole number, 0 or more (argparse type)."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text}: not a whole number >= 0")
    return int(text)


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more and finite (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v < float("inf"):  # negative, infinite or NaN
        raise argparse.ArgumentTypeError(f"{text}: not a number of seconds >= 0")
    return v


def _die(arg: str, err: int | str) -> int:
    sys.stderr.write(errline(PROG, arg, err))
    return 1


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _is_mounted(real: str) -> bool:
    """Whether something is mounted at ``real`` (a resolved path).

    Reads /proc/self/mountinfo only: the daemon must never stat its own
    mount, whose requests only it could answer.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            return any(_unescape(line.split()[4]) == real for line in f)
    except OSError:
        return False


def _clear_stale(mountpoint: str) -> None:
    """Unmount a dead daemon's mount (``ENOTCONN``) at ``mountpoint``."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise
        log.warning("clearing stale mount at %s", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False, capture_output=True)
        os.stat(mountpoint)


def _mount_options(extra: list[str]) -> set[str]:
    opts = {"default_permissions", "fsname=devfsd", "subtype=devfsd"}
    if os.geteuid() == 0:
        opts.add("allow_other")
    for o in extra:
        opts.update(x for x in o.split(",") if x)
    opts.discard(PUBLIC_ONLY)  # devfsd's, not FUSE's
    return opts


def _restore_majors(majors: dict[str, int], tree: NodeTable) -> None:
    """Give the device switch the state's name -> major rows; log each one
    a reservation of this devfsd overrides (``DevswTable.restore``: the
    reservation wins, an upgrade never fails on it), with what it means
    for the nodes made with its major."""
    for name, maj, owner, now in devsw.restore(majors):
        n = sum(1 for node in tree.nodes.values() if node.is_chr and major(node.rdev) == maj)
        nodes = f"{n} node{'s' * (n != 1)} with major {maj} {'reach' if n != 1 else 'reaches'}"
        if owner != name:
            why = f"major {maj} is reserved for {owner}"
            after = f"{nodes} {owner} now; {name} gets a new major when its driver attaches"
        else:
            why = f"{name} has major {now} reserved"
            after = f"{nodes} no driver (remake them with devfs-mknod); {maj} is given to no other name"
        log.warning("%s: major row %r: %d left out: %s; %s", DB_NAME, name, maj, why, after)


class Daemon:
    """One mount and its control socket."""

    def __init__(self, args: argparse.Namespace, mountpoint: str, control: str) -> None:
        self.args = args
        self.mountpoint = mountpoint
        self.control = control
        self.loader = ModuleLoader(args.modpath, autoload=not args.no_autoload, autotime=args.autotime)
        self.spec = SpecFs(self.loader, entry_timeout=args.entry_timeout or None)
        self.state = StateStore(args.state or default_state_dir(mountpoint))
        try:  # what the state holds, checked (StateError): refused at start, not when reloaded
            isolated, majors = self.state.isolated(), self.state.majors()
            self.state.recorded()
            self.state.quarantined()
            tree = self.state.load_tree(time.time_ns())
        except BaseException:
            self.state.close()  # refused: not held (its lock) by a daemon that never ran
            raise
        self.loader.host_timeout = self.spec.entry_timeout
        self._fast: list[str] = []
        self.loader.host_restarts = args.host_restarts
        self.loader.isolate_all = args.isolate
        self.loader.isolated_names = isolated
        confine.configure(args.host_cgroup, args.host_memlimit)
        for name, spec in self.state.crashed:
            log.error(
                "module %s (%s) was loading when devfsd last died: quarantined, not loaded again"
                " until modunload %s or modload %s",
                name,
                spec,
                name,
                spec,
            )
        _restore_majors(majors, tree)
        devsw.on_new_name = self.state.put_major
        self.fs = DevFs(self.spec, control, table=tree)
        self.fs.table.limits = args.limits
        share_sleepers(args.limits.share)
        over = args.limits.over(tree.inodes_used, tree.bytes_used)
        if over:
            # Nothing lost: served whole, as tmpfs serves what it holds;
            # growth fails ENOSPC until unlinks bring it back under.
            log.warning(
                "the tree restored is over its limits, %s: every node is kept;"
                " calls that add to it fail ENOSPC until it is back under",
                ", ".join(over),
            )
        self.fs.on_change = self.state.apply
        self.api = ControlApi(self.loader, self.fs, mountpoint, self.state)
        self.sock: socket.socket | None = None
        self.terminated = False
        self.logs: Logs | None = None
        self.notifier = Notifier(None)
        #: The mount's ID in this namespace's mountinfo, watched for ``umount``.
        self.mount_id: int | None = None
        #: modules.conf's path and contents, read at start-up (``modconf.read``).
        self.modules_conf: tuple[str, list[modconf.Entry | modconf.BadLine]] = ("", [])
        if any(PUBLIC_ONLY in o.split(",") for o in args.options):
            _trioloop.choose(public_only=True)
            _fuseintr.turn_off()

    def start(self) -> None:
        """Bind the socket and mount (before trio runs)."""
        self.sock = bind_control_socket(self.control, self.args.control_group)
        try:
            pyfuse3.init(self.fs, self.mountpoint, _mount_options(self.args.options))
        except BaseException:
            self._remove_socket()
            raise
        self.mount_id = find_mount(read_mountinfo(), self.mountpoint)

    def _remove_socket(self) -> None:
        if self.sock is None:
            return
        try:
            st = os.fstat(self.sock.fileno())
            del st
            os.unlink(self.control)
        except OSError:
            pass
        self.sock.close()
        self.sock = None

    async def _signals(self, nursery: trio.Nursery) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for sig in sigs:
                if sig == signal.SIGHUP:
                    if self.logs is not None:
                        self.logs.reopen()
                    continue
                log.info("signal %d: shutting down", sig)
                self.terminated = True
                self._stop()
                return

    def _stop(self) -> None:
        abort_sleepers()
        pyfuse3.terminate()

    async def _watch_mount(self) -> None:
        """End the daemon when its mount leaves this namespace (umount), copies elsewhere or not."""
        if self.mount_id is None:
            log.warning("%s: not in mountinfo; umount is seen only without copies", self.mountpoint)
            return
        await wait_unmounted(self.mount_id)
        log.info("%s unmounted: shutting down", self.mountpoint)
        self._stop()

    async def _announce(self, ready: int | None) -> None:
        """Tell the launcher and systemd "ready" once the mount and the control socket answer.

        Both are asked from outside the trio thread, as a client would: a
        stat of the mount's root and a ping on the control socket (any
        reply will do: a daemon run by another user than root may refuse
        itself).
        """
        try:
            with trio.fail_after(READY_TIMEOUT):
                await trio.to_thread.run_sync(os.stat, self.mountpoint, abandon_on_cancel=True)
                deadline = time.monotonic() + READY_TIMEOUT
                await trio.to_thread.run_sync(_answers, self.control, deadline, abandon_on_cancel=True)
        except (OSError, Unreachable, trio.TooSlowError) as exc:
            log.error("%s: the daemon does not answer itself: %r", self.mountpoint, exc)
            if ready is not None:
                os.write(ready, f"{PROG}: {self.mountpoint}: does not answer\n".encode())
                os.close(ready)
            self._stop()
            return
        if ready is not None:
            os.write(ready, b"OK\n")
            os.close(ready)
        n = len(self.loader.modules)
        status = f"serving {self.mountpoint}, {n} module{'s' * (n != 1)} loaded"
        self.notifier.ready(status)
        log.info(
            "devfsd %s serving %s, control %s",
            __version__,
            self.mountpoint,
            self.control,
        )
        log.info("%s", _trioloop.describe(self._fast))

    async def run(self, ready: int | None) -> None:
        assert self.sock is not None
        server = ControlServer(
            self.api, self.sock, self.args.control_group, idle=self.args.control_idle or None
        )
        # Which fast paths took, for the log line at READY (and the tests that read it).
        fast = (("instruments", fast_instruments), ("io wakeups", fast_io_wakeups))
        self._fast = [name for name, install in (*fast, ("fuse loop", lean_fuse_loop)) if install()]
        async with trio.open_nursery() as nursery:
            await nursery.start(self.loader.run)
            await self._load_modules_conf()
            if self.args.reload_modules:
                await self._reload_modules()
            requests = trio.CancelScope()
            served = trio.Event()

            async def serve_control(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    with requests:
                        await server.serve(task_status=task_status)
                finally:
                    served.set()

            await nursery.start(serve_control)
            nursery.start_soon(self._signals, nursery)
            nursery.start_soon(self._watch_mount)
            nursery.start_soon(self._announce, ready)
            watchdog = Watchdog(self.spec.entry_timeout) if self.spec.entry_timeout else None
            if watchdog is not None:
                watchdog.start()
            try:
                await pyfuse3.main(min_tasks=2, max_tasks=MAX_TASKS)
            finally:
                if watchdog is not None:
                    watchdog.stop()
                self.notifier.stopping("stopping: unloading modules")
                abort_sleepers()
                # Control requests in flight end first (answered ECANCELED),
                # then the server: a modload whose INIT never ends holds the
                # loader's lock, which unload_all takes (the daemon never
                # ended). Cancelled, it is undone as when its client goes.
                # Every wait bounded (systemd's stop timeout: 30 s).
                with trio.CancelScope(shield=True):
                    await server.stop_requests(SHUTDOWN_REQUESTS)
                    requests.cancel()
                    with trio.move_on_after(SHUTDOWN_REQUESTS):
                        await served.wait()
                    with trio.move_on_after(SHUTDOWN_UNLOAD) as unloading:
                        await self.loader.unload_all()
                    if unloading.cancelled_caught:
                        log.error(
                            "shutdown: still loaded after %g s, left without FINI: %s",
                            SHUTDOWN_UNLOAD,
                            " ".join(self.loader.modules) or "(a load or unload never ended)",
                        )
                nursery.cancel_scope.cancel()

    async def _load_modules_conf(self) -> None:
        """Load what modules.conf lists, in order; a bad line is logged and skipped."""
        path, entries = self.modules_conf
        quarantined = set(self.state.quarantined())
        if entries:
            self.notifier.status(f"loading modules from {path}")
        for item in entries:
            if isinstance(item, modconf.BadLine):
                log.error("%s:%d: %s", path, item.lineno, item.reason)
                continue
            if _module_name(item.module) in quarantined:
                log.warning(
                    "%s:%d: module %s is quarantined: not loaded",
                    path,
                    item.lineno,
                    item.module,
                )
                continue
            try:
                isolated = item.isolated or self.loader.isolate_all
                await load_recorded(
                    self.loader,
                    self.state,
                    item.module,
                    item.props,
                    record=False,
                    isolated=isolated,
                    grace=LOAD_GRACE,
                )
            except DevfsdError as exc:
                log.error("%s:%d: %s: %s", path, item.lineno, item.module, exc)

    async def _reload_modules(self) -> None:
        for name in self.state.quarantined():
            log.warning(
                "module %s is quarantined: not reloaded (modunload %s lifts it)",
                name,
                name,
            )
        for name, spec, props in self.state.recorded():
            if name in self.loader.modules or _module_name(spec) in self.loader.modules:
                # (By its recorded name too: loaded by a path whose last
                # part is not its MODULE name, it was tried again, EEXIST.)
                log.info("reloading module %s: modules.conf loaded it already", spec)
                continue
            # By its recorded name: a module loaded isolated by path is isolated again.
            isolated = True if name in self.loader.isolated_names else None
            try:
                await load_recorded(self.loader, self.state, spec, props, isolated=isolated, grace=LOAD_GRACE)
            except DevfsdError as exc:
                log.warning("reloading module %s: %s", spec, exc)

    def finish(self, *, crashed: bool) -> None:
        self._remove_socket()
        if not crashed:  # loads still in their grace did not kill the daemon
            with contextlib.suppress(StateError):
                self.state.clear_loading()
        self.state.close()
        still = _is_mounted(self.mountpoint)
        try:
            pyfuse3.close(unmount=still)
        except Exception as exc:  # never leave a mount behind because of a close error
            log.warning("close: %s", exc)
        if _is_mounted(self.mountpoint) and (crashed or self.terminated):
            subprocess.run(["fusermount3", "-u", "-z", self.mountpoint], check=False, capture_output=True)
        log.info("devfsd stopped")


def _answers(control: str, deadline: float) -> None:
    """Whether a daemon serves ``control``: any reply will do.

    A full listen backlog (``EAGAIN``: clients already queue on the
    socket, as at boot or under a flood) is no answer yet but no failure
    either: asked again until ``deadline``, then taken as listening.

    Raises:
        Unreachable: nobody answers.
    """
    while True:
        try:
            Client(control, timeout=max(deadline - time.monotonic(), 0.1)).ping()
        except Unreachable as exc:
            if exc.errno != errno.EAGAIN:
                raise
            if time.monotonic() >= deadline:
                log.warning("%s: listen backlog still full at the readiness check", control)
                return
            time.sleep(0.01)
        except ControlError:
            return
        else:
            return


def main(argv: list[str] | None = None) -> int:
    # Developer subcommands (devfsd(8), Subcommands); a mountpoint of that
    # name is given with a slash.
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in subcommands.NAMES:
        return subcommands.main(words)
    args = _parser().parse_args(argv)
    try:
        args.limits, args.options = split_options(args.options)
    except ValueError as exc:
        return _die(str(exc), errno.EINVAL)
    # Detached, the daemon works from /: paths are the caller's, made absolute now.
    for opt in ("log", "state", "modules_conf"):
        if getattr(args, opt):
            setattr(args, opt, os.path.abspath(getattr(args, opt)))
    args.modpath = [os.path.abspath(d) for d in args.modpath]
    mountpoint = os.path.abspath(args.mountpoint)
    control = os.path.abspath(args.control or os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL)
    try:
        _clear_stale(mountpoint)
        if not os.path.isdir(mountpoint):
            return _die(args.mountpoint, errno.ENOTDIR)
        mountpoint = os.path.realpath(mountpoint)
        if _is_mounted(mountpoint):
            return _die(args.mountpoint, errno.EBUSY)
    except OSError as exc:
        return _die(args.mountpoint, exc.errno or errno.EIO)

    ready: int | None = None
    if not args.foreground:
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid > 0:
            os.close(wfd)
            with os.fdopen(rfd, "rb") as r:
                answer = r.read()
            if answer.startswith(b"OK"):
                return 0
            sys.stderr.write(answer.decode(errors="replace") or f"{PROG}: daemon exited during start-up\n")
            return 1
        os.close(rfd)
        os.setsid()
        detach.become_daemon(keep=wfd)
        ready = wfd
        # Start-up errors still go to the parent through the pipe.
    try:
        logs = Logs(log_file=args.log, foreground=args.foreground, debug=args.debug)
        conf = modconf.read(args.modules_conf)
    except OSError as exc:
        return _startup_failed(ready, exc.filename, exc.strerror or exc.errno or errno.EIO)
    notifier = Notifier.from_environ()
    try:
        d = Daemon(args, mountpoint, control)
    except OSError as exc:
        return _startup_failed(ready, exc.filename or args.state, exc.errno or errno.EIO)
    except (sqlite3.Error, StateError) as exc:
        return _startup_failed(ready, args.state or default_state_dir(mountpoint), str(exc))
    d.logs, d.notifier, d.modules_conf = logs, notifier, conf
    try:
        try:
            d.start()
        except BaseException:
            d.state.close()  # its WAL folded back: a failed start leaves the state as it found it
            raise
    except OSError as exc:
        err = exc.errno or errno.EIO
        arg = exc.filename if isinstance(exc.filename, str) else args.mountpoint
        text = os.strerror(err)
        if err == errno.EADDRINUSE and arg == control and (who := detach.holder(control)):
            text += f": pid {who[0]} ({who[1]}) is serving it"
        return _startup_failed(ready, arg, text)
    except RuntimeError as exc:
        return _startup_failed(ready, args.mountpoint, str(exc))
    if ready is not None:
        detach.null_stdio()
    crashed = True
    try:
        trio.run(d.run, ready)
        crashed = False
    except BaseException:
        log.exception("devfsd crashed")
        raise
    finally:
        d.finish(crashed=crashed)
        notifier.close()
    return 0


def _startup_failed(ready: int | None, arg: object, text: int | str) -> int:
    """``devfsd: arg: text`` (``errline``) on stderr, or through the
    ready pipe to the parent that prints it; exit 1."""
    msg = errline(PROG, arg, text)
    if ready is not None:
        os.write(ready, msg.encode())
        os.close(ready)
        os._exit(1)
    sys.stderr.write(msg)
    return 1
