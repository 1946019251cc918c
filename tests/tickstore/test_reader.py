"""The store's own decoders (tickstore.reader) against the tables written: any types, encodings,
nulls, paging and row groups the writer produces, several files at once; a damaged file is a
``CorruptFile`` naming it (or, where the damage leaves the data whole, the same rows), never
other values; what the decoders do not take is ``Unsupported`` (the store then reads with
pyarrow)."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.tickstore.test_parquet import SETTINGS, assert_same_table, cases, write
from tests.tickstore.test_store import mbo
from tickstore import reader
from tickstore.parquet import FileWriter
from tickstore.store import TickStore, _policy
from normalize.records import arrow_schema


def _write(path, case):
    with open(path, "wb") as f:
        write(case, f)
    return str(path), reader.layout(pq.read_metadata(path), case.schema)


def _groups(case, ids) -> pa.Table:
    b = case.bounds
    return pa.concat_tables([case.table.slice(b[i], b[i + 1] - b[i]) for i in ids]).cast(
        case.schema)


def _table(cols: dict, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([cols[f.name] for f in schema], schema=schema)


@SETTINGS
@given(case=cases(), data=st.data())
def test_the_decoders_give_the_rows_written_for_any_types_policy_paging_and_groups(
        tmp_path_factory, case, data):
    d = tmp_path_factory.mktemp("native")
    a = _write(d / "a.parquet", case)
    b = _write(d / "b.parquet", case)
    groups = len(case.bounds) - 1
    pick = st.lists(st.integers(0, groups - 1), unique=True).map(sorted)
    ids_a, ids_b = data.draw(pick), data.draw(pick)
    parts = [(a[0], a[1], ids_a), (b[0], b[1], ids_b)]
    got = _table(reader.read(parts, list(case.schema)), case.schema)
    want = [_groups(case, ids) for ids in (ids_a, ids_b) if ids]
    want = pa.concat_tables(want) if want else case.table.schema.empty_table()
    assert_same_table(got, want)
    names = data.draw(st.lists(st.sampled_from(case.schema.names), min_size=1, unique=True))
    fields = [case.schema.field(n) for n in names]       # some columns, in any order
    got = reader.read(parts, fields)
    assert_same_table(_table(got, pa.schema(fields)), want.select(names))


def _store_file(tmp_path, rows=3000):
    """A file as the store writes one (its policy; pages of 1,000 rows, zstd or not)."""
    t = mbo(rows, seed=4)
    schema = arrow_schema("mbo")
    path = tmp_path / "f.parquet"
    with open(path, "wb") as f:
        w = FileWriter(f, schema, _policy(schema), level=1, page_rows=1000)
        w.write(w.encode(t.slice(0, rows * 2 // 3)))
        w.write(w.encode(t.slice(rows * 2 // 3)))
        w.close()
    return path, schema, t


def test_every_flipped_byte_of_a_file_is_an_error_naming_it_or_leaves_its_rows(tmp_path):
    path, schema, t = _store_file(tmp_path, rows=600)
    raw = path.read_bytes()
    lay = reader.layout(pq.read_metadata(path), schema)
    stop = int((lay.chunks[:, :, 0] + lay.chunks[:, :, 1]).max())     # the pages' end
    bad = tmp_path / "bad.parquet"
    outcomes = {"error": 0, "same": 0, "unsupported": 0}
    for at in range(4, stop):                     # every byte of every page
        b = bytearray(raw)
        b[at] ^= 0x41
        bad.write_bytes(bytes(b))
        try:
            got = _table(reader.read([(str(bad), lay, [0, 1])], list(schema)), schema)
        except reader.CorruptFile as err:
            assert str(bad) in str(err) and "at byte" in str(err)
            outcomes["error"] += 1
            continue
        except reader.Unsupported:
            outcomes["unsupported"] += 1
            continue
        assert got.equals(t), at                  # (a byte the decoders do not use)
        outcomes["same"] += 1
    assert outcomes["error"] > 0.9 * sum(outcomes.values()), outcomes


def test_a_truncated_file_is_an_error_naming_it_and_the_bytes_missing(tmp_path):
    path, schema, t = _store_file(tmp_path)
    lay = reader.layout(pq.read_metadata(path), schema)
    path.write_bytes(path.read_bytes()[:int(lay.chunks[1, 3, 0])])
    with pytest.raises(reader.CorruptFile, match=f"{path}: row group 1 needs bytes"):
        reader.read([(str(path), lay, [1])], list(schema))
    got = _table(reader.read([(str(path), lay, [0])], list(schema)), schema)
    assert got.equals(t.slice(0, 2000))           # the row group before it still reads


def test_pages_the_decoders_do_not_take_are_unsupported_and_the_store_reads_them(tmp_path):
    t = mbo(500, seed=2)
    schema = arrow_schema("mbo")
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="snappy")
    with pytest.raises(reader.Unsupported):
        reader.layout(pq.read_metadata(io.BytesIO(buf.getvalue())), schema)
    path = tmp_path / "v2.parquet"
    pq.write_table(t, path, compression="zstd", data_page_version="2.0")
    lay = reader.layout(pq.read_metadata(path), schema)
    with pytest.raises(reader.Unsupported, match="data page v2"):
        reader.read([(str(path), lay, [0])], list(schema))
    path1 = tmp_path / "v1.parquet"           # pyarrow's own v1 pages: the decoders take them
    pq.write_table(t, path1, compression="zstd", data_page_size=4096)
    lay = reader.layout(pq.read_metadata(path1), schema)
    assert _table(reader.read([(str(path1), lay, [0])], list(schema)), schema).equals(t)


def test_a_store_read_gives_the_same_rows_by_its_decoders_and_by_pyarrow(tmp_path):
    t = mbo(20_000, seed=9)
    with TickStore(tmp_path, slot="15min") as s:
        s.append("mbo", t)
        lo = int(t.column("ts_event").cast(pa.int64()).to_numpy()[5000])
        for kw in ({}, {"instruments": [1, 3]}, {"start": lo}, {"columns": ["price", "size"]}):
            native = s.read("mbo", **kw)
            plan, a, b = s._plan("mbo", None, kw.get("instruments"), kw.get("start"), None)
            need = list(dict.fromkeys(s._columns("mbo", kw.get("columns")) +
                                      ["instrument_id", "ts_event"]))
            picked = [(e, s._pruned(e, inst, a, b)[0]) for e, inst in plan]
            picked = [(e, ids) for e, ids in picked if ids is not None]
            arrow = s._read_arrow("mbo", picked, need, None, plan, a, b)
            mine = s._read_native("mbo", picked, need)
            assert mine.equals(arrow) and native.num_rows > 0
        ts = t.column("ts_event").cast(pa.int64()).to_numpy()
        for kw in ({"start": lo}, {"instruments": [1, 3]}, {"start": int(ts.min()) + 10**9,
                                                           "end": int(np.median(ts))},
                   {"instruments": [2], "end": lo}):           # the rows in bounds, by ranges
            native = s.read("mbo", **kw)
            plan, a, b = s._plan("mbo", None, kw.get("instruments"), kw.get("start"),
                                 kw.get("end"))
            need = s._columns("mbo", None)
            picked = [(e, s._pruned(e, inst, a, b)[0]) for e, inst in plan]
            picked = [(e, ids) for e, ids in picked if ids is not None]
            bounds = (plan[0][1], a, b)
            arrow = s._read_arrow("mbo", picked, need, None, plan, a, b).filter(
                s._filter(*bounds, None))
            mine = s._read_native("mbo", picked, need, bounds)
            assert mine.equals(arrow) and native.equals(arrow) and native.num_rows > 0
        size = int(np.median(t.column("size").to_numpy()))
        for flt in (pc.field("size") > size,                     # columns not asked for
                    (pc.field("side") == ord("B")) & pc.field("action").isin([ord("A"), 65]),
                    pc.field("ts_recv").is_valid() | (pc.field("price") > 0)):
            for cols in (["price"], None):
                got = s.read("mbo", columns=cols, filter=flt)
                plan, a, b = s._plan("mbo", None, None, None, None)
                need = list(dict.fromkeys(s._columns("mbo", cols) + ["instrument_id",
                                                                   "ts_event"]))
                picked = [(e, s._pruned(e, None, a, b)[0]) for e, _ in plan]
                want = s._read_arrow("mbo", picked, need, flt, plan, a, b)
                assert got.num_rows and got.equals(want.select(s._columns("mbo", cols)))
                scanned = pa.Table.from_batches(list(s.scan("mbo", columns=cols, filter=flt)))
                assert scanned.equals(got)
        top = int(pc.max(t.column("size")).as_py())
        none = pc.field("size") > top                   # every row group pruned by statistics
        plan, a, b = s._plan("mbo", None, None, None, None)
        assert s._by_statistics([(e, s._pruned(e, None, a, b)[0]) for e, _ in plan], none) == []
        assert s.read("mbo", filter=none).num_rows == 0


def _ranges(draw, rows):
    """Sorted, disjoint ``[start, end)`` ranges of ``rows`` rows (some empty gaps, some
    adjacent ones), as an (m, 2) int64 array."""
    cuts = sorted(set(draw(st.lists(st.integers(0, rows), max_size=12))))
    pairs = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
    return np.array(pairs, np.int64).reshape(-1, 2)


@SETTINGS
@given(case=cases(), data=st.data())
def test_the_decoders_give_the_rows_of_any_ranges(
        tmp_path_factory, case, data):
    d = tmp_path_factory.mktemp("ranges")
    a = _write(d / "a.parquet", case)
    groups = len(case.bounds) - 1
    ids = data.draw(st.lists(st.integers(0, groups - 1), min_size=1, unique=True).map(sorted))
    whole = _groups(case, ids)
    got = reader.fetch([(a[0], a[1], ids)], list(case.schema))
    assert got.rows == whole.num_rows
    sel = _ranges(data.draw, whole.num_rows)
    want = pa.concat_tables([whole.slice(s, e - s) for s, e in sel] or [whole.slice(0, 0)])
    names = case.schema.names
    assert_same_table(_table(reader.decode(got, names, ranges=sel), case.schema), want)
    # the same, with the ranges picked from the first column decoded whole
    key = names[:1]
    seen = {}

    def pick(keys):
        seen.update(keys)
        return sel

    cols, used = reader.decode_within(got, key, names, pick)
    assert np.array_equal(used, sel)
    assert_same_table(_table({**cols, key[0]: want.column(key[0]).combine_chunks()},
                             case.schema), want)
    assert_same_table(_table(seen, pa.schema([case.schema.field(key[0])])), whole.select(key))
    cols, used = reader.decode_within(got, key, names, lambda keys: None)      # all rows
    assert used is None
    assert_same_table(_table(cols, case.schema), whole)


def test_chunks_of_one_value_decode_whole_and_in_ranges(tmp_path):
    """A chunk of one value (the writer's one-entry dictionary, its indices of width 0) gives
    that value at every row, whole or in ranges, nullable or not."""
    path, schema, t = _store_file(tmp_path, rows=3000)
    n = t.num_rows
    t = t.set_column(schema.get_field_index("channel"), schema.field("channel"),
                     pa.array(np.full(n, 7), pa.uint16()))
    t = t.set_column(schema.get_field_index("ts_recv"), schema.field("ts_recv"),  # no nulls
                     pa.array(np.full(n, 10**18), pa.timestamp("ns", "UTC")))
    with open(path, "wb") as f:
        w = FileWriter(f, schema, _policy(schema), level=1, page_rows=1000)
        w.write(w.encode(t.slice(0, 2000)))
        w.write(w.encode(t.slice(2000)))
        w.close()
    md = pq.read_metadata(path)
    for name in ("channel", "ts_recv"):
        j = schema.get_field_index(name)
        assert all("RLE_DICTIONARY" in md.row_group(g).column(j).encodings for g in range(2))
    lay = reader.layout(md, schema)
    got = reader.fetch([(str(path), lay, [0, 1])], list(schema))
    assert _table(reader.decode(got, schema.names), schema).equals(t)
    got = reader.fetch([(str(path), lay, [0, 1])], list(schema))
    sel = np.array([[5, 900], [1999, 2001], [2500, 3000]], np.int64)
    want = pa.concat_tables([t.slice(a, b - a) for a, b in sel])
    assert _table(reader.decode(got, schema.names, ranges=sel), schema).equals(want)


def test_bounded_reads_from_many_threads_at_once_give_their_own_rows(tmp_path):
    """Queries on one store from several threads share its decoding threads (their tasks
    interleave in its queue): none waits for ever, and each gets its own rows."""
    import concurrent.futures
    t = mbo(30_000, seed=11)
    ts = t.column("ts_event").cast(pa.int64()).to_numpy()
    with TickStore(tmp_path, slot="15min", threads=2) as s:
        s.append("mbo", t)
        cuts = np.quantile(ts, np.linspace(0, 1, 9)).astype(np.int64)
        asks = [dict(start=int(a), end=int(b)) for a, b in zip(cuts[:-1], cuts[1:])]
        asks += [dict(instruments=[i], start=int(cuts[2]), end=int(cuts[6])) for i in (1, 2, 3)]
        want = [s.read("mbo", **kw) for kw in asks]
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            for _ in range(3):
                got = list(pool.map(lambda kw: s.read("mbo", **kw), asks, timeout=120))
                assert all(g.equals(w) and w.num_rows for g, w in zip(got, want))
