"""Load-time properties, as modload(8) turns ``-b``/``-i``/``-s`` into them.

Pure. The parsers raise ``PropError`` with modload(8)'s exact message
(``Invalid boolean value `x'``); ``check_props`` enforces the kernel's 4096
byte limit (``ENOMEM``).
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Mapping
from typing import Final

from devfsd.errors import DeviceError

__all__ = [
    "MAXPROPSLEN",
    "PDK_MAXKEY",
    "PropError",
    "check_props",
    "dehumanize_number",
    "parse_bool",
    "parse_int",
    "parse_param",
]

#: Serialised properties larger than this are ``ENOMEM`` (NetBSD's 4096).
MAXPROPSLEN: Final = 4096
#: Longest property name, in bytes (proplib's ``PDK_MAXKEY``).
PDK_MAXKEY: Final = 128

_SUFFIX: Final = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}
_NUMBER: Final = re.compile(r"\s*([-+]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([bBkKmMgGtTpPeE]?)")
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


class PropError(ValueError):
    """A bad ``-b``/``-i``/``-s`` argument; ``str()`` is modload's message."""


def parse_param(arg: str) -> tuple[str, str]:
    """Split ``name=value`` at the first ``=``; no ``=`` is ``Invalid parameter `X'``.

    The name may be empty (``-s =x``), as modload's ``strchr`` split allows.
    """
    name, eq, value = arg.partition("=")
    if not eq:
        raise PropError(f"Invalid parameter `{arg}'")
    return name, value


def parse_bool(value: str) -> bool:
    """``1|true|yes`` / ``0|false|no``, any case; else ``Invalid boolean value `X'``."""
    v = value.lower()
    if v in ("1", "true", "yes"):
        return True
    if v in ("0", "false", "no"):
        return False
    raise PropError(f"Invalid boolean value `{value}'")


def dehumanize_number(text: str) -> int:
    """NetBSD ``dehumanize_number(3)``: an int64 with an optional b/k/m/g/t/p/e suffix.

    Raises:
        ValueError: with the errno's meaning in ``args[0]``: ``EINVAL`` for
            text that is not a number, ``ERANGE`` past int64.
    """
    m = _NUMBER.fullmatch(text)
    if not m or not text:
        raise ValueError(errno.EINVAL)
    sign, digits, suffix = m.groups()
    n = int(digits, 0) if digits[:2].lower() == "0x" else int(digits, 8 if digits.startswith("0") else 10)
    n *= _SUFFIX.get(suffix.lower(), 1)
    if sign == "-":
        n = -n
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise ValueError(errno.ERANGE)
    return n


def parse_int(value: str) -> int:
    """An ``-i`` value; else ``Invalid integer value `X': <strerror>``."""
    import os

    try:
        return dehumanize_number(value)
    except ValueError as exc:
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else errno.EINVAL
        raise PropError(f"Invalid integer value `{value}': {os.strerror(code)}") from None


def check_props(props: object) -> dict[str, str | int | bool]:
    """Validate properties that came over the control socket.

    Returns:
        A plain dict of them.

    Raises:
        DeviceError: ``EINVAL`` for a non-mapping, a non-string key, a key
            longer than ``PDK_MAXKEY`` bytes (the empty key is allowed, as
            in proplib) or a value not a str, int64 or bool; ``ENOMEM``
            past ``MAXPROPSLEN`` bytes.
    """
    if props is None:
        return {}
    if not isinstance(props, Mapping):
        raise DeviceError(errno.EINVAL, "properties must be a dictionary")
    out: dict[str, str | int | bool] = {}
    for k, v in props.items():
        if not isinstance(k, str):
            raise DeviceError(errno.EINVAL, "property names must be strings")
        if len(k.encode("utf-8", "surrogatepass")) > PDK_MAXKEY:
            raise DeviceError(errno.EINVAL, f"property name longer than {PDK_MAXKEY} bytes")
        if isinstance(v, bool | str) or (isinstance(v, int) and _INT64_MIN <= v <= _INT64_MAX):
            out[k] = v
        else:
            raise DeviceError(errno.EINVAL, f"property {k}: value must be a string, int64 or bool")
    if len(json.dumps(out).encode()) > MAXPROPSLEN:
        raise DeviceError(errno.ENOMEM, f"properties larger than {MAXPROPSLEN} bytes")
    return out
