"""A module host's reader never waits without a bound while a task of its
own batch is due (``host.Host.due``, kept by ``_Handoff``).

trio takes its run queue out as a batch before it runs it, so a task
woken in the same turn as the reader is in no queue while the reader
runs. Were the reader to wait for the next request in ``poll(2)`` with no
timeout then, that task would wait for the next request too: for ever,
if none comes. Here the host runs in this process, with no module (a
``READ`` is answered ``ENXIO`` at once, in the reader), beside a task
``T`` that one step of another task wakes in the same turn as the
reader; trio puts either first in the batch at random, so each round has
an even chance of the order that hung, and 24 rounds all but surely meet it.
"""

from __future__ import annotations

import errno
import os
import socket
import threading

import trio

from devfsd.isolate import protocol as P
from devfsd.isolate.host import Host
from tests.unit.conftest import needs_fast_paths

ROUNDS = 24
#: How long a round may take before it counts as hung (seconds): the
#: answer takes microseconds.
ROUND_LIMIT = 10.0


@needs_fast_paths
def test_a_task_woken_with_the_reader_runs_while_no_request_comes() -> None:
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    ctl_a, ctl_b = socket.socketpair()  # the driver thread to task X: "go"
    t_a, t_b = socket.socketpair()  # X to task T: woken with the reader
    res_a, res_b = socket.socketpair()  # T to the driver thread: "ran"
    socks = (ctl_a, ctl_b, t_a, t_b, res_a, res_b)
    for s in (ctl_b, t_b):
        s.setblocking(False)
    request = P.encode(P.Kind.READ, 7, P.READ.pack(1, 1, 0))
    hung: list[int] = []

    def drive() -> None:
        res_b.settimeout(ROUND_LIMIT)
        try:
            for i in range(ROUNDS):
                ctl_a.send(b"x")
                try:
                    res_b.recv(1)
                except TimeoutError:
                    hung.append(i)
                    return
        finally:
            os.close(req_w)  # the host ends: its reader sees the pipe's end

    async def x_task() -> None:
        while True:
            await trio.lowlevel.wait_readable(ctl_b)
            ctl_b.recv(1)
            # One step: the request and T's byte, so that trio's next epoll
            # wait finds both and wakes the reader and T in one batch.
            os.write(req_w, request)
            t_a.send(b"x")

    async def t_task() -> None:
        while True:
            await trio.lowlevel.wait_readable(t_b)
            t_b.recv(1)
            res_a.send(b"x")

    async def main() -> None:
        host = Host(req_r, rep_w)
        async with trio.open_nursery() as n:
            n.start_soon(x_task)
            n.start_soon(t_task)
            await host.run()
            n.cancel_scope.cancel()

    driver = threading.Thread(target=drive, daemon=True)
    try:
        driver.start()
        trio.run(main)
        driver.join(ROUND_LIMIT)
        replies = os.read(rep_r, 1 << 16)
    finally:
        for fd in (req_r, rep_r, rep_w):
            os.close(fd)
        for s in socks:
            s.close()
    assert not hung, f"round {hung[0]}: T did not run while the reader waited for a request"
    # Every round's READ was answered by the reader: ENXIO, no module.
    rx = P.Receiver()
    rx.feed(replies)
    answers = []
    while (m := rx.next_message()) is not None:
        answers.append((m.kind, m.rid, P.parse_reply(m.body)[0]))
    assert answers == [(P.Kind.REPLY, 7, errno.ENXIO)] * ROUNDS
