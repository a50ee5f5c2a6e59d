"""crandom through the harness: strings, permutations, errors, properties, module life.

Every test that loads crandom runs twice (the ``isolated`` fixture):
crandom in process, and in a module host of its own (issue 14).

The uniformity tests are statistical: they fail when a chi-square test over
all orders (or all positions) gives p < 1e-6, so a correct permutation fails
one of them about once in a million runs, and a biased one (the naive "swap
with any index" shuffle, a sort that keeps ties in order) every time.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import random
import select
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from devfsd.cdevsw import devsw
from devfsd.errors import DeviceError
from devfsd.kern import ModCmd
from devfsd.testing.harness import Kernel
from modules.crandom.crandom import (
    DEFAULT_MAXLEN,
    MAX_READ,
    PAGE_SIZE,
    PLAIN_MAX,
    chacha20_generator,
    permute,
    permute_fast,
    permute_plain,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from devfsd.kern import Props

P_FAIL = 1e-6
_POLL_ALL = select.POLLIN | select.POLLOUT | select.POLLRDNORM | select.POLLWRNORM


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with ``df`` degrees of freedom.

    Wilson-Hilferty: (X/df)^(1/3) is close to normal with mean 1 - 2/(9 df)
    and variance 2/(9 df); near p = 1e-6 it is off by a small factor, which
    a threshold this loose does not notice.
    """
    v = 2.0 / (9.0 * df)
    z = ((x / df) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def chi2_p_orders(samples: list[bytes], s: bytes) -> float:
    """p-value of "``samples`` are uniform over all orders of ``s``" (distinct bytes)."""
    orders = [bytes(p) for p in itertools.permutations(s)]
    counts = Counter(samples)
    assert set(counts) <= set(orders), "a sample is not a permutation"
    expected = len(samples) / len(orders)
    x = sum((counts[o] - expected) ** 2 / expected for o in orders)
    return chi2_sf(x, len(orders) - 1)


def chi2_p_positions(samples: list[bytes], n: int) -> float:
    """p-value of "byte v lands at each position equally often", for samples
    of ``bytes(range(n))``: a chi-square over the n x n (value, position) table."""
    table = np.zeros((n, n), dtype=np.int64)
    pos = np.arange(n)
    for s in samples:
        table[np.frombuffer(s, dtype=np.uint8), pos] += 1
    expected = len(samples) / n
    x = float(((table - expected) ** 2).sum() / expected)
    return chi2_sf(x, (n - 1) ** 2)


def errno_of(ei: pytest.ExceptionInfo[DeviceError]) -> int:
    return ei.value.errno


@asynccontextmanager
async def crandom_kernel(props: Props | None = None, isolate: bool = False) -> AsyncIterator[Kernel]:
    """A harness kernel with crandom loaded with ``props``; with ``isolate``, in a module host of its own."""
    async with Kernel.running(isolate=isolate) as k:
        await k.modload("crandom", props)
        yield k


# -- permutations, as functions ---------------------------------------------------


def _naive_shuffle(data: bytes) -> bytes:
    # The classic mistake (swap with any index): biased. Here to show that
    # the uniformity test catches it.
    buf = bytearray(data)
    for i in range(len(buf)):
        j = random.randrange(len(buf))
        buf[i], buf[j] = buf[j], buf[i]
    return bytes(buf)


def test_uniformity_test_catches_the_naive_shuffle() -> None:
    samples = [_naive_shuffle(b"abcd") for _ in range(4800)]
    assert chi2_p_orders(samples, b"abcd") < P_FAIL


def test_permute_plain_is_uniform_over_all_24_orders() -> None:
    samples = [permute_plain(b"abcd") for _ in range(4800)]
    assert chi2_p_orders(samples, b"abcd") >= P_FAIL


def test_permute_fast_is_uniform_over_all_24_orders() -> None:
    gen = chacha20_generator()
    samples = [permute_fast(b"abcd", gen) for _ in range(4800)]
    assert chi2_p_orders(samples, b"abcd") >= P_FAIL


def test_permute_fast_fresh_keys_are_uniform() -> None:
    # What the driver does: a new key from os.urandom for every permutation.
    samples = [permute_fast(b"abcd") for _ in range(2400)]
    assert chi2_p_orders(samples, b"abcd") >= P_FAIL


@pytest.mark.parametrize("fn", [permute_plain, permute_fast, permute])
@pytest.mark.parametrize("n", [0, 1, 2, PLAIN_MAX, PLAIN_MAX + 1, 4096])
def test_permutations_keep_the_bytes(fn: Callable[[bytes], bytes], n: int) -> None:
    data = os.urandom(n)
    out = fn(data)
    assert isinstance(out, bytes)
    assert sorted(out) == sorted(data)


def test_permute_fast_one_mib_is_a_shuffled_permutation() -> None:
    data = os.urandom(DEFAULT_MAXLEN)
    out = permute_fast(data)
    a = np.frombuffer(data, dtype=np.uint8)
    b = np.frombuffer(out, dtype=np.uint8)
    assert np.array_equal(np.bincount(a, minlength=256), np.bincount(b, minlength=256))
    # A uniform permutation fixes about 1/256 of random bytes' positions.
    assert (a == b).mean() < 0.01


def test_permute_plain_uses_its_index_source() -> None:
    # randbelow always 0: i = 3, 2, 1 each swap with 0.
    assert permute_plain(b"abcd", lambda k: 0) == b"bcda"
    # randbelow(k) = k - 1: every swap is with itself.
    assert permute_plain(b"abcd", lambda k: k - 1) == b"abcd"


def test_chacha20_generator_is_the_rfc8439_keystream() -> None:
    # RFC 8439 A.1, test vector 1: all-zero key and nonce, block counter 0.
    a1 = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )
    raw = chacha20_generator(bytes(32)).bit_generator.random_raw(8)
    assert np.asarray(raw, dtype="<u8").tobytes() == a1
    # And for a random key, against OpenSSL's ChaCha20 (16-byte nonce =
    # 32-bit counter + 96-bit nonce, all zero).
    key = os.urandom(32)
    raw = chacha20_generator(key).bit_generator.random_raw(64)
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(512))
    assert np.asarray(raw, dtype="<u8").tobytes() == stream


def test_chacha20_generator_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        chacha20_generator(bytes(16))


# -- the driver: reads and writes --------------------------------------------------


async def test_attach_takes_rperms_major_420(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated):
        assert devsw.getmajor("crandom") == 420
        assert devsw.lookup(420) is not None


async def test_read_is_a_permutation_of_the_string(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        assert await f.write(b"Hello NetBSD!") == 13
        for _ in range(20):  # rperm's test.c
            out = await f.read(80)
            assert len(out) == 13 and sorted(out) == sorted(b"Hello NetBSD!")
        await f.close()


async def test_reads_are_uniform_over_all_24_orders(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"abcd")
        samples = [await f.read(4) for _ in range(4800)]
        await f.close()
    assert chi2_p_orders(samples, b"abcd") >= P_FAIL


async def test_long_reads_are_uniform_over_positions(isolated: bool) -> None:
    # 64 bytes > PLAIN_MAX: the fast path, with a fresh key per read.
    n = 64
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(bytes(range(n)))
        samples = [await f.read(n) for _ in range(n * 40)]
        await f.close()
    assert chi2_p_positions(samples, n) >= P_FAIL


async def test_long_strings_permute_in_a_worker_thread() -> None:
    # From THREAD_MIN bytes on, the permutation runs off the trio thread on
    # a snapshot, so other requests go on meanwhile. In process only: it
    # spies on crandom's objects, which an isolated crandom keeps in its host.
    import sys
    import threading

    async with crandom_kernel() as k:
        impl = sys.modules["devfsd_modules.crandom.crandom"]
        sc = impl._sc
        threads: list[bool] = []
        real = sc.permute

        def spy(data: bytes) -> bytes:
            threads.append(threading.current_thread() is threading.main_thread())
            out: bytes = real(data)
            return out

        sc.permute = spy
        f = await k.open("crandom", 0)
        short = b"short"
        await f.write(short)
        assert sorted(await f.read(100)) == sorted(short)
        await f.close()
        f = await k.open("crandom", 0)
        data = bytes(range(256)) * (impl.THREAD_MIN // 256)
        await f.write(data)
        assert sorted(await f.read(len(data))) == sorted(data)
        await f.close()
    assert threads == [True, False]


async def test_first_write_replaces_later_writes_append(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"old string")
        await f.close()
        f = await k.open("crandom", 0)
        await f.write(b"ab")
        await f.write(b"cd")
        await f.write(b"e")
        assert sorted(await f.read(100)) == sorted(b"abcde")
        await f.close()


async def test_append_after_a_long_read(isolated: bool) -> None:
    # The fast path must not leave the stored bytearray exported (resizing
    # it would raise BufferError, an EIO to the writer).
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(bytes(range(PLAIN_MAX + 10)))
        assert len(await f.read(4096)) == PLAIN_MAX + 10
        assert await f.write(b"more") == 4
        assert sorted(await f.read(4096)) == sorted(bytes(range(PLAIN_MAX + 10)) + b"more")
        await f.close()


async def test_appends_go_to_the_string_the_minor_holds(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        a = await k.open("crandom", 0)
        b = await k.open("crandom", 0)
        await a.write(b"ab")
        await b.write(b"cd")  # b's first write: replaces
        await a.write(b"ef")  # a's second: appends to "cd"
        assert sorted(await a.read(100)) == sorted(b"cdef")
        await a.close()
        await b.close()


async def test_string_outlives_the_last_close(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"hello\n")
        await f.close()
        assert k.spec.opens == {}
        f = await k.open("crandom", 0)
        assert sorted(await f.read(6)) == sorted(b"hello\n")
        await f.close()


async def test_each_minor_keeps_its_own_string(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f0 = await k.open("crandom", 0)
        f1 = await k.open("crandom", 1)
        f7 = await k.open("crandom", 7)
        await f0.write(b"zero")
        await f1.write(b"one!")
        assert sorted(await f0.read(4)) == sorted(b"zero")
        assert sorted(await f1.read(4)) == sorted(b"one!")
        with pytest.raises(DeviceError) as ei:
            await f7.read(4)
        assert errno_of(ei) == errno.EINVAL
        await f1.close()  # minor 1's last close leaves minor 0's string
        assert sorted(await f0.read(4)) == sorted(b"zero")
        for f in (f0, f7):
            await f.close()


async def test_read_without_a_string_is_einval(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        with pytest.raises(DeviceError) as ei:
            await f.read(100)
        assert errno_of(ei) == errno.EINVAL
        await f.close()


async def test_read_shorter_than_the_string_is_einval(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"hello")
        with pytest.raises(DeviceError) as ei:
            await f.read(4)
        assert errno_of(ei) == errno.EINVAL
        assert len(await f.read(5)) == 5
        await f.close()


async def test_reads_never_reach_end_of_file(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"xy")
        assert all([len(await f.read(131072)) == 2 for _ in range(50)])
        await f.close()


async def test_first_zero_byte_write_clears_the_string(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"hello")
        await f.close()
        f = await k.open("crandom", 0)
        assert await f.write(b"") == 0
        with pytest.raises(DeviceError) as ei:
            await f.read(100)
        assert errno_of(ei) == errno.EINVAL
        await f.write(b"hi")  # a later write on the open: appends to nothing
        assert sorted(await f.read(100)) == sorted(b"hi")
        await f.close()


async def test_later_zero_byte_write_changes_nothing(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"abc")
        assert await f.write(b"") == 0
        assert sorted(await f.read(100)) == sorted(b"abc")
        await f.close()


async def test_past_maxlen_is_efbig_and_changes_nothing(isolated: bool) -> None:
    async with crandom_kernel({"maxlen": 4}, isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"abcd")
        await f.close()
        f = await k.open("crandom", 0)
        with pytest.raises(DeviceError) as ei:
            await f.write(b"vwxyz")  # a first write
        assert errno_of(ei) == errno.EFBIG
        assert sorted(await f.read(100)) == sorted(b"abcd")
        await f.write(b"xy")  # the EFBIG write did not count: this replaces
        with pytest.raises(DeviceError) as ei:
            await f.write(b"zzz")  # an append
        assert errno_of(ei) == errno.EFBIG
        assert sorted(await f.read(100)) == sorted(b"xy")
        await f.write(b"zz")  # exactly maxlen
        assert sorted(await f.read(100)) == sorted(b"xyzz")
        await f.close()


async def test_default_maxlen_is_the_largest_whole_read(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        data = os.urandom(DEFAULT_MAXLEN)
        assert await f.write(data[:600_000]) == 600_000
        assert await f.write(data[600_000:]) == DEFAULT_MAXLEN - 600_000
        with pytest.raises(DeviceError) as ei:
            await f.write(b"x")
        assert errno_of(ei) == errno.EFBIG
        out = await f.read(DEFAULT_MAXLEN)
        assert len(out) == DEFAULT_MAXLEN and out != data
        await f.close()
    # 256 FUSE pages less 4095 bytes (crandom(4), LOAD PROPERTIES).
    assert DEFAULT_MAXLEN == MAX_READ == 256 * PAGE_SIZE - (PAGE_SIZE - 1)


# -- oneshot -------------------------------------------------------------------------


async def test_oneshot_gives_eof_after_one_permutation_per_open(isolated: bool) -> None:
    async with crandom_kernel({"oneshot": True}, isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"hello")
        assert sorted(await f.read(100)) == sorted(b"hello")
        assert await f.read(100) == b""
        assert await f.read(100) == b""
        g = await k.open("crandom", 0)  # a new open gets one more
        assert sorted(await g.read(100)) == sorted(b"hello")
        assert await g.read(100) == b""
        await f.close()
        await g.close()


async def test_oneshot_failed_read_does_not_count(isolated: bool) -> None:
    async with crandom_kernel({"oneshot": True}, isolated) as k:
        f = await k.open("crandom", 0)
        with pytest.raises(DeviceError) as ei:
            await f.read(100)
        assert errno_of(ei) == errno.EINVAL
        await f.write(b"abc")
        with pytest.raises(DeviceError) as ei:
            await f.read(2)
        assert errno_of(ei) == errno.EINVAL
        assert sorted(await f.read(3)) == sorted(b"abc")
        assert await f.read(3) == b""
        await f.close()


async def test_oneshot_false_never_ends(isolated: bool) -> None:
    async with crandom_kernel({"oneshot": False}, isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"abc")
        assert len(await f.read(3)) == 3
        assert len(await f.read(3)) == 3
        await f.close()


# -- properties ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "props",
    [
        {"maxlen": 0},
        {"maxlen": -5},
        {"maxlen": MAX_READ + 1},
        {"maxlen": "4096"},
        {"maxlen": True},
        {"oneshot": "true"},
        {"oneshot": 1},
    ],
)
async def test_bad_properties_fail_init_with_einval(props: Props, isolated: bool) -> None:
    async with Kernel.running(isolate=isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("crandom", props)
        assert errno_of(ei) == errno.EINVAL
        assert k.loader.stat() == []
        assert devsw.lookup(420) is None


async def test_unknown_properties_are_ignored(isolated: bool) -> None:
    async with crandom_kernel({"colour": "blue", "maxlen": 1}, isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"a")
        with pytest.raises(DeviceError) as ei:
            await f.write(b"b")
        assert errno_of(ei) == errno.EFBIG
        await f.close()


# -- the module ------------------------------------------------------------------------


async def test_unload_while_open_is_ebusy(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"kept")
        with pytest.raises(DeviceError) as ei:
            await k.modunload("crandom")
        assert errno_of(ei) == errno.EBUSY
        # Still loaded and serving, string and all.
        assert sorted(await f.read(4)) == sorted(b"kept")
        await f.close()
        await k.modunload("crandom")
        assert devsw.lookup(420) is None


async def test_unload_is_ebusy_until_every_devs_last_close(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        a = await k.open("crandom", 0)
        b = await k.open("crandom", 0)
        c = await k.open("crandom", 3)
        for f in (a, c, b):
            with pytest.raises(DeviceError) as ei:
                await k.modunload("crandom")
            assert errno_of(ei) == errno.EBUSY
            await f.close()
        await k.modunload("crandom")


async def test_unload_and_reload_drops_the_strings(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        await f.write(b"forgotten")
        await f.close()
        await k.modunload("crandom")
        await k.modload("crandom")
        f = await k.open("crandom", 0)
        with pytest.raises(DeviceError) as ei:
            await f.read(100)
        assert errno_of(ei) == errno.EINVAL
        await f.close()


async def test_load_twice_is_eexist(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.modload("crandom")
        assert errno_of(ei) == errno.EEXIST


async def test_autounload_is_vetoed_while_a_string_is_stored(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        mod = k.loader.modules["crandom"]
        await mod.modcmd(ModCmd.AUTOUNLOAD, None)  # nothing stored: allowed
        f = await k.open("crandom", 5)
        await f.write(b"data")
        await f.close()
        with pytest.raises(DeviceError) as ei:
            await mod.modcmd(ModCmd.AUTOUNLOAD, None)
        assert errno_of(ei) == errno.EBUSY
        f = await k.open("crandom", 5)
        await f.write(b"")  # cleared
        await f.close()
        await mod.modcmd(ModCmd.AUTOUNLOAD, None)


async def test_stat_is_enotty(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.loader.modules["crandom"].modcmd(ModCmd.STAT, None)
        assert errno_of(ei) == errno.ENOTTY


async def test_poll_is_always_ready(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        f = await k.open("crandom", 0)
        assert await f.poll() == _POLL_ALL
        await f.close()


async def test_ioctl_is_enodev(isolated: bool) -> None:
    async with crandom_kernel(isolate=isolated) as k:
        with pytest.raises(DeviceError) as ei:
            await k.ioctl("crandom", 0, 0x2000_7400)
        assert errno_of(ei) == errno.ENODEV
