"""Liquidity forecasts: quoted spread and top-of-book depth per bar (:func:`quote_bars`), and
next-bar forecasts of spread, depth, Amihud illiquidity, Kyle's lambda and the expected
impact of an order (:func:`liquidity`), batched over instruments on the CPU or the GPU.

:func:`quote_bars` turns a book table (:func:`kernels.book.reconstruct`) into one row per
(instrument, time bar) with at least one book row: the event-weighted mean quoted spread
``a - b`` and depth ``q^b + q^a`` over the bar's *quoted* rows (both sides present and
``a > b``; locked, crossed and one-sided books are left out), and the last quoted values. One
compiled pass (CPU) over the rows sorted by (instrument_id, ts_event), cut into bars by NumPy.

:func:`liquidity` forecasts, per instrument, the value of the next bar:

* spread and depth by HAR on their logs (:mod:`kernels.har`'s solver; the daily / weekly /
  monthly windows become ``lags = (1, 5, 22)`` bars), ``exp`` of the log forecast; and by EWMA
  ``s_t = lam s_{t-1} + (1 - lam) x_t`` (``s`` starts at the first value; the forecast is the
  last ``s``);
* Amihud illiquidity and Kyle's lambda (the bar columns of
  :func:`kernels.features.compute`) by the same EWMA, skipping NaN and infinite bars;
* the expected impact of an order of ``size`` shares: Kyle ``kyle_ewma * size`` (price units:
  the expected mid move), Amihud ``amihud_ewma * size * price`` (return units: Amihud's
  |return| per unit of traded value, times the order's value at ``price``, the instrument's
  last finite bar mid).

The series of an instrument are its bars in time order that have a value (bars without one are
left out, not carried), so the lags count bars with a value. Formulas and references:
``docs/forecasts.md``.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import pyarrow as pa
from numba import cuda

from kernels import har as H
from kernels.features import _check_device, _use_gpu, parse_bar
from normalize import records as R

_UNDEF = int(R.UNDEF_PRICE)
_SCALE = float(R.PRICE_SCALE)
QUOTE_COLUMNS = ("spread", "depth", "spread_last", "depth_last")
THREADS = 64


# -- quote bars ----------------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _quote_kernel(seg, order, bpx, apx, bsz, asz, out_f, out_i):
    """Bar ``s`` (sorted rows ``seg[s] .. seg[s+1]-1``, book rows ``order[...]``): ``out_f[s]``
    mean spread, mean depth, last spread, last depth over its quoted rows (NaN when none);
    ``out_i[s]`` event_count, quote_count."""
    nan = np.nan
    for s in range(seg.shape[0] - 1):
        ss = 0.0
        sd = 0.0
        ls = nan
        ld = nan
        nq = 0
        for q in range(seg[s], seg[s + 1]):
            r = order[q]
            b = bpx[r]
            a = apx[r]
            if b == _UNDEF or a == _UNDEF or a <= b:
                continue
            sp = (a - b) / _SCALE
            dp = bsz[r] + asz[r]
            ss += sp
            sd += dp
            ls = sp
            ld = dp
            nq += 1
        out_i[s, 0] = seg[s + 1] - seg[s]
        out_i[s, 1] = nq
        out_f[s, 0] = ss / nq if nq else nan
        out_f[s, 1] = sd / nq if nq else nan
        out_f[s, 2] = ls
        out_f[s, 3] = ld


def quote_bars(book: pa.Table, *, bar: str = "1min") -> pa.Table:
    """Quoted spread and level-0 depth per (instrument_id, bar_start); see the module docstring.

    ``book``: a table with instrument_id, ts_event, bid_px_0, ask_px_0 (int64, 1e-9 units,
    ``UNDEF_PRICE`` for an empty side), bid_sz_0, ask_sz_0 (from
    :func:`kernels.book.reconstruct`); any row order. ``bar``: a time bar (pandas frequency,
    epoch-aligned ``[floor(t / f) f, + f)``).

    Returns instrument_id (uint32), bar_start, bar_end (timestamp[ns, UTC]), event_count,
    quote_count (int64), spread, depth (event-weighted means over the quoted rows),
    spread_last, depth_last (float64, NaN when the bar has no quoted row), sorted by
    instrument_id and bar_start. Spread in currency units, depth in shares.
    """
    kind, b = parse_bar(bar)
    if kind != "time":
        raise ValueError(f"The `bar` must be a time bar ('1s', '1min', ...), was {bar!r}.")
    if isinstance(book, pa.RecordBatch):
        book = pa.Table.from_batches([book])
    need = ("instrument_id", "ts_event", "bid_px_0", "ask_px_0", "bid_sz_0", "ask_sz_0")
    missing = [c for c in need if c not in book.column_names]
    if missing:
        raise ValueError(f"The `book` lacks columns {missing}; pass a table from "
                         f"kernels.book.reconstruct.")

    def col(name, dtype):
        c = book.column(name)
        if pa.types.is_timestamp(c.type):
            c = c.cast(pa.int64())
        return np.ascontiguousarray(c.to_numpy(zero_copy_only=False), dtype=dtype)

    inst = col("instrument_id", np.int64)
    ts = col("ts_event", np.int64)
    order = np.lexsort((ts, inst))
    si = inst[order]
    key = ts[order] // b
    n = len(order)
    cut = np.flatnonzero((si[1:] != si[:-1]) | (key[1:] != key[:-1])) + 1
    seg = np.concatenate(([0], cut, [n])).astype(np.int64) if n else np.zeros(1, np.int64)
    first = seg[:-1]
    nb = len(first)
    out_f = np.empty((nb, len(QUOTE_COLUMNS)), np.float64)
    out_i = np.empty((nb, 2), np.int64)
    if nb:
        _quote_kernel(seg, order.astype(np.int64), col("bid_px_0", np.int64),
                      col("ask_px_0", np.int64), col("bid_sz_0", np.float64),
                      col("ask_sz_0", np.float64), out_f, out_i)
    tsz = pa.timestamp("ns", tz="UTC")
    start = key[first] * b
    cols = {"instrument_id": pa.array(si[first], pa.uint32()),
            "bar_start": pa.array(start, tsz), "bar_end": pa.array(start + b, tsz),
            "event_count": pa.array(out_i[:, 0], pa.int64()),
            "quote_count": pa.array(out_i[:, 1], pa.int64())}
    for c, name in enumerate(QUOTE_COLUMNS):
        cols[name] = pa.array(out_f[:, c], pa.float64())
    return pa.table(cols).replace_schema_metadata({"tickpipe.schema": "quote-bars",
                                                   "tickpipe.bar": bar})


# -- EWMA, for both devices ----------------------------------------------------------------------

@numba.njit
def _ewma_last(x, i, a, b, lam):
    """EWMA of the finite values of ``x[i, a:b]``: ``s = lam s + (1 - lam) v``, starting at the
    first finite value; NaN when there is none."""
    s = np.nan
    for p in range(a, b):
        v = x[i, p]
        if math.isfinite(v):
            if s != s:
                s = v
            else:
                s = lam * s + (1.0 - lam) * v
    return s


@numba.njit(cache=True, nogil=True, parallel=True)
def _ewma_cpu(x, lam, out):
    for i in numba.prange(x.shape[0]):
        out[i] = _ewma_last(x, i, 0, x.shape[1], lam)


@functools.cache
def _gpu_kernel():
    ewma = H.device_function(_ewma_last)

    @cuda.jit
    def ewma_kernel(x, lam, out):
        """Thread ``i``: :func:`_ewma_last` of row ``i``."""
        i = cuda.grid(1)
        if i < x.shape[0]:
            out[i] = ewma(x, i, 0, x.shape[1], lam)

    return ewma_kernel


def ewma_rows(x: np.ndarray, lam: float, gpu: bool) -> np.ndarray:
    """:func:`_ewma_last` of every row of ``x`` (float64, 2-D), on the CPU or the GPU."""
    x = np.ascontiguousarray(x, np.float64)
    out = np.empty(x.shape[0], np.float64)
    if x.shape[0] == 0:
        return out
    if gpu:
        dx = cuda.to_device(x)
        do = cuda.to_device(out)
        _gpu_kernel()[(x.shape[0] + THREADS - 1) // THREADS, THREADS](dx, float(lam), do)
        cuda.synchronize()
        return do.copy_to_host()
    _ewma_cpu(x, np.float64(lam), out)
    return out


def check_lam(lam) -> float:
    """``lam`` in (0, 1); ValueError naming ``lam`` otherwise."""
    try:
        ok = 0.0 < float(lam) < 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(lam, bool):
        raise ValueError(f"The `lam` must be a number in (0, 1) (RiskMetrics: 0.94), was {lam!r}.")
    return float(lam)


# -- forecasts -----------------------------------------------------------------------------------

def _stack(parts: list[np.ndarray]) -> np.ndarray:
    """Row blocks of possibly different widths, NaN-padded at the end to one width."""
    w = max([p.shape[1] for p in parts] + [1])
    out = np.full((sum(p.shape[0] for p in parts), w), np.nan)
    r = 0
    for p in parts:
        out[r:r + p.shape[0], :p.shape[1]] = p
        r += p.shape[0]
    return out


def _place(ids: np.ndarray, sub: np.ndarray, values: np.ndarray, fill=np.nan) -> np.ndarray:
    """``values`` of instruments ``sub`` placed at their rows of ``ids`` (the others ``fill``)."""
    out = np.full(len(ids), fill, dtype=np.asarray(values).dtype if len(values) else np.float64)
    out[np.searchsorted(ids, sub)] = values
    return out


def liquidity(bars: pa.Table | None = None, quotes: pa.Table | None = None, *,
              size: float = 100.0, lam: float = 0.94, lags=H.LAGS, min_obs: int = H.MIN_OBS,
              device: str = "auto") -> pa.Table:
    """Next-bar liquidity forecasts per instrument; see the module docstring.

    ``bars``: bar features from :func:`kernels.features.compute` (``amihud``, ``kyle_lambda``,
    ``mid``; may be None). ``quotes``: :func:`quote_bars` output (``spread``, ``depth``; may be
    None); at least one of the two. ``size``: order size in shares for the impacts. ``lam``: the
    EWMA decay in (0, 1). ``lags``, ``min_obs``: the HAR windows in bars and the fewest
    regression rows (:func:`kernels.har.har_rv`). ``device``: "cpu", "gpu" or "auto" (as
    :func:`kernels.har.har_rv`) for the HAR and EWMA kernels.

    Returns one row per instrument of either table (instrument_id ascending): instrument_id
    (uint32); spread_har, depth_har (HAR on the logs, ``exp`` of the one-step log forecast),
    spread_har_status, depth_har_status (uint8, :data:`kernels.har.STATUS`; 2, all-NaN, for an
    instrument without quote bars); spread_ewma, depth_ewma, amihud_ewma, kyle_ewma; price (last
    finite bar mid); impact_kyle (price units), impact_amihud (return units); n_quote_bars,
    n_bars (bars with a spread / with an amihud value, int64). NaN where an input is missing.
    """
    _check_device(device)
    lam = check_lam(lam)
    lags = H.check_lags(lags)
    min_obs = H.check_int("min_obs", min_obs, 4)
    try:
        size_ok = float(size) > 0 and np.isfinite(float(size)) and not isinstance(size, bool)
    except (TypeError, ValueError):
        size_ok = False
    if not size_ok:
        raise ValueError(f"The `size` must be a positive number of shares, was {size!r}.")
    if bars is None and quotes is None:
        raise ValueError("The `bars` and `quotes` are both None; pass at least one.")
    empty_ids = np.empty(0, np.uint32)
    empty = np.empty((0, 0))
    if quotes is not None:
        qs, sp = H.rows_from_table(quotes, "spread", "bar_start", "quotes")
        qd, dp = H.rows_from_table(quotes, "depth", "bar_start", "quotes")
    else:
        qs, sp, qd, dp = empty_ids, empty, empty_ids, empty
    if bars is not None:
        ba, am = H.rows_from_table(bars, "amihud", "bar_start", "bars")
        bk, ky = H.rows_from_table(bars, "kyle_lambda", "bar_start", "bars")
        bm, md = H.rows_from_table(bars, "mid", "bar_start", "bars")
    else:
        ba, am, bk, ky, bm, md = empty_ids, empty, empty_ids, empty, empty_ids, empty
    ids = np.unique(np.concatenate([qs, qd, ba, bk, bm])).astype(np.uint32)
    total = sum(a.size for a in (sp, dp, am, ky))
    gpu = _use_gpu(device, total)

    # HAR on log spread and log depth: one batch
    xh = H.log_values(_stack([sp, dp]))
    coef, info, fc = H._fit_arrays(np.ascontiguousarray(xh), lags, min_obs, 1, gpu)
    with np.errstate(over="ignore", invalid="ignore"):
        fc = np.exp(fc[:, 0])
    ns = len(qs)
    # EWMA of the four series: one batch
    ew = ewma_rows(_stack([sp, dp, am, ky]), lam, gpu)
    o = np.cumsum([0, len(qs), len(qd), len(ba), len(bk)])
    # the last finite mid (rows are the finite values, NaN-padded at the end)
    nmid = (~np.isnan(md)).sum(axis=1)
    price = md[np.arange(len(bm)), np.maximum(nmid - 1, 0)] if len(bm) and md.shape[1] else \
        np.full(len(bm), np.nan)

    def place(sub, v, fill=np.nan):
        return _place(ids, sub, v, fill)

    amihud = place(ba, ew[o[2]:o[3]])
    kyle = place(bk, ew[o[3]:o[4]])
    px = place(bm, price)
    cols = {
        "instrument_id": pa.array(ids, pa.uint32()),
        "spread_har": place(qs, fc[:ns]),
        "spread_har_status": pa.array(place(qs, info[:ns, 0], H.ALL_NAN).astype(np.uint8), pa.uint8()),
        "depth_har": place(qd, fc[ns:]),
        "depth_har_status": pa.array(place(qd, info[ns:, 0], H.ALL_NAN).astype(np.uint8), pa.uint8()),
        "spread_ewma": place(qs, ew[o[0]:o[1]]),
        "depth_ewma": place(qd, ew[o[1]:o[2]]),
        "amihud_ewma": amihud,
        "kyle_ewma": kyle,
        "price": px,
        "impact_kyle": kyle * float(size),
        "impact_amihud": amihud * float(size) * px,
        "n_quote_bars": pa.array(place(qs, (~np.isnan(sp)).sum(axis=1), 0).astype(np.int64)),
        "n_bars": pa.array(place(ba, (~np.isnan(am)).sum(axis=1), 0).astype(np.int64)),
    }
    cols = {k: (v if isinstance(v, pa.Array) else pa.array(v, pa.float64())) for k, v in cols.items()}
    meta = {"tickpipe.schema": "liquidity", "tickpipe.liquidity.size": repr(float(size)),
            "tickpipe.liquidity.lam": repr(lam), "tickpipe.har.lags": ",".join(map(str, lags))}
    return pa.table(cols).replace_schema_metadata(meta)
