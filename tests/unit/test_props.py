"""Properties: the modload(8) value parsers and ``check_props``, by property."""

from __future__ import annotations

import errno
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devfsd.errors import DeviceError
from devfsd.kern.props import (
    MAXPROPSLEN,
    PropError,
    check_props,
    dehumanize_number,
    parse_bool,
    parse_int,
    parse_param,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
SUFFIXES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


@given(st.text())
def test_parse_param_splits_at_first_equals_or_refuses(arg: str) -> None:
    try:
        name, value = parse_param(arg)
    except PropError as exc:
        message = str(exc)
        assert message == f"Invalid parameter `{arg}'"
        assert "=" not in arg
        return
    assert f"{name}={value}" == arg
    assert "=" not in name  # may be empty, as modload's strchr split allows


@given(st.text())
def test_parse_bool_is_a_bool_or_modloads_message(value: str) -> None:
    try:
        b = parse_bool(value)
    except PropError as exc:
        message = str(exc)
        assert message == f"Invalid boolean value `{value}'"
        assert value.lower() not in ("1", "true", "yes", "0", "false", "no")
        return
    assert b is (value.lower() in ("1", "true", "yes"))


@given(INT64)
def test_dehumanize_round_trips_decimal_and_hex(n: int) -> None:
    assert dehumanize_number(str(n)) == n
    sign = "-" if n < 0 else ""
    assert dehumanize_number(f"{sign}{abs(n):#x}") == n


@given(st.integers(0, 2**64), st.sampled_from(sorted(SUFFIXES)), st.booleans())
def test_dehumanize_suffix_multiplies_or_erange(n: int, suffix: str, upper: bool) -> None:
    text = f"{n}{suffix.upper() if upper else suffix}"
    want = n * SUFFIXES[suffix]
    if want > 2**63 - 1:
        with pytest.raises(ValueError, match=str(errno.ERANGE)):
            dehumanize_number(text)
    else:
        assert dehumanize_number(text) == want


@given(st.text(max_size=30))
def test_parse_int_is_an_int64_or_modloads_message(value: str) -> None:
    try:
        n = parse_int(value)
    except PropError as exc:
        message = str(exc)
        assert message.startswith(f"Invalid integer value `{value}': ")
        return
    assert -(2**63) <= n <= 2**63 - 1


JSONISH: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(min_size=1, max_size=20), st.one_of(st.booleans(), INT64, st.text(max_size=50)))
)
def test_check_props_keeps_valid_properties(props: dict[str, Any]) -> None:
    if len(json.dumps(props).encode()) > MAXPROPSLEN:
        with pytest.raises(DeviceError) as ei:
            check_props(props)
        assert ei.value.errno == errno.ENOMEM
    else:
        assert check_props(props) == props


@given(JSONISH)
def test_check_props_returns_a_valid_dict_or_einval_enomem(value: Any) -> None:
    try:
        out = check_props(value)
    except DeviceError as exc:
        err = exc.errno
        assert err in (errno.EINVAL, errno.ENOMEM)
        return
    assert isinstance(out, dict)
    for k, v in out.items():
        assert len(k.encode("utf-8", "surrogatepass")) <= 128  # proplib's PDK_MAXKEY; "" allowed
        assert isinstance(v, bool | str) or -(2**63) <= v < 2**63
    assert len(json.dumps(out).encode()) <= MAXPROPSLEN


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 1.5, None, [1], {"a": 1}])
def test_check_props_refuses_value(value: object) -> None:
    with pytest.raises(DeviceError) as ei:
        check_props({"k": value})
    assert ei.value.errno == errno.EINVAL
