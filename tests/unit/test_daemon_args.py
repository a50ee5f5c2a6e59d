"""devfsd's option checks: a clear argparse error, exit 2, nothing mounted."""

from __future__ import annotations

import pytest

from devfsd.daemon import main


@pytest.mark.parametrize(
    ("option", "value"),
    [("--autotime", "-1"), ("--autotime", "nan"), ("--entry-timeout", "x"), ("--control-idle", "inf")],
)
def test_bad_seconds(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([option, value, "/nonexistent"])
    assert ei.value.code == 2
    assert f"argument {option}: {value}: not a number of seconds >= 0" in capsys.readouterr().err


def test_bad_control_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["--control-group", "no-such-group-here", "/nonexistent"])
    assert ei.value.code == 2
    assert "no-such-group-here: invalid group name" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "what"),
    [
        ("--host-restarts", "-1", "not a whole number >= 0"),
        ("--host-restarts", "two", "not a whole number >= 0"),
        ("--host-memlimit", "-5", "not a number of bytes >= 0"),
        ("--host-memlimit", "lots", "not a number of bytes >= 0"),
    ],
)
def test_bad_host_limits(option: str, value: str, what: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([option, value, "/nonexistent"])
    assert ei.value.code == 2
    assert f"argument {option}: {value}: {what}" in capsys.readouterr().err
