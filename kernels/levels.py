"""Price levels of one book side in a slice of flat arrays: the compiled functions the CPU and
GPU books share (``@numba.njit``; numba.cuda compiles the same functions for the device).

A side's levels are ``px/sz/ct[base : base + n]``, sorted with the best level LAST (bids
ascending, asks descending): inserts and removals near the top of the book, which are most of
them, shift only the few levels above. Callers keep ``n`` and pass the room ``cap``.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R

BID, ASK = 0, 1


@numba.njit(inline="always")
def side_index(c):
    """BID (0) or ASK (1) for an mbo side code, -1 for any other."""
    if c == R.SIDE_BID:
        return BID
    if c == R.SIDE_ASK:
        return ASK
    return -1


@numba.njit(inline="always")
def level_pos(px, base, n, price, s):
    """Index (from ``base``) of ``price`` among the ``n`` levels, or where it would go."""
    lo = 0
    hi = n
    if s == BID:
        while lo < hi:
            mid = (lo + hi) >> 1
            if px[base + mid] < price:
                lo = mid + 1
            else:
                hi = mid
    else:
        while lo < hi:
            mid = (lo + hi) >> 1
            if px[base + mid] > price:
                lo = mid + 1
            else:
                hi = mid
    return lo


@numba.njit(inline="always")
def level_add(px, sz, ct, base, n, cap, s, price, qty, dcount):
    """Add ``qty`` shares and ``dcount`` orders at ``price``; the new level count, or -1 when
    a new level is needed and the side has no room."""
    k = level_pos(px, base, n, price, s)
    if k < n and px[base + k] == price:
        sz[base + k] += qty
        ct[base + k] += dcount
        return n
    if n >= cap:
        return -1
    for j in range(n, k, -1):
        px[base + j] = px[base + j - 1]
        sz[base + j] = sz[base + j - 1]
        ct[base + j] = ct[base + j - 1]
    px[base + k] = price
    sz[base + k] = qty
    ct[base + k] = dcount
    return n + 1


@numba.njit(inline="always")
def level_sub(px, sz, ct, base, n, s, price, qty, dcount):
    """Take ``qty`` shares and ``dcount`` orders from ``price`` (a level left with no shares
    goes); the new level count, or -1 when there is no level at that price."""
    k = level_pos(px, base, n, price, s)
    if k >= n or px[base + k] != price:
        return -1
    if sz[base + k] > qty:
        sz[base + k] -= qty
        ct[base + k] = ct[base + k] - dcount if ct[base + k] > dcount else np.uint32(0)
        return n
    for j in range(k, n - 1):
        px[base + j] = px[base + j + 1]
        sz[base + j] = sz[base + j + 1]
        ct[base + j] = ct[base + j + 1]
    return n - 1
