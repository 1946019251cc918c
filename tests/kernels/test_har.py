"""kernels.har against numpy.linalg.lstsq on the same design matrices, forecasts against a plain
Python iteration of the fitted recursion; bad rows get a status and leave the others alone; the
GPU path (CUDA simulator, in a child process) gives the CPU's tables."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pytest
from ptx import skip_without_cuda_compiler
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import book as B
from kernels import har as H

CHILD = Path(__file__).with_name("forecast_gpu_child.py")


def simulate(n: int, T: int, seed: int, lags=(1, 5, 22)) -> np.ndarray:
    """Positive series from a HAR recursion with noise (rows: instruments)."""
    rng = np.random.default_rng(seed)
    ld, lw, lm = lags
    x = np.empty((n, T))
    x[:, :lm] = rng.uniform(0.5, 1.5, (n, lm))
    beta = rng.uniform(0.15, 0.35, (n, 3))
    for t in range(lm, T):
        x[:, t] = (0.2 + beta[:, 0] * x[:, t - ld:t].mean(1) + beta[:, 1] * x[:, t - lw:t].mean(1)
                   + beta[:, 2] * x[:, t - lm:t].mean(1) + 0.1 * rng.standard_normal(n))
    return np.abs(x) * 1e-4            # variance-like magnitudes


def design(s: np.ndarray, lags=(1, 5, 22)):
    """The HAR design matrix and target of one gap-free series, built with cumulative sums."""
    ld, lw, lm = lags
    c = np.concatenate(([0.0], np.cumsum(s)))
    t = np.arange(lm - 1, len(s) - 1)                  # regression rows: regressors at t
    mean = lambda L: (c[t + 1] - c[t + 1 - L]) / L      # noqa: E731
    X = np.column_stack([np.ones(len(t)), mean(ld), mean(lw), mean(lm)])
    return X, s[t + 1]


def iterate(s: np.ndarray, b: np.ndarray, h: int, lags=(1, 5, 22)) -> list[float]:
    """h forecasts by feeding each back, in plain Python."""
    ld, lw, lm = lags
    vals = list(s)
    out = []
    for _ in range(h):
        f = b[0] + b[1] * sum(vals[-ld:]) / ld + b[2] * sum(vals[-lw:]) / lw + b[3] * sum(vals[-lm:]) / lm
        vals.append(f)
        out.append(f)
    return out


@pytest.fixture(scope="module")
def series():
    return simulate(40, 250, seed=1)


def coefs(t: pa.Table) -> np.ndarray:
    return np.column_stack([t.column(c).to_numpy() for c in ("b0", "b_d", "b_w", "b_m")])


def test_coefficients_match_lstsq_on_the_same_design_matrices(series):
    got = H.har_rv(series, device="cpu")
    assert (got.column("status").to_numpy() == H.OK).all()
    for i in range(series.shape[0]):
        X, y = design(series[i])
        b, *_ = np.linalg.lstsq(X, y, rcond=None)
        np.testing.assert_allclose(coefs(got)[i], b, rtol=1e-9, atol=0)
        e = y - X @ b
        assert got.column("sigma2")[i].as_py() == pytest.approx(e @ e / (len(y) - 4), rel=1e-9)
        assert got.column("n_obs")[i].as_py() == len(y)


@pytest.mark.parametrize("lags", [(1, 5, 22), (2, 4, 9)])
def test_multi_step_forecasts_match_a_plain_python_iteration(series, lags):
    h = 6
    got = H.har_rv(series, horizon=h, lags=lags, device="cpu")
    assert got.column_names[-h:] == [f"forecast_{k}" for k in range(1, h + 1)]
    for i in range(0, series.shape[0], 7):
        X, y = design(series[i], lags)
        b, *_ = np.linalg.lstsq(X, y, rcond=None)
        want = iterate(series[i], b, h, lags)
        np.testing.assert_allclose([got.column(f"forecast_{k}")[i].as_py() for k in range(1, h + 1)],
                                   want, rtol=1e-9)


def test_log_har_fits_log_values_and_returns_exp_of_the_log_forecasts(series):
    got = H.har_rv(series, horizon=3, log=True, device="cpu")
    for i in range(0, series.shape[0], 5):
        s = np.log(series[i])
        X, y = design(s)
        b, *_ = np.linalg.lstsq(X, y, rcond=None)
        np.testing.assert_allclose(coefs(got)[i], b, rtol=1e-9)
        np.testing.assert_allclose([got.column(f"forecast_{k}")[i].as_py() for k in (1, 2, 3)],
                                   np.exp(iterate(s, b, 3)), rtol=1e-9)
    assert got.schema.metadata[b"tickpipe.har.log"] == b"true"


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_nan_padding_at_either_end_gives_the_unpadded_fit_bit_for_bit(data):
    x = simulate(6, 60, seed=data.draw(st.integers(0, 1000)))
    lead = data.draw(st.lists(st.integers(0, 15), min_size=6, max_size=6))
    trail = data.draw(st.lists(st.integers(0, 15), min_size=6, max_size=6))
    width = 60 + 15 + 15
    padded = np.full((6, width), np.nan)
    for i in range(6):
        padded[i, lead[i]:lead[i] + 60] = x[i]
        padded[i, lead[i] + 60 + trail[i]:] = np.nan
    want = H.har_rv(x, horizon=2, device="cpu")
    got = H.har_rv(padded, horizon=2, device="cpu")
    assert got.equals(want)


def test_bad_rows_get_a_status_and_the_other_rows_are_unchanged(series):
    x = series[:12].copy()
    x[0, :-20] = np.nan                     # 20 values: 22 + 10 needed
    x[1] = np.nan
    x[2] = 3e-4
    x[3, 100] = np.inf
    x[4, 50] = -np.inf
    x[5, 120] = np.nan                      # a gap inside
    x[6, 21:] = 2e-4                        # constant regressors (the series is not constant)
    bad = {0: H.TOO_SHORT, 1: H.ALL_NAN, 2: H.CONSTANT, 3: H.NON_FINITE, 4: H.NON_FINITE,
           5: H.NON_FINITE, 6: H.SINGULAR}
    got = H.har_rv(x, horizon=2, device="cpu").to_pandas()
    for i, code in bad.items():
        assert got.status[i] == code, (i, H.STATUS[got.status[i]])
        assert got.loc[i, ["b0", "b_d", "b_w", "b_m", "sigma2", "forecast_1", "forecast_2"]].isna().all()
    assert got.n_obs[0] == 0                # 20 values: not one regression row
    good = [i for i in range(12) if i not in bad]
    alone = H.har_rv(series[good], horizon=2, device="cpu").to_pandas()
    np.testing.assert_array_equal(got.loc[good].drop(columns="instrument_id").to_numpy(),
                                  alone.drop(columns="instrument_id").to_numpy())
    assert (got.status[good] == H.OK).all()


def test_log_har_of_non_positive_values_is_non_finite_not_padding():
    x = simulate(3, 80, seed=2)
    x[0, 0] = 0.0                           # at the start: must not pass for NaN padding
    x[1, -1] = -1e-5
    got = H.har_rv(x, log=True, device="cpu").column("status").to_pylist()
    assert got == [H.NON_FINITE, H.NON_FINITE, H.OK]


def _ragged(rows):
    out = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def test_a_table_of_instrument_rows_gives_the_fit_of_the_2d_array(series):
    x = series[:3]
    ids = np.array([30, 4, 17], np.uint32)
    inst = np.tile(ids, x.shape[1])         # instruments interleaved, time order within each
    rv = x.T.reshape(-1).copy()
    rv[3 * 5] = np.nan                      # instrument 30's 6th value: a missing observation
    t = pa.table({"instrument_id": pa.array(inst, pa.uint32()), "rv": rv})
    got = H.har_rv(t, horizon=2, device="cpu")
    assert got.column("instrument_id").to_pylist() == [4, 17, 30]
    want = H.har_rv(_ragged([x[1], x[2], np.delete(x[0], 5)]), horizon=2,
                    instrument_id=[4, 17, 30], device="cpu")
    assert got.equals(want)
    assert got.column("n_obs").to_pylist() == [x.shape[1] - 22] * 2 + [x.shape[1] - 23]


def test_a_table_with_window_start_is_ordered_by_it():
    x = simulate(2, 60, seed=3)
    ws = pa.array(np.tile(np.arange(60, dtype=np.int64) * 86_400 * 10**9, 2), pa.timestamp("ns", tz="UTC"))
    t = pa.table({"instrument_id": pa.array(np.repeat([1, 2], 60), pa.uint32()), "window_start": ws,
                  "rv": x.reshape(-1)})
    shuffled = t.take(np.random.default_rng(1).permutation(t.num_rows))
    assert H.har_rv(shuffled, device="cpu").equals(H.har_rv(t, device="cpu"))
    assert coefs(H.har_rv(t, device="cpu")).tolist() == coefs(H.har_rv(x, device="cpu")).tolist()


def test_realized_tables_feed_har_rv_with_missing_days_left_out():
    from kernels.realized import realized
    rng = np.random.default_rng(8)
    days, per_day, step = 45, 78, 5 * 60 * 10**9          # 5-minute bars, 09:30 - 16:00 New York
    t = (np.arange(days)[:, None] * 86_400 * 10**9 + 13 * 3600 * 10**9 + 1800 * 10**9
         + np.arange(per_day)[None, :] * step).reshape(-1)
    parts = []
    for inst in (3, 5):
        vol = np.repeat(rng.uniform(5e-4, 2e-3, days), per_day)
        mid = 100 * np.exp(np.cumsum(vol * rng.standard_normal(t.size)))
        if inst == 5:
            mid[10 * per_day:11 * per_day] = np.nan            # day 10: no prices
        parts.append(pa.table({"instrument_id": pa.array(np.full(t.size, inst), pa.uint32()),
                               "bar_start": pa.array(t, pa.timestamp("ns", tz="UTC")), "mid": mid}))
    bars = pa.concat_tables(parts).replace_schema_metadata({"tickpipe.bar": "5min"})
    rv = realized(bars, interval="10min")
    got = H.har_rv(rv, horizon=2, device="cpu")
    d = rv.to_pandas()
    series = [d[d.instrument_id == i].rv.dropna().to_numpy() for i in (3, 5)]
    assert [len(s) for s in series] == [days, days - 1]
    want = H.har_rv(_ragged(series), horizon=2, instrument_id=[3, 5], device="cpu")
    assert got.equals(want) and got.column("status").to_pylist() == [H.OK, H.OK]


@pytest.mark.parametrize(("kw", "name"), [
    (dict(horizon=0), "horizon"), (dict(horizon=1.5), "horizon"), (dict(lags=(5, 1, 22)), "lags"),
    (dict(lags=(1, 5)), "lags"), (dict(lags="abc"), "lags"), (dict(min_obs=3), "min_obs"),
    (dict(device="tpu"), "device"), (dict(instrument_id=[1, 2]), "instrument_id"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kw, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        H.har_rv(np.ones((3, 40)), **kw)


def test_an_array_that_is_not_2d_raises_value_error_naming_rv():
    with pytest.raises(ValueError, match="`rv`"):
        H.har_rv(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="`rv`"):
        H.har_rv("not numbers")


def test_gpu_without_a_cuda_device_raises_and_auto_runs_on_the_cpu(series, monkeypatch):
    want = H.har_rv(series, device="cpu")
    monkeypatch.setattr(B, "_cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="device='gpu'.*no CUDA device"):
        H.har_rv(series, device="gpu")
    monkeypatch.setattr(B, "GPU_MIN_EVENTS", 1)
    assert H.har_rv(series, device="auto").equals(want)


def test_har_and_walk_forward_on_the_gpu_equal_the_cpu_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, str(CHILD), "har", "evaluate"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    if "SKIP" in r.stdout:
        print(r.stdout.strip())
        pytest.skip(r.stdout.strip())
    assert r.stdout.count("AGREE") == 5, r.stdout + r.stderr


def test_the_forecast_kernels_compile_to_ptx_for_hopper():
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("the CUDA simulator compiles nothing")
    from numba import cuda
    from kernels import evaluate as E
    from kernels import liquidity as L
    a = lambda dt, nd: numba.typeof(np.zeros((1,) * nd, dt))      # noqa: E731
    f8, i8, i64 = np.float64, np.int64, numba.int64
    sigs = [(H._gpu_kernels(), (a(f8, 2), i64, i64, i64, i64, i64, a(f8, 2), a(i8, 2), a(f8, 2))),
            (L._gpu_kernel(), (a(f8, 2), numba.float64, a(f8, 1))),
            (E._gpu_kernel(), (a(f8, 2), a(f8, 2), *[i64] * 7, numba.float64, numba.boolean,
                               a(f8, 2), a(f8, 2), a(f8, 3)))]
    with skip_without_cuda_compiler():
        ptxs = [cuda.compile_ptx(k.py_func, sig, cc=(9, 0))[0] for k, sig in sigs]
    for ptx in ptxs:
        assert ".entry" in ptx and "sm_90" in ptx
