"""crandom's longest string comes back whole through a real mount, from any buffer alignment.

The kernel cuts a read(2) into FUSE requests of at most 256 pages of the
caller's buffer; crandom gives no partial reads, so its ``maxlen`` cap
(``MAX_READ``, 1 MiB - 4095) must fit one request even when the buffer
starts one byte before a page boundary (crandom(4), LOAD PROPERTIES).
Buffers are slices of an anonymous mmap (page-aligned), read into with
``os.readv`` so that the offset within the page is exact.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import TYPE_CHECKING

import pytest

from devfsd.cdevsw import makedev
from devfsd.errors import ControlError
from devfsd.testing.mount import DevfsdMount
from modules.crandom.crandom import DEFAULT_MAXLEN, MAX_READ, PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


@pytest.fixture(scope="module", params=["in-process", "isolated"])
def isolate(request: pytest.FixtureRequest) -> list[str]:
    """crandom in process, or in a host of its own (``--isolate``)."""
    return ["--isolate"] if request.param == "isolated" else []


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, isolate: list[str]) -> Iterator[Path]:
    with DevfsdMount(tmp_path_factory.mktemp("crandom_maxlen"), args=isolate) as m:
        m.client().modload("crandom")  # default maxlen
        maj = {n: mj for n, mj, _ in m.client().drivers()}["crandom"]
        p = m.path / "cr"
        os.mknod(p, stat.S_IFCHR | 0o666, makedev(maj, 0))
        yield p


def test_the_cap_is_256_pages_less_one_page_plus_one_byte() -> None:
    assert DEFAULT_MAXLEN == MAX_READ == 256 * PAGE_SIZE - PAGE_SIZE + 1


@pytest.mark.parametrize("offset", [0, 1, PAGE_SIZE - 1], ids=["aligned", "offset-1", "offset-pagesize-1"])
def test_largest_string_reads_back_whole(node: Path, offset: int) -> None:
    data = os.urandom(MAX_READ)
    with mmap.mmap(-1, MAX_READ + 2 * PAGE_SIZE) as mm:
        buf = memoryview(mm)[offset : offset + MAX_READ]
        fd = os.open(node, os.O_RDWR)
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            # One byte more is refused: MAX_READ is crandom's default maxlen.
            with pytest.raises(OSError) as ei:
                os.write(fd, b"x")
            assert ei.value.errno == errno.EFBIG
            assert os.readv(fd, [buf]) == MAX_READ
            got = bytes(buf)
        finally:
            buf.release()
            os.close(fd)
    assert sorted(got) == sorted(data)  # a permutation of it, whole


def test_maxlen_past_the_cap_is_refused(tmp_path: Path, isolate: list[str]) -> None:
    with DevfsdMount(tmp_path, args=isolate) as m:
        with pytest.raises(ControlError) as ei:
            m.client().modload("crandom", {"maxlen": MAX_READ + 1})
        assert ei.value.errno == errno.EINVAL
        m.client().modload("crandom", {"maxlen": MAX_READ})
