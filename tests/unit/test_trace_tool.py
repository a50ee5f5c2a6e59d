"""``devfsd trace``'s lines: the format devfsd(8) documents, and the parser tests use."""

from __future__ import annotations

import errno
import os
import select
from datetime import datetime

import pytest

from devfsd.cdevsw import FREAD, FWRITE, makedev
from devfsd.testing.trace import parse_line
from devfsd.tools.trace import format_event, main
from devfsd.trace import TraceEvent

T = 1_764_082_862_123_456_789
WHEN = datetime.fromtimestamp(T / 1e9).strftime("%H:%M:%S.%f")
DEV = makedev(420, 3)


@pytest.mark.parametrize(
    ("call", "a", "b", "err", "text"),
    [
        ("open", FREAD | FWRITE | os.O_NONBLOCK, 0, 0, "open  flags=FREAD|FWRITE|FNONBLOCK 0"),
        ("close", FREAD | 0x40, 0, 0, "close flags=FREAD|0x40 0"),
        ("read", 8192, 0, errno.EINVAL, "read  asked=8192 moved=0 EINVAL"),
        ("write", 5, 5, 0, "write asked=5 moved=5 0"),
        ("poll", select.POLLIN | select.POLLOUT, 0, 0, "poll  events=POLLIN|POLLOUT revents=0 0"),
        ("ioctl", 0x40046D01, 4, errno.ENOTTY, "ioctl cmd=0x40046d01 len=4 ENOTTY"),
    ],
)
def test_line_format(call: str, a: int, b: int, err: int, text: str) -> None:
    line = format_event(TraceEvent(T, 4242, DEV, call, a, b, err, 17))
    assert line == f"{WHEN}    4242 420,3    {text} 17us"
    p = parse_line(line)
    assert (p.pid, p.major, p.minor, p.call, p.usec) == (4242, 420, 3, call, 17)
    assert p.result == (errno.errorcode[err] if err else "0")


def test_unknown_errno_is_a_number() -> None:
    assert format_event(TraceEvent(T, 1, DEV, "read", 1, 0, 4000, 0)).endswith(" 4000 0us")


def test_parse_line_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="not a trace line"):
        parse_line("devfsd trace: 3 events dropped")


@pytest.mark.parametrize(
    "argv",
    [[], ["-m", "mm", "node"], ["a", "b"], ["-n", "0", "x"], ["-n", "x", "x"], ["-b", "65537", "x"], ["-q"]],
)
def test_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and "Usage: devfsd trace [-b events] [-c path] [-n count] node\n" in err
