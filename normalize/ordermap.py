"""A compiled order map: order reference -> (price, side, remaining shares, instrument).

One NumPy array of 32-byte slots (a lookup touches one cache line) that numba code uses in the
hot loop (no Python or typed dict). Compiled code sees it as a plain ``uint64[rows, 4]`` table
(words: key, price, remaining, instrument | side << 32; the :data:`SLOT` layout): reading or
writing a field of a numba record (``slots[k].price = ...``) takes and drops a reference to the
whole array, two atomic calls per access, which cost more than the rest of a lookup.

The table has two parts and a header row:

* rows ``[0, W)``, *direct*: an order lives at row ``reference & (W - 1)``. ITCH order
  references are day-unique and sequential, so the orders live at one time take distinct rows
  unless one outlives ``W`` later references: a lookup is one row, no probing, no tombstones;
* rows ``[W, W + S)``, *spill*: open addressing (Fibonacci hash, linear probing, tombstones)
  for the orders a newer reference pushed out of their direct row, and for any references
  that are not sequential (then the map works as a plain hash table);
* the last row: the spill's live count, both masks and the largest reference ever stored (a
  new order's reference, above it, needs no lookup at all), so the functions take just the
  table.

:class:`OrderMap` holds the table between batches (streaming) and rebuilds it when the spill
passes half full (doubling ``W`` when more than one live order in 16 had to spill).
:func:`resolve` walks decoded ``mbo`` records in order, keeps the map in step (adds,
executions, cancels, deletes, replaces), fills in the price and side of the events whose ITCH
message does not carry them, and writes the ``trades`` records.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R
from normalize._bytes import prefetch

PREFETCH_AHEAD = 16      # events between requesting a slot's cache line and using it

#: One slot of the map: 32 bytes, so a lookup touches one cache line.
SLOT = np.dtype([("key", "<u8"), ("price", "<i8"), ("remaining", "<u8"), ("inst", "<u4"),
                 ("side", "u1"), ("_pad", "u1", (3,))])

# words of a slot in the compiled table
KEY, PRICE, REM, META = 0, 1, 2, 3
_SIDE_SHIFT = np.uint64(32)
_INST_MASK = np.uint64(0xFFFFFFFF)

EMPTY = np.uint64(0)                       # order reference 0 is never a live order
TOMB = np.uint64(0xFFFFFFFFFFFFFFFF)       # a deleted slot (never a valid reference either)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
H_SPILL, H_DMASK, H_SMASK, H_TOP = 0, 1, 2, 3    # words of the header (last) row
_U1 = np.uint64(1)
MAX_DIRECT = 1 << 24                       # the direct part stops doubling here (512 MiB)


@numba.njit(inline="always")
def _slot(key, mask):
    # Fibonacci hashing: the product's high half is well mixed, so sequential references
    # spread over the spill instead of forming one long probe cluster
    return np.int64(((key * _GOLDEN) >> np.uint64(32)) & np.uint64(mask))


@numba.njit(inline="always")
def _hdr(tab):
    return np.uint64(tab.shape[0] - 1)


@numba.njit(inline="always")
def home(tab, key):
    """The direct row of ``key`` (where it lives unless it spilled): the row to prefetch."""
    return np.int64(key & tab[_hdr(tab), H_DMASK])


@numba.njit(inline="always")
def spill_room(tab, used):
    """Whether the spill (``used`` slots taken, deleted ones included) has room for two more
    while staying at most half full."""
    return 2 * (used + 2) <= np.int64(tab[_hdr(tab), H_SMASK]) + 1


@numba.njit(inline="always")
def _spill_find(tab, h, key):
    base = tab[h, H_DMASK] + _U1
    sm = tab[h, H_SMASK]
    i = np.uint64(_slot(key, sm))
    while True:
        k = tab[base + i, KEY]
        if k == key:
            return np.int64(base + i)
        if k == EMPTY:
            return -1
        i = (i + _U1) & sm


@numba.njit(inline="always")
def find(tab, key):
    """Row of ``key``, or -1."""
    if key == EMPTY or key == TOMB:
        return -1
    h = _hdr(tab)
    s = key & tab[h, H_DMASK]          # unsigned indices: no negative-index checks
    if tab[s, KEY] == key:
        return np.int64(s)
    if tab[h, H_SPILL] == 0 or key > tab[h, H_TOP]:
        return -1
    return _spill_find(tab, h, key)


@numba.njit(inline="always")
def _spill_slot(tab, h, key):
    """The spill row for ``key``, not present: the first deleted or empty one on its path."""
    base = tab[h, H_DMASK] + _U1
    sm = tab[h, H_SMASK]
    i = np.uint64(_slot(key, sm))
    while True:
        k = tab[base + i, KEY]
        if k == EMPTY or k == TOMB:
            return base + i
        i = (i + _U1) & sm


@numba.njit(inline="always")
def _write(tab, r, key, px, size, sd, instrument):
    tab[r, KEY] = key
    tab[r, PRICE] = np.uint64(np.int64(px))
    tab[r, REM] = size
    tab[r, META] = (np.uint64(instrument) & _INST_MASK) | (np.uint64(sd) << _SIDE_SHIFT)


@numba.njit(inline="always")
def remove(tab, i):
    """Delete row ``i``. Returns 1 when a spill slot became empty (one fewer used), else 0.

    A direct row just empties; a spill row becomes a tombstone unless the next one is empty.
    """
    u = np.uint64(i)
    h = _hdr(tab)
    dm = tab[h, H_DMASK]
    if u <= dm:
        tab[u, KEY] = EMPTY
        return 0
    tab[h, H_SPILL] -= _U1
    base = dm + _U1
    nxt = base + ((u - base + _U1) & tab[h, H_SMASK])
    if tab[nxt, KEY] == EMPTY:
        tab[u, KEY] = EMPTY
        return 1
    tab[u, KEY] = TOMB
    return 0


@numba.njit(inline="always")
def price_of(tab, i):
    return np.int64(tab[np.uint64(i), PRICE])


@numba.njit(inline="always")
def remaining_of(tab, i):
    return tab[np.uint64(i), REM]


@numba.njit(inline="always")
def side_of(tab, i):
    return np.uint8(tab[np.uint64(i), META] >> _SIDE_SHIFT)


@numba.njit(inline="always")
def set_remaining(tab, i, q):
    tab[np.uint64(i), REM] = q


@numba.njit(inline="always")
def _put(tab, key, px, size, sd, instrument):
    """Insert or overwrite ``key``; returns (was_live, took_empty_spill_slot).

    A live order in the key's direct row moves to the spill (the newer reference takes the
    row). The caller checks :func:`spill_room` first. The two reserved keys (0 and 2**64-1)
    cannot be stored: reported as already live, so the caller flags the event F_BAD.
    """
    if key == EMPTY or key == TOMB:
        return True, False
    h = _hdr(tab)
    s = key & tab[h, H_DMASK]
    cur = tab[s, KEY]
    if cur == key:
        _write(tab, s, key, px, size, sd, instrument)
        return True, False
    if key > tab[h, H_TOP]:
        tab[h, H_TOP] = key
    elif tab[h, H_SPILL] != 0:
        r = _spill_find(tab, h, key)
        if r >= 0:
            _write(tab, r, key, px, size, sd, instrument)
            return True, False
    took_empty = False
    if cur != EMPTY:                   # an older live order: to the spill
        r = _spill_slot(tab, h, cur)
        took_empty = tab[r, KEY] == EMPTY
        for w in range(4):
            tab[r, w] = tab[s, w]
        tab[h, H_SPILL] += _U1
    _write(tab, s, key, px, size, sd, instrument)
    return False, took_empty


@numba.njit(cache=True, nogil=True)
def resolve(action, order_id, new_order_id, price, size, side, inst, flags, start, tab,
            count, used, trade_rows, trade_kind, n_trades):
    """Apply ``mbo`` rows from ``start`` to the map, resolve them in place, list the trades.

    The first eight arguments are ``mbo`` columns (price, size, side and flags are updated).
    ``tab`` is the ``uint64[cap, 4]`` view of the :data:`SLOT` array;
    ``count`` is the number of live orders, ``used`` the spill slots taken (live or deleted). Each trade is
    listed as its ``mbo`` row in ``trade_rows`` and its kind (the ITCH letter) in ``trade_kind``.
    Returns ``(next_row, count, used, n_trades, n_unknown)``; ``next_row < len`` means the map
    must be rebuilt (grown or cleaned of deleted slots) before row ``next_row`` can be applied.
    """
    n = action.shape[0]
    n_unknown = 0
    for ii in range(start, n):
        i = np.uint64(ii)                 # unsigned indices: no negative-index checks
        j = ii + PREFETCH_AHEAD
        if j < n:
            prefetch(tab, home(tab, order_id[j]) * 4)
        a = action[i]
        if a == R.ACTION_ADD or a == R.ACTION_REPLACE:
            if not spill_room(tab, used):
                return ii, count, used, n_trades, n_unknown
        if a == R.ACTION_ADD:
            was_live, took_empty = _put(tab, order_id[i], price[i], size[i], side[i], inst[i])
            if was_live:
                flags[i] |= R.F_BAD          # the reference was already live: overwritten
            else:
                count += 1
                used += took_empty
            continue
        if a == R.ACTION_TRADE or a == R.ACTION_CROSS or a == R.ACTION_BROKEN:
            trade_rows[n_trades] = ii
            trade_kind[n_trades] = a         # P, Q, B: the action letter is the ITCH letter
            n_trades += 1
            continue
        if a == R.ACTION_CLEAR:
            continue
        # execute, cancel, delete, replace: the order should be live
        with_price = (flags[i] & R.F_WITH_PRICE) != 0
        if a == R.ACTION_EXECUTE:
            trade_rows[n_trades] = ii
            trade_kind[n_trades] = 67 if with_price else 69      # C or E
            n_trades += 1
        si = find(tab, order_id[i])
        if si < 0:
            flags[i] |= R.F_UNKNOWN_ORDER
            n_unknown += 1
            if a != R.ACTION_REPLACE:
                continue
            sd = np.uint8(R.SIDE_NONE)     # the new order is well defined but for its side
        else:
            s = np.uint64(si)
            sd = side_of(tab, s)
            side[i] = sd
            flags[i] |= R.F_RESOLVED
            if a == R.ACTION_REPLACE:
                used -= remove(tab, s)
                count -= 1
        if a == R.ACTION_REPLACE:
            was_live, took_empty = _put(tab, new_order_id[i], price[i], size[i], sd, inst[i])
            if was_live:
                flags[i] |= R.F_BAD
            else:
                count += 1
                used += took_empty
            continue
        if not with_price:
            price[i] = price_of(tab, s)
        if a == R.ACTION_DELETE:
            size[i] = remaining_of(tab, s)
            used -= remove(tab, s)
            count -= 1
            continue
        # execute or partial cancel
        rem = remaining_of(tab, s)
        q = size[i]
        if q > rem:
            flags[i] |= R.F_BAD
            rem = np.uint64(0)
        else:
            rem -= q
        if rem == 0:
            used -= remove(tab, s)
            count -= 1
        else:
            set_remaining(tab, s, rem)
    return n, count, used, n_trades, n_unknown


@numba.njit(cache=True)
def _rehash(tab, ntab):
    """Insert every live order of ``tab`` into the empty ``ntab``; returns (spill slots used,
    or -1 when ``ntab``'s spill ran past half full)."""
    used = 0
    for i in range(tab.shape[0] - 1):
        k = tab[i, KEY]
        if k != EMPTY and k != TOMB:
            if not spill_room(ntab, used):
                return -1
            u = np.uint64(i)
            was_live, took = _put(ntab, k, np.int64(tab[u, PRICE]), tab[u, REM],
                                  np.uint8(tab[u, META] >> _SIDE_SHIFT), tab[u, META] & _INST_MASK)
            used += took
    return used


def trades_from_rows(mbo, rows: np.ndarray, kind: np.ndarray):
    """The ``trades`` columns of the listed ``mbo`` rows (after resolution)."""
    flags = mbo.flags[rows]
    return R.COLUMNS["trades"](
        ts_event=mbo.ts_event[rows], ts_recv=mbo.ts_recv[rows], sequence=mbo.sequence[rows],
        match_id=mbo.match_id[rows], order_id=mbo.order_id[rows], price=mbo.price[rows],
        size=mbo.size[rows], instrument_id=mbo.instrument_id[rows], channel=mbo.channel[rows],
        kind=kind, side=mbo.side[rows], printable=((flags & R.F_PRINTABLE) != 0).astype(np.uint8),
        cross_type=mbo.cross_type[rows])


class OrderMap:
    """The live orders of a session, carried between batches.

    Not thread-safe: one decoder owns it.
    """

    def __init__(self, capacity: int = 1 << 18):
        direct = 1 << max(4, int(capacity - 1).bit_length())
        self._alloc(direct, max(16, direct // 8))
        self.count = 0
        self.used = 0
        self.unknown = 0

    def _alloc(self, direct: int, spill: int) -> None:
        self.slots = np.zeros(direct + spill + 1, SLOT)
        self.tab = self.slots.view(np.uint64).reshape(-1, SLOT.itemsize // 8)   # compiled code's view
        self.tab[-1, H_DMASK] = direct - 1
        self.tab[-1, H_SMASK] = spill - 1
        self.keys = self.tab[:-1, KEY]

    @property
    def direct(self) -> int:
        return int(self.tab[-1, H_DMASK]) + 1

    @property
    def spill(self) -> int:
        return int(self.tab[-1, H_SMASK]) + 1

    @property
    def spilled(self) -> int:
        """Live orders in the spill."""
        return int(self.tab[-1, H_SPILL])

    def __len__(self) -> int:
        return self.count

    def rebuild(self) -> None:
        """Drop deleted spill slots; double the direct part when more than one live order in 16
        spilled, and the spill as often as the live orders need."""
        old = self.tab
        direct, spill = self.direct, self.spill
        if 16 * self.spilled > self.count and direct < MAX_DIRECT:
            direct *= 2
        while True:
            if 4 * (self.spilled + 2) > spill:
                spill *= 2
            self._alloc(direct, spill)
            used = _rehash(old, self.tab)
            if used >= 0:
                break
            spill *= 2
        self.used = used

    def apply(self, mbo):
        """Resolve ``mbo`` columns in place and return their ``trades`` columns.

        Executions, cancels and deletes get their order's price and side; every E/C/P/Q/B event
        becomes a trade row (the resting order's side; ``printable`` from the flags).
        """
        n = mbo.action.shape[0]
        rows = np.empty(n, np.int64)
        kind = np.empty(n, np.uint8)
        start, n_trades = 0, 0
        while True:
            start, self.count, self.used, n_trades, unk = resolve(
                mbo.action, mbo.order_id, mbo.new_order_id, mbo.price, mbo.size, mbo.side,
                mbo.instrument_id, mbo.flags, start, self.tab, self.count, self.used,
                rows, kind, n_trades)
            self.unknown += unk
            if start >= n:
                break
            self.rebuild()
        return trades_from_rows(mbo, rows[:n_trades], kind[:n_trades])

    def live_orders(self) -> np.ndarray:
        """The live orders as a structured array (order_id, price, remaining, side, instrument_id)."""
        m = (self.keys != EMPTY) & (self.keys != TOMB)
        out = np.empty(int(m.sum()), dtype=[("order_id", "<u8"), ("price", "<i8"),
                                             ("remaining", "<u8"), ("side", "u1"),
                                             ("instrument_id", "<u4")])
        live = self.slots[:-1][m]
        out["order_id"], out["price"], out["remaining"] = live["key"], live["price"], live["remaining"]
        out["side"], out["instrument_id"] = live["side"], live["inst"]
        order = np.argsort(out["order_id"], kind="stable")
        return out[order]
