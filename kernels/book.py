"""Order-book reconstruction: ``mbo`` events to the book after every event (L3 -> MBP-k).

:func:`reconstruct` rebuilds, for any number of instruments interleaved, the top ``levels`` price
levels of each side (price, size, order count) after every event. :class:`BookBuilder` is the
same machine fed batch by batch (state carried between batches) and exports its end state as
snapshot events that seed a later run.

The compiled core walks the events once. Per order it keeps (price, remaining, side, instrument)
in the open-addressing order map of :mod:`normalize.ordermap` (no Python or typed dict in the
loop); per instrument and side a sorted array of price levels, best last (so activity at the
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

from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

from normalize import records as R
from kernels.levels import ASK, BID, level_add, level_sub
from kernels.levels import side_index as _side
from normalize._bytes import prefetch
from normalize.ordermap import OrderMap, _put, _slot, find, remove

DEVICES = ("auto", "cpu", "gpu")
GPU_MIN_EVENTS = 1_000_000   # "auto" sends at least this many events to a GPU, when there is one
NEED_LEVELS = -1          # kernel result: a side has no room for another level
NEED_ORDERS = -2          # kernel result: the order map must grow
AHEAD = 16                # events between prefetching an event's order slot and book top, and using them


@numba.njit(inline="always")
def _add(pxf, szf, ctf, nlev, lcap, ii, s, price, qty, dcount):
    """Add at ``price`` on side ``s`` of book ``ii``; False when the side is full."""
    m = level_add(pxf, szf, ctf, (ii * 2 + s) * lcap, nlev[ii, s], lcap, s, price, qty, dcount)
    if m < 0:
        return False
    nlev[ii, s] = m
    return True


@numba.njit(inline="always")
def _sub(pxf, szf, ctf, nlev, lcap, ii, s, price, qty, dcount):
    """Take from ``price`` on side ``s`` of book ``ii``; False when there is no such level."""
    m = level_sub(pxf, szf, ctf, (ii * 2 + s) * lcap, nlev[ii, s], s, price, qty, dcount)
    if m < 0:
        return False
    nlev[ii, s] = m
    return True


@numba.njit(cache=True, nogil=True)
def apply_events(action, order_id, new_order_id, price, size, side, flags, ix, start,
                 px, sz, ct, nlev, slots, keys, count, used, out_px, out_sz, out_ct, tally,
                 crossed_at):
    """Apply events ``start..`` and write the top levels after each (``out_*[i, side, k]``).

    ``ix`` is each event's dense instrument index. ``tally`` counts: 0 unknown (not applied),
    1 applied_unknown, 2 crossed, 3 inconsistent (a level or order the event needs is missing).
    Returns ``(next_event, count, used, status)``; status NEED_LEVELS / NEED_ORDERS asks the
    caller to grow the level arrays or the order map and call again from ``next_event``.
    """
    n = action.shape[0]
    L = out_px.shape[2]
    cap = keys.shape[0]
    lcap = px.shape[2]
    pxf = px.reshape(-1)
    szf = sz.reshape(-1)
    ctf = ct.reshape(-1)
    mask = cap - 1
    for i in range(start, n):
        j = i + AHEAD
        if j < n:      # the order's slot and both sides' best level, a few events early
            prefetch(slots, _slot(order_id[j], mask))
            ij = ix[j]
            for s2 in range(2):
                top = (ij * 2 + s2) * lcap + max(nlev[ij, s2] - 1, 0)
                prefetch(pxf, top)
                prefetch(szf, top)
        a = action[i]
        ii = ix[i]
        if a == R.ACTION_ADD or a == R.ACTION_REPLACE:
            if 2 * (used + 2) > cap:
                return i, count, used, NEED_ORDERS
            # room for one more level on either side (a replace may move sides' levels)
            if nlev[ii, BID] >= px.shape[2] - 1 or nlev[ii, ASK] >= px.shape[2] - 1:
                return i, count, used, NEED_LEVELS
        if a == R.ACTION_ADD:
            s = _side(side[i])
            if s < 0 or price[i] == R.UNDEF_PRICE:
                tally[3] += 1
            else:
                k = find(keys, order_id[i])
                if k >= 0:                   # reused live reference: its old shares leave
                    _sub(pxf, szf, ctf, nlev, lcap, ii, _side(slots[k].side), slots[k].price,
                         slots[k].remaining, 1)
                    tally[3] += 1
                was_live, took_empty = _put(slots, keys, order_id[i], price[i], size[i], side[i], ii)
                if not was_live:
                    count += 1
                    used += took_empty
                _add(pxf, szf, ctf, nlev, lcap, ii, s, price[i], size[i], 1)
        elif a == R.ACTION_EXECUTE or a == R.ACTION_CANCEL or a == R.ACTION_DELETE:
            k = find(keys, order_id[i])
            if k < 0:
                s = _side(side[i])
                q = size[i]
                if s >= 0 and price[i] != R.UNDEF_PRICE and q > 0:
                    if not _sub(pxf, szf, ctf, nlev, lcap, ii, s, price[i], q, 0):
                        tally[3] += 1
                    tally[1] += 1
                else:
                    tally[0] += 1
            else:
                rem = slots[k].remaining
                q = rem if a == R.ACTION_DELETE else size[i]
                if q > rem:
                    tally[3] += 1
                    q = rem
                gone = q >= rem
                if not _sub(pxf, szf, ctf, nlev, lcap, ii, _side(slots[k].side), slots[k].price, q,
                            1 if gone else 0):
                    tally[3] += 1
                if gone:
                    used -= remove(keys, k)
                    count -= 1
                else:
                    slots[k].remaining = rem - q
        elif a == R.ACTION_REPLACE:
            k = find(keys, order_id[i])
            sd = side[i]
            if k >= 0:
                sd = slots[k].side
                if not _sub(pxf, szf, ctf, nlev, lcap, ii, _side(sd), slots[k].price, slots[k].remaining, 1):
                    tally[3] += 1
                used -= remove(keys, k)
                count -= 1
            s = _side(sd)
            if s < 0:
                tally[0] += 1            # the new order's side is unknown: reported, not guessed
            else:
                if k < 0:
                    tally[1] += 1
                was_live, took_empty = _put(slots, keys, new_order_id[i], price[i], size[i], sd, ii)
                if not was_live:
                    count += 1
                    used += took_empty
                _add(pxf, szf, ctf, nlev, lcap, ii, s, price[i], size[i], 1)
        elif a == R.ACTION_CLEAR:
            nlev[ii, BID] = 0
            nlev[ii, ASK] = 0
        nb = nlev[ii, BID]
        na = nlev[ii, ASK]
        if nb > 0 and na > 0 and pxf[(ii * 2) * lcap + nb - 1] >= pxf[(ii * 2 + 1) * lcap + na - 1]:
            if tally[2] < crossed_at.shape[0]:
                crossed_at[tally[2]] = i
            tally[2] += 1
        for s in range(2):
            m = nlev[ii, s]
            for k in range(L):
                if k < m:
                    j = (ii * 2 + s) * lcap + m - 1 - k      # the best level is the last
                    out_px[i, s, k] = pxf[j]
                    out_sz[i, s, k] = szf[j]
                    out_ct[i, s, k] = ctf[j]
                else:
                    out_px[i, s, k] = R.UNDEF_PRICE
                    out_sz[i, s, k] = 0
                    out_ct[i, s, k] = 0
    return n, count, used, 0


@dataclass
class BookReport:
    events: int = 0
    unknown: int = 0              # events for unseen orders that carried no price/side: not applied
    applied_unknown: int = 0      # events for unseen orders applied at their own price and size
    crossed: int = 0              # events after which the book was crossed or locked
    crossed_at: list[int] = field(default_factory=list)   # first such events (global index)
    inconsistent: int = 0         # a level or order an event needed was missing


def _col(t: pa.Table | pa.RecordBatch, name: str, dtype) -> np.ndarray:
    c = t.column(name)
    if isinstance(c, pa.ChunkedArray):
        c = c.combine_chunks()
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    return np.ascontiguousarray(c.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)


class BookBuilder:
    """Books of many instruments, fed ``mbo`` batches in order. Not thread-safe."""

    def __init__(self, *, levels: int = 10, initial_levels: int = 64):
        if not 1 <= levels <= 1000:
            raise ValueError(f"The `levels` must be in 1..1000, was {levels!r}.")
        self.levels = int(levels)
        self.instruments = np.zeros(0, np.uint32)            # dense index -> instrument_id
        self._cap = max(int(initial_levels), self.levels + 2)
        self.px = np.zeros((0, 2, self._cap), np.int64)
        self.sz = np.zeros((0, 2, self._cap), np.uint64)
        self.ct = np.zeros((0, 2, self._cap), np.uint32)
        self.nlev = np.zeros((0, 2), np.int64)
        self.orders = OrderMap(1 << 16)      # the normalizer's order table: one implementation
        self.report = BookReport()

    def _index(self, inst: np.ndarray) -> np.ndarray:
        """Dense index of each event's instrument (new instruments get new book rows)."""
        uniq = np.unique(inst)
        new = uniq[~np.isin(uniq, self.instruments)]
        if new.size:
            g = new.size
            self.instruments = np.concatenate([self.instruments, new.astype(np.uint32)])
            self.px = np.concatenate([self.px, np.zeros((g, 2, self._cap), np.int64)])
            self.sz = np.concatenate([self.sz, np.zeros((g, 2, self._cap), np.uint64)])
            self.ct = np.concatenate([self.ct, np.zeros((g, 2, self._cap), np.uint32)])
            self.nlev = np.concatenate([self.nlev, np.zeros((g, 2), np.int64)])
        order = np.argsort(self.instruments, kind="stable")
        return order[np.searchsorted(self.instruments[order], inst)].astype(np.int64)

    def _grow_levels(self) -> None:
        cap = self._cap * 2
        for name, dt in (("px", np.int64), ("sz", np.uint64), ("ct", np.uint32)):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], 2, cap), dt)
            new[:, :, :self._cap] = old
            setattr(self, name, new)
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
        n = mbo.num_rows
        action = _col(mbo, "action", np.uint8)
        inst = _col(mbo, "instrument_id", np.uint32)
        ix = self._index(inst)
        args = (action, _col(mbo, "order_id", np.uint64), _col(mbo, "new_order_id", np.uint64),
                _col(mbo, "price", np.int64), _col(mbo, "size", np.uint64),
                _col(mbo, "side", np.uint8), _col(mbo, "flags", np.uint8), ix)
        L = self.levels
        out_px = np.empty((n, 2, L), np.int64)
        out_sz = np.empty((n, 2, L), np.uint64)
        out_ct = np.empty((n, 2, L), np.uint32)
        tally = np.zeros(4, np.int64)
        crossed_at = np.zeros(16, np.int64)
        start = 0
        while True:
            om = self.orders
            start, om.count, om.used, status = apply_events(
                *args, start, self.px, self.sz, self.ct, self.nlev, om.slots, om.keys,
                om.count, om.used, out_px, out_sz, out_ct, tally, crossed_at)
            if status == NEED_LEVELS:
                self._grow_levels()
            elif status == NEED_ORDERS:
                self.orders.rebuild()
            else:
                break
        base = self.report.events
        r = self.report
        r.unknown += int(tally[0])
        r.applied_unknown += int(tally[1])
        r.inconsistent += int(tally[3])
        r.crossed_at += [base + int(i) for i in crossed_at[:min(int(tally[2]), 16)]][:16 - len(r.crossed_at)]
        r.crossed += int(tally[2])
        r.events += n
        return _book_table(mbo, out_px, out_sz, out_ct)

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


def _book_table(mbo, out_px, out_sz, out_ct) -> pa.Table:
    L = out_px.shape[2]
    cols = {"instrument_id": mbo.column("instrument_id"), "ts_event": mbo.column("ts_event"),
            "sequence": mbo.column("sequence")}
    for k in range(L):
        for s, name in ((BID, "bid"), (ASK, "ask")):
            cols[f"{name}_px_{k}"] = pa.array(np.ascontiguousarray(out_px[:, s, k]))
            cols[f"{name}_sz_{k}"] = pa.array(np.ascontiguousarray(out_sz[:, s, k]))
            cols[f"{name}_ct_{k}"] = pa.array(np.ascontiguousarray(out_ct[:, s, k]))
    return pa.table(cols, schema=book_schema(L))


def reconstruct(mbo: pa.Table, *, levels: int = 10, device: str = "auto") -> pa.Table:
    """The book after every ``mbo`` event: one row per event (see the module docstring).

    ``device="cpu"``: the numba CPU book. ``"gpu"``: the CUDA book (:mod:`kernels.book_gpu`),
    one thread per instrument; an error when no CUDA device is available. ``"auto"``: the GPU
    when one is available and there are at least ``GPU_MIN_EVENTS`` events, else the CPU; it
    never fails for lack of a GPU. Both give the same table.
    """
    if device not in DEVICES:
        raise ValueError(f"The `device` was not a valid value, was {device!r}. Use any of {DEVICES}.")
    if not 1 <= levels <= 1000:
        raise ValueError(f"The `levels` must be in 1..1000, was {levels!r}.")
    if device != "cpu":
        use_gpu = _cuda_available()
        if device == "gpu" and not use_gpu:
            raise RuntimeError("device='gpu' was asked for, but numba.cuda finds no CUDA device; "
                               "use device='auto' or 'cpu'")
        if use_gpu and (device == "gpu" or mbo.num_rows >= GPU_MIN_EVENTS):
            from kernels.book_gpu import reconstruct_gpu
            t = mbo if isinstance(mbo, pa.Table) else pa.Table.from_batches([mbo])
            cols = {name: _col(t, name, dt) for name, dt in (
                ("action", np.uint8), ("order_id", np.uint64), ("new_order_id", np.uint64),
                ("price", np.int64), ("size", np.uint64), ("side", np.uint8),
                ("instrument_id", np.uint32))}
            out_px, out_sz, out_ct, _ = reconstruct_gpu(cols, levels)
            return _book_table(t, out_px, out_sz, out_ct)
    return BookBuilder(levels=levels).apply(mbo)


def _cuda_available() -> bool:
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:                 # no CUDA driver or toolkit: the CPU serves
        return False
