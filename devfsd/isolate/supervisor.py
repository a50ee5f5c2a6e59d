"""Isolated modules: loading one into a host, and the reincarnation server.

Imports trio and the kernel's loader, never pyfuse3. Theory of operation,
after MINIX 3's reincarnation server (docs/isolation.md):

*Load.* ``load_hosted`` (called by ``ModuleLoader.load(..., isolated=True)``
under the loader's lock) locates the module as any load does (so the same
ownership checks apply), starts a host, and sends ``LOAD``: the host
imports the module, loads its requirements (inside the host) and runs
INIT. The reply names the (name, major) of each cdevsw INIT attached; the
daemon attaches one proxy ``Cdevsw`` (``proxy``) at each. The module is
then a ``LoadedModule`` like any other, whose ``pymod`` is the
``Supervisor``: its ``modcmd`` forwards FINI, STAT and AUTOUNLOAD. An INIT
that fails fails the load with its errno; a host that dies during it fails
it with ``EOWNERDEAD``; either way nothing is left (the process is reaped,
nothing attached). A load cancelled meanwhile (its modload client went)
kills the host and waits until it is reaped (and its cgroup removed)
before it ends, so that it too leaves nothing.

*Death and restart.* The supervisor is a thread of its module
(``kthread_create``), so unloading the module stops it. When the host dies
(``HostProcess``: in-flight calls have already got ``EIO``), it detaches
the proxy (files opened through it get ``ENXIO`` from the switch from then
on), reaps the host and logs the module, the signal or exit status and the
last lines the host wrote (faulthandler's traceback for a fatal signal).
Then it waits (``BACKOFF_FIRST`` doubling to ``BACKOFF_MAX``) and loads
the module into a new host with the same properties (INIT runs without
the loader's lock, so that one that never ends holds up no other load or
unload, and modunload still ends it), then attaches it at the same majors
under the loader's lock. A host that dies (or fails to load again) within
``STABLE_AFTER`` seconds of its start counts as one more death in a row;
past ``restarts`` in a row the module stays down (modstat flag ``d``) until
modunload or modload.

XXX: requirements load inside the host and are private to it (the daemon's
modstat does not list them); a module whose code another module calls
directly cannot be isolated from it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd.cdevsw import devsw_detach
from devfsd.cdevsw._table import devsw
from devfsd.errors import DevfsdError, DeviceError, Verbatim
from devfsd.isolate import protocol as P
from devfsd.isolate.confine import (
    HostUser,
    check_memlimit,
    declared_caps,
    host_caps,
    memlimit_of,
    resolve_user,
)
from devfsd.isolate.hostproc import HostDied, HostProcess, check_reply_json
from devfsd.isolate.proxy import make_proxy
from devfsd.kern import trust
from devfsd.kern.caps import parse_caps
from devfsd.kern.loader import LoadedModule, _code_size, kthread_create
from devfsd.kern.module import ModCmd, ModuleClass, ModuleInfo, validate_module_name

if TYPE_CHECKING:
    from devfsd.cdevsw._switch import Cdevsw
    from devfsd.kern.loader import ModuleLoader
    from devfsd.kern.module import Props

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "DEFAULT_RESTARTS",
    "MAX_ATTACH",
    "STABLE_AFTER",
    "Supervisor",
    "attach_list",
    "load_hosted",
]

log = logging.getLogger("devfsd.isolate")

#: The property naming the user a host runs as (``modload -I -s user=NAME``).
HOST_USER: Final = "user"
#: The property adding capabilities a root host keeps (``-s caps=net_admin,net_raw``).
HOST_CAPS: Final = "caps"
#: The properties that are the host's, not INIT's: in process they are
#: EINVAL (``ModuleLoader.load``), in a host INIT never sees them.
HOST_PROPS: Final = (HOST_USER, HOST_CAPS, "memlimit")
#: Deaths in a row after which a module stays down.
DEFAULT_RESTARTS: Final = 5
#: Seconds before the first restart; doubled for each death in a row.
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: A host that lived this long before dying starts a new row.
STABLE_AFTER: Final = 30.0
#: Most (name, major) pairs one isolated module's INIT may attach: every
#: driver here attaches one (tunwg, mm, crandom), NetBSD's a few at most.
#: Each new name is kept for ever (the state directory) and takes one of
#: the ``MAXDEVSW`` majors, so a host must not choose how many.
MAX_ATTACH: Final = 8


@final
class Supervisor:
    """An isolated module's hosts, one after another; its ``pymod``.

    Args:
        loader: the daemon's module list (its lock guards restarts).
        mod: the module as the loader lists it.
        target: the located code (package directory or file) for the host.
        restarts: deaths in a row before the module stays down.
        uid: who loaded it (for ``privileged`` properties).
    """

    def __init__(
        self,
        loader: ModuleLoader,
        mod: LoadedModule,
        target: str,
        restarts: int,
        uid: int = 0,
        user: HostUser | None = None,
        caps: int = 0,
    ) -> None:
        self.loader = loader
        self.uid = uid
        #: The user its hosts run as (property ``user``), else the daemon's.
        self.user = user
        #: The capabilities its hosts keep, as a mask (``confine.host_caps``).
        self.caps = caps
        self.mod = mod
        self.target = target
        self.restarts = restarts
        self.host: HostProcess | None = None
        self.proxy: Cdevsw | None = None
        #: (name, major) of each attached proxy, fixed by the first load.
        self.majors: list[tuple[str, int]] | None = None
        #: Loaded by path: the module's own name wins, as in process.
        self.by_path = False
        self.deaths = 0
        self.down = False
        self.stopping = False
        self._first = trio.Event()
        self._first_error: DevfsdError | None = None
        #: The first load was cancelled (its modload client went): its host
        #: is killed, not asked to exit.
        self.abandoned = False
        self._ended = trio.Event()

    @property
    def MODULE(self) -> ModuleInfo:
        return self.mod.info

    @property
    def flags(self) -> str:
        """modstat's letters: ``i`` isolated, ``d`` down."""
        return "id" if self.down else "i"

    # -- the loader's side ---------------------------------------------------------

    async def start(self) -> None:
        """The first load; returns when the module is in, or raises.

        Raises:
            DeviceError: INIT's errno; ``EOWNERDEAD`` if the host died.
        """
        scope = kthread_create(self._run, name="host", module=self.mod)
        try:
            await self._first.wait()
        except BaseException:
            # Cancelled (the modload's client went, or shutdown): the host
            # is killed and reaped, its cgroup removed, nothing attached,
            # before the loader's lock goes (bounded: ``HostProcess.reap``).
            self.abandoned = self.stopping = True
            scope.cancel()
            with trio.CancelScope(shield=True):
                await self._ended.wait()
            self._detach()
            log.info("module %s: load cancelled: its host is gone", self.mod.name)
            raise
        if self._first_error is not None:
            raise self._first_error

    async def modcmd(self, cmd: ModCmd, props: Props | None) -> None:
        """FINI, STAT and AUTOUNLOAD, forwarded to the host.

        A module that is down (or between hosts) unloads without FINI.
        """
        host = self.host
        alive = host is not None and not host.dead
        if cmd == ModCmd.FINI:
            if alive:
                assert host is not None
                if not await self._ask(host, cmd):
                    # The module goes all the same, with its host: FINI runs
                    # under the loader's lock (an autounload's too, which
                    # nobody can interrupt), and a host that never answered
                    # it held every load and unload of the daemon for ever.
                    log.error(
                        "module %s: host %d did not answer FINI in %g s: killed",
                        self.mod.name,
                        host.pid,
                        self._limit,
                    )
                    host.kill()
            self.stopping = True
            self._detach()
            if host is not None:
                host.close()
            return
        if cmd == ModCmd.INIT:
            raise DeviceError(errno.EINVAL, "INIT goes through load_hosted")
        if not alive:
            if cmd == ModCmd.AUTOUNLOAD:
                return
            raise DeviceError(errno.ENXIO)
        assert host is not None
        if not await self._ask(host, cmd):
            # (AUTOUNLOAD: a veto; the autounload pass, which asks every
            # module in turn, goes on to the others.)
            raise DeviceError(
                errno.ETIMEDOUT, f"module {self.mod.name}: {cmd.name} not answered in {self._limit:g} s"
            )

    @property
    def _limit(self) -> float:
        """How long a host may take to answer FINI, STAT or AUTOUNLOAD:
        twice ``--entry-timeout``, as a caller's interrupted call (none
        with ``--entry-timeout 0``)."""
        t = self.loader.host_timeout
        return 2 * t if t else math.inf

    async def _ask(self, host: HostProcess, cmd: ModCmd) -> bool:
        """``cmd`` to ``host``; False if it did not answer within ``_limit``.

        Raises:
            DeviceError: the module's answer (FINI refused), or the host's end.
        """
        with trio.move_on_after(self._limit) as scope:
            await host.call(P.Kind.MODCMD, P.CMD.pack(int(cmd)))
        return not scope.cancelled_caught

    # -- the reincarnation server --------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._main()
        finally:
            self._ended.set()

    async def _main(self) -> None:
        try:
            await self._reincarnate()
        finally:
            # Whatever ended it (a bug here is contained by kthread_create),
            # the first load's modload gets an errno, never a wait for ever.
            if not self._first.is_set():
                if self._first_error is None:
                    why = f"module {self.mod.name}: its supervisor failed"
                    self._first_error = DeviceError(errno.EIO, why)
                self._first.set()

    async def _reincarnate(self) -> None:
        first = True
        while True:
            host = HostProcess(
                self.mod.name,
                self.loader.host_timeout,
                user=self.user,
                memlimit=memlimit_of(self.mod.props),
                caps=self.caps,
            )
            err: DevfsdError | None = None
            try:
                async with trio.open_nursery() as nursery:
                    try:
                        await host.start(nursery)
                        if first:  # load_hosted's caller holds the lock
                            self._attach(host, await self._load(host))
                        else:
                            # INIT runs without the loader's lock: an INIT
                            # that never ends must not hold every modload,
                            # modunload and autoload of the daemon (this one
                            # can still be unloaded, which cancels it).
                            info = await self._load(host)
                            async with self.loader._lock:
                                self._attach(host, info)
                    except DevfsdError as exc:
                        err = exc
                        if not host.dead:
                            host.close()
                    else:
                        self.host = host
                        if first:
                            self._first.set()
                        first = False
                        await host.died.wait()
                        self._detach()
                    nursery.cancel_scope.cancel()
            finally:
                if self.abandoned:  # its load was cancelled: INIT may never end
                    host.kill()
                elif not host.dead:  # stopped (unloaded, or undone after a refused FINI): let it exit now
                    host.close()
                rc = await host.reap()
            if self.stopping:
                return
            if err is not None and first:
                if host.why and not host.closing:
                    self._report(host, rc, "during load")
                self._first_error = err
                self._first.set()
                return
            if err is not None:
                log.error("module %s: restart failed: %s", self.mod.name, err)
            if host.why and not host.closing:
                self._report(host, rc, "")
            uptime = trio.current_time() - host.started_at
            self.deaths = 1 if uptime > STABLE_AFTER else self.deaths + 1
            if self.deaths > self.restarts:
                self.down = True
                log.error(
                    "module %s: %d deaths in a row: stays down until modload or modunload",
                    self.mod.name,
                    self.deaths,
                )
                return
            delay = min(BACKOFF_FIRST * 2 ** (self.deaths - 1), BACKOFF_MAX)
            log.warning(
                "module %s: restarting in %.1f s (death %d in a row)", self.mod.name, delay, self.deaths
            )
            await trio.sleep(delay)

    def _report(self, host: HostProcess, rc: int | None, when: str) -> None:
        tail = "\n".join(host.tail)  # (each line escaped: HostProcess._err_log)
        log.error(
            "module %s: host %d %s%s (%s)%s",
            self.mod.name,
            host.pid,
            host.describe_status(rc),
            f" {when}" if when else "",
            host.why,
            Verbatim(f"; its last output:\n{tail}") if tail else "; it wrote nothing",
        )

    async def _load(self, host: HostProcess) -> dict[str, Any]:
        """``LOAD`` into ``host``: its checked reply.

        Raises:
            DeviceError: INIT's errno, ``EOWNERDEAD`` if the host died,
                ``EBADMSG`` for a malformed reply.
        """
        req: dict[str, Any] = {
            "spec": self.target,
            # ``user``, ``caps`` and ``memlimit`` are the host's, not INIT's (in
            # the host, INIT runs in process, where the loader refuses them).
            "props": {k: v for k, v in self.mod.props.items() if k not in HOST_PROPS},
            "modpath": [str(p) for p in self.loader.modpath],
            "majors": {n: int(m) for n, m, _ in devsw.entries()},
            "held": [int(m) for m in devsw.held()],
            "entry_timeout": self.loader.host_timeout,
            "log_level": logging.getLogger().getEffectiveLevel(),
            "memlimit": host.rlimit_as,
            "uid": self.uid,
            "daemon_uid": os.geteuid(),
        }
        try:
            info = check_reply_json(await host.call(P.Kind.LOAD, P.encode_json(req)))
        except DeviceError as exc:
            if host.dead:
                raise HostDied(f"module {self.mod.name}: its host died during INIT") from None
            raise exc from None
        except P.ProtocolError as exc:  # a DeviceError for the loader's callers (autoload)
            raise DeviceError(exc.errno, f"module {self.mod.name}: {exc}") from None
        return info

    def _attach(self, host: HostProcess, info: dict[str, Any]) -> None:
        """Attach a proxy for ``host`` at the majors its ``LOAD`` reply
        ``info`` names; the caller holds the loader's lock.

        Every pair is checked before any is attached (``attach_list``): a
        refused load records no name.

        Raises:
            DeviceError: ``attach_list``'s errno, ``EINVAL`` for other
                majors than the first host's, ``ENOENT`` for a module that
                declares another name than asked for.
        """
        majors = attach_list(info)
        if self.majors is None:
            name = info["name"]
            if name != self.mod.name:
                if not self.by_path:
                    raise DeviceError(errno.ENOENT, f"{self.target} declares module {name[:40]!r}")
                validate_module_name(name)  # from the host: not trusted (modstat, the state, the log)
                if name in self.loader.modules:
                    raise DeviceError(errno.EEXIST)
            try:
                cls = ModuleClass(info["cls"])
            except ValueError:
                cls = ModuleClass.ANY
            self.mod.info = ModuleInfo(name=name, cls=cls)
        elif majors != self.majors:
            raise DeviceError(errno.EINVAL, f"INIT attached {majors}, not {self.majors} as before")
        proxy = make_proxy(host)
        try:
            for n, m in majors:
                devsw.attach(n, proxy, m)
        except BaseException:
            devsw.detach(proxy)
            raise
        self.proxy = proxy
        self.majors = majors
        self.mod.majors = [devsw.getmajor(n) or 0 for n, _ in majors]  # type: ignore[misc]
        self.mod.cdevsws = [proxy] if majors else []

    def _detach(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            devsw_detach(proxy)
        self.mod.cdevsws = []


def attach_list(info: dict[str, Any]) -> list[tuple[str, int]]:
    """The (name, major) pairs a host's ``LOAD`` reply ``info`` (as
    ``check_reply_json`` passed it) asks to attach, each checked against
    the switch as ``devsw.attach`` would, changing nothing: the host is
    not trusted, and a name attached is recorded for ever.

    Raises:
        DeviceError: ``E2BIG`` past ``MAX_ATTACH`` pairs; ``EBADMSG`` for
            a pair that is not [str, int]; ``EINVAL`` for a name or major
            twice; ``devsw.check``'s errno (a bad name: ``EINVAL``,
            ``ENAMETOOLONG``; another name's major, a busy one: ``EEXIST``;
            a major out of range or other than its name's: ``EINVAL``).
    """
    pairs = info.get("majors")
    if not isinstance(pairs, list):
        raise DeviceError(errno.EBADMSG, "malformed LOAD reply")
    if len(pairs) > MAX_ATTACH:
        raise DeviceError(
            errno.E2BIG, f"INIT attached {len(pairs)} drivers; an isolated module may attach {MAX_ATTACH}"
        )
    out: list[tuple[str, int]] = []
    for pair in pairs:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise DeviceError(errno.EBADMSG, "malformed LOAD reply")
        n, m = pair
        if not isinstance(n, str) or not isinstance(m, int) or isinstance(m, bool):
            raise DeviceError(errno.EBADMSG, "malformed LOAD reply")
        if m < 0:  # (-1 asks attach to choose: the host has chosen)
            raise DeviceError(errno.EINVAL, f"major {m} out of range")
        devsw.check(n, m)
        out.append((n, m))
    if len({n for n, _ in out}) < len(out) or len({m for _, m in out}) < len(out):
        raise DeviceError(errno.EINVAL, "INIT attached a driver name or major twice")
    return out


async def load_hosted(
    loader: ModuleLoader, spec: str, props: dict[str, str | int | bool], uid: int = 0
) -> LoadedModule:
    """Load ``spec`` into a host of its own; the caller holds the loader's lock.

    ``uid`` asked (the host refuses, as ``ModuleLoader.load``, a property
    the module declares ``privileged`` from anyone but root).

    Returns:
        The module, not yet in ``loader.modules``.

    Raises:
        DeviceError: as ``ModuleLoader.load`` (``ENOENT``, ``EPERM``,
            ``EEXIST``, INIT's errno), or ``EOWNERDEAD`` if the host died
            while loading.
    """
    name, path, pkgdir = loader.locate(spec)
    if name in loader.modules:
        raise DeviceError(errno.EEXIST)
    target = pkgdir or path
    # The host checks what it runs; checked here first, a refusal says why (modload(8)).
    source = trust.check_code(str(target), package=pkgdir is not None)
    for p in (HOST_USER, HOST_CAPS):
        if p in props and uid != 0:
            log.warning("module %s: uid %d may not give property %s: root's alone", name, uid, p)
            raise DeviceError(errno.EPERM, f"property {p} is root's alone")
    check_memlimit(props)
    user = resolve_user(props[HOST_USER]) if HOST_USER in props else None
    given = parse_caps(props[HOST_CAPS], f"property {HOST_CAPS}") if HOST_CAPS in props else ()
    if given and user is not None:
        raise DeviceError(errno.EINVAL, f"property {HOST_CAPS}: a host run as another user holds none")
    declared = declared_caps(source, name)
    caps = host_caps(declared, given)
    if declared and user is not None:
        log.warning(
            "module %s declares caps %s: a host run as %s holds none",
            name,
            ",".join(declared),
            user.name,
        )
    mod = LoadedModule(ModuleInfo(name=name, cls=ModuleClass.DRIVER), None, path, _code_size(target))  # type: ignore[arg-type]
    mod.props = props
    sup = Supervisor(loader, mod, str(target), loader.host_restarts, uid, user, caps)
    mod.pymod = sup  # type: ignore[assignment]
    mod.host = sup
    sup.by_path = "/" in spec
    await sup.start()
    return mod
