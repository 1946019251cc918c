"""Realized measures per instrument and window from fine bars' mids (:func:`realized`).

From a bar table with a ``mid`` column at a fine frequency (``kernels.features.compute(mbo,
bar="1s")``) the mids are sampled every ``interval`` (``"5min"``): the k-minute price of an
interval is the last finite, positive mid at or before the interval's end (a bar's mid counts in
the interval holding its ``bar_start``). Within a window (``window="1D"``: UTC days; any pandas
frequency, a multiple of ``interval``; epoch-aligned like the bars) the k-minute grid runs from
the first interval with a price to the last; an interval without a price carries the previous
one (a zero return). So a window with prices in intervals ``j0 .. j1`` has ``j1 - j0`` returns
``r_j = ln(P_j / P_{j-1})``; there is no return across windows. Per (instrument_id,
window_start):

* ``rv`` realized variance ``sum r_j^2``;
* ``bv`` bipower variation ``(pi / 2) sum_{j > j0 + 1} |r_j| |r_{j-1}|`` (Barndorff-Nielsen &
  Shephard 2004);
* ``jump_share`` ``max(rv - bv, 0) / rv`` (NaN when ``rv`` is 0 or ``bv`` undefined);
* ``parkinson`` ``(1 / (4 ln 2)) sum_j (ln H_j / L_j)^2`` and ``garman_klass``
  ``sum_j [0.5 (ln H_j / L_j)^2 - (2 ln 2 - 1) (ln C_j / O_j)^2]`` over the same intervals,
  where ``O_j = P_{j-1}`` (the price standing when interval j opens), ``C_j = P_j``, and
  ``H_j`` / ``L_j`` the highest / lowest of ``O_j`` and the fine mids inside interval j (so
  ``ln C_j / O_j = r_j``; a carried interval adds 0);
* ``n_returns``, ``n_prices`` (fine mids used) and ``status`` (:data:`STATUS`): ``OK`` with at
  least 2 returns; ``TOO_FEW`` with 0 or 1 (``rv``, ``parkinson``, ``garman_klass`` defined with
  1; ``bv`` and ``jump_share`` NaN; everything NaN with 0); ``NO_PRICES`` when the window's bars
  have no finite, positive mid.

A window is listed when the instrument has at least one bar in it. The work is one compiled
pass (:func:`_realized_kernel`) over the rows sorted by (instrument_id, bar_start) and cut into
(instrument, window) segments by NumPy; formulas and references: ``docs/forecasts.md``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

from tickpipe.durations import duration_value

OK, TOO_FEW, NO_PRICES = 0, 1, 2
#: Per-window status codes of :func:`realized` (``status`` column, uint8).
STATUS = {OK: "ok", TOO_FEW: "fewer than 2 returns (bv, jump_share NaN; with none, all NaN)",
          NO_PRICES: "no finite, positive mid in the window"}
COLUMNS = ("rv", "bv", "jump_share", "parkinson", "garman_klass")
_PARK = 1.0 / (4.0 * math.log(2.0))
_GK = 2.0 * math.log(2.0) - 1.0


def duration_ns(name: str, value) -> int:
    """A positive pandas frequency (``"5min"``, ``"1D"``, a Timedelta) in nanoseconds;
    ValueError naming ``name`` otherwise."""
    try:
        td = duration_value(value) if not isinstance(value, bool) else None
    except (ValueError, TypeError):
        td = None
    if isinstance(value, (int, float, np.number)) and not isinstance(value, np.timedelta64):
        td = None                 # a bare number is ambiguous: ask for a unit
    if td is None or td is pd.NaT or td.value <= 0:
        raise ValueError(f"The `{name}` must be a positive pandas frequency ('1min', '5min', "
                         f"'1h', '1D', ...), was {value!r}.")
    return int(td.value)


@numba.njit(cache=True, nogil=True)
def _realized_kernel(seg, wstart, ts, mid, k, out_f, out_i):
    """Segment ``s`` (rows ``seg[s] .. seg[s+1]-1``, one instrument's rows of the window
    starting at ``wstart[s]``, in time order): ``out_f[s]`` rv, bv, jump_share, parkinson,
    garman_klass; ``out_i[s]`` n_returns, n_prices, status."""
    nan = np.nan
    for s in range(seg.shape[0] - 1):
        w0 = wstart[s]
        have = False              # an interval with a price so far
        cur = 0                   # its index in the window
        op = nan                  # its opening price (the previous interval's close)
        hi = nan
        lo = nan
        cl = nan
        rv = 0.0
        bv = 0.0
        rr = 0.0                  # sum of (ln H/L)^2
        nret = 0
        npx = 0
        last_r = 0.0
        have_last = False
        p = nan
        j = 0
        for q in range(seg[s], seg[s + 1] + 1):
            if q < seg[s + 1]:
                p = mid[q]
                if not (p > 0.0 and p < np.inf):
                    continue
                npx += 1
                j = (ts[q] - w0) // k
                if not have:
                    have = True
                    cur = j
                    hi = p
                    lo = p
                    cl = p
                    continue
                if j == cur:
                    if p > hi:
                        hi = p
                    if p < lo:
                        lo = p
                    cl = p
                    continue
            elif not have:
                break
            # close interval `cur` (a new interval begins, or the segment ends)
            if op == op:
                r = math.log(cl / op)
                rv += r * r
                if have_last:
                    bv += abs(r) * abs(last_r)
                last_r = r
                have_last = True
                hl = math.log(hi / lo)
                rr += hl * hl
                nret += 1
            if q == seg[s + 1]:
                break
            gap = j - cur - 1     # carried intervals: zero returns
            if gap > 0:
                nret += gap
                last_r = 0.0
                have_last = True
            op = cl
            cur = j
            hi = op if op > p else p
            lo = op if op < p else p
            cl = p
        out_i[s, 0] = nret
        out_i[s, 1] = npx
        if npx == 0:
            out_i[s, 2] = NO_PRICES
        elif nret < 2:
            out_i[s, 2] = TOO_FEW
        else:
            out_i[s, 2] = OK
        if nret >= 1:
            out_f[s, 0] = rv
            out_f[s, 3] = _PARK * rr
            out_f[s, 4] = 0.5 * rr - _GK * rv
        else:
            out_f[s, 0] = nan
            out_f[s, 3] = nan
            out_f[s, 4] = nan
        if nret >= 2:
            b = (np.pi / 2.0) * bv
            out_f[s, 1] = b
            out_f[s, 2] = (rv - b if rv > b else 0.0) / rv if rv > 0.0 else nan
        else:
            out_f[s, 1] = nan
            out_f[s, 2] = nan


def _bar_length(bars: pa.Table) -> int | None:
    """The bars' length in ns from the schema metadata of :func:`kernels.features.compute`
    (None when absent); ValueError naming ``bars`` for volume bars."""
    meta = bars.schema.metadata or {}
    bar = meta.get(b"tickpipe.bar")
    if bar is None:
        return None
    bar = bar.decode()
    if bar.startswith("volume:"):
        raise ValueError(f"The `bars` must be time bars; these are {bar!r} (a volume bar has no "
                         f"fixed place on the k-minute grid).")
    return int(duration_value(bar).value)


def realized(bars, *, interval="5min", window="1D") -> pa.Table:
    """Realized measures per (instrument_id, window_start); see the module docstring.

    ``bars``: a table with ``instrument_id``, ``bar_start`` (timestamp or int64 ns) and ``mid``
    (float, NaN when none), e.g. ``kernels.features.compute(mbo, bar="1s")``; any row order.
    ``interval``: the return interval, a multiple of the bars' length (when the table's metadata
    names it). ``window``: the window, a multiple of ``interval``.

    Returns columns instrument_id (uint32), window_start (timestamp[ns, UTC]), n_returns,
    n_prices (int64), rv, bv, jump_share, parkinson, garman_klass (float64), status (uint8),
    sorted by instrument_id and window_start. ValueError, naming the argument, for bad
    arguments; a window without enough prices gets NaN and a status, never an exception.
    """
    k = duration_ns("interval", interval)
    W = duration_ns("window", window)
    if W % k:
        raise ValueError(f"The `window` must be a whole number of intervals ({interval!r}), "
                         f"was {window!r}.")
    if isinstance(bars, pa.RecordBatch):
        bars = pa.Table.from_batches([bars])
    if not isinstance(bars, pa.Table):
        raise ValueError(f"The `bars` must be a pyarrow Table, was {type(bars).__name__}.")
    missing = [c for c in ("instrument_id", "bar_start", "mid") if c not in bars.column_names]
    if missing:
        raise ValueError(f"The `bars` lacks columns {missing}; pass a table from "
                         f"kernels.features.compute.")
    b = _bar_length(bars)
    if b is not None and k % b:
        raise ValueError(f"The `interval` must be a whole number of the bars' length "
                         f"({b} ns), was {interval!r}.")
    inst = np.asarray(bars.column("instrument_id").to_numpy(zero_copy_only=False), np.int64)
    tcol = bars.column("bar_start")
    if pa.types.is_timestamp(tcol.type):
        tcol = tcol.cast(pa.int64())
    ts = np.asarray(tcol.to_numpy(zero_copy_only=False), np.int64)
    mid = bars.column("mid").cast(pa.float64()).fill_null(np.nan)
    mid = np.asarray(mid.to_numpy(zero_copy_only=False), np.float64)
    order = np.lexsort((ts, inst))
    inst = inst[order]
    ts = np.ascontiguousarray(ts[order])
    mid = np.ascontiguousarray(mid[order])
    wid = ts // W
    n = len(ts)
    cut = np.flatnonzero((inst[1:] != inst[:-1]) | (wid[1:] != wid[:-1])) + 1
    seg = np.concatenate(([0], cut, [n])).astype(np.int64) if n else np.zeros(1, np.int64)
    first = seg[:-1]
    wstart = np.ascontiguousarray(wid[first] * W)
    ns = len(first)
    out_f = np.empty((ns, len(COLUMNS)), np.float64)
    out_i = np.empty((ns, 3), np.int64)
    if ns:
        _realized_kernel(seg, wstart, ts, mid, np.int64(k), out_f, out_i)
    cols = {"instrument_id": pa.array(inst[first], pa.uint32()),
            "window_start": pa.array(wstart, pa.timestamp("ns", tz="UTC")),
            "n_returns": pa.array(out_i[:, 0], pa.int64()),
            "n_prices": pa.array(out_i[:, 1], pa.int64())}
    for c, name in enumerate(COLUMNS):
        cols[name] = pa.array(out_f[:, c], pa.float64())
    cols["status"] = pa.array(out_i[:, 2].astype(np.uint8), pa.uint8())
    meta = {"tickpipe.schema": "realized", "tickpipe.realized.interval_ns": str(k),
            "tickpipe.realized.window_ns": str(W)}
    return pa.table(cols).replace_schema_metadata(meta)
