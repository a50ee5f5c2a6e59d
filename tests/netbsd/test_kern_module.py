"""The errno rules of NetBSD's sys/kern/kern_module.c 1.155 (and 1.106's
MODULE_MAX_DEPTH), and proplib's key limit, against devfsd's loader.

In-process (``devfsd.testing.harness.Kernel``): these are the loader's
answers, which the control socket passes on unchanged. Modules are written
for each test into a fresh module directory.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import pytest
import trio

from devfsd.errors import DeviceError
from devfsd.kern.module import MODULE_MAX_DEPTH
from devfsd.testing.harness import Kernel

from .netbsd import departure, module

if TYPE_CHECKING:
    from pathlib import Path


def loaded(k: Kernel) -> dict[str, str]:
    """modstat's NAME -> FLAG."""
    return {s.name: s.flags for s in k.loader.stat()}


async def load_errno(k: Kernel, spec: str, props: object = None) -> int:
    try:
        await k.loader.load(spec, props)  # type: ignore[arg-type]
    except DeviceError as exc:
        return exc.errno
    return 0


async def test_required_leading_comma_is_skipped(tmp_path: Path) -> None:
    """kern_module.c:1300-1301: one comma before an item is skipped, so
    ``",a"`` requires ``a``, which loads as an autoload (flag ``a``)."""
    module(tmp_path, "a")
    module(tmp_path, "top", ",a")
    async with Kernel.running([tmp_path]) as k:
        await k.modload("top")
        assert loaded(k) == {"a": "a", "top": "-"}


@pytest.mark.parametrize("required", ["a,,b", ("a", "", "b"), "a,,bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"])
async def test_required_empty_item_ends_the_list(tmp_path: Path, required: object) -> None:
    """kern_module.c:1315-1316: an empty item ends the list: what follows
    is never loaded, nor even checked (a name too long after it is fine)."""
    module(tmp_path, "a")
    module(tmp_path, "b")
    module(tmp_path, "top", required)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("top")
        assert loaded(k) == {"a": "a", "top": "-"}
        assert k.loader.modules["top"].info.required == ("a",)


async def test_required_name_of_31_bytes_is_einval(tmp_path: Path) -> None:
    """kern_module.c:1306-1312: ``len = p - s + 1`` counts the NUL, and
    ``len >= MAXMODNAME`` (32) is EINVAL: a required name of 31 bytes is
    refused although a module may be called that. What loaded before it
    in the list is undone."""
    name31 = "r" * 31
    module(tmp_path, "a")
    module(tmp_path, name31)
    module(tmp_path, "top", f"a,{name31}")
    async with Kernel.running([tmp_path]) as k:
        assert await load_errno(k, "top") == errno.EINVAL
        assert loaded(k) == {}
        await k.modload(name31)  # a module of that name loads by itself
        assert loaded(k) == {name31: "-"}


async def test_required_name_of_30_bytes_loads(tmp_path: Path) -> None:
    """kern_module.c:1306-1307: 30 bytes plus the NUL is 31, under MAXMODNAME."""
    name30 = "r" * 30
    module(tmp_path, name30)
    module(tmp_path, "top", name30)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("top")
        assert loaded(k) == {name30: "a", "top": "-"}


async def test_self_dependency_is_edeadlk(tmp_path: Path) -> None:
    """kern_module.c:1318-1322: a module requiring itself is EDEADLK."""
    module(tmp_path, "selfish", "selfish")
    async with Kernel.running([tmp_path]) as k:
        assert await load_errno(k, "selfish") == errno.EDEADLK
        assert loaded(k) == {}


async def test_loaded_requirement_is_fine_and_held(tmp_path: Path) -> None:
    """kern_module.c:1326 (EEXIST from a present requirement is no error)
    and module_enqueue's refcount: the requirement is held (REFS 1, EBUSY)."""
    module(tmp_path, "a")
    module(tmp_path, "top", "a")
    async with Kernel.running([tmp_path]) as k:
        await k.modload("a")
        await k.modload("top")
        assert {s.name: s.refs for s in k.loader.stat()} == {"a": 1, "top": 0}
        with pytest.raises(DeviceError) as ei:
            await k.modunload("a")
        assert ei.value.errno == errno.EBUSY


async def test_already_loaded_is_eexist(tmp_path: Path) -> None:
    """kern_module.c:669-673: module_load of a loaded module is EEXIST."""
    module(tmp_path, "a")
    async with Kernel.running([tmp_path]) as k:
        await k.modload("a")
        assert await load_errno(k, "a") == errno.EEXIST


def chain(d: Path, n: int) -> None:
    """Modules m1 .. mn, each requiring the next."""
    for i in range(1, n + 1):
        module(d, f"m{i}", f"m{i + 1}" if i < n else ())


async def test_depth_limit_is_emlink(tmp_path: Path) -> None:
    """kern_module.c:858,881-885 (1.106): ``if (++depth >
    MODULE_MAX_DEPTH)`` (6) is EMLINK: a chain of seven nested loads fails
    and leaves nothing loaded."""
    chain(tmp_path, MODULE_MAX_DEPTH + 1)
    async with Kernel.running([tmp_path]) as k:
        assert await load_errno(k, "m1") == errno.EMLINK
        assert loaded(k) == {}


async def test_depth_limit_allows_six(tmp_path: Path) -> None:
    """kern_module.c:881 (1.106): depth 6 is still allowed."""
    chain(tmp_path, MODULE_MAX_DEPTH)
    async with Kernel.running([tmp_path]) as k:
        await k.modload("m1")
        assert len(loaded(k)) == MODULE_MAX_DEPTH


@departure("modinfo-name")
def test_declared_name_of_32_bytes_is_einval(tmp_path: Path) -> None:
    """kern_module.c:1216-1220: a module whose modinfo name is MAXMODNAME
    (32) bytes or longer is EINVAL."""
    module(tmp_path, "long", declared="n" * 32)

    async def attempt() -> int:
        async with Kernel.running([tmp_path]) as k:
            return await load_errno(k, str(tmp_path / "long"))

    # Run here rather than as a trio test, whose nursery would wrap the
    # AssertionError that the departure mark expects.
    assert trio.run(attempt) == errno.EINVAL


@pytest.mark.parametrize(("key", "expect"), [("k" * 128, 0), ("k" * 129, errno.EINVAL), ("", 0)])
async def test_property_key_length(tmp_path: Path, key: str, expect: int) -> None:
    """prop_dictionary.c:62-66,85 (1.17): keys of up to PDK_MAXKEY (128)
    bytes, the empty one included; a longer key makes the dictionary
    unusable, and the load fails EINVAL."""
    module(tmp_path, "a")
    async with Kernel.running([tmp_path]) as k:
        assert await load_errno(k, "a", {key: "v"}) == expect
        assert ("a" in loaded(k)) == (expect == 0)
        if expect == 0:
            assert k.loader.modules["a"].props == {key: "v"}
