"""Loading and unloading modules: search path, requirements, refcounts, autoload.

Imports trio and the device switch, never pyfuse3. Theory of operation,
after NetBSD's ``sys/kern/kern_module.c``:

*Locate.* An argument with a ``/`` is a path: a package directory (with
``__init__.py``) or a ``.py`` file. Anything else is a name, looked up as
``DIR/NAME/__init__.py`` then ``DIR/NAME.py`` in each module directory in
turn, then among the built-in drivers and installed distributions
(``devfsd.kern.modpath``). The code is checked and read once
(``devfsd.kern.trust``: refused code is ``EPERM`` with the reason), imported
under ``devfsd_modules.NAME`` (so a module's own relative imports work) and
must define ``MODULE`` and ``modcmd``.

*Load.* Loaded already: ``EEXIST``. Not found: ``ENOENT``. Code that does
not import or lacks ``MODULE``/``modcmd``: ``ENOEXEC``. ``MODULE.name`` not
the name asked for: ``ENOENT``. Requirements load first, as *autoloads*;
a cycle is ``EDEADLK``, a required name of 31 bytes or more
``EINVAL``, and a chain nested deeper than ``MODULE_MAX_DEPTH`` (6)
``EMLINK``. Then ``modcmd(INIT, props)``; if it fails, every
cdevsw it attached, every thread it started and every requirement this load
brought in are undone, and its errno is the answer: nothing is left behind.

*Unload.* Unknown: ``ENOENT``. Required by a loaded module: ``EBUSY``.
Else ``modcmd(FINI)``; its error keeps the module. After FINI, anything the
module left attached is detached (with a warning) and its threads are
cancelled.

*Autoload.* Opening a node whose major has a name but no driver loads the
module of that name (flag ``a``). The load runs in a task of the loader's
(``_autoload_run``), one per name at a time: every opener of that name's
nodes waits for it on a ``WaitChannel`` (so its signal ends its own wait
with ``EINTR``, and only its wait) and gets the same outcome. Its
``limit`` (the open's: ``devfsd.specfs.AUTOLOAD_FACTOR`` times the
entry-point limit) bounds the load, the wait for the lock included: past
it the load is cancelled, and undone, as a modload whose client went
(below), and its openers get ``ETIMEDOUT``. Nothing else cancels it (not
its openers' signals, not their going) but the daemon's end
(``unload_all``). The next open tries again. An autoloaded module is offered
``AUTOUNLOAD`` once it has been quiet (no open files on its majors, no
opens) for ``autotime`` seconds; 0 or ``ENOTTY`` lets it go, any other
answer vetoes and it is asked again after another quiet period. (NetBSD
asks once; asking again is kinder to modules that veto while busy.)

One load or unload runs at a time (a trio lock), so the cdevsw entries a
module attaches during INIT are known exactly by comparing the switch
before and after.

*Cancelled.* A load or unload may be cancelled (the control request's
client went: devfsd.control.server; an autoload's limit; the daemon's
end), and the lock is then free. A load
cancelled before INIT returned is a failed load: INIT sees ``Cancelled``
at its wait, and everything is undone as for a failed INIT (the undoing of
requirements is shielded). An unload cancelled in FINI keeps the module,
as a FINI that fails does.
"""

from __future__ import annotations

import contextvars
import errno
import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, final

import trio

from devfsd.cdevsw import _wait
from devfsd.cdevsw._switch import Lwp
from devfsd.cdevsw._table import devsw
from devfsd.contain import contain, valid_errno
from devfsd.errors import DeviceError, printable
from devfsd.kern import trust
from devfsd.kern.modpath import builtin_modules, entry_point_code
from devfsd.kern.module import (
    MODULE_MAX_DEPTH,
    ModCmd,
    ModuleClass,
    ModuleInfo,
    required_name_fits,
    validate_module_name,
)
from devfsd.kern.props import check_props

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from devfsd.cdevsw._dev import Major
    from devfsd.cdevsw._switch import Cdevsw
    from devfsd.kern.module import Props

__all__ = [
    "DEFAULT_AUTOTIME",
    "LoadedModule",
    "ModStat",
    "ModuleLoader",
    "current_module",
    "kthread_create",
    "module_load",
]

log = logging.getLogger(__name__)

DEFAULT_AUTOTIME: Final = 10.0
_PKG: Final = "devfsd_modules"

_current: contextvars.ContextVar[LoadedModule | None] = contextvars.ContextVar(
    "devfsd_current_module", default=None
)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ModStat:
    """One modstat row."""

    name: str
    cls: str
    source: str
    flags: str
    refs: int
    size: int
    requires: tuple[str, ...]


@final
class _Autoload:
    """One autoload under way: its cancel scope, and what its openers wait for."""

    __slots__ = ("chan", "changed", "done", "error", "scope")

    def __init__(self, limit: float | None) -> None:
        self.scope = trio.CancelScope()
        if limit is not None:
            self.scope.relative_deadline = limit
        self.chan = _wait.WaitChannel("autoload")
        self.done = False
        #: The module list changed (``autoload``'s answer).
        self.changed = False
        #: What each opener gets, else ``None``.
        self.error: DeviceError | None = None


#: The caller of an autoload that names none (no signal to look for).
_NOBODY: Final = Lwp(0, 0, 0)


@final
class LoadedModule:
    """A module in the kernel (NetBSD ``module_t``)."""

    def __init__(self, info: ModuleInfo, pymod: types.ModuleType, path: Path, size: int) -> None:
        self.info = info
        self.pymod = pymod
        self.path = path
        self.size = size
        self.autoload = False
        self.refcnt = 0
        self.majors: list[Major] = []
        self.cdevsws: list[Cdevsw] = []
        self.threads: list[trio.CancelScope] = []
        self.last_used = time.monotonic()
        self.props: dict[str, str | int | bool] = {}
        #: An isolated module's supervisor (devfsd.isolate), else None.
        self.host: Any = None

    @property
    def name(self) -> str:
        return self.info.name

    async def modcmd(self, cmd: ModCmd, props: Props | None) -> None:
        """Run the module's modcmd, as this module (for ``kthread_create``).

        Raises:
            DeviceError: whatever the module answered; ``EIO`` (logged) for
                any other exception (``BaseException`` included; see
                ``devfsd.contain``) or a return that is neither ``None`` nor
                an errno.
        """
        fn: Callable[[ModCmd, Props | None], Awaitable[int | None]] = self.pymod.modcmd
        token = _current.set(self)
        try:
            rv = await fn(cmd, props)
        except BaseException as exc:
            raise contain(exc, f"module {self.name}: modcmd({cmd.name})") from None
        finally:
            _current.reset(token)
        if rv is None or (type(rv) is int and rv == 0):
            return
        if not valid_errno(rv):
            log.error("module %s: modcmd(%s) returned %.100r, not None or an errno", self.name, cmd.name, rv)
            raise DeviceError(errno.EIO)
        raise DeviceError(rv)


#: The loader whose load is running in this task (for ``module_load``).
_loading_in: contextvars.ContextVar[ModuleLoader | None] = contextvars.ContextVar(
    "devfsd_loading_in", default=None
)


async def module_load(spec: str, props: Props | None = None) -> LoadedModule:
    """Load another module from a modcmd (NetBSD ``module_load(9)``).

    For a module's INIT that needs another module loaded as a plain load
    (not a requirement: nothing holds it, and it stays if this INIT then
    fails). It counts towards ``MODULE_MAX_DEPTH``; a load of a module whose
    load is under way is ``EDEADLK``.

    Raises:
        DeviceError: as ``ModuleLoader.load``.
        RuntimeError: not called from a modcmd run by a load.
    """
    loader = _loading_in.get()
    if loader is None:
        raise RuntimeError("module_load() outside a modcmd run by a load")
    return await loader._load(spec, check_props(props), autoload=False, brought=[])


def current_module() -> LoadedModule | None:
    """The module whose modcmd (or thread) is running, if any."""
    return _current.get()


_root_nursery: trio.Nursery | None = None


def kthread_create(
    fn: Callable[..., Awaitable[Any]],
    *args: Any,
    name: str | None = None,
    module: LoadedModule | None = None,
) -> trio.CancelScope:
    """Start a background task owned by a module (``kthread_create(9)``).

    The task belongs to ``module``, or, by default, to the module whose
    modcmd or thread is running. From an entry point (where no module is
    "running"), pass the module that INIT saved with ``current_module()``.
    The task is cancelled when the module unloads or its INIT fails; an
    exception in it is logged and ends only that task.

    Returns:
        A cancel scope that stops the task early.

    Raises:
        RuntimeError: no module given or running, or no loader running.
    """
    mod = module if module is not None else _current.get()
    if mod is None:
        raise RuntimeError("kthread_create() outside a module's modcmd or thread, and no module=")
    if _root_nursery is None:
        raise RuntimeError("kthread_create() with no module loader running")
    scope = trio.CancelScope()
    mod.threads.append(scope)

    async def run() -> None:
        token = _current.set(mod)
        try:
            with scope:
                await fn(*args)
        except BaseException as exc:
            # Logged, and the end of this task only (the daemon's own
            # cancellation and SIGINT go on up).
            contain(exc, f"module {mod.name}: thread {name or fn} died,")
        finally:
            _current.reset(token)
            if scope in mod.threads:
                mod.threads.remove(scope)

    _root_nursery.start_soon(run, name=f"{mod.name}:{name or getattr(fn, '__name__', 'thread')}")
    return scope


@final
class ModuleLoader:
    """The kernel's module list.

    Args:
        modpath: directories searched for modules by name, in order; the
            built-in drivers' directory is appended (``modpath.builtin_modules``).
        autoload: whether opening a driverless node may load its module.
        autotime: quiet seconds before an autoloaded module is offered
            ``AUTOUNLOAD`` (0: never).
    """

    def __init__(
        self,
        modpath: Iterable[str | os.PathLike[str]] = (),
        *,
        autoload: bool = True,
        autotime: float = DEFAULT_AUTOTIME,
        include_project_modules: bool = True,
    ) -> None:
        self.modpath = [Path(p) for p in modpath]
        proj = builtin_modules()
        if include_project_modules and proj is not None and proj not in self.modpath:
            self.modpath.append(proj)
        self.autoload_enabled = autoload
        self.autotime = autotime
        self.modules: dict[str, LoadedModule] = {}
        self._lock = trio.Lock()
        self._loading: list[str] = []
        #: Autoloads under way, by name (``autoload``): an open of such a
        #: name's node joins it even once INIT has attached the driver.
        self.autoloads: dict[str, _Autoload] = {}
        #: Where autoloads run while ``run`` runs.
        self._nursery: trio.Nursery | None = None
        self.generation = 0
        #: Set by the file system: how many files are open on a major.
        self.open_count: Callable[[int], int] = lambda maj: 0
        #: Isolated modules (devfsd.isolate): every module (``devfsd
        #: --isolate``), or the names loaded isolated when ``load`` is not
        #: told (autoload, reload); the hosts' heartbeat limit and the
        #: deaths in a row before a module stays down.
        self.isolate_all = False
        self.isolated_names: set[str] = set()
        self.host_timeout: float | None = None
        self.host_restarts = 5
        #: In a module host (devfsd.isolate.host): the capabilities the
        #: daemon let it keep. A module that declares another is refused
        #: (``EPERM``) before its INIT. ``None``: the daemon's loader.
        self.host_caps: frozenset[str] | None = None

    # -- running --------------------------------------------------------

    async def run(
        self, *, autounload: bool = True, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Host module threads and the autounload check until cancelled.

        ``autounload`` False: no check at all, not even every 2.5 s with
        ``autotime`` 0 (a module host: its timer kept a deadline in trio's
        heap, and trio's clock was read for it on every request).
        """
        global _root_nursery
        async with trio.open_nursery() as nursery:
            _root_nursery = self._nursery = nursery
            try:
                task_status.started()
                while autounload:
                    await trio.sleep(autounload_interval(self.autotime))
                    await self._autounload_pass()
                await trio.sleep_forever()
            finally:
                _root_nursery = self._nursery = None
                nursery.cancel_scope.cancel()

    # -- locating -------------------------------------------------------

    def locate(self, spec: str) -> tuple[str, Path, Path | None]:
        """Find a module's code.

        Returns:
            (expected name, file to import, package directory or None).

        Raises:
            DeviceError: ``ENOENT`` (not found), ``ENAMETOOLONG``, ``EINVAL``.
        """
        if "\0" in spec:
            raise DeviceError(errno.EINVAL, "module name or path contains NUL")
        if len(spec.encode()) >= os.pathconf("/", "PC_PATH_MAX"):
            raise DeviceError(errno.ENAMETOOLONG)
        if "/" in spec:
            # Relative to this process's directory: the control API has made
            # a caller's path absolute against the caller's.
            p = Path(os.path.join(os.getcwd(), spec))
            if p.is_dir():
                init = p / "__init__.py"
                if not init.is_file():
                    raise DeviceError(errno.ENOENT, f"{spec}: no __init__.py")
                # The path as given: the trust check follows its links, checking each.
                return p.resolve().name, init, p
            if p.is_file() and p.suffix == ".py":
                return p.stem, p, None
            raise DeviceError(errno.ENOENT)
        name = validate_module_name(spec)
        for d in self.modpath:
            for cand, pkg in ((d / name, True), (d / f"{name}.py", False)):
                if not (cand / "__init__.py" if pkg else cand).is_file():
                    continue
                real = cand.resolve()
                if real.parent != d.resolve():
                    # A symbolic link (or ..) leading out of the module path.
                    log.error("module %s: %s leads out of %s; refused", name, cand, d)
                    raise DeviceError(errno.EPERM)
                return (name, real / "__init__.py", real) if pkg else (name, real, None)
        found = entry_point_code(name)
        if found is not None:
            code, is_pkg = found
            return (name, code / "__init__.py", code) if is_pkg else (name, code, None)
        raise DeviceError(errno.ENOENT)

    def _import(self, name: str, path: Path, pkgdir: Path | None) -> types.ModuleType:
        if _PKG not in sys.modules:
            parent = types.ModuleType(_PKG)
            parent.__path__ = []
            sys.modules[_PKG] = parent
        qual = f"{_PKG}.{name}"
        self._purge(qual)
        try:
            spec = trust.load_code(qual, str(pkgdir or path), package=pkgdir is not None)
        except trust.Untrusted as exc:
            log.error("module %s: %s; refused", name, exc)
            raise
        assert spec.loader is not None
        pymod = importlib.util.module_from_spec(spec)
        sys.modules[qual] = pymod
        try:
            spec.loader.exec_module(pymod)
            # Inside the try: a module's __getattr__ is its code too.
            info = getattr(pymod, "MODULE", None)
            if not isinstance(info, ModuleInfo) or not callable(getattr(pymod, "modcmd", None)):
                log.error(
                    "module %s: %s defines no MODULE = ModuleInfo(...) and modcmd()",
                    name,
                    path,
                )
                raise DeviceError(errno.ENOEXEC)
        except trust.Untrusted as exc:  # a submodule it imports
            self._purge(qual)
            log.error("module %s: %s; refused", name, exc)
            raise
        except BaseException as exc:
            self._purge(qual)
            raise contain(exc, printable(f"module {name}: import of {path}"), errno.ENOEXEC) from None
        return pymod

    @staticmethod
    def _purge(qual: str) -> None:
        for k in [k for k in sys.modules if k == qual or k.startswith(qual + ".")]:
            del sys.modules[k]
        trust.forget_package(qual)

    # -- load / unload --------------------------------------------------

    async def load(
        self,
        spec: str,
        props: Props | None = None,
        *,
        autoload: bool = False,
        uid: int = 0,
        isolated: bool | None = None,
    ) -> LoadedModule:
        """Load a module (``modload``).

        Args:
            spec: a module name, or a path (contains ``/``).
            props: load-time properties for INIT.
            autoload: mark it autoloaded (flag ``a``).
            uid: who asks (``SO_PEERCRED``). Only root (0) may load by path
                or give a property the module declares ``privileged``;
                others get ``EPERM``.
            isolated: run it in a host process of its own (``modload -I``,
                devfsd.isolate); ``None``: if ``spec`` is in ``isolated_names``.

        Returns:
            The loaded module.

        Raises:
            DeviceError: ``EEXIST``, ``ENOENT``, ``ENOEXEC``, ``EDEADLK``,
                ``EINVAL``, ``EMLINK``, ``ENOMEM`` or INIT's own error.
        """
        checked = check_props(props)
        if uid != 0 and "/" in spec:
            # A path makes root look (and run code) anywhere; its errno
            # alone would tell what is in directories the caller cannot read.
            raise DeviceError(errno.EPERM, "loading a module by path is root's alone")
        async with self._lock:
            token = _loading_in.set(self)
            try:
                down = self.modules.get(spec)
                if down is not None and down.host is not None and down.host.down and not autoload:
                    # An isolated module that died too often: modload starts it
                    # afresh, isolated as it was (with -I or without: a plain
                    # modload must not bring a crashing driver into the daemon;
                    # modunload, then modload, does that).
                    self._undo(self.modules.pop(spec))
                    self.generation += 1
                    isolated = True
                if isolated or (isolated is None and (self.isolate_all or spec in self.isolated_names)):
                    return await self._load_isolated(spec, checked, autoload=autoload, uid=uid)
                for host_prop in ("user", "caps", "memlimit"):  # supervisor.HOST_PROPS: a host's, not INIT's
                    if host_prop in checked:
                        raise DeviceError(
                            errno.EINVAL, f"property {host_prop}: only with an isolated load (-I)"
                        )
                return await self._load(spec, checked, autoload=autoload, brought=[], uid=uid)
            finally:
                _loading_in.reset(token)

    async def _load_isolated(
        self, spec: str, props: dict[str, str | int | bool], *, autoload: bool, uid: int
    ) -> LoadedModule:
        from devfsd.isolate.supervisor import load_hosted  # in-process loads never need it

        mod = await load_hosted(self, spec, props, uid)
        mod.autoload = autoload
        self.modules[mod.name] = mod
        self.generation += 1
        log.info(
            "loaded module %s isolated%s from %s",
            mod.name,
            " (autoload)" if autoload else "",
            mod.path,
        )
        return mod

    async def _load(
        self,
        spec: str,
        props: dict[str, str | int | bool],
        *,
        autoload: bool,
        brought: list[str],
        uid: int = 0,
    ) -> LoadedModule:
        if len(self._loading) >= MODULE_MAX_DEPTH:
            # kern_module.c 1.106: "recursion too deep".
            raise DeviceError(errno.EMLINK)
        if "/" not in spec:
            validate_module_name(spec)
            if spec in self.modules:
                raise DeviceError(errno.EEXIST)
            if spec in self._loading:
                raise DeviceError(errno.EDEADLK)
        name, path, pkgdir = self.locate(spec)
        if name in self.modules:
            raise DeviceError(errno.EEXIST)
        if name in self._loading:
            raise DeviceError(errno.EDEADLK)
        self._loading.append(name)
        loading = name
        try:
            # In a worker thread: a module's import (numpy's, for crandom)
            # may read megabytes from a cold disk; FUSE requests go on meanwhile.
            pymod = await trio.to_thread.run_sync(self._import, name, path, pkgdir)
            info: ModuleInfo = pymod.MODULE
            if info.name != name:
                if "/" not in spec:
                    self._purge(f"{_PKG}.{name}")
                    log.error("module %s: %s declares name %r", name, path, info.name)
                    raise DeviceError(errno.ENOENT)
                if info.name in self.modules:
                    self._purge(f"{_PKG}.{name}")
                    raise DeviceError(errno.EEXIST)
                # Loaded by path under another name: re-import under its own.
                self._purge(f"{_PKG}.{name}")
                name = info.name
                pymod = await trio.to_thread.run_sync(self._import, name, path, pkgdir)
                info = pymod.MODULE
            denied = sorted(set(props) & set(info.privileged)) if uid != 0 else []
            if denied:
                self._purge(f"{_PKG}.{name}")
                log.warning("module %s: uid %d may not give property %s: root's alone", name, uid, denied[0])
                raise DeviceError(errno.EPERM, f"property {denied[0]} of {name} is root's alone")
            missing = sorted(set(info.caps) - self.host_caps) if self.host_caps is not None else []
            if missing:
                # The daemon read the caps from the source: not as a literal
                # in a top-level MODULE line, or a requirement's own.
                self._purge(f"{_PKG}.{name}")
                raise DeviceError(
                    errno.EPERM,
                    f"module {name} declares capability {missing[0]}, which its host was not given"
                    " (caps as a literal in a top-level MODULE = ModuleInfo(...), or modload -s caps=)",
                )
            mod = LoadedModule(info, pymod, path, _code_size(pkgdir or path))
            mod.props = props
            mine: list[str] = []
            try:
                for req in info.required:
                    # In kern_module.c's order: too long, self, load.
                    if not required_name_fits(req):
                        raise DeviceError(errno.EINVAL, f"required module name {req!r} too long")
                    if req == name:
                        raise DeviceError(errno.EDEADLK)
                    if req not in self.modules:
                        await self._load(req, {}, autoload=True, brought=mine)
                before = devsw.attached()
                try:
                    await mod.modcmd(ModCmd.INIT, props)
                finally:
                    added = {m: c for m, c in devsw.attached().items() if before.get(m) is not c}
                    mod.majors = list(added)
                    mod.cdevsws = list(dict.fromkeys(added.values()))
            except BaseException:
                self._undo(mod)
                # Shielded: a load cancelled (its modload client gone) still
                # takes back the requirements it brought in.
                with trio.CancelScope(shield=True):
                    for r in reversed(mine):
                        await self._unload(r, quiet=True)
                self._purge(f"{_PKG}.{name}")
                raise
            for req in info.required:
                self.modules[req].refcnt += 1
            mod.autoload = autoload
            self.modules[name] = mod
            self.generation += 1
            brought.append(name)
            log.info("loaded module %s%s from %s", name, " (autoload)" if autoload else "", path)
            return mod
        finally:
            self._loading.remove(loading)

    def _undo(self, mod: LoadedModule) -> None:
        """Remove what a failed INIT or a sloppy FINI left behind."""
        for c in mod.cdevsws:
            if devsw.names_of(c):
                for m in devsw.names_of(c):
                    _wait.abort_sleepers(m)
                devsw.detach(c)
        for scope in list(mod.threads):
            scope.cancel()
        mod.threads.clear()

    async def unload(self, name: str) -> None:
        """Unload a module (``modunload``).

        Raises:
            DeviceError: ``ENOENT`` (not loaded), ``EBUSY`` (required by
                another module), or FINI's own error (the module stays).
        """
        validate_module_name(name)
        async with self._lock:
            await self._unload(name)

    async def _unload(self, name: str, *, quiet: bool = False) -> None:
        mod = self.modules.get(name)
        if mod is None:
            raise DeviceError(errno.ENOENT)
        if mod.refcnt > 0:
            raise DeviceError(errno.EBUSY)
        await mod.modcmd(ModCmd.FINI, None)
        left = [c for c in mod.cdevsws if devsw.names_of(c)]
        if left:
            log.warning("module %s: FINI left %d cdevsw attached; detaching", name, len(left))
        self._undo(mod)
        del self.modules[name]
        for req in mod.info.required:
            if req in self.modules:
                self.modules[req].refcnt -= 1
        self._purge(f"{_PKG}.{name}")
        self.generation += 1
        if not quiet:
            log.info("unloaded module %s", name)

    async def unload_all(self) -> None:
        """At shutdown: unload every module, dependants first; log refusals.

        Autoloads under way are cancelled first (each undone, as past its
        limit), so that one whose INIT never ends does not hold the lock.
        """
        for a in self.autoloads.values():
            a.scope.cancel()
        async with self._lock:
            progress = True
            while self.modules and progress:
                progress = False
                for name in sorted(self.modules, key=lambda n: self.modules[n].refcnt):
                    if self.modules[name].refcnt:
                        continue
                    try:
                        await self._unload(name)
                        progress = True
                    except DeviceError as exc:
                        log.warning("shutdown: module %s refused to unload: %s", name, exc)
                        self._undo(self.modules.pop(name))
                        progress = True
                    break

    # -- autoload ---------------------------------------------------------

    async def autoload(self, name: str, l: Lwp | None = None, limit: float | None = None) -> bool:
        """Load ``name`` because a node of its driver was opened by ``l``.

        Joins the autoload of ``name`` under way, if one is, else starts
        one, bounded by ``limit`` seconds (``None``: not bounded); then
        waits for it to end, as a sleep of ``l``'s (see the module's
        docstring, *Autoload*).

        Returns:
            True if the module list changed (the caller retries the open).

        Raises:
            DeviceError: ``ETIMEDOUT``: the load was cancelled at its limit;
                ``EINTR``: ``l`` has a signal to take (the load goes on);
                ``ENXIO``: the daemon stops; ``EAGAIN``: too many sleepers.
        """
        if not self.autoload_enabled or any(c in name for c in "/.@"):
            return False
        a = self.autoloads.get(name)
        if a is None:
            a = self.autoloads[name] = _Autoload(limit)
            if self._nursery is not None:
                self._nursery.start_soon(self._autoload_run, name, a, limit, name=f"autoload {name}")
            else:  # no loader running (a bare ModuleLoader): in the caller's task
                await self._autoload_run(name, a, limit)
        while not a.done:
            await a.chan.sleep(l or _NOBODY)
        if a.error is not None:
            raise DeviceError(a.error.errno)
        return a.changed

    async def _autoload_run(self, name: str, a: _Autoload, limit: float | None) -> None:
        """The load of one autoload, under its scope; its openers woken at the end."""
        gen = self.generation
        try:
            with a.scope:
                await self.load(name, None, autoload=True)
        except DeviceError as exc:
            if exc.errno != errno.EEXIST:
                log.info("autoload of %s failed: %s", name, exc)
        except Exception as exc:  # (an Untrusted is a DeviceError) a bug: not the loader's end
            a.error = contain(exc, f"autoload of {name}")
        finally:
            if a.scope.cancelled_caught:
                if limit is not None and trio.current_time() >= a.scope.deadline:
                    log.warning(
                        "autoload of %s cancelled: not loaded within %g s; its openers get ETIMEDOUT",
                        name,
                        limit,
                    )
                    a.error = DeviceError(errno.ETIMEDOUT)
                else:
                    log.warning("autoload of %s cancelled: devfsd is stopping", name)
                    a.error = DeviceError(errno.ECANCELED)
            a.changed = self.generation != gen or name in self.modules
            a.done = True
            if self.autoloads.get(name) is a:
                del self.autoloads[name]
            a.chan.wakeup()

    def note_use(self, maj: int) -> None:
        """An open on ``maj`` happened: restart its module's quiet period."""
        for mod in self.modules.values():
            if maj in mod.majors:
                mod.last_used = time.monotonic()
                return

    async def _autounload_pass(self) -> None:
        if self.autotime <= 0:
            return
        now = time.monotonic()
        for name, mod in list(self.modules.items()):
            if not mod.autoload or mod.refcnt or now - mod.last_used < self.autotime:
                continue
            if any(self.open_count(m) for m in mod.majors):
                mod.last_used = now
                continue
            mod.last_used = now
            try:
                await mod.modcmd(ModCmd.AUTOUNLOAD, None)
            except DeviceError as exc:
                if exc.errno != errno.ENOTTY:
                    log.debug("module %s vetoed autounload: %s", name, exc)
                    continue
            try:
                await self.unload(name)
            except DeviceError as exc:
                log.debug("autounload of %s failed: %s", name, exc)

    # -- status -------------------------------------------------------------

    def stat(self) -> list[ModStat]:
        """modstat's rows, sorted by name."""
        return [
            ModStat(
                name=m.name,
                cls=ModuleClass(m.info.cls).label,
                source="filesys",
                flags=("a" if m.autoload else "") + (m.host.flags if m.host is not None else "") or "-",
                refs=m.refcnt,
                size=m.size,
                requires=m.info.required,
            )
            for _, m in sorted(self.modules.items())
        ]


def autounload_interval(autotime: float) -> float:
    """Seconds between the loader's autounload checks for ``autotime``.

    Half of it, between 0.5 and 2.5 s: a module goes between ``autotime``
    and ``autotime`` plus this after its last use. With autotime 0 (never
    autounload) the loader wakes every 2.5 s all the same, to find nothing.
    """
    return max(0.5, min(autotime or 5.0, 5.0) / 2)


def _code_size(p: Path) -> int:
    """Bytes of Python source in a module (modstat's SIZE)."""
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*.py") if f.is_file())
