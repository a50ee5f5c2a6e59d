"""``devfsd unit [MOUNTPOINT]`` and ``devfsd logrotate [FILE]``: the files a
service installation needs, printed for the devfsd that runs the command.

The unit is written, not copied from the package: its ``ExecStart=`` must
name the devfsd script of this installation (a venv, /usr/local, /usr),
which only the installed devfsd knows. It is ``Type=notify`` (devfsd tells
systemd when the mount and the control socket serve) and runs devfsd with
``-f`` (systemd is the one that detaches), options from
``$DEVFSD_OPTIONS`` in /etc/default/devfsd. It must not have ``PrivateTmp=``,
``ProtectSystem=`` or any other setting that gives the service a mount
namespace of its own: the mount would then be seen by nobody else.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import TYPE_CHECKING, Final

from devfsd.tools import errline

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["DEFAULT_MOUNTPOINT", "logrotate_text", "main", "unit_text"]

DEFAULT_MOUNTPOINT: Final = "/run/devfsd/dev"
DEFAULT_LOG: Final = "/var/log/devfsd.log"
OPTIONS_FILE: Final = "/etc/default/devfsd"

_UNIT: Final = """\
# devfsd.service, written by `devfsd unit`: a userland /dev on {mountpoint}.
# Install: devfsd unit > /etc/systemd/system/devfsd.service
#          systemctl daemon-reload && systemctl enable --now devfsd
# Options (devfsd(8)) go in {options} as DEVFSD_OPTIONS="...".
[Unit]
Description=devfsd userland /dev on {mountpoint}
Documentation=man:devfsd(8)
After=local-fs.target
ConditionPathExists=/dev/fuse

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-{options}
RuntimeDirectory=devfsd
RuntimeDirectoryMode=0755
# Kept across restarts: a crashed daemon's stale mount is cleared by the next one.
RuntimeDirectoryPreserve=restart
ExecStartPre=-/bin/mkdir -p {mountpoint}
ExecStart={devfsd} -f $DEVFSD_OPTIONS {mountpoint}
# SIGHUP reopens the log file given with --log.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
TimeoutStopSec=30
LimitNOFILE=65536
# No PrivateTmp=, ProtectSystem= or other mount namespace: others must see the mount.

[Install]
WantedBy=multi-user.target
"""

_LOGROTATE: Final = """\
# logrotate for devfsd --log {log}, written by `devfsd logrotate`.
# Install: devfsd logrotate > /etc/logrotate.d/devfsd
{log} {{
\tweekly
\trotate 4
\tcompress
\tdelaycompress
\tmissingok
\tnotifempty
\tpostrotate
\t\tsystemctl kill --signal=HUP --kill-whom=main devfsd.service 2>/dev/null || pkill -HUP -x devfsd || true
\tendscript
}}
"""


def installed_devfsd() -> str:
    """The absolute path of this installation's devfsd script."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "devfsd" and os.access(argv0, os.X_OK):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "devfsd")
    if os.access(beside, os.X_OK):
        return beside
    return shutil.which("devfsd") or "/usr/local/bin/devfsd"


def unit_text(mountpoint: str = DEFAULT_MOUNTPOINT, devfsd: str | None = None) -> str:
    return _UNIT.format(mountpoint=mountpoint, devfsd=devfsd or installed_devfsd(), options=OPTIONS_FILE)


def logrotate_text(log: str = DEFAULT_LOG) -> str:
    return _LOGROTATE.format(log=log)


def _bad_path(prog: str, arg: str) -> bool:
    # systemd and logrotate split on white space; '%' and '$' are expanded.
    if not arg.startswith("/") or any(c.isspace() or c in "%$\\\"'" for c in arg):
        what = "not an absolute path without spaces, quotes, % or $"
        sys.stderr.write(errline(f"devfsd {prog}", arg, what))
        return True
    return False


def main(word: str, argv: Sequence[str]) -> int:
    """``devfsd unit [MOUNTPOINT]`` or ``devfsd logrotate [FILE]``; prints the file."""
    usage = f"usage: devfsd {word} [{'MOUNTPOINT' if word == 'unit' else 'LOGFILE'}]\n"
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write(usage)
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        sys.stderr.write(usage)
        return 1
    if argv and _bad_path(word, argv[0]):
        return 1
    if word == "unit":
        sys.stdout.write(unit_text(*argv))
    else:
        sys.stdout.write(logrotate_text(*argv))
    return 0
