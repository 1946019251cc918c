"""A slot's whole Parquet file in one compiled call: the append's writer.

:class:`tickstore.parquet.FileWriter` encodes a column chunk with numba but frames it in Python:
statistics, page headers, the page index and the footer, about 100 us of Python a chunk, under
the GIL. An append of the benchmark day (132 one-minute files, 8,448 column chunks) spent about
0.95 s of each 1.5 s in that Python, so its two threads ran 1.28x faster than one. Here one
``nogil`` numba call takes a file's rows from the append's columns column by column (scattered
to the places a sort gives them, or gathered by its indices: :func:`_take`), and writes the
whole file image into a buffer: the pages (encoded as the Python writer encodes them,
compressed by libzstd called from the loop), their CRC-32s, the column and offset indexes and
the footer, the same bytes :class:`FileWriter` writes for the same rows, policy and zstd build.
The caller writes the image with one system call.

libzstd and a CRC-32 are the system's (``libzstd.so.1``; libdeflate's CRC-32 where it is installed,
else zlib's), loaded into the process for numba's code to call by name, which keeps the compiled
code cacheable on disk. :data:`AVAILABLE` is False without them, or for a schema with ``float64``
columns (their NaN and signed-zero statistics stay with the Python writer); the store then uses
:class:`FileWriter`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import zlib

import numba
import numpy as np
import pyarrow as pa
from llvmlite import binding as _llvm
from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic

from tickstore import parquet as pq_
from tickstore import reader
from tickstore.parquet import (BYTE_STREAM_SPLIT, DELTA_BINARY_PACKED, DICT_LIMIT, DOUBLE,
                               FIXED_LEN_BYTE_ARRAY, INT64, PLAIN, RLE, RLE_DICTIONARY,
                               UNCOMPRESSED, ZSTD, _at, _delta, _dict_hash,
                               _footer_ends, _hybrid, _split, _uleb, _width, _zigzag)


def _crc_function() -> int | None:
    """The address of the fastest CRC-32 (zlib's polynomial) the system has: libdeflate's
    ``libdeflate_crc32`` (PCLMULQDQ: 12.6 GB/s on this VM) where it is installed, else zlib's
    ``crc32`` (2.1 GB/s). Both compute the same function; both take
    ``(crc, buffer, length)`` in the registers compiled code passes them in (zlib's 32-bit
    length and libdeflate's 32-bit result read as 64 bits and masked: see :func:`_crc32_more`)."""
    for lib, sym in (("deflate", "libdeflate_crc32"), ("z", "crc32")):
        name = ctypes.util.find_library(lib)
        if name is None:
            continue
        try:
            fn = getattr(ctypes.CDLL(name), sym)
        except (OSError, AttributeError):
            continue
        return ctypes.cast(fn, ctypes.c_void_p).value
    return None


def _load() -> ctypes.CDLL | None:
    """libzstd, with it and a CRC-32 loaded for numba's code; None when either is missing. The
    CRC-32 is called by the name ``tickpipe_crc32``, whichever library gives it."""
    zstd = ctypes.util.find_library("zstd")
    crc = _crc_function()
    if zstd is None or crc is None:
        return None
    try:
        lib = ctypes.CDLL(zstd)
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_createDCtx.restype = ctypes.c_void_p
        _llvm.load_library_permanently(zstd)
    except (OSError, AttributeError):
        return None
    _llvm.add_symbol("tickpipe_crc32", crc)
    return lib


_LIB = _load()
AVAILABLE = _LIB is not None


# -- the C calls (by symbol name: no address in the compiled code) ------------------------------
@_intrinsic
def _zstd_into(typingctx, cctx, dst, dpos, cap, src, spos, n, level):
    """``ZSTD_compressCCtx(cctx, dst + dpos, cap, src + spos, n, level)``: the frame's size, or
    a zstd error code (a size_t above -120, so negative here)."""
    sig = _types.int64(_types.int64, dst, _types.int64, _types.int64, src, _types.int64,
                       _types.int64, _types.int64)

    def codegen(context, builder, signature, args):
        i64, i8p = _ir.IntType(64), _ir.IntType(8).as_pointer()
        fnty = _ir.FunctionType(i64, [i8p, i8p, i64, i8p, i64, _ir.IntType(32)])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, "ZSTD_compressCCtx")
        c, d, dp, cp, s, sp, nn, lv = args
        return builder.call(fn, [builder.inttoptr(c, i8p),
                                 _at(context, builder, signature.args[1], d, dp), cp,
                                 _at(context, builder, signature.args[4], s, sp), nn,
                                 builder.trunc(lv, _ir.IntType(32))])
    return sig, codegen


@_intrinsic
def _zstd_from(typingctx, dctx, dst, dpos, cap, src, spos, n):
    """``ZSTD_decompressDCtx(dctx, dst + dpos, cap, src + spos, n)``: the bytes written, or a
    zstd error code (negative here, as :func:`_zstd_into`'s)."""
    sig = _types.int64(_types.int64, dst, _types.int64, _types.int64, src, _types.int64,
                       _types.int64)

    def codegen(context, builder, signature, args):
        i64, i8p = _ir.IntType(64), _ir.IntType(8).as_pointer()
        fnty = _ir.FunctionType(i64, [i8p, i8p, i64, i8p, i64])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, "ZSTD_decompressDCtx")
        c, d, dp, cp, s, sp, nn = args
        return builder.call(fn, [builder.inttoptr(c, i8p),
                                 _at(context, builder, signature.args[1], d, dp), cp,
                                 _at(context, builder, signature.args[4], s, sp), nn])
    return sig, codegen


@numba.njit(cache=True, nogil=True)
def decompress_pages(dctx, src, offs, comps, dst, ats, sizes):
    """Each zstd page ``src[offs[i]:offs[i] + comps[i]]`` into ``dst[ats[i]:ats[i] + sizes[i]]``
    (the reader's pages, in one call): -1, or the first page that is not a zstd frame of
    exactly that size."""
    for i in range(offs.size):
        if offs[i] + comps[i] > src.size or ats[i] + sizes[i] > dst.size:
            return i
        got = _zstd_from(dctx, dst, ats[i], sizes[i], src, offs[i], comps[i])
        if got != sizes[i]:
            return i
    return -1


def _context(name: str, create) -> int:
    """This thread's libzstd context ``name``, made by ``create`` on first use."""
    c = getattr(_local, name, None)
    if c is None:
        c = create()
        if not c:
            raise MemoryError(f"libzstd could not make a {name}")
        setattr(_local, name, c)
    return c


def dctx() -> int:
    """This thread's zstd decompression context (libzstd's, for :func:`decompress_pages`)."""
    return _context("dctx", _LIB.ZSTD_createDCtx)


@_intrinsic
def _crc32_more(typingctx, crc, buf, pos, n):
    """``crc32(crc, buf + pos, n)`` (``n`` below 2**32) by :func:`_crc_function`'s function.
    Declared as 64 bits in and out: zlib reads a 64-bit CRC and a 32-bit length, libdeflate a
    32-bit CRC and a 64-bit length, and the result's upper half is masked off."""
    sig = _types.int64(_types.int64, buf, _types.int64, _types.int64)

    def codegen(context, builder, signature, args):
        i64 = _ir.IntType(64)
        fnty = _ir.FunctionType(i64, [i64, _ir.IntType(8).as_pointer(), i64])
        fn = _cgutils.get_or_insert_function(builder.module, fnty, "tickpipe_crc32")
        c, b, p, nn = args
        r = builder.call(fn, [c, _at(context, builder, signature.args[1], b, p), nn])
        return builder.and_(r, _ir.Constant(i64, 0xFFFFFFFF))
    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _crc32(buf, pos, n):
    """The CRC-32 of ``buf[pos:pos + n]``."""
    return _crc32_from(0, buf, pos, n)


@numba.njit(cache=True, nogil=True)
def _crc32_from(crc, buf, pos, n):
    """``crc`` continued over ``buf[pos:pos + n]``, a GiB at a time."""
    while n > 0:
        m = min(n, 1 << 30)
        crc = _crc32_more(crc, buf, pos, m)
        pos += m
        n -= m
    return crc


@numba.njit(cache=True, nogil=True)
def first_bad_page(buf, offs, sizes, crcs):
    """The first page ``i`` whose bytes ``buf[offs[i]:offs[i] + sizes[i]]`` do not have the
    CRC-32 ``crcs[i]`` (below 0: none written), or -1 (the reader's check)."""
    for i in range(offs.size):
        if crcs[i] >= 0 and _crc32(buf, offs[i], sizes[i]) != crcs[i]:
            return i
    return -1


NO_ROOM, NO_ZSTD = -1, -2        # what a page, a chunk or a file call returns for a failure

# -- the columns' descriptions (a row of int64 each) -------------------------------------------
K_WIDTH, K_PHYS, K_SIGNED, K_NULLABLE, K_ENC, K_COMP, K_NULLS_ONLY, K_PLAIN, K_FLBA = range(9)
K_FIELDS = 9


@_intrinsic
def _bytes_at(typingctx, addr):
    """The address ``addr`` as a pointer to bytes (for ``numba.carray``)."""
    sig = _types.CPointer(_types.uint8)(_types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], _ir.IntType(8).as_pointer())
    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _magic(out, p):
    for i, b in enumerate((0x50, 0x41, 0x52, 0x31)):          # "PAR1"
        out[p + i] = b
    return p + 4


@numba.njit(cache=True, nogil=True)
def _zz(out, p, v):
    return _uleb(out, p, _zigzag(v))


@_intrinsic
def _memcpy(typingctx, dst, dpos, src, spos, n):
    """``dst[dpos:dpos + n] = src[spos:spos + n]`` by ``llvm.memcpy`` (a loop of byte stores
    compiled alone ran at 1 GB/s: LLVM cannot rule out that the two overlap)."""
    sig = _types.void(dst, _types.int64, src, _types.int64, _types.int64)

    def codegen(context, builder, signature, args):
        d, dp, s, sp, nn = args
        _cgutils.raw_memcpy(builder, _at(context, builder, signature.args[0], d, dp),
                            _at(context, builder, signature.args[2], s, sp), nn, 1)
        return context.get_dummy_value()
    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _put(out, p, src, a, n):
    """``src[a:a + n]`` (bytes, not overlapping ``out``) at ``p`` of ``out``."""
    if n > 0:
        _memcpy(out, p, src, a, n)
    return p + n


@numba.njit(cache=True, nogil=True)
def _le(out, p, x, k):
    """The ``k`` low bytes of ``x``, little-endian."""
    x = np.uint64(x)
    for b in range(k):
        out[p + b] = np.uint8((x >> np.uint64(8 * b)) & np.uint64(0xFF))
    return p + k


@numba.njit(cache=True, nogil=True)
def _wide(x, width, signed):
    """``x`` (the low ``width`` bytes of a value) as the int64 it stands for."""
    x = np.uint64(x)
    if signed and width < 8:
        sign = np.uint64(1) << np.uint64(8 * width - 1)
        return np.int64(x ^ sign) - np.int64(sign)
    return np.int64(x)


@numba.njit(cache=True, nogil=True)
def _plain(v, n, width, signed, k, out, p, wide):
    """``v[:n]`` as PLAIN writes values of ``k`` bytes (the narrow integers widened to INT32,
    in ``wide``, sign-extended when signed) at ``p``. (Copied as bytes: LLVM makes the loop a
    memcpy, where storing a value's bytes one by one took 8 ns a value.)"""
    if k == width:
        return _put(out, p, v[:n].view(np.uint8), 0, n * k)
    w = wide[:n]
    if signed and width == 1:
        for i in range(n):
            w[i] = np.uint32(np.int32(np.int8(v[i])))
    elif signed:
        for i in range(n):
            w[i] = np.uint32(np.int32(np.int16(v[i])))
    else:
        for i in range(n):
            w[i] = v[i]
    return _put(out, p, w.view(np.uint8), 0, n * 4)


_M8 = np.uint64(0x00FF00FF00FF00FF)
_M16 = np.uint64(0x0000FFFF0000FFFF)


@numba.njit(cache=True, nogil=True)
def _swap(x, shift):
    """The bytes of ``x`` reversed, shifted down by ``shift`` bits (64 - 8 * width: the
    big-endian value of a fixed-size binary), in shifts and masks that LLVM vectorizes."""
    x = np.uint64(x)
    x = ((x & _M8) << np.uint64(8)) | ((x >> np.uint64(8)) & _M8)
    x = ((x & _M16) << np.uint64(16)) | ((x >> np.uint64(16)) & _M16)
    x = (x << np.uint64(32)) | (x >> np.uint64(32))
    return x >> np.uint64(shift)


@numba.njit(cache=True, nogil=True)
def _min_max(v, n, width, signed, flba):
    """(min, max) of ``v[:n]`` in the column's order (Parquet's: signed integers as signed,
    fixed-size binary byte by byte), as the values' bits. Each loop is one LLVM vectorizes:
    over the values, or their keys (the sign bit flipped; the bytes reversed)."""
    v0 = v[0]
    diff = v0 ^ v0
    for i in range(1, n):
        diff |= v[i] ^ v0
    if diff == 0:                                   # one value (the common case of flags)
        return np.uint64(v0), np.uint64(v0)
    if flba and width > 1:
        shift = 64 - 8 * width
        klo = _swap(v0, shift)
        khi = klo
        for i in range(1, n):
            k = _swap(v[i], shift)
            klo = min(klo, k)
            khi = max(khi, k)
        return _swap(klo << np.uint64(shift), 0), _swap(khi << np.uint64(shift), 0)
    if signed:
        sign = np.uint64(1) << np.uint64(8 * width - 1)
        klo = np.uint64(v0) ^ sign
        khi = klo
        for i in range(1, n):
            k = np.uint64(v[i]) ^ sign
            klo = min(klo, k)
            khi = max(khi, k)
        return klo ^ sign, khi ^ sign
    lo = v0
    hi = v0
    for i in range(1, n):
        x = v[i]
        lo = min(lo, x)
        hi = max(hi, x)
    return np.uint64(lo), np.uint64(hi)


@numba.njit(cache=True, nogil=True)
def _stat(out, p, x, width, signed, k):
    """A statistic: its length and the value as PLAIN writes it."""
    p = _uleb(out, p, k)
    return _le(out, p, _wide(x, width, signed), k)


@numba.njit(cache=True, nogil=True)
def _stats(out, p, nulls, has, lo, hi, width, signed, k):
    """A Statistics struct's fields and stop byte: null_count (3), max (5), min (6)."""
    out[p] = 0x36
    p = _zz(out, p + 1, nulls)
    if has:
        out[p] = 0x28
        p = _stat(out, p + 1, hi, width, signed, k)
        out[p] = 0x18
        p = _stat(out, p + 1, lo, width, signed, k)
    out[p] = 0
    return p + 1


@numba.njit(cache=True, nogil=True)
def _field32(out, p, v):
    out[p] = 0x15
    return _zz(out, p + 1, v)


@numba.njit(cache=True, nogil=True)
def _crc_signed(c):
    return c - ((c >> 31) << 32)


@numba.njit(cache=True, nogil=True)
def _page(out, p, raw, usize, body_buf, compress, cctx, level, dictionary, num_values, enc,
          stats_buf, stats_len):
    """A page at ``p``: its header, then its body (``raw[:usize]``, zstd-compressed into
    ``body_buf`` when ``compress``); returns the end (:data:`NO_ROOM` when ``out`` has no
    room, :data:`NO_ZSTD` when zstd fails) and the body's size."""
    if compress:
        blen = _zstd_into(cctx, body_buf, 0, body_buf.size, raw, 0, usize, level)
        if blen < 0:
            return NO_ZSTD, 0
        body = body_buf
    else:
        blen = usize
        body = raw
    if p + blen + 64 + stats_len > out.size:
        return NO_ROOM, 0
    crc = _crc32(body, 0, blen)
    p = _field32(out, p, 2 if dictionary else 0)
    p = _field32(out, p, usize)
    p = _field32(out, p, blen)
    p = _field32(out, p, _crc_signed(crc))
    if dictionary:                              # field 7: num_values, PLAIN, stop
        out[p] = 0x3c
        p = _field32(out, p + 1, num_values)
        out[p] = 0x15
        out[p + 1] = 0
        out[p + 2] = 0
        out[p + 3] = 0
        p += 4
    else:           # field 5: num_values, encoding, levels RLE and RLE, statistics, stop
        out[p] = 0x1c
        p = _field32(out, p + 1, num_values)
        p = _field32(out, p, enc)
        out[p] = 0x15
        out[p + 1] = 0x06
        out[p + 2] = 0x15
        out[p + 3] = 0x06
        out[p + 4] = 0x1c
        p = _put(out, p + 5, stats_buf, 0, stats_len)
        out[p] = 0
        out[p + 1] = 0
        p += 2
    return _put(out, p, body, 0, blen), blen


@numba.njit(cache=True, nogil=True)
def _one_run(out, p, value, n):
    """The hybrid of ``n`` copies of the 0/1 ``value``: one RLE run of 1-byte values."""
    p = _uleb(out, p, np.uint64(n) << np.uint64(1))
    out[p] = value
    return p + 1


# the chunk table: a row per column chunk, in the file's order (row groups in turn)
C_START, C_DATA, C_DATA_SIZE, C_SIZE, C_USIZE, C_ROWS, C_ENC, C_CODEC, C_NULLS, C_HAS, C_LO, \
    C_HI = range(12)
C_FIELDS = 12


@numba.njit(cache=True, nogil=True)
def _dictionary(v, width, signed, k, dict_limit, raw, wide):
    """The dictionary of ``v`` in first-seen order, as :func:`tickstore.parquet.encode_chunk`
    makes it: each value's index, the count (-1: more than ``dict_limit``), and the
    dictionary page's raw bytes, written into ``raw`` (their length). (A return a branch:
    numba types each branch's keys apart.)"""
    if width <= 2:
        keys, ix, nk = _dict_hash(v, 1 << (8 * width))
        return ix, nk, _plain(keys, nk, width, signed, k, raw, 0, wide)
    if width == 8:
        keys8, ix, nk = _dict_hash(v.view(np.int64), dict_limit)
        return ix, nk, _plain(keys8, max(nk, 0), width, signed, k, raw, 0, wide)
    keys4, ix, nk = _dict_hash(v.view(np.uint32), dict_limit)
    return ix, nk, _plain(keys4, max(nk, 0), width, signed, k, raw, 0, wide)


@numba.njit(cache=True, nogil=True)
def _inverse(idx, a, total, inv):
    """Where each of the source rows ``base`` to ``base + total - 1`` goes in the file of the
    rows ``idx[a:a + total]``, into ``inv``; returns ``base``, or -1 when those rows are not
    such a range each once (they are then gathered).

    Read in the source's order, a file's rows are written into a thousand instruments' runs,
    each a stream (:func:`_take`); gathered in the file's order (the sort's indices), each
    read touched a new cache line of the whole slot's column, and the 8-byte columns' gathers
    took a quarter of an append's time."""
    if total == 0:
        return -1
    lo = idx[a]
    hi = lo
    for i in range(a, a + total):
        lo = min(lo, idx[i])
        hi = max(hi, idx[i])
    if hi - lo + 1 != total:
        return -1
    inv[:total] = -1
    for i in range(total):
        j = idx[a + i] - lo
        if inv[j] >= 0:
            return -1
        inv[j] = i
    return lo


@numba.njit(cache=True, nogil=True)
def _take(src, idx, gather, a, inv, base, total, vals):
    """The file's ``total`` rows of a column into ``vals``: scattered from the source rows
    ``base`` on by ``inv`` (:func:`_inverse`; ``base`` not negative), else gathered by
    ``idx[a:]`` (``gather``), else copied from ``src[a:]``."""
    if base >= 0:
        for j in range(total):
            vals[inv[j]] = src[base + j]
    elif gather:
        for i in range(total):
            vals[i] = src[idx[a + i]]
    else:
        vals[:total] = src[a:a + total]


@numba.njit(cache=True, nogil=True)
def _chunk(src, valid, idx, gather, at, n, col, cctx, level, dict_limit, vals, levels, wide,
           raw, body, stats_buf, out, p, row):
    """The column chunk of the ``n`` rows from ``at`` (of the order ``idx``, or of ``src``
    itself when not ``gather``; without validity, the rows are in ``vals`` already: from
    :func:`_take`), written at ``p`` of ``out`` as
    :func:`tickstore.parquet.encode_chunk` encodes it in one data page (after a dictionary
    page when it has one); its facts go to ``row`` of the chunk table. Returns the end (or
    :data:`NO_ROOM`, :data:`NO_ZSTD`)."""
    width, phys, signed, nullable = col[K_WIDTH], col[K_PHYS], col[K_SIGNED], col[K_NULLABLE]
    enc, compress, k, flba = col[K_ENC], col[K_COMP] != 0, col[K_PLAIN], col[K_FLBA] != 0
    m = 0                                   # the non-null values in order, definition levels
    if col[K_NULLS_ONLY]:
        pass
    elif valid.size == 0:
        m = n
    else:
        for i in range(n):
            j = idx[at + i] if gather else at + i
            ok = valid[j]
            levels[i] = ok
            if ok:
                vals[m] = src[j]
                m += 1
    has = m > 0
    vlo = np.uint64(0)
    vhi = np.uint64(0)
    if has:
        vlo, vhi = _min_max(vals, m, width, signed, flba)
    constant = has and vlo == vhi
    if not has:
        enc = PLAIN
        compress = False
    elif constant:
        enc = RLE_DICTIONARY
        compress = False
    if enc == DELTA_BINARY_PACKED and phys != INT64:
        enc = PLAIN
    if enc == BYTE_STREAM_SPLIT and phys == FIXED_LEN_BYTE_ARRAY:
        enc = PLAIN
    slen = _stats(stats_buf, 0, n - m, has, vlo, vhi, width, signed, k)
    start = p
    dict_raw = 0
    dict_body = 0
    dict_idx = levels[:0]
    bits = 1
    if enc == RLE_DICTIONARY:               # the dictionary page
        nk = 1
        if constant:
            dict_raw = _le(raw, 0, _wide(vlo, width, signed), k)
        else:
            dict_idx, nk, dict_raw = _dictionary(vals[:m], width, signed, k, dict_limit, raw,
                                                   wide)
            if nk < 0:
                enc = PLAIN
            else:
                bits = max(1, _width(nk - 1))
        if enc == RLE_DICTIONARY:
            p, dict_body = _page(out, p, raw, dict_raw, body, compress, cctx, level, True, nk,
                                 PLAIN, stats_buf, 0)
            if p < 0:
                return p
    data_at = p
    page = raw
    q = 0                                   # the data page: levels (length first), values
    if nullable:
        if valid.size == 0 or m == 0 or m == n:
            e = _one_run(raw, 4, 1 if m > 0 else 0, n)
        else:
            e = _hybrid(levels[:n], 1, raw, 4)
        _le(raw, 0, e - 4, 4)
        q = e
    if enc == RLE_DICTIONARY and constant:
        raw[q] = bits
        q += 1
        if m > 0:
            q = _uleb(raw, q, np.uint64(m) << np.uint64(1))
            raw[q] = 0
            q += 1
    elif enc == RLE_DICTIONARY:
        raw[q] = bits
        q = _hybrid(dict_idx, bits, raw, q + 1)
    elif enc == DELTA_BINARY_PACKED:
        q += _delta(vals[:m].view(np.int64), raw[q:])
    elif enc == BYTE_STREAM_SPLIT:
        if k == width:
            _split(vals[:m], k, raw[q:q + m * k])
        else:
            _plain(vals, m, width, signed, k, raw, q, wide)
            _split(raw[q:q + m * k].copy().view(np.uint32), k, raw[q:q + m * k])
        q += m * k
    elif q == 0 and k == width:             # the values are the page: not copied first
        q = m * k
        page = vals[:m].view(np.uint8)
    else:
        q = _plain(vals, m, width, signed, k, raw, q, wide)
    p, data_body = _page(out, p, page, q, body, compress, cctx, level, False, n, enc,
                         stats_buf, slen)
    if p < 0:
        return p
    row[C_START] = start
    row[C_DATA] = data_at
    row[C_DATA_SIZE] = p - data_at
    row[C_SIZE] = p - start
    row[C_USIZE] = (p - start) - dict_body - data_body + dict_raw + q
    row[C_ROWS] = n
    row[C_ENC] = enc
    row[C_CODEC] = ZSTD if compress else UNCOMPRESSED
    row[C_NULLS] = n - m
    row[C_HAS] = 1 if has else 0
    row[C_LO] = np.int64(vlo)
    row[C_HI] = np.int64(vhi)
    return p


@numba.njit(cache=True, nogil=True)
def _list_head(out, p, n, etype):
    if n < 15:
        out[p] = (n << 4) | etype
        return p + 1
    out[p] = 0xF0 | etype
    return _uleb(out, p + 1, n)


@numba.njit(cache=True, nogil=True)
def _stat_list(out, p, has, x, width, signed, k):
    """A list of one binary: the statistic ``x`` (empty when the page has no value)."""
    out[p] = 0x19
    out[p + 1] = 0x18
    if has:
        return _stat(out, p + 2, x, width, signed, k)
    out[p + 2] = 0
    return p + 3


@numba.njit(cache=True, nogil=True)
def _column_index(out, p, row, width, signed, k):
    """A ColumnIndex of one page: null_pages, min_values, max_values, ASCENDING,
    null_counts."""
    has = row[C_HAS] != 0
    out[p] = 0x19
    out[p + 1] = 0x11
    out[p + 2] = 0x02 if has else 0x01
    p = _stat_list(out, p + 3, has, row[C_LO], width, signed, k)
    p = _stat_list(out, p, has, row[C_HI], width, signed, k)
    out[p] = 0x15
    out[p + 1] = 0x02
    out[p + 2] = 0x19
    out[p + 3] = 0x16
    p = _zz(out, p + 4, row[C_NULLS])
    out[p] = 0
    return p + 1


@numba.njit(cache=True, nogil=True)
def _offset_index(out, p, row):
    """An OffsetIndex of one page: (offset, size with its header, first row 0)."""
    out[p] = 0x19
    out[p + 1] = 0x1c
    out[p + 2] = 0x16
    p = _zz(out, p + 3, row[C_DATA])
    out[p] = 0x15
    p = _zz(out, p + 1, row[C_DATA_SIZE])
    out[p] = 0x16
    out[p + 1] = 0
    out[p + 2] = 0
    out[p + 3] = 0
    return p + 4


@numba.njit(cache=True, nogil=True)
def _column_chunk(out, p, row, col, name, oi, oi_len, ci, ci_len):
    """A ColumnChunk list element (as :func:`tickstore.parquet._column_chunk` writes it)."""
    dictionary = row[C_DATA] > row[C_START]
    nullable = col[K_NULLABLE] != 0
    out[p] = 0x26                                   # file_offset (2): 0, then the metadata (3)
    out[p + 1] = 0
    out[p + 2] = 0x1c
    p = _field32(out, p + 3, col[K_PHYS])
    out[p] = 0x19                                   # encodings (2)
    n = (2 if dictionary else 1) + (1 if nullable else 0)
    p = _list_head(out, p + 1, n, 5)
    if dictionary:
        p = _zz(out, p, PLAIN)
        p = _zz(out, p, RLE_DICTIONARY)
    else:
        p = _zz(out, p, row[C_ENC])
    if nullable:
        p = _zz(out, p, RLE)
    out[p] = 0x19                                   # path_in_schema (3)
    out[p + 1] = 0x18
    p = _uleb(out, p + 2, name.size)
    p = _put(out, p, name, 0, name.size)
    p = _field32(out, p, row[C_CODEC])              # codec (4)
    out[p] = 0x16
    p = _zz(out, p + 1, row[C_ROWS])                # num_values (5)
    out[p] = 0x16
    p = _zz(out, p + 1, row[C_USIZE])               # sizes (6, 7)
    out[p] = 0x16
    p = _zz(out, p + 1, row[C_SIZE])
    out[p] = 0x26
    p = _zz(out, p + 1, row[C_DATA])                # data_page_offset (9)
    if dictionary:
        out[p] = 0x26
        p = _zz(out, p + 1, row[C_START])           # dictionary_page_offset (11)
        out[p] = 0x1c
    else:
        out[p] = 0x3c
    p = _stats(out, p + 1, row[C_NULLS], row[C_HAS] != 0, row[C_LO], row[C_HI],
               col[K_WIDTH], col[K_SIGNED], col[K_PLAIN])
    out[p] = 0
    out[p + 1] = 0x16                               # offset index (4, 5), column index (6, 7)
    p = _zz(out, p + 2, oi)
    p = _field32(out, p, oi_len)
    out[p] = 0x16
    p = _zz(out, p + 1, ci)
    p = _field32(out, p, ci_len)
    out[p] = 0
    return p + 1


@numba.njit(cache=True, nogil=True)
def _file(src_at, src_len, valid_at, valid_len, idx, gather, dest, a, bounds, cols, names,
          name_at, head, tail, sorting, cctx, level, dict_limit, raw_cap, scratch, stage, out):
    """The Parquet file of the rows from ``a`` (of ``idx``, or of the columns as they are when
    not ``gather``; when ``dest`` is not empty, the source rows from ``a + bounds[0]`` taken
    to the file's rows ``dest`` gives) in the row groups of ``bounds``, written into ``out``: its
    size (a failure: below). ``src_at``, ``src_len``: where each column's values
    lie and their bytes; ``valid_at``, ``valid_len``: its validity (one byte a row; 0 bytes:
    none), which the caller keeps alive; ``cols``: a row of ``K_FIELDS`` a column; ``names``: the
    columns' names, the ``i``-th at ``name_at[i]:name_at[i + 1]``; ``head`` and ``tail``: the
    footer's parts that depend on the schema only; ``sorting``: the sort columns' indexes;
    ``scratch``: :func:`scratch_bytes` bytes, 8-aligned; ``stage``: as many bytes as ``out``.
    A failure returns :data:`NO_ROOM` or :data:`NO_ZSTD`.

    A column's rows are taken for the whole file at once (:func:`_take`), then its chunks
    encoded row group by row group into ``stage``, column after column; the chunks are then
    copied into ``out`` in the file's order, row group after row group."""
    ng = bounds.size - 1
    nc = cols.shape[0]
    most = 1
    for g in range(ng):
        most = max(most, bounds[g + 1] - bounds[g])
    total = bounds[ng] - bounds[0]
    most8 = (most + 7) // 8 * 8
    all8 = (total + 7) // 8 * 8
    vals = scratch[:8 * all8].view(np.uint64)
    levels = scratch[8 * all8:8 * all8 + 4 * most8].view(np.int32)
    wide = scratch[8 * all8 + 4 * most8:8 * all8 + 8 * most8].view(np.uint32)
    inv = scratch[8 * all8 + 8 * most8:12 * all8 + 8 * most8].view(np.int32)
    raw = scratch[12 * all8 + 8 * most8:12 * all8 + 8 * most8 + raw_cap]
    body = scratch[12 * all8 + 8 * most8 + raw_cap:]
    stats_buf = np.empty(64, np.uint8)
    table = np.zeros((ng * nc, C_FIELDS), np.int64)
    if out.size < 4:
        return NO_ROOM
    if dest.size:
        inv = dest
        base = a + bounds[0]
    else:
        base = _inverse(idx, a + bounds[0], total, inv) if gather else -1
    q = 0
    for c in range(nc):
        col = cols[c]
        w = col[K_WIDTH]
        src = numba.carray(_bytes_at(src_at[c]), src_len[c])
        valid = numba.carray(_bytes_at(valid_at[c]), valid_len[c])
        if valid.size == 0 and col[K_NULLS_ONLY] == 0:
            if w == 1:
                _take(src, idx, gather, a + bounds[0], inv, base, total, vals.view(np.uint8))
            elif w == 2:
                _take(src.view(np.uint16), idx, gather, a + bounds[0], inv, base, total,
                      vals.view(np.uint16))
            elif w == 4:
                _take(src.view(np.uint32), idx, gather, a + bounds[0], inv, base, total,
                      vals.view(np.uint32))
            else:
                _take(src.view(np.uint64), idx, gather, a + bounds[0], inv, base, total, vals)
        for g in range(ng):
            lo = bounds[g]
            n = bounds[g + 1] - lo
            at = lo - bounds[0]                     # the group's first row in the file
            row = table[g * nc + c]
            if w == 1:
                q = _chunk(src, valid, idx, gather, a + lo, n, col, cctx, level, dict_limit,
                           vals.view(np.uint8)[at:], levels, wide, raw, body, stats_buf,
                           stage, q, row)
            elif w == 2:
                q = _chunk(src.view(np.uint16), valid, idx, gather, a + lo, n, col, cctx,
                           level, dict_limit, vals.view(np.uint16)[at:], levels, wide, raw,
                           body, stats_buf, stage, q, row)
            elif w == 4:
                q = _chunk(src.view(np.uint32), valid, idx, gather, a + lo, n, col, cctx,
                           level, dict_limit, vals.view(np.uint32)[at:], levels, wide, raw,
                           body, stats_buf, stage, q, row)
            else:
                q = _chunk(src.view(np.uint64), valid, idx, gather, a + lo, n, col, cctx,
                           level, dict_limit, vals[at:], levels, wide, raw, body, stats_buf,
                           stage, q, row)
            if q < 0:
                return q
    if q + 4 > out.size:
        return NO_ROOM
    p = _magic(out, 0)
    for i in range(ng * nc):                        # the chunks in the file's order
        row = table[i]
        moved = p - row[C_START]
        _memcpy(out, p, stage, row[C_START], row[C_SIZE])
        row[C_START] += moved
        row[C_DATA] += moved
        p += row[C_SIZE]
    # the page index: the column indexes, then the offset indexes
    spare = 0
    for c in range(nc):
        spare += name_at[c + 1] - name_at[c]
    need = p + ng * nc * 160 + ng * (spare + 64 + 8 * sorting.size) + head.size + tail.size + 64
    if need > out.size:
        return NO_ROOM
    ci = np.empty((ng * nc, 2), np.int64)
    oi = np.empty((ng * nc, 2), np.int64)
    for i in range(ng * nc):
        c = i % nc
        ci[i, 0] = p
        p = _column_index(out, p, table[i], cols[c, K_WIDTH], cols[c, K_SIGNED],
                          cols[c, K_PLAIN])
        ci[i, 1] = p - ci[i, 0]
    for i in range(ng * nc):
        oi[i, 0] = p
        p = _offset_index(out, p, table[i])
        oi[i, 1] = p - oi[i, 0]
    # the footer
    fstart = p
    p = _put(out, p, head, 0, head.size)
    out[p] = 0x16                                   # num_rows (3), row_groups (4)
    p = _zz(out, p + 1, bounds[ng] - bounds[0])
    out[p] = 0x19
    p = _list_head(out, p + 1, ng, 12)
    for g in range(ng):
        out[p] = 0x19                               # columns (1)
        p = _list_head(out, p + 1, nc, 12)
        usize = 0
        size = 0
        for c in range(nc):
            i = g * nc + c
            p = _column_chunk(out, p, table[i], cols[c], names[name_at[c]:name_at[c + 1]],
                              oi[i, 0], oi[i, 1], ci[i, 0], ci[i, 1])
            usize += table[i, C_USIZE]
            size += table[i, C_SIZE]
        out[p] = 0x16                               # total_byte_size (2), num_rows (3)
        p = _zz(out, p + 1, usize)
        out[p] = 0x16
        p = _zz(out, p + 1, bounds[g + 1] - bounds[g])
        if sorting.size:                            # sorting_columns (4)
            out[p] = 0x19
            p = _list_head(out, p + 1, sorting.size, 12)
            for s in sorting:
                p = _field32(out, p, s)
                out[p] = 0x12
                out[p + 1] = 0x12
                out[p + 2] = 0
                p += 3
            out[p] = 0x16
        else:
            out[p] = 0x26
        p = _zz(out, p + 1, table[g * nc, C_START])  # file_offset (5)
        out[p] = 0x16
        p = _zz(out, p + 1, size)                    # total_compressed_size (6), ordinal (7)
        out[p] = 0x14
        p = _zz(out, p + 1, g)
        out[p] = 0
        p += 1
    p = _put(out, p, tail, 0, tail.size)
    p = _le(out, p, p - fstart, 4)
    return _magic(out, p)


# -- the caller's side ------------------------------------------------------------------------
# the most a file's image may take before it is written (its bound). A larger image, in
# buffers not kept, had its pages faulted in fresh for each file: the benchmark day's three
# one-hour files (320 MiB bounds) wrote at 8.0 M rows/s this way, 10.4 by FileWriter.
MAX_IMAGE = 256 << 20


def supports(schema: pa.Schema, rows: int = 0) -> bool:
    """Whether a file of ``rows`` rows of ``schema`` is written here: libzstd and a CRC-32 found,
    no ``float64`` column, and the bound of its image within :data:`MAX_IMAGE` (a larger
    file is written in row groups as they are encoded, by :class:`FileWriter`)."""
    width = _row_width(schema)
    return width > 0 and _bound(rows, 1, width, len(schema)) <= MAX_IMAGE


@pq_.by_schema
def _row_width(schema: pa.Schema) -> int:
    """The bytes of a row's values, or 0 when this writer does not write the schema."""
    columns = pq_.columns_of(schema)
    if not AVAILABLE or any(c.physical == DOUBLE for c in columns):
        return 0
    return sum(c.dtype.itemsize for c in columns)


def _bound(rows: int, groups: int, width: int, ncols: int) -> int:
    """A first guess at a file's size, which :func:`write_file` doubles when it falls short."""
    return rows * (width + ncols) + rows // 4 + groups * ncols * 512 + (1 << 16)


@pq_.by_schema
def _layout(schema: pa.Schema, policy: tuple, sorting: tuple) -> tuple:
    """What the compiled writer needs of a schema, a policy (``(name, (encoding, compress))``
    pairs) and the sort columns: the columns' rows (nulls-only flag 0), their names' bytes
    and bounds, the footer's schema-only parts, the sort columns' indexes."""
    columns = list(pq_.columns_of(schema))
    pol = dict(policy)
    cols = np.zeros((len(columns), K_FIELDS), np.int64)
    for i, c in enumerate(columns):
        enc, comp = pol.get(c.name, ("RLE_DICTIONARY", True))
        cols[i, K_WIDTH] = c.dtype.itemsize
        cols[i, K_PHYS] = c.physical
        cols[i, K_SIGNED] = not c.unsigned
        cols[i, K_NULLABLE] = c.nullable
        cols[i, K_ENC] = pq_.ENCODINGS[enc]
        cols[i, K_COMP] = bool(comp)
        cols[i, K_PLAIN] = c.plain_dtype.itemsize
        cols[i, K_FLBA] = c.physical == FIXED_LEN_BYTE_ARRAY
    names = [c.name.encode() for c in columns]
    name_at = np.cumsum([0] + [len(n) for n in names]).astype(np.int64)
    head, tail = _footer_ends(schema)
    names_of = [c.name for c in columns]
    return (columns, cols, np.frombuffer(b"".join(names) or b"\0", np.uint8), name_at,
            np.frombuffer(head, np.uint8), np.frombuffer(tail, np.uint8),
            np.array([names_of.index(s) for s in sorting], np.int64))


def scratch_bytes(rows: int, most: int, raw_cap: int) -> int:
    """The scratch :func:`_file` takes for a file of ``rows`` rows, in row groups of up to
    ``most`` rows and pages of up to ``raw_cap`` bytes before compression."""
    return (12 * ((rows + 7) // 8 * 8) + 8 * ((most + 7) // 8 * 8) + 2 * raw_cap
            + raw_cap // 128 + 1024)


_local = threading.local()
_NO_DEST = np.zeros(0, np.int32)


def _cctx() -> int:
    return _context("cctx", _LIB.ZSTD_createCCtx)


_NONE = np.zeros(1, np.uint8)
_NO_ORDER = np.zeros(1, np.int32)


def write_file(schema: pa.Schema, policy: dict, sources: dict, order: np.ndarray | None,
               a: int, bounds: np.ndarray, level: int, sorting: tuple = (),
               nulls_only: frozenset = frozenset(), page_rows: int = 1 << 62,
               dest: np.ndarray | None = None) -> np.ndarray:
    """The Parquet file (the same bytes :class:`tickstore.parquet.FileWriter` writes with
    ``policy``, ``level`` and ``sorting``) of rows ``order[a + bounds[0]:a + bounds[-1]]`` of
    ``sources`` (``{name: (values, validity or None)}``, as
    :func:`tickstore.parquet.arrow_values` gives them; rows ``a + bounds[0]`` on when ``order``
    is None), in row groups of ``bounds`` each one page (no larger than ``page_rows``); the
    columns of ``nulls_only`` hold nulls only, and their values are not read. ``dest`` (int32),
    when given: the file's row of each source row from ``a + bounds[0]`` on (a stable sort's
    destinations, which an append's counting sort gives in one sequential pass); the values
    are scattered by it, and ``order`` is read only for the columns with validity (it must
    then be given). Returns the image in a buffer of this thread's, valid until its next call."""
    bounds = np.ascontiguousarray(bounds, np.int64)
    sizes = np.diff(bounds)
    if bounds.size < 2 or sizes.min() <= 0 or sizes.max() > page_rows:
        raise ValueError("row groups must be non-empty and one page each")
    if dest is None:
        dest = _NO_DEST
    elif dest.dtype != np.int32 or dest.size != bounds[-1] - bounds[0]:
        raise ValueError(f"dest must be int32, a row each of the file's {bounds[-1] - bounds[0]}")
    elif order is None:
        names = schema.names
        if any(sources[n][1] is not None for n in names if n not in nulls_only):
            raise ValueError("order must be given with dest for columns with validity")
    columns, cols, names, name_at, head, tail, sort_ix = _layout(
        schema, tuple(sorted(policy.items())), tuple(sorting))
    cols = cols.copy()
    keep = []                     # the arrays whose addresses the call is given, kept alive
    at = np.zeros((4, len(columns)), np.int64)
    for i, c in enumerate(columns):
        values, valid = sources[c.name]
        if c.name in nulls_only:
            cols[i, K_NULLS_ONLY] = 1
            values, valid = _NONE, None
        values = np.ascontiguousarray(values)
        keep.append(values)
        at[0, i], at[1, i] = values.ctypes.data, 0 if cols[i, K_NULLS_ONLY] else values.nbytes
        if valid is not None:
            valid = np.ascontiguousarray(valid, np.bool_)
            keep.append(valid)
            at[2, i], at[3, i] = valid.ctypes.data, valid.nbytes
        else:
            at[2, i], at[3, i] = _NONE.ctypes.data, 0
    rows = int(bounds[-1] - bounds[0])
    most = int(sizes.max())
    raw_cap = pq_.delta_bound(most) + pq_.hybrid_bound(most, 16) + pq_.hybrid_bound(most, 1) + 64
    idx = _NO_ORDER if order is None else order
    cap = _bound(rows, bounds.size - 1, int(cols[:, K_WIDTH].sum()), len(columns))
    scratch = reader._buffer("write-scratch", scratch_bytes(rows, most, raw_cap), MAX_IMAGE)
    while True:
        stage = reader._buffer("write-stage", cap, MAX_IMAGE)
        out = reader._buffer("write-image", cap, MAX_IMAGE)
        n = _file(at[0], at[1], at[2], at[3], idx, order is not None, dest, a, bounds, cols, names,
                  name_at, head, tail, sort_ix, _cctx(), level, DICT_LIMIT, raw_cap, scratch,
                  stage, out)
        if n >= 0:
            return out[:n]
        if n == NO_ZSTD:
            raise RuntimeError(f"libzstd failed to compress a page at level {level} (columns "
                               f"{[c.name for c in columns]}, rows {bounds[0]} to {bounds[-1]})")
        cap *= 2


def crc32(buf, crc: int = 0) -> int:
    """The CRC-32 of the bytes ``buf`` (an array or any buffer), continuing ``crc``: what
    ``zlib.crc32(buf, crc)`` gives, the GIL released, by :func:`_crc_function`'s function."""
    if not AVAILABLE:
        return zlib.crc32(buf, crc)
    a = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf.view(np.uint8)
    return int(_crc32_from(crc, a, 0, a.size)) & 0xFFFFFFFF
