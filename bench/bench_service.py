"""devfsd as a service: start-to-READY time and resident memory, with no
module and with each built-in module loaded from modules.conf.

Each round starts ``devfsd -f`` as systemd would (``$NOTIFY_SOCKET`` an
abstract datagram socket this script binds), times from just before the
fork to the ``READY=1`` datagram, reads the daemon's ``VmRSS`` (and
``VmHWM``, its peak) from /proc once it is ready, then stops it with
SIGTERM. The configurations rotate within each round, so a machine that
gets busier moves every one alike. The reference, measured in the same
rounds: the interpreter alone (``python -c pass``, time to exit and peak
RSS) and the imports the daemon cannot do without (``import trio,
pyfuse3``), so that figures read as "devfsd adds X to Python".

Needs root and /dev/fuse. Cleans up every mount and daemon, also on
failure (SIGTERM, then SIGKILL and ``fusermount3 -u -z``).

    .venv/bin/python bench/bench_service.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tree, for bench.*

from bench.benchinfo import machine_info, rotations

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"none": "", "mm": "mm\n", "crandom": "crandom\n", "tunwg": "tunwg\n"}
READY_TIMEOUT = 60.0


def devfsd_bin() -> str:
    return str(Path(sys.executable).parent / "devfsd")


def vm(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def one_daemon(base: Path, conf_text: str) -> tuple[float, dict[str, int]]:
    """Seconds from fork to READY=1, and the memory figures once ready."""
    mp = base / "dev"
    mp.mkdir(exist_ok=True)
    conf = base / "modules.conf"
    conf.write_text(conf_text)
    os.chmod(conf, 0o644)
    name = f"devfsd-bench-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind("\0" + name)
        rx.settimeout(READY_TIMEOUT)
        argv = [devfsd_bin(), "-f", "-c", str(base / "c.sock"), "--log", str(base / "log")]
        argv += ["--state", str(base / "state"), "--modules-conf", str(conf), str(mp)]
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            while True:
                data = rx.recv(4096)
                if b"READY=1" in data:
                    took = time.perf_counter() - t0
                    break
            mem = vm(proc.pid)
            expected = 0 if not conf_text else 1
            assert f", {expected} module".encode() in data, data
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], check=False, capture_output=True)
    return took, mem


def one_python(code: str) -> tuple[float, dict[str, int]]:
    """Seconds for ``python -c code`` to exit, and its peak RSS (as VmHWM, KiB)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code + "\nimport resource, sys\n"
            "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    took = time.perf_counter() - t0
    return took, {"VmHWM": int(out.stdout)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = ap.parse_args(argv)
    names = [*CONFIGS, "python", "python+trio+pyfuse3"]
    times: dict[str, list[float]] = {n: [] for n in names}
    rss: dict[str, list[int]] = {n: [] for n in names}
    hwm: dict[str, list[int]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="devfsd-bench-svc-") as tmp:
        for order in rotations(names, args.rounds):
            for n in order:
                if n in CONFIGS:
                    base = Path(tmp) / n
                    base.mkdir(exist_ok=True)
                    took, mem = one_daemon(base, CONFIGS[n])
                    rss[n].append(mem["VmRSS"])
                else:
                    took, mem = one_python("pass" if n == "python" else "import trio, pyfuse3")
                times[n].append(took)
                hwm[n].append(mem["VmHWM"])
    print(json.dumps(machine_info(rounds=args.rounds)))
    ref = statistics.median(times["python"])
    floor = statistics.median(times["python+trio+pyfuse3"])
    head = ("start->READY ms", "x python", "x imports", "RSS MiB", "peak MiB")
    print(f"{'config':22} {head[0]:>16} {head[1]:>9} {head[2]:>9} {head[3]:>8} {head[4]:>9}")
    for n in names:
        t = statistics.median(times[n])
        r = f"{statistics.median(rss[n]) / 1024:8.1f}" if rss[n] else f"{'-':>8}"
        peak = statistics.median(hwm[n]) / 1024
        print(f"{n:22} {t * 1000:16.0f} {t / ref:9.2f} {t / floor:9.2f} {r} {peak:9.1f}")
    if args.json:
        print(json.dumps({"times": times, "rss_kib": rss, "hwm_kib": hwm}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
