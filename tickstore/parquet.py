"""A Parquet writer for the store's fixed-width columns: numba encoders, zstd chosen per column.

pyarrow's writer encodes about 5 M ``mbo`` rows a second a core here (bench/RESULTS.md), half
what the store needs to keep up with ArcticDB. This writer does the same job for the types the
store holds (unsigned and signed integers, ``float64``, nanosecond UTC timestamps, which may be
null, and fixed-size binary) with the encoding loops compiled by numba (``nogil``, so the columns
of an append encode on threads) and writes standard Parquet that pyarrow, DuckDB
and polars read: format 2.6 logical types, data pages v1, column chunk statistics, the page index
(column and offset indexes), page CRC-32s, the Arrow schema under ``ARROW:schema`` and the sort
order of the rows (``sorting_columns``).

Encodings (Parquet's ``Encodings.md``): ``PLAIN``; ``DELTA_BINARY_PACKED`` (blocks of 128 values,
4 miniblocks of 32, zigzag ULEB header and minimum delta, values bit-packed LSB first);
``RLE_DICTIONARY`` (a ``PLAIN`` dictionary page, then the indices in the RLE/bit-packed hybrid
with a one-byte bit width); ``BYTE_STREAM_SPLIT``. Definition levels of nullable columns are the
same hybrid, prefixed by their length (data page v1). Each column chunk is zstd-compressed or
not (``ColumnMetaData.codec``), as its policy says: a column whose encoding leaves nothing for
zstd to find is not compressed, and no time is spent trying.

The footer and page headers are Thrift's compact protocol (``parquet.thrift`` of
apache/parquet-format: field ids and types as there): :class:`_Thrift` below, and direct byte
builders for the structs written for every page and column chunk.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from llvmlite import ir as _ir
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic

# -- parquet.thrift enums ---------------------------------------------------------------------
BOOLEAN, INT32, INT64, INT96, FLOAT, DOUBLE, BYTE_ARRAY, FIXED_LEN_BYTE_ARRAY = range(8)
PLAIN, RLE, DELTA_BINARY_PACKED, RLE_DICTIONARY, BYTE_STREAM_SPLIT = 0, 3, 5, 8, 9
UNCOMPRESSED, ZSTD = 0, 6
DATA_PAGE, DICTIONARY_PAGE = 0, 2
REQUIRED, OPTIONAL = 0, 1
UNORDERED, ASCENDING = 0, 1
UINT_8, UINT_16, UINT_32, UINT_64, INT_8, INT_16, INT_32, INT_64 = range(11, 19)

ENCODINGS = {"PLAIN": PLAIN, "DELTA_BINARY_PACKED": DELTA_BINARY_PACKED,
             "RLE_DICTIONARY": RLE_DICTIONARY, "BYTE_STREAM_SPLIT": BYTE_STREAM_SPLIT}
MAGIC = b"PAR1"
CREATED_BY = "tickpipe tickstore version 0.1.0"
DICT_LIMIT = 1 << 15            # distinct values in a chunk past which a dictionary is not kept
DIRECT_SPAN = 1 << 16           # a range of values a dictionary looks up in a table, not a hash

# Thrift compact protocol field types
_T_TRUE, _T_FALSE, _T_I8, _T_I16, _T_I32, _T_I64, _T_BIN, _T_LIST, _T_STRUCT = (
    1, 2, 3, 4, 5, 6, 8, 9, 12)


_UV = [bytes([i]) for i in range(128)]


def _uv(v: int) -> bytes:
    """ULEB128 of the non-negative ``v`` (the sizes and offsets of a file: mostly 2-4 bytes,
    written without a loop)."""
    if v < 0x80:
        return _UV[v]
    if v < 0x4000:
        return bytes((v & 0x7F | 0x80, v >> 7))
    if v < 0x200000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14))
    if v < 0x10000000:
        return bytes((v & 0x7F | 0x80, v >> 7 & 0x7F | 0x80, v >> 14 & 0x7F | 0x80, v >> 21))
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _zz32(v: int) -> bytes:
    return _uv(v << 1) if 0 <= v < 0x80000000 else _uv(((v << 1) ^ (v >> 31)) & 0xFFFFFFFF)


def _zz64(v: int) -> bytes:
    return _uv(v << 1) if v >= 0 else _uv(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def _list_header(n: int, etype: int) -> bytes:
    return bytes([(n << 4) | etype]) if n < 15 else bytes([0xF0 | etype]) + _uv(n)


class _Thrift:
    """Thrift compact protocol, writing only: structs, lists, integers, bools and binaries."""

    __slots__ = ("b", "last", "stack")

    def __init__(self):
        self.b = bytearray()
        self.last = 0
        self.stack = []

    def _field(self, fid: int, t: int) -> None:
        d = fid - self.last
        if 0 < d <= 15:
            self.b.append((d << 4) | t)
        else:
            self.b.append(t)
            self.b += _zz32(fid)
        self.last = fid

    def i32(self, fid: int, v: int) -> "_Thrift":
        self._field(fid, _T_I32)
        self.b += _zz32(v)
        return self

    def i64(self, fid: int, v: int) -> "_Thrift":
        self._field(fid, _T_I64)
        self.b += _zz64(v)
        return self

    def i16(self, fid: int, v: int) -> "_Thrift":
        self._field(fid, _T_I16)
        self.b += _zz32(v)                       # the same zigzag varint for a 16-bit value
        return self

    def i8(self, fid: int, v: int) -> "_Thrift":
        self._field(fid, _T_I8)
        self.b.append(v & 0xFF)
        return self

    def bool(self, fid: int, v: bool) -> "_Thrift":
        self._field(fid, _T_TRUE if v else _T_FALSE)
        return self

    def binary(self, fid: int, v: bytes) -> "_Thrift":
        self._field(fid, _T_BIN)
        self.b += _uv(len(v))
        self.b += v
        return self

    def raw(self, b: bytes, last: int) -> "_Thrift":
        """Fields encoded by a fresh :class:`_Thrift` (so from field id 0) in the struct now
        open, the last of them ``last``."""
        self.b += b
        self.last = last
        return self

    def begin(self, fid: int | None = None) -> "_Thrift":
        """A struct: a field ``fid``, or (None) a list element."""
        if fid is not None:
            self._field(fid, _T_STRUCT)
        self.stack.append(self.last)
        self.last = 0
        return self

    def end(self) -> "_Thrift":
        self.b.append(0)
        self.last = self.stack.pop()
        return self

    def list(self, fid: int, etype: int, n: int) -> "_Thrift":
        self._field(fid, _T_LIST)
        self.b += _list_header(n, etype)
        return self

    def list_i32(self, fid: int, values) -> "_Thrift":
        self.list(fid, _T_I32, len(values))
        for v in values:
            self.b += _zz32(v)
        return self

    def list_bin(self, fid: int, values) -> "_Thrift":
        self.list(fid, _T_BIN, len(values))
        for v in values:
            self.b += _uv(len(v))
            self.b += v
        return self


# -- encoders (numba) -------------------------------------------------------------------------
_U7F = np.uint64(0x7F)
_U80 = np.uint64(0x80)
_UFF = np.uint64(0xFF)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True)
def _uleb(out, p, v):
    v = np.uint64(v)
    while v > _U7F:
        out[p] = np.uint8((v & _U7F) | _U80)
        v >>= np.uint64(7)
        p += 1
    out[p] = np.uint8(v)
    return p + 1


@numba.njit(cache=True, nogil=True)
def _zigzag(x):
    x = np.int64(x)
    return np.uint64((x << np.int64(1)) ^ (x >> np.int64(63)))


@numba.njit(cache=True, nogil=True)
def _width(x):
    """Bits needed for the unsigned ``x`` (a binary search: six steps, not one a bit)."""
    x = np.uint64(x)
    w = 0
    for s in (32, 16, 8, 4, 2, 1):
        if x >> np.uint64(s):
            w += s
            x >>= np.uint64(s)
    return w + int(x)


def _at(context, builder, aty, arr, pos):
    """(For intrinsics) the address of byte ``pos`` of the array ``arr`` of type ``aty``."""
    data = context.make_array(aty)(context, builder, arr).data
    return builder.gep(builder.bitcast(data, _ir.IntType(8).as_pointer()), [pos])


@_intrinsic
def _store64(typingctx, out, pos, x):
    """``out[pos:pos + 8]`` = the uint64 ``x``, little-endian, in one unaligned store (the
    caller keeps ``pos + 8`` within ``out``)."""
    sig = _types.void(out, _types.int64, _types.uint64)

    def codegen(context, builder, signature, args):
        o, p, v = args
        ptr = _at(context, builder, signature.args[0], o, p)
        builder.store(v, builder.bitcast(ptr, _ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()
    return sig, codegen


@_intrinsic
def _load64(typingctx, buf, pos):
    """The uint64 at ``buf[pos:pos + 8]``, little-endian, in one unaligned load (the caller
    keeps ``pos + 8`` within ``buf``)."""
    sig = _types.uint64(buf, _types.int64)

    def codegen(context, builder, signature, args):
        b, p = args
        ptr = _at(context, builder, signature.args[0], b, p)
        return builder.load(builder.bitcast(ptr, _ir.IntType(64).as_pointer()), align=1)
    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _pack(vals, start, count, w, out, p):
    """``count`` unsigned values of ``w`` bits (each below 2**w), packed LSB first at ``p``:
    a 64-bit word stored whenever one fills (storing its bytes one by one made
    :func:`_delta` 1.5 times slower), the last few bytes one by one."""
    if w == 0:
        return p
    acc = np.uint64(0)
    nb = 0
    for k in range(start, start + count):
        x = np.uint64(vals[k])
        acc |= x << np.uint64(nb)
        nb += w
        if nb >= 64:
            _store64(out, p, acc)
            p += 8
            nb -= 64
            acc = (x >> np.uint64(w - nb)) if nb > 0 else np.uint64(0)
    for b in range((nb + 7) // 8):
        out[p + b] = np.uint8((acc >> np.uint64(8 * b)) & _UFF)
    return p + (nb + 7) // 8


@numba.njit(cache=True, nogil=True)
def _delta(v, out):
    """``v`` (int64) as DELTA_BINARY_PACKED into ``out`` (at least ``delta_bound(n)`` bytes);
    returns the bytes written. Deltas wrap as int64 (uint64 columns are viewed as int64)."""
    n = v.shape[0]
    p = _uleb(out, 0, 128)
    p = _uleb(out, p, 4)
    p = _uleb(out, p, n)
    p = _uleb(out, p, _zigzag(v[0] if n else 0))
    packed = np.zeros(128, np.uint64)
    i = 1
    while i < n:                  # a block: its deltas, their minimum, four miniblocks
        m = min(128, n - i)
        cur = v[i:i + m]          # (slices, indexed from 0: loops LLVM vectorizes, with no
        prev = v[i - 1:i - 1 + m]  # negative-index fix-ups; 3.6 -> 1.8 ns a timestamp)
        mn = cur[0] - prev[0]
        for k in range(m):
            mn = min(mn, cur[k] - prev[k])
        p = _uleb(out, p, _zigzag(mn))
        wpos = p
        p += 4
        for k in range(m):
            packed[k] = np.uint64(cur[k] - prev[k] - mn)
        for k in range(m, 128):
            packed[k] = 0
        for mb in range(4):
            lo = mb * 32
            if lo >= m:
                out[wpos + mb] = 0
                continue
            bits = np.uint64(0)
            mini = packed[lo:lo + 32]
            for k in range(32):
                bits |= mini[k]
            w = _width(bits)
            out[wpos + mb] = w
            p = _pack(packed, lo, 32, w, out, p)
        i += m
    return p


def delta_bound(n: int) -> int:
    """Bytes :func:`_delta` may write for ``n`` values: 8 a value, 14 a block of 128, the last
    miniblock padded to 32 values, the header."""
    return 8 * n + 14 * (n // 128 + 2) + 8 * 32 + 48


@numba.njit(cache=True, nogil=True)
def _hybrid(v, w, out, p):
    """``v`` (int32, each below 2**w) in the RLE/bit-packed hybrid at ``p``: runs of 8 or more
    equal values as RLE runs, the rest in bit-packed groups of 8 (the last padded with 0s)."""
    n = v.shape[0]
    vb = (w + 7) // 8
    last = np.zeros(8, np.uint64)
    i = 0
    while i < n:
        j = i + 1
        while j < n and v[j] == v[i]:
            j += 1
        if j - i >= 8:
            p = _uleb(out, p, np.uint64(j - i) << np.uint64(1))
            x = np.uint64(v[i])
            for b in range(vb):
                out[p + b] = np.uint8((x >> np.uint64(8 * b)) & _UFF)
            p += vb
            i = j
            continue
        start = i
        g = 0
        while i < n and g < 63:
            if g > 0:                                   # a run of 8 at a group's start ends it
                j = i + 1
                while j < n and j - i < 8 and v[j] == v[i]:
                    j += 1
                if j - i >= 8:
                    break
            i += 8
            g += 1
        end = min(i, n)
        p = _uleb(out, p, np.uint64((g << 1) | 1))
        full = (end - start) // 8 * 8               # whole groups: packed from ``v`` itself
        if w <= 8:                                  # (8 values are ``w`` whole bytes)
            p = _pack_groups(v, start, full // 8, w, out, p)
        else:
            p = _pack(v, start, full, w, out, p)
        if full < g * 8:                            # the last group, padded with 0s
            for k in range(8):
                last[k] = np.uint64(v[start + full + k]) if start + full + k < end else 0
            p = _pack(last, 0, 8, w, out, p)
        i = end
    return p


@numba.njit(cache=True, nogil=True)
def _pack_groups(v, start, groups, w, out, p):
    """``groups`` groups of 8 values of ``w`` (at most 8) bits from ``v[start]``, bit-packed:
    a group's bits put together in a word without a chain from value to value, then stored
    in one 8-byte store, of which the next group's overwrites all but the ``w`` bytes (so
    ``out`` has 8 bytes of room past the last group; :func:`hybrid_bound` leaves them). A
    flag or a side took 1.5 to 2 ns a value through :func:`_pack`."""
    uw = np.uint64(w)
    for g in range(groups):
        grp = v[start + 8 * g:start + 8 * g + 8]
        x = np.uint64(grp[0])
        for k in range(1, 8):
            x |= np.uint64(grp[k]) << (uw * np.uint64(k))
        _store64(out, p, x)
        p += w
    return p


def hybrid_bound(n: int, w: int) -> int:
    """Bytes :func:`_hybrid` may take for ``n`` values of ``w`` bits, with the 8 bytes past
    its end that :func:`_pack_groups` may write."""
    return (n // 8 + 2) * (max(w, 9) + 2) + 16


@numba.njit(cache=True, nogil=True)
def _dict_hash(v, limit):
    """Dictionary of ``v`` (integers of any width, signed or not) in first-seen order:
    (values, indices, count); count -1 when there are more than ``limit`` distinct values
    (a limit of ``2 ** bits`` for 1- and 2-byte values: never). Values that span a short range
    (at most :data:`DIRECT_SPAN` and twice their number: sizes, flags, say) are looked up in a
    table of that range (:func:`_dict_span`), not hashed (2.4 -> 1.1 ns a value)."""
    n = v.shape[0]
    if n:
        lo = v[0]
        hi = v[0]
        for i in range(n):
            lo = min(lo, v[i])
            hi = max(hi, v[i])
        span = np.uint64(hi) - np.uint64(lo)        # exact, as the bits wrap
        if span < np.uint64(DIRECT_SPAN) and span < np.uint64(2 * n):
            return _dict_span(v, lo, int(span) + 1, limit)
    cap = min(limit, n) + 1
    bits = 4
    while (1 << bits) < 2 * cap:
        bits += 1
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    table = np.full(1 << bits, -1, np.int32)
    keys = np.empty(cap, v.dtype)
    idx = np.empty(n, np.int32)
    k = 0
    prev = -1
    for i in range(n):
        x = v[i]
        if prev >= 0 and keys[prev] == x:
            idx[i] = prev
            continue
        h = np.int64((np.uint64(x) * _GOLDEN) >> shift)
        while True:
            s = table[h]
            if s < 0:
                if k >= limit:
                    return keys[:0], idx[:0], -1
                table[h] = k
                keys[k] = x
                s = k
                k += 1
                break
            if keys[s] == x:
                break
            h = (h + 1) & mask
        idx[i] = s
        prev = s
    return keys[:k], idx, k


@numba.njit(cache=True, nogil=True)
def _dict_span(v, lo, span, limit):
    """:func:`_dict_hash`'s result for values from ``lo`` to ``lo + span - 1``."""
    n = v.shape[0]
    table = np.full(span, -1, np.int32)
    keys = np.empty(min(span, n), v.dtype)
    idx = np.empty(n, np.int32)
    base = np.uint64(lo)
    k = 0
    for i in range(n):
        x = v[i]
        j = np.uint64(x) - base
        s = table[j]
        if s < 0:
            if k >= limit:
                return keys[:0], idx[:0], -1
            table[j] = k
            keys[k] = x
            s = k
            k += 1
        idx[i] = s
    return keys[:k], idx, k


@numba.njit(cache=True, nogil=True)
def _split(w, k, out):
    """BYTE_STREAM_SPLIT of ``w`` (n values' bits as unsigned integers of ``k`` bytes) into
    ``out`` (n * k bytes): each value read once, its bytes shifted out to their k streams,
    eight values at a time so that each stream gets eight adjacent bytes, which the compiler
    stores as one word (8-byte values: 31 -> 14 ms for 10 M; byte by byte was 17 times
    slower again)."""
    n = w.shape[0]
    m = n // 8 * 8
    nn = np.uint64(n)
    for b in range(0, m, 8):
        x0, x1 = np.uint64(w[b]), np.uint64(w[b + 1])
        x2, x3 = np.uint64(w[b + 2]), np.uint64(w[b + 3])
        x4, x5 = np.uint64(w[b + 4]), np.uint64(w[b + 5])
        x6, x7 = np.uint64(w[b + 6]), np.uint64(w[b + 7])
        for j in range(k):
            s = np.uint64(8 * j)
            at = np.uint64(j) * nn + np.uint64(b)
            out[at] = np.uint8((x0 >> s) & _UFF)
            out[at + np.uint64(1)] = np.uint8((x1 >> s) & _UFF)
            out[at + np.uint64(2)] = np.uint8((x2 >> s) & _UFF)
            out[at + np.uint64(3)] = np.uint8((x3 >> s) & _UFF)
            out[at + np.uint64(4)] = np.uint8((x4 >> s) & _UFF)
            out[at + np.uint64(5)] = np.uint8((x5 >> s) & _UFF)
            out[at + np.uint64(6)] = np.uint8((x6 >> s) & _UFF)
            out[at + np.uint64(7)] = np.uint8((x7 >> s) & _UFF)
    for i in range(m, n):
        x = np.uint64(w[i])
        for j in range(k):
            out[j * n + i] = np.uint8((x >> np.uint64(8 * j)) & _UFF)


def warm_up() -> None:
    """Compile (or load from numba's cache) every encoder, on a few values."""
    v = np.arange(40, dtype=np.int64)
    out = np.empty(delta_bound(40), np.uint8)
    _delta(v, out)
    idx = (v % 3).astype(np.int32)
    _hybrid(idx, 2, np.empty(hybrid_bound(40, 2), np.uint8), 0)
    wide = v * 1_000_003                      # a range too wide for a table: hashed
    for x in (v, wide):
        _dict_hash(x, 16)
        _dict_hash(x.astype(np.uint32), 16)
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64, np.int64):
        _range(v.astype(dt))
    for dt in (np.uint8, np.uint16, np.int8, np.int16):
        _dict_hash(v.astype(dt), 1 << (8 * np.dtype(dt).itemsize))
    _split(v.view(np.uint64), 8, np.empty(320, np.uint8))
    _split(v.astype(np.uint32), 4, np.empty(160, np.uint8))
    _crc_combine(1, 2, 100, _CRC_ZEROS)


# -- columns ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """How one Arrow field is stored: Parquet physical type, annotations, numpy value dtype."""

    name: str
    physical: int
    nullable: bool
    dtype: np.dtype                  # the values as the encoders see them
    type_length: int = 0             # FIXED_LEN_BYTE_ARRAY
    converted: int | None = None
    logical: tuple | None = None     # ("int", bits, signed) or ("timestamp_ns_utc",)
    unsigned: bool = False           # statistics compare unsigned (UINT_*, binary)
    plain_dtype: np.dtype | None = None   # PLAIN's bytes (int32 for the narrow integers)


def by_schema(fn):
    """``fn(schema, *args)`` cached by the schema object itself (its identity) and ``args``
    (hashable): a ``pa.Schema`` hashes its fields each time, 18 us for ``mbo``'s, which an
    append paid several times a file. The schema is kept with its value, so its id is not
    reused while the entry lives; up to 256 entries, then the cache starts again."""
    kept: dict = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def cached(schema: pa.Schema, *args):
        key = (id(schema),) + args
        hit = kept.get(key)
        if hit is not None and hit[0] is schema:
            return hit[1]
        value = fn(schema, *args)
        with lock:
            if len(kept) >= 256:
                kept.clear()
            kept[key] = (schema, value)
        return value
    return cached


@by_schema
def columns_of(schema: pa.Schema) -> tuple:
    """:func:`column_of` of each field of ``schema``, in order."""
    return tuple(column_of(f) for f in schema)


@functools.lru_cache(maxsize=256)
def column_of(f: pa.Field) -> Column:
    """How ``f`` is stored (a TypeError for a type the writer does not store)."""
    t = f.type
    ints = {pa.uint8(): (INT32, UINT_8, 8, False, np.uint8),
            pa.uint16(): (INT32, UINT_16, 16, False, np.uint16),
            pa.uint32(): (INT32, UINT_32, 32, False, np.uint32),
            pa.uint64(): (INT64, UINT_64, 64, False, np.uint64),
            pa.int8(): (INT32, INT_8, 8, True, np.int8),
            pa.int16(): (INT32, INT_16, 16, True, np.int16),
            pa.int32(): (INT32, INT_32, 32, True, np.int32),
            pa.int64(): (INT64, INT_64, 64, True, np.int64)}
    if t in ints:
        phys, conv, bits, signed, dt = ints[t]
        return Column(f.name, phys, f.nullable, np.dtype(dt), converted=conv,
                      logical=("int", bits, signed), unsigned=not signed,
                      plain_dtype=np.dtype(np.int32 if phys == INT32 else np.int64))
    if t == pa.float64():
        return Column(f.name, DOUBLE, f.nullable, np.dtype(np.float64),
                      plain_dtype=np.dtype(np.float64))
    if pa.types.is_timestamp(t) and t.unit == "ns" and t.tz is not None:
        return Column(f.name, INT64, f.nullable, np.dtype(np.int64), logical=("timestamp_ns_utc",),
                      plain_dtype=np.dtype(np.int64))
    if pa.types.is_fixed_size_binary(t) and t.byte_width in (1, 2, 4, 8):
        dt = np.dtype(f"<u{t.byte_width}")
        return Column(f.name, FIXED_LEN_BYTE_ARRAY, f.nullable, dt, type_length=t.byte_width,
                      unsigned=True, plain_dtype=dt)
    raise TypeError(f"The Parquet writer does not store `{f.name}` of type {t}.")


def arrow_values(arr: pa.Array | pa.ChunkedArray,
                 col: Column) -> tuple[np.ndarray, np.ndarray | None]:
    """An Arrow column as (values in ``col.dtype``, validity or None when nothing is null); the
    values of null slots are 0."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if col.physical == FIXED_LEN_BYTE_ARRAY:
        k = col.type_length
        buf = arr.buffers()[1]
        b = np.frombuffer(buf, np.uint8)
        vals = b[arr.offset * k:(arr.offset + len(arr)) * k].view(col.dtype)
    else:
        vals = np.frombuffer(arr.buffers()[1], col.dtype)[arr.offset:arr.offset + len(arr)]
    if valid is not None:
        vals = np.where(valid, vals, 0).astype(col.dtype, copy=False)
    return vals, valid


# -- one column chunk -------------------------------------------------------------------------
_local = threading.local()


def _zstd(level: int) -> zstandard.ZstdCompressor:
    c = getattr(_local, "zstd", None)
    if c is None or _local.level != level:
        c = _local.zstd = zstandard.ZstdCompressor(level=level)
        _local.level = level
    return c


def _stat_bytes(col: Column, x) -> bytes:
    """A statistic's bytes: the value as PLAIN encodes it."""
    if col.physical in (INT32, INT64):
        return int(x).to_bytes(4 if col.physical == INT32 else 8, "little",
                               signed=not col.unsigned)
    if col.physical == DOUBLE:
        return struct.pack("<d", x)
    return np.asarray(x, col.dtype).tobytes()


@numba.njit(cache=True, nogil=True)
def _range(v):
    lo = v[0]
    hi = v[0]
    for i in range(1, v.shape[0]):        # min and max, not branches: LLVM vectorizes these
        x = v[i]
        lo = min(lo, x)
        hi = max(hi, x)
    return lo, hi


def _min_max(col: Column, v: np.ndarray):
    """(min, max) of ``v`` in the column's order (None, None when there is none), as values
    comparable in Python, and the count of NaN values for doubles."""
    if v.size == 0:
        return None, None, 0
    if col.physical == DOUBLE:
        isnan = np.isnan(v)                  # quiet and signalling (np.nanmin skips only quiet)
        nan = int(np.count_nonzero(isnan))
        if nan == v.size:
            return None, None, nan
        num = v[~isnan] if nan else v
        lo, hi = float(num.min()), float(num.max())
        return (-0.0 if lo == 0 else lo), (0.0 if hi == 0 else hi), nan
    if col.physical == FIXED_LEN_BYTE_ARRAY and col.type_length > 1:
        s = v.byteswap()                               # byte-wise order is big-endian order
        return s.min().byteswap(), s.max().byteswap(), 0
    lo, hi = _range(v)
    return int(lo), int(hi), 0


def _order_key(col: Column, x):
    if col.physical == FIXED_LEN_BYTE_ARRAY and col.type_length > 1:
        return int(np.asarray(x, col.dtype).byteswap())
    return x


def _stats_body(lo: bytes | None, hi: bytes | None, nulls: int, nan: int | None) -> bytes:
    """A Statistics struct's fields and stop byte: null_count (3), max_value (5), min_value
    (6), nan_count (9)."""
    parts = [b"\x36", _zz64(nulls)]                       # field 3, i64
    if hi is not None:                                     # fields 5 and 6, binary
        parts += (b"\x28", _uv(len(hi)), hi, b"\x18", _uv(len(lo)), lo)
    if nan is not None:                                    # field 9, i64
        parts += (b"\x36" if hi is not None else b"\x66", _zz64(nan))
    parts.append(b"\x00")
    return b"".join(parts)


def _page_header(kind: int, uncompressed: int, body, num_values: int, encoding: int,
                 stats: bytes | None) -> tuple[bytes, int]:
    """A PageHeader (fields 1-4: type, sizes, CRC-32 of the body as written; then the
    dictionary (7) or data page v1 (5) header), encoded directly: a page's header is the
    writer's most frequent Thrift struct. Returns it and the body's CRC-32."""
    crc = zlib.crc32(body)
    head = (b"\x15", _zz32(kind), b"\x15", _zz32(uncompressed), b"\x15", _zz32(len(body)),
            b"\x15", _zz32(crc - (crc >> 31 << 32)))
    if kind == DICTIONARY_PAGE:                           # field 7: num_values, PLAIN, stop
        return b"".join((*head, b"\x3c\x15", _zz32(num_values), b"\x15\x00\x00\x00")), crc
    # field 5: num_values, encoding, levels RLE and RLE, statistics (5), stop
    return b"".join((*head, b"\x1c\x15", _zz32(num_values), b"\x15", _zz32(encoding),
                     b"\x15\x06\x15\x06", b"" if stats is None else b"\x1c" + stats,
                     b"\x00\x00")), crc


@dataclass
class _Page:
    header: bytes
    body: bytes | memoryview
    rows: int
    first_row: int
    uncompressed: int
    lo: bytes | None = None          # statistics, encoded (None: no non-null value)
    hi: bytes | None = None
    keys: tuple | None = None        # (min, max) in the column's order, for the boundary order
    nulls: int = 0
    dictionary: bool = False
    crc: int = 0                     # the body's CRC-32


@dataclass
class _Chunk:
    """One column chunk, encoded; offsets relative to the chunk's start."""

    col: Column
    pages: list
    encodings: tuple
    codec: int
    rows: int
    stats: bytes                     # the Statistics struct's body
    size: int = 0
    uncompressed: int = 0

    def __post_init__(self):
        self.size = sum(len(p.header) + len(p.body) for p in self.pages)
        self.uncompressed = sum(len(p.header) + p.uncompressed for p in self.pages)


def _one_run(value: int, n: int, width_bytes: int) -> bytes:
    """The RLE/bit-packed hybrid of ``n`` copies of ``value``: one RLE run."""
    return _uv(n << 1) + value.to_bytes(width_bytes, "little")


def encode_chunk(col: Column, values: np.ndarray, valid: np.ndarray | None, encoding: str,
                 compress: bool, level: int, page_rows: int) -> _Chunk:
    """One column chunk of ``values`` (``col.dtype``; ``valid`` for a nullable column with nulls)
    in pages of ``page_rows`` rows: ``encoding`` (a name of :data:`ENCODINGS`; RLE_DICTIONARY
    falls back to PLAIN past :data:`DICT_LIMIT` values), zstd at ``level`` when ``compress``. A
    chunk of one value (a constant column, or none but nulls) is a one-entry dictionary and a
    single RLE run, not compressed, whatever the policy."""
    n = values.shape[0]
    if valid is not None and valid.all():
        valid = None
    nulls_only = valid is not None and not valid.any()
    nonnull = values[:0] if nulls_only else values if valid is None else values[valid]
    lo, hi, nan = _min_max(col, nonnull)
    nulls = n - nonnull.size
    nan = nan if col.physical == DOUBLE else None
    enc = ENCODINGS[encoding]
    constant = hi is not None and lo == hi and nan in (None, 0)
    if constant and col.physical == DOUBLE:           # 0.0 and -0.0 are equal, not the same
        bits = nonnull.view(np.int64)
        constant = bool((bits == bits[0]).all())
    if nonnull.size == 0:
        enc, compress = PLAIN, False
    elif constant:
        enc, compress = RLE_DICTIONARY, False
    if enc == DELTA_BINARY_PACKED and col.physical != INT64:
        enc = PLAIN
    if enc == BYTE_STREAM_SPLIT and col.physical == FIXED_LEN_BYTE_ARRAY:
        enc = PLAIN                                   # DuckDB 1.4 reads it for numbers only
    zs = _zstd(level) if compress else None
    lo_b = None if hi is None else _stat_bytes(col, lo)
    hi_b = None if hi is None else _stat_bytes(col, hi)
    stats = _stats_body(lo_b, hi_b, nulls, nan)
    pages: list[_Page] = []
    dict_idx = None
    width = 1
    if enc == RLE_DICTIONARY:
        if constant:
            keys, k = nonnull[:1], 1
        elif col.dtype.itemsize <= 2:
            keys, dict_idx, k = _dict_hash(nonnull, 1 << (8 * col.dtype.itemsize))
        else:
            keys, dict_idx, k = _dict_hash(
                nonnull.view(np.int64 if col.dtype.itemsize == 8 else np.uint32), DICT_LIMIT)
            keys = keys.view(col.dtype)
        if k < 0:
            enc = PLAIN
        else:
            raw = keys.astype(col.plain_dtype, copy=False).tobytes()
            body = zs.compress(raw) if zs else raw
            head, crc = _page_header(DICTIONARY_PAGE, len(raw), body, k, PLAIN, None)
            pages.append(_Page(head, body, 0, 0, len(raw), dictionary=True, crc=crc))
            width = max(1, _width(k - 1))
    pos = None if valid is None or nulls_only else np.concatenate([[0], np.cumsum(valid)])
    single = n <= page_rows
    for start in range(0, n, page_rows):
        stop = min(start + page_rows, n)
        if pos is not None:
            a, b = int(pos[start]), int(pos[stop])
        else:
            a, b = (0, 0) if nulls_only else (start, stop)
        parts = []
        if col.nullable:                              # definition levels, length first
            if valid is None or a == b:
                lv = _one_run(int(a != b), stop - start, 1)
            else:
                buf = np.empty(hybrid_bound(stop - start, 1), np.uint8)
                lv = buf[:_hybrid(valid[start:stop].astype(np.int32), 1, buf, 0)].tobytes()
            parts.append(len(lv).to_bytes(4, "little") + lv)
        pv = nonnull[a:b]                             # (none, for a page of nulls only)
        if enc == RLE_DICTIONARY and constant:
            parts.append(bytes([width]) + (_one_run(0, b - a, 1) if b > a else b""))
        elif enc == RLE_DICTIONARY:
            ix = dict_idx[a:b]
            buf = np.empty(hybrid_bound(b - a, width) + 1, np.uint8)
            buf[0] = width
            parts.append(buf[:_hybrid(ix, width, buf, 1)])
        elif enc == DELTA_BINARY_PACKED:
            buf = np.empty(delta_bound(b - a), np.uint8)
            parts.append(buf[:_delta(np.ascontiguousarray(pv).view(np.int64), buf)])
        elif enc == BYTE_STREAM_SPLIT:
            raw = np.ascontiguousarray(pv.astype(col.plain_dtype, copy=False))
            k = raw.dtype.itemsize
            buf = np.empty(raw.nbytes, np.uint8)
            _split(raw.view(f"u{k}"), k, buf)
            parts.append(buf)
        else:
            plain = pv.astype(col.plain_dtype, copy=False)
            parts.append(np.ascontiguousarray(plain).view(np.uint8))
        raw = parts[0] if len(parts) == 1 else b"".join(
            p if isinstance(p, bytes) else p.tobytes() for p in parts)
        body = zs.compress(raw) if zs else (raw if isinstance(raw, bytes) else raw.tobytes())
        usize = len(raw) if isinstance(raw, bytes) else raw.size
        if single:
            plo, phi, pst = lo_b, hi_b, stats
            pkeys = None if hi is None else (_order_key(col, lo), _order_key(col, hi))
        else:
            qlo, qhi, qnan = _min_max(col, pv)
            plo = None if qhi is None else _stat_bytes(col, qlo)
            phi = None if qhi is None else _stat_bytes(col, qhi)
            pkeys = None if qhi is None else (_order_key(col, qlo), _order_key(col, qhi))
            pst = _stats_body(plo, phi, (stop - start) - (b - a),
                              qnan if col.physical == DOUBLE else None)
        head, crc = _page_header(DATA_PAGE, usize, body, stop - start, enc, pst)
        pages.append(_Page(head, body, stop - start, start, usize, plo, phi, pkeys,
                           (stop - start) - (b - a), crc=crc))
    encs = (PLAIN, RLE_DICTIONARY) if enc == RLE_DICTIONARY else (enc,)
    if col.nullable:
        encs += (RLE,)
    return _Chunk(col, pages, encs, ZSTD if compress else UNCOMPRESSED, n, stats)


# -- files ------------------------------------------------------------------------------------
def _column_index(pages: list) -> bytes:
    """A ColumnIndex: null_pages (1), min_values (2), max_values (3), boundary_order (4),
    null_counts (5)."""
    n = len(pages)
    if n == 1:                                 # a chunk of one data page: the store's files'
        p = pages[0]
        lo, hi = p.lo or b"", p.hi or b""
        return b"".join((b"\x19\x11", b"\x01" if p.hi is None else b"\x02", b"\x19\x18",
                         _uv(len(lo)), lo, b"\x19\x18", _uv(len(hi)), hi,
                         b"\x15\x02\x19\x16", _zz64(p.nulls), b"\x00"))
    b = bytearray(b"\x19")
    b += _list_header(n, _T_TRUE)
    b += bytes(1 if p.hi is None else 2 for p in pages)
    for which in ("lo", "hi"):
        b.append(0x19)
        b += _list_header(n, _T_BIN)
        for p in pages:
            v = getattr(p, which) or b""
            b += _uv(len(v))
            b += v
    keys = [p.keys for p in pages if p.keys is not None]
    asc = all(x[0] <= y[0] and x[1] <= y[1] for x, y in zip(keys, keys[1:]))
    b.append(0x15)
    b += _zz32(ASCENDING if asc else UNORDERED)
    b.append(0x19)
    b += _list_header(n, _T_I64)
    for p in pages:
        b += _zz64(p.nulls)
    b.append(0)
    return bytes(b)


def _offset_index(pages: list) -> bytes:
    """An OffsetIndex: page_locations (1), each (offset, compressed size with its header, first
    row)."""
    if len(pages) == 1:
        p, o = pages[0]
        return b"".join((b"\x19\x1c\x16", _zz64(o), b"\x15", _zz32(len(p.header) + len(p.body)),
                         b"\x16", _zz64(p.first_row), b"\x00\x00"))
    b = bytearray(b"\x19")
    b += _list_header(len(pages), _T_STRUCT)
    for p, o in pages:
        b.append(0x16)
        b += _zz64(o)
        b.append(0x15)
        b += _zz32(len(p.header) + len(p.body))
        b.append(0x16)
        b += _zz64(p.first_row)
        b.append(0)
    b.append(0)
    return bytes(b)


def _column_chunk(prefix: bytes, ch: _Chunk, start: int, locs: list, oi: tuple,
                  ci: tuple | None) -> bytes:
    """A ColumnChunk list element: ``prefix`` (file_offset and ColumnMetaData fields 1-4), then
    num_values (5), the sizes (6, 7), data_page_offset (9), dictionary_page_offset (11),
    statistics (12); then the offset index (4, 5) and column index (6, 7) positions."""
    dictionary = ch.pages[0].dictionary
    parts = [prefix, b"\x16", _zz64(ch.rows), b"\x16", _zz64(ch.uncompressed), b"\x16",
             _zz64(ch.size), b"\x26", _zz64(locs[1] if dictionary else locs[0])]   # 5-7, 9
    if dictionary:
        parts += (b"\x26", _zz64(start), b"\x1c")      # field 11, then 12 (a struct)
    else:
        parts.append(b"\x3c")                           # field 12
    parts += (ch.stats, b"\x00\x16", _zz64(oi[0]), b"\x15", _zz32(oi[1]))  # 4, 5 (after 3)
    if ci is not None:
        parts += (b"\x16", _zz64(ci[0]), b"\x15", _zz32(ci[1]))
    parts.append(b"\x00")
    return b"".join(parts)


@functools.lru_cache(maxsize=64)
def _footer_ends(schema: pa.Schema) -> tuple[bytes, bytes]:
    """The FileMetaData's fields that depend on the schema only: its start (version 2, the
    schema elements) and its end after the row groups (key-value metadata, created_by, column
    orders, the stop byte)."""
    columns = [column_of(f) for f in schema]
    t = _Thrift()
    t.i32(1, 2)
    t.list(2, _T_STRUCT, len(columns) + 1)
    t.begin().binary(4, b"schema").i32(5, len(columns)).end()
    for c in columns:
        t.begin().i32(1, c.physical)
        if c.type_length:
            t.i32(2, c.type_length)
        t.i32(3, OPTIONAL if c.nullable else REQUIRED).binary(4, c.name.encode())
        if c.converted is not None:
            t.i32(6, c.converted)
        if c.logical is not None:
            t.begin(10)
            if c.logical[0] == "int":
                t.begin(10).i8(1, c.logical[1]).bool(2, c.logical[2]).end()
            else:
                t.begin(8).bool(1, True).begin(2).begin(3).end().end().end()
            t.end()
        t.end()
    head = bytes(t.b)
    t = _Thrift()
    t.last = 4                                   # after the row groups (field 4)
    md = _arrow_metadata(schema)
    t.list(5, _T_STRUCT, len(md))
    for k, v in md:
        t.begin().binary(1, k).binary(2, v).end()
    t.binary(6, CREATED_BY.encode())
    t.list(7, _T_STRUCT, len(columns))
    for _ in columns:
        t.begin().begin(1).end().end()
    t.b.append(0)
    return head, bytes(t.b)


@functools.lru_cache(maxsize=64)
def _arrow_metadata(schema: pa.Schema) -> tuple:
    """The key-value metadata pyarrow writes for ``schema`` (``ARROW:schema`` and the schema's
    own), so pyarrow reads back the exact Arrow types."""
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    buf.seek(0)
    md = pq.read_metadata(buf).metadata or {}
    return tuple(sorted(md.items()))


def _gf2_times(m, v: int) -> int:
    s, i = 0, 0
    while v:
        if v & 1:
            s ^= int(m[i])
        v >>= 1
        i += 1
    return s


def _crc_zeros() -> np.ndarray:
    """``[k]``: the GF(2) matrix (32 columns) that takes a CRC-32 (reflected, polynomial
    0xEDB88320) over 2**k more zero bytes, for k below 64."""
    m = [0xEDB88320] + [1 << (n - 1) for n in range(1, 32)]       # one zero bit
    out = []
    for k in range(3 + 64):                                       # 8 bits, then doubling
        if k >= 3:
            out.append(m)
        m = [_gf2_times(m, m[n]) for n in range(32)]
    return np.array(out, np.uint32)


_CRC_ZEROS = _crc_zeros()


@numba.njit(cache=True, nogil=True)
def _crc_combine(crc1, crc2, n, zeros):
    """The CRC-32 of ``A + B`` from ``crc1`` of A, ``crc2`` of B and B's length ``n``: A's CRC
    taken over n zero bytes (the matrices ``zeros`` of :func:`_crc_zeros`), plus B's (CRC-32 is
    linear over GF(2); this is what zlib's crc32_combine computes)."""
    k = 0
    while n:
        if n & 1:
            s = 0
            v = crc1
            i = 0
            while v:
                if v & 1:
                    s ^= zeros[k, i]
                v >>= 1
                i += 1
            crc1 = s
        n >>= 1
        k += 1
    return crc1 ^ crc2


FLUSH_BYTES = 4 << 20           # a writer's queued pages written out past this many bytes
_IOV_MAX = 1024


def _writev(fd: int, bufs: list) -> None:
    """Write ``bufs`` (bytes-like) to ``fd`` in order, whole: ``writev`` calls of up to
    ``IOV_MAX`` buffers, what a short write left resent."""
    i = 0
    while i < len(bufs):
        n = os.writev(fd, bufs[i:i + _IOV_MAX])
        while i < len(bufs) and n >= len(bufs[i]):
            n -= len(bufs[i])
            i += 1
        if n:
            bufs[i] = memoryview(bufs[i])[n:]


@dataclass
class FileWriter:
    """A Parquet file of ``schema`` written row group by row group to the open binary file
    ``f``. ``policy`` maps a column name to (encoding name, compress); ``sorting`` names the
    columns the rows are sorted by (ascending). Keeps the CRC-32 of everything written."""

    f: object
    schema: pa.Schema
    policy: dict
    level: int = 3
    page_rows: int = 1 << 20
    sorting: tuple = ()
    columns: list = field(init=False)
    groups: list = field(init=False, default_factory=list)
    offset: int = field(init=False, default=0)
    crc: int = field(init=False, default=0)
    _prefixes: dict = field(init=False, default_factory=dict)
    _out: list = field(init=False, default_factory=list)
    _out_bytes: int = field(init=False, default=0)

    def __post_init__(self):
        self.columns = [column_of(f) for f in self.schema]
        self._write(MAGIC)

    def _write(self, b, crc: int | None = None) -> None:
        """Queue ``b`` (a page's header or body, bytes; ``crc``: its CRC-32, when known):
        written by :meth:`_flush`, in one ``writev`` for many pages."""
        self._out.append(b)
        self.crc = zlib.crc32(b, self.crc) if crc is None else _crc_combine(
            self.crc, crc, len(b), _CRC_ZEROS)
        self.offset += len(b)
        self._out_bytes += len(b)
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        bufs, self._out, self._out_bytes = self._out, [], 0
        try:
            fd = self.f.fileno()
        except (AttributeError, OSError):        # io.UnsupportedOperation: a BytesIO
            for b in bufs:
                self.f.write(b)
            return
        self.f.flush()
        _writev(fd, bufs)

    def encode(self, table: pa.Table | dict) -> list[_Chunk]:
        """A row group's chunks (thread-safe; nothing written). ``table``: a pyarrow Table or
        ``{name: (values, valid)}``."""
        out = []
        for col in self.columns:
            if isinstance(table, dict):
                values, valid = table[col.name]
            else:
                values, valid = arrow_values(table.column(col.name), col)
            enc, comp = self.policy.get(col.name, ("RLE_DICTIONARY", True))
            out.append(encode_chunk(col, values, valid, enc, comp, self.level, self.page_rows))
        return out

    def write(self, chunks: list[_Chunk]) -> None:
        """Append an encoded row group (one of no rows is left out)."""
        if not chunks or not chunks[0].rows:
            return
        placed = []
        for ch in chunks:
            start = self.offset
            locs = []
            for p in ch.pages:
                locs.append(self.offset)
                self._write(p.header)
                self._write(p.body, p.crc)
            placed.append((start, locs))
        self.groups.append((chunks, placed))

    def close(self) -> int:
        """Write the page index and the footer; returns the file's size."""
        ci_at, oi_at = [], []
        out = bytearray()
        for chunks, placed in self.groups:             # column indexes, then offset indexes
            ci_at.append([])
            for ch in chunks:
                data = [p for p in ch.pages if not p.dictionary]
                if any(p.hi is None and p.nulls < p.rows for p in data):
                    ci_at[-1].append(None)             # a page of NaN only: Parquet wants no
                    continue                           # column index for its chunk
                b = _column_index(data)
                ci_at[-1].append((self.offset + len(out), len(b)))
                out += b
        for chunks, placed in self.groups:
            oi_at.append([])
            for ch, (start, locs) in zip(chunks, placed):
                b = _offset_index([(p, o) for p, o in zip(ch.pages, locs) if not p.dictionary])
                oi_at[-1].append((self.offset + len(out), len(b)))
                out += b
        self._write(bytes(out))
        self._write(self._footer(ci_at, oi_at))
        self._flush()
        return self.offset

    def _prefix(self, ch: _Chunk) -> bytes:
        """A ColumnChunk's constant start: file_offset (2) 0, then in its ColumnMetaData (3):
        type, encodings, path and codec (fields 1-4)."""
        key = (ch.col.name, ch.encodings, ch.codec)
        pre = self._prefixes.get(key)
        if pre is None:
            t = _Thrift()
            t.i64(2, 0).begin(3).i32(1, ch.col.physical).list_i32(2, list(ch.encodings))
            t.list_bin(3, [ch.col.name.encode()]).i32(4, ch.codec)
            pre = self._prefixes[key] = bytes(t.b)
        return pre

    def _footer(self, ci_at, oi_at) -> bytes:
        head, tail = _footer_ends(self.schema)
        t = _Thrift()
        t.raw(head, 2)
        t.i64(3, sum(chunks[0].rows for chunks, _ in self.groups))
        t.list(4, _T_STRUCT, len(self.groups))
        names = [c.name for c in self.columns]
        for gi, (chunks, placed) in enumerate(self.groups):
            t.begin()
            t.list(1, _T_STRUCT, len(chunks))
            total = comp = 0
            for ci, (ch, (start, locs)) in enumerate(zip(chunks, placed)):
                t.b += _column_chunk(self._prefix(ch), ch, start, locs, oi_at[gi][ci],
                                     ci_at[gi][ci])
                total += ch.uncompressed
                comp += ch.size
            t.i64(2, total).i64(3, chunks[0].rows)
            if self.sorting:
                t.list(4, _T_STRUCT, len(self.sorting))
                for name in self.sorting:
                    t.begin().i32(1, names.index(name)).bool(2, False).bool(3, False).end()
            t.i64(5, placed[0][0]).i64(6, comp).i16(7, gi)
            t.end()
        t.b += tail
        body = bytes(t.b)
        return body + len(body).to_bytes(4, "little") + MAGIC
