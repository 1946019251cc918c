"""The tick store's layout, commit protocol and reads (tickstore.store)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalize.records import MBO, to_arrow
from tickstore.store import NS_PER_DAY, StoreError, StoreLocked, TickStore

DAY0 = 20_000 * NS_PER_DAY                      # 2024-10-04


def mbo(n, seed=0, days=1, instruments=20):
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, MBO)
    rec["ts_event"] = DAY0 + rng.integers(0, days * NS_PER_DAY, n)
    rec["ts_recv"] = rec["ts_event"] + 1000
    rec["sequence"] = np.arange(n) + 1 + seed * 10**9
    rec["order_id"] = rng.integers(1, 10**9, n)
    rec["price"] = rng.integers(1, 10**6, n) * 100_000
    rec["size"] = rng.integers(1, 1000, n)
    rec["instrument_id"] = rng.integers(1, instruments + 1, n)
    rec["action"] = ord("A")
    rec["side"] = ord("B")
    rec["mpid"] = b"    "
    return pa.Table.from_batches([to_arrow("mbo", rec)])


def as_sorted(t: pa.Table) -> pa.Table:
    day = pa.compute.divide(t.column("ts_event").cast(pa.int64()), NS_PER_DAY)
    t = t.append_column("_day", day)
    return t.sort_by([("_day", "ascending"), ("instrument_id", "ascending"),
                      ("ts_event", "ascending"), ("sequence", "ascending")]).drop(["_day"])


def test_append_then_read_gives_the_rows_by_day_and_instrument(tmp_path):
    t = mbo(5000, days=3)
    with TickStore(tmp_path) as s:
        entries = s.append("mbo", t)
        assert len(entries) == 3 and sum(e.rows for e in entries) == 5000
        got = s.read("mbo")
    assert got.equals(as_sorted(t))
    for e in entries:                           # layout, sort order, statistics, encodings
        path = tmp_path / e.path
        assert path.parent.name == f"date={e.date}" and path.parent.parent.name == "mbo"
        f = pq.ParquetFile(path)
        col = f.metadata.row_group(0).column(0)
        assert col.compression == "ZSTD" and col.statistics is not None
        assert "DELTA_BINARY_PACKED" in str(col.encodings)
        inst = f.read(columns=["instrument_id"]).column(0).to_numpy()
        assert np.all(np.diff(inst.astype(np.int64)) >= 0)


def test_queries_choose_files_from_the_catalog_and_filter_rows(tmp_path):
    with TickStore(tmp_path) as s:
        for k in range(4):
            s.append("mbo", mbo(2000, seed=k, days=2, instruments=5 + 5 * k))
        everything = s.read("mbo")
        start, end = DAY0 + NS_PER_DAY // 3, DAY0 + NS_PER_DAY // 2
        assert all(e.date == "2024-10-04" for e in s.files("mbo", start=start, end=end))
        got = s.read("mbo", instruments=[3, 17], start=start, end=end)
        files = s.files("mbo", instruments=[17])
        assert len(files) < len(s.files("mbo"))            # instrument 17: appends 3 and 4
    ts = everything.column("ts_event").cast(pa.int64()).to_numpy()
    inst = everything.column("instrument_id").to_numpy()
    want = everything.filter(pa.array(np.isin(inst, [3, 17]) & (ts >= start) & (ts < end)))
    assert got.equals(want) and got.num_rows > 0


def test_bad_arguments_get_errors_naming_them(tmp_path):
    with TickStore(tmp_path) as s:
        with pytest.raises(StoreError, match="Unknown schema 'quotes'"):
            s.append("quotes", mbo(10))
        with pytest.raises(StoreError, match="missing \\['mpid'\\]"):
            s.append("mbo", mbo(10).drop(["mpid"]))
        with pytest.raises(StoreError, match="wrong type.*price"):
            t = mbo(10)
            s.append("mbo", t.set_column(t.schema.get_field_index("price"), "price",
                                         t.column("price").cast(pa.float64())))
        t = mbo(10)
        ts = pa.array(t.column("ts_event").to_pylist()[:3] + [None] * 7, t.schema.field(0).type)
        with pytest.raises(StoreError, match="null or before 1970 \\(first at row 3\\)"):
            s.append("mbo", t.set_column(0, "ts_event", ts))
        with pytest.raises(StoreError, match="`start`.*after the `end`"):
            s.read("mbo", start=DAY0 + 10, end=DAY0)
        with pytest.raises(StoreError, match="Unknown column"):
            s.read("mbo", columns=["prize"])
        assert s.read("mbo").num_rows == 0


def test_a_second_writer_is_refused_and_readers_need_no_lock(tmp_path):
    with TickStore(tmp_path) as s:
        s.append("mbo", mbo(100))
        with pytest.raises(StoreLocked, match="has a writer already"):
            TickStore(tmp_path)
        assert TickStore(tmp_path, writer=False).read("mbo").num_rows == 100
    TickStore(tmp_path).close()                 # the lock goes with its holder


def test_what_a_killed_writer_leaves_is_invisible_and_cleaned_on_open(tmp_path):
    with TickStore(tmp_path) as s:
        s.append("mbo", mbo(300, seed=1))
    part = next((tmp_path / "mbo").glob("date=*"))
    (part / ".tmp-part-x.parquet").write_bytes(b"half a file")          # killed mid-write
    pq.write_table(mbo(50, seed=2), part / "part-0-orphan.parquet")     # renamed, no line
    cat = tmp_path / "_catalog" / "mbo.jsonl"
    with open(cat, "a") as f:
        f.write('{"path": "mbo/date=2024-10-04/part-0-orphan.parquet", "ro')  # torn line
    reader = TickStore(tmp_path, writer=False)
    assert reader.read("mbo").num_rows == 300                          # only committed rows
    with TickStore(tmp_path) as s:                                      # the writer cleans
        assert sorted(p.name for p in part.iterdir()) == [
            p for p in sorted(os.listdir(part)) if not p.startswith(".tmp")
            and "orphan" not in p]
        assert cat.read_text().count("\n") == 1 and cat.read_text().endswith("\n")
        s.append("mbo", mbo(10, seed=3))
        assert s.read("mbo").num_rows == 310


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 2**16),
                                  st.integers(1, 3)), min_size=1, max_size=6),
       query=st.tuples(st.integers(0, 3 * NS_PER_DAY), st.integers(0, 3 * NS_PER_DAY),
                       st.lists(st.integers(1, 12), max_size=4)))
def test_any_appends_read_back_as_the_model_says(tmp_path_factory, batches, query):
    root = tmp_path_factory.mktemp("store")
    model = []
    with TickStore(root) as s:
        for n, seed, days in batches:
            t = mbo(n, seed=seed, days=days, instruments=12)
            s.append("mbo", t)
            model.append(t)
        a, b = sorted(query[:2])
        inst = query[2] or None
        got = s.read("mbo", instruments=inst, start=DAY0 + a, end=DAY0 + b)
    every = as_sorted(pa.concat_tables(model))
    ts = every.column("ts_event").cast(pa.int64()).to_numpy()
    keep = (ts >= DAY0 + a) & (ts < DAY0 + b)
    if inst is not None:
        keep &= np.isin(every.column("instrument_id").to_numpy(), inst)
    want = every.filter(pa.array(keep))
    assert got.num_rows == want.num_rows
    key = ["instrument_id", "ts_event", "sequence"]
    assert got.select(key).equals(want.select(key)) or as_sorted(got).equals(as_sorted(want))


def test_a_writer_killed_at_random_points_loses_no_committed_batch(tmp_path):
    """SIGKILL the writer in the middle of appends, again and again: after each, every batch
    it reported committed is there exactly once and nothing else is visible."""
    child = Path(__file__).with_name("store_writer_child.py")
    rng = np.random.default_rng(0)
    log = tmp_path / "committed.txt"
    kills = 0
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, str(child), str(tmp_path / "s"), str(log),
                              str(round_)], cwd=Path(__file__).resolve().parents[2])
        try:
            p.wait(timeout=float(rng.uniform(1.5, 3.0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            kills += 1
        committed = [int(x) for x in log.read_text().split()] if log.exists() else []
        got = TickStore(tmp_path / "s", writer=False).read("mbo", columns=["sequence"])
        seq = got.column("sequence").to_numpy()
        batches = np.unique(seq // 10**6)
        assert set(committed) <= set(batches.tolist())   # committed: present
        counts = np.bincount((seq // 10**6).astype(np.int64))
        for b in batches:                                 # each batch whole and once
            assert counts[b] == 500, (round_, b, counts[b])
    assert kills == 6 and len(committed) >= 6        # every round killed mid-run, work done
