"""hostile: a test driver whose host misbehaves towards the daemon (for modload -I).

Its code runs in a module host, where it can reach the host's end of the
daemon socket (``Host.out``, found through ``gc``) and write what no
honest host would. Minors, by what a read does:

- 0: answers ``fast\\n`` at once;
- 1: sleeps until a read of minor 2, then answers ``woken\\n``;
- 2: wakes minor 1's sleepers, waits until their replies have left, then
  answers ``waker\\n`` (a reply for another call arrives first);
- 3: blocks the host's thread for ``slow_ms`` (property, default 5) in
  ``time.sleep``, then answers ``slow\\n``;
- 4: sends ``flood`` (property, default 20000) ``NOTIFY`` messages for
  tokens nobody holds, then answers ``flood\\n``;
- 5: ends its host (``os._exit(7)``) without answering;
- 6: sends a message of an unknown kind instead of a reply;
- 7: answers as many bytes as asked, byte i of the file being
  ``(offset + i) * 7 % 251`` (through the shared buffer from ``SHM_MIN``);
- 8: claims its data is in the shared buffer: for a read that lent no
  slot (under ``SHM_MIN``), or more bytes than the read asked;
- 9: tries to shrink, then grow, the shared buffer, and answers what
  each attempt gave (``0:EPERM 67108864:EPERM``);
- 10: starts a thread that writes lines to stderr (``chatter N``) without
  end, then answers ``chatter\\n``;
- 11: the same with no end of line at all, then answers ``babble\\n``;
- 12: sleeps, and sleeps again after every EINTR (its caller's signals
  passed on by the daemon): never answers, while the host answers its
  heartbeat;
- 13: a read is answered with a ``REPLY`` too short for its errno, a
  write or a poll with a payload too short for its fields (each sent
  before the host's own answer);
- 14: sends ``fuzz`` (property, default 40) messages made at random from
  the read's offset (the seed): replies and notifies for any request id
  (its own too), bodies of any size, kinds a host must not send or that
  do not exist, a header that promises more than ``MAX_BODY``; then
  answers ``fuzzed\n``;
- 15: raises ``ZeroDivisionError`` (a driver's bug: the host logs its
  traceback, then answers ``EIO``);
- 16: writes ``NOTIFY`` messages for tokens nobody holds, each with a
  body of ``flood_body`` bytes (property, default 1 MiB; an honest one
  has none), for ``flood_s`` seconds (property, default 1), straight into
  its pipe as fast as the daemon takes them (its loop held meanwhile),
  then answers ``bigflood\n``;
- 17: writes the first half of a message (a header promising 64 KiB,
  and 100 bytes), then goes on as an honest host would: its reply to
  this read, its heartbeat's answers, all inside that message's body;
- 18: answers ``armed\n``, and from then on the module's FINI never
  ends (it sleeps), while the host answers its heartbeat; 19: the same
  for its AUTOUNLOAD.

Its INIT may answer the daemon's ``LOAD`` itself, before the host does
(whose own answer then comes to a call no longer in flight), by
properties: ``reply`` (a string: the JSON sent as it is), ``names`` (N:
a reply that attaches N drivers ``j0``, ``j1``... at majors 300 on),
``nest`` (N: N ``[`` and nothing else), ``errno`` (an error reply, with
the text ``text``).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import itertools
import os
import random
import select
import sys
import threading
import time
from typing import Any

import trio

from devfsd.cdevsw import Cdevsw, Dev, DeviceError, Lwp, Uio, WaitChannel, devsw_attach, devsw_detach, minor
from devfsd.isolate import protocol as P
from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props

MODULE = ModuleInfo(name="hostile", cls=ModuleClass.DRIVER)

chan = WaitChannel("hostile")
#: Set by a sleeper of minor 1 in the step that answers it (its reply is
#: sent in that step): what a read of minor 2 waits for.
replied: trio.Event | None = None
props: dict[str, object] = {}


def _host() -> Any:
    # The host runs as ``python -m devfsd.isolate.host``: its classes are __main__'s.
    host_cls = getattr(sys.modules.get("__main__"), "Host", None)
    if isinstance(host_cls, type):
        for obj in gc.get_objects():
            if isinstance(obj, host_cls):
                return obj
    raise DeviceError(errno.ENXIO, "not in a module host")


def _host_out() -> Any:
    return _host().out


def _shrink_shared() -> bytes:
    """Try to shrink, then grow, the shared buffer (through its mapping in
    /proc/self/map_files, which a host keeping CAP_SYS_ADMIN may open); what
    each attempt gave."""
    out = []
    for line in open("/proc/self/maps"):  # noqa: SIM115 - a test module
        if "devfsd-host" in line:
            span = line.split()[0]
            fd = os.open(f"/proc/self/map_files/{span}", os.O_RDWR)
            try:
                for size in (0, 64 << 20):
                    try:
                        os.ftruncate(fd, size)
                        out.append(f"{size}:ok")
                    except OSError as exc:
                        out.append(f"{size}:{errno.errorcode[exc.errno or 0]}")
            finally:
                os.close(fd)
            break
    return (" ".join(out) or "no shared buffer").encode() + b"\n"


def _chatter() -> None:
    for n in itertools.count():
        os.write(2, b"".join(b"chatter %d\n" % (100 * n + i) for i in range(100)))


def _babble() -> None:
    while True:
        os.write(2, b"y" * 65536)


def pattern(offset: int, n: int) -> bytes:
    return bytes((offset + i) * 7 % 251 for i in range(n))


async def hostile_read(dev: Dev, uio: Uio, ioflag: int) -> None:
    global replied
    m = minor(dev)
    if m == 0:
        uio.uiomove(b"fast\n")
    elif m == 1:
        await chan.sleep(uio.lwp)
        if replied is not None:
            replied.set()
        uio.uiomove(b"woken\n")  # the host sends this reply in this step
    elif m == 2:
        replied = trio.Event()
        chan.wakeup()
        with trio.fail_after(5):
            await replied.wait()
        uio.uiomove(b"waker\n")
    elif m == 3:
        # Blocks the host's thread on purpose: a host that answers late.
        time.sleep(int(props.get("slow_ms", 5)) / 1000)  # type: ignore[call-overload]  # noqa: ASYNC251
        uio.uiomove(b"slow\n")
    elif m == 4:
        out = _host_out()
        for token in range(int(props.get("flood", 20000))):  # type: ignore[call-overload]
            out.send(P.encode(P.Kind.NOTIFY, 1_000_000 + token))
        uio.uiomove(b"flood\n")
    elif m == 5:
        os._exit(7)
    elif m == 6:
        _host_out().send(P.HEADER.pack(0, 200, 0))
        uio.uiomove(b"never seen\n")
    elif m == 7:
        uio.uiomove(pattern(uio.offset, uio.resid))
    elif m == 12:
        while True:
            try:
                await chan.sleep(uio.lwp)
            except DeviceError as exc:  # EINTR: ignored, on purpose
                if exc.errno != errno.EINTR:
                    raise
    elif m == 13:
        host = _host()
        host.out.send(P.encode(P.Kind.REPLY, host._inline_rid, b"\0\0"))  # an errno is 4 bytes
        uio.uiomove(b"never seen\n")
    elif m == 14:
        _fuzz(_host(), uio.offset)
        uio.uiomove(b"fuzzed\n")
    elif m == 15:
        uio.uiomove(b"%d\n" % (1 // (m - 15)))
    elif m == 16:
        _big_flood(_host_out())
        uio.uiomove(b"bigflood\n")
    elif m in (18, 19):
        props["hang"] = ModCmd.FINI if m == 18 else ModCmd.AUTOUNLOAD
        uio.uiomove(b"armed\n")
    elif m == 17:
        _host_out().send(P.HEADER.pack(64 << 10, P.Kind.REPLY, 0) + bytes(100))
        uio.uiomove(b"never seen\n")
    elif m in (10, 11):
        threading.Thread(target=_chatter if m == 10 else _babble, daemon=True).start()
        uio.uiomove(b"chatter\n" if m == 10 else b"babble\n")
    elif m == 8:  # data "in the slot" of a read that lent none, or more than it asked
        host = _host()
        n = 1 << 20 if uio.resid >= P.SHM_MIN else 1
        host.out.send(P.encode(P.Kind.REPLY_SHM, host._inline_rid, P.SHM_REPLY.pack(n)))
        uio.uiomove(b"never seen\n")
    else:
        uio.uiomove(_shrink_shared())


def _big_flood(out: Any) -> None:
    """Large stray NOTIFYs for ``flood_s`` seconds, written whole (waiting
    for the pipe in ``select``), so that none is cut by another message."""
    size = int(props.get("flood_body", 1 << 20))  # type: ignore[call-overload]
    end = time.monotonic() + float(props.get("flood_s", 1))  # type: ignore[arg-type]
    token = 2_000_000
    while time.monotonic() < end:
        view = memoryview(P.encode(P.Kind.NOTIFY, token, bytes(size)))
        token += 1
        while view:
            select.select([], [out.fd], [], 1.0)
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(out.fd, view) :]


def _fuzz(host: Any, seed: int) -> None:
    """Send up to ``fuzz`` random messages (seeded by ``seed``) to the
    daemon: mostly of kinds a host may send, for any request id (so that
    the daemon takes many before one is fatal), now and then one that
    must kill the host (a kind it must not send, a body too short, a
    negative errno, a slot it was not lent, more than ``MAX_BODY``)."""
    rng = random.Random(seed)
    rid = host._inline_rid
    for _ in range(rng.randrange(1, int(props.get("fuzz", 40)) + 1)):  # type: ignore[call-overload]
        to = rng.choice([rid, rid + 1, max(rid - 1, 0), 0, rng.randrange(1 << 32)])
        fatal = rng.random() < 0.02
        if rng.random() < 0.5:
            err = rng.choice([0, 0, 0, 1, 4, 11, 600, 2**31 - 1])
            body = P.ERRNO.pack(err) + rng.randbytes(rng.choice([0, 1, 4, 8, 200, 70000]))
            data = P.encode(P.Kind.REPLY, to, body)
        elif rng.random() < 0.99:
            data = P.encode(P.Kind.NOTIFY, to, rng.randbytes(rng.choice([0, 0, 3])))
        else:  # its own read's slot, if it lent one: fatal if not, or more than asked
            data = P.encode(P.Kind.REPLY_SHM, rid, P.SHM_REPLY.pack(rng.choice([0, 1, 100, 1 << 16])))
        if fatal:
            data = rng.choice(
                [
                    P.HEADER.pack(0, rng.choice([0, 16, 255, P.Kind.READ, P.Kind.LOAD]), to),
                    P.encode(P.Kind.REPLY, to, b"\0\0"),
                    P.encode(P.Kind.REPLY, to, P.ERRNO.pack(-rng.randrange(1, 1 << 31))),
                    P.encode(P.Kind.REPLY_SHM, to, P.SHM_REPLY.pack(2**32 - 1)),
                    P.HEADER.pack(P.MAX_BODY + 1, P.Kind.REPLY, to),
                ]
            )
        host.out.send(data)


async def hostile_open(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    if minor(dev) > 19:
        raise DeviceError(errno.ENXIO)


async def hostile_write(dev: Dev, uio: Uio, ioflag: int) -> None:
    if minor(dev) == 13:
        host = _host()
        host.out.send(P.reply(host._inline_rid, 0, b"\1"))  # a count is 4 bytes
    uio.getbytes()


async def hostile_poll(dev: Dev, events: int, l: Lwp) -> int:
    if minor(dev) == 13:
        host = _host()
        host.out.send(P.reply(host._inline_rid, 0, b"\0\0"))  # revents and kept are 8
    return events


async def hostile_close(dev: Dev, flag: int, mode: int, l: Lwp) -> None:
    return None


cdevsw = Cdevsw(
    d_open=hostile_open,
    d_close=hostile_close,
    d_read=hostile_read,
    d_write=hostile_write,
    d_poll=hostile_poll,
)


def _lie_about_load() -> None:
    """Answer the ``LOAD`` being served, as the properties say (above)."""
    if "reply" in props:
        payload = str(props["reply"]).encode()
    elif "names" in props:
        n = int(props["names"])  # type: ignore[call-overload]
        majors = [[f"j{i}", 300 + i] for i in range(n)]
        payload = P.encode_json({"name": "hostile", "cls": 3, "majors": majors})
    elif "nest" in props:
        payload = b"[" * int(props["nest"])  # type: ignore[call-overload]
    elif "errno" in props:
        host = _host()
        err = int(props["errno"])  # type: ignore[call-overload]
        host.out.send(P.reply(host._inline_rid, err, str(props.get("text", "")).encode()))
        return
    else:
        return
    host = _host()
    host.out.send(P.reply(host._inline_rid, 0, payload))


async def modcmd(cmd: ModCmd, p: Props | None) -> None:
    if cmd != ModCmd.INIT and props.get("hang") == cmd:
        await trio.sleep_forever()
    if cmd == ModCmd.INIT:
        props.clear()
        props.update(p or {})
        devsw_attach("hostile", cdevsw)
        _lie_about_load()
    elif cmd == ModCmd.FINI:
        devsw_detach(cdevsw)
    else:
        raise DeviceError(errno.ENOTTY)
