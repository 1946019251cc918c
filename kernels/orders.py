"""The book's order table: 16-byte rows for the orders that fit, the general map for the rest.

The book needs, per live order, its price, side and remaining shares (and, for the end-state
snapshot, its instrument). Every ITCH order fits in 16 bytes: the reference, then one word of
price in 1e-4 units (31 bits), side (1 bit) and remaining shares (32 bits). :class:`BookOrders`
keeps such orders in a direct table of those rows (an order lives at row ``reference & mask``,
as in the direct part of :mod:`normalize.ordermap`; its instrument in a parallel ``uint32``
array the loop only writes) and everything else in a general
:class:`~normalize.ordermap.OrderMap` behind it ("wide"): orders whose price or size does not
fit the row, reserved references, and orders whose row is held by an older live order. A
reference lives in one of the two.

Compiled code sees the rows as ``uint64[rows, 2]`` (``nt``) and the instruments as
``uint32[rows]`` (``ni``). Against the general map alone this saves, per event, the general
map's checks (spill, tombstones, the largest reference) and half the row: 9-10 ns/event in the
ITCH book (bench/RESULTS.md).
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R
from normalize.ordermap import EMPTY, TOMB, OrderMap

P4_NANO = 100_000                    # one ITCH price unit (1e-4) in the book's 1e-9 units
_P4 = np.int64(P4_NANO)
PX_BITS = 31
_PX_MASK = np.uint64((1 << PX_BITS) - 1)
_SIDE_BIT = np.uint64(1 << PX_BITS)
_REM_SHIFT = np.uint64(32)
_MAX_REM = np.uint64(0xFFFFFFFF)
_UP4 = np.uint64(P4_NANO)
_UMAX_P4 = np.uint64((1 << PX_BITS) - 1)
KEY, WORD = 0, 1


@numba.njit(inline="always")
def row_of(nt, key):
    """The row ``key`` lives at when it is in ``nt`` (unsigned: no negative-index checks)."""
    return key & np.uint64(nt.shape[0] - 1)


@numba.njit(inline="always")
def units(key, px, size):
    """The price in 1e-4 units when an order can take a 16-byte row, else -1: a storable
    reference, a price that is a non-negative multiple of 1e-4 below 2**31 of them, a size
    below 2**32."""
    if key == EMPTY or key == TOMB or size > _MAX_REM or px < 0:
        return np.int64(-1)
    u = np.uint64(px) // _UP4                  # unsigned: a multiply and a shift
    if u * _UP4 != np.uint64(px) or u > _UMAX_P4:
        return np.int64(-1)
    return np.int64(u)


@numba.njit(inline="always")
def put(nt, ni, r, key, p4, s, size, ii):
    """Row ``r`` := order ``key`` at ``p4`` (1e-4 units, from :func:`units`), side index
    ``s`` (0 bid, 1 ask), ``size`` shares, book ``ii``."""
    nt[r, KEY] = key
    nt[r, WORD] = np.uint64(p4) | (np.uint64(s) << np.uint64(PX_BITS)) | (size << _REM_SHIFT)
    ni[r] = ii


@numba.njit(inline="always")
def n_price(nt, r):
    return np.int64(nt[r, WORD] & _PX_MASK) * _P4


@numba.njit(inline="always")
def n_side(nt, r):
    """The side index (0 bid, 1 ask) of row ``r``."""
    return np.int64((nt[r, WORD] >> np.uint64(PX_BITS)) & np.uint64(1))


@numba.njit(inline="always")
def n_remaining(nt, r):
    return nt[r, WORD] >> _REM_SHIFT


@numba.njit(inline="always")
def n_set_remaining(nt, r, q):
    nt[r, WORD] = (nt[r, WORD] & (_PX_MASK | _SIDE_BIT)) | (q << _REM_SHIFT)


@numba.njit(inline="always")
def n_clear(nt, r):
    nt[r, KEY] = EMPTY


class BookOrders:
    """A book's live orders (see the module docstring), carried between batches.

    ``rows``: the direct rows (a power of two, at least 16); ``wide``: the general map's
    starting size (it grows as needed). Not thread-safe.
    """

    def __init__(self, rows: int = 1 << 18, wide: int | None = None):
        n = 1 << max(4, int(rows - 1).bit_length())
        self.nt = np.zeros((n, 2), np.uint64)
        self.ni = np.zeros(n, np.uint32)
        self.wide = OrderMap(wide if wide is not None else max(16, n // 64))

    @property
    def narrow(self) -> int:
        """Live orders in the 16-byte rows."""
        return int(np.count_nonzero(self.nt[:, KEY]))

    def __len__(self) -> int:
        return self.narrow + self.wide.count

    def live_orders(self) -> np.ndarray:
        """The live orders (order_id, price, remaining, side, instrument_id: the book index the
        kernel stored), by order id."""
        wide = self.wide.live_orders()
        live = np.flatnonzero(self.nt[:, KEY] != EMPTY)
        out = np.empty(live.size + wide.size, wide.dtype)
        word = self.nt[live, WORD]
        n = out[:live.size]
        n["order_id"] = self.nt[live, KEY]
        n["price"] = (word & _PX_MASK).astype(np.int64) * P4_NANO
        n["remaining"] = word >> _REM_SHIFT
        n["side"] = np.where((word & _SIDE_BIT) != 0, R.SIDE_ASK, R.SIDE_BID)
        n["instrument_id"] = self.ni[live]
        out[live.size:] = wide
        return out[np.argsort(out["order_id"], kind="stable")]
