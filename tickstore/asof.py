"""As-of joins: each trade with the quote that prevailed at its time."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from tickstore.store import StoreError


def _ns_tolerance(tolerance) -> int | None:
    if tolerance is None:
        return None
    if isinstance(tolerance, (int, np.integer)):
        ns = int(tolerance)
    else:
        from tickpipe.durations import duration_value
        try:
            ns = int(duration_value(tolerance).value)
        except (ValueError, TypeError) as e:
            raise StoreError(f"The `tolerance` must be a duration (ns, a Timedelta or a string "
                             f"like '100ms'), was {tolerance!r}.") from e
    if ns < 0:
        raise StoreError(f"The `tolerance` must not be negative, was {tolerance!r}.")
    return ns


def _table(x, name: str) -> pa.Table:
    if isinstance(x, pa.Table):
        return x
    if isinstance(x, pa.RecordBatch):
        return pa.Table.from_batches([x])
    try:
        import pandas as pd
        if isinstance(x, pd.DataFrame):
            return pa.Table.from_pandas(x, preserve_index=False)
    except ImportError:
        pass
    raise StoreError(f"The `{name}` must be an Arrow table or a pandas DataFrame, was "
                     f"{type(x).__name__}.")


def _col(t: pa.Table, c: str, name: str) -> np.ndarray:
    if c not in t.column_names:
        raise StoreError(f"The `{name}` have no column {c!r} (columns: {', '.join(t.column_names)}).")
    a = t.column(c)
    if pa.types.is_timestamp(a.type):
        a = a.cast(pa.int64())
    if a.null_count:
        raise StoreError(f"The `{name}` column {c!r} has {a.null_count} null values.")
    return a.to_numpy().astype(np.int64)


def asof_join(trades, quotes, *, by: str = "instrument_id", on: str = "ts_event",
              tolerance=None, quote_columns=None, prefix: str = "quote_") -> pa.Table:
    """Each row of ``trades`` (in its order) with the last row of ``quotes`` of the same ``by``
    whose ``on`` is at or before the trade's (the prevailing quote; of quotes at the same
    time, the last one given). ``tolerance``: the quote must be at most this old (ns, a
    Timedelta or ``"100ms"``; inclusive). The quote's columns (``quote_columns``, default all
    but ``by``) come after the trade's, each name prefixed with ``prefix``; they are null where
    no quote prevails. Neither input needs to be sorted."""
    trades, quotes = _table(trades, "trades"), _table(quotes, "quotes")
    tol = _ns_tolerance(tolerance)
    ti, tt = _col(trades, by, "trades"), _col(trades, on, "trades")
    qi, qt = _col(quotes, by, "quotes"), _col(quotes, on, "quotes")
    qcols = [c for c in quotes.column_names if c != by] if quote_columns is None \
        else list(quote_columns)
    bad = [c for c in qcols if c not in quotes.column_names]
    if bad:
        raise StoreError(f"The `quotes` have no column(s) {bad}.")
    oq = np.lexsort((qt, qi))                     # stable: later rows last among equals
    ot = np.lexsort((tt, ti))
    nq = oq.size
    inst = np.concatenate([qi[oq], ti[ot]])
    ts = np.concatenate([qt[oq], tt[ot]])
    is_trade = np.concatenate([np.zeros(nq, np.int8), np.ones(ot.size, np.int8)])
    merged = np.lexsort((is_trade, ts, inst))     # a quote before a trade at the same time
    pos = np.where(merged < nq, merged, -1)       # sorted-quote index, or -1 for a trade
    last = np.maximum.accumulate(pos) if pos.size else pos
    tpos = merged >= nq
    qidx_sorted = last[tpos]                      # per trade, in (inst, ts) trade order
    trade_of = merged[tpos] - nq                  # its index in the sorted trades
    qidx = np.full(ot.size, -1, np.int64)
    qidx[ot[trade_of]] = qidx_sorted
    ok = qidx >= 0
    src = np.where(ok, oq[np.maximum(qidx, 0)] if nq else 0, 0)
    ok &= (qi[src] == ti) if nq else False
    if tol is not None and nq:
        ok &= (tt - qt[src]) <= tol
    take = pa.array(src, pa.int64(), mask=~ok)
    out = trades
    for c in qcols:
        out = out.append_column(prefix + c, quotes.column(c).take(take))
    return out
