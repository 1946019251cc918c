"""The store's own Parquet writer (tickstore.parquet): its files read back exactly in pyarrow,
DuckDB and polars, with the statistics, page index, page checksums and footer Parquet asks for,
and its encoders agree with plain-Python decoders written from Parquet's ``Encodings.md``."""

import io
import math
import struct
import zlib
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from normalize.records import RECORD_TYPES, arrow_schema
from tickstore import parquet
from tickstore.parquet import (DICT_LIMIT, FileWriter, _delta, _dict_hash, _hybrid,
                               arrow_values, column_of, delta_bound, hybrid_bound)
from tickstore.store import _policy

parquet.warm_up()

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TYPES = {
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "float64": pa.float64(),
    "ts_utc": pa.timestamp("ns", "UTC"), "ts_ny": pa.timestamp("ns", "America/New_York"),
    "fsb1": pa.binary(1), "fsb2": pa.binary(2), "fsb4": pa.binary(4), "fsb8": pa.binary(8),
}
ENCODINGS = ["PLAIN", "DELTA_BINARY_PACKED", "RLE_DICTIONARY", "BYTE_STREAM_SPLIT"]
VALUE_KINDS = ["full", "few", "runs", "walk", "wild_walk", "sorted", "extremes"]
NULL_KINDS = ["none", "all", "some", "runs", "one", "all_but_one"]
PAGE_ROWS = [1, 2, 3, 7, 8, 31, 32, 100, 128, 129, 1000, 1 << 20]


# -- building inputs -------------------------------------------------------------------------
def layout(t: pa.DataType) -> np.dtype:
    """The numpy dtype of an Arrow array's value buffer (fixed-size binary as an unsigned)."""
    if pa.types.is_fixed_size_binary(t):
        return np.dtype(f"<u{t.byte_width}")
    if pa.types.is_timestamp(t):
        return np.dtype(np.int64)
    return np.dtype(t.to_pandas_dtype())


def floats(rng, kind: str, n: int) -> np.ndarray:
    def full(m):
        bits = rng.integers(0, 2**64, m, dtype=np.uint64).view(np.float64)   # NaNs, infs, tiny
        return np.where(rng.random(m) < 0.5, bits, rng.standard_normal(m) * 1e6)

    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308,
                        -1.7976931348623157e308, 2.2250738585072014e-308, 1.0, -1.0])
    special = np.concatenate([special, np.array([0x7FF8000000000001, 0xFFF8000000000000],
                                                np.uint64).view(np.float64)])    # other NaNs
    if kind == "full":
        return full(n)
    if kind == "few":
        return rng.choice(full(int(rng.integers(1, 6))), n)
    if kind == "runs":
        pool = rng.choice(special, 4) if rng.random() < 0.3 else full(int(rng.integers(1, 20)))
        return np.repeat(rng.choice(pool, n), rng.integers(1, 200, n))[:n]
    if kind in ("walk", "wild_walk"):
        return np.cumsum(rng.standard_normal(n) * (1e300 if kind == "wild_walk" else 1.0))
    if kind == "sorted":
        return np.sort(full(n))
    if rng.random() < 0.2:
        return np.full(n, np.nan)
    return rng.choice(special, n)


def values(rng, t: pa.DataType, kind: str, n: int) -> np.ndarray:
    """``n`` values of type ``t`` (the buffer's layout) of the distribution ``kind``."""
    dt = layout(t)
    if dt == np.float64:
        return floats(rng, kind, n)
    info = np.iinfo(dt)

    def full(m):
        return rng.integers(info.min, info.max, m, dtype=dt, endpoint=True)

    if kind == "full":
        return full(n)
    if kind == "few":
        return rng.choice(full(int(rng.integers(1, 6))), n)
    if kind == "runs":
        return np.repeat(rng.choice(full(int(rng.integers(1, 20))), n), rng.integers(1, 200, n))[:n]
    if kind in ("walk", "wild_walk"):           # cumulative sums, wrapping in the dtype
        hi = 2**64 if kind == "wild_walk" else int(rng.integers(2, 5000))
        steps = rng.integers(0, hi, n, dtype=np.uint64)
        start = rng.integers(0, 2**64, dtype=np.uint64)
        return (start + np.cumsum(steps)).astype(dt)
    if kind == "sorted":
        return np.sort(full(n))
    ext = np.array([info.min, info.max, 0, 1, info.min + 1, info.max - 1], dt)
    return rng.choice(ext, n)


def validity(rng, kind: str, n: int) -> np.ndarray | None:
    if kind == "none":
        return None
    if kind == "all":
        return np.zeros(n, bool)
    if kind == "some":
        return rng.random(n) < rng.random()
    if kind == "runs":
        return np.repeat(rng.random(n) < 0.5, rng.integers(1, 100, n))[:n]
    v = np.full(n, kind == "one")
    v[rng.integers(0, n)] = kind != "one"
    return v


def array(t: pa.DataType, vals: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """An Arrow array over ``vals`` (null slots keep whatever value they hold)."""
    bitmap = (None if valid is None
              else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes()))
    return pa.Array.from_buffers(t, len(vals), [bitmap, pa.py_buffer(vals.tobytes())],
                                 null_count=0 if valid is None else -1)


@dataclass
class Case:
    schema: pa.Schema
    table: pa.Table
    policy: dict
    page_rows: int
    bounds: list           # row-group boundaries: 0, ..., num_rows
    level: int = 3


@st.composite
def cases(draw) -> Case:
    kinds = draw(st.lists(st.sampled_from(list(TYPES)), min_size=1, max_size=8))
    page_rows = draw(st.sampled_from(PAGE_ROWS))
    n = draw(st.integers(1, 250 if page_rows < 8 else 3000))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fields, arrays, policy = [], [], {}
    for i, k in enumerate(kinds):
        t = TYPES[k]
        nullable = pa.types.is_timestamp(t) and draw(st.booleans())
        name = f"c{i}_{k}"
        vals = values(rng, t, draw(st.sampled_from(VALUE_KINDS)), n)
        valid = validity(rng, draw(st.sampled_from(NULL_KINDS)), n) if nullable else None
        fields.append(pa.field(name, t, nullable=nullable))
        arrays.append(array(t, vals, valid))
        if draw(st.integers(0, 9)):                          # else: the writer's default
            policy[name] = (draw(st.sampled_from(ENCODINGS)), draw(st.booleans()))
    schema = pa.schema(fields)
    table = pa.Table.from_arrays(arrays, schema=schema)
    if draw(st.booleans()):                                  # columns of several chunks
        table = pa.Table.from_batches(table.to_batches(max_chunksize=draw(st.integers(1, n))))
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=4, unique=True)) if n > 1 else []
    case = Case(schema, table, policy, page_rows, [0, *sorted(cuts), n],
                draw(st.sampled_from([1, 3])))
    return case


def write(case: Case, f=None) -> tuple[bytes, FileWriter, int]:
    """The file of ``case``: one ``write(encode(...))`` a row group. (bytes, writer, close())."""
    f = io.BytesIO() if f is None else f
    w = FileWriter(f, case.schema, case.policy, level=case.level, page_rows=case.page_rows)
    for a, b in zip(case.bounds, case.bounds[1:]):
        w.write(w.encode(case.table.slice(a, b - a)))
    size = w.close()
    data = f.getvalue() if isinstance(f, io.BytesIO) else None
    return data, w, size


# -- comparing -------------------------------------------------------------------------------
def cells(arr) -> tuple[np.ndarray, np.ndarray]:
    """(validity, the valid values' bits) of a fixed-width Arrow array: bit-exact, NaN too."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    width = arr.type.byte_width
    raw = np.frombuffer(arr.buffers()[1], np.uint8)
    raw = raw[arr.offset * width:(arr.offset + len(arr)) * width]
    return valid, raw.view(f"<u{width}")[valid]


def assert_same_table(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema, check_metadata=True), (got.schema, want.schema)
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        gv, gx = cells(got.column(name))
        wv, wx = cells(want.column(name))
        assert np.array_equal(gv, wv), name
        assert np.array_equal(gx, wx), name


def plain(col: pa.ChunkedArray | pa.Array) -> tuple[list, list | np.ndarray]:
    """A column as any reader gives it, in common terms: (validity, values) with numbers as
    numpy, timestamps as int64 ns and binaries as bytes."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    t = col.type
    if pa.types.is_timestamp(t):
        assert t.unit == "ns"
        col = col.cast(pa.int64())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return valid, [v for v in col.to_pylist() if v is not None]
    return valid, col.drop_null().to_numpy()


def assert_same_values(got: pa.Table, want: pa.Table, reader: str) -> None:
    assert got.column_names == want.column_names, reader
    assert got.num_rows == want.num_rows, reader
    for name in want.column_names:
        gv, gx = plain(got.column(name))
        wv, wx = plain(want.column(name))
        assert np.array_equal(gv, wv), (reader, name)
        if isinstance(wx, list):
            assert gx == wx, (reader, name)
        else:
            assert gx.dtype == wx.dtype, (reader, name, gx.dtype, wx.dtype)
            assert np.array_equal(gx, wx, equal_nan=wx.dtype.kind == "f"), (reader, name)


def polars_table(path) -> pa.Table:
    try:
        return pl.read_parquet(path).to_arrow()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:                 # a panic in polars' reader is a BaseException
        raise AssertionError(f"polars: {type(e).__name__}: {e}") from e


def effective(case: Case, name: str, group: pa.Table) -> tuple[str, bool]:
    """The (encoding, zstd or not) the writer is documented to use for a column chunk: the
    policy's, but PLAIN uncompressed for a chunk of nulls only, a one-entry dictionary
    uncompressed for a chunk of one value, and PLAIN where the encoding does not apply."""
    enc, comp = case.policy.get(name, ("RLE_DICTIONARY", True))
    t = case.schema.field(name).type
    _, x = cells(group.column(name))
    if x.size == 0:
        return "PLAIN", False
    if np.unique(x).size == 1 and not (t == pa.float64() and np.isnan(x.view(np.float64)[0])):
        return "RLE_DICTIONARY", False
    int64_physical = t in (pa.int64(), pa.uint64()) or pa.types.is_timestamp(t)
    if enc == "DELTA_BINARY_PACKED" and not int64_physical:
        return "PLAIN", comp
    if enc == "BYTE_STREAM_SPLIT" and pa.types.is_fixed_size_binary(t):
        return "PLAIN", comp
    return enc, comp


# -- a compact-protocol Thrift reader, to look at what pyarrow does not show -------------------
def uleb(b: bytes, p: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        x = b[p]
        p += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, p


def unzigzag(z: int) -> int:
    return (z >> 1) ^ -(z & 1)


def thrift_value(b: bytes, p: int, t: int):
    if t in (1, 2):
        return t == 1, p
    if t == 3:
        return struct.unpack_from("<b", b, p)[0], p + 1
    if t in (4, 5, 6):
        z, p = uleb(b, p)
        return unzigzag(z), p
    if t == 7:
        return struct.unpack_from("<d", b, p)[0], p + 8
    if t == 8:
        n, p = uleb(b, p)
        return bytes(b[p:p + n]), p + n
    if t in (9, 10):
        h = b[p]
        p += 1
        n, et = h >> 4, h & 15
        if n == 15:
            n, p = uleb(b, p)
        out = []
        for _ in range(n):
            if et in (1, 2):                       # a bool element is a byte of its own
                out.append(b[p] == 1)
                p += 1
            else:
                v, p = thrift_value(b, p, et)
                out.append(v)
        return out, p
    if t == 12:
        return thrift_struct(b, p)
    raise AssertionError(f"thrift type {t}")


def thrift_struct(b: bytes, p: int = 0) -> tuple[dict, int]:
    """A compact-protocol struct at ``p``: ({field id: value}, the offset after it)."""
    out, last = {}, 0
    while True:
        h = b[p]
        p += 1
        if h == 0:
            return out, p
        if h >> 4:
            fid = last + (h >> 4)
        else:
            z, p = uleb(b, p)
            fid = unzigzag(z)
        out[fid], p = thrift_value(b, p, h & 15)
        last = fid


def footer(data: bytes) -> dict:
    n = int.from_bytes(data[-8:-4], "little")
    assert data[-4:] == b"PAR1" and data[:4] == b"PAR1"
    md, end = thrift_struct(data, len(data) - 8 - n)
    assert end == len(data) - 8
    return md


def pages(data: bytes, meta: dict) -> list[dict]:
    """The pages of a column chunk (ColumnMetaData ``meta``), walked header by header; each
    page's CRC checked against its body."""
    p = meta.get(11, meta[9])
    end = p + meta[7]
    out = []
    while p < end:
        h, q = thrift_struct(data, p)
        body = data[q:q + h[3]]
        assert h[4] & 0xFFFFFFFF == zlib.crc32(body)
        out.append({"offset": p, "size": q - p + h[3], "type": h[1],
                    "values": (h[5] if h[1] == 0 else h[7])[1], "body": q})
        p = q + h[3]
    assert p == end
    return out


# -- the bounds Parquet expects --------------------------------------------------------------
def expected_bounds(t: pa.DataType, arr: pa.Array) -> tuple[bytes, bytes] | None:
    """Plain-encoded (min, max) of the non-null values of ``arr`` in ``t``'s sort order, None
    where there is none (all null; for doubles, all NaN)."""
    _, x = cells(arr)
    if x.size == 0:
        return None
    if pa.types.is_fixed_size_binary(t):
        b = [v for v in arr.to_pylist() if v is not None]
        return min(b), max(b)
    x = x.view(layout(t))
    if t == pa.float64():
        x = x[~np.isnan(x)]
        if x.size == 0:
            return None
        lo, hi = float(x.min()), float(x.max())
        lo, hi = (-0.0 if lo == 0 else lo), (0.0 if hi == 0 else hi)
        return struct.pack("<d", lo), struct.pack("<d", hi)
    nbytes = 8 if x.dtype.itemsize == 8 else 4                  # INT64 or INT32
    lo, hi = int(x.min()), int(x.max())
    return (lo.to_bytes(nbytes, "little", signed=lo < 0),
            hi.to_bytes(nbytes, "little", signed=hi < 0))


def order_key(t: pa.DataType, b: bytes):
    if pa.types.is_fixed_size_binary(t):
        return b
    if t == pa.float64():
        return struct.unpack("<d", b)[0]
    signed = pa.types.is_signed_integer(t) or pa.types.is_timestamp(t)
    v = int.from_bytes(b, "little", signed=signed)
    return v


def all_nan_page(case: Case) -> bool:
    """Whether some page of a double column holds only NaN (see the test of that case)."""
    for name in case.schema.names:
        if case.schema.field(name).type != pa.float64():
            continue
        x = case.table.column(name).to_numpy()
        for a, b in zip(case.bounds, case.bounds[1:]):
            for s in range(a, b, case.page_rows):
                if np.isnan(x[s:min(s + case.page_rows, b)]).all():
                    return True
    return False


# -- round trips -----------------------------------------------------------------------------
@SETTINGS
@given(cases())
def test_pyarrow_reads_back_exactly_the_table_written_with_any_types_policy_and_paging(case):
    data, w, size = write(case)
    got = pq.read_table(io.BytesIO(data))
    assert_same_table(got, case.table)
    checked = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read()
    assert_same_table(checked, case.table)
    md = pq.read_metadata(io.BytesIO(data))
    assert md.num_rows == case.table.num_rows
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [
        b - a for a, b in zip(case.bounds, case.bounds[1:])]
    for i, (a, b) in enumerate(zip(case.bounds, case.bounds[1:])):
        group = case.table.slice(a, b - a)
        for j, name in enumerate(case.schema.names):
            col = md.row_group(i).column(j)
            enc, comp = effective(case, name, group)
            assert enc in col.encodings, (name, enc, col.encodings)
            assert col.compression == ("ZSTD" if comp else "UNCOMPRESSED"), name
            assert col.num_values == b - a


@SETTINGS
@given(cases())
def test_duckdb_and_polars_read_the_same_values_as_were_written(tmp_path_factory, case):
    path = tmp_path_factory.mktemp("duck") / "f.parquet"
    with open(path, "wb") as f:
        write(case, f)
    with duckdb.connect() as con:
        got = con.sql("select * from read_parquet($1)", params=[str(path)]).to_arrow_table()
    assert_same_values(got, case.table, "duckdb")
    assert_same_values(polars_table(path), case.table, "polars")


@SETTINGS
@given(cases())
def test_row_group_statistics_are_the_min_max_and_null_count_of_its_values(case):
    data, _, _ = write(case)
    md = pq.read_metadata(io.BytesIO(data))
    for i, (a, b) in enumerate(zip(case.bounds, case.bounds[1:])):
        group = case.table.slice(a, b - a)
        for j, name in enumerate(case.schema.names):
            t = case.schema.field(name).type
            arr = group.column(name).combine_chunks()
            col = md.row_group(i).column(j)
            assert col.has_column_index or all_nan_page(case)
            assert col.has_offset_index
            s = col.statistics
            assert s.null_count == arr.null_count
            want = expected_bounds(t, arr)
            assert s.has_min_max == (want is not None), name
            if want is None:
                continue
            lo, hi = (order_key(t, x) for x in want)
            if pa.types.is_timestamp(t):
                assert (s.min_raw, s.max_raw) == (lo, hi), name
            else:
                assert (s.min, s.max) == (lo, hi), name
            if t == pa.float64():                      # -0.0 as a min, +0.0 as a max
                assert math.copysign(1, s.min) == math.copysign(1, lo)
                assert math.copysign(1, s.max) == math.copysign(1, hi)


@SETTINGS
@given(cases())
def test_the_page_index_and_page_headers_describe_each_page(case):
    data, _, _ = write(case)
    md = footer(data)
    assert md[6].startswith(b"tickpipe")
    for i, (a, b) in enumerate(zip(case.bounds, case.bounds[1:])):
        rg = md[4][i]
        assert rg[3] == b - a
        for j, name in enumerate(case.schema.names):
            t = case.schema.field(name).type
            chunk = rg[1][j]
            meta = chunk[3]
            ps = pages(data, meta)
            data_pages = [p for p in ps if p["type"] == 0]
            assert ps.index(data_pages[0]) == (1 if 11 in meta else 0)   # the dictionary first
            assert meta[9] == data_pages[0]["offset"]
            starts = list(range(0, b - a, case.page_rows))
            assert [p["values"] for p in data_pages] == [
                min(case.page_rows, b - a - s) for s in starts]
            oi, end = thrift_struct(data, chunk[4])
            assert end - chunk[4] == chunk[5]
            assert [(x[1], x[2], x[3]) for x in oi[1]] == [
                (p["offset"], p["size"], s) for p, s in zip(data_pages, starts)]
            if 6 not in chunk:
                assert all_nan_page(case)
                continue
            ci, end = thrift_struct(data, chunk[6])
            assert end - chunk[6] == chunk[7]
            page_arrays = [case.table.column(name).slice(a + s, min(case.page_rows, b - a - s))
                           .combine_chunks() for s in starts]
            if t == pa.float64() and any(expected_bounds(t, x) is None and x.null_count < len(x)
                                         for x in page_arrays):
                continue                               # all-NaN pages: the test below
            assert ci[5] == [x.null_count for x in page_arrays]
            want = [expected_bounds(t, x) for x in page_arrays]
            assert ci[1] == [w is None for w in want]
            assert ci[2] == [b"" if w is None else w[0] for w in want]
            assert ci[3] == [b"" if w is None else w[1] for w in want]
            if ci[4] == 1:                             # ASCENDING must be true
                keys = [(order_key(t, w[0]), order_key(t, w[1])) for w in want if w is not None]
                assert all(x[0] <= y[0] and x[1] <= y[1] for x, y in zip(keys, keys[1:]))
            else:
                assert ci[4] == 0


@SETTINGS
@given(cases())
def test_the_writers_crc_is_the_files_crc_and_close_returns_its_size(tmp_path_factory, case):
    data, w, size = write(case)
    assert size == len(data)
    assert w.crc == zlib.crc32(data)
    path = tmp_path_factory.mktemp("crc") / "f.parquet"
    with open(path, "wb") as f:
        _, w2, size2 = write(case, f)
    assert path.read_bytes() == data
    assert (w2.crc, size2) == (w.crc, path.stat().st_size)


def mixed_case(n=5000, compress=True, page_rows=700, seed=1) -> Case:
    rng = np.random.default_rng(seed)
    schema = pa.schema([pa.field("ts", pa.timestamp("ns", "UTC")),
                        pa.field("seq", pa.uint64(), False),
                        pa.field("price", pa.int64(), False), pa.field("size", pa.uint32(), False),
                        pa.field("side", pa.uint8(), False), pa.field("x", pa.float64(), False),
                        pa.field("mpid", pa.binary(4), False)])
    cols = [array(schema[0].type, np.cumsum(rng.integers(0, 10**6, n)), rng.random(n) < 0.9),
            array(schema[1].type, np.arange(n, dtype=np.uint64) + 10**12, None),
            array(schema[2].type, rng.integers(1, 50, n) * 10**7, None),
            array(schema[3].type, rng.integers(0, 2**32, n, dtype=np.uint32), None),
            array(schema[4].type, rng.integers(65, 70, n, dtype=np.uint8), None),
            array(schema[5].type, rng.standard_normal(n), None),
            array(schema[6].type, rng.integers(0, 2**32, n, dtype=np.uint32), None)]
    policy = {"ts": ("DELTA_BINARY_PACKED", False), "seq": ("DELTA_BINARY_PACKED", compress),
              "price": ("RLE_DICTIONARY", compress), "size": ("BYTE_STREAM_SPLIT", compress),
              "side": ("RLE_DICTIONARY", compress), "x": ("BYTE_STREAM_SPLIT", compress),
              "mpid": ("PLAIN", compress)}
    table = pa.Table.from_arrays(cols, schema=schema)
    return Case(schema, table, policy, page_rows, [0, n * 3 // 5, n])


@pytest.mark.parametrize("compress", [False, True])
def test_a_flipped_byte_in_any_page_fails_the_checksum_verification(compress):
    case = mixed_case(compress=compress)
    data, _, _ = write(case)
    assert_same_table(pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read(),
                      case.table)
    md = footer(data)
    flipped = 0
    for rg in md[4]:
        for chunk in rg[1]:
            for p in pages(data, chunk[3]):
                at = p["body"] + (p["offset"] + p["size"] - p["body"]) // 2
                bad = bytearray(data)
                bad[at] ^= 0x10
                with pytest.raises(OSError, match="(?i)crc"):
                    pq.ParquetFile(io.BytesIO(bytes(bad)), page_checksum_verification=True).read()
                flipped += 1
    assert flipped > 2 * 7


def test_encode_takes_numpy_columns_to_the_same_bytes_as_a_table():
    case = mixed_case(n=3000, page_rows=1000)
    data, _, _ = write(case)
    f = io.BytesIO()
    w = FileWriter(f, case.schema, case.policy, page_rows=case.page_rows)
    for a, b in zip(case.bounds, case.bounds[1:]):
        part = case.table.slice(a, b - a)
        cols = {}
        for field in case.schema:
            arr = part.column(field.name).combine_chunks()
            valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
            _, x = cells(arr)
            v = np.zeros(len(arr), layout(field.type))
            v[arr.is_valid().to_numpy(zero_copy_only=False)] = x.view(layout(field.type))
            cols[field.name] = (v, valid)
        w.write(w.encode(cols))
    assert w.close() == len(data)
    assert f.getvalue() == data


@pytest.mark.parametrize("distinct", [DICT_LIMIT, DICT_LIMIT + 1])
def test_a_dictionary_is_kept_up_to_dict_limit_distinct_values_then_plain(distinct):
    n = DICT_LIMIT + 1000
    rng = np.random.default_rng(2)
    v = rng.permutation(np.arange(n) % distinct).astype(np.uint64) * 7919 + (1 << 63)
    f = pa.field("v", pa.uint64(), False)
    table = pa.table({"v": pa.array(v)}, schema=pa.schema([f]))
    data, _, _ = write(Case(table.schema, table, {"v": ("RLE_DICTIONARY", True)}, 10_000, [0, n]))
    checked = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read()
    assert_same_table(checked, table)
    col = pq.read_metadata(io.BytesIO(data)).row_group(0).column(0)
    assert col.has_dictionary_page == (distinct <= DICT_LIMIT)
    assert ("RLE_DICTIONARY" in col.encodings) == (distinct <= DICT_LIMIT)


def test_a_page_of_only_nan_is_not_written_as_a_null_page():
    x = np.array([1.0, 2.0, np.nan, np.nan, 3.0, 4.0])
    table = pa.table({"x": pa.array(x)}, schema=pa.schema([pa.field("x", pa.float64(), False)]))
    data, _, _ = write(Case(table.schema, table, {"x": ("PLAIN", False)}, 2, [0, 6]))
    assert_same_table(pq.read_table(io.BytesIO(data)), table)
    assert not pq.read_metadata(io.BytesIO(data)).row_group(0).column(0).has_column_index


def nullable_table(n=6) -> pa.Table:
    """Timestamps whose last rows are null: with two rows a page, the last page holds none but
    nulls while the chunk holds values."""
    ts = pa.array([10, 20, 30, 40] + [None] * (n - 4), pa.int64()).cast(pa.timestamp("ns", "UTC"))
    return pa.table({"ts": ts})


def read_everywhere(data: bytes, table: pa.Table, tmp_path) -> None:
    path = tmp_path / "f.parquet"
    path.write_bytes(data)
    assert_same_table(pq.ParquetFile(path, page_checksum_verification=True).read(), table)
    with duckdb.connect() as con:
        assert_same_values(con.sql("select * from read_parquet($1)", params=[str(path)])
                           .to_arrow_table(), table, "duckdb")
    assert_same_values(polars_table(path), table, "polars")


@pytest.mark.parametrize("encoding", ["PLAIN", "BYTE_STREAM_SPLIT"])
def test_a_page_of_only_nulls_in_a_chunk_of_values_reads_back_in_plain_encodings(encoding,
                                                                                  tmp_path):
    table = nullable_table()
    data, _, _ = write(Case(table.schema, table, {"ts": (encoding, False)}, 2, [0, 6]))
    read_everywhere(data, table, tmp_path)


def test_a_page_of_only_nulls_in_a_chunk_of_values_reads_back_under_delta_encoding(tmp_path):
    table = nullable_table()
    data, _, _ = write(Case(table.schema, table, {"ts": ("DELTA_BINARY_PACKED", False)}, 2, [0, 6]))
    read_everywhere(data, table, tmp_path)


@pytest.mark.parametrize("values", [[10, 20, 30, 40], [10, 10, 10, 10]], ids=["dict", "constant"])
def test_a_page_of_only_nulls_in_a_chunk_of_values_reads_back_under_dictionary_encoding(values,
                                                                                        tmp_path):
    ts = pa.array(values + [None, None], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    table = pa.table({"ts": ts})
    data, _, _ = write(Case(table.schema, table, {"ts": ("RLE_DICTIONARY", True)}, 2, [0, 6]))
    read_everywhere(data, table, tmp_path)


@pytest.mark.parametrize("encoding", ["PLAIN", "BYTE_STREAM_SPLIT"])
def test_a_chunk_of_zeros_of_both_signs_keeps_each_sign(encoding):
    table = pa.table({"x": pa.array([0.0, -0.0, 0.0, -0.0])},
                     schema=pa.schema([pa.field("x", pa.float64(), False)]))
    data, _, _ = write(Case(table.schema, table, {"x": (encoding, True)}, 1 << 20, [0, 4]))
    assert_same_table(pq.read_table(io.BytesIO(data)), table)


SNAN = np.array([0x7FF0000000000001, 0xFFF4000000000000], np.uint64).view(np.float64)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_signalling_nans_read_back_bit_for_bit(encoding, tmp_path):
    x = np.array([1.5, SNAN[0], -2.0, SNAN[1], np.nan, 3.0])
    table = pa.table({"x": pa.array(x)}, schema=pa.schema([pa.field("x", pa.float64(), False)]))
    data, _, _ = write(Case(table.schema, table, {"x": (encoding, True)}, 4, [0, 6]))
    read_everywhere(data, table, tmp_path)


@pytest.mark.parametrize("x", [[SNAN[0], 1.5, -2.0], [-2.0, 1.5, SNAN[0]]], ids=["first", "last"])
def test_signalling_nans_are_left_out_of_the_statistics(x, tmp_path):
    table = pa.table({"x": pa.array(np.array(x))},
                     schema=pa.schema([pa.field("x", pa.float64(), False)]))
    data, _, _ = write(Case(table.schema, table, {"x": ("PLAIN", False)}, 1 << 20, [0, 3]))
    path = tmp_path / "f.parquet"
    path.write_bytes(data)
    assert pq.read_table(path, filters=[("x", ">", 0.0)]).column(0).to_pylist() == [1.5]
    s = pq.read_metadata(path).row_group(0).column(0).statistics
    assert (s.min, s.max) == (-2.0, 1.5)


# -- footer ----------------------------------------------------------------------------------
def test_sorting_columns_and_created_by_are_written_in_the_footer():
    case = mixed_case(n=2000)
    f = io.BytesIO()
    w = FileWriter(f, case.schema, case.policy, sorting=("side", "ts", "seq"))
    w.write(w.encode(case.table.slice(0, 1000)))
    w.write(w.encode(case.table.slice(1000)))
    w.close()
    md = pq.read_metadata(io.BytesIO(f.getvalue()))
    assert md.created_by.startswith("tickpipe")
    names = case.schema.names
    for i in range(md.num_row_groups):
        got = md.row_group(i).sorting_columns
        assert [(c.column_index, c.descending, c.nulls_first) for c in got] == [
            (names.index("side"), False, False), (names.index("ts"), False, False),
            (names.index("seq"), False, False)]
    data, _, _ = write(case)
    assert pq.read_metadata(io.BytesIO(data)).row_group(0).sorting_columns == ()


@pytest.mark.parametrize("t", [pa.string(), pa.binary(), pa.binary(3), pa.binary(16),
                               pa.float32(), pa.bool_(), pa.timestamp("ns"),
                               pa.timestamp("us", "UTC"), pa.date32(), pa.list_(pa.int64())],
                         ids=str)
def test_column_of_refuses_an_unsupported_type_naming_the_field(t):
    with pytest.raises(TypeError, match="`odd_one`"):
        column_of(pa.field("odd_one", t))
    with pytest.raises(TypeError, match="`odd_one`"):
        schema = pa.schema([pa.field("ok", pa.int64()), pa.field("odd_one", t)])
        FileWriter(io.BytesIO(), schema, {})


@pytest.mark.parametrize("name", list(TYPES))
def test_column_of_takes_each_supported_type(name):
    t = TYPES[name]
    col = column_of(pa.field("x", t, nullable=False))
    assert col.name == "x" and not col.nullable and col.dtype == layout(t)
    assert column_of(pa.field("x", t)).nullable


def test_arrow_values_gives_the_values_with_nulls_as_zero_and_the_validity():
    ts = pa.array([5, None, 7, None, 9], pa.int64()).cast(pa.timestamp("ns", "UTC"))
    vals, valid = arrow_values(ts.slice(1), column_of(pa.field("t", ts.type)))
    assert vals.tolist() == [0, 7, 0, 9] and valid.tolist() == [False, True, False, True]
    b = pa.array([b"ab", b"cd", b"ef"], pa.binary(2)).slice(1)
    vals, valid = arrow_values(b, column_of(pa.field("b", b.type)))
    assert vals.tobytes() == b"cdef" and valid is None


# -- the record schemas ----------------------------------------------------------------------
@pytest.mark.parametrize("schema_name", list(RECORD_TYPES))
@pytest.mark.parametrize("rows_per_instrument", [np.inf, 3000.0, 5.0])
def test_each_record_schema_round_trips_with_the_stores_policy(schema_name, rows_per_instrument,
                                                               tmp_path):
    schema = arrow_schema(schema_name)
    rng = np.random.default_rng(len(schema_name))
    n = 2500
    arrays = []
    for f in schema:
        kind = rng.choice(["few", "runs", "walk", "full", "extremes"])
        if f.name.startswith("ts_"):
            v = 20_000 * 86_400 * 10**9 + np.cumsum(rng.integers(0, 10**9, n))
        else:
            v = values(rng, f.type, kind, n)
        valid = (rng.random(n) < 0.95) if f.nullable else None
        arrays.append(array(f.type, v, valid))
    table = pa.Table.from_arrays(arrays, schema=schema)
    policy = _policy(schema, rows_per_instrument)
    assert set(policy) == set(schema.names)
    f = io.BytesIO()
    w = FileWriter(f, schema, policy, page_rows=1000, sorting=("instrument_id", "ts_event"))
    for a, b in [(0, 1200), (1200, n)]:
        w.write(w.encode(table.slice(a, b - a)))
    size = w.close()
    data = f.getvalue()
    assert size == len(data) and w.crc == zlib.crc32(data)
    got = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True).read()
    assert_same_table(got, table)
    assert got.schema.metadata[b"tickpipe.schema"] == schema_name.encode()
    path = tmp_path / f"{schema_name}.parquet"
    path.write_bytes(data)
    with duckdb.connect() as con:
        duck = con.sql("select * from read_parquet($1)", params=[str(path)]).to_arrow_table()
    assert_same_values(duck, table, "duckdb")
    assert_same_values(polars_table(path), table, "polars")


# -- the encoders against plain-Python decoders ----------------------------------------------
def decode_delta(b: bytes) -> tuple[list[int], int]:
    """DELTA_BINARY_PACKED: (the values, the bytes read)."""
    block, p = uleb(b, 0)
    miniblocks, p = uleb(b, p)
    count, p = uleb(b, p)
    z, p = uleb(b, p)
    out = [unzigzag(z)] if count else []
    per = block // miniblocks
    while len(out) < count:
        z, p = uleb(b, p)
        min_delta = unzigzag(z)
        widths = b[p:p + miniblocks]
        p += miniblocks
        for w in widths:
            if len(out) >= count:              # unneeded miniblocks have no bytes
                break
            bits = int.from_bytes(b[p:p + per * w // 8], "little")
            p += per * w // 8
            for k in range(per):
                if len(out) < count:
                    x = out[-1] + min_delta + ((bits >> (k * w)) & ((1 << w) - 1))
                    out.append((x + 2**63) % 2**64 - 2**63)      # int64 wrap-around
    return out, p


def decode_hybrid(b: bytes, w: int, count: int, p: int = 0) -> tuple[list[int], int]:
    """The RLE/bit-packed hybrid: (all values decoded, padding included; the bytes' end)."""
    out = []
    while len(out) < count:
        h, p = uleb(b, p)
        if h & 1:                              # (h >> 1) groups of 8 bit-packed values
            nbytes = (h >> 1) * w
            bits = int.from_bytes(b[p:p + nbytes], "little")
            p += nbytes
            out += [(bits >> (k * w)) & ((1 << w) - 1) for k in range((h >> 1) * 8)]
        else:                                  # a run of (h >> 1) copies of one value
            vb = (w + 7) // 8
            out += [int.from_bytes(b[p:p + vb], "little")] * (h >> 1)
            p += vb
    return out, p


@st.composite
def int64_arrays(draw, max_size=700):
    n = draw(st.integers(0, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(VALUE_KINDS))
    return values(rng, pa.int64(), kind, n) if n else np.zeros(0, np.int64)


@SETTINGS
@given(int64_arrays())
def test_delta_encoding_decodes_to_its_input(v):
    guard = 64
    out = np.full(delta_bound(len(v)) + guard, 0xA5, np.uint8)
    n = _delta(v, out)
    assert n <= delta_bound(len(v))
    assert (out[delta_bound(len(v)):] == 0xA5).all()
    got, end = decode_delta(out[:n].tobytes())
    assert end == n
    assert got == v.tolist()


@SETTINGS
@given(st.lists(st.integers(-2**63, 2**63 - 1), max_size=300))
def test_delta_encoding_decodes_to_its_input_for_any_listed_ints(xs):
    v = np.array(xs, np.int64)
    out = np.empty(delta_bound(len(v)), np.uint8)
    n = _delta(v, out)
    got, end = decode_delta(out[:n].tobytes())
    assert (got, end) == (xs, n)


@st.composite
def hybrid_inputs(draw):
    w = draw(st.integers(1, 31))
    run = st.sampled_from([1, 1, 2, 3, 7, 8, 9, 20, 70])
    runs = draw(st.lists(st.tuples(st.integers(0, 2**w - 1), run), max_size=60))
    v = np.array([x for x, k in runs for _ in range(k)], np.int32)
    return v, w, draw(st.integers(0, 5))


@SETTINGS
@given(hybrid_inputs())
def test_hybrid_encoding_decodes_to_its_input(args):
    v, w, pos = args
    guard = 64
    bound = hybrid_bound(len(v), w)
    out = np.full(pos + bound + guard, 0xA5, np.uint8)
    end = _hybrid(v, w, out, pos)
    assert end - pos <= bound
    assert (out[:pos] == 0xA5).all() and (out[pos + bound:] == 0xA5).all()
    got, p = decode_hybrid(out[:end].tobytes(), w, len(v), pos)
    assert p == end
    assert got[:len(v)] == v.tolist()
    assert len(got) - len(v) < 8 and not any(got[len(v):])      # padding: zeros, under a group


@SETTINGS
@given(st.integers(1, 31), st.integers(0, 3000), st.integers(0, 2**32 - 1))
def test_hybrid_encoding_decodes_to_its_input_for_random_values(w, n, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, min(2**w, int(rng.integers(1, 2**w + 1))), n).astype(np.int32)
    out = np.empty(hybrid_bound(n, w), np.uint8)
    end = _hybrid(v, w, out, 0)
    got, p = decode_hybrid(out[:end].tobytes(), w, n)
    assert p == end and got[:n] == v.tolist()


def first_seen(xs: list) -> list:
    return list(dict.fromkeys(xs))


@SETTINGS
@given(st.sampled_from([np.int64, np.uint32]), st.integers(1, 2000), st.integers(1, 60),
       st.integers(0, 2**32 - 1), st.sampled_from(["any", "narrow", "around zero"]))
def test_dict_hash_gives_the_first_seen_keys_and_indices_or_gives_up_past_the_limit(dt, n, limit,
                                                                                    seed, spread):
    rng = np.random.default_rng(seed)
    lo, hi = int(np.iinfo(dt).min), int(np.iinfo(dt).max)
    if spread == "narrow":             # a range a table covers (sizes): at either end, or inside
        span = int(rng.integers(1, 3000))
        lo = int(rng.choice([lo, hi - span, int(rng.integers(lo, hi - span))]))
        hi = lo + span
    elif spread == "around zero":
        lo, hi = max(lo, -500), 500
    pool = rng.integers(lo, hi, int(rng.integers(1, 80)), dtype=dt, endpoint=True)
    v = rng.choice(pool, n)
    keys, idx, k = _dict_hash(v, limit)
    want = first_seen(v.tolist())
    if len(want) > limit:
        assert k == -1
        return
    assert k == len(want) and keys.tolist() == want and keys.dtype == dt
    assert (keys[idx] == v).all()


@SETTINGS
@given(st.sampled_from([(np.uint8, 256), (np.uint16, 1 << 16)]), st.integers(1, 3000),
       st.integers(0, 2**32 - 1))
def test_a_narrow_columns_dictionary_gives_the_first_seen_keys_and_indices(dt_size, n, seed):
    dt, size = dt_size
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, size, int(rng.integers(1, 300)), dtype=dt)
    v = rng.choice(pool, n)
    keys, idx, k = _dict_hash(v, size)
    want = first_seen(v.tolist())
    assert k == len(want) and keys.tolist() == want
    assert (keys[idx] == v).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=5000))
def test_crc_combine_equals_the_crc_of_the_concatenation(a, b):
    """A file's CRC-32 is put together from its pages' (computed once, for their headers)."""
    from tickstore.parquet import _CRC_ZEROS, _crc_combine
    assert _crc_combine(zlib.crc32(a), zlib.crc32(b), len(b), _CRC_ZEROS) == zlib.crc32(a + b)
