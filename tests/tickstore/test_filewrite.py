"""The append's compiled file writer (tickstore.filewrite) writes the same bytes as the Python
writer (tickstore.parquet.FileWriter) for the same rows, policy, zstd build and sort columns:
any types it takes, any policy, nulls, row groups, rows taken in any order."""

import ctypes
import io
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from normalize.records import arrow_schema
from tests.tickstore.test_parquet import SETTINGS, assert_same_table, cases
from tickstore import filewrite, parquet
from tickstore.parquet import FileWriter, arrow_values, column_of

pytestmark = pytest.mark.skipif(not filewrite.AVAILABLE, reason="no libzstd or zlib to call")


class _LibZstd:
    """``zstandard.ZstdCompressor``'s ``compress`` by the libzstd the compiled writer calls
    (the ``zstandard`` package carries its own zstd, whose frames may differ byte for byte)."""

    def __init__(self, level: int):
        lib = ctypes.CDLL(ctypes.util.find_library("zstd"))
        lib.ZSTD_compress.restype = ctypes.c_size_t
        lib.ZSTD_compress.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                      ctypes.c_size_t, ctypes.c_int)
        lib.ZSTD_compressBound.restype = ctypes.c_size_t
        lib.ZSTD_isError.argtypes = (ctypes.c_size_t,)
        self.lib, self.level = lib, level

    def compress(self, data) -> bytes:
        src = np.frombuffer(bytes(data), np.uint8)
        dst = np.empty(self.lib.ZSTD_compressBound(src.size), np.uint8)
        n = self.lib.ZSTD_compress(dst.ctypes.data, dst.size, src.ctypes.data, src.size,
                                   self.level)
        assert not self.lib.ZSTD_isError(n)
        return dst[:n].tobytes()


def python_file(schema, table, policy, bounds, level, sorting=()) -> bytes:
    """The file FileWriter writes (zstd by the system's libzstd), one page a chunk."""
    buf = io.BytesIO()
    with mock.patch.object(parquet, "_zstd", _LibZstd):
        w = FileWriter(buf, schema, policy, level=level, page_rows=1 << 40, sorting=sorting)
        for a, b in zip(bounds[:-1], bounds[1:]):
            w.write(w.encode(table.slice(a, b - a)))
        w.close()
    return buf.getvalue()


@st.composite
def shuffled(draw):
    """A case of the Parquet writer's tests without its float64 columns, and the rows it
    writes as the append gives them: in a larger table, in an order taken from ``a`` on."""
    case = draw(cases())
    keep = [f.name for f in case.schema if f.type != pa.float64()]
    assume(keep)
    table = case.table.select(keep)
    schema = table.schema
    policy = {k: v for k, v in case.policy.items() if k in keep}
    n = table.num_rows
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    extra = draw(st.integers(0, 50))
    padded = pa.concat_tables([table, table.slice(0, min(extra, n))])
    perm = rng.permutation(padded.num_rows)
    source = padded.take(pa.array(perm))
    where = np.empty_like(perm)
    where[perm] = np.arange(perm.size)              # source row of each padded row
    a = draw(st.integers(0, 20))
    order = np.concatenate([rng.integers(0, perm.size, a), where[:n]]).astype(np.int32)
    return schema, table, source, order, a, policy, case.bounds, case.level


def sources(table: pa.Table) -> dict:
    return {f.name: arrow_values(table.column(f.name), column_of(f)) for f in table.schema}


@SETTINGS
@given(shuffled())
def test_the_compiled_writer_writes_the_python_writers_bytes(args):
    schema, table, source, order, a, policy, bounds, level = args
    want = python_file(schema, table, policy, bounds, level)
    got = filewrite.write_file(schema, policy, sources(source), order, a, np.array(bounds),
                               level).tobytes()
    assert got == want
    assert_same_table(pq.read_table(io.BytesIO(got), schema=schema), table)
    # the rows in place (no order), as a file of one slot's rows already sorted
    got = filewrite.write_file(schema, policy, sources(table), None, 0, np.array(bounds),
                               level).tobytes()
    assert got == want


@SETTINGS
@given(cases(), st.integers(0, 2**32 - 1), st.integers(0, 20))
def test_rows_taken_to_the_places_a_sort_gives_are_the_python_writers_file(case, seed, a):
    """``dest`` (each source row's place in the file, as the append's counting sort gives it):
    the same bytes; ``order`` is read for the columns with validity, and must then be given."""
    keep = [f.name for f in case.schema if f.type != pa.float64()]
    assume(keep)
    table = case.table.select(keep)
    policy = {k: v for k, v in case.policy.items() if k in keep}
    n = table.num_rows
    want = python_file(table.schema, table, policy, case.bounds, case.level)
    perm = np.random.default_rng(seed).permutation(n)      # source row a + j is file row perm[j]
    pad = table.slice(0, min(a, n))
    source = pa.concat_tables([pad, table.take(pa.array(perm))]) if n else table
    source = source.slice(0, a + n) if n else source
    assume(source.num_rows == a + n)
    dest = perm.astype(np.int32)                           # source row a + j -> file row dest[j]
    order = np.empty(a + n, np.int32)
    order[a + dest] = a + np.arange(n, dtype=np.int32)
    src = sources(source)
    validity = any(src[f][1] is not None for f in keep)
    got = filewrite.write_file(table.schema, policy, src, order, a, np.array(case.bounds),
                               case.level, dest=dest).tobytes()
    assert got == want
    if validity:
        with pytest.raises(ValueError, match="order must be given"):
            filewrite.write_file(table.schema, policy, src, None, a, np.array(case.bounds),
                                 case.level, dest=dest)
    else:
        assert filewrite.write_file(table.schema, policy, src, None, a, np.array(case.bounds),
                                    case.level, dest=dest).tobytes() == want


def test_the_appends_counting_sort_gives_each_rows_place_in_a_stable_sort():
    from tickstore.store import _slot_sort
    rng = np.random.default_rng(3)
    inst = rng.integers(5, 40, 3000).astype(np.uint32)
    dest = np.empty(2000, np.int32)
    runs, first, last = _slot_sort(inst, 500, 2500, 5, 35, dest)
    want = np.argsort(inst[500:2500], kind="stable")       # the rows in the new order
    np.testing.assert_array_equal(dest[want], np.arange(2000))
    np.testing.assert_array_equal(runs, np.unique(inst[500:2500], return_counts=True)[1])
    assert (first, last) == (inst[500:2500].min(), inst[500:2500].max())


@SETTINGS
@given(st.lists(st.integers(0, 2**62), max_size=300), st.integers(0, 2**32 - 1),
       st.booleans())
def test_the_appends_scan_gives_numpys_order_test_minimum_and_instrument_range(ts, seed, sort):
    from tickstore.store import _scan
    ts = np.array(sorted(ts) if sort else ts, np.int64)
    inst = np.random.default_rng(seed).integers(0, 2**32, ts.size, dtype=np.uint32)
    got = _scan(ts, inst)
    if ts.size == 0:
        assert got[0]
        return
    assert got == (bool(np.all(ts[1:] >= ts[:-1])), int(ts.min()), int(inst.min()),
                   int(inst.max()))


def test_a_value_cached_by_schema_is_kept_for_that_schema_object_only():
    calls = []

    @parquet.by_schema
    def width(schema, k):
        calls.append(k)
        return len(schema) * k

    one = pa.schema([("a", pa.int64()), ("b", pa.int32())])
    equal = pa.schema([("a", pa.int64()), ("b", pa.int32())])
    assert width(one, 2) == width(one, 2) == 4 and calls == [2]
    assert width(one, 3) == 6 and calls == [2, 3]
    assert width(equal, 2) == 4 and calls == [2, 3, 2]       # an equal schema: its own entry


@pytest.mark.parametrize("with_nulls", [False, True])
def test_rows_in_time_order_are_stored_in_the_stores_order(tmp_path, with_nulls):
    """A feed's rows (in time order) are sorted by the slot's counting sort and scattered to
    their places; with a column that has some nulls, by the indices the places give."""
    from normalize.records import UNDEF_TIMESTAMP
    from tests.tickstore.test_store import as_sorted, mbo
    from tickstore.store import TickStore
    t = mbo(20_000, seed=5, days=1)
    t = t.take(pa.array(np.argsort(t.column("ts_event").to_numpy(), kind="stable")))
    if with_nulls:
        recv = t.column("ts_recv").to_numpy().copy()
        ts_recv = pa.array(recv, t.schema.field("ts_recv").type,
                           mask=np.arange(recv.size) % 7 == 3)
        t = t.set_column(t.schema.get_field_index("ts_recv"), "ts_recv", ts_recv)
        assert UNDEF_TIMESTAMP and t.column("ts_recv").null_count
    with TickStore(tmp_path, slot="1min") as s:
        entries = s.append("mbo", t)
        assert len(entries) > 100
        got = s.read("mbo")
        assert s.verify().ok
    want = as_sorted(t, 60 * 10**9)
    assert got.equals(want.select(got.schema.names).cast(got.schema))


@SETTINGS
@given(shuffled())
def test_columns_of_nulls_only_are_written_without_their_values(args):
    schema, table, source, order, a, policy, bounds, level = args
    z = pa.field("z_nulls", pa.timestamp("ns", "UTC"), nullable=True)   # one at least
    schema = schema.append(z)
    table = table.append_column(z, pa.nulls(table.num_rows, z.type))
    source = source.append_column(z, pa.nulls(source.num_rows, z.type))
    nullable = [f.name for f in schema if f.nullable]
    nulls = pa.table({f.name: (pa.nulls(table.num_rows, f.type) if f.nullable
                               else table.column(f.name)) for f in schema}, schema=schema)
    want = python_file(schema, nulls, policy, bounds, level)
    src = sources(source)
    for name in nullable:                     # values that must not be read
        src[name] = (np.full(source.num_rows, 7, src[name][0].dtype), None)
    got = filewrite.write_file(schema, policy, src, order, a, np.array(bounds), level,
                               nulls_only=frozenset(nullable)).tobytes()
    assert got == want


def test_an_mbo_file_with_the_stores_policy_and_sort_columns_is_the_python_writers():
    from tests.tickstore.test_store import mbo
    from tickstore.store import SORTING, _policy
    t = mbo(20_000, seed=3)
    schema = arrow_schema("mbo")
    t = t.take(pa.array(np.lexsort((t.column("ts_event").cast(pa.int64()).to_numpy(),
                                    t.column("instrument_id").to_numpy()))))
    for rows_per_instrument in (10, 3000, np.inf):     # each of the policies
        policy = _policy(schema, rows_per_instrument)
        bounds = [0, 7_000, 16_384, 20_000]
        want = python_file(schema, t, policy, bounds, 1, SORTING)
        got = filewrite.write_file(schema, policy, sources(t), None, 0, np.array(bounds), 1,
                                   SORTING).tobytes()
        assert got == want
        md = pq.read_metadata(io.BytesIO(got))
        assert md.num_row_groups == 3 and md.num_rows == 20_000
        assert pq.read_table(io.BytesIO(got)).equals(t)


def test_the_writer_grows_its_buffer_for_rows_that_do_not_compress():
    schema = pa.schema([pa.field("x", pa.uint64(), nullable=False)])
    rng = np.random.default_rng(5)
    t = pa.table({"x": rng.integers(0, 2**64, 50_000, dtype=np.uint64)}, schema=schema)
    policy = {"x": ("RLE_DICTIONARY", True)}                # all distinct: plain past the limit
    want = python_file(schema, t, policy, [0, 50_000], 3)
    got = filewrite.write_file(schema, policy, sources(t), None, 0, np.array([0, 50_000]), 3)
    assert got.tobytes() == want
    assert filewrite.crc32(got) == __import__("zlib").crc32(want)


def test_row_groups_must_be_non_empty_single_pages():
    schema = pa.schema([pa.field("x", pa.uint32(), nullable=False)])
    t = pa.table({"x": np.arange(10, dtype=np.uint32)}, schema=schema)
    for bounds, page_rows in (([0, 5, 5, 10], 1 << 20), ([0, 10], 4)):
        with pytest.raises(ValueError):
            filewrite.write_file(schema, {}, sources(t), None, 0, np.array(bounds), 1,
                                 page_rows=page_rows)
    assert not filewrite.supports(pa.schema([pa.field("p", pa.float64())]))


def test_the_store_writes_the_same_files_with_either_writer(tmp_path, monkeypatch):
    """An append's files are written by the compiled writer, or past its size bound (and for
    schemas of float64 columns) by FileWriter: the same rows, statistics and catalog."""
    from tests.tickstore.test_store import mbo
    from tickstore.store import TickStore
    t = mbo(30_000, seed=4, days=1)
    calls = []
    real = filewrite.write_file
    monkeypatch.setattr(filewrite, "write_file", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = {}
    for bound in (filewrite.MAX_IMAGE, 0):
        monkeypatch.setattr(filewrite, "MAX_IMAGE", bound)
        with TickStore(tmp_path / str(bound), slot="1h") as s:
            entries = s.append("mbo", t)
            got[bound] = (s.read("mbo"), [(e.rows, e.ts_min, e.ts_max, e.instrument_min,
                                           e.instrument_max) for e in entries],
                          [pq.read_metadata(tmp_path / str(bound) / e.path).to_dict()
                           for e in entries])
            assert s.verify().ok
        if bound:
            assert len(calls) == len(entries)
    assert len(calls) == len(got[0][1])                  # none more: FileWriter wrote those
    (a, ea, ma), (b, eb, mb) = got[filewrite.MAX_IMAGE], got[0]
    assert a.equals(b) and ea == eb

    def facts(md):                   # all but where the bytes lie and how many they are
        drop = {"total_compressed_size", "total_uncompressed_size", "file_offset",
                "data_page_offset", "dictionary_page_offset", "serialized_size",
                "total_byte_size"}

        def walk(x):
            if isinstance(x, dict):
                return {k: walk(v) for k, v in x.items() if k not in drop}
            if isinstance(x, list):
                return [walk(v) for v in x]
            return x
        return walk(md)
    assert [facts(m) for m in ma] == [facts(m) for m in mb]


@SETTINGS
@given(st.binary(max_size=5000), st.integers(0, 2**32 - 1), st.integers(0, 64))
def test_the_crc32_is_zlibs_whichever_library_gives_it(data, start, skip):
    """libdeflate's CRC-32 (where installed) or zlib's: zlib's function either way, continued
    from any CRC, from bytes, arrays and views at any offset; and the reader's page check."""
    import zlib
    assert filewrite.crc32(data, start) == zlib.crc32(data, start)
    arr = np.frombuffer(data, np.uint8)
    assert filewrite.crc32(arr[skip:]) == zlib.crc32(data[skip:])
    assert filewrite.crc32(memoryview(data)) == zlib.crc32(data)
    offs = np.array([0, min(skip, len(data))], np.int64)
    sizes = np.array([len(data), len(data) - offs[1]], np.int64)
    crcs = np.array([zlib.crc32(data), zlib.crc32(data[offs[1]:])], np.int64)
    assert filewrite.first_bad_page(arr, offs, sizes, crcs) == -1
    crcs[1] ^= 1
    assert filewrite.first_bad_page(arr, offs, sizes, crcs) == 1
    crcs[0] = -1                                       # no CRC written: not checked
    assert filewrite.first_bad_page(arr, offs, sizes, crcs) == 1


def test_a_files_rows_are_scattered_only_when_they_are_a_range_of_the_source_each_once():
    """Rows that are a permutation of a range of the source are scattered from it in order;
    rows with a gap or a repeat are gathered; both give the rows in the file's order."""
    rng = np.random.default_rng(7)
    src = rng.integers(0, 2**63, 2000, dtype=np.int64).view(np.uint64)
    perm = (rng.permutation(1000) + 500).astype(np.int32)
    idx = np.concatenate([np.zeros(3, np.int32), perm])
    inv = np.empty(1000, np.int32)
    vals = np.empty(1000, np.uint64)
    base = filewrite._inverse(idx, 3, 1000, inv)
    assert base == 500
    filewrite._take(src, idx, True, 3, inv, base, 1000, vals)
    np.testing.assert_array_equal(vals, src[perm])
    gap, repeat = idx.copy(), idx.copy()
    gap[3] = 1999
    repeat[3:5] = repeat[4]
    for rows in (gap, repeat):
        assert filewrite._inverse(rows, 3, 1000, inv) == -1
        filewrite._take(src, rows, True, 3, inv, -1, 1000, vals)
        np.testing.assert_array_equal(vals, src[rows[3:]])
    filewrite._take(src, idx, False, 7, inv, -1, 1000, vals)     # no order: as they are
    np.testing.assert_array_equal(vals, src[7:1007])
