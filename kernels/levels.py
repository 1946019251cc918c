"""Price levels of one book side in a slice of one flat array: the compiled functions the CPU
and GPU books share (``@numba.njit``; numba.cuda compiles the same functions for the device).

Level ``j`` of a side is ``lv[(base + j) * W : (base + j) * W + 3]``: price, shares, order
count, side by side (``W = 4`` int64 words, so two levels fill a 64-byte cache line and the top
of a book is one line, not one line per field). A side's ``n`` levels are sorted with the best
level LAST (bids ascending, asks descending): inserts and removals near the top of the book,
which are most of them, shift only the few levels above, and finding a price scans the top
levels before bisecting the rest. Callers keep ``n`` and pass the room ``cap``.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R

BID, ASK = 0, 1
W = 4              # int64 words per level: price, shares, orders, unused
PX, SZ, CT = 0, 1, 2
SCAN = 8           # levels scanned from the top before the rest is bisected
_U1, _UW = np.uint64(1), np.uint64(W)    # unsigned steps: word indices stay uint64
_UPX, _USZ, _UCT = np.uint64(PX), np.uint64(SZ), np.uint64(CT)


@numba.njit(inline="always")
def side_index(c):
    """BID (0) or ASK (1) for an mbo side code, -1 for any other."""
    if c == R.SIDE_BID:
        return BID
    if c == R.SIDE_ASK:
        return ASK
    return -1


@numba.njit(inline="always")
def _better_or_equal(a, price, s):
    """Level price ``a`` is at or above ``price`` in side ``s``'s order (closer to the top)."""
    return a >= price if s == BID else a <= price


@numba.njit(inline="always")
def _px(lv, base, j):
    """Price of level ``j`` (unsigned index arithmetic: no negative-index check per access)."""
    return lv[np.uint64((base + j) * W + PX)]


@numba.njit(inline="always")
def level_pos(lv, base, n, price, s):
    """Index (from ``base``) of ``price`` among the ``n`` levels, or where it would go: the
    number of levels worse than ``price``."""
    k = n
    stop = n - SCAN if n > SCAN else 0
    while k > stop and _better_or_equal(_px(lv, base, k - 1), price, s):
        k -= 1
    if k > stop or k == 0:
        return k
    lo = 0
    hi = k
    while lo < hi:
        mid = (lo + hi) >> 1
        if _better_or_equal(_px(lv, base, mid), price, s):
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(inline="always")
def level_add(lv, base, n, cap, s, price, qty, dcount):
    """Add ``qty`` shares and ``dcount`` orders at ``price``; the new level count, or -1 when
    a new level is needed and the side has no room."""
    qty = np.int64(qty)
    k = level_pos(lv, base, n, price, s)
    p = np.uint64((base + k) * W)
    if k < n and lv[p + _UPX] == price:
        lv[p + _USZ] += qty
        lv[p + _UCT] += dcount
        return n
    if n >= cap:
        return -1
    q = np.uint64((base + n) * W)
    while q > p:                 # the levels above move up one place
        q -= _U1
        lv[q + _UW] = lv[q]
    lv[p + _UPX] = price
    lv[p + _USZ] = qty
    lv[p + _UCT] = dcount
    return n + 1


@numba.njit(inline="always")
def level_sub(lv, base, n, s, price, qty, dcount):
    """Take ``qty`` shares and ``dcount`` orders from ``price`` (a level left with no shares
    goes); the new level count, or -1 when there is no level at that price."""
    qty = np.int64(qty)
    k = level_pos(lv, base, n, price, s)
    p = np.uint64((base + k) * W)
    if k >= n or lv[p + _UPX] != price:
        return -1
    if lv[p + _USZ] > qty:
        lv[p + _USZ] -= qty
        c = lv[p + _UCT]
        lv[p + _UCT] = c - dcount if c > dcount else 0
        return n
    end = np.uint64((base + n - 1) * W)
    while p < end:               # the levels above move down one place
        lv[p] = lv[p + _UW]
        p += _U1
    return n - 1


@numba.njit(inline="always")
def write_top(lv, tb, ta, nb, na, out_px, out_sz, out_ct, r):
    """Write the top ``L`` levels of both sides into row ``r`` of ``out_*[side, level, row]``
    (``tb``/``ta``: word index of each side's best level, ``nb``/``na``: their level counts;
    levels a side does not have get ``UNDEF_PRICE``, 0 shares, 0 orders)."""
    L = out_px.shape[1]
    r = np.uint64(r)
    if L == 1:      # the best bid and offer: straight-line code (a third of the loop's time)
        for s in range(2):
            m = nb if s == BID else na
            q = np.uint64(tb if s == BID else ta)
            px, sz, ct = R.UNDEF_PRICE, 0, 0
            if m > 0:
                px, sz, ct = lv[q + _UPX], lv[q + _USZ], lv[q + _UCT]
            out_px[s, 0, r] = px
            out_sz[s, 0, r] = sz
            out_ct[s, 0, r] = ct
        return
    for s in range(2):
        m = nb if s == BID else na
        top = tb if s == BID else ta
        for k in range(L):
            if k < m:
                q = np.uint64(top - k * W)
                out_px[s, k, r] = lv[q + _UPX]
                out_sz[s, k, r] = lv[q + _USZ]
                out_ct[s, k, r] = lv[q + _UCT]
            else:
                out_px[s, k, r] = R.UNDEF_PRICE
                out_sz[s, k, r] = 0
                out_ct[s, k, r] = 0
