"""The major table: name <-> major, and which ``Cdevsw`` sits at each major.

Trio-free and pyfuse3-free. Theory of operation, after NetBSD's
``sys/kern/subr_devsw.c``:

There are two tables. ``_conv`` maps a driver *name* to its character major
and outlives the driver: it is seeded with the reserved majors below (as
NetBSD seeds it from the ``majors`` files, so ``mknod`` resolves ``tunwg``
before the module is loaded, and opening such a node can autoload it), and
every name that ever attached keeps its entry until the daemon stops (or,
with a state directory, for good). ``_slots`` maps a major to the attached
``Cdevsw``, and is cleared by ``devsw_detach``.

A state's rows (``restore``) that clash with a reservation lose to it (an
upgrade may reserve a name an older devfsd gave another major); a major
whose name a reservation took is held, given to no other name, so that the
nodes made with it reach no other driver.

``devsw_attach(name, cdevsw, -1)`` adopts the name's major if it has one,
else takes the lowest free major at or above ``DYNAMIC_MAJOR_BASE`` that no
name reserves. An explicit major that differs from the name's recorded one
is ``EINVAL``; a busy slot is ``EEXIST``; running out is ``ENOMEM``.

Names (``check_name``). NetBSD's ``devsw_attach`` refuses only a NULL name:
its callers are kernel code. Here a name can come from a module host that
is not trusted (devfsd.isolate), and every new one is kept for ever (the
state directory), printed by modstat and ``mknod -l`` and logged; so a name
is 1 to ``MAXDEVNAME`` (31) characters of printable ASCII other than ``/``
(no white space, no control characters), not starting with a digit
(mknod(8) takes a leading digit for a number: such a name could never be
named there). NetBSD's ``kern.drivers`` carries 23 characters of a name;
31 is a module name's limit (``MAXMODNAME`` - 1), so a driver can be named
after its module. Too long is ``ENAMETOOLONG``, anything else ``EINVAL``.

One table per process (as one kernel per machine): ``devsw`` is the global
instance; tests make their own ``DevswTable`` or call ``reset()``.
"""

from __future__ import annotations

import errno
import weakref
from typing import TYPE_CHECKING, Final, final

from devfsd.cdevsw._dev import MAXDEVSW, Major
from devfsd.errors import DeviceError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from devfsd.cdevsw._switch import Cdevsw

__all__ = [
    "DYNAMIC_MAJOR_BASE",
    "MAXDEVNAME",
    "RESERVED_MAJORS",
    "DevswTable",
    "check_major",
    "check_name",
    "devsw",
]

#: Majors reserved by name before any driver attaches (NetBSD's ``majors``).
#: ``crandom`` takes rperm's 420; ``tunwg`` NetBSD tun's 40; ``mm`` NetBSD's 2.
RESERVED_MAJORS: Final[Mapping[str, int]] = {"mm": 2, "tunwg": 40, "crandom": 420}

#: Majors handed out to names with no reservation start here.
DYNAMIC_MAJOR_BASE: Final = 256

#: Longest driver name, in characters (a module name's: ``MAXMODNAME`` - 1).
MAXDEVNAME: Final = 31
#: What a driver name is made of: printable ASCII but ``/`` (and space).
_NAME_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"/"}


def check_name(name: object) -> str:
    """Check a driver name (see "Names" above).

    Returns:
        ``name``.

    Raises:
        DeviceError: ``ENAMETOOLONG`` past ``MAXDEVNAME`` characters,
            ``EINVAL`` for anything but a non-empty string of printable
            ASCII without ``/`` or white space, not starting with a digit.
    """
    if not isinstance(name, str) or not name:
        raise DeviceError(errno.EINVAL, "driver name must be a non-empty string")
    if len(name) > MAXDEVNAME:
        raise DeviceError(errno.ENAMETOOLONG, f"driver name of {len(name)} characters (at most {MAXDEVNAME})")
    if not _NAME_CHARS.issuperset(name) or name[0].isdigit():
        raise DeviceError(errno.EINVAL, f"invalid driver name {name!r}")
    return name


def check_major(maj: object) -> Major:
    """Check a major given, not chosen: an ``int`` (not a ``bool``) from 0
    to ``MAXDEVSW`` - 1.

    Returns:
        ``maj``.

    Raises:
        DeviceError: ``EINVAL`` for anything else.
    """
    if not isinstance(maj, int) or isinstance(maj, bool):  # (untyped callers: a module, a host, a state)
        raise DeviceError(errno.EINVAL, f"major {maj!r} is not an int")
    if not 0 <= maj < MAXDEVSW:
        raise DeviceError(errno.EINVAL, f"major {maj} out of range 0..{MAXDEVSW - 1}")
    return Major(maj)


@final
class DevswTable:
    """The name <-> major table and the attached ``Cdevsw`` per major."""

    def __init__(
        self,
        reserved: Mapping[str, int] = RESERVED_MAJORS,
        dynamic_base: int = DYNAMIC_MAJOR_BASE,
    ) -> None:
        self._conv: dict[str, Major] = {n: Major(m) for n, m in reserved.items()}
        self._slots: dict[int, Cdevsw] = {}  # keyed by Major; int for lookup()
        self._names: dict[Major, str] = {m: n for n, m in self._conv.items()}
        #: Majors a state gave to names a reservation has since taken
        #: (``restore``): given to no other name.
        self._held: dict[Major, str] = {}
        self._dynamic_base = dynamic_base
        #: Called with (name, major) whenever ``_conv`` gains an entry, so a
        #: state directory can persist it.
        self.on_new_name: Callable[[str, Major], None] | None = None
        #: Called with each ``Cdevsw`` as it is detached, weakly held (a
        #: ``SpecFs`` marks the files opened through it dead, so its I/O
        #: path tests one attribute instead of looking the major up).
        self._on_detach: list[weakref.WeakMethod[Callable[[Cdevsw], None]]] = []

    # -- lookups (hot path: a dict get each) ------------------------------

    def lookup(self, maj: int) -> Cdevsw | None:
        """The ``Cdevsw`` attached at ``maj``, or ``None``."""
        return self._slots.get(maj)  # on every I/O: no NewType call

    def getname(self, maj: int) -> str | None:
        """The name that owns ``maj`` (attached or not), or ``None``."""
        return self._names.get(Major(maj))

    def getmajor(self, name: str) -> Major | None:
        """The major recorded for ``name``, or ``None``."""
        return self._conv.get(name)

    def entries(self) -> list[tuple[str, Major, bool]]:
        """Every (name, major, attached) in major order (``mknod -l``)."""
        return sorted(((n, m, m in self._slots) for n, m in self._conv.items()), key=lambda e: e[1])

    def names_of(self, cdevsw: Cdevsw) -> list[Major]:
        """The majors at which ``cdevsw`` is attached."""
        return [Major(m) for m, c in self._slots.items() if c is cdevsw]

    def attached(self) -> dict[Major, Cdevsw]:
        """A copy of every attached (major, cdevsw)."""
        return {Major(m): c for m, c in self._slots.items()}

    # -- attach / detach ---------------------------------------------------

    def attach(self, name: str, cdevsw: Cdevsw, maj: int = -1) -> Major:
        """Attach ``cdevsw`` under ``name`` (NetBSD ``devsw_attach``).

        Args:
            name: the driver name (``mknod`` resolves it to the major).
            cdevsw: the entry points.
            maj: a major, or -1 for the name's recorded one or a free one.

        Returns:
            The major attached.

        Raises:
            DeviceError: ``EINVAL`` (a bad name, see ``check_name``; a
                major out of range or differing from the name's),
                ``ENAMETOOLONG`` (a name too long), ``EEXIST`` (slot busy),
                ``ENOMEM`` (no free major).
        """
        chosen = self.check(name, maj)
        if name not in self._conv:
            # Recorded first: a name whose record fails (a full state disk)
            # gets no major, so the next attach records it again.
            if self.on_new_name is not None:
                self.on_new_name(name, chosen)
            self._conv[name] = chosen
            self._names[chosen] = name
        self._slots[chosen] = cdevsw
        return chosen

    def check(self, name: str, maj: object = -1) -> Major:
        """What ``attach(name, _, maj)`` would do, changing nothing: the
        major it would attach at, or its error (see ``attach``)."""
        check_name(name)
        # -1: the name's major, or a free one.
        given = None if isinstance(maj, int) and maj == -1 else check_major(maj)
        known = self._conv.get(name)
        if known is not None:
            if given not in (None, known):
                raise DeviceError(errno.EINVAL, f"{name} has major {known}, not {given}")
            chosen = known
        elif given is None:
            chosen = self._free_major()
        else:
            owner = self._names.get(given) or self._held.get(given)
            if owner is not None:
                raise DeviceError(errno.EEXIST, f"major {given} belongs to {owner}")
            chosen = given
        if chosen in self._slots:
            raise DeviceError(errno.EEXIST, f"major {chosen} is in use")
        return chosen

    def detach(self, cdevsw: Cdevsw) -> None:
        """Remove ``cdevsw`` from every slot it holds (by identity).

        The name keeps its major. Callers (``devsw_detach``) wake sleepers.
        """
        for m in self.names_of(cdevsw):
            del self._slots[m]
        self._detached(cdevsw)

    def on_detach(self, method: Callable[[Cdevsw], None]) -> None:
        """Have bound method ``method`` called with every ``Cdevsw`` detached
        (held weakly: it goes with its object)."""
        self._on_detach.append(weakref.WeakMethod(method))

    def _detached(self, cdevsw: Cdevsw) -> None:
        alive = []
        for ref in self._on_detach:
            fn = ref()
            if fn is not None:
                fn(cdevsw)
                alive.append(ref)
        self._on_detach = alive

    def restore(self, conv: Mapping[str, int]) -> list[tuple[str, Major, str, Major]]:
        """Add remembered name -> major entries (from a state directory,
        whose ``majors`` checked them with ``check_name`` and ``check_major``).

        A row that clashes with an entry already here (a reservation: a
        newer devfsd may reserve a name, or a major, that an older one gave
        out otherwise) loses: the reservation wins, and the row is left
        out. Its major, if the reservation took its name, is held: never
        given to another name, so that nodes made with it never reach a
        driver they were not made for (and the state never records one
        major twice).

        Returns:
            Each row left out, as (name, major, the name that owns the
            major now or ``name`` itself, the major ``name`` has now or -1).
        """
        clashes: list[tuple[str, Major, str, Major]] = []
        for n, m in conv.items():
            maj = Major(m)
            known, owner = self._conv.get(n), self._names.get(maj)
            if known is None and owner is None:
                self._conv[n] = maj
                self._names[maj] = n
            elif known != maj:
                if owner is None:
                    self._held[maj] = n
                clashes.append((n, maj, owner or n, Major(-1) if known is None else known))
        return clashes

    def held(self) -> list[Major]:
        """The majors ``restore`` held (a module host is told them)."""
        return sorted(self._held)

    def hold(self, majors: Iterable[int], name: str = "a state's row") -> None:
        """Hold ``majors`` (given by a daemon to its module host, so that
        the host never picks one for a new name) unless a name has them."""
        for m in majors:
            if Major(m) not in self._names:
                self._held.setdefault(Major(m), name)

    def _free_major(self) -> Major:
        for m in range(self._dynamic_base, MAXDEVSW):
            if Major(m) not in self._names and Major(m) not in self._slots and Major(m) not in self._held:
                return Major(m)
        raise DeviceError(errno.ENOMEM, "no free major")

    def reset(self) -> None:
        """Forget everything but the reservations (tests only)."""
        hooks = self._on_detach
        for cdevsw in {id(c): c for c in self._slots.values()}.values():
            self._detached(cdevsw)
        self.__init__()
        self._on_detach = hooks


#: The process's table.
devsw: Final = DevswTable()
