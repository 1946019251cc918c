"""SQL through DuckDB, as-of joins and Dask over the tick store, each against a plain pandas
computation of the same thing."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import normalize
from ingest.simulator import generate_session
from normalize.records import PRICE_SCALE
from tickpipe.durations import duration_value
from tickstore import StoreError, TickStore, asof_join

DATES = ("2024-03-14", "2024-03-15")


@pytest.fixture(scope="module")
def sessions():
    """Two simulated days, decoded: {date: {schema: table}}."""
    return {d: normalize.read_itch(generate_session(30_000, 12, seed=k + 1, date=d)
                                   .to_binaryfile(), date=d) for k, d in enumerate(DATES)}


@pytest.fixture(scope="module")
def store(sessions, tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    with TickStore(root) as s:
        for d in DATES:
            for schema, t in sessions[d].items():
                if t.num_rows:
                    s.append(schema, t)
        s.append("trades", sessions[DATES[1]]["trades"].slice(0, 10))   # a second file
    return TickStore(root, writer=False)


def test_sql_vwap_per_instrument_minute_equals_pandas(store, sessions):
    got = store.sql("""
        SELECT instrument_id, time_bucket(INTERVAL 1 minute, ts_event) AS minute,
               sum(price::DOUBLE * size) / sum(size) / 1e9 AS vwap, sum(size) AS volume,
               count(*) AS n
        FROM trades WHERE printable = 1
        GROUP BY ALL ORDER BY instrument_id, minute""").to_pandas()
    tr = pd.concat([sessions[d]["trades"].to_pandas() for d in DATES]
                   + [sessions[DATES[1]]["trades"].slice(0, 10).to_pandas()])
    tr = tr[tr.printable == 1]
    tr["minute"] = tr.ts_event.dt.floor("1min")
    tr["pv"] = tr.price.astype(float) * tr["size"]
    want = tr.groupby(["instrument_id", "minute"]).agg(pv=("pv", "sum"), volume=("size", "sum"),
                                                      n=("size", "size")).reset_index()
    want["vwap"] = want.pv / want.volume / PRICE_SCALE
    assert len(got) == len(want) > 100
    assert (got.instrument_id.to_numpy() == want.instrument_id.to_numpy()).all()
    assert (got.minute.to_numpy() == want.minute.to_numpy()).all()
    assert (got.volume.to_numpy() == want.volume.to_numpy()).all()
    assert (got.n.to_numpy() == want.n.to_numpy()).all()
    np.testing.assert_allclose(got.vwap.to_numpy(), want.vwap.to_numpy(), rtol=1e-12)


def test_sql_keeps_nanoseconds_and_knows_symbols(store, sessions):
    got = store.sql("SELECT epoch_ns(ts_event) AS ns, ts_event, sequence FROM mbo "
                    "ORDER BY ts_event, sequence")
    want = pa.concat_tables([sessions[d]["mbo"] for d in DATES]).sort_by(
        [("ts_event", "ascending"), ("sequence", "ascending")])
    ns = want.column("ts_event").cast(pa.int64())
    assert got.column("ns").to_pylist() == ns.to_pylist()
    assert got.column("ts_event").cast(pa.int64()).equals(ns)
    assert np.any(ns.to_numpy() % 1000 != 0)              # sub-microsecond times are there
    defs = sessions[DATES[0]]["definitions"]
    sym = defs.column("symbol")[0].as_py().decode().strip()
    inst = defs.column("instrument_id")[0].as_py()
    n = store.sql("""SELECT count(*) AS n FROM mbo m JOIN symbols s
                     ON s.instrument_id = m.instrument_id AND s.date = CAST(m.ts_event AS DATE)
                     WHERE s.symbol = $sym AND s.date = DATE '2024-03-14'""",
                  params={"sym": sym}).column("n")[0].as_py()
    want_n = pc.sum(pc.equal(sessions[DATES[0]]["mbo"].column("instrument_id"), inst)).as_py()
    assert n == want_n > 0
    assert store.sql("SELECT symbol FROM definitions LIMIT 1").column(0)[0].as_py() == sym
    with pytest.raises(StoreError, match="SQL query failed.*quotes"):
        store.sql("SELECT * FROM quotes")


def test_reads_by_symbol_and_frames(store, sessions):
    defs = sessions[DATES[1]]["definitions"]
    sym = defs.column("symbol")[3].as_py().decode().strip()
    inst = defs.column("instrument_id")[3].as_py()
    got = store.read("trades", symbols=[sym], start="2024-03-15T00:00", end="2024-03-16")
    want = store.read("trades", instruments=[inst], start="2024-03-15", end="2024-03-16")
    assert got.num_rows > 0 and got.equals(want)
    df = store.to_pandas("trades", symbols=sym, columns=["ts_event", "price"])
    by_day = [pc.sum(pc.equal(sessions[d]["trades"].column("instrument_id"),
                              store.symbol_map()[d][sym])).as_py() for d in DATES]
    again = pc.sum(pc.equal(sessions[DATES[1]]["trades"].slice(0, 10).column("instrument_id"),
                            store.symbol_map()[DATES[1]][sym])).as_py()   # appended twice
    assert len(df) == sum(by_day) + again and sum(by_day) > 0
    assert list(df.columns) == ["ts_event", "price"]
    assert str(df.ts_event.dtype) == "datetime64[ns, UTC]"
    pl = store.to_polars("trades", symbols=sym)
    assert pl.height == store.read("trades", symbols=sym).num_rows
    cudf_missing = True
    try:
        import cudf  # noqa: F401
        cudf_missing = False
    except ImportError:
        pass
    if cudf_missing:
        with pytest.raises(StoreError, match="needs cuDF"):
            store.to_cudf("trades")


def quotes_and_trades(seed, n_q, n_t, n_inst, span):
    rng = np.random.default_rng(seed)
    q = pa.table({"instrument_id": pa.array(rng.integers(1, n_inst + 1, n_q), pa.uint32()),
                  "ts_event": pa.array(rng.integers(0, span, n_q), pa.timestamp("ns", tz="UTC")),
                  "bid_px": rng.integers(1, 100, n_q), "ask_px": rng.integers(100, 200, n_q)})
    t = pa.table({"instrument_id": pa.array(rng.integers(1, n_inst + 2, n_t), pa.uint32()),
                  "ts_event": pa.array(rng.integers(0, span, n_t), pa.timestamp("ns", tz="UTC")),
                  "price": rng.integers(1, 200, n_t), "trade_no": np.arange(n_t)})
    return t, q


def pandas_asof(t, q, tolerance):
    tp, qp = t.to_pandas(), q.to_pandas()
    qp = qp.reset_index().rename(columns={"index": "_q"})
    tp = tp.reset_index().rename(columns={"index": "_t"})
    m = pd.merge_asof(tp.sort_values(["ts_event", "_t"]), qp.sort_values(["ts_event", "_q"]),
                      on="ts_event", by="instrument_id", tolerance=tolerance,
                      suffixes=("", "_q"))
    return m.sort_values("_t")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_q=st.integers(0, 60), n_t=st.integers(0, 60),
       n_inst=st.integers(1, 4), span=st.integers(1, 50),
       tol=st.one_of(st.none(), st.integers(0, 20)))
def test_asof_join_gives_pandas_merge_asof(seed, n_q, n_t, n_inst, span, tol):
    """Ties in time (quotes at a trade's time count; of several, the last given), instruments
    without quotes, the tolerance's edge, unsorted inputs."""
    t, q = quotes_and_trades(seed, n_q, n_t, n_inst, span)
    got = asof_join(t, q, tolerance=tol)
    assert got.column_names == t.column_names + ["quote_ts_event", "quote_bid_px", "quote_ask_px"]
    assert got.select(t.column_names).equals(t)
    want = pandas_asof(t, q, None if tol is None else pd.Timedelta(tol, "ns"))
    for c in ("bid_px", "ask_px"):
        g = got.column(f"quote_{c}").to_pandas()
        w = want[c].reset_index(drop=True)
        assert g.isna().tolist() == w.isna().tolist()
        assert (g[g.notna()].to_numpy() == w[w.notna()].to_numpy()).all()


def test_asof_join_on_stored_trades_and_book_quotes(store, sessions):
    """The stored trades of a day joined with the top of book from its mbo."""
    trades = store.read("trades", start="2024-03-15", end="2024-03-16")
    mbo = store.read("mbo", start="2024-03-15", end="2024-03-16", columns=[
        "instrument_id", "ts_event", "price", "size", "side", "action"])
    quotes = mbo.filter(pc.equal(mbo.column("action"), ord("A"))).select(
        ["instrument_id", "ts_event", "price", "side"])
    got = store.asof_join(trades, quotes, tolerance="1s", quote_columns=["ts_event", "price"])
    want = pandas_asof(trades.select(["instrument_id", "ts_event"]), quotes.select(
        ["instrument_id", "ts_event", "price"]), duration_value("1s"))
    assert got.num_rows == trades.num_rows > 0
    g = got.column("quote_price").to_pandas()
    w = want.price_q.reset_index(drop=True) if "price_q" in want else want.price.reset_index(drop=True)
    assert g.isna().tolist() == w.isna().tolist() and g.notna().sum() > 0
    assert (g[g.notna()].to_numpy() == w[w.notna()].to_numpy()).all()
    age = pc.subtract(got.column("ts_event").cast(pa.int64()),
                      got.column("quote_ts_event").cast(pa.int64())).to_numpy(zero_copy_only=False)
    ok = ~np.isnan(age.astype(float))
    assert np.all((age[ok] >= 0) & (age[ok] <= 1_000_000_000))
    with pytest.raises(StoreError, match="`tolerance`"):
        asof_join(trades, quotes, tolerance="soon")
    with pytest.raises(StoreError, match="no column 'bid'"):
        asof_join(trades, quotes, by="bid")


def test_dask_partitions_are_days_and_the_feature_job_runs_on_a_local_cluster(store, sessions):
    from dask.distributed import Client, LocalCluster

    from kernels.features import compute
    from tickstore.scale import features
    d = store.to_dask("trades", columns=["instrument_id", "ts_event", "price", "size"])
    assert d.npartitions == 2
    assert d.compute().reset_index(drop=True).equals(
        store.read("trades", columns=["instrument_id", "ts_event", "price", "size"]).to_pandas())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        got = features(store.root, bar="5min").compute()
    want = pd.concat([compute(sessions[d]["mbo"], bar="5min", device="cpu").to_pandas()
                      for d in DATES], ignore_index=True)
    got = got.reset_index(drop=True)
    assert len(got) == len(want) > 50
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
