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
from normalize.ordermap import _slot

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


# ---------------------------------------------------------------------------------------------
# Hashed levels: the book of the best bid and offer only (``levels=1``).
#
# Publishing one level needs no order among the others, only the best one. A side's levels then
# live in an open-addressing table of ``cap`` slots (a power of two; Fibonacci hash of the price,
# linear probing, deletion by backward shift, so no tombstones), word OCC marks a taken slot,
# and the caller keeps the slot of the best level in ``top[book, side]``. An event finds its
# level in one or two probes wherever it sits in the book, instead of a scan from the top and a
# bisection; only when the best level goes are the side's slots scanned for the next best. The
# table is kept at most three quarters full (:func:`hashed_room`).

OCC = 3            # word of a hashed slot: 1 when the slot holds a level
_UOCC = np.uint64(OCC)


@numba.njit(inline="always")
def _home(price, mask):
    """A price's home slot: the order map's Fibonacci hash (:func:`normalize.ordermap._slot`)."""
    return np.uint64(_slot(np.uint64(price), mask))


@numba.njit(inline="always")
def hashed_room(n, cap):
    """Whether a hashed side of ``n`` levels in ``cap`` slots may take one more level (at most
    three quarters full: a side seldom holds more than a few dozen levels, and the tables of
    every book grow together, so a lower bound would double them all for one busy side)."""
    return 4 * (n + 2) <= 3 * cap


@numba.njit(inline="always")
def hashed_find(lv, base, cap, price):
    """``(slot, found)``: the slot (from ``base``) holding ``price``, or the free slot where it
    would go."""
    mask = np.uint64(cap - 1)
    b = np.uint64(base)
    j = _home(price, mask)
    while True:
        q = (b + j) * _UW
        if lv[q + _UOCC] == 0:
            return j, False
        if lv[q + _UPX] == price:
            return j, True
        j = (j + _U1) & mask


@numba.njit(inline="always")
def hashed_best(lv, base, cap, s):
    """The slot of the best level of a hashed side (one that has levels)."""
    b = np.uint64(base)
    best = np.uint64(0)
    bp = R.UNDEF_PRICE
    have = False
    for j in range(cap):
        u = np.uint64(j)
        q = (b + u) * _UW
        p = lv[q + _UPX]
        if lv[q + _UOCC] != 0 and (not have or (p > bp if s == BID else p < bp)):
            best = u
            bp = p
            have = True
    return best


@numba.njit(inline="always")
def hashed_add(lv, base, n, cap, top, ii, s, price, qty, dcount):
    """:func:`level_add` on a hashed side (the caller checked :func:`hashed_room`); keeps
    ``top[ii, s]``. Returns the new level count."""
    qty = np.int64(qty)
    j, found = hashed_find(lv, base, cap, price)
    q = (np.uint64(base) + j) * _UW
    if found:
        lv[q + _USZ] += qty
        lv[q + _UCT] += dcount
        return n
    lv[q + _UPX] = price
    lv[q + _USZ] = qty
    lv[q + _UCT] = dcount
    lv[q + _UOCC] = 1
    if n == 0:
        top[ii, s] = j
    else:
        bp = lv[(np.uint64(base) + np.uint64(top[ii, s])) * _UW + _UPX]
        if price > bp if s == BID else price < bp:
            top[ii, s] = j
    return n + 1


@numba.njit(inline="always")
def hashed_sub(lv, base, n, cap, top, ii, s, price, qty, dcount):
    """:func:`level_sub` on a hashed side; keeps ``top[ii, s]``. Returns the new level count,
    or -1 when there is no level at that price."""
    qty = np.int64(qty)
    j, found = hashed_find(lv, base, cap, price)
    b = np.uint64(base)
    q = (b + j) * _UW
    if not found:
        return -1
    if lv[q + _USZ] > qty:
        lv[q + _USZ] -= qty
        c = lv[q + _UCT]
        lv[q + _UCT] = c - dcount if c > dcount else 0
        return n
    # the level goes: later slots of its probe run move back into the hole
    mask = np.uint64(cap - 1)
    t = np.uint64(top[ii, s])
    was_top = j == t
    hole = j
    k = (j + _U1) & mask
    while True:
        qk = (b + k) * _UW
        if lv[qk + _UOCC] == 0:
            break
        h = _home(lv[qk + _UPX], mask)
        if ((k - h) & mask) >= ((k - hole) & mask):
            qh = (b + hole) * _UW
            lv[qh + _UPX] = lv[qk + _UPX]
            lv[qh + _USZ] = lv[qk + _USZ]
            lv[qh + _UCT] = lv[qk + _UCT]
            if k == t:
                t = hole
            hole = k
        k = (k + _U1) & mask
    lv[(b + hole) * _UW + _UOCC] = 0
    n -= 1
    if was_top:
        t = hashed_best(lv, base, cap, s) if n > 0 else np.uint64(0)
    top[ii, s] = t
    return n


@numba.njit(inline="always")
def hashed_clear(lv, base, cap):
    """Empty a hashed side."""
    b = np.uint64(base)
    for j in range(cap):
        lv[(b + np.uint64(j)) * _UW + _UOCC] = 0


@numba.njit(cache=True)
def hashed_regrow(old, old_cap, new, new_cap, nlev, top):
    """Every level of the hashed sides in ``old`` (``old_cap`` slots each) into the empty
    ``new`` (``new_cap`` slots each), and each side's best slot into ``top``."""
    for ii in range(nlev.shape[0]):
        for s in range(2):
            ob = (ii * 2 + s) * old_cap
            nb = (ii * 2 + s) * new_cap
            m = 0
            for j in range(old_cap):
                q = np.uint64((ob + j) * W)
                if old[q + _UOCC] != 0:
                    m = hashed_add(new, nb, m, new_cap, top, ii, s, old[q + _UPX],
                                   old[q + _USZ], old[q + _UCT])
