"""modload, modunload, modstat and devfs-mknod, end to end against a fake daemon.

``FakeDevfsd`` is a real control server: a thread accepting on a Unix
socket, speaking ``devfsd.control.protocol`` framing, answering each
operation from a table of canned (but well-formed) replies and recording
every request. The tools run in-process through their ``main(argv)``; tests
check stdout, stderr and the exit status exactly.

devfs-mknod makes real nodes in a temporary directory (character devices
and FIFOs; we are root); nodes on a devfsd mount are the integration
tests' business.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.control import ENV_CONTROL
from devfsd.control.protocol import (
    Framer,
    ProtocolError,
    encode,
    error_reply,
    ok_reply,
    parse_request,
)
from devfsd.errors import ControlError
from devfsd.kern.props import PropError
from devfsd.mknod import cli as mknod_cli
from devfsd.mknod.args import USAGE as MKNOD_USAGE
from devfsd.tools import Getopt, GetoptError, UsageError, modload, modstat, modunload, unreachable

if TYPE_CHECKING:
    from pathlib import Path

Handler = Callable[[dict[str, Any]], Any]

CRANDOM_ROW: dict[str, Any] = {
    "name": "crandom",
    "class": "driver",
    "source": "filesys",
    "flags": "-",
    "refs": 0,
    "size": 2048,
    "requires": [],
}
TUNWG_ROW: dict[str, Any] = {
    "name": "tunwg",
    "class": "driver",
    "source": "filesys",
    "flags": "a",
    "refs": 1,
    "size": 40960,
    "requires": ["sodium", "blake2s"],
}
SODIUM_ROW: dict[str, Any] = {
    "name": "sodium",
    "class": "misc",
    "source": "filesys",
    "flags": "a",
    "refs": 1,
    "size": 0,
    "requires": [],
}


def _fail(err: int) -> Handler:
    def handler(args: dict[str, Any]) -> Any:
        raise ControlError(err, f"fake devfsd says {os.strerror(err)}")

    return handler


class FakeDevfsd:
    """A control server in a thread: real framing, canned replies, a request log."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.modules: list[dict[str, Any]] = [CRANDOM_ROW]
        self.autoload = True
        self.handlers: dict[str, Handler] = {
            "ping": lambda a: None,
            "modload": lambda a: None,
            "modunload": lambda a: None,
            "modstat": lambda a: {"modules": self.modules, "autoload": self.autoload},
            "drivers": lambda a: [["crandom", 420, True], ["tunwg", 421, False]],
        }
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(8)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="fake-devfsd")
        self._thread.start()

    def ops(self) -> list[str]:
        return [op for op, _ in self.requests]

    def _serve(self) -> None:
        while True:
            conn, _ = self._sock.accept()
            with conn:
                if self._stopping:
                    return
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        framer = Framer()
        while (msg := framer.next_message()) is None:
            data = conn.recv(65536)
            if not data:
                return
            framer.feed(data)
        try:
            op, args = parse_request(msg)
            self.requests.append((op, args))
            reply = ok_reply(self.handlers[op](args))
        except ProtocolError as exc:
            reply = error_reply(exc.errno, str(exc))
        except ControlError as exc:
            reply = error_reply(exc.errno, str(exc))
        conn.sendall(encode(reply))

    def close(self) -> None:
        self._stopping = True
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.path)  # wakes accept()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def workdir() -> Iterator[str]:
    # Short: a Unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    d = tempfile.mkdtemp(prefix="devfsd-t", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def daemon(workdir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDevfsd]:
    """A fake devfsd, found through $DEVFSD_CONTROL."""
    fake = FakeDevfsd(os.path.join(workdir, "control.sock"))
    monkeypatch.setenv(ENV_CONTROL, fake.path)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def refused(workdir: str) -> Iterator[str]:
    """A socket file nobody listens on: connect() is ECONNREFUSED."""
    path = os.path.join(workdir, "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        yield path


def run(
    capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int], *argv: str
) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- getopt -------------------------------------------------------------------


def test_getopt_clusters_and_arguments() -> None:
    opts = Getopt(["-fP", "-bx=1", "-b", "y=2", "mod", "-f"], "Pb:f")
    assert list(opts) == [("f", ""), ("P", ""), ("b", "x=1"), ("b", "y=2")]
    assert opts.operands == ["mod", "-f"]


def test_getopt_double_dash_ends_options_and_is_dropped() -> None:
    opts = Getopt(["-f", "--", "-f"], "f")
    assert list(opts) == [("f", "")]
    assert opts.operands == ["-f"]


def test_getopt_single_dash_is_an_operand() -> None:
    opts = Getopt(["-", "-f"], "f")
    assert list(opts) == []
    assert opts.operands == ["-", "-f"]


def test_getopt_dash_inside_a_word_ends_options_there() -> None:
    opts = Getopt(["-f", "--x", "y"], "f")
    assert list(opts) == [("f", "")]
    assert opts.operands == ["--x", "y"]


def test_getopt_unknown_option() -> None:
    with pytest.raises(GetoptError, match=r"^unknown option -- z$"):
        list(Getopt(["-fz"], "f"))


def test_getopt_colon_is_never_an_option() -> None:
    with pytest.raises(GetoptError, match=r"^unknown option -- :$"):
        list(Getopt(["-:"], "b:"))


def test_getopt_missing_argument() -> None:
    with pytest.raises(GetoptError, match=r"^option requires an argument -- b$"):
        list(Getopt(["-b"], "b:"))


def test_getopt_reports_options_in_order() -> None:
    seen: list[tuple[str, str]] = []

    def consume() -> None:
        for pair in Getopt(["-a", "-z", "-a"], "a"):
            seen.append(pair)

    with pytest.raises(GetoptError):
        consume()
    assert seen == [("a", "")]


@given(st.lists(st.text(max_size=6), max_size=8))
def test_getopt_yields_or_raises_getopt_error(argv: list[str]) -> None:
    opts = Getopt(argv, "ab:c")
    with contextlib.suppress(GetoptError):
        for opt, _ in opts:
            assert opt in "abc"


# -- unreachable ----------------------------------------------------------------


def test_unreachable_is_the_clients_connection_error() -> None:
    from devfsd.control.client import Unreachable

    assert unreachable(Unreachable(errno.ECONNREFUSED))
    assert unreachable(Unreachable(errno.ECONNRESET, "devfsd closed the connection"))
    assert not unreachable(ControlError(errno.ENOENT))
    assert not unreachable(ControlError(errno.ENOENT, "No such file or directory"))


# -- modload --------------------------------------------------------------------


def test_modload_parse_props_last_wins_whatever_the_type() -> None:
    args = modload.parse_args(["-b", "a=YES", "-i", "n=0x10", "-s", "a=text", "-fP", "m"])
    assert args.props == {"a": "text", "n": 16}
    assert (args.module, args.force, args.no_plist) == ("m", True, True)


def test_modload_parse_reports_the_first_bad_option_first() -> None:
    with pytest.raises(PropError, match=r"^Invalid boolean value `maybe'$"):
        modload.parse_args(["-b", "x=maybe", "-z"])


def test_modload_parse_needs_exactly_one_module() -> None:
    with pytest.raises(UsageError):
        modload.parse_args(["a", "b"])


def test_modload_parse_p_ignores_operands() -> None:
    args = modload.parse_args(["-p", "a", "b"])
    assert args.print_props
    assert args.module is None


bool_words = st.sampled_from(["1", "true", "yes", "0", "false", "no"]).flatmap(
    lambda w: st.sampled_from([w, w.upper(), w.capitalize()])
)
keys = st.text(st.characters(codec="utf-8", exclude_characters="="), min_size=1)


@given(st.dictionaries(keys, st.one_of(bool_words, st.integers(-(2**63), 2**63 - 1), st.text())))
def test_modload_props_round_trip(wanted: dict[str, Any]) -> None:
    argv: list[str] = []
    expect: dict[str, str | int | bool] = {}
    for k, v in wanted.items():
        if isinstance(v, int):
            argv += ["-i", f"{k}={v}"]
            expect[k] = v
        elif v.lower() in ("1", "true", "yes", "0", "false", "no"):
            argv += ["-b", f"{k}={v}"]
            expect[k] = v.lower() in ("1", "true", "yes")
        else:
            argv += ["-s", f"{k}={v}"]
            expect[k] = v
    assert modload.parse_args([*argv, "m"]).props == expect


@given(st.text())
def test_modload_bad_boolean_message(value: str) -> None:
    if value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return
    with pytest.raises(PropError) as info:
        modload.parse_args(["-b", f"k={value}", "m"])
    assert str(info.value) == f"Invalid boolean value `{value}'"


def test_modload_externalize_empty() -> None:
    assert modload.externalize({}) == (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple Computer//DTD PLIST 1.0//EN" '
        '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n'
        "<dict/>\n"
        "</plist>\n"
    )


def test_modload_externalize_sorts_escapes_and_types() -> None:
    text = modload.externalize({"b": False, "a&<>": "x<y&z>", "Z": -5, "e": "", "t": True})
    body = text.split('<plist version="1.0">\n', 1)[1]
    assert body == (
        "<dict>\n"
        "\t<key>Z</key>\n\t<integer>-5</integer>\n"
        "\t<key>a&amp;&lt;&gt;</key>\n\t<string>x&lt;y&amp;z&gt;</string>\n"
        "\t<key>b</key>\n\t<false/>\n"
        "\t<key>e</key>\n\t<string/>\n"
        "\t<key>t</key>\n\t<true/>\n"
        "</dict>\n"
        "</plist>\n"
    )


def test_modload_loads_silently(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    status, out, err = run(capsys, modload.main, "-b", "verbose=yes", "-i", "units=4", "crandom")
    assert (status, out, err) == (0, "", "")
    assert daemon.requests == [
        ("modload", {"module": "crandom", "props": {"verbose": True, "units": 4}, "isolated": None})
    ]


def test_modload_f_and_P_change_nothing(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modload.main, "-fP", "crandom") == (0, "", "")
    assert daemon.requests == [("modload", {"module": "crandom", "props": {}, "isolated": None})]


def test_modload_I_asks_for_a_host(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modload.main, "-I", "-i", "memlimit=1000000000", "mm") == (0, "", "")
    assert daemon.requests == [
        ("modload", {"module": "mm", "props": {"memlimit": 1000000000}, "isolated": True})
    ]


def test_modload_failure_is_the_module_and_the_hosts_strerror(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd
) -> None:
    daemon.handlers["modload"] = _fail(errno.EEXIST)
    assert run(capsys, modload.main, "crandom") == (1, "", "modload: crandom: File exists\n")


def test_modload_bad_property_sends_nothing(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    status, out, err = run(capsys, modload.main, "-i", "n=12q", "crandom")
    assert (status, out) == (1, "")
    assert err == "modload: Invalid integer value `12q': Invalid argument\n"
    assert daemon.requests == []


def test_modload_missing_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, modload.main, "-s", "foo", "crandom") == (
        1,
        "",
        "modload: Invalid parameter `foo'\n",
    )


def test_modload_no_module_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, modload.main) == (1, "", modload.USAGE)


def test_modload_unknown_option_is_complaint_then_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, modload.main, "-m", "x.plist", "crandom")
    assert (status, out) == (1, "")
    assert err == "modload: unknown option -- m\n" + modload.USAGE


def test_modload_p_prints_and_never_connects(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CONTROL, "/nonexistent/control.sock")
    status, out, err = run(capsys, modload.main, "-p", "-b", "x=1")
    assert (status, err) == (0, "")
    assert out == modload.externalize({"x": True})


def test_modload_names_the_socket_when_there_is_no_daemon(
    capsys: pytest.CaptureFixture[str], workdir: str
) -> None:
    sock = os.path.join(workdir, "none.sock")
    assert run(capsys, modload.main, "-c", sock, "crandom") == (
        1,
        "",
        f"modload: {sock}: No such file or directory\n",
    )


def test_modload_names_the_socket_when_refused(capsys: pytest.CaptureFixture[str], refused: str) -> None:
    assert run(capsys, modload.main, "-c", refused, "crandom") == (
        1,
        "",
        f"modload: {refused}: Connection refused\n",
    )


def test_modload_c_beats_the_environment(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd, refused: str
) -> None:
    status, _, err = run(capsys, modload.main, "-c", refused, "crandom")
    assert status == 1
    assert refused in err
    assert daemon.requests == []


# -- modunload ------------------------------------------------------------------


def test_modunload_unloads_each_in_order(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modunload.main, "tunwg", "crandom") == (0, "", "")
    assert daemon.requests == [
        ("modunload", {"module": "tunwg"}),
        ("modunload", {"module": "crandom"}),
    ]


def test_modunload_stops_at_the_first_failure(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    def busy_b(args: dict[str, Any]) -> None:
        if args["module"] == "b":
            raise ControlError(errno.EBUSY, "in use")

    daemon.handlers["modunload"] = busy_b
    status, out, err = run(capsys, modunload.main, "a", "b", "c")
    assert (status, out) == (1, "")
    assert err == f"modunload: b: {os.strerror(errno.EBUSY)}\n"
    assert [a["module"] for _, a in daemon.requests] == ["a", "b"]


def test_modunload_without_names_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, modunload.main) == (1, "", "Usage: modunload [-c path] <module_name ...>\n")


def test_modunload_double_dash_allows_a_dash_name(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd
) -> None:
    daemon.handlers["modunload"] = _fail(errno.ENOENT)
    assert run(capsys, modunload.main, "--", "-x") == (
        1,
        "",
        "modunload: -x: No such file or directory\n",
    )


# -- modstat --------------------------------------------------------------------

HEADER = "NAME             CLASS    SOURCE   FLAG  REFS    SIZE REQUIRES \n"


def test_modstat_layout(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.modules = [TUNWG_ROW, CRANDOM_ROW, SODIUM_ROW]
    assert run(capsys, modstat.main) == (
        0,
        HEADER
        + "crandom          driver   filesys  -        0    2048 -\n"
        + "sodium           misc     filesys  a        1       - -\n"
        + "tunwg            driver   filesys  a        1   40960 sodium,blake2s\n",
        "",
    )
    assert daemon.requests == [("modstat", {"module": None})]


def test_modstat_name_column_fits_the_longest_of_all(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd
) -> None:
    long = dict(CRANDOM_ROW, name="a_rather_long_module")
    daemon.modules = [CRANDOM_ROW, long]
    status, out, _ = run(capsys, modstat.main, "crandom")
    assert status == 0
    assert out == (
        "NAME                 CLASS    SOURCE   FLAG  REFS    SIZE REQUIRES \n"
        "crandom              driver   filesys  -        0    2048 -\n"
    )


def test_modstat_n_shows_one_row(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.modules = [TUNWG_ROW, CRANDOM_ROW]
    status, out, _ = run(capsys, modstat.main, "-n", "tunwg")
    assert (status, out.splitlines()[1:]) == (
        0,
        ["tunwg            driver   filesys  a        1   40960 sodium,blake2s"],
    )


def test_modstat_unknown_name_is_the_header_alone(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd
) -> None:
    assert run(capsys, modstat.main, "nosuch") == (0, HEADER, "")


def test_modstat_k_adds_a_zero_address(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modstat.main, "-k") == (
        0,
        "NAME             CLASS    SOURCE   FLAG  REFS ADDRESS             SIZE REQUIRES \n"
        "crandom          driver   filesys  -        0 0                   2048 -\n",
        "",
    )


def test_modstat_name_and_n_together_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, modstat.main, "-n", "a", "b") == (1, "", modstat.USAGE)


def test_modstat_a(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.autoload = False  # -a does not read the setting
    assert run(capsys, modstat.main, "-a") == (0, "", "modstat: Modules can be autoloaded.\n")


def test_modstat_A_with_autoload_off(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.autoload = False
    assert run(capsys, modstat.main, "-A") == (
        0,
        "",
        "modstat: Modules can be autoloaded, but kern.module.autoload = 0.\n",
    )


def test_modstat_A_with_autoload_on(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modstat.main, "-A") == (0, "", "modstat: Modules can be autoloaded.\n")


def test_modstat_a_denied(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.handlers["modstat"] = _fail(errno.EPERM)
    assert run(capsys, modstat.main, "-a") == (
        1,
        "",
        "modstat: Modules can not be autoloaded right now.\n",
    )


def test_modstat_e(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert run(capsys, modstat.main, "-e") == (0, "", "modstat: You can load modules.\n")
    assert daemon.ops() == ["ping"]


def test_modstat_e_refused_by_the_socket(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    # Root ignores socket permissions: the fake stands in for the refusal.
    daemon.handlers["ping"] = _fail(errno.EACCES)
    assert run(capsys, modstat.main, "-e") == (
        1,
        "",
        "modstat: You are not allowed to load modules right now.\n",
    )


def test_modstat_without_a_daemon(capsys: pytest.CaptureFixture[str], refused: str) -> None:
    for flags in ([], ["-a"], ["-e"]):
        assert run(capsys, modstat.main, "-c", refused, *flags) == (
            1,
            "",
            f"modstat: {refused}: Connection refused\n",
        )


def test_modstat_malformed_reply(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    daemon.handlers["modstat"] = lambda a: {"autoload": True}
    assert run(capsys, modstat.main) == (1, "", f"modstat: {daemon.path}: Bad message\n")


# -- devfs-mknod ------------------------------------------------------------------


def mknod(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run(capsys, mknod_cli.main, *argv)


def test_mknod_numbers(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    assert mknod(capsys, node, "c", "420", "0x11") == (0, "", "")
    st_ = os.lstat(node)
    assert stat.S_ISCHR(st_.st_mode)
    assert (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == (420, 17)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(st_.st_mode) == 0o666 & ~umask


def test_mknod_leaves_the_umask_as_it_was(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    before = os.umask(0o027)
    try:
        mknod(capsys, os.path.join(workdir, "n"), "c", "1", "2")
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(before)


def test_mknod_mode_is_exact(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    assert mknod(capsys, "-m", "0604", node, "c", "1", "2") == (0, "", "")
    assert stat.S_IMODE(os.lstat(node).st_mode) == 0o604


def test_mknod_driver_name(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd, workdir: str) -> None:
    node = os.path.join(workdir, "crandom")
    assert mknod(capsys, node, "c", "crandom", "3") == (0, "", "")
    assert os.lstat(node).st_rdev == os.makedev(420, 3)
    assert daemon.ops() == ["drivers"]


def test_mknod_numbers_never_ask_the_daemon(
    capsys: pytest.CaptureFixture[str], workdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CONTROL, "/nonexistent/control.sock")
    assert mknod(capsys, os.path.join(workdir, "n"), "c", "5", "0") == (0, "", "")


def test_mknod_unknown_driver(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd, workdir: str) -> None:
    assert mknod(capsys, os.path.join(workdir, "n"), "c", "nosuch", "0") == (
        1,
        "",
        "devfs-mknod: unknown driver: nosuch\n",
    )


def test_mknod_block_driver_is_unknown(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd, workdir: str
) -> None:
    assert mknod(capsys, os.path.join(workdir, "n"), "b", "crandom", "0") == (
        1,
        "",
        "devfs-mknod: unknown driver: crandom\n",
    )


def test_mknod_driver_lookup_without_a_daemon(
    capsys: pytest.CaptureFixture[str], refused: str, workdir: str
) -> None:
    assert mknod(capsys, "-c", refused, os.path.join(workdir, "n"), "c", "crandom", "0") == (
        1,
        "",
        f"devfs-mknod: {refused}: Connection refused\n",
    )


def test_mknod_asks_the_daemon_serving_the_nodes_directory_first(
    capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd, refused: str, workdir: str
) -> None:
    # What a devfsd mount answers on every inode, faked on a plain directory.
    try:
        os.setxattr(workdir, "user.devfsd.control", daemon.path.encode())
    except OSError as exc:
        pytest.skip(f"needs user extended attributes on {workdir}: {exc.strerror}")
    node = os.path.join(workdir, "crandom")
    assert mknod(capsys, "-c", refused, node, "c", "crandom", "0") == (0, "", "")
    assert os.lstat(node).st_rdev == os.makedev(420, 0)
    assert daemon.ops() == ["drivers"]


def test_mknod_fifo(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "fifo")
    assert mknod(capsys, "-m", "a=rw", node, "p") == (0, "", "")
    assert os.lstat(node).st_mode == stat.S_IFIFO | 0o666


def test_mknod_owner(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    assert mknod(capsys, "-u", "1234", "-g", "#5678", node, "c", "1", "2") == (0, "", "")
    st_ = os.lstat(node)
    assert (st_.st_uid, st_.st_gid) == (1234, 5678)


def test_mknod_exists(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    mknod(capsys, node, "c", "1", "2")
    assert mknod(capsys, node, "c", "1", "2") == (1, "", f"devfs-mknod: {node}: File exists\n")


def test_mknod_fails_with_the_name(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "no", "n")
    assert mknod(capsys, node, "c", "1", "2") == (
        1,
        "",
        f"devfs-mknod: {node}: No such file or directory\n",
    )


def test_mknod_r_keeps_a_matching_node_untouched(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    mknod(capsys, "-m", "0600", node, "c", "1", "2")
    assert mknod(capsys, "-r", "-m", "0644", "-u", "77", node, "c", "1", "2") == (0, "", "")
    st_ = os.lstat(node)
    assert (stat.S_IMODE(st_.st_mode), st_.st_uid) == (0o600, 0)


def test_mknod_R_fixes_mode_and_owner_of_a_matching_node(
    capsys: pytest.CaptureFixture[str], workdir: str
) -> None:
    node = os.path.join(workdir, "n")
    mknod(capsys, "-m", "0600", node, "c", "1", "2")
    ino = os.lstat(node).st_ino
    assert mknod(capsys, "-R", "-m", "0644", "-u", "77", node, "c", "1", "2") == (0, "", "")
    st_ = os.lstat(node)
    assert (stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_ino) == (0o644, 77, ino)


def test_mknod_r_replaces_a_different_node(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    mknod(capsys, node, "c", "1", "2")
    assert mknod(capsys, "-r", node, "c", "1", "3") == (0, "", "")
    assert os.lstat(node).st_rdev == os.makedev(1, 3)


def test_mknod_r_replaces_a_file_of_another_type(capsys: pytest.CaptureFixture[str], workdir: str) -> None:
    node = os.path.join(workdir, "n")
    mknod(capsys, node, "p")
    assert mknod(capsys, "-r", node, "c", "1", "2") == (0, "", "")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_node_identity_prefers_devfsd_xattrs(workdir: str) -> None:
    path = os.path.join(workdir, "f")
    with open(path, "w"):
        pass
    os.chmod(path, 0o640)
    xattrs = {"user.devfsd.type": b"c", "user.devfsd.major": b"420", "user.devfsd.minor": b"7"}

    def getxattr(p: str, attr: str) -> bytes:
        assert p == path
        return xattrs[attr]

    assert mknod_cli.node_identity(path, getxattr) == (stat.S_IFCHR, os.makedev(420, 7), 0o640)


def test_node_identity_falls_back_to_lstat(workdir: str) -> None:
    path = os.path.join(workdir, "fifo")
    os.mkfifo(path, 0o600)

    def no_xattrs(p: str, attr: str) -> bytes:
        raise OSError(errno.ENODATA, "No data available")

    assert mknod_cli.node_identity(path, no_xattrs) == (stat.S_IFIFO, 0, 0o600)
    assert mknod_cli.node_identity(os.path.join(workdir, "absent")) is None


def test_mknod_list(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert mknod(capsys, "-l") == (
        0,
        "crandom character major 420\ntunwg character major 421\n",
        "",
    )


def test_mknod_list_filters_in_argument_order(capsys: pytest.CaptureFixture[str], daemon: FakeDevfsd) -> None:
    assert mknod(capsys, "-l", "tunwg", "nosuch", "crandom") == (
        0,
        "tunwg character major 421\ncrandom character major 420\n",
        "",
    )


def test_mknod_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert mknod(capsys, "name") == (1, "", MKNOD_USAGE)


def test_mknod_message_without_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert mknod(capsys, "-F", "vms", "n", "c", "1", "2") == (
        1,
        "",
        "devfs-mknod: invalid format: vms\n",
    )


# -- console scripts ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("module", ["devfsd.tools.modload", "devfsd.tools.modunload", "devfsd.tools.modstat"])
def test_tool_reads_sys_argv(module: str) -> None:
    code = f"import sys; from {module} import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, "-z"], capture_output=True, text=True, check=False)
    prog = module.rsplit(".", 1)[1]
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith(f"{prog}: unknown option -- z\nUsage: {prog} ")


@pytest.mark.parametrize(
    ("tool", "args"),
    [("devfsd.tools.modload", ["mm"]), ("devfsd.tools.modunload", ["mm"]), ("devfsd.mknod.cli", ["-l"])],
)
def test_interrupted_while_waiting_for_the_daemon_it_dies_by_sigint(
    tmp_path: Path, tool: str, args: list[str]
) -> None:
    # As NetBSD's tools, which leave SIGINT alone: killed by it (status 130
    # to a shell), no traceback, and its connection closed, which is what
    # makes the daemon cancel the request (devfsd(8), Control socket).
    path = str(tmp_path / "control.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        listener.settimeout(30)
        code = f"import sys, {tool}; sys.exit({tool}.main())"
        with subprocess.Popen([sys.executable, "-c", code, "-c", path, *args], stderr=subprocess.PIPE) as p:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(30)
                    framer = Framer()
                    while framer.next_message() is None:  # its request: it now waits for the reply
                        data = conn.recv(65536)
                        assert data
                        framer.feed(data)
                    p.send_signal(signal.SIGINT)
                    assert p.wait(30) == -signal.SIGINT
                    assert conn.recv(1) == b""
                assert p.stderr is not None
                assert p.stderr.read() == b""
            finally:
                p.kill()  # a no-op once it has ended
