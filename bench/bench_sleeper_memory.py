"""What a read asleep in a driver costs the daemon, against what it costs
the user who parks it there.

``python bench/bench_sleeper_memory.py [--counts 1000,2000,4000] [--isolated] [--user nobody] [--share 100]``

Any user who may open a node whose reads block (msgq's, before anything is
written; tunwg's, with no packet) can leave a read asleep in the daemon:
each costs the daemon a trio task and its FUSE request. For each count N
this starts a daemon (msgq in process, or with ``--isolated`` in a host of
its own), makes 50-reader msgq units, then as ``--user`` runs one process
of N threads, each blocked in read(2) on a descriptor of its own (threads:
the cheapest sleeper a user has; each counts against its RLIMIT_NPROC),
waits until the daemon reports N sleepers, and reads:

- the daemon's VmRSS (and its hosts', isolated) before and after;
- the sleeping process's VmRSS (the user's own memory);
- /proc/meminfo's KernelStack, PageTables and Slab (SUnreclaim +
  SReclaimable) before and after: what the kernel holds for the blocked
  threads and their FUSE requests (machine-wide: other load moves Slab
  a little; KernelStack and PageTables are exact enough).

The daemon runs with ``-o share=`` ``--share`` (100 by default: one user
may take the users' whole part, ``MAX_SLEEPERS`` less root's
``ROOT_SLEEPERS``, so that one user's sleepers measure the most the
daemon holds; the daemon's own default lets one user take half). When N
reaches that user's share, one more read by the same user and one by
root: the errno each gets, or "asleep" (the read sleeps: the reserve let
it in; 2 s is taken as asleep). Every sleeper is
killed, the daemon stopped and its mount removed, also on failure.

Reference figures, not a test. Needs root and /dev/fuse.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devfsd.cdevsw import makedev  # noqa: E402
from devfsd.cdevsw._wait import MAX_SLEEPERS, ROOT_SLEEPERS  # noqa: E402
from devfsd.limits import Limits  # noqa: E402
from devfsd.testing.mount import DevfsdMount, wait_for  # noqa: E402

MODS = ROOT / "tests" / "modules"
PER_UNIT = 50

#: N threads, each in read(2) on its own descriptor of argv[2+i % units].
SLEEPERS = """\
import os, sys, threading
n, paths = int(sys.argv[1]), sys.argv[2:]
threading.stack_size(64 * 1024)
fds = [os.open(paths[i % len(paths)], os.O_RDONLY) for i in range(n)]
for fd in fds:
    threading.Thread(target=os.read, args=(fd, 64), daemon=True).start()
print("started", flush=True)
sys.stdin.read()
"""

#: One more read, non-blocking answer expected: prints its errno name.
ONE_MORE = """\
import errno, os, sys, threading
said = []
def read():
    try:
        fd = os.open(sys.argv[1], os.O_RDONLY)  # isolated, an open is a call into the host too
        os.read(fd, 64)
        said.append("read")
    except OSError as e:
        said.append(errno.errorcode[e.errno])
t = threading.Thread(target=read, daemon=True)
t.start()
t.join(2.0)
print(said[0] if said else "asleep")
"""


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v.split()[0])
    return out


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def family(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid, *map(int, f.read().split())]


def as_user(user: str) -> list[str]:
    if user == "root":
        return []
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]


def one(n: int, isolated: bool, user: str, share: int) -> dict[str, object]:
    args = ["-o", f"share={share}", *(["--isolate"] if isolated else [])]
    base = tempfile.mkdtemp(dir="/tmp")
    os.chmod(base, 0o755)
    python = os.path.realpath(sys.executable)
    proc: subprocess.Popen[str] | None = None
    try:
        with DevfsdMount(base, modpath=[MODS], args=args) as m:
            assert m.proc is not None
            c = m.client()
            c.modload("msgq")
            maj = {name: mj for name, mj, _ in c.drivers()}["msgq"]
            units = max(1, -(-n // PER_UNIT))
            paths = []
            for u in range(units + 1):  # the last: for the reads past the limit
                p = m.path / f"q{u}"
                os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, u))
                paths.append(str(p))
            daemon0 = sum(rss_kb(p) for p in family(m.proc.pid))
            mem0 = meminfo()
            proc = subprocess.Popen(
                [*as_user(user), python, "-c", SLEEPERS, str(n), *paths[:units]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started"
            wait_for(lambda: c.status()["sleepers"] == n, 120, f"{n} sleepers", 0.05)
            mem1 = meminfo()
            daemon1 = sum(rss_kb(p) for p in family(m.proc.pid))
            user_rss = rss_kb(proc.pid)
            past = {}
            if n >= Limits(share=share).share_of(MAX_SLEEPERS - ROOT_SLEEPERS):
                for who in (user, "root"):
                    r = subprocess.run(
                        [*as_user(who), python, "-c", ONE_MORE, paths[units]],
                        capture_output=True,
                        text=True,
                        timeout=30,
                        check=False,
                    )
                    past[who] = r.stdout.strip() or r.stderr.strip()[-200:]
            kstack = mem1["KernelStack"] - mem0["KernelStack"]
            ptables = mem1["PageTables"] - mem0["PageTables"]
            slab = (mem1["SUnreclaim"] + mem1["SReclaimable"]) - (mem0["SUnreclaim"] + mem0["SReclaimable"])
            result: dict[str, object] = {
                "sleepers": n,
                "isolated": isolated,
                "user": user,
                "share": share,
                "daemon_rss_kb": [daemon0, daemon1],
                "daemon_kb_per_sleeper": round((daemon1 - daemon0) / n, 2),
                "user_rss_kb": user_rss,
                "user_kb_per_sleeper": round(user_rss / n, 2),
                "kernel_stack_kb_per_sleeper": round(kstack / n, 2),
                "page_tables_kb_per_sleeper": round(ptables / n, 2),
                "slab_kb_per_sleeper": round(slab / n, 2),
                "kernel_kb_per_sleeper": round((kstack + ptables + slab) / n, 2),
                "past_max_sleepers": past,
            }
            proc.kill()
            proc.wait(30)
            wait_for(lambda: c.status()["sleepers"] == 0, 60, "no sleepers left", 0.05)
            return result
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1000,2000,4000")
    ap.add_argument("--isolated", action="store_true")
    ap.add_argument("--user", default="nobody", help="who parks the reads (default nobody)")
    ap.add_argument("--share", type=int, default=100, help="the daemon's -o share= (default 100)")
    a = ap.parse_args()
    for n in (int(x) for x in a.counts.split(",")):
        print(json.dumps(one(n, a.isolated, a.user, a.share)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
