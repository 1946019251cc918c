"""kernels.features against independent pandas / NumPy computations of every feature.

The references below are written from the formulas in docs/features.md with pandas group-bys
and small explicit loops (no numba), on a generated ITCH session (5 instruments, crossed and
one-sided books included) and on the committed LOBSTER AAPL sample.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import normalize
from kernels import features as F
from kernels.book import book_schema, reconstruct
from normalize import records as R
from tickpipe.durations import duration_value

DATA = Path(__file__).resolve().parents[1] / "data" / "lobster"
SCALE = float(R.PRICE_SCALE)


# -- data ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session():
    from ingest.simulator import generate_session
    s = generate_session(20_000, 5, seed=7)
    return normalize.read_itch(s.to_binaryfile(), date=s.date)


@pytest.fixture(scope="module")
def generated(session):
    mbo = session["mbo"]
    return mbo, reconstruct(mbo, levels=5)


@pytest.fixture(scope="module")
def lobster():
    stem = "AAPL_2012-06-21_34200000_57600000"
    msg = DATA / f"{stem}_message_10.head999.csv"
    ob = DATA / f"{stem}_orderbook_10.head999.csv"
    if not msg.exists():
        pytest.skip("LOBSTER AAPL sample not committed")
    mbo = normalize.read_lobster(msg, orderbook_csv=ob, date="2012-06-21", symbol="AAPL")
    return mbo, reconstruct(mbo, levels=5)


def _col(t, name):
    c = t.column(name)
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    return c.to_numpy(zero_copy_only=False)


# -- references ---------------------------------------------------------------------------------

def ref_per_event(book: pa.Table) -> pd.DataFrame:
    df = pd.DataFrame({"inst": _col(book, "instrument_id").astype(np.int64)})
    px = {}
    for s in ("bid", "ask"):
        for k in range(5):
            p = _col(book, f"{s}_px_{k}")
            q = _col(book, f"{s}_sz_{k}").astype(float)
            px[s, k] = (np.where(p == R.UNDEF_PRICE, np.nan, p / SCALE), np.where(p == R.UNDEF_PRICE, 0.0, q))
    bp, bq = px["bid", 0]
    ap, aq = px["ask", 0]
    both = ~np.isnan(bp) & ~np.isnan(ap)
    out = pd.DataFrame(index=df.index)
    out["spread"] = ap - bp
    out["mid"] = (ap + bp) / 2
    out["microprice"] = np.where(both, (bp * aq + ap * bq) / np.where(both, bq + aq, 1), np.nan)
    out["imbalance_l1"] = np.where(both, (bq - aq) / np.where(both, bq + aq, 1), np.nan)
    b5 = sum(px["bid", k][1] for k in range(5))
    a5 = sum(px["ask", k][1] for k in range(5))
    out["imbalance_l5"] = np.where(both, (b5 - a5) / np.where(both, b5 + a5, 1), np.nan)
    # OFI (Cont, Kukanov & Stoikov 2014), empty sides at -inf / +inf with size 0, empty book before
    g = pd.DataFrame({"inst": df.inst, "pb": np.where(np.isnan(bp), -np.inf, bp), "qb": bq,
                      "pa": np.where(np.isnan(ap), np.inf, ap), "qa": aq})
    prev = g.groupby("inst")[["pb", "qb", "pa", "qa"]].shift(1)
    prev = prev.fillna({"pb": -np.inf, "qb": 0.0, "pa": np.inf, "qa": 0.0})
    out["ofi"] = ((g.pb >= prev.pb) * g.qb - (g.pb <= prev.pb) * prev.qb
                  - (g.pa <= prev.pa) * g.qa + (g.pa >= prev.pa) * prev.qa)
    return out


def ref_bars(mbo: pa.Table, book: pa.Table, bar: str, horizon_ns=5 * 10**9, bucket_volume=None):
    pe = ref_per_event(book)
    a = _col(mbo, "action")
    fl = _col(mbo, "flags")
    p = _col(mbo, "price")
    q = _col(mbo, "size")
    trade = ((a == R.ACTION_EXECUTE) | (a == R.ACTION_TRADE)) & (fl & R.F_PRINTABLE > 0) \
        & (p != R.UNDEF_PRICE) & (q > 0)
    side = _col(mbo, "side")
    df = pd.DataFrame({"inst": _col(mbo, "instrument_id").astype(np.int64), "ts": _col(mbo, "ts_event"),
                       "mid": pe.mid.to_numpy(), "trade": trade,
                       "price": np.where(trade, p / SCALE, np.nan), "size": np.where(trade, q, 0).astype(float),
                       "sign": np.select([side == R.SIDE_ASK, side == R.SIDE_BID], [1.0, -1.0], 0.0)})
    df["mid_before"] = df.groupby("inst").mid.shift(1)
    if bar.startswith("volume:"):
        n = int(bar.split(":")[1])
        df["key"] = 0
        for inst, g in df.groupby("inst"):       # a new bar once the current one holds >= n shares
            key, acc, out = 0, 0.0, []
            for q in g["size"].to_numpy():
                if acc >= n:
                    key, acc = key + 1, 0.0
                out.append(key)
                acc += q
            df.loc[g.index, "key"] = out
    else:
        f = duration_value(bar).value
        df["key"] = df.ts // f * f
    keys = ["inst", "key"]
    grp = df.groupby(keys, sort=True)
    df["r"] = np.log(df.mid / grp.mid.shift(1))
    df["r_prev"] = df.groupby(keys).r.shift(1)
    df["r2"] = df.r ** 2
    df["bvp"] = (df.r.abs() * df.r_prev.abs())
    df["pv"] = df.price.fillna(0) * df["size"]
    df["buy"] = np.where(df.sign > 0, df["size"], 0)
    df["sell"] = np.where(df.sign < 0, df["size"], 0)
    df["es"] = np.where(df.trade, 2 * (df.price - df.mid_before).abs() / df.mid_before, np.nan)
    # realized spread: the mid in force at t + horizon, NaN past the instrument's last event
    df["rs"] = np.nan
    for inst, g in df.groupby("inst"):
        ts = g.ts.to_numpy()
        at = np.searchsorted(ts, ts + horizon_ns, side="right") - 1
        later = g.mid.to_numpy()[at]
        ok = (ts + horizon_ns <= ts[-1]) & g.trade.to_numpy() & (g.sign.to_numpy() != 0)
        rs = 2 * g.sign * (g.price - later) / g.mid_before
        df.loc[g.index, "rs"] = np.where(ok, rs, np.nan)
    # VPIN: bucket k holds the volume interval [kV, (k+1)V); it ends at the trade reaching (k+1)V
    df["vpin_sum"] = 0.0
    df["vpin_n"] = 0
    for inst, g in df[df.trade].groupby("inst"):
        V = bucket_volume if bucket_volume is not None else g["size"].sum() / 50
        c1 = g["size"].cumsum().to_numpy()
        c0 = c1 - g["size"].to_numpy()
        sign = g.sign.to_numpy()
        k = 0
        idx = g.index.to_numpy()
        while (k + 1) * V <= c1[-1]:
            lo, hi = k * V, (k + 1) * V
            over = np.clip(np.minimum(c1, hi) - np.maximum(c0, lo), 0, None)
            imb = abs(over[sign > 0].sum() - over[sign < 0].sum()) / V
            end = idx[np.argmax(c1 >= hi)]
            df.loc[end, "vpin_sum"] += imb
            df.loc[end, "vpin_n"] += 1
            k += 1
    grp = df.groupby(keys, sort=True)
    out = pd.DataFrame({
        "bar_start": grp.ts.first() if bar.startswith("volume:") else grp.key.first(),
        "event_count": grp.size(),
        "trade_count": grp.trade.sum(),
        "volume": grp["size"].sum(),
    })
    vol = out.volume.where(out.volume > 0)
    out["vwap"] = grp.pv.sum() / vol
    out["signed_trade_imbalance"] = (grp.buy.sum() - grp.sell.sum()) / vol
    out["mid"] = grp.mid.apply(lambda s: s.iloc[-1])
    out["realized_variance"] = grp.r2.sum(min_count=1)
    out["bipower_variation"] = np.pi / 2 * grp.bvp.sum(min_count=1)

    def kyle(g):
        t = g[g.trade & (g.sign != 0)]
        x = (t.sign * t["size"]).to_numpy()
        y = (t.mid - t.mid_before).to_numpy()
        ok = ~np.isnan(y)
        x, y = x[ok], y[ok]
        if len(x) < 2 or np.var(x) == 0:
            return np.nan
        return np.polyfit(x, y, 1)[0]

    out["kyle_lambda"] = grp[["trade", "sign", "size", "mid", "mid_before"]].apply(kyle)
    ret = np.log(grp.mid.last() / grp.mid.first())      # first / last non-NaN mids
    dv = grp.pv.sum()
    out["amihud"] = ret.abs() / dv.where(dv > 0)
    out["vpin"] = grp.vpin_sum.sum() / grp.vpin_n.sum().where(grp.vpin_n.sum() > 0)
    out["effective_spread"] = grp.es.mean()
    out["realized_spread"] = grp.rs.mean()
    return out.reset_index()


def _assert_bars_equal(got: pa.Table, ref: pd.DataFrame):
    assert got.num_rows == len(ref)
    np.testing.assert_array_equal(_col(got, "instrument_id"), ref.inst)
    np.testing.assert_array_equal(_col(got, "bar_start"), ref.bar_start)
    for c in ("event_count", "trade_count", "volume"):
        np.testing.assert_array_equal(_col(got, c), ref[c], err_msg=c)
    for c in ("vwap", "signed_trade_imbalance", "mid", "realized_variance", "bipower_variation",
              "kyle_lambda", "amihud", "vpin", "effective_spread", "realized_spread"):
        g = _col(got, c)
        r = ref[c].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=f"{c}: NaN pattern")
        np.testing.assert_allclose(g, r, rtol=1e-7, atol=1e-15, equal_nan=True, err_msg=c)


# -- per-event ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", ["generated", "lobster"])
def test_per_event_features_match_pandas_reference(data, request):
    mbo, book = request.getfixturevalue(data)
    got = F.per_event(book)
    ref = ref_per_event(book)
    assert got.num_rows == book.num_rows
    np.testing.assert_array_equal(_col(got, "ts_event"), _col(book, "ts_event"))
    for c in F.PER_EVENT_COLUMNS:
        np.testing.assert_allclose(_col(got, c), ref[c].to_numpy(), rtol=1e-12, atol=1e-12,
                                   equal_nan=True, err_msg=c)
    assert np.isfinite(_col(got, "mid")).mean() > 0.5


def _book(rows):
    """A 5-level book table from [(inst, bid (px, sz) list, ask (px, sz) list), ...]."""
    schema = book_schema(5)
    cols = {f.name: [] for f in schema}
    for i, (inst, bids, asks) in enumerate(rows):
        cols["instrument_id"].append(inst)
        cols["ts_event"].append(i)
        cols["sequence"].append(i + 1)
        for name, lv in (("bid", bids), ("ask", asks)):
            for k in range(5):
                px, sz = lv[k] if k < len(lv) else (R.UNDEF_PRICE, 0)
                cols[f"{name}_px_{k}"].append(px if px == R.UNDEF_PRICE else int(px * R.PRICE_SCALE))
                cols[f"{name}_sz_{k}"].append(sz)
                cols[f"{name}_ct_{k}"].append(1 if sz else 0)
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema}, schema=schema)


def test_per_event_when_a_side_is_empty_gives_nan_and_ofi_counts_the_side_leaving():
    book = _book([
        (1, [], []),                              # empty book
        (1, [(10.0, 100)], []),                   # bid only
        (1, [(10.0, 100)], [(10.5, 300)]),         # two-sided
        (1, [(10.0, 40), (9.9, 60)], [(10.5, 300), (10.6, 100)]),
        (1, [], [(10.5, 300)]),                   # bid side leaves
        (2, [(5.0, 10)], [(4.0, 10)]),             # crossed, another instrument
    ])
    got = F.per_event(book).to_pandas()
    assert got.spread.isna().tolist() == [True, True, False, False, True, False]
    assert got.microprice.isna().tolist() == [True, True, False, False, True, False]
    assert got.imbalance_l1.isna().tolist() == [True, True, False, False, True, False]
    assert got.spread[2] == pytest.approx(0.5)
    assert got.mid[2] == pytest.approx(10.25)
    assert got.microprice[2] == pytest.approx((10.0 * 300 + 10.5 * 100) / 400)
    assert got.imbalance_l1[2] == pytest.approx(-0.5)
    assert got.imbalance_l5[3] == pytest.approx((100 - 400) / 500)
    assert got.spread[5] == pytest.approx(-1.0)          # crossed: negative, not an error
    # e_n = [bid >=] qb - [bid <=] qb' - [ask <=] qa + [ask >=] qa'
    assert got.ofi.tolist() == [0.0, 100.0, -300.0, -60.0, -40.0, 0.0]


# -- bars ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("bar", ["1s", "1min", "volume:500"])
def test_bars_on_generated_session_match_pandas_reference(generated, bar):
    mbo, book = generated
    got = F.compute(mbo, book=book, bar=bar)
    _assert_bars_equal(got, ref_bars(mbo, book, bar))
    assert got.schema.field("bar_start").type == pa.timestamp("ns", tz="UTC")
    assert np.nansum(_col(got, "volume")) > 0


@pytest.mark.parametrize("bar", ["1s", "1min", "volume:300"])
def test_bars_on_lobster_aapl_match_pandas_reference(lobster, bar):
    mbo, book = lobster
    got = F.compute(mbo, book=book, bar=bar)
    _assert_bars_equal(got, ref_bars(mbo, book, bar))


def test_compute_builds_the_book_when_none_is_given_and_honours_parameters(generated):
    mbo, book = generated
    a = F.compute(mbo, bar="5min", realized_horizon="2s", bucket_volume=700)
    _assert_bars_equal(a, ref_bars(mbo, book, "5min", horizon_ns=2 * 10**9, bucket_volume=700))
    b = F.compute(mbo, book=book, bar="5min", realized_horizon=2.0, bucket_volume=700, device="cpu")
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())


def test_trades_table_gives_the_same_bars_as_mbo_and_adds_crosses(session, generated):
    mbo, book = generated
    trades = session["trades"]
    no_cross = trades.filter(pa.compute.not_equal(trades["kind"], ord("Q")))
    want = F.compute(mbo, book=book, bar="1min").to_pandas()
    pd.testing.assert_frame_equal(F.compute(mbo, book=book, bar="1min", trades=no_cross).to_pandas(), want)
    got = F.compute(mbo, book=book, bar="1min", trades=trades).to_pandas()
    t = trades.to_pandas()
    crosses = t[(t.kind == ord("Q")) & (t.printable == 1)]["size"].sum()
    assert got.volume.sum() == want.volume.sum() + crosses
    with pytest.raises(ValueError, match="`trades`"):
        F.compute(mbo, book=book, trades=trades.drop_columns(["kind"]))


def test_volume_bars_hold_at_least_n_shares_except_the_last(generated):
    mbo, book = generated
    t = F.compute(mbo, book=book, bar="volume:1000").to_pandas()
    for _, g in t.groupby("instrument_id"):
        assert (g.volume.to_numpy()[:-1] >= 1000).all()


def test_trade_on_an_empty_book_gives_nan_spreads():
    mbo = pa.table({
        "ts_event": pa.array([0, 10**9, 2 * 10**9], pa.timestamp("ns", tz="UTC")),
        "sequence": pa.array([1, 2, 3], pa.uint64()),
        "order_id": pa.array([0, 0, 0], pa.uint64()),
        "new_order_id": pa.array([0, 0, 0], pa.uint64()),
        "price": pa.array([10 * R.PRICE_SCALE] * 3, pa.int64()),
        "size": pa.array([100, 100, 100], pa.uint64()),
        "instrument_id": pa.array([1, 1, 1], pa.uint32()),
        "action": pa.array([R.ACTION_TRADE] * 3, pa.uint8()),
        "side": pa.array([R.SIDE_ASK, R.SIDE_BID, R.SIDE_ASK], pa.uint8()),
        "flags": pa.array([R.F_PRINTABLE] * 3, pa.uint8()),
    })
    t = F.compute(mbo, bar="1min", device="cpu").to_pandas()
    assert t.trade_count.tolist() == [3] and t.volume.tolist() == [300]
    assert t.vwap[0] == pytest.approx(10.0)
    assert t.signed_trade_imbalance[0] == pytest.approx(1 / 3)
    for c in ("mid", "realized_variance", "bipower_variation", "kyle_lambda", "amihud",
              "effective_spread", "realized_spread"):
        assert np.isnan(t[c][0]), c
    # V = 300 / 50 = 6 shares: 16 all-buy buckets, one of 4 buy + 2 sell, 16 all-sell, one of
    # 2 sell + 4 buy, 16 all-buy
    assert t.vpin[0] == pytest.approx((48 + 2 / 3) / 50)


# -- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bar", ["abc", "0s", "-1s", "volume:0", "volume:x", 5, None])
def test_bad_bar_raises_value_error_naming_bar(generated, bar):
    mbo, book = generated
    with pytest.raises(ValueError, match="`bar`"):
        F.compute(mbo, book=book, bar=bar)


def test_unknown_device_raises_value_error_naming_device(generated):
    mbo, book = generated
    with pytest.raises(ValueError, match="`device`"):
        F.compute(mbo, book=book, device="tpu")
    with pytest.raises(ValueError, match="`device`"):
        F.compute(mbo, book=book, device="GPU")


def test_bad_parameters_raise_value_error_naming_them(generated):
    mbo, book = generated
    with pytest.raises(ValueError, match="`realized_horizon`"):
        F.compute(mbo, book=book, realized_horizon="soon")
    with pytest.raises(ValueError, match="`bucket_volume`"):
        F.compute(mbo, book=book, bucket_volume=0)
    with pytest.raises(ValueError, match="`book`"):
        F.compute(mbo, book=book.slice(1))
