"""Volatility and liquidity forecasts for every instrument at once (issue 5): the public entry.

* :func:`garch11`, :func:`ewma` (:mod:`kernels.garch`): GARCH(1,1) by maximum likelihood as the
  ``arch`` package fits it, normal or Student-t, and RiskMetrics EWMA; CPU (numba, parallel
  over instruments) and GPU (numba.cuda, one thread per instrument).
* :func:`realized` (:mod:`kernels.realized`): realized variance, bipower variation, jump share,
  Parkinson and Garman–Klass per instrument and window, from bar mids.
* :func:`har_rv` (:mod:`kernels.har`): HAR-RV by batched least squares, multi-step forecasts.
* :func:`quote_bars`, :func:`liquidity` (:mod:`kernels.liquidity`): spread and depth per bar;
  their HAR and EWMA forecasts, Amihud and Kyle's lambda forecasts, expected market impact.
* :func:`walk_forward` (:mod:`kernels.evaluate`): walk-forward forecasts and their losses
  against naive baselines.
* :func:`mid_returns`: per-instrument log returns of the bar mids of
  :func:`kernels.features.compute`, the input the models take.
* :func:`to_records`: a per-instrument forecast table as ``forecasts`` records
  (:data:`normalize.records.FORECASTS`), the schema the tick store and the bus carry.

Formulas and references: ``docs/forecasts.md``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from kernels.evaluate import walk_forecasts, walk_forward  # noqa: F401
from kernels.garch import STATUS, as_matrix, ewma, garch11, series_extent  # noqa: F401
from kernels.har import har_rv  # noqa: F401
from kernels.liquidity import liquidity, quote_bars  # noqa: F401
from kernels.realized import realized  # noqa: F401
from normalize import records as R


def mid_returns(bars: pa.Table, *, scale: float = 1e4) -> pa.Table:
    """``(instrument_id, bar_start, return)``: the log change of each instrument's bar ``mid``
    from its previous bar with a mid, times ``scale`` (basis points by default; GARCH fits are
    best conditioned near unit variance). Bars without a mid are skipped."""
    inst = bars.column("instrument_id").to_numpy()
    mid = bars.column("mid").to_numpy(zero_copy_only=False).astype(np.float64)
    start = bars.column("bar_start")
    order = np.argsort(inst, kind="stable")
    inst, mid = inst[order], mid[order]
    keep = np.isfinite(mid) & (mid > 0)
    inst, mid, idx = inst[keep], mid[keep], order[keep]
    same = np.r_[False, inst[1:] == inst[:-1]]
    lr = np.r_[np.nan, np.diff(np.log(mid))] * scale
    sel = np.flatnonzero(same)
    return pa.table({"instrument_id": pa.array(inst[sel], pa.uint32()),
                     "bar_start": start.take(pa.array(idx[sel])),
                     "return": pa.array(lr[sel])})


def to_records(table: pa.Table, *, model: str, target: str, ts_event, value: str,
               horizon: int = 1) -> pa.RecordBatch:
    """``forecasts`` records (one per row of a per-instrument forecast ``table``): the column
    ``value`` as the forecast, ``model`` / ``target`` codes of :data:`normalize.records.
    FORECAST_MODELS` / ``FORECAST_TARGETS``, made at ``ts_event`` (ns since the epoch, one
    value or one per row)."""
    if model not in R.FORECAST_MODELS:
        raise ValueError(f"The `model` must be one of {', '.join(R.FORECAST_MODELS)}, was {model!r}.")
    if target not in R.FORECAST_TARGETS:
        raise ValueError(f"The `target` must be one of {', '.join(R.FORECAST_TARGETS)}, was {target!r}.")
    n = table.num_rows
    c = R.alloc_columns("forecasts", n, zero=True)
    c.ts_event[:] = ts_event
    c.value[:] = table.column(value).to_numpy(zero_copy_only=False)
    c.instrument_id[:] = table.column("instrument_id").to_numpy()
    c.horizon[:] = horizon
    c.model[:] = ord(model)
    c.target[:] = ord(target)
    if "status" in table.column_names:
        c.status[:] = table.column("status").to_numpy()
    return R.columns_to_arrow("forecasts", c)
