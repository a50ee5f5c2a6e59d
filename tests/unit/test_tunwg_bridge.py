"""tunwg-bridge's batch framing against the driver's parser, and its argument errors."""

from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.errors import DeviceError
from devfsd.tools import tunwg_bridge
from devfsd.tools.tunwg_bridge import split_batch
from modules.tunwg.tun import parse_batch

MTU = 1420

ip_packets = st.lists(
    st.builds(
        lambda version, body: bytes([version << 4]) + body,
        st.sampled_from([4, 6]),
        st.binary(min_size=0, max_size=MTU - 1),
    ),
    min_size=1,
    max_size=20,
)


def frame(packets: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(p)) + p for p in packets)


@given(ip_packets)
def test_what_the_bridge_frames_the_driver_parses_back(packets: list[bytes]) -> None:
    assert parse_batch(frame(packets), MTU) == packets


@given(ip_packets)
def test_what_the_driver_frames_the_bridge_splits_back(packets: list[bytes]) -> None:
    assert [bytes(p) for p in split_batch(frame(packets))] == packets


@given(st.binary(max_size=200))
def test_the_driver_parser_takes_any_bytes_without_crashing(data: bytes) -> None:
    code = 0
    try:
        packets = parse_batch(data, MTU)
    except DeviceError as exc:
        code = exc.errno
    if code:
        assert code in (errno.EIO, errno.EAFNOSUPPORT)
    else:
        assert frame(packets) == data


@pytest.mark.parametrize("data", [b"\x00", b"\x00\x05abc"])
def test_split_batch_refuses_a_cut_frame(data: bytes) -> None:
    with pytest.raises(ValueError, match="truncated"):
        split_batch(data)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "usage: tunwg-bridge [-d] [-m mtu] node ifname\n"),
        (["node"], "usage: tunwg-bridge [-d] [-m mtu] node ifname\n"),
        (
            ["-x", "node", "tb0"],
            "tunwg-bridge: unknown option -- x\nusage: tunwg-bridge [-d] [-m mtu] node ifname\n",
        ),
        (["node", "tb0", "extra"], "usage: tunwg-bridge [-d] [-m mtu] node ifname\n"),
        (
            ["-m"],
            "tunwg-bridge: option requires an argument -- m\nusage: tunwg-bridge [-d] [-m mtu] node ifname\n",
        ),
        (["-m1x", "node", "tb0"], "tunwg-bridge: 1x: Invalid argument\n"),
        (["-m", "50", "node", "tb0"], "tunwg-bridge: 50: Invalid argument\n"),
        (
            ["node", "an-interface-name-too-long"],
            "tunwg-bridge: an-interface-name-too-long: Invalid argument\n",
        ),
        (["/nonexistent/node", "tb0"], "tunwg-bridge: /nonexistent/node: No such file or directory\n"),
        (["-d", "/nonexistent/node", "tb0"], "tunwg-bridge: /nonexistent/node: No such file or directory\n"),
        (
            ["-d", "node", "an-interface-name-too-long"],
            "tunwg-bridge: an-interface-name-too-long: Invalid argument\n",
        ),
        (["-d", "-m", "50", "node", "tb0"], "tunwg-bridge: 50: Invalid argument\n"),
    ],
)
def test_bad_arguments_exit_1_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tunwg_bridge.main(argv) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", message)
