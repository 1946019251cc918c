"""Books straight from ITCH 5.0 bytes: framing, then the book, with no ``mbo`` table between.

:func:`book_itch` gives, for a BinaryFILE (plain, gzip, zstd) or a pcap/pcapng capture, the same
table as ``kernels.book.reconstruct(normalize.read_itch(src, resolve=False)["mbo"], levels=...)``
(one row per ``mbo`` event: instrument_id, ts_event, sequence and the top levels after it; the
:class:`~kernels.book.BookReport` in its metadata), row for row and bit for bit. It skips the
sixteen ``mbo`` columns (about 70 bytes an event written and read back): each message's book
fields are read from the bytes by the decoder's own :func:`normalize.itch_decode.mbo_event` and
applied by the book kernel's own steps (:mod:`kernels.book`). This is the path for "ITCH in,
best bid and offer out" on one core; it streams (memory bounded by the batch size), and
:func:`iter_book_itch` yields the book batch by batch. Bad input is handled as by
:func:`normalize.read_itch`: ``errors="raise"`` raises a typed error naming the byte offset
after the rows before it were applied (their books are on the exception, ``partial``);
``"skip"`` steps over bad units and warns.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numba
import numpy as np
import pyarrow as pa

from kernels.book import (AHEAD, BookBuilder, _book_table, _event, _late, _out_arrays,
                          _prefetch_book, _publish, _room, _with_report, book_schema)
from normalize import arena
from normalize import itch_decode as D
from normalize import reader as RD
from normalize._bytes import be16, be64
from normalize.itch_spec import MESSAGE_LENGTH
from tickpipe.errors import DecodeError

@numba.njit(cache=True, nogil=True)
def select_events(buf, offsets, types, units, index, seq_base, lut, n_known, out_off, out_inst,
                  out_seq, out_ix, fresh):
    """The ``mbo`` messages among framed ones: their offsets, instruments (stock locate), book
    indices and sequence numbers (``index[i].sequence`` for captures; else ``seq_base`` plus
    ``units[i]``, the message's framing unit, or plus ``i``).

    Book indices come through ``lut`` (stock locate -> index, -1 for none yet, as
    :func:`kernels.book.dense_index`); locates not seen before get the next indices and are
    listed in ``fresh``. Returns ``(events, instruments known afterwards)``."""
    has_index = index.shape[0] == offsets.shape[0] and offsets.shape[0] > 0
    has_units = units.shape[0] > 0
    m = 0
    k = n_known
    for i in range(offsets.shape[0]):
        if D.TYPE_KIND[types[i]] != D.KIND_MBO:
            continue
        p = offsets[i]
        out_off[m] = p
        loc = be16(buf, p + D.O_LOCATE)
        out_inst[m] = loc
        d = lut[loc]
        if d < 0:
            d = k
            lut[loc] = k
            fresh[k - n_known] = loc
            k += 1
        out_ix[m] = d
        if has_index:
            out_seq[m] = index[i].sequence
        else:
            out_seq[m] = np.uint64(seq_base + (units[i] if has_units else i))
        m += 1
    return m, k


@numba.njit(cache=True, nogil=True)
def frame_events(buf, pos, stop, explen, cap, counts, skip, skipped_at, skipped_why, seq_base,
                 lut, n_known, out_off, out_inst, out_seq, out_ix, fresh):
    """:func:`normalize.itch_decode.frame_binaryfile` and :func:`select_events` in one pass:
    walks BinaryFILE units in ``buf[pos:stop]`` (at most ``cap`` messages; the same checks,
    bad-unit handling and counts as ``frame_binaryfile``) and lists only the ``mbo`` messages,
    with their instruments, book indices (through ``lut``; new locates listed in ``fresh``) and
    sequence numbers (``seq_base`` plus the unit's index, skipped units counted).

    Returns ``(n_messages, next_pos, status, fault_pos, n_skipped, events, instruments known)``.

    The listing of an event is written out here and in :func:`select_events`: as a shared
    inline helper it made this loop four times slower (33 against 8 ns a message).
    """
    n = 0
    ns = 0
    m = 0
    k = n_known
    status = D.OK
    while pos + 2 <= stop:
        if n >= cap:
            status = D.FULL
            break
        length = be16(buf, pos)
        end = pos + 2 + length
        if length > 0 and end > stop:
            break
        t = buf[pos + 2] if length > 0 else np.uint8(0)
        why = 0
        if length == 0:
            why = D.ERR_ZERO_LENGTH
        elif explen[t] != length:
            why = D.ERR_UNKNOWN_TYPE if explen[t] == 0 else D.ERR_LENGTH
        if why != 0:
            if not skip:
                return n, pos, why, pos, ns, m, k
            ns = D.record_skip(skipped_at, skipped_why, ns, pos, why)
            pos = end
            continue
        p = pos + 2
        if D.TYPE_KIND[t] == D.KIND_MBO:
            out_off[m] = p
            loc = be16(buf, p + D.O_LOCATE)
            out_inst[m] = loc
            d = lut[loc]
            if d < 0:
                d = k
                lut[loc] = k
                fresh[k - n_known] = loc
                k += 1
            out_ix[m] = d
            out_seq[m] = np.uint64(seq_base + n + ns)
            m += 1
        counts[t] += 1
        n += 1
        pos = end
    return n, pos, status, pos, ns, m, k


@numba.njit(cache=True, nogil=True, _nrt=False)
def apply_itch(buf, off, ix, clk_mid, clk_switch, clk_off0, clk_off1, last_ts, start,
               lv, lcap, nlev, top, nt, ni, tab, count, used, out_ts, out_px, out_sz, out_ct,
               tally, crossed_at, late_at):
    """:func:`kernels.book.apply_events` over ``mbo`` messages at ``buf[off[i]]`` (book index
    ``ix[i]``) instead of columns; also writes each event's ``ts_event`` to ``out_ts``."""
    n = off.shape[0]
    for i in range(start, n):
        j = i + AHEAD
        if j < n:     # an order-less message (Q, B) prefetches a harmless slot
            _prefetch_book(nt, be64(buf, off[j] + D.O_REF), lv, lcap, nlev, top, ix[j])
        p = off[i]
        a, oid, noid, px, sz, sd = D.mbo_event(buf, p, buf[p])
        ii = ix[i]
        st = _room(a, used, tab, nlev, top, ii, lcap)
        if st != 0:
            return i, count, used, st
        t = np.int64(D._ts(buf, p, clk_mid, clk_switch, clk_off0, clk_off1))
        out_ts[i] = t
        _late(t, ii, i, last_ts, tally, late_at)
        count, used = _event(a, oid, noid, px, sz, sd, ii, lv, lcap, nlev, top, nt, ni, tab,
                             count, used, tally)
        _publish(lv, lcap, nlev, top, ii, i, tally, crossed_at, out_px, out_sz, out_ct, i)
    return n, count, used, 0


MIN_ORDER_SLOTS, MAX_ORDER_SLOTS = 1 << 18, 1 << 20


def order_slots(path_or_buffer) -> int:
    """Direct order-map slots to start with for an input of this size: about one per 128 bytes
    (ITCH runs about 31 bytes a message, 40% of them adds, and most orders leave soon), a power
    of two in ``[2**18, 2**20]``, so a large input skips the map's rebuilds on the way and a
    small one takes no more memory than before. Compressed files count three bytes a byte."""
    try:
        if isinstance(path_or_buffer, (str, os.PathLike)):
            n = os.path.getsize(path_or_buffer)
            if RD.compression(path_or_buffer) is not None:
                n *= 3
        elif hasattr(path_or_buffer, "read"):
            return MIN_ORDER_SLOTS
        else:
            n = memoryview(path_or_buffer).nbytes
    except (OSError, TypeError):
        return MIN_ORDER_SLOTS
    want = 1 << max(0, int(n // 128) - 1).bit_length()
    return min(max(want, MIN_ORDER_SLOTS), MAX_ORDER_SLOTS)


class EventLists(NamedTuple):
    """What :func:`select_events` and :func:`frame_events` take after ``seq_base``: the locate
    table and the instruments known, then the lists they fill (in this order)."""
    lut: np.ndarray
    n_known: int
    off: np.ndarray
    inst: np.ndarray
    seq: np.ndarray
    ix: np.ndarray
    fresh: np.ndarray


class ItchBook:
    """A :class:`~kernels.book.BookBuilder` fed framed ITCH messages batch by batch.

    Carries the books, the order map and the sequence count between batches. Not thread-safe.
    """

    def __init__(self, clock, *, levels: int = 10, builder: BookBuilder | None = None,
                 orders: int = 1 << 18):
        self.clock = clock
        self.builder = builder if builder is not None else BookBuilder(levels=levels,
                                                                       orders=orders)
        self.next_sequence = 1

    def apply(self, buf: np.ndarray, offsets: np.ndarray, types: np.ndarray,
              units: np.ndarray = RD._NO_UNITS, index: np.ndarray | None = None,
              n_units: int | None = None) -> pa.Table:
        """The book after each ``mbo`` message among the framed messages at ``offsets``.

        ``units``: each message's framing unit (skipped units counted, so sequence numbers
        match :func:`normalize.read_itch`'s), ``n_units`` how many units the batch spanned;
        ``index``: a capture's per-message metadata (sequence numbers from the packets).
        """
        n_all = offsets.shape[0]
        ev = self._event_lists(n_all)
        m, n_new = select_events(buf, offsets, types, units,
                                 index if index is not None else RD._NO_INDEX,
                                 self.next_sequence, *ev)
        self._new_books(ev, n_new)
        if index is None:
            self.next_sequence += n_units if n_units is not None else n_all
        return self._books(buf, ev, m)

    def walk(self, buf: np.ndarray, pos: int, stop: int, max_messages: int, skip: bool,
             skipped_at: np.ndarray, skipped_why: np.ndarray, counts: np.ndarray):
        """The book after each ``mbo`` message of BinaryFILE bytes ``buf[pos:stop]`` (at most
        ``max_messages`` messages), framed and selected in one pass (:func:`frame_events`).

        Returns ``(table or None, messages, next_pos, status, fault_pos, skipped)``, the step
        of :func:`normalize.reader._walk_binaryfile`; ``counts`` gets the messages by type."""
        ev = self._event_lists(max_messages)
        n, npos, status, fault, ns, m, n_new = frame_events(
            buf, pos, stop, MESSAGE_LENGTH, max_messages, counts, skip, skipped_at, skipped_why,
            self.next_sequence, *ev)
        self._new_books(ev, n_new)
        self.next_sequence += n + ns
        table = self._books(buf, ev, m) if n else None
        return table, n, npos, status, fault, ns

    def _event_lists(self, cap: int) -> "EventLists":
        """The arguments the selecting kernels take after ``seq_base``, with room for ``cap``
        events."""
        lut = self.builder.locate_table()
        return EventLists(lut, self.builder.instruments.size,
                          arena.take(cap * 8).view(np.int64), arena.take(cap * 4).view(np.uint32),
                          arena.take(cap * 8).view(np.uint64), arena.take(cap * 8).view(np.int64),
                          np.empty(min(cap, lut.size), np.uint32))

    def _new_books(self, ev: "EventLists", n_new: int) -> None:
        """Books for the instruments a selecting kernel met first (listed in ``fresh``)."""
        if n_new > ev.n_known:
            self.builder._add_books(ev.fresh[:n_new - ev.n_known].copy())

    def _books(self, buf, ev: "EventLists", m: int) -> pa.Table:
        """Apply the first ``m`` listed ``mbo`` messages; the book table around their keys."""
        b = self.builder
        off, inst, seq, ix = ev.off[:m], ev.inst[:m], ev.seq[:m], ev.ix[:m]
        ts = arena.take(m * 8).view(np.int64)
        out = _out_arrays(m, b.levels)
        c = self.clock
        b.run_kernel(apply_itch, (buf, off, ix, c.local_midnight_ns, c.switch_ns, c.offset_before,
                                  c.offset_after, b.last_ts), (ts, *out), m)
        keys = [pa.Array.from_buffers(typ, m, [None, pa.py_buffer(a)]) for typ, a in (
            (pa.uint32(), inst), (pa.timestamp("ns", tz="UTC"), ts), (pa.uint64(), seq))]
        return _book_table(None, *out, keys=keys)


def _binaryfile_batches(src, book: ItchBook, *, batch_size: int, chunk_bytes: int, skip: bool,
                        stats: RD.DecodeStats) -> Iterator[pa.Table]:
    def step(buf, pos, stop, skipped_at, skipped_why):
        counts = np.zeros(256, np.int64)
        out = book.walk(buf, pos, stop, batch_size, skip, skipped_at, skipped_why, counts)
        stats.add_counts(counts)
        return out

    yield from RD._walk_binaryfile(src, chunk_bytes=chunk_bytes, skip=skip, stats=stats, step=step)


def iter_book_itch(path_or_buffer, *, levels: int = 10, date=None, errors: str = "raise",
                   batch_size: int | None = None, chunk_bytes: int = RD.DEFAULT_CHUNK,
                   book: ItchBook | None = None,
                   stats: RD.DecodeStats | None = None) -> Iterator[pa.Table]:
    """Stream the book after every ``mbo`` event of an ITCH 5.0 source, one table per batch
    (arguments as :func:`normalize.iter_itch`; ``book`` carries state across calls)."""
    skip = RD._check_errors(errors)
    batch_size = batch_size or RD.DEFAULT_BATCH
    if batch_size < 1:
        raise ValueError(f"The `batch_size` must be at least 1, was {batch_size}.")
    clock_src = path_or_buffer if isinstance(path_or_buffer, (str, os.PathLike)) else None
    book = book if book is not None else ItchBook(RD.resolve_date(clock_src, date), levels=levels,
                                                  orders=order_slots(path_or_buffer))
    stats = stats if stats is not None else RD.DecodeStats()
    if RD._source_kind(path_or_buffer) == "binaryfile":
        yield from _binaryfile_batches(path_or_buffer, book, batch_size=batch_size,
                                       chunk_bytes=chunk_bytes, skip=skip, stats=stats)
    else:
        for fb in RD._capture_batches(path_or_buffer, batch_size=batch_size, skip=skip,
                                      stats=stats):
            yield book.apply(fb.buf, fb.offsets, fb.types, index=fb.index)


def book_itch(path_or_buffer, *, levels: int = 10, date=None, errors: str = "raise",
              batch_size: int | None = None, stats: RD.DecodeStats | None = None) -> pa.Table:
    """The book after every ``mbo`` event of an ITCH 5.0 source (see the module docstring):
    equal to ``reconstruct(read_itch(src, resolve=False)["mbo"], levels=levels)``."""
    stats = stats if stats is not None else RD.DecodeStats()
    clock_src = path_or_buffer if isinstance(path_or_buffer, (str, os.PathLike)) else None
    book = ItchBook(RD.resolve_date(clock_src, date), levels=levels,
                    orders=order_slots(path_or_buffer))
    parts: list[pa.Table] = []

    def table() -> pa.Table:
        t = pa.concat_tables(parts) if parts else book_schema(levels).empty_table()
        return _with_report(t, book.builder.report)

    try:
        for t in iter_book_itch(path_or_buffer, levels=levels, errors=errors,
                                batch_size=batch_size, book=book, stats=stats):
            if t.num_rows:
                parts.append(t)
    except DecodeError as e:
        e.partial = table()
        raise
    RD.warn_skipped(path_or_buffer, stats, errors)
    return table()
