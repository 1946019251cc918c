"""The tick store's layout, commit protocol and reads (tickstore.store)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from normalize.records import MBO, arrow_schema, to_arrow
from tickstore.store import NS_PER_DAY, SLOTS, StoreError, StoreLocked, TickStore

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


def as_sorted(t: pa.Table, slot_ns: int = NS_PER_DAY) -> pa.Table:
    """The store's order: by time slot, instrument, time, then as appended (here: sequence)."""
    day = pa.compute.divide(t.column("ts_event").cast(pa.int64()), slot_ns)
    t = t.append_column("_day", day)
    return t.sort_by([("_day", "ascending"), ("instrument_id", "ascending"),
                      ("ts_event", "ascending"), ("sequence", "ascending")]).drop(["_day"])


def test_append_then_read_gives_the_rows_by_day_and_instrument(tmp_path):
    t = mbo(5000, days=3)
    with TickStore(tmp_path, slot="1D") as s:
        entries = s.append("mbo", t)
        assert len(entries) == 3 and sum(e.rows for e in entries) == 5000
        got = s.read("mbo")
    assert got.equals(as_sorted(t))
    for e in entries:                           # layout, sort order, statistics, encodings
        path = tmp_path / e.path
        assert path.parent.name == f"date={e.date}" and path.parent.parent.name == "mbo"
        f = pq.ParquetFile(path)
        rg = f.metadata.row_group(0)
        col = rg.column(0)                      # ts_event: deltas, which zstd would not shrink
        assert col.compression == "UNCOMPRESSED" and col.statistics.has_min_max
        assert "DELTA_BINARY_PACKED" in str(col.encodings)
        size = rg.column(f.schema_arrow.names.index("size"))
        assert size.compression == "ZSTD" and "RLE_DICTIONARY" in str(size.encodings)
        assert [(c.column_index, c.descending) for c in rg.sorting_columns] == [
            (f.schema_arrow.names.index("instrument_id"), False), (0, False)]
        assert f.metadata.created_by.startswith("tickpipe tickstore")
        inst = f.read(columns=["instrument_id"]).column(0).to_numpy()
        assert np.all(np.diff(inst.astype(np.int64)) >= 0)


def test_appends_take_batches_and_dataframes_too(tmp_path):
    t = mbo(900, seed=3)
    with TickStore(tmp_path, slot="1D") as s:
        s.append("mbo", t.to_batches(max_chunksize=100))
        s.append("mbo", t.to_pandas())
        s.append("mbo", t.to_batches()[0])
        assert s.read("mbo").equals(as_sorted(pa.concat_tables([t, t, t.slice(0, t.to_batches()[0]
                                                                               .num_rows)])))
        with pytest.raises(StoreError, match="missing \\['size'\\]"):
            s.append("mbo", t.to_pandas().drop(columns=["size"]))
        bad = t.to_pandas()
        bad["price"] = "x"
        with pytest.raises(StoreError, match="does not convert to the `mbo` schema"):
            s.append("mbo", bad)


def test_queries_choose_files_from_the_catalog_and_filter_rows(tmp_path):
    with TickStore(tmp_path, slot="1D") as s:
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
    with TickStore(tmp_path, slot="1D") as s:
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
        price = pa.array([7, None, 9] + [1] * 7, pa.int64())
        with pytest.raises(StoreError, match="null values in price.*price at row 1"):
            s.append("mbo", t.set_column(t.schema.get_field_index("price"), "price", price))
        with pytest.raises(StoreError, match="`start`.*after the `end`"):
            s.read("mbo", start=DAY0 + 10, end=DAY0)
        with pytest.raises(StoreError, match="Unknown column"):
            s.read("mbo", columns=["prize"])
        assert s.read("mbo").num_rows == 0


def test_a_second_writer_is_refused_and_readers_need_no_lock(tmp_path):
    with TickStore(tmp_path, slot="1D") as s:
        s.append("mbo", mbo(100))
        with pytest.raises(StoreLocked, match="has a writer already"):
            TickStore(tmp_path, slot="1D")
        assert TickStore(tmp_path, writer=False).read("mbo").num_rows == 100
    TickStore(tmp_path).close()                 # the lock goes with its holder


def test_what_a_killed_writer_leaves_is_invisible_and_cleaned_on_open(tmp_path):
    with TickStore(tmp_path, slot="1D") as s:
        s.append("mbo", mbo(300, seed=1))
    part = next((tmp_path / "mbo").glob("date=*"))
    (part / ".tmp-part-0000000000000000001-0123456789ab.parquet").write_bytes(b"half a file")          # killed mid-write
    pq.write_table(mbo(50, seed=2), part / "part-0000000000000000000-0123456789ab.parquet")     # renamed, no line
    cat = tmp_path / "_catalog" / "mbo.jsonl"
    with open(cat, "a") as f:
        f.write('{"path": "mbo/date=2024-10-04/part-0000000000000000000-0123456789ab.parquet", "ro')  # torn line
    reader = TickStore(tmp_path, writer=False)
    assert reader.read("mbo").num_rows == 300                          # only committed rows
    with TickStore(tmp_path, slot="1D") as s:                                      # the writer cleans
        assert sorted(p.name for p in part.iterdir()) == [
            p for p in sorted(os.listdir(part)) if not p.startswith(".tmp")
            and "0123456789ab" not in p]
        assert cat.read_text().count("\n") == 1 and cat.read_text().endswith("\n")
        s.append("mbo", mbo(10, seed=3))
        assert s.read("mbo").num_rows == 310


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("append"), st.integers(0, 400),
                                        st.integers(0, 2**16), st.integers(1, 3),
                                        st.sampled_from(["shuffled", "in time", "sorted"])),
                              st.tuples(st.just("compact"), st.integers(1, 3))),
                    min_size=1, max_size=7),
       query=st.tuples(st.integers(0, 3 * NS_PER_DAY), st.integers(0, 3 * NS_PER_DAY),
                       st.lists(st.integers(1, 12), max_size=4)),
       batch_rows=st.integers(1, 300), slot=st.sampled_from(["1D", "4h", "1h"]))
def test_any_appends_and_compactions_read_back_as_the_model_says(tmp_path_factory, ops, query,
                                                                 batch_rows, slot):
    """Appends and compactions in any order, then a range read and a scan in small batches:
    both give the model's rows (all appended rows, sorted by day, instrument, time, append
    order), and compaction never changes what a read gives."""
    root = tmp_path_factory.mktemp("store")
    model = []
    a, b = sorted(query[:2])
    inst = query[2] or None
    with TickStore(root, slot=slot, row_group_rows=128) as s:
        for op in ops:
            if op[0] == "append":
                t = mbo(op[1], seed=op[2], days=op[3], instruments=12)
                if op[4] == "in time":               # a feed's order
                    t = t.sort_by([("ts_event", "ascending")])
                elif op[4] == "sorted":              # the store's order already
                    t = as_sorted(t)
                s.append("mbo", t)
                model.append(t)
            else:
                before = s.read("mbo")
                s.compact("mbo", min_files=op[1])
                assert s.read("mbo").equals(before)
        got = s.read("mbo", instruments=inst, start=DAY0 + a, end=DAY0 + b)
        scanned = list(s.scan("mbo", instruments=inst, start=DAY0 + a, end=DAY0 + b,
                              batch_rows=batch_rows))
        assert s.verify().ok
        assert all(e.ts_max < e.slot + SLOTS[slot] * 10**9 for e in s.files("mbo"))
    every = as_sorted(pa.concat_tables(model), SLOTS[slot] * 10**9) if model else None
    if every is None:
        assert got.num_rows == 0 and not scanned
        return
    ts = every.column("ts_event").cast(pa.int64()).to_numpy()
    keep = (ts >= DAY0 + a) & (ts < DAY0 + b)
    if inst is not None:
        keep &= np.isin(every.column("instrument_id").to_numpy(), inst)
    want = every.filter(pa.array(keep))
    assert got.equals(want)
    assert all(0 < x.num_rows <= batch_rows for x in scanned)
    assert pa.Table.from_batches(scanned, schema=got.schema).equals(want)


def warm_the_writer_child(tmp_path) -> None:
    """What the writer child compiles (the file writer, the decoders, compaction), compiled
    here first into numba's disk cache: a child killed while compiling, on a first run with an
    empty cache, would commit nothing."""
    with TickStore(tmp_path / "warm", slot="4h") as s:
        for seed in (1, 2):
            s.append("mbo", mbo(500, seed=seed, days=2))
        s.compact("mbo")
        s.read("mbo", columns=["sequence"])
        list(s.scan("mbo", columns=["instrument_id", "ts_event", "sequence"], batch_rows=256))


def test_a_writer_killed_at_random_points_loses_no_committed_batch(tmp_path):
    """SIGKILL the writer in the middle of appends and compactions, again and again: after
    each, every batch it reported committed is there exactly once, nothing else is visible,
    and verify finds every committed file as its catalog entry says."""
    warm_the_writer_child(tmp_path)
    child = Path(__file__).with_name("store_writer_child.py")
    rng = np.random.default_rng(0)
    log = tmp_path / "committed.txt"
    kills = 0
    for round_ in range(6):
        p = subprocess.Popen([sys.executable, str(child), str(tmp_path / "s"), str(log),
                              str(round_), "4"], cwd=Path(__file__).resolve().parents[2])
        try:
            p.wait(timeout=float(rng.uniform(1.5, 3.0)))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            kills += 1
        committed = [int(x) for x in log.read_text().split()] if log.exists() else []
        reader = TickStore(tmp_path / "s", writer=False)
        got = reader.read("mbo", columns=["sequence"])
        seq = got.column("sequence").to_numpy()
        batches = np.unique(seq // 10**6)
        assert set(committed) <= set(batches.tolist())   # committed: present
        counts = np.bincount((seq // 10**6).astype(np.int64))
        for b in batches:                                 # each batch whole and once
            assert counts[b] == 500, (round_, b, counts[b])
        rep = reader.verify()                             # leftovers are not problems
        assert rep.ok, rep.problems
    assert kills == 6 and len(committed) >= 6        # every round killed mid-run, work done


def test_readers_during_appends_and_compactions_see_whole_commits(tmp_path):
    """A writer process appends 500-row batches and compacts every third append while this
    process reads, scans and queries in a loop: every look shows whole batches only, never a
    batch twice, never fewer batches than the look before, rows in order."""
    warm_the_writer_child(tmp_path)
    child = Path(__file__).with_name("store_writer_child.py")
    root = tmp_path / "s"
    TickStore(root, slot="4h").close()
    p = subprocess.Popen([sys.executable, str(child), str(root), str(tmp_path / "log"), "0", "3"],
                         cwd=Path(__file__).resolve().parents[2])
    reader = TickStore(root, writer=False)
    seen, looks, merged = 0, 0, set()
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and (looks < 40 or len(merged) < 3):
            kind = looks % 3
            if kind == 0:
                t = reader.read("mbo", columns=["instrument_id", "ts_event", "sequence"])
            elif kind == 1:
                t = pa.Table.from_batches(list(reader.scan(
                    "mbo", columns=["instrument_id", "ts_event", "sequence"], batch_rows=256)),
                    schema=KEYS)
            else:
                t = reader.sql("SELECT sequence FROM mbo")
            seq = t.column("sequence").to_numpy().astype(np.int64)
            counts = np.bincount(seq // 10**6) if seq.size else np.zeros(1, np.int64)
            batches = np.flatnonzero(counts)
            assert np.all(counts[batches] == 500), (kind, counts[batches])
            assert np.unique(seq).size == seq.size
            assert batches.size >= seen
            seen = batches.size
            if kind < 2:
                assert t.equals(as_sorted_keys(t))
            merged |= {e.path for e in reader.files("mbo") if e.rows > 500}    # compactions
            looks += 1
    finally:
        p.kill()
        p.wait()
    assert looks >= 40 and seen >= 6 and len(merged) >= 3
    assert reader.verify().ok


KEYS = pa.schema([arrow_schema("mbo").field(c) for c in ("instrument_id", "ts_event", "sequence")])


def as_sorted_keys(t: pa.Table) -> pa.Table:
    """The store's order for the writer child's 4-hour slots."""
    day = pa.compute.divide(t.column("ts_event").cast(pa.int64()), 4 * 3600 * 10**9)
    return t.append_column("_day", day).sort_by(
        [("_day", "ascending"), ("instrument_id", "ascending"),
         ("ts_event", "ascending")]).drop(["_day"])


def test_compaction_merges_a_day_in_one_commit_and_deletes_old_files_when_no_one_reads(tmp_path):
    with TickStore(tmp_path, slot="1D", row_group_rows=500) as s:
        for k in range(5):
            s.append("mbo", mbo(700, seed=k, days=2))
        before = s.read("mbo")
        old = {e.path for e in s.files("mbo")}
        with s.reading():                        # a reader is busy: the old files stay
            new = s.compact("mbo")
            assert all((tmp_path / p).exists() for p in old)
            assert s.verify().pending_deletion == sorted(old)
        assert len(new) == 2 and {e.date for e in new} == {"2024-10-04", "2024-10-05"}
        assert s.read("mbo").equals(before) and len(s.files("mbo")) == 2
        assert s.compact("mbo") == []            # nothing left to merge
        assert not any((tmp_path / p).exists() for p in old)   # ... and the old files gone
        f = pq.ParquetFile(tmp_path / new[0].path)
        assert f.metadata.num_row_groups == -(-new[0].rows // 500)
        rep = s.verify()
        assert rep.ok and rep.files == 2 and rep.rows == 3500 and not rep.pending_deletion


def busy_day(n_light=30, seed=0):
    """A day of mbo rows: instrument 1 with 9,000 rows and 2 with 3,000 (busy against a
    16,384-row group), 3..n_light+2 with 500 each, in time order."""
    rng = np.random.default_rng(seed)
    sizes = {1: 9000, 2: 3000, **{k: 500 for k in range(3, n_light + 3)}}
    t = mbo(sum(sizes.values()), seed=seed)
    inst = np.concatenate([np.full(n, k, np.uint32) for k, n in sizes.items()])
    rng.shuffle(inst)
    k = t.schema.get_field_index("instrument_id")
    t = t.set_column(k, t.schema.field(k), pa.array(inst, pa.uint32()))
    return t.sort_by([("ts_event", "ascending")])


def row_groups(path) -> list[tuple[int, int, int]]:
    """(rows, first instrument, last instrument) of each row group of a file."""
    md = pq.read_metadata(path)
    k = md.schema.names.index("instrument_id")
    return [(md.row_group(i).num_rows, md.row_group(i).column(k).statistics.min,
             md.row_group(i).column(k).statistics.max) for i in range(md.num_row_groups)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 40_000), max_size=40), st.integers(1, 50_000))
def test_row_group_bounds_split_only_busy_instruments(runs, target):
    """_group_bounds over any instruments' run lengths: row groups from the first row to the
    last, none over ``target`` rows; a busy instrument's rows alone in theirs, cut every
    ``target`` rows; any other instrument's rows in one row group."""
    from tickstore.store import HEAVY, HEAVY_ROWS, _group_bounds
    b = _group_bounds(np.array(runs, np.int64), target).tolist()
    starts = np.r_[0, np.cumsum(runs)].tolist()
    assert b[0] == 0 and b[-1] == starts[-1]
    assert all(0 < hi - lo <= target for lo, hi in zip(b, b[1:]))
    heavy = min(max(target // HEAVY, HEAVY_ROWS), target)
    for r, lo, hi in zip(runs, starts, starts[1:]):
        inside = [x for x in b if lo < x < hi]
        if r >= heavy:
            assert lo in b and hi in b and inside == list(range(lo + target, hi, target))
        else:
            assert inside == []

def test_row_groups_keep_an_instrument_whole_and_give_busy_ones_their_own(tmp_path):
    """A query for one instrument reads its own rows and few others': no instrument's rows are
    split between row groups (unless they fill more than one), and an instrument with a
    sixteenth of a row group (and 2,048 rows) or more has row groups of its own."""
    t = busy_day()
    with TickStore(tmp_path, slot="1D", row_group_rows=16_384) as s:
        (e,) = s.append("mbo", t)
        assert s.read("mbo").equals(as_sorted(t))
    groups = row_groups(tmp_path / e.path)
    assert sum(g[0] for g in groups) == t.num_rows and max(g[0] for g in groups) <= 16_384
    assert (9000, 1, 1) in groups and (3000, 2, 2) in groups
    light = [g for g in groups if g[1] > 2]
    for (_, _, last), (_, first, _) in zip(light, light[1:]):
        assert last < first                     # an instrument in one row group only
    assert sum(g[0] for g in light) == 30 * 500 and len(light) == 1


def test_a_read_keeps_the_row_groups_that_can_hold_its_rows_and_filters_only_where_needed(
        tmp_path):
    """Row groups are chosen by the statistics kept with the footer; the rows of a group that
    holds only wanted rows are taken as they are, the others filtered (results against the
    rows selected by hand)."""
    t = busy_day()
    ts = t.column("ts_event").cast(pa.int64()).to_numpy()
    inst = t.column("instrument_id").to_numpy()
    with TickStore(tmp_path, slot="1D", row_group_rows=16_384) as s:
        (e,) = s.append("mbo", t)
        groups = row_groups(tmp_path / e.path)
        keys = s._footer(e)[0]
        assert [tuple(k[:2]) for k in keys] == [g[1:] for g in groups]
        ids, cut = s._pruned(e, np.array([1]), None, None)       # instrument 1's own groups
        assert not cut and ids == [i for i, g in enumerate(groups) if g[1:] == (1, 1)]
        ids, cut = s._pruned(e, np.array([5]), None, None)       # one of the light ones
        assert cut and len(ids) == 1
        ids, cut = s._pruned(e, None, int(ts.max()) + 1, None)   # after the last row
        assert ids is None
        lo, hi = int(np.quantile(ts, 0.3)), int(np.quantile(ts, 0.6))
        for ids in ([1], [2, 5], [1, 2, 3], None):
            want = (ts >= lo) & (ts < hi) & (np.ones(ts.size, bool) if ids is None
                                               else np.isin(inst, ids))
            got = s.read("mbo", instruments=ids, start=lo, end=hi)
            assert got.equals(as_sorted(t.filter(pa.array(want))))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 40)), max_size=60),
                min_size=1, max_size=4),
       st.one_of(st.none(), st.lists(st.integers(0, 6), unique=True).map(sorted)),
       st.one_of(st.none(), st.integers(-1, 41)), st.one_of(st.none(), st.integers(-1, 41)),
       st.booleans())
def test_the_rows_a_read_wants_are_found_as_ranges_in_sorted_groups(groups, ids, lo, hi,
                                                                    shuffle):
    """_wanted over row groups each sorted by (instrument, time): the ranges of rows of the
    instruments and times asked for are exactly the rows a mask picks; rows out of that order
    are said to be so (the read then filters)."""
    from tickstore.store import _wanted
    keys = [sorted(g) for g in groups]
    if shuffle and any(len(set(g)) > 1 for g in keys):
        g = next(g for g in keys if len(set(g)) > 1)
        g.reverse()                                  # out of order
    inst = np.array([i for g in keys for i, _ in g], np.uint32)
    ts = np.array([t for g in keys for _, t in g], np.int64)
    bounds = np.r_[0, np.cumsum([len(g) for g in keys])].astype(np.int64)
    big = np.iinfo(np.int64)
    sel, ok = _wanted(inst, ts, bounds, np.array(ids or [], np.int64), ids is None,
                      big.min if lo is None else lo, big.max if hi is None else hi)
    wanted = set(range(7)) if ids is None else set(ids)
    ordered = all(g == sorted(g, key=lambda r: r[0]) and all(   # instruments, and the times
        [t for i, t in g if i == w] == sorted(t for i, t in g if i == w) for w in wanted)
        for g in keys)                                           # of those wanted, in order
    assert ok == ordered
    if not ok:
        return
    mask = np.ones(ts.size, bool) if ids is None else np.isin(inst, ids)
    mask &= (ts >= (big.min if lo is None else lo)) & (ts < (big.max if hi is None else hi))
    got = np.zeros(ts.size, bool)
    for a, b in sel:
        assert not got[a:b].any() and b > a
        got[a:b] = True
    assert np.array_equal(got, mask)
    assert all(b0 < a1 for (_, b0), (a1, _) in zip(sel, sel[1:]))    # apart: joined if not


def test_a_compacted_slot_has_the_row_groups_of_one_append_of_its_rows(tmp_path):
    t = busy_day(n_light=60, seed=3)
    with TickStore(tmp_path / "one", slot="1D", row_group_rows=16_384) as s:
        (whole,) = s.append("mbo", t)
    with TickStore(tmp_path / "many", slot="1D", row_group_rows=16_384) as s:
        for lo in range(0, t.num_rows, 7000):    # appends that cut instruments' runs
            s.append("mbo", t.slice(lo, 7000))
        (merged,) = s.compact("mbo")
        assert s.read("mbo").equals(as_sorted(t))
    groups = row_groups(tmp_path / "one" / whole.path)
    assert row_groups(tmp_path / "many" / merged.path) == groups
    assert [g[0] for g in groups if g[1] == 1] == [9000] and len(groups) > 3


def test_a_compacted_slot_is_encoded_as_one_append_of_its_rows_with_sparse_ids(tmp_path):
    """The encodings depend on the rows an instrument (:func:`tickstore.store._policy`): a
    compaction counts the instruments, as an append does, not the span of their ids (two
    instruments, 1 and 5,000, 6,000 rows each: long runs, not 2.4 rows an id)."""
    t = mbo(12_000, seed=5)
    inst = np.where(np.arange(12_000) % 2 == 0, 1, 5000).astype(np.uint32)
    k = t.schema.get_field_index("instrument_id")
    t = t.set_column(k, t.schema.field(k), pa.array(inst))
    t = t.sort_by([("ts_event", "ascending")])

    def encodings(path):
        md = pq.read_metadata(path)
        return {md.row_group(0).column(c).path_in_schema: md.row_group(0).column(c).encodings
                for c in range(md.num_columns)}

    with TickStore(tmp_path / "one", slot="1D") as s:
        (whole,) = s.append("mbo", t)
    with TickStore(tmp_path / "many", slot="1D") as s:
        for lo in range(0, 12_000, 1_800):
            s.append("mbo", t.slice(lo, 1_800))
        (merged,) = s.compact("mbo")
        assert s.read("mbo").equals(as_sorted(t))
    one, many = encodings(tmp_path / "one" / whole.path), encodings(tmp_path / "many" / merged.path)
    assert one == many and "DELTA_BINARY_PACKED" in one["order_id"]
    assert "RLE_DICTIONARY" in one["price"]


def test_the_footers_kept_for_reads_stay_within_their_memory(tmp_path, monkeypatch):
    import tickstore.store as S
    t = mbo(3000, days=3)
    with TickStore(tmp_path, slot="1h") as s:
        s.append("mbo", t)
        files = s.files("mbo")
        assert len(files) > 10 and s.read("mbo").equals(as_sorted(t, 3600 * 10**9))
        ours = s._footers.items[files[0].path][1]
        assert ours < S.FOOTER_SCALE * pq.read_metadata(tmp_path / files[0].path).serialized_size
    for name in ("FOOTER_MEMORY", "FRAGMENT_MEMORY"):     # (read when a store is opened)
        monkeypatch.setattr(S, name, 3 * ours)
    with TickStore(tmp_path, writer=False) as s:
        whole = as_sorted(t, 3600 * 10**9)
        assert s.read("mbo").equals(whole)
        big = s.read("mbo", filter=pc.field("size") > 100)     # (pyarrow's pruning: fragments)
        assert big.equals(whole.filter(pc.field("size") > 100))
        for kept in (s._footers, s._fragments):
            assert 1 <= len(kept) <= 3
            assert kept.bytes == sum(size for _, size in kept.items.values())
            assert kept.bytes <= kept.limit or len(kept) == 1     # (the last, whatever its size)
        assert s.read("mbo", start=files[-1].ts_min).num_rows == files[-1].rows   # from memory
    monkeypatch.undo()
    with TickStore(tmp_path, writer=False) as s:          # a live writer's day of small files:
        s.read("mbo")                                     # what the decoders need, all of it
        assert len(s._footers) == len(files) and len(s._fragments) == 0   # (pyarrow: none)


def test_scan_streams_in_bounded_batches_with_filters(tmp_path):
    with TickStore(tmp_path, slot="1D", row_group_rows=256) as s:
        for k in range(3):
            s.append("mbo", mbo(3000, seed=k, instruments=8))
        flt = pa.compute.field("size") > 500
        want = s.read("mbo", instruments=[2, 5], columns=["price", "size"], filter=flt)
        got = list(s.scan("mbo", instruments=[2, 5], columns=["price", "size"], filter=flt,
                          batch_rows=100))
    assert want.num_rows > 0 and all(b.num_rows <= 100 for b in got)
    assert pa.Table.from_batches(got).equals(want)
    assert np.all(want.column("size").to_numpy() > 500)


def definitions(day: int, symbols: dict[str, int]) -> pa.Table:
    from normalize.records import DEFINITIONS
    rec = np.zeros(len(symbols), DEFINITIONS)
    rec["ts_event"] = DAY0 + day * NS_PER_DAY + 1000
    rec["symbol"] = [s.ljust(8).encode() for s in symbols]
    rec["instrument_id"] = list(symbols.values())
    return pa.Table.from_batches([to_arrow("definitions", rec)])


def test_symbols_resolve_per_date_from_the_stored_definitions(tmp_path):
    t = mbo(4000, days=2, instruments=6)
    with TickStore(tmp_path, slot="1D") as s:
        s.append("definitions", definitions(0, {"AAPL": 3, "MSFT": 4}))
        s.append("definitions", definitions(1, {"AAPL": 5, "MSFT": 3}))   # locates change daily
        s.append("mbo", t)
        assert s.symbol_map() == {"2024-10-04": {"AAPL": 3, "MSFT": 4},
                                  "2024-10-05": {"AAPL": 5, "MSFT": 3}}
        got = s.read("mbo", symbols=["AAPL"])
        with pytest.raises(StoreError, match="Unknown symbol\\(s\\) \\['GOOG'\\]"):
            s.read("mbo", symbols=["AAPL", "GOOG"])
        with pytest.raises(StoreError, match="not both"):
            s.read("mbo", symbols=["AAPL"], instruments=[3])
    every = as_sorted(t)
    day = every.column("ts_event").cast(pa.int64()).to_numpy() // NS_PER_DAY - DAY0 // NS_PER_DAY
    inst = every.column("instrument_id").to_numpy()
    want = every.filter(pa.array(((day == 0) & (inst == 3)) | ((day == 1) & (inst == 5))))
    assert got.num_rows > 0 and got.equals(want)


def on_day(t: pa.Table, k: int) -> pa.Table:
    ts = pa.compute.add(t.column("ts_event").cast(pa.int64()), k * NS_PER_DAY)
    return t.set_column(0, "ts_event", ts.cast(t.schema.field(0).type))


def test_verify_names_damaged_missing_and_foreign_files_and_reads_name_the_file(tmp_path):
    with TickStore(tmp_path, slot="1D") as s:
        es = [s.append("mbo", on_day(mbo(2000, seed=k), k))[0] for k in range(4)]
    assert TickStore(tmp_path, writer=False).verify().ok
    p0, p1, p2 = (tmp_path / e.path for e in es[:3])
    raw = bytearray(p0.read_bytes())
    raw[len(raw) // 3] ^= 0xFF                   # one flipped byte inside a data page
    p0.write_bytes(bytes(raw))
    p1.write_bytes(p1.read_bytes()[:-100])       # truncated
    p2.unlink()                                  # missing
    foreign = p0.parent / "notes.csv"
    foreign.write_text("a,b\n")
    rep = TickStore(tmp_path, writer=False).verify()
    what = {pr.path: pr.what for pr in rep.problems}
    assert "CRC-32" in what[es[0].path] and "bytes, the catalog says" in what[es[1].path]
    assert "missing" in what[es[2].path] and "foreign" in what[foreign.relative_to(tmp_path)
                                                                  .as_posix()]
    assert es[3].path not in what and not rep.ok
    r = TickStore(tmp_path, writer=False)
    for bad in (es[0], es[1], es[2]):                 # each on a day of its own
        with pytest.raises(StoreError, match=re.escape(str(tmp_path / bad.path))):
            r.read("mbo", start=bad.ts_min, end=bad.ts_max + 1)
    assert r.read("mbo", start=es[3].ts_min).num_rows == 2000
    with TickStore(tmp_path):                    # a writer open leaves a foreign file alone
        pass
    assert foreign.exists()


def test_scan_holds_about_a_row_group_per_file_not_the_day(tmp_path):
    """Three files of one day, 150,000 rows each, scanned in 2,000-row batches: the Arrow memory
    in use while scanning stays a small part of what the day's rows take."""
    with TickStore(tmp_path, slot="1D", row_group_rows=4096) as s:
        for k in range(3):
            s.append("mbo", mbo(150_000, seed=k, instruments=50))
        whole = s.read("mbo")
        size = whole.nbytes
        del whole
        base = pa.total_allocated_bytes()
        peak, rows = 0, 0
        for b in s.scan("mbo", batch_rows=2000):
            rows += b.num_rows
            peak = max(peak, pa.total_allocated_bytes() - base)
    assert rows == 450_000
    assert peak < size / 10, (peak, size)


def status_rows(t: pa.Table) -> pa.Table:
    """A status row at each of ``t``'s first 50 event times (spread over its day)."""
    from normalize.records import STATUS
    rec = np.zeros(50, STATUS)
    rec["ts_event"] = np.sort(t.column("ts_event").cast(pa.int64()).to_numpy()[:50])
    rec["instrument_id"] = 1
    return pa.Table.from_batches([to_arrow("status", rec)])


def test_the_slot_is_chosen_when_the_store_is_made_and_files_hold_one_slot_each(tmp_path):
    t = mbo(3000, seed=4, days=1, instruments=9).sort_by([("ts_event", "ascending")])
    with TickStore(tmp_path, slot="2h") as s:
        es = s.append("mbo", t)
    assert len(es) == 12 and all(e.slot % (2 * 3600 * 10**9) == 0 for e in es)
    assert all(e.slot <= e.ts_min <= e.ts_max < e.slot + 2 * 3600 * 10**9 for e in es)
    with TickStore(tmp_path) as s:               # the store's own slot, not the default
        assert s.slot == "2h"
        d = s.append("definitions", definitions(0, {f"S{i}": i for i in range(1, 10)}))
        st = s.append("status", status_rows(t))
    assert len(d) == 1 and len(st) == 1                # small schemas: a file a day
    assert TickStore(tmp_path, writer=False).slots == {
        "mbo": "2h", "trades": "2h", "definitions": "1D", "status": "1D", "imbalance": "1D",
        "forecasts": "1D"}
    with pytest.raises(StoreError, match="has '2h' slots; it was opened with slot='1min'"):
        TickStore(tmp_path, slot="1min")
    TickStore(tmp_path).close()                  # ... and the refused open left no lock
    with pytest.raises(StoreError, match="must be one of"):
        TickStore(tmp_path / "other", slot="7min")
    meta = tmp_path / "_catalog" / "_store.json"
    doc = meta.read_text()
    assert '"format": 1' in doc
    meta.write_text(doc.replace('"format": 1', '"format": 2'))
    with pytest.raises(StoreError, match="has format 2; this tickpipe reads formats up to 1"):
        TickStore(tmp_path, writer=False)
    meta.write_text("{not json")
    with pytest.raises(StoreError, match="not a tick store's settings file"):
        TickStore(tmp_path)
    meta.write_text(doc)
    r = TickStore(tmp_path, writer=False)
    assert r.read("mbo").equals(as_sorted(t, 2 * 3600 * 10**9)) and r.verify().ok
    with TickStore(tmp_path / "day", slot="1D") as s:   # prices: a dictionary where it pays
        few, many = s.append("mbo", mbo(900, seed=1)), s.append("mbo", mbo(9000, seed=2,
                                                                         instruments=5))

    def price_encodings(e):
        f = pq.ParquetFile(tmp_path / "day" / e.path)
        return f.metadata.row_group(0).column(f.schema_arrow.get_field_index("price")).encodings
    assert "RLE_DICTIONARY" not in price_encodings(few[0])           # 45 rows an instrument
    assert "RLE_DICTIONARY" in price_encodings(many[0])              # 1,800 an instrument


def test_sql_sees_each_commit_and_compaction(tmp_path):
    """The DuckDB connection is kept between queries and rebuilt when the catalog changes."""
    with TickStore(tmp_path, slot="1D") as s:
        q = "SELECT count(*) AS n, count(DISTINCT sequence) AS d FROM mbo"
        assert s.sql(q).to_pylist() == [{"n": 0, "d": 0}]
        s.append("mbo", mbo(300, seed=1))
        first = s._duck[1]
        assert s.sql(q).to_pylist() == [{"n": 300, "d": 300}] and s._duck[1] is not first
        kept = s._duck[1]
        assert s.sql(q).to_pylist() == [{"n": 300, "d": 300}] and s._duck[1] is kept
        s.append("mbo", mbo(200, seed=2))
        s.compact("mbo")
        assert s.sql(q).to_pylist() == [{"n": 500, "d": 500}]


def test_a_catalog_line_with_a_valid_crc_that_is_no_commit_is_an_error_not_truncated(tmp_path):
    import zlib
    with TickStore(tmp_path, slot="1D") as s:
        s.append("mbo", mbo(100, seed=1))
    cat = tmp_path / "_catalog" / "mbo.jsonl"
    body = '{"add": [{"path": "x"}], "remove": []}'
    cat.write_text(cat.read_text() + f"{body}\t{zlib.crc32(body.encode()):08x}\n")
    before = cat.read_bytes()
    with pytest.raises(StoreError, match=re.escape(f"{cat}: line 2 has a valid CRC")):
        TickStore(tmp_path, writer=False).read("mbo")
    with pytest.raises(StoreError, match="line 2 has a valid CRC"):
        TickStore(tmp_path)
    assert cat.read_bytes() == before                # the writer's open truncated nothing


def test_a_reader_applies_only_the_commits_appended_since_its_last_query(tmp_path):
    """The catalog is read incrementally: appends and compactions by a writer show in the next
    query of an open reader, a torn last line stays invisible until it is whole, and a catalog
    replaced (a new store at the same root) is read again from its start."""
    import shutil
    w = TickStore(tmp_path, slot="1h")
    r = TickStore(tmp_path, writer=False)
    a, b = mbo(500, seed=1), mbo(300, seed=2)
    w.append("mbo", a)
    assert r.read("mbo").num_rows == 500
    w.append("mbo", b)
    assert r.read("mbo").num_rows == 800 and len(r.files("mbo")) == len(w.files("mbo"))
    w.compact("mbo")
    assert sorted(e.path for e in r.files("mbo")) == sorted(e.path for e in w.files("mbo"))
    assert r.read("mbo").equals(w.read("mbo"))
    cat = tmp_path / "_catalog" / "mbo.jsonl"
    whole = cat.read_bytes()
    w.close()
    extra = TickStore(tmp_path / "other", slot="1h")
    added = {e.path for e in extra.append("mbo", mbo(40, seed=3))}
    extra.close()
    before = {e.path for e in r.files("mbo")}
    line = (tmp_path / "other" / "_catalog" / "mbo.jsonl").read_bytes()
    with open(cat, "ab") as f:
        f.write(line[:-10])                        # a commit being written: torn
    assert r.read("mbo").num_rows == 800
    with open(cat, "ab") as f:
        f.write(line[-10:])                        # now whole (its file is not in this tree)
    assert {e.path for e in r.files("mbo")} == before | added
    cat.write_bytes(whole)
    shutil.rmtree(tmp_path / "mbo")
    shutil.rmtree(tmp_path / "_catalog")
    with TickStore(tmp_path, slot="1h") as s:      # a new store at the root: a new catalog
        s.append("mbo", b)
    assert r.read("mbo").num_rows == 300
