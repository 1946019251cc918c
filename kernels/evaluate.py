"""Walk-forward evaluation of one-step forecasts, batched over instruments (:func:`walk_forward`).

For each step ``t = start .. T-1`` every model forecasts ``x[:, t]`` from a training window of
the values before ``t``: ``x[:, 0:t]`` (expanding, ``window=None``) or ``x[:, t-window:t]``
(rolling). Models:

* ``"har"``: HAR (:mod:`kernels.har`, ``lags``, ``log``) refitted on the training window every
  ``refit`` steps (at ``t = start, start + refit, ...``); between refits the last coefficients
  are applied to the latest values. A failed fit (a status other than OK) gives NaN forecasts
  until the next refit.
* ``"ewma"``: ``s = lam s + (1 - lam) x`` over the training window's finite values, starting at
  the first (RiskMetrics' recursion on the series itself); the forecast is the last ``s``.
* ``"naive"``: the last finite value of the training window (random walk).
* ``"mean"``: the mean of the training window's finite values (the expanding mean with
  ``window=None``).
* a callable ``fit_forecast(train_2d) -> next_values_1d`` (or several, in a dict by name): called
  at every step with the training window (instruments x window, read-only) and returning one
  forecast per instrument; e.g. the GARCH of :mod:`kernels.garch`.

The compiled models run in one kernel (:func:`_walk_row`, per instrument: CPU ``prange``, or
one CUDA thread per instrument) with :mod:`kernels.har`'s fit and forecast functions.

Losses of forecast ``f`` for the value ``y``: ``"qlike"`` ``y / f - log(y / f) - 1`` (defined
for ``y, f > 0``; Patton 2011), ``"mse"`` ``(y - f)^2`` (variance), ``"mae"`` ``|y - f|``
(spread, depth). Each is averaged over the (instrument, step) pairs where it is defined; with
``common=True`` (default) over the pairs where it is defined for every model, so the models are
compared on the same sample.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import pyarrow as pa
from numba import cuda

from kernels import har as H
from kernels import liquidity as L
from kernels.features import _check_device, _use_gpu
from kernels.har import _har_fit, _har_forecast
from kernels.liquidity import _ewma_last

MODELS = ("har", "ewma", "naive", "mean")
LOSSES = ("qlike", "mse", "mae")
THREADS = 64


@numba.njit
def _walk_row(x, xh, i, start, window, refit, ld, lw, lm, min_obs, lam, want_har, coef, scratch,
              out):
    """Instrument ``i``: ``out[k, i, t]`` for t >= start, the forecasts of ``x[i, t]`` by HAR
    (k = 0, fitted on ``xh``, the series or its log), EWMA (1), the last value (2) and the mean
    (3) of the training window; NaN before ``start``. ``coef`` / ``scratch``: HAR coefficient
    and forecast rows of ``i``."""
    nan = np.nan
    T = x.shape[1]
    for t in range(start):
        for k in range(4):
            out[k, i, t] = nan
    ok = False
    for t in range(start, T):
        lo = 0
        if window > 0 and t - window > 0:
            lo = t - window
        if want_har:
            if (t - start) % refit == 0:
                st, n_obs, end = _har_fit(xh, i, lo, t, ld, lw, lm, min_obs, coef)
                ok = st == 0
            if ok:
                _har_forecast(xh, i, t, ld, lw, lm, coef, scratch, 1)
                out[0, i, t] = scratch[i, 0]
            else:
                out[0, i, t] = nan
        else:
            out[0, i, t] = nan
        out[1, i, t] = _ewma_last(x, i, lo, t, lam)
        last = nan
        s = 0.0
        c = 0
        for p in range(lo, t):
            v = x[i, p]
            if math.isfinite(v):
                last = v
                s += v
                c += 1
        out[2, i, t] = last
        out[3, i, t] = s / c if c > 0 else nan


@numba.njit(cache=True, nogil=True, parallel=True)
def _walk_cpu(x, xh, start, window, refit, ld, lw, lm, min_obs, lam, want_har, coef, scratch,
              out):
    for i in numba.prange(x.shape[0]):
        _walk_row(x, xh, i, start, window, refit, ld, lw, lm, min_obs, lam, want_har, coef,
                  scratch, out)


@functools.cache
def _gpu_kernel():
    f = H.device_functions()
    row = H.device_function(_walk_row, _har_fit=f["_har_fit"], _har_forecast=f["_har_forecast"],
                            _ewma_last=H.device_function(_ewma_last))

    @cuda.jit
    def walk_kernel(x, xh, start, window, refit, ld, lw, lm, min_obs, lam, want_har, coef,
                    scratch, out):
        """Thread ``i``: :func:`_walk_row` of instrument ``i``."""
        i = cuda.grid(1)
        if i < x.shape[0]:
            row(x, xh, i, start, window, refit, ld, lw, lm, min_obs, lam, want_har, coef,
                scratch, out)

    return walk_kernel


def _compiled(x, xh, start, window, refit, lags, min_obs, lam, want_har, gpu) -> np.ndarray:
    """``(4, n, T)`` forecasts of the compiled models (:func:`_walk_row`)."""
    n, T = x.shape
    ld, lw, lm = lags
    coef = np.empty((n, H.N_COEF), np.float64)
    scratch = np.empty((n, 1), np.float64)
    out = np.empty((4, n, T), np.float64)
    if n == 0 or T == 0:
        return out
    args = (int(start), int(window), int(refit), int(ld), int(lw), int(lm), int(min_obs),
            float(lam), bool(want_har))
    if gpu:
        d = [cuda.to_device(np.ascontiguousarray(a)) for a in (x, xh, coef, scratch, out)]
        _gpu_kernel()[(n + THREADS - 1) // THREADS, THREADS](d[0], d[1], *args, d[2], d[3], d[4])
        cuda.synchronize()
        return d[4].copy_to_host()
    _walk_cpu(x, xh, *(np.int64(a) for a in args[:7]), np.float64(lam), np.bool_(want_har),
              coef, scratch, out)
    return out


# -- parameters ----------------------------------------------------------------------------------

def _names(name: str, value, valid) -> tuple[str, ...]:
    vals = (value,) if isinstance(value, str) else tuple(value) if value is not None else ()
    bad = [v for v in vals if v not in valid]
    if bad or (name == "loss" and not vals):
        raise ValueError(f"The `{name}` was not a valid value, was {value!r}. Use any of {valid}.")
    return tuple(dict.fromkeys(vals))


def _callables(fit_forecast) -> dict:
    if fit_forecast is None:
        return {}
    if callable(fit_forecast):
        return {getattr(fit_forecast, "__name__", "custom") or "custom": fit_forecast}
    if isinstance(fit_forecast, dict) and all(callable(f) for f in fit_forecast.values()):
        return {str(k): f for k, f in fit_forecast.items()}
    raise ValueError(f"The `fit_forecast` must be a callable train_2d -> next_values_1d or a "
                     f"dict of them by name, was {type(fit_forecast).__name__}.")


def _series(series) -> np.ndarray:
    return H.float_2d(series, "series_2d")


# -- public --------------------------------------------------------------------------------------

def walk_forecasts(series_2d, *, model="har", baselines=("naive", "mean"), window=None,
                   start=None, refit: int = 1, lam: float = 0.94, lags=H.LAGS,
                   min_obs: int = H.MIN_OBS, log: bool = False, fit_forecast=None,
                   device: str = "auto") -> dict[str, np.ndarray]:
    """The walk-forward forecasts of :func:`walk_forward`: ``{model name: (n, T) array}``,
    ``[:, t]`` the forecast of ``series_2d[:, t]`` (NaN before ``start``). Arguments as
    :func:`walk_forward`."""
    _check_device(device)
    x = _series(series_2d)
    n, T = x.shape
    lags = H.check_lags(lags)
    min_obs = H.check_int("min_obs", min_obs, 4)
    refit = H.check_int("refit", refit, 1)
    lam = L.check_lam(lam)
    names = _names("model", model, MODELS)
    names += tuple(b for b in _names("baselines", baselines, MODELS) if b not in names)
    custom = _callables(fit_forecast)
    clash = [k for k in custom if k in names]
    if clash:
        raise ValueError(f"The `fit_forecast` names {clash} clash with built-in models {names}.")
    if not names and not custom:
        raise ValueError("The `model`, `baselines` and `fit_forecast` give no model to evaluate.")
    need = lags[2] + min_obs
    if window is not None:
        window = H.check_int("window", window, 1)
        if "har" in names and window < need:
            raise ValueError(f"The `window` must hold at least lags[2] + min_obs = {need} values "
                             f"for HAR, was {window!r}.")
    if start is None:
        start = need
    start = H.check_int("start", start, 1)
    if start >= T:
        raise ValueError(f"The `start` must be below the series length {T}, was {start!r}.")
    out = {}
    if set(names) & set(MODELS):
        xh = H.log_values(x) if log else x
        fc = _compiled(x, np.ascontiguousarray(xh), start, window or 0, refit, lags, min_obs, lam,
                       "har" in names, _use_gpu(device, x.size))
        if log:
            with np.errstate(over="ignore", invalid="ignore"):
                fc[0] = np.exp(fc[0])
        for k, m in enumerate(MODELS):
            if m in names:
                out[m] = fc[k]
    view = x.view()
    view.flags.writeable = False
    for name, fn in custom.items():
        f = np.full((n, T), np.nan)
        for t in range(start, T):
            lo = 0 if window is None else max(0, t - window)
            v = np.asarray(fn(view[:, lo:t]), dtype=np.float64)
            if v.shape != (n,):
                raise ValueError(f"The `fit_forecast` {name!r} must return one value per "
                                 f"instrument, shape ({n},), returned shape {v.shape} at step {t}.")
            f[:, t] = v
        out[name] = f
    return {k: out[k] for k in (*names, *custom)}


def losses(y: np.ndarray, f: np.ndarray, kind: str) -> np.ndarray:
    """Loss ``kind`` of forecasts ``f`` for values ``y``, NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ok = np.isfinite(y) & np.isfinite(f)
        if kind == "qlike":
            ok &= (y > 0) & (f > 0)
            r = np.where(ok, y / np.where(ok, f, 1.0), 1.0)
            v = r - np.log(r) - 1.0
        elif kind == "mse":
            v = (y - f) ** 2
        else:
            v = np.abs(y - f)
    return np.where(ok & np.isfinite(v), v, np.nan)


def walk_forward(series_2d, *, model="har", baselines=("naive", "mean"), window=None, start=None,
                 refit: int = 1, loss=("qlike", "mse"), lam: float = 0.94, lags=H.LAGS,
                 min_obs: int = H.MIN_OBS, log: bool = False, fit_forecast=None,
                 common: bool = True, instrument_id=None, device: str = "auto") -> pa.Table:
    """Walk-forward one-step forecasts and their mean losses; see the module docstring.

    ``series_2d``: instruments x time (float; NaN before an instrument's first and after its
    last value). ``model``: one of :data:`MODELS` or a sequence of them; ``baselines``: more of
    them, evaluated too (default the random walk and the mean). ``fit_forecast``: a callable
    ``train_2d -> next_values_1d`` or a dict of them by name, evaluated as further models.
    ``window``: None (expanding) or the rolling window length. ``start``: the first step
    forecast (default ``lags[2] + min_obs``, the first with enough values for HAR). ``refit``:
    HAR refit interval in steps. ``loss``: any of :data:`LOSSES`. ``lam``: the EWMA decay.
    ``lags``, ``min_obs``, ``log``: HAR's (:func:`kernels.har.har_rv`). ``common``: average
    every model over the same pairs (see above). ``instrument_id``: labels of the rows
    (default 0, 1, ...). ``device``: "cpu", "gpu" or "auto" for the compiled models.

    Returns a table with columns model (string), instrument_id (string: the id, or "all" for
    the pooled mean over every instrument and step), loss (string), value (float64, NaN when
    n is 0), n (int64: the pairs averaged); per model and loss, one row per instrument then
    "all".
    """
    kinds = _names("loss", loss, LOSSES)
    fcs = walk_forecasts(series_2d, model=model, baselines=baselines, window=window, start=start,
                         refit=refit, lam=lam, lags=lags, min_obs=min_obs, log=log,
                         fit_forecast=fit_forecast, device=device)
    y = _series(series_2d)
    n = y.shape[0]
    if instrument_id is None:
        labels = [str(i) for i in range(n)]
    else:
        labels = [str(v) for v in np.asarray(instrument_id).tolist()]
        if len(labels) != n:
            raise ValueError(f"The `instrument_id` must have one id per row of `series_2d` ({n}), "
                             f"had {len(labels)}.")
    rows = {"model": [], "instrument_id": [], "loss": [], "value": [], "n": []}
    for kind in kinds:
        per = {m: losses(y, f, kind) for m, f in fcs.items()}
        if common:
            mask = np.logical_and.reduce([~np.isnan(v) for v in per.values()])
            per = {m: np.where(mask, v, np.nan) for m, v in per.items()}
        for m, v in per.items():
            ok = ~np.isnan(v)
            cnt = ok.sum(axis=1)
            tot = np.where(ok, v, 0.0).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
            all_n = int(cnt.sum())
            all_v = float(np.where(ok, v, 0.0).sum() / all_n) if all_n else float("nan")
            rows["model"] += [m] * (n + 1)
            rows["instrument_id"] += labels + ["all"]
            rows["loss"] += [kind] * (n + 1)
            rows["value"] += mean.tolist() + [all_v]
            rows["n"] += cnt.tolist() + [all_n]
    schema = pa.schema([("model", pa.string()), ("instrument_id", pa.string()),
                        ("loss", pa.string()), ("value", pa.float64()), ("n", pa.int64())])
    return pa.table(rows, schema=schema)
