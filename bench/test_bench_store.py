"""pytest-benchmark versions of the tick store benchmark on a small session: writes, range reads
and the VWAP query through tickpipe's store, and the same writes and reads through ArcticDB
(local LMDB, one symbol in time order).

Run with ``.venv/bin/python -m pytest bench/test_bench_store.py``; the side-by-side table with
ratios and targets is ``bench/store.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("pytest_benchmark")

from store import (HOUR, MINUTE, _arctic, _fresh, _utc, _vwap_polars, _vwap_sql,  # noqa: E402
                   arctic_frame, mbo_rows)

N_ROWS, N_INSTRUMENTS, SEED = 100_000, 50, 1
ROUNDS = 5


@pytest.fixture(scope="module")
def mbo():
    return mbo_rows(N_ROWS, N_INSTRUMENTS, SEED)[0]


@pytest.fixture(scope="module")
def busy(mbo):
    import numpy as np
    ts = mbo.column("ts_event").cast("int64").to_numpy()
    inst = mbo.column("instrument_id").to_numpy()
    lo, hi = (int(np.datetime64(t, "ns").astype(np.int64)) for t in HOUR)
    return int(np.argmax(np.bincount(inst[(ts >= lo) & (ts < hi)])))


@pytest.fixture(scope="module")
def store(mbo, tmp_path_factory):
    from tickstore.store import TickStore
    root = tmp_path_factory.mktemp("tickpipe")
    with TickStore(root) as st:
        st.append("mbo", mbo)
    return TickStore(root, writer=False)


@pytest.fixture(scope="module")
def library(mbo, tmp_path_factory):
    root = tmp_path_factory.mktemp("arcticdb")
    lib = _arctic(root, N_ROWS).create_library("bench")
    lib.write("mbo", arctic_frame(mbo))
    return lib


def _run(benchmark, fn, rows: int):
    benchmark.extra_info.update(rows=rows)
    return benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def test_tickpipe_appends_the_rows_to_a_fresh_store(benchmark, mbo, tmp_path):
    from tickstore.store import TickStore
    roots = iter(range(1_000))

    def setup():
        return (TickStore(_fresh(tmp_path / f"s{next(roots)}")),), {}

    def append(st):
        with st:
            return st.append("mbo", mbo)
    benchmark.extra_info.update(rows=mbo.num_rows)
    entries = benchmark.pedantic(append, setup=setup, rounds=ROUNDS, warmup_rounds=1,
                                 iterations=1)
    assert sum(e.rows for e in entries) == mbo.num_rows


def test_arcticdb_writes_the_rows_to_a_fresh_library(benchmark, mbo, tmp_path):
    df = arctic_frame(mbo)
    roots = iter(range(1_000))

    def setup():
        return (_arctic(_fresh(tmp_path / f"a{next(roots)}"), N_ROWS).create_library("b"),), {}

    benchmark.extra_info.update(rows=mbo.num_rows)
    v = benchmark.pedantic(lambda lib: lib.write("mbo", df), setup=setup, rounds=ROUNDS,
                           warmup_rounds=1, iterations=1)
    assert v.symbol == "mbo"


def test_tickpipe_reads_everything_to_arrow(benchmark, store, mbo):
    t = _run(benchmark, lambda: store.read("mbo"), mbo.num_rows)
    assert t.num_rows == mbo.num_rows


def test_arcticdb_reads_everything_to_arrow(benchmark, library, mbo):
    t = _run(benchmark, lambda: library.read("mbo", output_format="pyarrow").data, mbo.num_rows)
    assert t.num_rows == mbo.num_rows


def test_tickpipe_reads_one_instrument_over_one_hour(benchmark, store, library, busy):
    import arcticdb as adb
    t = _run(benchmark, lambda: store.read("mbo", instruments=[busy], start=HOUR[0],
                                           end=HOUR[1]), 0)
    q = adb.QueryBuilder()
    q = q[q.instrument_id == busy]
    peer = library.read("mbo", date_range=(_utc(HOUR[0]), _utc(HOUR[1], 1)), query_builder=q)
    assert t.num_rows == len(peer.data) > 0


def test_arcticdb_reads_one_instrument_over_one_hour(benchmark, library, busy):
    import arcticdb as adb
    q = adb.QueryBuilder()
    q = q[q.instrument_id == busy]
    dr = (_utc(HOUR[0]), _utc(HOUR[1], 1))
    t = _run(benchmark, lambda: library.read("mbo", date_range=dr, query_builder=q,
                                             output_format="pyarrow").data, 0)
    assert t.num_rows > 0


def test_tickpipe_reads_all_instruments_over_one_minute(benchmark, store, library):
    t = _run(benchmark, lambda: store.read("mbo", start=MINUTE[0], end=MINUTE[1]), 0)
    peer = library.read("mbo", date_range=(_utc(MINUTE[0]), _utc(MINUTE[1], 1)))
    assert t.num_rows == len(peer.data) > 0


def test_arcticdb_reads_all_instruments_over_one_minute(benchmark, library):
    dr = (_utc(MINUTE[0]), _utc(MINUTE[1], 1))
    t = _run(benchmark, lambda: library.read("mbo", date_range=dr, output_format="pyarrow").data, 0)
    assert t.num_rows > 0


def test_duckdb_computes_vwap_per_instrument_minute_over_the_store(benchmark, store):
    import duckdb
    files = ", ".join(f"'{store.root / e.path}'" for e in store.files("mbo"))
    q = _vwap_sql(f"read_parquet([{files}])")
    con = duckdb.connect()
    t = _run(benchmark, lambda: con.sql(q).to_arrow_table(), 0)
    assert t.num_rows == _vwap_polars([str(store.root / e.path) for e in store.files("mbo")]).height


def test_polars_computes_vwap_per_instrument_minute_over_the_store(benchmark, store):
    files = [str(store.root / e.path) for e in store.files("mbo")]
    bars = _run(benchmark, lambda: _vwap_polars(files), 0)
    assert bars.height > 0


def test_store_sql_computes_vwap_per_instrument_minute(benchmark, store):
    if not hasattr(store, "sql"):
        pytest.skip("this TickStore has no sql() yet")
    t = _run(benchmark, lambda: store.sql(_vwap_sql("mbo")), 0)
    assert t.num_rows == _vwap_polars([str(store.root / e.path) for e in store.files("mbo")]).height
