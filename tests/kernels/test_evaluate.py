"""kernels.evaluate against a plain Python walk-forward loop (numpy.linalg.lstsq refits, explicit
EWMA, last value and mean, losses written out) on a small case; plug-in callables; arguments."""

import math

import numpy as np
import pytest

from kernels import evaluate as E
from kernels import har as H


def simulate(n: int, T: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.empty((n, T))
    x[:, :22] = rng.uniform(0.5, 1.5, (n, 22))
    for t in range(22, T):
        x[:, t] = 0.2 + 0.3 * x[:, t - 1] + 0.25 * x[:, t - 5:t].mean(1) \
            + 0.25 * x[:, t - 22:t].mean(1) + 0.15 * rng.standard_normal(n)
    return np.abs(x) + 0.01


def py_har_fit(train: list[float], lags):
    """lstsq coefficients on a gap-free list, or None when too short."""
    ld, lw, lm = lags
    rows = [[1.0, np.mean(train[t - ld + 1:t + 1]), np.mean(train[t - lw + 1:t + 1]),
             np.mean(train[t - lm + 1:t + 1])] for t in range(lm - 1, len(train) - 1)]
    if len(rows) < H.MIN_OBS:
        return None
    b, *_ = np.linalg.lstsq(np.array(rows), np.array(train[lm:]), rcond=None)
    return b


def py_walk(x, lags=(1, 5, 22), window=None, refit=1, lam=0.94, start=None):
    """The forecasts of every model by plain loops: {model: (n, T) array}."""
    ld, lw, lm = lags
    n, T = x.shape
    start = lm + H.MIN_OBS if start is None else start
    out = {m: np.full((n, T), np.nan) for m in ("har", "ewma", "naive", "mean")}
    for i in range(n):
        b = None
        for t in range(start, T):
            lo = 0 if window is None else max(0, t - window)
            train = [v for v in x[i, lo:t] if np.isfinite(v)]
            if (t - start) % refit == 0:
                b = py_har_fit(train, lags)
            if b is not None:
                last = list(x[i, :t])
                out["har"][i, t] = b @ [1.0, np.mean(last[-ld:]), np.mean(last[-lw:]), np.mean(last[-lm:])]
            s = None
            for v in train:
                s = v if s is None else lam * s + (1 - lam) * v
            out["ewma"][i, t] = s
            out["naive"][i, t] = train[-1]
            out["mean"][i, t] = sum(train) / len(train)
    return out


def py_losses(x, fcs, kind):
    """{model: (per-instrument means, per-instrument counts)} on the common sample."""
    def loss(y, f):
        if not (np.isfinite(y) and np.isfinite(f)):
            return None
        if kind == "qlike":
            return y / f - math.log(y / f) - 1 if y > 0 and f > 0 else None
        return (y - f) ** 2 if kind == "mse" else abs(y - f)

    n, T = x.shape
    res = {m: ([], []) for m in fcs}
    for i in range(n):
        acc = {m: [] for m in fcs}
        for t in range(T):
            ls = {m: loss(x[i, t], f[i, t]) for m, f in fcs.items()}
            if all(v is not None for v in ls.values()):
                for m, v in ls.items():
                    acc[m].append(v)
        for m in fcs:
            res[m][0].append(sum(acc[m]) / len(acc[m]) if acc[m] else np.nan)
            res[m][1].append(len(acc[m]))
    return res


@pytest.fixture(scope="module")
def small():
    return simulate(3, 60, seed=11)


@pytest.mark.parametrize("kw", [dict(), dict(window=40), dict(refit=4), dict(window=35, refit=3)])
def test_walk_forward_forecasts_and_losses_match_a_plain_python_loop(small, kw):
    models = ("har", "ewma", "naive", "mean")
    got = E.walk_forecasts(small, model=models, device="cpu", **kw)
    want = py_walk(small, **kw)
    for m in models:
        np.testing.assert_allclose(got[m], want[m], rtol=1e-9, err_msg=m)
    table = E.walk_forward(small, model=models, loss=("qlike", "mse", "mae"), device="cpu", **kw)
    d = table.to_pandas()
    for kind in ("qlike", "mse", "mae"):
        ref = py_losses(small, want, kind)
        for m in models:
            rows = d[(d.model == m) & (d.loss == kind)]
            assert rows.instrument_id.tolist() == ["0", "1", "2", "all"]
            np.testing.assert_allclose(rows.value.to_numpy()[:3], ref[m][0], rtol=1e-9)
            assert rows.n.tolist()[:3] == ref[m][1]
            pooled = np.sum(np.array(ref[m][0]) * np.array(ref[m][1])) / sum(ref[m][1])
            assert rows.value.to_numpy()[3] == pytest.approx(pooled, rel=1e-9)
            assert rows.n.tolist()[3] == sum(ref[m][1])


def test_har_beats_the_naive_baselines_on_a_har_process():
    x = simulate(20, 200, seed=5)
    d = E.walk_forward(x, model=("har",), device="cpu", loss=("mse",)).to_pandas()
    pooled = d[d.instrument_id == "all"].set_index("model").value
    assert pooled["har"] < pooled["naive"] and pooled["har"] < pooled["mean"]


def test_a_fit_forecast_callable_plugs_in_like_a_model(small):
    seen = []

    def last_mean(train):
        seen.append(train.shape)
        return np.nanmean(train[:, -3:], axis=1)

    fcs = E.walk_forecasts(small, model=(), baselines=("mean",), fit_forecast={"m3": last_mean},
                           start=40, window=30, device="cpu")
    assert list(fcs) == ["mean", "m3"] and seen[0] == (3, 30) and len(seen) == 20
    for t in range(40, 60):
        np.testing.assert_allclose(fcs["m3"][:, t], small[:, t - 3:t].mean(axis=1), rtol=1e-15)
    got = E.walk_forward(small, model="har", fit_forecast=lambda tr: np.nanmean(tr, axis=1),
                         device="cpu").to_pandas()
    by = got.set_index(["model", "instrument_id", "loss"]).value
    assert set(got.model) == {"har", "naive", "mean", "<lambda>"}
    np.testing.assert_allclose(by["<lambda>"].to_numpy(), by["mean"].to_numpy(), rtol=1e-12)


def test_bad_series_are_left_out_of_the_losses_and_the_others_are_unchanged(small):
    x = np.vstack([small, np.full((1, 60), 0.5), np.full((1, 60), np.nan)])
    x[0, 45] = np.inf
    got = E.walk_forward(x, model="har", device="cpu").to_pandas()
    alone = E.walk_forward(small[1:], model="har", device="cpu").to_pandas()
    for inst, ref in (("1", "0"), ("2", "1")):
        a = got[got.instrument_id == inst].reset_index(drop=True)
        b = alone[alone.instrument_id == ref].reset_index(drop=True)
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.n, b.n)
    n = got.set_index(["instrument_id", "model", "loss"]).n
    assert n["3"].eq(0).all() and n["4"].eq(0).all()     # constant: no HAR; all NaN: nothing
    assert (n["0"] < n["1"]).all()                        # from the inf on, HAR fits fail
    free = E.walk_forward(x, model="har", common=False, device="cpu").to_pandas()
    nf = free.set_index(["instrument_id", "model", "loss"]).n
    assert nf["3", "naive", "mse"] > 0 and nf["3", "har", "mse"] == 0


def test_log_har_forecasts_are_positive_and_exp_of_a_log_fit(small):
    got = E.walk_forecasts(small, model="har", baselines=(), log=True, device="cpu")["har"]
    want = py_walk(np.log(small))["har"]
    np.testing.assert_allclose(got, np.exp(want), rtol=1e-9)


@pytest.mark.parametrize(("kw", "name"), [
    (dict(window=20), "window"), (dict(window=0), "window"), (dict(start=60), "start"),
    (dict(start=0), "start"), (dict(loss="rmse"), "loss"), (dict(loss=()), "loss"),
    (dict(model="garch"), "model"), (dict(baselines=("rw",)), "baselines"), (dict(refit=0), "refit"),
    (dict(lam=1.5), "lam"), (dict(device="tpu"), "device"), (dict(fit_forecast=3), "fit_forecast"),
    (dict(fit_forecast=lambda tr: tr[:, -1:]), "fit_forecast"),
    (dict(fit_forecast={"mean": np.nanmean}), "fit_forecast"), (dict(instrument_id=[1]), "instrument_id"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(small, kw, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        E.walk_forward(small, **kw)


def test_a_series_that_is_not_2d_raises_value_error_naming_series_2d():
    with pytest.raises(ValueError, match="`series_2d`"):
        E.walk_forward(np.ones((2, 3, 4)))
