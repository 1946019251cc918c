"""kernels.realized against a pandas reference written from the formulas in docs/forecasts.md.

The reference resamples each (instrument, window) of mids with pandas group-bys: the last mid
of each k-minute interval, the intervals between the first and last one with a price carried
forward, the returns of the carried grid, and each interval's high / low with the previous
interval's close. Data: a generated ITCH session (several instruments, sparse hours) and the
LOBSTER GOOG day (its own level-1 book, the true book after every message).
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normalize
from kernels import features as F
from kernels import realized as Rz
from goog_day import goog_mbo_and_book
from tickpipe.durations import duration_value

MIN = 60 * 10**9
TSZ = pa.timestamp("ns", tz="UTC")


# -- data ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated_bars():
    from ingest.simulator import generate_session
    s = generate_session(4_000, 5, seed=4)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"]
    return F.compute(mbo, bar="1s", device="cpu")


@pytest.fixture(scope="module")
def goog_bars():
    mbo, book = goog_mbo_and_book()
    return F.compute(mbo, book=book, bar="1s", device="cpu")


# -- reference -------------------------------------------------------------------------------------

def reference(bars: pa.Table, k: int, W: int) -> pd.DataFrame:
    """The realized measures per (instrument, window) by pandas, from the formulas."""
    df = pd.DataFrame({"inst": bars.column("instrument_id").to_numpy().astype(np.int64),
                       "t": bars.column("bar_start").cast(pa.int64()).to_numpy(),
                       "mid": bars.column("mid").to_numpy(zero_copy_only=False)})
    df["w"] = df.t // W
    out = []
    for (inst, w), g in df.groupby(["inst", "w"], sort=True):
        g = g.sort_values("t", kind="stable")
        g = g[np.isfinite(g.mid) & (g.mid > 0)]
        row = dict(instrument_id=inst, window_start=w * W, n_prices=len(g))
        if len(g) == 0:
            out.append(dict(row, n_returns=0, rv=np.nan, bv=np.nan, jump_share=np.nan,
                            parkinson=np.nan, garman_klass=np.nan, status=Rz.NO_PRICES))
            continue
        j = (g.t - w * W) // k
        by = g.groupby(j).mid
        grid = pd.RangeIndex(j.min(), j.max() + 1)
        close = by.last().reindex(grid).ffill()
        opn = close.shift(1)
        hi = np.fmax(by.max().reindex(grid), opn)
        lo = np.fmin(by.min().reindex(grid), opn)
        r = np.log(close / opn).to_numpy()[1:]
        hl = np.log(hi / lo).to_numpy()[1:]
        n = len(r)
        rv = float(np.sum(r**2)) if n else np.nan
        bv = math.pi / 2 * float(np.sum(np.abs(r[1:]) * np.abs(r[:-1]))) if n >= 2 else np.nan
        js = max(rv - bv, 0.0) / rv if n >= 2 and rv > 0 else np.nan
        park = float(np.sum(hl**2)) / (4 * math.log(2)) if n else np.nan
        gk = float(np.sum(0.5 * hl**2 - (2 * math.log(2) - 1) * r**2)) if n else np.nan
        out.append(dict(row, n_returns=n, rv=rv, bv=bv, jump_share=js, parkinson=park,
                        garman_klass=gk, status=Rz.OK if n >= 2 else Rz.TOO_FEW))
    return pd.DataFrame(out)


def assert_matches_reference(got: pa.Table, want: pd.DataFrame) -> None:
    g = got.to_pandas()
    assert len(g) == len(want)
    np.testing.assert_array_equal(g.instrument_id.to_numpy(np.int64), want.instrument_id)
    np.testing.assert_array_equal(got.column("window_start").cast(pa.int64()).to_numpy(),
                                  want.window_start)
    for c in ("n_returns", "n_prices", "status"):
        np.testing.assert_array_equal(g[c].to_numpy(np.int64), want[c].to_numpy(np.int64), err_msg=c)
    for c in Rz.COLUMNS:
        np.testing.assert_allclose(g[c].to_numpy(), want[c].to_numpy(), rtol=1e-11, atol=1e-22,
                                   err_msg=c)


def bars_table(inst, minutes, mids, meta_bar: str | None = "1min") -> pa.Table:
    t = pa.table({"instrument_id": pa.array(inst, pa.uint32()),
                  "bar_start": pa.array(np.asarray(minutes, np.int64) * MIN, TSZ),
                  "mid": pa.array(mids, pa.float64())})
    return t.replace_schema_metadata({"tickpipe.bar": meta_bar}) if meta_bar else t


# -- tests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("interval", "window"), [("5min", "1D"), ("1min", "1h"), ("30s", "10min")])
def test_realized_on_a_generated_session_matches_the_pandas_reference(generated_bars, interval, window):
    got = Rz.realized(generated_bars, interval=interval, window=window)
    want = reference(generated_bars, duration_value(interval).value, duration_value(window).value)
    assert (want.status == Rz.OK).sum() >= 3 and len(np.unique(want.instrument_id)) >= 4
    assert_matches_reference(got, want)


def test_realized_on_a_generated_session_has_short_windows_with_status_not_errors(generated_bars):
    got = Rz.realized(generated_bars, interval="1min", window="10min").to_pandas()
    few = got[got.status == Rz.TOO_FEW]
    assert len(few) > 0 and (few.n_returns < 2).all() and few.bv.isna().all()
    ok = got[got.status == Rz.OK]
    assert ok.rv.notna().all() and ((ok.jump_share.dropna() >= 0) & (ok.jump_share.dropna() <= 1)).all()


@pytest.mark.parametrize("interval", ["5min", "1min"])
def test_realized_on_the_lobster_goog_day_matches_the_pandas_reference(goog_bars, interval):
    got = Rz.realized(goog_bars, interval=interval)
    want = reference(goog_bars, duration_value(interval).value, duration_value("1D").value)
    assert_matches_reference(got, want)
    # 09:30 - 16:00 New York is 6.5 hours: 390 / k intervals with a price, one return fewer
    k = duration_value(interval).value // MIN
    assert got.column("n_returns").to_pylist() == [390 // k - 1]
    assert got.column("status").to_pylist() == [Rz.OK]
    row = got.to_pylist()[0]
    assert 0 < row["rv"] < 1e-3 and 0 < row["parkinson"] and 0 < row["bv"]


def test_hand_computed_window_with_a_carried_interval_and_a_jump():
    # 5-minute intervals 0, 1, (2 empty: carried), 3; fine mids inside each
    minutes = [0, 3, 5, 7, 16, 18]
    mids = [100.0, 101.0, 102.0, 99.0, 104.0, 103.0]
    got = Rz.realized(bars_table([1] * 6, minutes, mids)).to_pylist()[0]
    p = [101.0, 99.0, 99.0, 103.0]                # closes of intervals 0..3
    r = [math.log(p[1] / p[0]), 0.0, math.log(p[3] / p[2])]
    assert got["n_returns"] == 3 and got["n_prices"] == 6 and got["status"] == Rz.OK
    assert got["rv"] == pytest.approx(sum(v * v for v in r), rel=1e-14)
    assert got["bv"] == pytest.approx(math.pi / 2 * (abs(r[1] * r[0]) + abs(r[2] * r[1])), abs=1e-300)
    assert got["jump_share"] == pytest.approx(1.0)
    hl = [math.log(102.0 / 99.0), 0.0, math.log(104.0 / 99.0)]   # open 101 / 99 / 99 included
    assert got["parkinson"] == pytest.approx(sum(v * v for v in hl) / (4 * math.log(2)), rel=1e-14)
    gk = sum(0.5 * h * h - (2 * math.log(2) - 1) * x * x for h, x in zip(hl, r))
    assert got["garman_klass"] == pytest.approx(gk, rel=1e-13)


def test_windows_with_too_few_prices_get_a_status_and_leave_other_instruments_unchanged():
    good = bars_table([7] * 12, np.arange(12) * 5, 100 + np.sin(np.arange(12)))
    bad = bars_table(
        [8] * 7 + [9] * 4,
        # instrument 8: day 0 one price; day 1 two intervals (one return); day 2 no finite mid
        [0, 1, 1440, 1446, 2880, 2885, 2890] + [0, 5, 10, 15],
        [50.0, np.nan, 50.0, 51.0, np.nan, np.nan, np.nan] + [np.inf, 0.0, -3.0, 20.0])
    both = pa.concat_tables([bad.slice(0, 5), good, bad.slice(5)])
    got = Rz.realized(both).to_pandas()
    alone = Rz.realized(good).to_pandas()
    pd.testing.assert_frame_equal(got[got.instrument_id == 7].reset_index(drop=True), alone)
    r8 = got[got.instrument_id == 8].reset_index(drop=True)
    assert r8.status.tolist() == [Rz.TOO_FEW, Rz.TOO_FEW, Rz.NO_PRICES]
    assert r8.n_returns.tolist() == [0, 1, 0] and r8.n_prices.tolist() == [1, 2, 0]
    assert np.isnan(r8.rv[0]) and r8.rv[1] == pytest.approx(math.log(51 / 50) ** 2)
    assert r8.bv.isna().all() and r8.jump_share.isna().all() and np.isnan(r8.rv[2])
    r9 = got[got.instrument_id == 9].iloc[0]       # inf, 0 and negative mids are not prices
    assert r9.status == Rz.TOO_FEW and r9.n_prices == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), frac=st.floats(0.0, 0.9))
def test_nan_mids_count_as_missing_bars_and_row_order_does_not_matter(generated_bars, seed, frac):
    rng = np.random.default_rng(seed)
    n = generated_bars.num_rows
    lost = rng.random(n) < frac
    mid = generated_bars.column("mid").to_numpy().copy()
    mid[lost] = np.nan
    masked = generated_bars.set_column(generated_bars.column_names.index("mid"), "mid",
                                       pa.array(mid))
    perm = rng.permutation(n)
    got = Rz.realized(masked.take(perm), interval="1min", window="1h").to_pandas()
    dropped = Rz.realized(generated_bars.filter(pa.array(~lost)), interval="1min",
                          window="1h").to_pandas()
    key = ["instrument_id", "window_start"]
    extra = got.merge(dropped[key], on=key, how="left", indicator=True)
    assert (extra[extra._merge == "left_only"].status == Rz.NO_PRICES).all()
    kept = got.merge(dropped[key], on=key).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, dropped.reset_index(drop=True))


@pytest.mark.parametrize(("kw", "name"), [
    (dict(interval="5x"), "interval"), (dict(interval=5), "interval"),
    (dict(interval="-5min"), "interval"), (dict(window="1M"), "window"),
    (dict(interval="5min", window="7min"), "window"), (dict(interval="90s"), "interval"),
])
def test_bad_arguments_raise_value_error_naming_the_argument(kw, name):
    bars = bars_table([1, 1], [0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match=f"`{name}`"):
        Rz.realized(bars, **kw)


def test_bars_without_the_needed_columns_or_volume_bars_raise_value_error_naming_bars():
    with pytest.raises(ValueError, match="`bars`.*mid"):
        Rz.realized(pa.table({"instrument_id": [1], "bar_start": [0]}))
    with pytest.raises(ValueError, match="`bars` must be time bars"):
        Rz.realized(bars_table([1], [0], [1.0], meta_bar="volume:100"))
    with pytest.raises(ValueError, match="`bars`"):
        Rz.realized({"mid": [1.0]})


def test_no_bars_give_an_empty_table_with_the_columns():
    got = Rz.realized(bars_table([], [], []))
    assert got.num_rows == 0
    assert got.column_names == ["instrument_id", "window_start", "n_returns", "n_prices",
                                *Rz.COLUMNS, "status"]
