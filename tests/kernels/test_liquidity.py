"""kernels.liquidity against pandas / plain NumPy: quote bars by group-bys, HAR on log spread and
log depth by numpy.linalg.lstsq, EWMA and impacts by plain loops; on a generated session and
the LOBSTER GOOG day; bad series get a status; the GPU path (CUDA simulator, in a child
process) gives the CPU's table."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import normalize
from kernels import book as B
from kernels import features as F
from kernels import har as H
from kernels import liquidity as L
from normalize import records as R
from goog_day import goog_mbo_and_book
from tickpipe.durations import duration_value

CHILD = Path(__file__).with_name("forecast_gpu_child.py")
TSZ = pa.timestamp("ns", tz="UTC")


# -- data ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated():
    from ingest.simulator import generate_session
    s = generate_session(4_000, 5, seed=9)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"]
    return mbo, B.reconstruct(mbo, levels=1, device="cpu")


@pytest.fixture(scope="module")
def goog():
    """The GOOG day's mbo events and LOBSTER's level-1 book after each (a book table)."""
    return goog_mbo_and_book()


# -- references ------------------------------------------------------------------------------------

def ref_quote_bars(book: pa.Table, bar: str) -> pd.DataFrame:
    b = duration_value(bar).value
    bid = book.column("bid_px_0").to_numpy()
    ask = book.column("ask_px_0").to_numpy()
    df = pd.DataFrame({"inst": book.column("instrument_id").to_numpy().astype(np.int64),
                       "t": book.column("ts_event").cast(pa.int64()).to_numpy()})
    quoted = (bid != R.UNDEF_PRICE) & (ask != R.UNDEF_PRICE) & (ask > bid)
    df["spread"] = np.where(quoted, (ask - bid) / float(R.PRICE_SCALE), np.nan)
    df["depth"] = np.where(quoted, book.column("bid_sz_0").to_numpy().astype(float)
                           + book.column("ask_sz_0").to_numpy().astype(float), np.nan)
    df["bar"] = df.t // b * b
    df = df.sort_values(["inst", "t"], kind="stable")
    g = df.groupby(["inst", "bar"], sort=True)
    q = df.dropna(subset=["spread"]).groupby(["inst", "bar"])
    out = pd.DataFrame({"event_count": g.size()})
    out["quote_count"] = q.size().reindex(out.index).fillna(0).astype(np.int64)
    out["spread"] = q.spread.mean()
    out["depth"] = q.depth.mean()
    out["spread_last"] = q.spread.last()
    out["depth_last"] = q.depth.last()
    return out.reset_index()


def ewma(values, lam):
    s = None
    for v in values:
        if np.isfinite(v):
            s = v if s is None else lam * s + (1 - lam) * v
    return np.nan if s is None else s


def har_next(values: np.ndarray, lags=(1, 5, 22)) -> float:
    """One-step HAR forecast of log values by lstsq, exp'd."""
    ld, lw, lm = lags
    s = np.log(values)
    rows = range(lm - 1, len(s) - 1)
    X = np.array([[1.0, s[t - ld + 1:t + 1].mean(), s[t - lw + 1:t + 1].mean(), s[t - lm + 1:t + 1].mean()]
                  for t in rows])
    y = s[lm:]
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    t = len(s) - 1
    return float(np.exp(b @ [1.0, s[t - ld + 1:].mean(), s[t - lw + 1:].mean(), s[t - lm + 1:].mean()]))


def series_of(t: pa.Table, inst: int, col: str) -> np.ndarray:
    d = t.to_pandas()
    d = d[d.instrument_id == inst].sort_values("bar_start", kind="stable")
    return d[col].dropna().to_numpy()


def quotes_table(per_inst: dict) -> pa.Table:
    """A quote-bar table from {instrument: (spread array, depth array)}, one bar a minute."""
    parts = []
    for inst, (sp, dp) in per_inst.items():
        k = len(sp)
        parts.append(pa.table({"instrument_id": pa.array(np.full(k, inst), pa.uint32()),
                               "bar_start": pa.array(np.arange(k, dtype=np.int64) * 60 * 10**9, TSZ),
                               "spread": pa.array(sp, pa.float64()), "depth": pa.array(dp, pa.float64())}))
    return pa.concat_tables(parts)


# -- quote bars ------------------------------------------------------------------------------------

def assert_quote_bars_match(got: pa.Table, want: pd.DataFrame) -> None:
    g = got.to_pandas()
    assert len(g) == len(want)
    np.testing.assert_array_equal(g.instrument_id.to_numpy(np.int64), want.inst)
    np.testing.assert_array_equal(got.column("bar_start").cast(pa.int64()).to_numpy(), want.bar)
    for c in ("event_count", "quote_count"):
        np.testing.assert_array_equal(g[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    for c in L.QUOTE_COLUMNS:
        np.testing.assert_allclose(g[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, err_msg=c)


@pytest.mark.parametrize("bar", ["1min", "5min"])
def test_quote_bars_on_a_generated_session_match_pandas(generated, bar):
    _, book = generated
    got = L.quote_bars(book, bar=bar)
    want = ref_quote_bars(book, bar)
    assert want.spread.notna().sum() > 50 and (want.quote_count < want.event_count).any()
    assert_quote_bars_match(got, want)


def test_quote_bars_on_the_lobster_goog_day_match_pandas(goog):
    _, book = goog
    got = L.quote_bars(book, bar="1min")
    assert_quote_bars_match(got, ref_quote_bars(book, "1min"))
    assert got.num_rows == 390                   # 09:30 - 16:00, a quote in every minute


def test_quote_bars_without_book_columns_or_with_volume_bars_raise_value_error(goog):
    _, book = goog
    with pytest.raises(ValueError, match="`book`.*ask_px_0"):
        L.quote_bars(book.drop_columns(["ask_px_0"]))
    with pytest.raises(ValueError, match="`bar`"):
        L.quote_bars(book, bar="volume:100")
    with pytest.raises(ValueError, match="`bar`"):
        L.quote_bars(book, bar="soon")


# -- forecasts -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def goog_inputs(goog):
    mbo, book = goog
    return F.compute(mbo, book=book, bar="1min", device="cpu"), L.quote_bars(book, bar="1min")


def test_liquidity_on_the_goog_day_matches_lstsq_har_loops_and_the_impact_formulas(goog_inputs):
    bars, quotes = goog_inputs
    size, lam = 500.0, 0.9
    got = L.liquidity(bars, quotes, size=size, lam=lam, device="cpu").to_pylist()
    assert len(got) == 1
    g = got[0]
    sp, dp = series_of(quotes, 1, "spread"), series_of(quotes, 1, "depth")
    assert g["spread_har_status"] == g["depth_har_status"] == H.OK
    assert g["spread_har"] == pytest.approx(har_next(sp), rel=1e-9)
    assert g["depth_har"] == pytest.approx(har_next(dp), rel=1e-9)
    assert g["spread_ewma"] == pytest.approx(ewma(sp, lam), rel=1e-12)
    assert g["depth_ewma"] == pytest.approx(ewma(dp, lam), rel=1e-12)
    am = series_of(bars, 1, "amihud")
    ky = series_of(bars, 1, "kyle_lambda")
    assert g["amihud_ewma"] == pytest.approx(ewma(am, lam), rel=1e-12)
    assert g["kyle_ewma"] == pytest.approx(ewma(ky, lam), rel=1e-12)
    price = series_of(bars, 1, "mid")[-1]
    assert g["price"] == price
    assert g["impact_kyle"] == pytest.approx(ewma(ky, lam) * size, rel=1e-12)
    assert g["impact_amihud"] == pytest.approx(ewma(am, lam) * size * price, rel=1e-12)
    assert g["n_quote_bars"] == len(sp) and g["n_bars"] == np.isfinite(am).sum()
    assert 0 < g["spread_har"] < 1 and g["depth_har"] > 0     # GOOG: cents-wide, hundreds of shares


def test_liquidity_on_a_generated_session_matches_the_loops(generated):
    mbo, book = generated
    bars = F.compute(mbo, bar="5min", device="cpu")
    quotes = L.quote_bars(book, bar="5min")
    got = L.liquidity(bars, quotes, lags=(1, 3, 6), min_obs=6, device="cpu").to_pandas()
    assert len(got) >= 4
    fitted = 0
    for _, g in got.iterrows():
        inst = int(g.instrument_id)
        sp = series_of(quotes, inst, "spread")
        assert g.spread_ewma == pytest.approx(ewma(sp, 0.94), rel=1e-12)
        assert g.kyle_ewma == pytest.approx(ewma(series_of(bars, inst, "kyle_lambda"), 0.94),
                                            rel=1e-12, nan_ok=True)
        if len(sp) >= 6 + 6:
            assert g.spread_har_status in (H.OK, H.CONSTANT, H.SINGULAR)
            if g.spread_har_status == H.OK:
                assert g.spread_har == pytest.approx(har_next(sp, (1, 3, 6)), rel=1e-9)
                fitted += 1
        else:
            assert g.spread_har_status == H.TOO_SHORT and np.isnan(g.spread_har)
    assert fitted >= 3


def test_short_and_missing_series_get_a_status_and_leave_other_instruments_unchanged():
    rng = np.random.default_rng(3)
    sp = {i: np.exp(rng.normal(-3, 0.3, 60)) for i in (1, 2, 3, 4)}
    dp = {i: np.exp(rng.normal(6, 0.5, 60)) for i in (1, 2, 3, 4)}
    good = quotes_table({1: (sp[1], dp[1]), 4: (sp[4], dp[4])})
    bad = quotes_table({2: (sp[2][:20], dp[2][:20]),                     # too short
                        3: (np.full(60, 0.02), dp[3])})                   # constant spread
    bars = pa.table({"instrument_id": pa.array([9, 9], pa.uint32()),      # no quotes for 9
                     "bar_start": pa.array([0, 60 * 10**9], TSZ), "amihud": [1e-10, np.nan],
                     "kyle_lambda": [np.nan, 2e-4], "mid": [10.0, np.nan]})
    got = L.liquidity(bars, pa.concat_tables([bad, good]), size=10, device="cpu").to_pandas()
    assert got.instrument_id.tolist() == [1, 2, 3, 4, 9]
    st = dict(zip(got.instrument_id, got.spread_har_status))
    assert st == {1: H.OK, 2: H.TOO_SHORT, 3: H.CONSTANT, 4: H.OK, 9: H.ALL_NAN}
    assert got.depth_har_status.tolist() == [H.OK, H.TOO_SHORT, H.OK, H.OK, H.ALL_NAN]
    alone = L.liquidity(None, good, size=10, device="cpu").to_pandas()
    cols = [c for c in alone.columns if c.startswith(("spread", "depth"))]
    pd.testing.assert_frame_equal(got[got.instrument_id.isin([1, 4])][cols].reset_index(drop=True),
                                  alone[cols])
    r9 = got[got.instrument_id == 9].iloc[0]
    assert r9.amihud_ewma == 1e-10 and r9.kyle_ewma == 2e-4 and r9.price == 10.0
    assert r9.impact_kyle == pytest.approx(2e-4 * 10) and r9.impact_amihud == pytest.approx(1e-10 * 10 * 10)
    assert np.isnan(r9.spread_har) and np.isnan(r9.spread_ewma) and r9.n_quote_bars == 0
    assert np.isnan(got.amihud_ewma[0])                    # instrument 1: no bars given


def test_ewma_rows_skip_nan_and_infinite_values():
    x = np.array([[np.nan, 1.0, np.inf, 3.0, np.nan], [np.nan] * 5, [-np.inf, 2.0, 2.0, 5.0, -1.0]])
    got = L.ewma_rows(x, 0.75, False)
    np.testing.assert_allclose(got, [ewma(r, 0.75) for r in x], rtol=1e-15)
    assert np.isnan(got[1])


@pytest.mark.parametrize(("kw", "name"), [
    (dict(lam=1.0), "lam"), (dict(lam=0), "lam"), (dict(lam="x"), "lam"), (dict(size=-5), "size"),
    (dict(size=np.inf), "size"), (dict(device="tpu"), "device"), (dict(lags=(1, 1, 2)), "lags"),
    (dict(min_obs=1), "min_obs"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kw, name):
    q = quotes_table({1: (np.full(3, 0.1), np.full(3, 100.0))})
    with pytest.raises(ValueError, match=f"`{name}`"):
        L.liquidity(None, q, **kw)


def test_liquidity_without_any_input_or_with_missing_columns_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="`bars` and `quotes`"):
        L.liquidity()
    q = quotes_table({1: (np.full(3, 0.1), np.full(3, 100.0))})
    with pytest.raises(ValueError, match="`quotes` lacks columns \\['depth'\\]"):
        L.liquidity(None, q.drop_columns(["depth"]))
    with pytest.raises(ValueError, match="`bars` lacks columns \\['kyle_lambda'\\]"):
        L.liquidity(pa.table({"instrument_id": [1], "bar_start": [0], "amihud": [1.0], "mid": [1.0]}))


def test_liquidity_on_the_gpu_equals_the_cpu_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, str(CHILD), "liquidity"], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    if "SKIP" in r.stdout:
        print(r.stdout.strip())
        pytest.skip(r.stdout.strip())
    assert r.stdout.count("AGREE") == 2, r.stdout + r.stderr
