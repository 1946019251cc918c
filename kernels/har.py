"""HAR-RV (Corsi 2009) for many instruments at once, on the CPU and the GPU.

The heterogeneous autoregressive model of realized variance,

    RV_{t+1} = b0 + b_d RV^d_t + b_w RV^w_t + b_m RV^m_t + e_{t+1},
    RV^L_t = (RV_{t-L+1} + ... + RV_t) / L,   (d, w, m) = (1, 5, 22) by default (``lags``),

fitted by OLS per instrument, with h-step forecasts from the fitted recursion (forecasts fed
back in place of the values they stand for): ``forecast_1`` is the forecast of the value after
the last one, ``forecast_h`` of the h-th after it. ``log=True`` fits the same model to
``log RV`` and returns ``exp`` of the log forecasts (the median of a log-normal forecast; the
column ``sigma2``, the residual variance, gives the mean as ``exp(f + sigma2 / 2)`` one step
ahead). Formulas and references: ``docs/forecasts.md``.

The fit of one instrument (:func:`_har_fit`) is written once and compiled by numba for the CPU
(:func:`_har_cpu`, ``prange`` over instruments) and for CUDA (:func:`_gpu_kernels`, one thread
per instrument); no per-thread memory beyond scalars, and both run the same arithmetic (up to
the multiply-adds a GPU compiler may fuse into FMAs; none under the CUDA simulator):

* pass 1: the means of the three regressors and of the target over the regression rows;
* pass 2: the centred cross products (3 x 3 and 3 x 1);
* the normal equations of the centred regressors scaled to unit length (a correlation matrix)
  solved by a 3 x 3 Cholesky factorisation; the intercept from the means. Centring removes the
  intercept's collinearity with the regressors, the worst of the conditioning of raw normal
  equations; a regressor whose standard deviation is below :data:`CONST_TOL` times its mean,
  or a Cholesky pivot below :data:`SINGULAR_TOL`, gives ``SINGULAR``;
* pass 3: the residual variance ``sigma2 = SSR / (n_obs - 4)``.

Each regressor value is summed afresh from the series (no running sums), so a fit on a window
of a series is the fit of that window alone (:mod:`kernels.evaluate` refits on windows).

Input rows: an instrument's values, NaN before its first and after its last value (padding);
a NaN between two values, or an infinite value, makes the series ``NON_FINITE``. A series that
cannot be fitted gets a status (:data:`STATUS`) and NaN coefficients and forecasts; the other
instruments are fitted as usual.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import pyarrow as pa
from numba import cuda

from kernels.devicefn import device_function
from kernels.features import _check_device, _use_gpu

LAGS = (1, 5, 22)                 # daily, weekly, monthly averaging windows (observations)
MIN_OBS = 10                      # fewest regression rows fitted (4 coefficients)
SINGULAR_TOL = 1e-10              # smallest Cholesky pivot of the regressors' correlation matrix
CONST_TOL = 1e-12                 # smallest standard deviation of a regressor, relative to its mean

OK, TOO_SHORT, ALL_NAN, CONSTANT, NON_FINITE, SINGULAR = 0, 1, 2, 3, 4, 5
#: Per-instrument status codes of :func:`har_rv` (``status`` column, uint8).
STATUS = {OK: "ok",
          TOO_SHORT: "fewer than min_obs regression rows (series shorter than lags[-1] + min_obs)",
          ALL_NAN: "no values",
          CONSTANT: "constant series",
          NON_FINITE: "an infinite value or a gap (NaN) inside the series (log: a value <= 0)",
          SINGULAR: "regressors collinear (a Cholesky pivot below SINGULAR_TOL) or one without "
                    "variation (standard deviation below CONST_TOL times its mean)"}
N_COEF = 5                        # b0, b_d, b_w, b_m, sigma2
COEF_COLUMNS = ("b0", "b_d", "b_w", "b_m", "sigma2")
THREADS = 64                      # CUDA threads per block (one per instrument)


# -- the per-instrument fit, for both devices ----------------------------------------------------

@numba.njit
def _back_mean(x, i, t, L):
    """Mean of ``x[i, t-L+1 .. t]``, summed in time order."""
    s = 0.0
    for p in range(t - L + 1, t + 1):
        s += x[i, p]
    return s / L


@numba.njit
def _har_fit(x, i, a, b, ld, lw, lm, min_obs, coef):
    """Fit HAR to row ``i`` of ``x``, columns ``a .. b-1``; write ``coef[i, :]`` (b0, b_d, b_w,
    b_m, sigma2; NaN unless OK). Returns ``(status, n_obs, end)``: ``end`` is one past the last
    value of the window's span (``a`` when there is none)."""
    nan = np.nan
    for c in range(N_COEF):
        coef[i, c] = nan
    first = -1
    end = a
    gap = False                  # a NaN seen after the first value
    inner_nan = False            # ... followed by a value
    inf = False
    for p in range(a, b):
        v = x[i, p]
        if v != v:
            if first >= 0:
                gap = True
            continue
        if math.isinf(v):
            inf = True
        if first < 0:
            first = p
        if gap:
            inner_nan = True
        end = p + 1
    if first < 0:
        return ALL_NAN, 0, a
    n_obs = end - first - lm
    if n_obs < 0:
        n_obs = 0
    if inf or inner_nan:
        return NON_FINITE, n_obs, end
    if n_obs < min_obs:
        return TOO_SHORT, n_obs, end
    v0 = x[i, first]
    const = True
    for p in range(first + 1, end):
        if x[i, p] != v0:
            const = False
            break
    if const:
        return CONSTANT, n_obs, end
    # regression rows t = t0 .. end-2: regressors at t, target x[t + 1]
    t0 = first + lm - 1
    m1 = 0.0
    m2 = 0.0
    m3 = 0.0
    my = 0.0
    for t in range(t0, end - 1):
        m1 += _back_mean(x, i, t, ld)
        m2 += _back_mean(x, i, t, lw)
        m3 += _back_mean(x, i, t, lm)
        my += x[i, t + 1]
    m1 /= n_obs
    m2 /= n_obs
    m3 /= n_obs
    my /= n_obs
    s11 = s12 = s13 = s22 = s23 = s33 = 0.0
    s1y = s2y = s3y = 0.0
    for t in range(t0, end - 1):
        u1 = _back_mean(x, i, t, ld) - m1
        u2 = _back_mean(x, i, t, lw) - m2
        u3 = _back_mean(x, i, t, lm) - m3
        uy = x[i, t + 1] - my
        s11 += u1 * u1
        s12 += u1 * u2
        s13 += u1 * u3
        s22 += u2 * u2
        s23 += u2 * u3
        s33 += u3 * u3
        s1y += u1 * uy
        s2y += u2 * uy
        s3y += u3 * uy
    # a regressor without variation (relative to its level) cannot be separated from b0
    if not (s11 > n_obs * (CONST_TOL * m1) ** 2 and s22 > n_obs * (CONST_TOL * m2) ** 2
            and s33 > n_obs * (CONST_TOL * m3) ** 2):
        return SINGULAR, n_obs, end
    d1 = math.sqrt(s11)
    d2 = math.sqrt(s22)
    d3 = math.sqrt(s33)
    c21 = s12 / (d1 * d2)
    c31 = s13 / (d1 * d3)
    c32 = s23 / (d2 * d3)
    r1 = s1y / d1
    r2 = s2y / d2
    r3 = s3y / d3
    # Cholesky of [[1, c21, c31], [c21, 1, c32], [c31, c32, 1]] = L L'
    p22 = 1.0 - c21 * c21
    if not (p22 > SINGULAR_TOL):
        return SINGULAR, n_obs, end
    l22 = math.sqrt(p22)
    l32 = (c32 - c31 * c21) / l22
    p33 = 1.0 - c31 * c31 - l32 * l32
    if not (p33 > SINGULAR_TOL):
        return SINGULAR, n_obs, end
    l33 = math.sqrt(p33)
    z1 = r1                                  # L z = r
    z2 = (r2 - c21 * z1) / l22
    z3 = (r3 - c31 * z1 - l32 * z2) / l33
    w3 = z3 / l33                            # L' w = z
    w2 = (z2 - l32 * w3) / l22
    w1 = z1 - c21 * w2 - c31 * w3
    bd = w1 / d1
    bw = w2 / d2
    bm = w3 / d3
    b0 = my - bd * m1 - bw * m2 - bm * m3
    ssr = 0.0
    for t in range(t0, end - 1):
        e = x[i, t + 1] - (b0 + bd * _back_mean(x, i, t, ld) + bw * _back_mean(x, i, t, lw)
                           + bm * _back_mean(x, i, t, lm))
        ssr += e * e
    coef[i, 0] = b0
    coef[i, 1] = bd
    coef[i, 2] = bw
    coef[i, 3] = bm
    coef[i, 4] = ssr / (n_obs - 4) if n_obs > 4 else nan
    return OK, n_obs, end


@numba.njit
def _har_forecast(x, i, end, ld, lw, lm, coef, fc, h):
    """``fc[i, 0 .. h-1]``: forecasts of positions ``end .. end+h-1`` of row ``i`` from its
    values before ``end`` and the coefficients ``coef[i]``, each forecast fed back for the next
    (position ``p >= end`` reads ``fc[i, p - end]``). NaN when a needed value is not finite."""
    b0 = coef[i, 0]
    bd = coef[i, 1]
    bw = coef[i, 2]
    bm = coef[i, 3]
    for s in range(h):
        t = end - 1 + s                      # the last position known at step s
        sd = 0.0
        sw = 0.0
        sm = 0.0
        for p in range(t - lm + 1, t + 1):
            if p < 0:
                v = np.nan
            elif p < end:
                v = x[i, p]
            else:
                v = fc[i, p - end]
            sm += v
            if p > t - lw:
                sw += v
            if p > t - ld:
                sd += v
        f = b0 + bd * (sd / ld) + bw * (sw / lw) + bm * (sm / lm)
        fc[i, s] = f if math.isfinite(f) else np.nan


@numba.njit
def _har_row(x, i, ld, lw, lm, min_obs, h, coef, info, fc):
    """Row ``i``: fit on the whole row (:func:`_har_fit`), then :func:`_har_forecast` from
    the end of its span; ``info[i]`` = status, n_obs."""
    st, n_obs, end = _har_fit(x, i, 0, x.shape[1], ld, lw, lm, min_obs, coef)
    info[i, 0] = st
    info[i, 1] = n_obs
    if st == OK:
        _har_forecast(x, i, end, ld, lw, lm, coef, fc, h)
    else:
        for s in range(h):
            fc[i, s] = np.nan


@numba.njit(cache=True, nogil=True, parallel=True)
def _har_cpu(x, ld, lw, lm, min_obs, h, coef, info, fc):
    """:func:`_har_row` for every row of ``x``, rows in parallel."""
    for i in numba.prange(x.shape[0]):
        _har_row(x, i, ld, lw, lm, min_obs, h, coef, info, fc)


# -- the same functions on the GPU ------------------------------------------------------------------

@functools.cache
def device_functions() -> dict:
    """The HAR helpers as device functions, keyed by name (shared with the other forecast
    modules' kernels)."""
    back_mean = device_function(_back_mean)
    fit = device_function(_har_fit, _back_mean=back_mean)
    forecast = device_function(_har_forecast)
    row = device_function(_har_row, _har_fit=fit, _har_forecast=forecast)
    return {"_back_mean": back_mean, "_har_fit": fit, "_har_forecast": forecast, "_har_row": row}


@functools.cache
def _gpu_kernels():
    row = device_functions()["_har_row"]

    @cuda.jit
    def har_kernel(x, ld, lw, lm, min_obs, h, coef, info, fc):
        """Thread ``i``: :func:`_har_row` of row ``i``."""
        i = cuda.grid(1)
        if i < x.shape[0]:
            row(x, i, ld, lw, lm, min_obs, h, coef, info, fc)

    return har_kernel


def _fit_arrays(x: np.ndarray, lags, min_obs: int, horizon: int, gpu: bool):
    """Coefficients (n, 5), info (n, 2: status, n_obs) and forecasts (n, horizon) of the rows of
    ``x`` (float64, C order), on the CPU or the GPU."""
    n = x.shape[0]
    ld, lw, lm = (int(v) for v in lags)
    coef = np.empty((n, N_COEF), np.float64)
    info = np.empty((n, 2), np.int64)
    fc = np.empty((n, horizon), np.float64)
    if n == 0:
        return coef, info, fc
    if gpu:
        d = [cuda.to_device(a) for a in (x, coef, info, fc)]
        _gpu_kernels()[(n + THREADS - 1) // THREADS, THREADS](
            d[0], ld, lw, lm, int(min_obs), int(horizon), d[1], d[2], d[3])
        cuda.synchronize()
        return d[1].copy_to_host(), d[2].copy_to_host(), d[3].copy_to_host()
    _har_cpu(x, np.int64(ld), np.int64(lw), np.int64(lm), np.int64(min_obs), np.int64(horizon),
             coef, info, fc)
    return coef, info, fc


# -- parameters and inputs ---------------------------------------------------------------------------

def check_lags(lags) -> tuple[int, int, int]:
    """``lags`` as three increasing positive ints; ValueError naming ``lags`` otherwise."""
    try:
        t = tuple(int(v) for v in lags)
        ok = len(t) == 3 and all(int(v) == v for v in lags) and 1 <= t[0] < t[1] < t[2]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"The `lags` must be three increasing positive integers (daily, weekly, "
                         f"monthly), e.g. {LAGS}, was {lags!r}.")
    return t


def check_int(name: str, value, lo: int) -> int:
    """``value`` as an int >= ``lo``; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"The `{name}` must be an integer >= {lo}, was {value!r}.")
    return int(value)


def log_values(x: np.ndarray) -> np.ndarray:
    """``log x`` with NaN kept (padding) and values <= 0 made -inf (NON_FINITE, never padding)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.where(np.isnan(x), np.nan, -np.inf))


def rows_from_table(t, value: str, order: str | None = None, name: str = "rv"):
    """``(ids, x)`` from a table of (instrument_id, ``value``) rows: one row of ``x`` per
    instrument (ids ascending), its values in table order (or by column ``order`` when given,
    stable), NaN and null values left out, padded with NaN at the end. Vectorized. ``name``:
    the argument named by a ValueError when columns are missing."""
    if isinstance(t, pa.RecordBatch):
        t = pa.Table.from_batches([t])
    if not isinstance(t, pa.Table):
        raise ValueError(f"The `{name}` must be a pyarrow Table, was {type(t).__name__}.")
    need = ("instrument_id", value) + ((order,) if order else ())
    missing = [c for c in need if c not in t.column_names]
    if missing:
        raise ValueError(f"The `{name}` lacks columns {missing}; it needs {list(need)}.")
    inst = np.asarray(t.column("instrument_id").to_numpy(zero_copy_only=False), np.int64)
    v = t.column(value)
    v = np.asarray(v.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
    if order:
        o = t.column(order)
        if pa.types.is_timestamp(o.type):
            o = o.cast(pa.int64())
        perm = np.lexsort((o.to_numpy(zero_copy_only=False), inst))
    else:
        perm = np.argsort(inst, kind="stable")
    inst = inst[perm]
    v = v[perm]
    ids = np.unique(inst)
    keep = ~np.isnan(v)
    inst = inst[keep]
    v = v[keep]
    g = np.searchsorted(ids, inst)
    counts = np.bincount(g, minlength=len(ids))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(len(v)) - starts[g]
    x = np.full((len(ids), int(counts.max()) if len(ids) and len(v) else 0), np.nan)
    x[g, pos] = v
    return ids.astype(np.uint32), x


def float_2d(value, name: str, alt: str = "") -> np.ndarray:
    """A 2-D float64 C-order array (instruments x time; a 1-D one is one instrument) from
    ``value``, or a ValueError naming the argument ``name`` (``alt``: what else it may be)."""
    try:
        x = np.array(value, dtype=np.float64, order="C")
    except (TypeError, ValueError):
        raise ValueError(f"The `{name}` must be a 2-D float array (instruments x time){alt}, was "
                         f"{type(value).__name__}.") from None
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"The `{name}` must be a 2-D float array (instruments x time), had "
                         f"shape {x.shape}.")
    return x


def _as_2d(rv, name: str):
    """``(ids or None, x)``: a 2-D float64 C-order array from ``rv`` (array or table)."""
    if isinstance(rv, (pa.Table, pa.RecordBatch)):
        return rows_from_table(rv, "rv", "window_start" if "window_start" in rv.column_names else None)
    return None, float_2d(rv, name, " or a table of (instrument_id, rv)")


# -- public ------------------------------------------------------------------------------------------

def har_rv(rv, *, horizon: int = 1, lags=LAGS, log: bool = False, min_obs: int = MIN_OBS,
           instrument_id=None, device: str = "auto") -> pa.Table:
    """HAR-RV fit and forecasts per instrument (see the module docstring, docs/forecasts.md).

    ``rv``: a 2-D float array, instruments x time (NaN padding before an instrument's first and
    after its last value), or a table of ``(instrument_id, rv)`` rows in time order per
    instrument (ordered by ``window_start`` when it has one, as :func:`kernels.realized.realized`
    gives; rows with a NaN or null ``rv`` are left out, so lags count the rows present).
    ``horizon``: number of forecasts (``forecast_1 .. forecast_h``). ``lags``: the daily, weekly
    and monthly windows, in observations. ``log``: fit on ``log rv`` (values <= 0 give
    ``NON_FINITE``), forecasts ``exp`` of the log forecasts. ``min_obs``: fewest regression rows
    (a series needs ``lags[2] + min_obs`` values). ``instrument_id``: ids of a 2-D array's rows
    (default 0, 1, ...). ``device``: "cpu", "gpu" or "auto" (as
    :func:`kernels.features.compute`; the GPU for at least ``kernels.book.GPU_MIN_EVENTS``
    values when there is one).

    Returns one row per instrument: instrument_id (uint32), b0, b_d, b_w, b_m, sigma2 (residual
    variance SSR / (n_obs - 4)), n_obs (regression rows, int64), status (uint8, :data:`STATUS`),
    forecast_1 .. forecast_h (float64). Coefficients and forecasts are NaN unless status is OK.
    """
    _check_device(device)
    horizon = check_int("horizon", horizon, 1)
    min_obs = check_int("min_obs", min_obs, 4)
    lags = check_lags(lags)
    ids, x = _as_2d(rv, "rv")
    if ids is None:
        if instrument_id is None:
            ids = np.arange(x.shape[0], dtype=np.uint32)
        else:
            ids = np.asarray(instrument_id)
            if ids.shape != (x.shape[0],):
                raise ValueError(f"The `instrument_id` must have one id per row of `rv` "
                                 f"({x.shape[0]}), had shape {ids.shape}.")
            ids = ids.astype(np.uint32)
    elif instrument_id is not None:
        raise ValueError("The `instrument_id` is for a 2-D `rv`; a table brings its own ids.")
    xin = log_values(x) if log else x
    coef, info, fc = _fit_arrays(np.ascontiguousarray(xin), lags, min_obs, horizon,
                                 _use_gpu(device, x.size))
    if log:
        with np.errstate(over="ignore", invalid="ignore"):
            fc = np.exp(fc)
    cols = {"instrument_id": pa.array(ids, pa.uint32())}
    for k, c in enumerate(COEF_COLUMNS):
        cols[c] = pa.array(coef[:, k], pa.float64())
    cols["n_obs"] = pa.array(info[:, 1], pa.int64())
    cols["status"] = pa.array(info[:, 0].astype(np.uint8), pa.uint8())
    for s in range(horizon):
        cols[f"forecast_{s + 1}"] = pa.array(fc[:, s], pa.float64())
    meta = {"tickpipe.schema": "har-rv", "tickpipe.har.lags": ",".join(map(str, lags)),
            "tickpipe.har.log": str(bool(log)).lower()}
    return pa.table(cols).replace_schema_metadata(meta)
