"""A compiled order map: order reference -> (price, side, remaining shares, instrument).

Open addressing with linear probing and backward-shift deletion over parallel NumPy arrays, so
numba code can use it in the hot loop (no Python or typed dict). ITCH order references are
day-unique and increase with time, so the slot is taken from the reference's low bits: orders
added together sit together, and executions of recent orders hit warm cache lines.

:class:`OrderMap` holds the arrays between batches (streaming) and grows them when the load
passes one half. :func:`resolve` walks decoded ``mbo`` records in order, keeps the map in step
(adds, executions, cancels, deletes, replaces), fills in the price and side of the events
whose ITCH message does not carry them, and writes the ``trades`` records.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R

EMPTY = np.uint64(0)   # order reference 0 is never a live order


@numba.njit(inline="always")
def _slot(key, mask):
    return np.int64((key ^ (key >> np.uint64(32))) & np.uint64(mask))


@numba.njit(inline="always")
def find(keys, key):
    mask = keys.shape[0] - 1
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == EMPTY:
            return -1
        i = (i + 1) & mask


@numba.njit(inline="always")
def insert_slot(keys, key):
    """Slot for ``key``: its own if present, else the empty one where it goes."""
    mask = keys.shape[0] - 1
    i = _slot(key, mask)
    while True:
        k = keys[i]
        if k == key or k == EMPTY:
            return i
        i = (i + 1) & mask


@numba.njit(inline="always")
def remove(keys, price, remaining, side, inst, i):
    """Delete slot ``i`` and shift later members of its cluster back (no tombstones)."""
    mask = keys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == EMPTY:
            break
        home = _slot(k, mask)
        # move k into the hole at i when its home is not in the cyclic range (i, j]
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            keys[i] = k
            price[i] = price[j]
            remaining[i] = remaining[j]
            side[i] = side[j]
            inst[i] = inst[j]
            i = j
    keys[i] = EMPTY


@numba.njit(cache=True, nogil=True)
def resolve(mbo, start, keys, price, remaining, side, inst, count, trades, n_trades):
    """Apply ``mbo[start:]`` to the map; resolve prices and sides; append ``trades``.

    Returns ``(next_row, count, n_trades, n_unknown)``. ``next_row < len(mbo)`` means the map
    needs to grow before row ``next_row`` can be applied (the caller grows it and calls again).
    """
    cap = keys.shape[0]
    n_unknown = 0
    for i in range(start, mbo.shape[0]):
        r = mbo[i]
        a = r.action
        if a == R.ACTION_ADD or a == R.ACTION_REPLACE:
            if 2 * (count + 1) > cap:
                return i, count, n_trades, n_unknown
        if a == R.ACTION_ADD:
            s = insert_slot(keys, r.order_id)
            if keys[s] == r.order_id:
                r.flags |= R.F_BAD       # the reference is already live: replaced
            else:
                count += 1
            keys[s] = r.order_id
            price[s] = r.price
            remaining[s] = r.size
            side[s] = r.side
            inst[s] = r.instrument_id
            continue
        if a == R.ACTION_TRADE or a == R.ACTION_CROSS or a == R.ACTION_BROKEN:
            t = trades[n_trades]
            t.ts_event = r.ts_event
            t.ts_recv = r.ts_recv
            t.sequence = r.sequence
            t.match_id = r.match_id
            t.order_id = r.order_id
            t.price = r.price
            t.size = r.size
            t.instrument_id = r.instrument_id
            t.channel = r.channel
            t.kind = 80 if a == R.ACTION_TRADE else (81 if a == R.ACTION_CROSS else 66)
            t.side = r.side
            t.printable = 1 if (r.flags & R.F_PRINTABLE) != 0 else 0
            t.cross_type = r.cross_type
            n_trades += 1
            continue
        # E (E/C), C (X), D, U: the order must be live
        s = find(keys, r.order_id)
        if s < 0:
            r.flags |= R.F_UNKNOWN_ORDER
            n_unknown += 1
        else:
            r.side = side[s]
            r.flags |= R.F_RESOLVED
        if a == R.ACTION_EXECUTE:
            if s >= 0 and (r.flags & R.F_WITH_PRICE) == 0:
                r.price = price[s]
            t = trades[n_trades]
            t.ts_event = r.ts_event
            t.ts_recv = r.ts_recv
            t.sequence = r.sequence
            t.match_id = r.match_id
            t.order_id = r.order_id
            t.price = r.price
            t.size = r.size
            t.instrument_id = r.instrument_id
            t.channel = r.channel
            t.kind = 67 if (r.flags & R.F_WITH_PRICE) != 0 else 69
            t.side = r.side
            t.printable = 1 if (r.flags & R.F_PRINTABLE) != 0 else 0
            t.cross_type = 0
            n_trades += 1
        elif a == R.ACTION_CANCEL or a == R.ACTION_DELETE:
            if s >= 0:
                r.price = price[s]
        if s < 0:
            if a == R.ACTION_REPLACE:
                # the new order is still well defined except for its side
                s2 = insert_slot(keys, r.new_order_id)
                if keys[s2] != r.new_order_id:
                    count += 1
                keys[s2] = r.new_order_id
                price[s2] = r.price
                remaining[s2] = r.size
                side[s2] = R.SIDE_NONE
                inst[s2] = r.instrument_id
            continue
        if a == R.ACTION_DELETE:
            r.size = remaining[s]
            remove(keys, price, remaining, side, inst, s)
            count -= 1
        elif a == R.ACTION_REPLACE:
            sd = side[s]
            remove(keys, price, remaining, side, inst, s)
            count -= 1
            s2 = insert_slot(keys, r.new_order_id)
            if keys[s2] == r.new_order_id:
                r.flags |= R.F_BAD
            else:
                count += 1
            keys[s2] = r.new_order_id
            price[s2] = r.price
            remaining[s2] = r.size
            side[s2] = sd
            inst[s2] = r.instrument_id
        else:  # execute or partial cancel
            rem = remaining[s]
            if r.size > rem:
                r.flags |= R.F_BAD
                rem = 0
            else:
                rem -= r.size
            if rem == 0:
                remove(keys, price, remaining, side, inst, s)
                count -= 1
            else:
                remaining[s] = rem
    return mbo.shape[0], count, n_trades, n_unknown


@numba.njit(cache=True)
def _rehash(keys, price, remaining, side, inst, nkeys, nprice, nremaining, nside, ninst):
    for i in range(keys.shape[0]):
        k = keys[i]
        if k != EMPTY:
            s = insert_slot(nkeys, k)
            nkeys[s] = k
            nprice[s] = price[i]
            nremaining[s] = remaining[i]
            nside[s] = side[i]
            ninst[s] = inst[i]


class OrderMap:
    """The live orders of a session, carried between batches.

    Not thread-safe: one decoder owns it.
    """

    def __init__(self, capacity: int = 1 << 16):
        cap = 1 << max(4, int(capacity - 1).bit_length())
        self._alloc(cap)
        self.count = 0
        self.unknown = 0

    def _alloc(self, cap: int) -> None:
        self.keys = np.zeros(cap, np.uint64)
        self.price = np.zeros(cap, np.int64)
        self.remaining = np.zeros(cap, np.uint64)
        self.side = np.zeros(cap, np.uint8)
        self.inst = np.zeros(cap, np.uint32)

    def __len__(self) -> int:
        return self.count

    def grow(self) -> None:
        old = (self.keys, self.price, self.remaining, self.side, self.inst)
        self._alloc(self.keys.shape[0] * 2)
        _rehash(*old, self.keys, self.price, self.remaining, self.side, self.inst)

    def apply(self, mbo: np.ndarray, trades: np.ndarray) -> int:
        """Resolve ``mbo`` in place and write its trades; returns the number of trades.

        ``trades`` needs room for every E/C/P/Q/B event in ``mbo``.
        """
        start, n_trades = 0, 0
        while True:
            start, self.count, n_trades, unk = resolve(
                mbo, start, self.keys, self.price, self.remaining, self.side, self.inst,
                self.count, trades, n_trades)
            self.unknown += unk
            if start >= mbo.shape[0]:
                return n_trades
            self.grow()

    def live_orders(self) -> np.ndarray:
        """The live orders as a structured array (order_id, price, remaining, side, instrument_id)."""
        m = self.keys != EMPTY
        out = np.empty(int(m.sum()), dtype=[("order_id", "<u8"), ("price", "<i8"),
                                             ("remaining", "<u8"), ("side", "u1"),
                                             ("instrument_id", "<u4")])
        out["order_id"], out["price"], out["remaining"] = self.keys[m], self.price[m], self.remaining[m]
        out["side"], out["instrument_id"] = self.side[m], self.inst[m]
        order = np.argsort(out["order_id"], kind="stable")
        return out[order]
