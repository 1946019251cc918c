"""Recycled column memory (``normalize.arena``): blocks come back only when nothing views them,
and decoding into recycled, garbage-filled memory gives exactly what fresh memory gives."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import normalize
from ingest.exchange import Exchange, LineConfig
from ingest.pcap import write_pcap
from ingest.simulator import generate_session
from normalize import arena
from normalize import records as R

TESTS = Path(__file__).resolve().parents[1]
SAMPLE = TESTS / "data" / "itch50" / "nasdaq-2019-start-of-day-head1000.itch"
PCAPS = sorted((TESTS / "data" / "pcap").rglob("*.pcap"))
MB = 1 << 20


def test_block_returns_only_when_the_last_view_is_gone():
    pool = arena.ArenaPool(max_idle_bytes=64 * MB)
    a = pool.take(5 * MB)
    assert a.shape == (5 * MB,) and a.flags.writeable
    a[:] = 7
    col = a[64:64 + 8 * 1000].view(np.uint64)
    buf = pa.py_buffer(col)
    table = pa.table({"x": pa.Array.from_buffers(pa.uint64(), 1000, [None, buf])})
    del a, col, buf
    gc.collect()
    assert pool.idle_bytes == 0                     # the table still views the block
    assert table.column("x")[0].as_py() == 0x0707070707070707
    del table
    gc.collect()
    assert pool.idle_bytes == 6 * MB                # rounded up to whole 2 MiB pages
    b = pool.take(5 * MB + 1)
    assert (pool.reused, pool.fresh) == (1, 1)
    assert b[0] == 7                                # the same memory, not zeroed


def test_blocks_are_reused_only_when_close_in_size():
    pool = arena.ArenaPool(max_idle_bytes=256 * MB)
    x = pool.take(40 * MB)
    del x
    y = pool.take(8 * MB)               # 40 MiB is more than 1.5x 8 MiB: a fresh block
    assert (pool.reused, pool.fresh) == (0, 2)
    z = pool.take(30 * MB)              # 40 MiB is within 1.5x of 30 MiB: reused
    assert (pool.reused, pool.fresh) == (1, 2)
    del y, z


def test_idle_memory_is_capped_oldest_first():
    pool = arena.ArenaPool(max_idle_bytes=20 * MB)
    blocks = [pool.take(8 * MB) for _ in range(4)]
    del blocks
    gc.collect()
    assert pool.idle_bytes == 16 * MB   # the third block would exceed the cap: two kept
    pool.clear()
    assert pool.idle_bytes == 0


def test_small_requests_and_a_disabled_pool_bypass_it():
    pool = arena.ArenaPool(max_idle_bytes=0)
    a = pool.take(8 * MB)
    assert a.base is None or not isinstance(a.base, memoryview)
    assert pool.fresh == 0
    small = arena.ArenaPool().take(1000)
    assert small.shape == (1000,)


def test_threads_taking_and_dropping_blocks_never_share_one():
    pool = arena.ArenaPool(max_idle_bytes=64 * MB)
    errors = []

    def work(mark):
        for _ in range(50):
            a = pool.take(4 * MB)
            a[::4096] = mark
            if not (a[::4096] == mark).all():
                errors.append(mark)
            del a

    threads = [threading.Thread(target=work, args=(m,)) for m in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert pool.reused > 0


# ---------------------------------------------------------------------------------------------
# decoding into recycled memory

@pytest.fixture
def junk_pool(monkeypatch):
    """Route every column allocation through a pool that fills returned blocks with 0xA5."""
    pool = arena.ArenaPool(max_idle_bytes=1 << 30, poison=0xA5)
    monkeypatch.setattr(arena, "POOL", pool)
    monkeypatch.setattr(arena, "MIN_BYTES", 0)
    return pool


def _fresh(fn):
    """``fn()`` with every column arena zeroed fresh memory."""
    saved = arena.POOL
    arena.POOL = arena.ArenaPool(max_idle_bytes=0)
    orig = R._arena.take
    try:
        R._arena.take = lambda n: np.zeros(n, np.uint8)
        return fn()
    finally:
        R._arena.take = orig
        arena.POOL = saved


def _assert_same(got: dict, want: dict):
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].num_rows == want[k].num_rows, k
        assert got[k].equals(want[k]), k


def _generated() -> bytes:
    return generate_session(30_000, 20, seed=11, date="2024-03-15").to_binaryfile()


@pytest.mark.parametrize("resolve", [True, False])
def test_read_itch_into_recycled_garbage_equals_fresh_memory(junk_pool, resolve):
    data = _generated()
    want = _fresh(lambda: normalize.read_itch(data, date="2024-03-15", resolve=resolve, batch_size=4096))
    for _ in range(3):                  # later rounds decode into blocks the earlier ones dropped
        got = normalize.read_itch(data, date="2024-03-15", resolve=resolve, batch_size=4096)
        _assert_same(got, want)
        del got
        gc.collect()
    assert junk_pool.reused > 0


def test_real_sample_and_captures_into_recycled_garbage_equal_fresh_memory(junk_pool):
    inputs = [(SAMPLE, "2019-01-30")] + [(p, "2023-08-22") for p in PCAPS[:4]]
    for path, date in inputs:
        want = _fresh(lambda: normalize.read_itch(path, date=date))
        normalize.read_itch(path, date=date)      # fills the pool with this input's blocks
        gc.collect()
        _assert_same(normalize.read_itch(path, date=date), want)
    assert junk_pool.reused > 0


def test_moldudp64_packets_into_recycled_garbage_equal_fresh_memory(junk_pool, tmp_path):
    ex = Exchange(_generated(), line_a=LineConfig("239.255.6.1", 30000))
    path = tmp_path / "s.pcap"
    ts = 1_710_509_400_123_456_789 + np.arange(len(ex.packets), dtype=np.uint64) * 1_001
    write_pcap(path, ex.packets, ts_ns=ts)
    want = _fresh(lambda: normalize.read_itch(path, date="2024-03-15"))
    normalize.read_itch(path, date="2024-03-15")
    gc.collect()
    _assert_same(normalize.read_itch(path, date="2024-03-15"), want)
