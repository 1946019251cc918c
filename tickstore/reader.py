"""The store's own Parquet files read by numba decoders, a column's pages of many files at once.

pyarrow's Parquet reader makes a zstd decompression context for every page it decompresses
(``ZSTD_decompress``, which allocates one: about 14 µs here, against 2.5 µs with a context kept;
apache/arrow#37169), and has a fixed cost of about 8 µs a column chunk besides. A store with a
file a minute holds a day's instrument in 400 files of a few thousand rows each, so a query for
one instrument over an hour spent most of its time there (0.49 ms a file, of which ~0.3 ms was
fixed). This reader does the same job for the files the store writes (:mod:`tickstore.parquet`:
data pages v1; ``PLAIN``, ``RLE_DICTIONARY``, ``DELTA_BINARY_PACKED``, ``BYTE_STREAM_SPLIT``;
zstd or none; flat columns, required or optional) with:

- one ``pread`` a row group (the chunks of the columns wanted are adjacent), all into one buffer
  (kept by the thread for its next read); for a few row groups, each column's task reads its
  own chunks into their places there (reading overlaps decoding);
- a column's page headers (Thrift compact protocol) parsed for all its chunks in one numba call;
- each page's CRC-32 checked against its header's, in one compiled loop;
- a column's zstd pages decompressed in one numba call by libzstd (a context kept per thread;
  ``zstandard`` where the system has no libzstd), into one scratch buffer;
- a column's pages decoded into its output in one numba call (``nogil``: columns on threads):
  all rows, or only those of given ranges (:func:`decode`, :func:`decode_within`: the rows a
  query's bounds pick out of the key columns).

Anything else (another codec, data pages v2, a type the store does not write) is
:class:`Unsupported`, and the caller reads those files with pyarrow. A malformed page is a
:class:`CorruptFile` naming the file and the chunk's byte offset; every read is bounds-checked.
"""

from __future__ import annotations

import os
import threading
import zlib
from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import zstandard

from tickstore import parquet

# a page in the table that _pages fills: these fields, int64 each
P_KIND, P_BUF, P_OFF, P_SIZE, P_VALUES, P_ENC, P_CHUNK, P_COMP, P_CRC = range(9)
P_FIELDS = 9
SKIPPED = -1        # P_KIND of a dictionary page whose chunk has no row wanted (not decoded)
CODECS = {"UNCOMPRESSED": parquet.UNCOMPRESSED, "ZSTD": parquet.ZSTD}
# the layout of a row group's column chunk: where it starts, its bytes, codec, rows
L_START, L_SIZE, L_CODEC, L_ROWS = range(4)

# _pages and _decode errors (negative; the chunk in question is reported with them)
E_BOUNDS, E_HEADER, E_PAGE, E_ENCODING, E_COUNT, E_DICT, E_WIDTH, E_CRC = range(-1, -9, -1)
_MESSAGES = {E_BOUNDS: "a page runs past the end of its column chunk",
             E_HEADER: "a page header is not valid Thrift",
             E_PAGE: "a page of a kind this reader does not decode (data page v2 or index)",
             E_ENCODING: "an encoding this reader does not decode",
             E_COUNT: "the pages' values do not add up to the row group's rows",
             E_DICT: "a dictionary index past the dictionary's end, or no dictionary page",
             E_WIDTH: "a bit width out of range",
             E_CRC: "a page's CRC-32 is not that of its bytes"}


class Unsupported(Exception):
    """A file or chunk this reader does not decode (pyarrow's reader does)."""


class CorruptFile(ValueError):
    """A file whose pages cannot be decoded; the message names the file and byte offset."""


# -- Thrift compact protocol, reading ----------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _varint(buf, p, end):
    """A ULEB128 at ``p``: (value, next position), or (0, -1) past ``end``."""
    v = np.uint64(0)
    s = 0
    while p < end:
        b = buf[p]
        p += 1
        if s < 64:
            v |= np.uint64(b & 0x7F) << np.uint64(s)
        if b < 0x80:
            return v, p
        s += 7
        if s > 70:
            return v, -1
    return v, -1


@numba.njit(cache=True, nogil=True)
def _unzig(v):
    return np.int64(v >> np.uint64(1)) ^ -np.int64(v & np.uint64(1))


@numba.njit(cache=True, nogil=True)
def _skip(buf, p, end, t):
    """Past one value of compact type ``t`` at ``p``; -1 when malformed. (No recursion: numba
    cannot cache a recursive function; nested lists and structs are kept on a small stack.)"""
    left = np.zeros(16, np.int64)          # per open list: elements left (-1: a struct)
    etype = np.zeros(16, np.int64)
    depth = 0
    while True:
        if p < 0 or p > end:
            return -1
        if t == 3:
            p = p + 1 if p + 1 <= end else -1
        elif t == 4 or t == 5 or t == 6:
            p = _varint(buf, p, end)[1]
        elif t == 7:
            p = p + 8 if p + 8 <= end else -1
        elif t == 8:
            n, p = _varint(buf, p, end)
            if p < 0 or p + np.int64(n) > end:
                return -1
            p += np.int64(n)
        elif t == 9 or t == 10:            # list, set: push its elements
            if p >= end or depth == 16:
                return -1
            h = buf[p]
            p += 1
            n = np.int64(h >> 4)
            if n == 15:
                m, p = _varint(buf, p, end)
                n = np.int64(m)
            et = np.int64(h & 0x0F)
            left[depth] = n
            etype[depth] = 3 if et == 1 or et == 2 else et     # a bool in a list: a byte
            depth += 1
        elif t == 12:                      # struct: push it, its fields to the stop byte
            if depth == 16:
                return -1
            left[depth] = -1
            depth += 1
        elif t != 1 and t != 2:            # (a bool field has no bytes); maps: not here
            return -1
        if p < 0:
            return -1
        t = -1                             # the next value to skip, from the innermost open
        while depth > 0 and t < 0:
            d = depth - 1
            if left[d] > 0:
                left[d] -= 1
                t = etype[d]
            elif left[d] == 0:
                depth -= 1
            else:
                if p >= end:
                    return -1
                h = buf[p]
                p += 1
                if h == 0:
                    depth -= 1
                else:
                    if h >> 4 == 0:
                        p = _varint(buf, p, end)[1]
                        if p < 0:
                            return -1
                    t = np.int64(h & 0x0F)
        if t < 0:
            return p


@numba.njit(cache=True, nogil=True)
def _field(buf, p, end, fid):
    """A struct's next field header at ``p`` after field ``fid``: (its id, its type, the
    position after the header); type 0 at the struct's stop byte, position -1 when malformed."""
    if p >= end:
        return fid, 0, -1
    h = buf[p]
    p += 1
    if h == 0:
        return fid, 0, p
    if h >> 4 == 0:                        # a long-form field id
        v, p = _varint(buf, p, end)
        if p < 0:
            return fid, 0, -1
        return np.int64(_unzig(v)), np.int64(h & 0x0F), p
    return fid + np.int64(h >> 4), np.int64(h & 0x0F), p


@numba.njit(cache=True, nogil=True)
def _page_header(buf, p, end, row):
    """The PageHeader at ``p`` into ``row`` (kind, sizes, values, encoding, CRC-32); the
    position of the page's body, -1 when malformed, -2 for a kind not v1 data or dictionary."""
    fid = 0
    kind = -1
    row[P_VALUES] = -1
    row[P_ENC] = -1
    row[P_CRC] = -1
    while True:
        fid, t, p = _field(buf, p, end, fid)
        if p < 0:
            return -1
        if t == 0:
            break
        if fid <= 4 and t == 5:            # type, uncompressed size, compressed size, CRC-32
            v, p = _varint(buf, p, end)
            if p < 0:
                return -1
            x = np.int64(_unzig(v))
            if fid == 1:
                kind = x
            elif fid == 2:
                row[P_SIZE] = x
            elif fid == 3:
                row[P_COMP] = x
            else:
                row[P_CRC] = x & 0xFFFFFFFF
        elif (fid == 5 or fid == 7) and t == 12:   # data page v1 / dictionary page header
            sub = 0
            while True:
                sub, gt, p = _field(buf, p, end, sub)
                if p < 0:
                    return -1
                if gt == 0:
                    break
                if (sub == 1 or sub == 2) and gt == 5:
                    v, p = _varint(buf, p, end)
                    if p < 0:
                        return -1
                    if sub == 1:
                        row[P_VALUES] = np.int64(_unzig(v))
                    else:
                        row[P_ENC] = np.int64(_unzig(v))
                elif sub == 3 and fid == 5 and gt == 5:      # definition levels: RLE only
                    v, p = _varint(buf, p, end)
                    if p < 0 or _unzig(v) != 3:
                        return -1
                else:
                    p = _skip(buf, p, end, gt)
                    if p < 0:
                        return -1
        else:
            p = _skip(buf, p, end, t)
            if p < 0:
                return -1
    row[P_KIND] = kind
    if kind != parquet.DATA_PAGE and kind != parquet.DICTIONARY_PAGE:
        return -2                          # a page of another kind (v2, index): not decoded
    if row[P_VALUES] < 0 or row[P_ENC] < 0 or row[P_SIZE] < 0 or row[P_COMP] < 0:
        return -1
    return p


@numba.njit(cache=True, nogil=True)
def _pages(buf, starts, sizes, rows, table):
    """The pages of the chunks at ``starts`` (``sizes`` bytes, ``rows`` rows each) in ``buf``,
    into ``table`` (grown by the caller when full: returns -(2 ** 40) then). Returns the pages'
    count, or ``E_* * 2 ** 32 - chunk`` (negative) for the first bad chunk."""
    k = 0
    for c in range(starts.shape[0]):
        p = starts[c]
        end = p + sizes[c]
        got = 0
        while p < end:
            if k >= table.shape[0]:
                return -(1 << 40)
            row = table[k]
            row[P_SIZE] = -1
            row[P_COMP] = -1
            q = _page_header(buf, p, end, row)
            if q == -2:
                return E_PAGE * (1 << 32) - c
            if q < 0:
                return E_HEADER * (1 << 32) - c
            if q + row[P_COMP] > end:
                return E_BOUNDS * (1 << 32) - c
            row[P_BUF] = 0
            row[P_OFF] = q
            row[P_CHUNK] = c
            if row[P_KIND] == parquet.DATA_PAGE:
                got += row[P_VALUES]
            p = q + row[P_COMP]
            k += 1
        if got != rows[c]:
            return E_COUNT * (1 << 32) - c
    return k


# -- decoding ----------------------------------------------------------------------------------
SLACK = 16      # bytes past the end of every buffer the decoders read: a value's 8-byte load
WORK_BYTES = 22     # :func:`_decode`'s work space, bytes a value of its largest page


@numba.njit(cache=True, nogil=True)
def _le(src, p, nb):
    """The ``nb`` bytes at ``p`` as a little-endian unsigned integer."""
    v = np.uint64(0)
    for b in range(nb):
        v |= np.uint64(src[p + b]) << np.uint64(8 * b)
    return v


@numba.njit(cache=True, nogil=True)
def _words(src, p, nbytes):
    """The ``nbytes`` at ``p`` (and up to 15 after: :data:`SLACK`) as uint64 words."""
    nw = (nbytes + 7) // 8 + 1
    return src[p:p + 8 * nw].view(np.uint64)


@numba.njit(cache=True, nogil=True)
def _unpack(words, n, w, dst, base, mind, prev):
    """``n`` deltas of ``w`` bits (over 56: a value may span 9 bytes), LSB first, from
    ``words``, each plus ``mind``, summed from ``prev`` into ``dst[base:]``; returns the
    last."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1) if w < 64 else ~np.uint64(0)
    cur = prev
    for j in range(n):
        bit = j * w
        wi = bit >> 6
        sh = np.uint64(bit & 63)
        v = words[wi] >> sh
        if sh + np.uint64(w) > np.uint64(64):
            v |= words[wi + 1] << (np.uint64(64) - sh)
        cur += mind + (v & mask)
        dst[base + j] = cur
    return cur


@numba.njit(cache=True, nogil=True)
def _unpack_bytes(src, p, start, n, w, dst, base):
    """Values ``start:start + n`` of ``w`` bits each (at most 56), LSB first, packed from
    ``src[p]``, into ``dst[base:]``: each by one unaligned 8-byte load from its first byte
    (up to 7 bytes past the values: :data:`SLACK`)."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    d = dst[base:base + n]
    for j in range(n):
        bit = (start + j) * w
        d[j] = (parquet._load64(src, p + (bit >> 3)) >> np.uint64(bit & 7)) & mask


@numba.njit(cache=True, nogil=True)
def _hybrid_at(src, p, end, w, n, dst, sel, s, r):
    """``n`` values of the RLE/bit-packed hybrid of width ``w`` (at most 32: levels, dictionary
    indices) at ``p``, into ``dst[0:n]``; of them only those at the rows of the ranges
    ``sel[s:]`` (the values being rows ``r:r + n``), the others left as they were. The
    position after them, or -1 when they run past ``end``."""
    if w > 32:
        return -1
    got = 0
    vb = (w + 7) // 8
    t = s
    while got < n:
        h, p = _varint(src, p, end)
        if p < 0:
            return -1
        if h & np.uint64(1):
            nbytes = np.int64(h >> np.uint64(1)) * w
            if p + nbytes > end:
                return -1
            m = min(np.int64(h >> np.uint64(1)) * 8, n - got)
        else:
            if p + vb > end:
                return -1
            nbytes = vb
            m = min(np.int64(h >> np.uint64(1)), n - got)
        lo, hi = r + got, r + got + m               # this run's rows
        while t < sel.shape[0] and sel[t, 1] <= lo:
            t += 1
        u = t
        while u < sel.shape[0] and sel[u, 0] < hi:
            a = max(sel[u, 0], lo) - lo
            b = min(sel[u, 1], hi) - lo
            if not h & np.uint64(1):
                dst[got + a:got + b] = _le(src, p, vb)
            elif w == 0:
                dst[got + a:got + b] = 0
            else:
                _unpack_bytes(src, p, a, b - a, w, dst, got + a)
            if sel[u, 1] > hi:
                break
            u += 1
        got += m
        p += nbytes
    return p


@numba.njit(cache=True, nogil=True)
def _hybrid(src, p, end, w, n, dst):
    """All ``n`` values of the hybrid at ``p`` into ``dst[0:n]`` (:func:`_hybrid_at`)."""
    whole = np.empty((1, 2), np.int64)
    whole[0, 0] = 0
    whole[0, 1] = n
    return _hybrid_at(src, p, end, w, n, dst, whole, 0, 0)


@numba.njit(cache=True, nogil=True)
def _delta(src, p, end, n, dst, base):
    """``n`` DELTA_BINARY_PACKED values at ``p`` into ``dst[base:]`` (deltas wrap: uint64);
    the position after them, or -1 when malformed."""
    bs, p = _varint(src, p, end)
    if p < 0:
        return -1
    mbs, p = _varint(src, p, end)
    if p < 0:
        return -1
    total, p = _varint(src, p, end)
    if p < 0:
        return -1
    first, p = _varint(src, p, end)
    if p < 0 or mbs == 0 or bs == 0 or bs % mbs != 0 or np.int64(total) < n or mbs > 64:
        return -1
    per = np.int64(bs // mbs)
    if per % 32 != 0:
        return -1
    nmb = np.int64(mbs)
    cur = np.uint64(_unzig(first))
    if n > 0:
        dst[base] = cur
    i = 1
    while i < n:
        mn, p = _varint(src, p, end)
        if p < 0 or p + nmb > end:
            return -1
        mind = np.uint64(_unzig(mn))
        wpos = p
        p += nmb
        for b in range(nmb):
            if i >= n:
                break
            w = np.int64(src[wpos + b])
            if w > 64:
                return -1
            nbytes = per * w // 8
            if p + nbytes > end:
                return -1
            m = min(per, n - i)
            if w == 0:
                for j in range(m):
                    cur += mind
                    dst[base + i + j] = cur
            elif w <= 56:                  # a value within the 8 bytes from its first: a load
                mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
                d = dst[base + i:base + i + m]
                for j in range(m):
                    bit = j * w
                    cur += mind + ((parquet._load64(src, p + (bit >> 3))
                                    >> np.uint64(bit & 7)) & mask)
                    d[j] = cur
            else:
                cur = _unpack(_words(src, p, nbytes), m, w, dst, base + i, mind, cur)
            i += m
            p += nbytes
    return p


@numba.njit(cache=True, nogil=True)
def _plain(src, p, n, pw, dst, base):
    """``n`` PLAIN values ``pw`` bytes wide at ``p`` into ``dst[base:]`` (narrowed)."""
    d = dst[base:base + n]          # (slices from 0: no index arithmetic for LLVM to doubt)
    if pw == 8:
        v8 = src[p:p + 8 * n].view(np.uint64)
        for j in range(n):
            d[j] = v8[j]
    elif pw == 4:
        v4 = src[p:p + 4 * n].view(np.uint32)
        for j in range(n):
            d[j] = v4[j]
    elif pw == 2:
        v2 = src[p:p + 2 * n].view(np.uint16)
        for j in range(n):
            d[j] = v2[j]
    else:
        v1 = src[p:p + n]
        for j in range(n):
            d[j] = v1[j]


@numba.njit(cache=True, nogil=True)
def _unsplit(src, p, n, pw, a, b, dst, base):
    """Values ``a:b`` of ``n`` byte-stream-split ones ``pw`` bytes wide at ``p`` into
    ``dst[base:]``: each value's bytes from the ``pw`` streams in one pass (a pass a stream
    over ``dst`` is bound by memory)."""
    if pw == 8:             # (slices from 0: no index arithmetic for LLVM to doubt)
        s0, s1, s2, s3 = (src[p + a:p + b], src[p + n + a:p + n + b],
                          src[p + 2 * n + a:p + 2 * n + b], src[p + 3 * n + a:p + 3 * n + b])
        s4, s5, s6, s7 = (src[p + 4 * n + a:p + 4 * n + b], src[p + 5 * n + a:p + 5 * n + b],
                          src[p + 6 * n + a:p + 6 * n + b], src[p + 7 * n + a:p + 7 * n + b])
        d = dst[base:base + b - a]
        for j in range(b - a):
            d[j] = (np.uint64(s0[j]) | np.uint64(s1[j]) << np.uint64(8)
                    | np.uint64(s2[j]) << np.uint64(16) | np.uint64(s3[j]) << np.uint64(24)
                    | np.uint64(s4[j]) << np.uint64(32) | np.uint64(s5[j]) << np.uint64(40)
                    | np.uint64(s6[j]) << np.uint64(48) | np.uint64(s7[j]) << np.uint64(56))
    else:
        for j in range(a, b):
            v = np.uint64(0)
            for c in range(pw):
                v |= np.uint64(src[p + c * n + j]) << np.uint64(8 * c)
            dst[base + j - a] = v


@numba.njit(cache=True, nogil=True)
def _values(src, p, end, enc, nn, pw, keys, have_dict, ix, dst, base):
    """A data page's ``nn`` values (after its levels) at ``p`` into ``dst[base:]``; 0 or E_*."""
    if enc == parquet.PLAIN:
        if p + nn * pw > end:
            return E_BOUNDS
        _plain(src, p, nn, pw, dst, base)
    elif enc == parquet.RLE_DICTIONARY or enc == 2:
        if not have_dict:
            return E_DICT
        if nn > 0:
            if p >= end:
                return E_BOUNDS
            w = np.int64(src[p])
            if w > 32:
                return E_WIDTH
            if w == 0:           # every index 0 (a chunk of one value): the entry, no unpacking
                if keys.shape[0] == 0:
                    return E_DICT
                dst[base:base + nn] = keys[0]
                return 0
            if _hybrid(src, p + 1, end, w, nn, ix) < 0:
                return E_BOUNDS
            top = np.uint32(0)
            for j in range(nn):
                top = max(top, ix[j])
            if top >= keys.shape[0]:
                return E_DICT
            for j in range(nn):
                dst[base + j] = keys[ix[j]]
    elif enc == parquet.DELTA_BINARY_PACKED:
        if _delta(src, p, end, nn, dst, base) < 0:
            return E_BOUNDS
    elif enc == parquet.BYTE_STREAM_SPLIT:
        if p + nn * pw > end:
            return E_BOUNDS
        _unsplit(src, p, nn, pw, 0, nn, dst, base)
    else:
        return E_ENCODING
    return 0


@numba.njit(cache=True, nogil=True)
def _picked(src, p, end, enc, n, pw, keys, have_dict, ix, pg, out, o, sel, s, r):
    """The rows of the ranges ``sel[s:]`` that fall in a data page of ``n`` rows from row
    ``r``, its values at ``p`` (no nulls), into ``out[o:]``, one after another: of plain and
    byte-stream-split values only those rows are read, and of a dictionary's indices only
    theirs unpacked; deltas are summed whole into ``pg``. Returns
    (0 or E_*, the next place in ``out``)."""
    one = False
    if enc == parquet.DELTA_BINARY_PACKED:
        st = _values(src, p, end, enc, n, pw, keys, have_dict, ix, pg, 0)
        if st < 0:
            return st, o
    elif enc == parquet.PLAIN or enc == parquet.BYTE_STREAM_SPLIT:
        if p + n * pw > end:
            return E_BOUNDS, o
    elif enc == parquet.RLE_DICTIONARY or enc == 2:
        if not have_dict:
            return E_DICT, o
        if n > 0:
            if p >= end:
                return E_BOUNDS, o
            w = np.int64(src[p])
            if w > 32:
                return E_WIDTH, o
            if w == 0:               # every index 0: the one entry at every row wanted
                if keys.shape[0] == 0:
                    return E_DICT, o
                one = True
            elif _hybrid_at(src, p + 1, end, w, n, ix, sel, s, r) < 0:
                return E_BOUNDS, o
    else:
        return E_ENCODING, o
    t = s
    while t < sel.shape[0] and sel[t, 0] < r + n:
        a = max(sel[t, 0], r) - r
        b = min(sel[t, 1], r + n) - r
        m = b - a
        if enc == parquet.DELTA_BINARY_PACKED:
            out[o:o + m] = pg[a:b]
        elif enc == parquet.PLAIN:
            _plain(src, p + a * pw, m, pw, out, o)
        elif enc == parquet.BYTE_STREAM_SPLIT:
            _unsplit(src, p, n, pw, a, b, out, o)
        elif one:
            out[o:o + m] = keys[0]
        else:
            top = np.uint32(0)
            for j in range(a, b):
                top = max(top, ix[j])
            if top >= keys.shape[0]:
                return E_DICT, o
            for j in range(m):
                out[o + j] = keys[ix[a + j]]
        o += m
        t += 1
    return 0, o


@numba.njit(cache=True, nogil=True)
def _levels(src, p, end, n, lv):
    """A nullable page's ``n`` definition levels at ``p`` into ``lv``: (the position after
    them, or -1 when malformed; how many are 1)."""
    if p + 4 > end:
        return -1, 0
    ln = np.int64(_le(src, p, 4))
    p += 4
    if p + ln > end or _hybrid(src, p, p + ln, 1, n, lv) < 0:
        return -1, 0
    nn = 0
    for j in range(n):
        nn += np.int64(lv[j])
    return p + ln, nn


@numba.njit(cache=True, nogil=True)
def _page(src, p, end, enc, n, pw, nullable, keys, have_dict, ix, tmp, lv, dst, valid, base):
    """A data page's ``n`` rows at ``p`` (levels, then values) into ``dst[base:]`` and, for a
    nullable column, ``valid[base:]``; 0 or E_*."""
    nn = n
    if nullable:
        p, nn = _levels(src, p, end, n, lv)
        if p < 0:
            return E_BOUNDS
        valid[base:base + n] = lv[:n]
    if nn == n:
        return _values(src, p, end, enc, nn, pw, keys, have_dict, ix, dst, base)
    st = _values(src, p, end, enc, nn, pw, keys, have_dict, ix, tmp, 0)
    if st < 0:
        return st
    j = 0
    for i in range(n):
        if lv[i]:
            dst[base + i] = tmp[j]
            j += 1
        else:
            dst[base + i] = 0
    return 0


@numba.njit(cache=True, nogil=True)
def _all_or_none(src, p, end, n, lv, valid, o, sel, s, r):
    """Whether a nullable page's rows (``n`` from row ``r``, levels at ``p``) are all valid or
    all null: (where its values start, or -1 when neither; how many are valid). If so, the
    validity of the rows of ``sel[s:]`` in it is put in ``valid[o:]``."""
    q, nn = _levels(src, p, end, n, lv)
    if q < 0 or (nn != 0 and nn != n):
        return -1, nn
    t = s
    while t < sel.shape[0] and sel[t, 0] < r + n:
        a = max(sel[t, 0], r) - r
        b = min(sel[t, 1], r + n) - r
        valid[o:o + b - a] = lv[a:b]
        o += b - a
        t += 1
    return q, nn


@numba.njit(cache=True, nogil=True)
def _decode(big, scratch, table, npages, pw, nullable, out, valid, whole, sel, work):
    """The pages ``table[:npages]`` (a column's, in row order) into ``out`` (unsigned, of the
    column's width; values ``pw`` bytes wide in the pages) and, for a nullable column,
    ``valid`` (uint8): every row (``whole``), or the rows of the ranges ``sel`` (``[start,
    end)`` pairs in the pages' row numbering, in order, not overlapping), one after another.
    A page with none of them is not decoded. ``work``: :data:`WORK_BYTES` bytes a value of the
    largest page (the caller's: a fresh allocation's pages fault in on every call). Returns 0,
    or ``E_* * 2 ** 32 - chunk`` for the first bad page."""
    most = 0
    for k in range(npages):
        most = max(most, table[k, P_VALUES])
    if work.size < WORK_BYTES * most:
        return E_BOUNDS * (1 << 32)
    tmp = work[:8 * most].view(np.uint64)               # a nullable page's values
    pg = work[8 * most:16 * most].view(np.uint64)       # a page cut by the ranges, whole
    ix = work[16 * most:20 * most].view(np.uint32)      # a page's dictionary indices
    lv = work[20 * most:21 * most]                      # a page's levels
    pv = work[21 * most:22 * most]                      # and those of a page cut
    keys = np.empty(0, np.uint64)
    dchunk = -1
    r = 0               # the page's first row
    o = 0               # where its rows wanted go in ``out``
    s = 0               # the first range not wholly before the page
    for k in range(npages):
        row = table[k]
        src = scratch if row[P_BUF] else big
        p = row[P_OFF]
        end = p + row[P_SIZE]
        c = row[P_CHUNK]
        n = row[P_VALUES]
        enc = row[P_ENC]
        if row[P_KIND] == SKIPPED:
            continue
        if row[P_KIND] == parquet.DICTIONARY_PAGE:
            if enc != parquet.PLAIN and enc != 2:          # PLAIN (or PLAIN_DICTIONARY)
                return E_ENCODING * (1 << 32) - c
            if p + n * pw > end:
                return E_BOUNDS * (1 << 32) - c
            keys = np.empty(n, np.uint64)
            _plain(src, p, n, pw, keys, 0)
            dchunk = c
            continue
        if whole:
            st = _page(src, p, end, enc, n, pw, nullable, keys, dchunk == c, ix, tmp, lv,
                       out, valid, r)
        else:
            while s < sel.shape[0] and sel[s, 1] <= r:
                s += 1
            if s == sel.shape[0] or sel[s, 0] >= r + n:        # none of the page's rows
                r += n
                continue
            if sel[s, 0] <= r and sel[s, 1] >= r + n:         # all of them
                st = _page(src, p, end, enc, n, pw, nullable, keys, dchunk == c, ix, tmp, lv,
                           out, valid, o)
                o += n
            elif not nullable:
                st, o = _picked(src, p, end, enc, n, pw, keys, dchunk == c, ix, pg, out, o,
                                sel, s, r)
            else:
                q, nn = _all_or_none(src, p, end, n, lv, valid, o, sel, s, r)
                if q >= 0 and nn:                    # all valid: the values as above
                    st, o = _picked(src, q, end, enc, n, pw, keys, dchunk == c, ix, pg, out,
                                    o, sel, s, r)
                elif q >= 0:                         # all null
                    st = 0
                    t = s
                    while t < sel.shape[0] and sel[t, 0] < r + n:
                        m = min(sel[t, 1], r + n) - max(sel[t, 0], r)
                        out[o:o + m] = 0
                        o += m
                        t += 1
                else:                                # some of each: the page whole, then cut
                    st = _page(src, p, end, enc, n, pw, nullable, keys, dchunk == c, ix, tmp,
                               lv, pg, pv, 0)
                    t = s
                    while t < sel.shape[0] and sel[t, 0] < r + n:
                        a = max(sel[t, 0], r) - r
                        b = min(sel[t, 1], r + n) - r
                        out[o:o + b - a] = pg[a:b]
                        valid[o:o + b - a] = pv[a:b]
                        o += b - a
                        t += 1
        if st < 0:
            return st * (1 << 32) - c
        r += n
    return 0


# -- files -------------------------------------------------------------------------------------
_PHYSICAL = {"INT32": parquet.INT32, "INT64": parquet.INT64, "DOUBLE": parquet.DOUBLE,
             "FIXED_LEN_BYTE_ARRAY": parquet.FIXED_LEN_BYTE_ARRAY}


@dataclass(frozen=True)
class Layout:
    """Where a file's column chunks lie (``chunks[group, column]``: start, bytes, codec, rows),
    taken from its footer once, and its columns (``name: (index in the file, Column)``)."""

    chunks: np.ndarray
    columns: dict


def layout(md, schema: pa.Schema) -> Layout:
    """The :class:`Layout` of a file with footer ``md`` whose columns are those of ``schema``
    (the store's Arrow schema); :class:`Unsupported` when they are not."""
    names = md.schema.names
    if len(names) != len(schema) or md.num_row_groups == 0:
        raise Unsupported("columns")
    cols = {}
    for j, f in enumerate(schema):
        if names[j] != f.name:
            raise Unsupported("columns")
        try:
            col = parquet.column_of(f)
        except TypeError as err:
            raise Unsupported(str(err)) from err
        cols[f.name] = (j, col)         # (float64 too: its values' bits as a uint64)
    chunks = np.zeros((md.num_row_groups, len(names), 4), np.int64)
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for name, (j, col) in cols.items():
            c = rg.column(j)
            if _PHYSICAL.get(c.physical_type) != col.physical or c.compression not in CODECS:
                raise Unsupported(f"{name}: {c.physical_type}, {c.compression}")
            start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
            chunks[g, j, :4] = (start, c.total_compressed_size, CODECS[c.compression],
                                rg.num_rows)
    return Layout(chunks, cols)


_local = threading.local()


def _first_bad_page(buf, table, k):
    """The first of a column's ``k`` pages (``table``'s rows) whose body's CRC-32 is not the
    one its header carries (-1: none)."""
    from tickstore import filewrite          # (which imports this module)
    return filewrite.first_bad_page(buf, table[:k, P_OFF], table[:k, P_COMP], table[:k, P_CRC])


def _crc_checker():
    """:func:`_first_bad_page`, by :mod:`tickstore.filewrite`'s compiled CRC-32 (libdeflate's
    or zlib's); None where that module has no C library to call."""
    from tickstore import filewrite
    return _first_bad_page if filewrite.AVAILABLE else None


KEEP_BYTES = 64 << 20     # a thread keeps its read buffer up to this size for the next read


def _buffer(name: str, n: int, keep: int | None = KEEP_BYTES) -> np.ndarray:
    """``n`` bytes of this thread's buffer ``name``, kept for its next call when not larger
    than ``keep`` bytes (None: whatever its size). A fresh buffer's pages fault in on first
    touch (~1 ms for the 18 MB of an instrument-hour); it comes from Arrow's allocator, which
    keeps freed pages mapped, where numpy's big arrays are fresh mappings. The readers', the
    append's gathers (``tickstore.store``) and the compiled file writer's buffers."""
    have = getattr(_local, name, None)
    if have is not None and have.size >= n:
        return have[:n]
    buf = np.frombuffer(pa.allocate_buffer(max(n, 1 << 20)), np.uint8)
    if keep is None or buf.size <= keep:
        setattr(_local, name, buf)
    return buf[:n]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zstd", None)
    if d is None:
        d = _local.zstd = zstandard.ZstdDecompressor()
    return d


def _width_of(col: parquet.Column) -> int:
    return col.type_length if col.physical == parquet.FIXED_LEN_BYTE_ARRAY else \
        (4 if col.physical == parquet.INT32 else 8)


@dataclass
class Fetched:
    """The bytes of some row groups' column chunks, read (:func:`fetch`), to decode once
    (:func:`decode`, :func:`decode_within`): ``big`` the reading thread's buffer, valid until
    its next fetch."""

    big: np.ndarray
    chunks: np.ndarray          # [group, field] as Layout.chunks, the start moved into ``big``
    fields: dict                # name: (index in ``chunks``' fields, pa.Field, Column)
    rows: int
    group_rows: np.ndarray      # each group's first row, and the rows' count at the end
    spans: list                 # each group's (path, group id, first byte, end, place in big)
    fds: list | None = None     # a lazy fetch's open files, a group's each: its columns' tasks
    shift: np.ndarray | None = None   # ... read their own chunks (a chunk's file offset + it)

    def close(self) -> None:
        for fd in set(self.fds or ()):
            os.close(fd)
        self.fds = None


NO_RANGES = np.zeros((0, 2), np.int64)
LAZY_GROUPS = 16    # row groups up to which each column's task reads its own chunks (a fetch
#                     of many files' groups reads each group's span at once: fewer calls)


def _read_chunks(got: Fetched, i: int) -> None:
    """Field ``i``'s chunks of a lazy fetch, read into their places in ``got.big``."""
    view = memoryview(got.big)
    for g in range(got.chunks.shape[0]):
        to, n = int(got.chunks[g, i, L_START]), int(got.chunks[g, i, L_SIZE])
        a = to - int(got.shift[g])
        have = os.preadv(got.fds[g], [view[to:to + n]], a)
        if have != n:
            path, gid = got.spans[g][:2]
            raise CorruptFile(f"{path}: row group {gid} needs bytes {a}-{a + n}, the file "
                              f"ends at {a + have}")


def fetch(parts: list, fields: list[pa.Field]) -> Fetched | None:
    """The chunks of ``fields`` of the row groups ``parts`` (``(path, Layout, group ids)``, in
    order), read: one ``pread`` a row group, from its first wanted chunk's start to its last
    one's end; or, for up to :data:`LAZY_GROUPS` groups, the files opened, and each column's
    chunks read by its own task as the decoding starts (on the decoders' threads, so that
    reading overlaps decoding; :func:`decode` closes the files). None when no group is asked
    for."""
    if not parts:
        return None
    lay0 = parts[0][1]
    want = [lay0.columns[f.name][0] for f in fields]
    ch = [lay.chunks[ids][:, want] for _, lay, ids in parts if len(ids)]
    if not ch:
        return None
    ch = np.concatenate(ch)
    lo = ch[:, :, L_START].min(axis=1)
    hi = (ch[:, :, L_START] + ch[:, :, L_SIZE]).max(axis=1)
    at = np.concatenate([[0], np.cumsum(hi - lo)])
    big = _buffer("big", int(at[-1]) + SLACK)
    view = memoryview(big)
    lazy = ch.shape[0] <= LAZY_GROUPS
    spans, fds = [], []
    k = 0
    try:
        for path, _, ids in parts:
            if not len(ids):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                for g, a, b, to in zip(ids, lo[k:k + len(ids)].tolist(),
                                       hi[k:k + len(ids)].tolist(), at[k:k + len(ids)].tolist()):
                    if not lazy:
                        got = os.preadv(fd, [view[to:to + b - a]], a)
                        if got != b - a:
                            raise CorruptFile(f"{path}: row group {g} needs bytes {a}-{b}, the "
                                              f"file ends at {a + got}")
                    spans.append((path, g, a, b, to))
                    fds.append(fd)
            finally:
                if not lazy:
                    os.close(fd)
            k += len(ids)
    except BaseException:
        for fd in set(fds) if lazy else ():
            os.close(fd)
        raise
    shift = at[:-1] - lo
    ch[:, :, L_START] += shift[:, None]
    group_rows = np.concatenate([[0], np.cumsum(ch[:, 0, L_ROWS])])
    cols = {f.name: (i, f, lay0.columns[f.name][1]) for i, f in enumerate(fields)}
    return Fetched(big, ch, cols, int(group_rows[-1]), group_rows, spans,
                   fds if lazy else None, shift if lazy else None)


def decode(got: Fetched, names: list[str], map_fn=map,
           ranges: np.ndarray | None = None) -> dict[str, pa.Array]:
    """The columns ``names`` of ``got`` as one Arrow array each: all rows, or those of
    ``ranges`` (``[start, end)`` pairs of rows in ``got``'s numbering, in order, not
    overlapping), one after another. ``map_fn`` runs the columns (threads)."""
    sel = None if ranges is None else np.ascontiguousarray(ranges, np.int64).reshape(-1, 2)
    keep = None if sel is None else _groups_wanted(got, sel)

    def one(name):
        return _finish(got, name, _prepare(got, name, keep, True), sel)

    try:
        return dict(zip(names, map_fn(one, names)))
    finally:
        got.close()


def decode_within(got: Fetched, keys: list[str], rest: list[str], pick, map_fn=map):
    """The columns ``keys`` of ``got`` whole, and of the columns ``rest`` the rows of the ranges
    ``pick(keys' arrays)`` gives (as :func:`decode`'s; all rows when it gives None), with the
    ``rest``'s pages parsed, checked and decompressed while the keys are decoded and the
    ranges found. All on ``map_fn``'s threads, as tasks in this order: the keys, then each
    other column's pages (the biggest first), then each one's rows, which wait for the ranges
    and their pages (tasks taken in order never wait on one not yet taken). Returns (the
    arrays by name, the ranges)."""
    state: dict = {}
    lock = threading.Lock()
    ready = threading.Event()
    others = [n for n in rest if n not in keys]
    size = {n: int(got.chunks[:, got.fields[n][0], L_SIZE].sum()) for n in others}
    others.sort(key=lambda n: -size[n])
    pages = {n: [threading.Event(), None] for n in others}

    def key(name):
        try:
            arr = _finish(got, name, _prepare(got, name, None, True), None)
        except BaseException:
            ready.set()
            raise
        with lock:
            state[name] = arr
            last = all(k in state for k in keys)
        if last:
            try:
                sel = pick({k: state[k] for k in keys})
                state["sel"] = (None if sel is None else
                                np.ascontiguousarray(sel, np.int64).reshape(-1, 2))
            finally:
                ready.set()
        return arr

    def prepare(name):
        box = pages[name]
        try:
            box[1] = _prepare(got, name, None, False)
        finally:
            box[0].set()

    def finish(name):
        box = pages[name]
        box[0].wait()
        ready.wait()
        if "sel" not in state or box[1] is None:     # a task before failed: it raises
            return None
        return _finish(got, name, box[1], state["sel"])

    tasks = ([(key, n) for n in keys] + [(prepare, n) for n in others]
             + [(finish, n) for n in others])
    try:
        done = list(map_fn(lambda task: task[0](task[1]), tasks))
    finally:
        got.close()
    out = dict(zip(keys, done[:len(keys)]))
    out.update(zip(others, done[len(keys) + len(others):]))
    return out, state.get("sel")


def _groups_wanted(got: Fetched, sel: np.ndarray) -> np.ndarray:
    """Which of ``got``'s row groups hold rows of the ranges ``sel``."""
    g = got.group_rows
    if sel.shape[0] == 0:
        return np.zeros(g.size - 1, bool)
    first = np.searchsorted(sel[:, 1], g[:-1], side="right")
    return (first < sel.shape[0]) & (sel[np.minimum(first, sel.shape[0] - 1), 0] < g[1:])


def read(parts: list, fields: list[pa.Field], map_fn=map) -> dict[str, pa.Array]:
    """The columns ``fields`` of the row groups ``parts`` (``(path, Layout, group ids)``,
    in order) as one Arrow array each. ``map_fn`` runs the columns (threads)."""
    got = fetch(parts, fields)
    if got is None:
        return {f.name: pa.array([], f.type) for f in fields}
    return decode(got, [f.name for f in fields], map_fn)


def _bad(status: int, spans, starts, name: str, what: str | None = None) -> Exception:
    """The error of a status of :func:`_pages` or :func:`_decode`: :class:`Unsupported` for a
    page this reader does not decode, else :class:`CorruptFile` naming the file, the column,
    the row group and the chunk's byte offset."""
    c = (-status) & 0xFFFFFFFF
    code = -((-status) >> 32)
    if code in (E_PAGE, E_ENCODING) and what is None:
        return Unsupported(f"{spans[c][0]}: {_MESSAGES[code]}")
    path, g, lo, _, at = spans[c]
    off = lo + int(starts[c]) - at
    return CorruptFile(f"{path}: column `{name}` of row group {g} (at byte {off}): "
                       f"{what or _MESSAGES.get(code, 'cannot be decoded')}")


def _unzstd(view, zi, table, spans, starts, name, scratch, at) -> None:
    """The zstd pages ``zi`` of ``table`` into ``scratch`` at ``at``, by ``zstandard``; an
    error names the page's chunk."""
    d = _decompressor()
    for i, off, comp, size, a in zip(zi.tolist(), table[zi, P_OFF].tolist(),
                                     table[zi, P_COMP].tolist(), table[zi, P_SIZE].tolist(),
                                     at[:-1].tolist()):
        try:
            raw = d.decompress(view[off:off + comp], max_output_size=size)
        except zstandard.ZstdError as err:
            raise _bad(E_HEADER * (1 << 32) - int(table[i, P_CHUNK]), spans, starts,
                       name, f"zstd: {err}") from err
        if len(raw) != size:
            raise _bad(E_BOUNDS * (1 << 32) - int(table[i, P_CHUNK]), spans, starts,
                       name, f"zstd gave {len(raw)} bytes for a page of {size}")
        scratch[a:a + size] = np.frombuffer(raw, np.uint8)


def _prepare(got: Fetched, name: str, keep: np.ndarray | None, local: bool):
    """Column ``name``'s pages in ``got``: parsed, their CRC-32s checked, the zstd ones
    decompressed (into this thread's scratch buffer when ``local``, else into one of their
    own); those of row groups not in ``keep`` (None: all) are not decompressed. Returns (page
    table, scratch buffer)."""
    i, f, col = got.fields[name]
    if got.fds is not None:
        _read_chunks(got, i)
    c = got.chunks[:, i]
    starts, sizes, nrows, codec = (np.ascontiguousarray(c[:, j]) for j in (
        L_START, L_SIZE, L_ROWS, L_CODEC))
    big, spans = got.big, got.spans
    table = np.empty((starts.size * 2 + 8, P_FIELDS), np.int64)
    while True:
        k = _pages(big, starts, sizes, nrows, table)
        if k != -(1 << 40):
            break
        table = np.empty((table.shape[0] * 4, P_FIELDS), np.int64)
    if k < 0:
        raise _bad(k, spans, starts, f.name)
    table = table[:k]
    check = _crc_checker()
    view = memoryview(big)
    if check is not None:             # each page's CRC-32, when written: one call
        bad = check(big, table, k)
        if bad >= 0:
            raise _bad(E_CRC * (1 << 32) - int(table[bad, P_CHUNK]), spans, starts, f.name)
    else:
        for j in range(k):
            off, comp = int(table[j, P_OFF]), int(table[j, P_COMP])
            if table[j, P_CRC] >= 0 and zlib.crc32(view[off:off + comp]) != table[j, P_CRC]:
                raise _bad(E_CRC * (1 << 32) - int(table[j, P_CHUNK]), spans, starts, f.name)
    chunk = table[:, P_CHUNK]
    zstd = codec[chunk] == parquet.ZSTD
    if keep is not None:                  # the pages of chunks with no row wanted: not needed
        kept = keep[chunk]
        zstd &= kept
        table[~kept & (table[:, P_KIND] == parquet.DICTIONARY_PAGE), P_KIND] = SKIPPED
    need = int(table[zstd, P_SIZE].sum()) + SLACK
    scratch = (_buffer("scratch", need) if local else
               np.frombuffer(pa.allocate_buffer(need), np.uint8))
    zi = np.flatnonzero(zstd)
    if zi.size:
        sizes_z = table[zi, P_SIZE]
        at = np.concatenate([[0], np.cumsum(sizes_z)])
        if check is not None:            # libzstd from compiled code: all pages in one call
            from tickstore import filewrite
            offs, comps = table[zi, P_OFF].copy(), table[zi, P_COMP].copy()
            bad = filewrite.decompress_pages(filewrite.dctx(), big, offs, comps, scratch,
                                             at[:-1].copy(), sizes_z.copy())
            if bad >= 0:      # say why: the same page again, through zstandard
                _unzstd(view, zi[bad:bad + 1], table, spans, starts, f.name, scratch, at[bad:])
                raise _bad(E_HEADER * (1 << 32) - int(table[zi[bad], P_CHUNK]), spans, starts,
                           f.name, "zstd: the page does not decompress")
        else:
            _unzstd(view, zi, table, spans, starts, f.name, scratch, at)
        table[zi, P_BUF] = 1
        table[zi, P_OFF] = at[:-1]
    nonzstd = codec[chunk] == parquet.UNCOMPRESSED
    table[nonzstd, P_SIZE] = table[nonzstd, P_COMP]
    return table, scratch


def _finish(got: Fetched, name: str, prepared, sel: np.ndarray | None) -> pa.Array:
    """Column ``name`` decoded from its :func:`_prepare`'d pages: all rows (``sel`` None), or
    those of the ranges ``sel``."""
    table, scratch = prepared
    i, f, col = got.fields[name]
    rows = got.rows if sel is None else int((sel[:, 1] - sel[:, 0]).sum())
    w = col.dtype.itemsize
    data = pa.allocate_buffer(max(rows * w, 1))     # Arrow's pool: pages mapped already
    out = np.frombuffer(data, np.dtype(f"u{w}"), count=rows)
    valid = np.empty(rows if col.nullable else 0, np.uint8)
    most = int(table[:, P_VALUES].max()) if table.shape[0] else 0
    status = _decode(got.big, scratch, table, table.shape[0], _width_of(col), col.nullable,
                     out, valid, sel is None, NO_RANGES if sel is None else sel,
                     _buffer("work", WORK_BYTES * most + 64))
    if status < 0:
        raise _bad(status, got.spans, np.ascontiguousarray(got.chunks[:, i, L_START]), f.name)
    if col.nullable:
        ok = valid.view(bool)
        nulls = rows - int(np.count_nonzero(ok))
        bitmap = pa.py_buffer(np.packbits(ok, bitorder="little")) if nulls else None
    else:
        nulls, bitmap = 0, None
    return pa.Array.from_buffers(f.type, rows, [bitmap, data], null_count=nulls)
