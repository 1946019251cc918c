"""Order-book reconstruction: ``mbo`` events to the book after every event (L3 -> MBP-k).

:func:`reconstruct` rebuilds, for any number of instruments interleaved, the top ``levels`` price
levels of each side (price, size, order count) after every event. :class:`BookBuilder` is the
same machine fed batch by batch (state carried between batches) and exports its end state as
snapshot events that seed a later run.

The compiled core walks the events once. Per order it keeps (price, remaining, side, instrument)
in compiled tables (:mod:`kernels.orders`: 16-byte direct rows for the orders that fit, which
is every ITCH order, and the open-addressing map of :mod:`normalize.ordermap` for the rest; no
Python or typed dict in the loop); per instrument and side a sorted array of price levels, best last (so activity at the
top of the book shifts few entries), that grows when a side runs out of room. Semantics:

* add: a new order joins its level (a replace's new order keeps nothing of the old queue place);
* execute / partial cancel: the order's level loses the shares; a fully filled order leaves;
* delete: the order's remaining shares leave its level;
* replace: delete of the old order, add of the new at the new price and size, same side;
* non-displayed trades, crosses, broken trades: no book change;
* clear (``ACTION_CLEAR``): the instrument's levels are emptied (used before snapshot adds).

An event for an order the book has never seen (placed before the data started) is applied at the
event's own price, side and size when it carries them (LOBSTER, ``F_WITH_PRICE`` executions) and
counted in ``applied_unknown``; when it carries none it changes nothing and is counted in
``unknown``: never guessed. A book that ends up crossed or locked (best bid >= best ask) is
counted, with the first events that caused it listed.

Devices: this module is the numba CPU book; :mod:`kernels.book_gpu` is the CUDA book (one
thread per instrument) that :func:`reconstruct` uses with ``device="gpu"`` or, for large inputs
on a machine with a GPU, ``"auto"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

from normalize import arena
from normalize import records as R
from kernels.levels import (ASK, BID, PX, W, hashed_add, hashed_clear, hashed_regrow,
                            hashed_room, hashed_sub, level_add, level_sub, write_top)
from kernels.levels import side_index as _side
from normalize._bytes import prefetch
from kernels import orders as O
from normalize.ordermap import (EMPTY, H_TOP, _hdr, _put, find, price_of, remaining_of, remove,
                                set_remaining, side_of, spill_room)

DEVICES = ("auto", "cpu", "gpu")
EVENT_COLUMNS = (("ts_event", np.int64), ("action", np.uint8), ("order_id", np.uint64),
                 ("new_order_id", np.uint64),
                 ("price", np.int64), ("size", np.uint64), ("side", np.uint8),
                 ("instrument_id", np.uint32))
PARALLEL_MIN_EVENTS = 200_000   # whole-input reconstructions this large use every core
_NO_ROWS = np.zeros(0, np.int64)
GPU_MIN_EVENTS = 1_000_000   # "auto" sends at least this many events to a GPU, when there is one
NEED_LEVELS = -1          # kernel result: a side has no room for another level
NEED_ORDERS = -2          # kernel result: the order map must grow
AHEAD = 6                 # events between prefetching an event's order slot and book tops, and using them


@numba.njit(inline="always")
def _room(a, used, tab, nlev, top, ii, lcap):
    """0, or what must grow before an add or replace can be applied."""
    if a == R.ACTION_ADD or a == R.ACTION_REPLACE:
        if not spill_room(tab, used):
            return NEED_ORDERS
        # room for one more level on either side (a replace may move sides' levels)
        if top.shape[0] > 0:
            if not (hashed_room(nlev[ii, BID], lcap) and hashed_room(nlev[ii, ASK], lcap)):
                return NEED_LEVELS
        elif nlev[ii, BID] >= lcap - 1 or nlev[ii, ASK] >= lcap - 1:
            return NEED_LEVELS
    return 0


@numba.njit(inline="always")
def _add(lv, lcap, nlev, top, ii, s, price, qty, dcount):
    """Add shares and orders to a level of side ``s`` of book ``ii``: the side's new level
    count. Sorted levels (:func:`kernels.levels.level_add`) or, when ``top`` has rows (the
    best bid and offer only), hashed ones (:func:`kernels.levels.hashed_add`)."""
    base = (ii * 2 + s) * lcap
    if top.shape[0] > 0:
        return hashed_add(lv, base, nlev[ii, s], lcap, top, ii, s, price, qty, dcount)
    return level_add(lv, base, nlev[ii, s], lcap, s, price, qty, dcount)


@numba.njit(inline="always")
def _sub(lv, lcap, nlev, top, ii, s, price, qty, dcount):
    """Take shares and orders from a level (as :func:`_add`): the new level count, or -1 when
    the side has no level at ``price``."""
    base = (ii * 2 + s) * lcap
    if top.shape[0] > 0:
        return hashed_sub(lv, base, nlev[ii, s], lcap, top, ii, s, price, qty, dcount)
    return level_sub(lv, base, nlev[ii, s], s, price, qty, dcount)


@numba.njit(inline="always")
def _late(t, ii, i, last_ts, tally, late_at):
    """Count (and list the first of) events older than their instrument's latest."""
    if t < last_ts[ii]:
        if tally[4] < late_at.shape[0]:
            late_at[tally[4]] = i
        tally[4] += 1
    else:
        last_ts[ii] = t


@numba.njit(inline="always")
def _wide_find(tab, key, count):
    """Row of ``key`` in the general map behind the 16-byte rows (:mod:`kernels.orders`), or
    -1; with ``count`` live orders there. A reference above the largest it ever held is
    answered from the header row, without touching the key's row."""
    if count == 0 or key > tab[_hdr(tab), H_TOP]:
        return -1
    return find(tab, key)


@numba.njit(inline="always")
def _insert(nt, ni, tab, key, px, sz, s, sd, ii, count, used):
    """Store a new order (side index ``s``, side code ``sd``) in a 16-byte row when it fits
    and its row is free, else in the general map; a live order of the same reference is
    overwritten. Returns ``(count, used)`` of the general map."""
    r = O.row_of(nt, key)
    cur = nt[r, O.KEY]
    p4 = O.units(key, px, sz)
    if cur == key and key != EMPTY:
        if p4 >= 0:
            O.put(nt, ni, r, key, p4, s, sz, ii)
            return count, used
        O.n_clear(nt, r)                  # moves to the general map
    elif cur == EMPTY and p4 >= 0 and _wide_find(tab, key, count) < 0:
        O.put(nt, ni, r, key, p4, s, sz, ii)
        return count, used
    was_live, took_empty = _put(tab, key, px, sz, sd, ii)
    if not was_live:
        count += 1
        used += took_empty
    return count, used


# Not inlined by numba (LLVM inlines it where it pays): inlining this one at numba's level made
# each kernel that calls it take ~100 s to compile instead of ~40, for the same speed.
@numba.njit
def _event(a, oid, noid, px, sz, sd0, ii, lv, lcap, nlev, top, nt, ni, tab, count, used, tally):
    """Apply one event (action ``a``, order ``oid``, replace's new order ``noid``, price,
    size, side code) to book ``ii`` and the order table (16-byte rows ``nt``, ``ni`` and the
    general map ``tab``: :mod:`kernels.orders`); returns ``(count, used)`` of the general
    map. The caller made room first (:func:`_room`).

    The level updates are written out at each place: the same code as two inline helpers (take
    from a level, add a new order) measured 15 ns/event slower in ``book_itch``."""
    if a == R.ACTION_ADD:
        s = _side(sd0)
        if s < 0 or px == R.UNDEF_PRICE:
            tally[3] += 1
        else:
            r = O.row_of(nt, oid)
            if nt[r, O.KEY] == oid and oid != EMPTY:     # reused live reference: its old shares leave
                s0 = O.n_side(nt, r)
                m = _sub(lv, lcap, nlev, top, ii, s0, O.n_price(nt, r), O.n_remaining(nt, r), 1)
                if m >= 0:
                    nlev[ii, s0] = m
                tally[3] += 1
                O.n_clear(nt, r)
            else:
                k = _wide_find(tab, oid, count)
                if k >= 0:
                    s0 = _side(side_of(tab, k))
                    m = _sub(lv, lcap, nlev, top, ii, s0, price_of(tab, k),
                             remaining_of(tab, k), 1)
                    if m >= 0:
                        nlev[ii, s0] = m
                    tally[3] += 1
            count, used = _insert(nt, ni, tab, oid, px, sz, s, sd0, ii, count, used)
            nlev[ii, s] = _add(lv, lcap, nlev, top, ii, s, px, sz, 1)     # room was checked above
    elif (a == R.ACTION_EXECUTE or a == R.ACTION_CANCEL or a == R.ACTION_DELETE
          or a == R.ACTION_REPLACE):
        # the order: in its 16-byte row, or in the general map (k), or unknown
        r = O.row_of(nt, oid)
        narrow = nt[r, O.KEY] == oid and oid != EMPTY
        k = -1
        rem = np.uint64(0)
        s = 0
        p0 = np.int64(0)
        if narrow:
            rem = O.n_remaining(nt, r)
            s = O.n_side(nt, r)
            p0 = O.n_price(nt, r)
        else:
            k = _wide_find(tab, oid, count)
            if k >= 0:
                rem = remaining_of(tab, k)
                s = _side(side_of(tab, k))
                p0 = price_of(tab, k)
        known = narrow or k >= 0
        if a == R.ACTION_REPLACE:
            sd = sd0
            if known:
                m = _sub(lv, lcap, nlev, top, ii, s, p0, rem, 1)
                if m < 0:
                    tally[3] += 1
                else:
                    nlev[ii, s] = m
                if narrow:
                    O.n_clear(nt, r)
                    sd = np.uint8(R.SIDE_BID if s == BID else R.SIDE_ASK)
                else:
                    sd = side_of(tab, k)
                    used -= remove(tab, k)
                    count -= 1
            s = _side(sd)
            if s < 0:
                tally[0] += 1            # the new order's side is unknown: reported, not guessed
            else:
                if not known:
                    tally[1] += 1
                count, used = _insert(nt, ni, tab, noid, px, sz, s, sd, ii, count, used)
                nlev[ii, s] = _add(lv, lcap, nlev, top, ii, s, px, sz, 1)
        elif not known:
            s = _side(sd0)
            q = sz
            if s >= 0 and px != R.UNDEF_PRICE and q > 0:
                m = _sub(lv, lcap, nlev, top, ii, s, px, q, 0)
                if m < 0:
                    tally[3] += 1
                else:
                    nlev[ii, s] = m
                tally[1] += 1
            else:
                tally[0] += 1
        else:
            q = rem if a == R.ACTION_DELETE else sz
            if q > rem:
                tally[3] += 1
                q = rem
            gone = q >= rem
            m = _sub(lv, lcap, nlev, top, ii, s, p0, q, 1 if gone else 0)
            if m < 0:
                tally[3] += 1
            else:
                nlev[ii, s] = m
            if narrow:
                if gone:
                    O.n_clear(nt, r)
                else:
                    O.n_set_remaining(nt, r, rem - q)
            elif gone:
                used -= remove(tab, k)
                count -= 1
            else:
                set_remaining(tab, k, rem - q)
    elif a == R.ACTION_CLEAR:
        if top.shape[0] > 0:
            hashed_clear(lv, ii * 2 * lcap, 2 * lcap)
        nlev[ii, BID] = 0
        nlev[ii, ASK] = 0
    return count, used


@numba.njit(inline="always")
def _publish(lv, lcap, nlev, top, ii, i, tally, crossed_at, out_px, out_sz, out_ct, r):
    """Check book ``ii`` for a cross (listing event ``i``) and write its top levels to row ``r``."""
    nb = nlev[ii, BID]
    na = nlev[ii, ASK]
    if top.shape[0] > 0:                          # best level of each side
        tb = ((ii * 2) * lcap + top[ii, BID]) * W
        ta = ((ii * 2 + 1) * lcap + top[ii, ASK]) * W
    else:
        tb = ((ii * 2) * lcap + nb - 1) * W
        ta = ((ii * 2 + 1) * lcap + na - 1) * W
    bp = lv[np.uint64(tb + PX)] if nb > 0 else R.UNDEF_PRICE
    ap = lv[np.uint64(ta + PX)] if na > 0 else R.UNDEF_PRICE
    if nb > 0 and na > 0 and bp >= ap:
        if tally[2] < crossed_at.shape[0]:
            crossed_at[tally[2]] = i
        tally[2] += 1
    write_top(lv, tb, ta, nb, na, out_px, out_sz, out_ct, r)


@numba.njit(inline="always")
def _prefetch_book(nt, oid, lv, lcap, nlev, top, ij):
    """Request an event's order row and both sides' top levels a few events early."""
    prefetch(nt, O.row_of(nt, oid) * np.uint64(2))
    for s2 in range(2):
        t = top[ij, s2] if top.shape[0] > 0 else max(nlev[ij, s2] - 1, 0)
        prefetch(lv, ((ij * 2 + s2) * lcap + t) * W)


@numba.njit(cache=True, nogil=True, _nrt=False)
def apply_events(action, order_id, new_order_id, price, size, side, ix, ts, last_ts, start,
                 lv, lcap, nlev, top, nt, ni, tab, count, used, out_px, out_sz, out_ct, out_rows,
                 tally, crossed_at, late_at):
    """Apply events ``start..`` and write the top levels after each (``out_*[side, k, r]``,
    ``r = out_rows[i]``, or ``i`` when ``out_rows`` is empty).

    ``ix`` is each event's dense instrument index; ``lv`` the flat level array of every book
    (:mod:`kernels.levels`; side ``s`` of book ``ii`` starts at level ``(ii * 2 + s) * lcap``).
    ``tally`` counts: 0 unknown (not applied), 1 applied_unknown, 2 crossed, 3 inconsistent (a
    level or order the event needs is missing), 4 late (``ts`` below an earlier event's of the
    same instrument, ``last_ts`` per instrument; applied all the same, in input order); the
    first crossed and late events are listed in ``crossed_at`` and ``late_at``. Returns ``(next_event, count, used, status)``;
    status NEED_LEVELS / NEED_ORDERS asks the caller to grow the level arrays or the order map
    and call again from ``next_event``.
    """
    n = action.shape[0]
    remap = out_rows.shape[0] > 0
    for i in range(start, n):
        j = i + AHEAD
        if j < n:
            _prefetch_book(nt, order_id[j], lv, lcap, nlev, top, ix[j])
        a = action[i]
        ii = ix[i]
        st = _room(a, used, tab, nlev, top, ii, lcap)
        if st != 0:
            return i, count, used, st
        _late(ts[i], ii, i, last_ts, tally, late_at)
        count, used = _event(a, order_id[i], new_order_id[i], price[i], size[i], side[i], ii,
                             lv, lcap, nlev, top, nt, ni, tab, count, used, tally)
        _publish(lv, lcap, nlev, top, ii, i, tally, crossed_at, out_px, out_sz, out_ct,
                 out_rows[i] if remap else i)
    return n, count, used, 0


@numba.njit(cache=True, nogil=True)
def dense_index(inst, lut, n_known, out, fresh):
    """``out[i]``: the dense book index of ``inst[i]`` through ``lut`` (instrument id -> index,
    -1 for none yet); unseen instruments get the next indices in order of first appearance and
    are listed in ``fresh``. Returns the number of instruments known afterwards. ``lut`` must
    cover every id."""
    k = n_known
    for i in range(inst.shape[0]):
        d = lut[inst[i]]
        if d < 0:
            d = k
            lut[inst[i]] = k
            fresh[k - n_known] = inst[i]
            k += 1
        out[i] = d
    return k


@dataclass
class BookReport:
    events: int = 0
    unknown: int = 0              # events for unseen orders that carried no price/side: not applied
    applied_unknown: int = 0      # events for unseen orders applied at their own price and size
    crossed: int = 0              # events after which the book was crossed or locked
    crossed_at: list[int] = field(default_factory=list)   # first such events (global index)
    late: int = 0                 # events earlier than an earlier event of their instrument
    late_at: list[int] = field(default_factory=list)      # first such events (global index)
    inconsistent: int = 0         # a level or order an event needed was missing

    def merge(self, other: "BookReport") -> None:
        """Add ``other``'s counts (its ``crossed_at`` in the same row numbering)."""
        self.events += other.events
        self.unknown += other.unknown
        self.applied_unknown += other.applied_unknown
        self.crossed += other.crossed
        self.crossed_at = sorted(self.crossed_at + other.crossed_at)[:16]
        self.late += other.late
        self.late_at = sorted(self.late_at + other.late_at)[:16]
        self.inconsistent += other.inconsistent


def _col(t: pa.Table | pa.RecordBatch, name: str, dtype) -> np.ndarray:
    c = t.column(name)
    if isinstance(c, pa.ChunkedArray):
        c = c.combine_chunks()
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    return np.ascontiguousarray(c.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)


class BookBuilder:
    """Books of many instruments, fed ``mbo`` batches in order. Not thread-safe."""

    LUT_MAX = 1 << 22        # instrument ids below this map through a direct table (int32)

    def __init__(self, *, levels: int = 10, initial_levels: int = 64, orders: int = 1 << 18):
        if not 1 <= levels <= 1000:
            raise ValueError(f"The `levels` must be in 1..1000, was {levels!r}.")
        self.levels = int(levels)
        self.instruments = np.zeros(0, np.uint32)            # dense index -> instrument_id
        self._lut = np.full(0, -1, np.int32)                  # instrument_id -> dense index
        self._cap = max(int(initial_levels), self.levels + 2)
        # the best bid and offer alone: hashed levels (kernels.levels), the cap a power of two
        self.hashed = self.levels == 1
        if self.hashed:
            self._cap = 1 << (self._cap - 1).bit_length()
        self.lv = np.zeros(0, np.int64)                       # (books, 2, cap, W) flattened
        self.nlev = np.zeros((0, 2), np.int64)
        self.top = np.zeros((0, 2), np.int64)   # hashed: each side's best slot; else no rows
        self.last_ts = np.zeros(0, np.int64)                  # per book: latest ts_event seen
        # the live orders (kernels.orders): ``orders`` 16-byte rows, and the general map behind
        # them for what does not fit, which grows as needed (a caller that knows its input is
        # large gives more rows: fewer orders collide into the map)
        self.orders = O.BookOrders(orders)
        self.report = BookReport()

    def _index(self, inst: np.ndarray) -> np.ndarray:
        """Dense index of each event's instrument (new instruments get new book rows)."""
        ix = np.empty(inst.shape[0], np.int64)
        top = int(inst.max()) + 1 if inst.size else 0
        n_old = self.instruments.size
        if top <= self.LUT_MAX:
            if top > self._lut.size:
                self._lut = np.full(min(max(top, 2 * self._lut.size), self.LUT_MAX), -1, np.int32)
                self._sync_lut()
            fresh = np.empty(min(inst.size, top), np.uint32)
            n_new = dense_index(inst, self._lut, n_old, ix, fresh)
            if n_new > n_old:
                self._add_books(fresh[:n_new - n_old].copy())
            return ix
        # ids too large for a table: sorted lookups (slower, same indices)
        uniq = np.unique(inst)
        new = uniq[~np.isin(uniq, self.instruments)]
        if new.size:
            self._add_books(new.astype(np.uint32))
        order = np.argsort(self.instruments, kind="stable")
        ix[:] = order[np.searchsorted(self.instruments[order], inst)]
        return ix

    def locate_table(self) -> np.ndarray:
        """The instrument id -> book index table covering every 16-bit id (ITCH stock locates),
        for compiled code that indexes as it goes (:func:`kernels.book_itch.select_events`)."""
        if self._lut.size < 1 << 16:
            self._lut = np.full(max(1 << 16, self._lut.size), -1, np.int32)
            self._sync_lut()
        return self._lut

    def _add_books(self, ids: np.ndarray) -> None:
        self.instruments = np.concatenate([self.instruments, ids])
        self._sync_lut()
        g = ids.size
        self.lv = np.concatenate([self.lv, np.zeros(g * 2 * self._cap * W, np.int64)])
        self.nlev = np.concatenate([self.nlev, np.zeros((g, 2), np.int64)])
        if self.hashed:
            self.top = np.concatenate([self.top, np.zeros((g, 2), np.int64)])
        self.last_ts = np.concatenate([self.last_ts, np.full(g, np.iinfo(np.int64).min)])

    def _sync_lut(self) -> None:
        """Every known instrument id the table covers points at its book."""
        inside = self.instruments < self._lut.size
        self._lut[self.instruments[inside]] = np.flatnonzero(inside)

    def _grow_levels(self) -> None:
        cap = self._cap * 2
        n = self.instruments.size
        if self.hashed:                 # every level to its slot in the larger tables
            new = np.zeros(n * 2 * cap * W, np.int64)
            hashed_regrow(self.lv, self._cap, new, cap, self.nlev, self.top)
            self.lv, self._cap = new, cap
            return
        new = np.zeros((n, 2, cap, W), np.int64)
        new[:, :, :self._cap, :] = self.lv.reshape(n, 2, self._cap, W)
        self.lv = new.reshape(-1)
        self._cap = cap

    def apply(self, mbo: pa.Table | pa.RecordBatch) -> pa.Table:
        """Apply ``mbo`` events in order; return the book after each (one row per event)."""
        if isinstance(mbo, pa.Table):
            batches = mbo.to_batches()     # chunk by chunk: no copy to combine the chunks
            if len(batches) != 1:
                parts = [self._apply_batch(b) for b in batches if b.num_rows]
                return pa.concat_tables(parts) if parts else self._apply_batch(
                    pa.RecordBatch.from_pylist([], schema=mbo.schema))
            mbo = batches[0]
        return self._apply_batch(mbo)

    def _apply_batch(self, mbo: pa.RecordBatch) -> pa.Table:
        cols = {name: _col(mbo, name, dt) for name, dt in EVENT_COLUMNS}
        out = _out_arrays(mbo.num_rows, self.levels)
        self.apply_columns(cols, *out)
        return _book_table(mbo, *out)

    def apply_columns(self, cols: dict, out_px, out_sz, out_ct, rows: np.ndarray | None = None) -> None:
        """Apply events given as NumPy columns (:data:`EVENT_COLUMNS`), writing the book after
        each into ``out_*[side, level, row]``. ``rows``: each event's row in the output and in
        the caller's numbering (crossed-book report); default: the events' own positions."""
        ix = self._index(cols["instrument_id"])
        events = (cols["action"], cols["order_id"], cols["new_order_id"], cols["price"],
                  cols["size"], cols["side"], ix, cols["ts_event"], self.last_ts)
        self.run_kernel(apply_events, events,
                        (out_px, out_sz, out_ct, rows if rows is not None else _NO_ROWS),
                        ix.shape[0], rows)

    def run_kernel(self, kernel, before: tuple, after: tuple, n: int,
                   rows: np.ndarray | None = None) -> None:
        """Run a book kernel over ``n`` events to the end, growing the level arrays and the order
        map when it asks, and add its counts to :attr:`report`.

        The kernel is called as ``kernel(*before, start, lv, lcap, nlev, top, nt, ni, tab, count, used,
        *after, tally, crossed_at, late_at)`` and returns ``(next_event, count, used, status)``
        (:func:`apply_events`; :mod:`kernels.book_itch` reads ITCH bytes instead of columns).
        """
        tally = np.zeros(5, np.int64)
        crossed_at = np.zeros(16, np.int64)
        late_at = np.zeros(16, np.int64)
        start = 0
        while True:
            bo, om = self.orders, self.orders.wide
            start, om.count, om.used, status = kernel(
                *before, start, self.lv, self._cap, self.nlev, self.top, bo.nt, bo.ni, om.tab,
                om.count, om.used,
                *after, tally, crossed_at, late_at)
            if status == NEED_LEVELS:
                self._grow_levels()
            elif status == NEED_ORDERS:
                om.rebuild()
            else:
                break
        r = self.report

        def at(first):       # the first listed events, in the caller's row numbering
            return [int(i) for i in (rows[first] if rows is not None else first + r.events)]
        r.crossed_at = sorted(r.crossed_at + at(crossed_at[:min(int(tally[2]), 16)]))[:16]
        r.late_at = sorted(r.late_at + at(late_at[:min(int(tally[4]), 16)]))[:16]
        r.late += int(tally[4])
        r.unknown += int(tally[0])
        r.applied_unknown += int(tally[1])
        r.inconsistent += int(tally[3])
        r.crossed += int(tally[2])
        r.events += n

    def live_orders(self) -> np.ndarray:
        """Every live order (order_id, price, remaining, side, instrument_id), by order id."""
        lo = self.orders.live_orders()        # its instrument_id holds the book's dense index
        lo["instrument_id"] = self.instruments[lo["instrument_id"]]
        return lo

    def snapshot(self, ts_event: int = 0) -> pa.Table:
        """The end state as ``mbo`` events: per instrument a clear, then one add per live order
        (``F_SNAPSHOT``). Feeding it to a new builder reproduces these books."""
        orders = self.live_orders()
        inst = np.unique(self.instruments)
        n = inst.size + orders.size
        c = R.alloc_columns("mbo", n, zero=True)
        c.ts_event[:] = ts_event
        c.ts_recv[:] = R.UNDEF_TIMESTAMP
        c.instrument_id[:inst.size] = inst
        c.action[:inst.size] = R.ACTION_CLEAR
        c.side[:inst.size] = R.SIDE_NONE
        c.price[:inst.size] = R.UNDEF_PRICE
        o = slice(inst.size, n)
        c.instrument_id[o] = orders["instrument_id"]
        c.action[o] = R.ACTION_ADD
        c.order_id[o] = orders["order_id"]
        c.side[o] = orders["side"]
        c.price[o] = orders["price"]
        c.size[o] = orders["remaining"]
        c.flags[:] = R.F_SNAPSHOT
        order = np.argsort(c.instrument_id, kind="stable")   # clear first within an instrument
        return pa.Table.from_batches([R.columns_to_arrow("mbo", c)]).take(pa.array(order))


def _out_arrays(n: int, levels: int):
    """Output columns ``[side, level, event]`` (each column contiguous: Arrow wraps it as is),
    in recycled memory (:mod:`normalize.arena`; the kernel writes every cell)."""
    L = levels
    px = arena.take(2 * L * n * 8).view(np.int64).reshape(2, L, n)
    sz = arena.take(2 * L * n * 8).view(np.uint64).reshape(2, L, n)
    ct = arena.take(2 * L * n * 4).view(np.uint32).reshape(2, L, n)
    return px, sz, ct


def book_schema(levels: int) -> pa.Schema:
    fields = [pa.field("instrument_id", pa.uint32(), False),
              pa.field("ts_event", pa.timestamp("ns", tz="UTC")),
              pa.field("sequence", pa.uint64(), False)]
    for k in range(levels):
        for s in ("bid", "ask"):
            fields += [pa.field(f"{s}_px_{k}", pa.int64(), False),
                       pa.field(f"{s}_sz_{k}", pa.uint64(), False),
                       pa.field(f"{s}_ct_{k}", pa.uint32(), False)]
    return pa.schema(fields, metadata={"tickpipe.schema": f"mbp-{levels}",
                                       "tickpipe.price_scale": str(R.PRICE_SCALE),
                                       "tickpipe.undef_price": str(R.UNDEF_PRICE)})


def _book_table(mbo, out_px, out_sz, out_ct, keys=None) -> pa.Table:
    """The book table around output columns ``[side, level, event]`` (no copy); the key columns
    (instrument_id, ts_event, sequence) from ``mbo``, or ``keys`` when given."""
    L, n = out_px.shape[1], out_px.shape[2]
    arrays = list(keys) if keys is not None else [
        mbo.column("instrument_id"), mbo.column("ts_event"), mbo.column("sequence")]
    for k in range(L):
        for s in (BID, ASK):
            for out, typ in ((out_px, pa.int64()), (out_sz, pa.uint64()), (out_ct, pa.uint32())):
                arrays.append(pa.Array.from_buffers(typ, n, [None, pa.py_buffer(out[s, k])]))
    return pa.Table.from_arrays(arrays, schema=book_schema(L))


def reconstruct(mbo: pa.Table, *, levels: int = 10, device: str = "auto",
                threads: int | None = None) -> pa.Table:
    """The book after every ``mbo`` event: one row per event (see the module docstring).

    ``device="cpu"``: the numba CPU book, parallel over instruments: the instruments are dealt
    to ``threads`` shards (default: every usable core) balanced by event count, each shard's
    events keep their order and go through their own :class:`BookBuilder` on their own thread
    (the kernel releases the GIL), and the rows are put back in input order. ``"gpu"``: the
    CUDA book (:mod:`kernels.book_gpu`), one thread per instrument; an error when no CUDA
    device is available. ``"auto"``: the GPU when one is available and there are at least
    ``GPU_MIN_EVENTS`` events, else the CPU; it never fails for lack of a GPU. Every path
    gives the same table, as long as an order reference belongs to one instrument (as in ITCH).
    """
    if device not in DEVICES:
        raise ValueError(f"The `device` was not a valid value, was {device!r}. Use any of {DEVICES}.")
    if not 1 <= levels <= 1000:
        raise ValueError(f"The `levels` must be in 1..1000, was {levels!r}.")
    if threads is not None and threads < 1:
        raise ValueError(f"The `threads` must be at least 1 or None, was {threads!r}.")
    t = mbo if isinstance(mbo, pa.Table) else pa.Table.from_batches([mbo])
    if device != "cpu":
        use_gpu = _cuda_available()
        if device == "gpu" and not use_gpu:
            raise RuntimeError("device='gpu' was asked for, but numba.cuda finds no CUDA device; "
                               "use device='auto' or 'cpu'")
        if use_gpu and (device == "gpu" or t.num_rows >= GPU_MIN_EVENTS):
            from kernels.book_gpu import reconstruct_gpu
            cols = {name: _col(t, name, dt) for name, dt in EVENT_COLUMNS}
            out_px, out_sz, out_ct, tally = reconstruct_gpu(cols, levels)
            report = BookReport(events=t.num_rows, unknown=int(tally[0]),  # no rows listed
                                applied_unknown=int(tally[1]), crossed=int(tally[2]),
                                inconsistent=int(tally[3]), late=int(tally[4]))
            return _with_report(_book_table(t, out_px, out_sz, out_ct), report)
    threads = threads or _usable_cores()
    if threads == 1 or t.num_rows < PARALLEL_MIN_EVENTS:
        b = BookBuilder(levels=levels)
        return _with_report(b.apply(t), b.report)
    return _reconstruct_parallel(t, levels, threads)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                          # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def shard_instruments(inst: np.ndarray, shards: int) -> np.ndarray:
    """Shard of each event: instruments dealt to ``shards`` groups, heaviest first to the
    lightest group (longest-processing-time), so the groups hold similar event counts."""
    if inst.size and int(inst.max()) < BookBuilder.LUT_MAX:
        counts = np.bincount(inst)                  # by id: no sort of the events
        ids = np.flatnonzero(counts)
        counts = counts[ids]
    else:
        ids, counts = np.unique(inst, return_counts=True)
    load = np.zeros(shards, np.int64)
    of = np.empty(ids.size, np.int64)
    for g in np.argsort(-counts, kind="stable"):
        k = int(np.argmin(load))
        of[g] = k
        load[k] += counts[g]
    if inst.size and int(inst.max()) < BookBuilder.LUT_MAX:
        table = np.zeros(int(inst.max()) + 1, np.int8)
        table[ids] = of
        return table[inst]
    return of[np.searchsorted(ids, inst)]


def _reconstruct_parallel(t: pa.Table, levels: int, threads: int) -> pa.Table:
    from concurrent.futures import ThreadPoolExecutor
    cols = {name: _col(t, name, dt) for name, dt in EVENT_COLUMNS}
    n = t.num_rows
    shard = shard_instruments(cols["instrument_id"], threads)
    px, sz, ct = _out_arrays(n, levels)

    def one(k):
        rows = np.flatnonzero(shard == k)           # the shard's events, in input order
        if rows.size == 0:
            return None
        b = BookBuilder(levels=levels)
        b.apply_columns({name: c[rows] for name, c in cols.items()}, px, sz, ct, rows=rows)
        return b.report

    with ThreadPoolExecutor(threads) as pool:
        reports = [r for r in pool.map(one, range(threads)) if r is not None]
    total = BookReport()
    for r in reports:
        total.merge(r)
    return _with_report(_book_table(t, px, sz, ct), total)


REPORT_KEY = b"tickpipe.book_report"      # schema / Parquet footer metadata: the BookReport


def report_metadata(report: "BookReport") -> dict[bytes, bytes]:
    """``{REPORT_KEY: the report as JSON}``, for a table's schema or a Parquet file's footer."""
    return {REPORT_KEY: json.dumps(dataclasses.asdict(report)).encode()}


def _with_report(book: pa.Table, report: "BookReport") -> pa.Table:
    return book.replace_schema_metadata({**(book.schema.metadata or {}), **report_metadata(report)})


def book_report(book) -> "BookReport":
    """The :class:`BookReport` that :func:`reconstruct` (or ``book_itch``) stored in its
    table's metadata, or that ``tickpipe book`` wrote in a Parquet file's footer (``book``: a
    table, or the file's path)."""
    if isinstance(book, (str, os.PathLike)):
        import pyarrow.parquet as pq
        meta = pq.read_metadata(book).metadata or {}
        where = f"The Parquet file {os.fspath(book)!r} carries no book report: write it with `tickpipe book`."
    else:
        meta = book.schema.metadata or {}
        where = "The `book` table carries no report: make it with kernels.book.reconstruct."
    raw = meta.get(REPORT_KEY)
    if raw is None:
        raise ValueError(where)
    return BookReport(**json.loads(raw))


def _cuda_available() -> bool:
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:                 # no CUDA driver or toolkit: the CPU serves
        return False
