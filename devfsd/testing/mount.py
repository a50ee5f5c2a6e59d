"""A real devfsd on a temporary mountpoint, for black-box tests.

Touches the world: starts ``devfsd -f`` as a child process, waits for the
mount and the control socket with a deadline (never a fixed sleep), and
always tears down: SIGTERM, then SIGKILL and a lazy unmount if the daemon
does not go within the deadline.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

from devfsd.control.client import Client
from devfsd.errors import ControlError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["DevfsdMount", "is_mounted", "run", "tool", "wait_for"]

START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 20.0


def wait_for(cond: object, timeout: float, what: str, interval: float = 0.01) -> None:
    """Poll ``cond()`` until it is true; ``TimeoutError`` naming ``what`` after ``timeout``."""
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether a file system is mounted at ``path`` (reads mountinfo only)."""
    real = os.path.realpath(path) if not _stale(path) else os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == real:
                return True
    return False


def _stale(path: str | os.PathLike[str]) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def tool(name: str) -> str:
    """A console script of this venv (beside the running python), else PATH's.

    Raises:
        FileNotFoundError: neither has it.
    """
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(name)
    return found


_TOOLS: Final = ("devfsd", "modload", "modunload", "modstat", "devfs-mknod", "tunwg-bridge")


def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program (a devfsd tool by bare name, or any path) and collect its output."""
    argv = list(argv)
    if "/" not in argv[0] and argv[0] in _TOOLS:
        argv[0] = tool(argv[0])
    return subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=env, check=False)


@final
class DevfsdMount:
    """A devfsd serving ``path`` with its control socket at ``control``.

    Use as a context manager; ``start()`` returns once both are ready.
    """

    def __init__(
        self,
        base: str | os.PathLike[str],
        *,
        modpath: Iterable[str | os.PathLike[str]] = (),
        args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        self.base = Path(base)
        self.path = self.base / "dev"
        self.control = str(self.base / "control.sock")
        self.log = self.base / "devfsd.log"
        #: The state directory: a new DevfsdMount on the same base finds
        #: what the last one left.
        self.state = self.base / "state"
        self.modpath = [str(p) for p in modpath]
        self.args = list(args)
        #: A command the daemon runs under, e.g. ``nsenter --net=...``.
        self.wrapper = list(wrapper)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment for tools: ``DEVFSD_CONTROL`` points here."""
        return {**os.environ, "DEVFSD_CONTROL": self.control}

    def client(self) -> Client:
        return Client(self.control, timeout=30)

    def start(self) -> DevfsdMount:
        self.base.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # possibly a stale mount, which devfsd clears
            self.path.mkdir()
        argv = [*self.wrapper, tool("devfsd"), "-f", "--control", self.control, "--log", str(self.log)]
        argv += ["--state", str(self.state)]
        for d in self.modpath:
            argv += ["--modpath", d]
        argv += [*self.args, str(self.path)]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_for(self._ready, START_TIMEOUT, f"devfsd on {self.path}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"devfsd exited with {self.proc.returncode}: {err}\n{self.log_text()}")
        if not is_mounted(self.path):
            return False
        try:
            self.client().ping()
        except ControlError:
            return False
        return True

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL and a lazy unmount past the deadline.

        Returns:
            The daemon's exit status (negative: killed by that signal).
        """
        proc, self.proc = self.proc, None
        rc: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait(STOP_TIMEOUT)
            if proc.stderr:
                proc.stderr.close()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False, capture_output=True)
        return rc

    def __enter__(self) -> DevfsdMount:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
