"""The tick store against ArcticDB (local LMDB) on the same ``mbo`` rows, same run (issue 6).

The rows come from the simulator (``generate_session``, one day, 2024-03-15) decoded by
``normalize.read_itch``: the first ``--rows`` ``mbo`` rows, cached under ``bench/out/`` as an
Arrow IPC file keyed by rows, instruments and seed. Both engines get exactly those rows. (The
simulator's order flow fills about 13:30-15:42 UTC, whatever the size, then the closing crosses
at 20:00: the hour and the minute below lie inside the flow.)

Layouts. tickpipe: ``TickStore(root, slot=--slot).append("mbo", table)``, a file per slot sorted by
(instrument_id, ts_event), zstd. ArcticDB, layout (a): one symbol holding the day in time order
(a pandas DataFrame indexed by ``ts_event``, the DatetimeIndex ArcticDB needs; ``mpid``'s four
bytes as a ``uint32``, since ArcticDB stores no fixed-size binary; default library options:
100,000 rows per segment, LZ4). Layout (b): one symbol per instrument (``write_batch``), for the
range queries too, so that each layout of ArcticDB is compared on both.

What is timed (in-process; each the median of several runs after two warm-ups, page cache
warm):

- write: ``append`` into a fresh store (sort, encode, zstd, fsync, catalog line) against
  ``lib.write`` into a fresh LMDB library, from the DataFrame ArcticDB needs (the Arrow->pandas
  conversion is timed on its own and shown as a second ArcticDB figure that includes it; a
  third writes the Arrow table itself, an input this ArcticDB has behind a private switch);
  layout (b)'s ``write_batch`` is shown too, its frames split by instrument outside the timing;
- bytes on disk: blocks allocated (``st_blocks * 512``; LMDB's map file is sparse, so its
  apparent size says little) under the store's root (Parquet files, catalog, lock) and under the
  LMDB directory after the write;
- full read to Arrow: ``store.read("mbo")`` against ``lib.read(..., output_format="pyarrow")``
  (and, for reference, ``lib.read`` to pandas then ``pa.Table.from_pandas``);
- one (the busiest) instrument over 14:00-15:00 UTC (10:00-11:00 New York): ``store.read`` with
  ``instruments`` and a time range against ``lib.read`` with a ``date_range`` and a
  ``QueryBuilder`` filter on ``instrument_id`` (a), and against a ``date_range`` read of that
  instrument's own symbol (b);
- all instruments over 14:30-14:31 UTC: ``store.read`` with a time range against a
  ``date_range`` read (ArcticDB's range is closed, so its end is the store's end minus 1 ns),
  and against one ``read_batch`` of every instrument's symbol with that range (b);
- VWAP per instrument-minute, over the store's own files: DuckDB SQL, through ``store.sql``
  (when the store has a working one: a view per schema, a new connection each call) and through
  one held connection's ``read_parquet`` of the files, against ``polars.scan_parquet`` of the
  same files. The rows: ``mbo`` executions that print, as in ``bench/features.py``: action E (ITCH E
  and C) or P, flag ``F_PRINTABLE``, a defined price. Both results are checked equal (same
  groups, same volumes, VWAPs within 1e-9 relative).

Every query's rows are compared between the engines (counts; the full read column by column)
before its time is reported.

    .venv/bin/python bench/store.py [--rows 10000000] [--instruments 1000] [--seed 1]
                                    [--repeats 5] [--write-repeats 3] [--no-per-symbol]
                                    [--dir bench/out/store] [--keep] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT_DIR, SESSION_DATE, _version, machine_info, measure  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from normalize import records as R  # noqa: E402

HOUR = ("2024-03-15T14:00:00", "2024-03-15T15:00:00")      # 10:00-11:00 America/New_York
MINUTE = ("2024-03-15T14:30:00", "2024-03-15T14:31:00")
MINUTE_NS = 60 * 10**9
VWAP_WHERE = (f"action IN ({R.ACTION_EXECUTE}, {R.ACTION_TRADE}) AND (flags & {R.F_PRINTABLE}) <> 0 "
              f"AND price <> {R.UNDEF_PRICE}")


# ---------------------------------------------------------------------------------------------
# input

def mbo_path(rows: int, instruments: int, seed: int, out_dir: Path = OUT_DIR) -> Path:
    return out_dir / f"mbo_r{rows}_i{instruments}_s{seed}.arrow"


def mbo_rows(rows: int, instruments: int, seed: int = 1,
             out_dir: Path = OUT_DIR) -> tuple[pa.Table, Path, bool]:
    """The first ``rows`` ``mbo`` rows of a generated session (one chunk), from the cache when
    present. Returns ``(table, path, generated)``; the cache is written atomically."""
    path = mbo_path(rows, instruments, seed, out_dir)
    if path.exists():
        with pa.memory_map(str(path)) as src:
            return pa.ipc.open_file(src).read_all().combine_chunks(), path, False
    import normalize
    from ingest.simulator import generate_session
    messages = rows + rows // 100 + 1000        # a few messages give no mbo row
    data = generate_session(messages, instruments, seed=seed, date=SESSION_DATE).to_binaryfile()
    mbo = normalize.read_itch(data, date=SESSION_DATE)["mbo"]
    del data
    mbo = mbo.slice(0, min(rows, mbo.num_rows)).combine_chunks()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(
            sink, mbo.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(mbo)
    os.replace(tmp, path)
    return mbo, path, True


def arctic_frame(mbo: pa.Table):
    """The DataFrame ArcticDB stores: every ``mbo`` column, indexed by ``ts_event`` (time order,
    as decoded), ``mpid`` as its four bytes in a ``uint32``."""
    mpid = mbo.column("mpid").combine_chunks()
    raw = np.frombuffer(mpid.buffers()[1], np.uint32, count=len(mpid) + mpid.offset)[mpid.offset:]
    df = mbo.drop_columns(["mpid"]).to_pandas()
    df["mpid"] = raw
    return df.set_index("ts_event")


def _utc(iso: str, minus_ns: int = 0):
    import pandas as pd
    return pd.Timestamp(iso, tz="UTC") - pd.Timedelta(minus_ns, "ns")


def _ns(iso: str) -> int:
    return int(np.datetime64(iso, "ns").astype(np.int64))


def allocated_bytes(root: Path) -> tuple[int, int, int]:
    """(blocks allocated, apparent size, files) of everything under ``root``."""
    blocks = size = n = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            blocks += st.st_blocks * 512
            size += st.st_size
            n += 1
    return blocks, size, n


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def column_bytes(paths) -> list[dict]:
    """Per column of the store's Parquet files: compressed and uncompressed bytes, encodings."""
    acc: dict[str, dict] = {}
    rows = 0
    for p in paths:
        md = pq.ParquetFile(p).metadata
        rows += md.num_rows
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                a = acc.setdefault(col.path_in_schema, {"column": col.path_in_schema,
                                                        "compressed": 0, "uncompressed": 0,
                                                        "encodings": set(), "codec": col.compression})
                a["compressed"] += col.total_compressed_size
                a["uncompressed"] += col.total_uncompressed_size
                a["encodings"].update(col.encodings)
    out = []
    for a in acc.values():
        out.append(dict(a, encodings=sorted(a["encodings"]),
                        compressed_per_row=a["compressed"] / max(rows, 1),
                        uncompressed_per_row=a["uncompressed"] / max(rows, 1)))
    return sorted(out, key=lambda a: -a["compressed"])


# ---------------------------------------------------------------------------------------------
# the two engines

def _arctic(path: Path, rows: int):
    import arcticdb as adb
    gb = max(2, -(-rows * 300 // 10**9))        # LMDB's map must hold the data; it is sparse
    return adb.Arctic(f"lmdb://{path}?map_size={gb}GB")


def _vwap_polars(files):
    import polars as pl
    E, P = R.ACTION_EXECUTE, R.ACTION_TRADE
    return (pl.scan_parquet(files)
            .filter(pl.col("action").is_in([E, P]) & ((pl.col("flags") & R.F_PRINTABLE) != 0)
                    & (pl.col("price") != R.UNDEF_PRICE))
            .group_by("instrument_id", (pl.col("ts_event").dt.epoch("ns") // MINUTE_NS).alias("minute"))
            .agg(n=pl.len(), volume=pl.col("size").sum(),
                 vwap=(pl.col("price").cast(pl.Float64) * pl.col("size").cast(pl.Float64)).sum()
                 / pl.col("size").sum().cast(pl.Float64) / R.PRICE_SCALE)
            .collect())


def _vwap_sql(source: str) -> str:
    return (f"SELECT instrument_id, epoch_ns(ts_event) // {MINUTE_NS} AS minute, count(*) AS n, "
            f"sum(size) AS volume, sum(price::DOUBLE * size::DOUBLE) / sum(size)::DOUBLE / "
            f"{R.PRICE_SCALE} AS vwap FROM {source} WHERE {VWAP_WHERE} GROUP BY ALL")


def _vwap_duckdb(store, files):
    """The DuckDB ways to the bars: ``store.sql`` (the schema a view) when the store has a
    working one, and a plain connection reading the same files. Returns [(how, function)] and
    why ``store.sql`` is missing, if it is."""
    import duckdb
    con = duckdb.connect()
    lst = ", ".join(f"'{f}'" for f in files)
    raw = _vwap_sql(f"read_parquet([{lst}])")
    ways = [("read_parquet", lambda: con.sql(raw).to_arrow_table())]
    why = "the store has no sql()"
    if hasattr(store, "sql"):
        q = _vwap_sql("mbo")
        try:
            store.sql(q)
            ways.insert(0, ("store.sql", lambda: store.sql(q)))
            why = ""
        except Exception as e:          # the method is there but cannot run yet
            why = f"store.sql failed: {type(e).__name__}: {e}"
    return ways, why


def _same_vwap(a: pa.Table, b) -> tuple[bool, str]:
    """DuckDB's and polars' bars agree: same (instrument, minute) groups, counts and volumes,
    VWAPs within 1e-9 relative."""
    import polars as pl
    keys = ["instrument_id", "minute"]
    x = pl.from_arrow(a).with_columns(pl.col(k).cast(pl.Int64) for k in keys).sort(keys)
    y = b.with_columns(pl.col(k).cast(pl.Int64) for k in keys).sort(keys)
    if x.height != y.height:
        return False, f"{x.height} vs {y.height} groups"
    for c in keys + ["n", "volume"]:
        if not np.array_equal(x[c].cast(pl.Int64).to_numpy(), y[c].cast(pl.Int64).to_numpy()):
            return False, f"column {c} differs"
    if not np.allclose(x["vwap"].to_numpy(), y["vwap"].to_numpy(), rtol=1e-9, atol=0):
        return False, "VWAPs differ"
    return True, f"{x.height:,} bars equal"


def _same_rows(tp: pa.Table, adb: pa.Table) -> bool:
    """The full reads hold the same rows (the store's come sorted by instrument, ArcticDB's by
    time: compared in ``sequence`` order)."""
    if tp.num_rows != adb.num_rows:
        return False
    a = tp.take(np.argsort(tp.column("sequence").to_numpy(), kind="stable"))
    b = adb.take(np.argsort(adb.column("sequence").to_numpy(), kind="stable"))
    for name in tp.column_names:
        x = a.column(name)
        if name == "mpid":
            x = np.frombuffer(x.combine_chunks().buffers()[1], np.uint32, count=len(x))
            if not np.array_equal(x, b.column(name).to_numpy()):
                return False
            continue
        if pa.types.is_timestamp(x.type):           # ArcticDB drops ts_recv's time zone
            lo = np.iinfo(np.int64).min              # and may give a null back as NaT's value
            xv = x.cast(pa.int64()).fill_null(lo).to_numpy()
            yv = b.column(name).cast(pa.int64()).fill_null(lo).to_numpy()
            if not np.array_equal(xv, yv):
                return False
            continue
        if not np.array_equal(x.to_numpy(), b.column(name).to_numpy()):
            return False
    return True


def _arctic_arrow_write(mbo: pa.Table, root: Path, repeats: int) -> float | None:
    """The median time of ArcticDB's write straight from an Arrow table (``index_column``:
    ``ts_event`` first): an input path this version has behind a private switch
    (``_set_allow_arrow_input``); None when the switch is not there."""
    mpid = mbo.column("mpid").combine_chunks()
    raw = np.frombuffer(mpid.buffers()[1], np.uint32, count=len(mpid) + mpid.offset)[mpid.offset:]
    t = mbo.drop_columns(["mpid"]).append_column("mpid", pa.array(raw))
    times = []
    try:
        for i in range(repeats + 1):
            _fresh(root)
            lib = _arctic(root, t.num_rows).create_library("bench")
            lib._nvs._set_allow_arrow_input()
            t0 = time.perf_counter()
            lib.write("mbo", t, index_column=True)
            if i:
                times.append(time.perf_counter() - t0)
    except (AttributeError, TypeError):
        return None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return float(np.median(times))


# ---------------------------------------------------------------------------------------------
# the run

def run(rows: int, instruments: int, seed: int, repeats: int, write_repeats: int,
        per_symbol: bool, workdir: Path, log=print, slot: str = "5min") -> dict:
    import arcticdb as adb
    import pandas as pd

    from tickstore.store import TickStore

    t0 = time.perf_counter()
    mbo, path, generated = mbo_rows(rows, instruments, seed)
    t_input = time.perf_counter() - t0
    n = mbo.num_rows
    ts = mbo.column("ts_event").cast(pa.int64()).to_numpy()
    inst = mbo.column("instrument_id").to_numpy()
    h0, h1 = _ns(HOUR[0]), _ns(HOUR[1])
    if not (ts.min() <= h0 and ts.max() >= h1):
        raise SystemExit(f"error: the rows span {np.datetime64(int(ts.min()), 'ns')} to "
                         f"{np.datetime64(int(ts.max()), 'ns')}, not the hour {HOUR}.")
    in_hour = (ts >= h0) & (ts < h1)
    busy = int(np.argmax(np.bincount(inst[in_hour])))
    out = {"rows": n, "instruments": int(np.unique(inst).size), "seed": seed,
           "input": str(path), "input_generated": generated, "input_s": t_input,
           "busy_instrument": busy, "busy_rows_day": int((inst == busy).sum()),
           "hour": HOUR, "minute": MINUTE, "slot": slot, "repeats": repeats, "write_repeats": write_repeats,
           "results": {}}
    res = out["results"]
    log(f"input: {path.name} ({'generated' if generated else 'cached'} in {t_input:.1f} s): "
        f"{n:,} mbo rows, {out['instruments']} instruments, "
        f"{np.datetime64(int(ts.min()), 'ns')} to {np.datetime64(int(ts.max()), 'ns')} UTC")
    del ts, inst, in_hour

    # -- write -----------------------------------------------------------------------------
    tp_root = workdir / "tickpipe"
    tp_times = []
    for i in range(write_repeats + 1):              # the first is a warm-up
        _fresh(tp_root)
        with TickStore(tp_root, slot=slot) as st:
            t = time.perf_counter()
            st.append("mbo", mbo)
            if i:
                tp_times.append(time.perf_counter() - t)
    tp_write = float(np.median(tp_times))
    conv, df = measure(lambda: arctic_frame(mbo), repeats, warmup=1)
    adb_root = workdir / "arcticdb"
    adb_times = []
    for i in range(write_repeats + 1):
        _fresh(adb_root)
        lib = _arctic(adb_root, n).create_library("bench")
        t = time.perf_counter()
        lib.write("mbo", df)
        if i:
            adb_times.append(time.perf_counter() - t)
    adb_write = float(np.median(adb_times))
    arrow_write = _arctic_arrow_write(mbo, workdir / "arcticdb-arrow", write_repeats)
    res["write_s"] = {"tickpipe": tp_write, "arcticdb": adb_write,
                      "arrow_to_pandas": conv.median, "arcticdb_from_arrow": arrow_write,
                      "tickpipe_all": tp_times,
                      "arcticdb_all": adb_times}
    log(f"  write: tickpipe {tp_write:.2f} s, ArcticDB {adb_write:.2f} s "
        f"(+{conv.median:.2f} s Arrow->pandas)")

    # -- bytes -----------------------------------------------------------------------------
    tp_blocks, tp_size, tp_files = allocated_bytes(tp_root)
    adb_blocks, adb_size, adb_files = allocated_bytes(adb_root)
    res["bytes"] = {"tickpipe_allocated": tp_blocks, "tickpipe_apparent": tp_size,
                    "tickpipe_files": tp_files, "arcticdb_allocated": adb_blocks,
                    "arcticdb_apparent": adb_size, "arcticdb_files": adb_files}
    store = TickStore(tp_root, writer=False)
    files = [str(tp_root / e.path) for e in store.files("mbo")]
    out["columns"] = column_bytes(files)
    lib = _arctic(adb_root, n).get_library("bench")

    # -- layout (b): one symbol per instrument ---------------------------------------------
    lib_b = None
    if per_symbol:
        from arcticdb import WritePayload
        order = np.argsort(df["instrument_id"].to_numpy(), kind="stable")
        ids = df["instrument_id"].to_numpy()[order]
        cuts = np.flatnonzero(np.diff(ids)) + 1
        frames = [(int(ids[lo]), df.iloc[order[lo:hi]])
                  for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, ids.size])]
        b_root = workdir / "arcticdb-per-instrument"
        b_times = []
        for i in range(write_repeats + 1):
            _fresh(b_root)
            lb = _arctic(b_root, n).create_library("bench")
            payloads = [WritePayload(f"i{k}", f) for k, f in frames]
            t = time.perf_counter()
            lb.write_batch(payloads)
            if i:
                b_times.append(time.perf_counter() - t)
        del frames, payloads
        b_blocks, _, _ = allocated_bytes(b_root)
        res["write_s"]["arcticdb_per_instrument"] = float(np.median(b_times))
        res["bytes"]["arcticdb_per_instrument_allocated"] = b_blocks
        lib_b = _arctic(b_root, n).get_library("bench")
        log(f"  write (b): ArcticDB one symbol per instrument {np.median(b_times):.2f} s")
    del df

    # -- queries ---------------------------------------------------------------------------
    def both(name, tp_fn, adb_fn, check=None, **extra):     # two warm-ups each (numba's
        t_tp, r_tp = measure(tp_fn, repeats, warmup=2)         # load, then the threads'
        t_adb, r_adb = measure(adb_fn, repeats, warmup=2)      # buffers grown: a slow 2nd run)
        ok = r_tp.num_rows == r_adb.num_rows if check is None else check(r_tp, r_adb)
        if not ok:
            raise SystemExit(f"error: {name}: tickpipe and ArcticDB disagree "
                             f"({r_tp.num_rows:,} vs {r_adb.num_rows:,} rows)")
        res[name] = {"tickpipe_s": t_tp.median, "arcticdb_s": t_adb.median,
                     "tickpipe_all": t_tp.times, "arcticdb_all": t_adb.times,
                     "rows": r_tp.num_rows, **extra}
        log(f"  {name}: tickpipe {t_tp.median * 1e3:.1f} ms, ArcticDB {t_adb.median * 1e3:.1f} ms, "
            f"{r_tp.num_rows:,} rows")

    both("full_read", lambda: store.read("mbo"),
         lambda: lib.read("mbo", output_format="pyarrow").data, check=_same_rows)
    t_pd, r_pd = measure(lambda: pa.Table.from_pandas(lib.read("mbo").data), repeats)
    assert r_pd.num_rows == n
    res["full_read"]["arcticdb_via_pandas_s"] = t_pd.median
    del r_pd

    q = adb.QueryBuilder()
    q = q[q.instrument_id == busy]
    hour_adb = (_utc(HOUR[0]), _utc(HOUR[1], minus_ns=1))
    both("instrument_hour",
         lambda: store.read("mbo", instruments=[busy], start=HOUR[0], end=HOUR[1]),
         lambda: lib.read("mbo", date_range=hour_adb, query_builder=q,
                          output_format="pyarrow").data, instrument=busy)
    if lib_b is not None:
        t_b, r_b = measure(lambda: lib_b.read(f"i{busy}", date_range=hour_adb,
                                              output_format="pyarrow").data, repeats)
        if r_b.num_rows != res["instrument_hour"]["rows"]:
            raise SystemExit(f"error: instrument_hour (b): {r_b.num_rows:,} rows, tickpipe "
                             f"{res['instrument_hour']['rows']:,}")
        res["instrument_hour"]["arcticdb_per_instrument_s"] = t_b.median
    minute_adb = (_utc(MINUTE[0]), _utc(MINUTE[1], minus_ns=1))
    both("all_minute", lambda: store.read("mbo", start=MINUTE[0], end=MINUTE[1]),
         lambda: lib.read("mbo", date_range=minute_adb, output_format="pyarrow").data)
    if lib_b is not None:                       # (b): every instrument's symbol, one batch
        from arcticdb import ReadRequest
        reqs = [ReadRequest(sym, date_range=minute_adb) for sym in lib_b.list_symbols()]

        def minute_b():
            return pa.concat_tables([v.data for v in lib_b.read_batch(reqs,
                                                                      output_format="pyarrow")])
        t_b, r_b = measure(minute_b, repeats)
        if r_b.num_rows != res["all_minute"]["rows"]:
            raise SystemExit(f"error: all_minute (b): {r_b.num_rows:,} rows, tickpipe "
                             f"{res['all_minute']['rows']:,}")
        res["all_minute"]["arcticdb_per_instrument_s"] = t_b.median
        log(f"  all_minute (b): ArcticDB read_batch of {len(reqs)} symbols "
            f"{t_b.median * 1e3:.1f} ms")

    # -- VWAP per instrument-minute: DuckDB SQL vs polars over the same files -------------
    ways, why = _vwap_duckdb(store, files)
    t_pol, r_pol = measure(lambda: _vwap_polars(files), repeats)
    res["vwap"] = {"polars_s": t_pol.median, "polars_all": t_pol.times, "bars": r_pol.height,
                   "store_sql_missing": why, "duckdb": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # store.sql's DB-API Arrow copy warning
        for how, fn in ways:
            t_duck, r_duck = measure(fn, repeats)
            ok, check = _same_vwap(r_duck, r_pol)
            if not ok:
                raise SystemExit(f"error: VWAP: DuckDB ({how}) and polars disagree: {check}")
            res["vwap"]["duckdb"][how] = {"s": t_duck.median, "all": t_duck.times,
                                          "check": check}
            log(f"  vwap: DuckDB ({how}) {t_duck.median * 1e3:.1f} ms, polars "
                f"{t_pol.median * 1e3:.1f} ms, {check}")
    return out


def _speed(peer_s: float, ours_s: float) -> str:
    """tickpipe's speed against the peer's, from their times."""
    x = peer_s / ours_s
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def table(out: dict) -> list[str]:
    """The comparison table: one line per measure, ratio and target."""
    r, n = out["results"], out["rows"]
    w, b = r["write_s"], r["bytes"]
    lines = [f"{'measure':<44}{'tickpipe':>12}{'ArcticDB':>12}  {'ratio':<22}{'target':<16}note",
             "-" * 124]

    def row(name, tp, peer, ratio, target, note=""):
        lines.append(f"{name:<44}{tp:>12}{peer:>12}  {ratio:<22}{target:<16}{note}")

    def met(ok):
        return "met" if ok else "NOT met"

    tp_rs, adb_rs = n / w["tickpipe"], n / w["arcticdb"]
    row("write, M rows/s", f"{tp_rs / 1e6:.2f}", f"{adb_rs / 1e6:.2f}",
        f"{tp_rs / adb_rs:.2f}x rows/s", f">=1x: {met(tp_rs >= adb_rs)}",
        "ArcticDB from its DataFrame (a)")
    adb_conv = n / (w["arcticdb"] + w["arrow_to_pandas"])
    row("write, ArcticDB incl. Arrow->pandas", f"{tp_rs / 1e6:.2f}", f"{adb_conv / 1e6:.2f}",
        f"{tp_rs / adb_conv:.2f}x rows/s", "", f"conversion {w['arrow_to_pandas']:.2f} s")
    if w.get("arcticdb_from_arrow"):
        adb_arrow = n / w["arcticdb_from_arrow"]
        row("write, ArcticDB from Arrow (experimental)", f"{tp_rs / 1e6:.2f}", f"{adb_arrow / 1e6:.2f}",
            f"{tp_rs / adb_arrow:.2f}x rows/s", "", "pa.Table input, private switch")
    if "arcticdb_per_instrument" in w:
        adb_b = n / w["arcticdb_per_instrument"]
        row("write, ArcticDB (b) symbol per instrument", f"{tp_rs / 1e6:.2f}", f"{adb_b / 1e6:.2f}",
            f"{tp_rs / adb_b:.2f}x rows/s", "", f"write_batch, {out['instruments']} symbols")
    ta, aa = b["tickpipe_allocated"], b["arcticdb_allocated"]
    row("bytes on disk, MB (allocated blocks)", f"{ta / 1e6:.1f}", f"{aa / 1e6:.1f}",
        f"{ta / aa:.3f}x bytes", f"<=0.5x: {met(ta <= 0.5 * aa)}",
        f"apparent: {b['tickpipe_apparent'] / 1e6:.1f} / {b['arcticdb_apparent'] / 1e6:.1f} MB")
    row("bytes per mbo row", f"{ta / n:.2f}", f"{aa / n:.2f}", f"{ta / aa:.3f}x bytes",
        f"<=12 B: {met(ta / n <= 12)}")
    if "arcticdb_per_instrument_allocated" in b:
        ab = b["arcticdb_per_instrument_allocated"]
        row("bytes per row, ArcticDB (b)", f"{ta / n:.2f}", f"{ab / n:.2f}", f"{ta / ab:.3f}x bytes", "")

    def lat(key, name, target=True, note=""):
        q = r[key]
        tp, pe = q["tickpipe_s"], q["arcticdb_s"]
        row(name, f"{tp * 1e3:.1f}", f"{pe * 1e3:.1f}", _speed(pe, tp),
            f"<=1x: {met(tp <= pe)}" if target else "", note)

    lat("full_read", "full read to Arrow, ms", target=False,
        note=f"{r['full_read']['rows']:,} rows; ArcticDB output_format=pyarrow")
    fr = r["full_read"]
    row("full read, ArcticDB via pandas, ms", f"{fr['tickpipe_s'] * 1e3:.1f}",
        f"{fr['arcticdb_via_pandas_s'] * 1e3:.1f}",
        _speed(fr["arcticdb_via_pandas_s"], fr["tickpipe_s"]), "", "read, pa.Table.from_pandas")
    ih = r["instrument_hour"]
    lat("instrument_hour", "one instrument, one hour, ms",
        note=f"instrument {ih['instrument']}, {ih['rows']:,} rows; (a) date_range + QueryBuilder")
    if "arcticdb_per_instrument_s" in ih:
        pb = ih["arcticdb_per_instrument_s"]
        row("one instrument, one hour, ArcticDB (b), ms", f"{ih['tickpipe_s'] * 1e3:.1f}",
            f"{pb * 1e3:.1f}", _speed(pb, ih["tickpipe_s"]),
            f"<=1x: {met(ih['tickpipe_s'] <= pb)}", "(b) the instrument's symbol, date_range")
    lat("all_minute", "all instruments, one minute, ms", note=f"{r['all_minute']['rows']:,} rows")
    am = r["all_minute"]
    if "arcticdb_per_instrument_s" in am:
        pb = am["arcticdb_per_instrument_s"]
        row("all instruments, one minute, ArcticDB (b), ms", f"{am['tickpipe_s'] * 1e3:.1f}",
            f"{pb * 1e3:.1f}", _speed(pb, am["tickpipe_s"]),
            f"<=1x: {met(am['tickpipe_s'] <= pb)}", "(b) read_batch, a symbol per instrument")
    v = r["vwap"]
    lines.append("")
    lines.append(f"{'VWAP per instrument-minute, same files':<44}{'DuckDB':>12}{'polars':>12}"
                 f"  (ratio: DuckDB against polars)")
    for how, d in v["duckdb"].items():
        what = "DuckDB store.sql, ms" if how == "store.sql" else "DuckDB read_parquet(files), ms"
        row(f"  {what}", f"{d['s'] * 1e3:.1f}", f"{v['polars_s'] * 1e3:.1f}",
            _speed(v["polars_s"], d["s"]), "", d["check"])
    if v["store_sql_missing"]:
        lines.append(f"  ({v['store_sql_missing']})")
    return lines


def column_table(cols: list[dict], rows: int) -> list[str]:
    lines = [f"{'column':<16}{'B/row':>8}{'raw B/row':>11}  encodings",
             "-" * 72]
    for c in cols:
        lines.append(f"{c['column']:<16}{c['compressed_per_row']:>8.3f}{c['uncompressed_per_row']:>11.3f}"
                     f"  {', '.join(c['encodings'])}")
    tot = sum(c["compressed"] for c in cols)
    raw = sum(c["uncompressed"] for c in cols)
    lines.append(f"{'all columns':<16}{tot / rows:>8.3f}{raw / rows:>11.3f}  "
                 f"(column chunks only; the file adds footer and page index)")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000, help="mbo rows (default 10,000,000)")
    ap.add_argument("--instruments", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per query (median shown)")
    ap.add_argument("--write-repeats", type=int, default=3, help="timed writes per engine")
    ap.add_argument("--no-per-symbol", dest="per_symbol", action="store_false",
                    help="skip ArcticDB layout (b), one symbol per instrument")
    ap.add_argument("--dir", type=Path, default=OUT_DIR / "store",
                    help="where the stores are written (default bench/out/store)")
    ap.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    ap.add_argument("--slot", default="5min", help="the tick store's time slot: each file holds "
                    "one slot (1min, 5min, ..., 1D; default 5min, the store's)")
    a = ap.parse_args(argv)
    for name in ("rows", "repeats", "write_repeats", "instruments"):
        if getattr(a, name) < 1:
            raise SystemExit(f"error: The `--{name.replace('_', '-')}` must be at least 1, "
                             f"was {getattr(a, name)}.")
    wall0 = time.perf_counter()
    info = machine_info()
    info.update(arcticdb=_version("arcticdb"), duckdb=_version("duckdb"), polars=_version("polars"),
                pandas=_version("pandas"))
    print(f"tick store benchmark (issue 6) {info['date']}")
    print(f"cpu: {info['cpu']}  cores: {info['cores']} ({info['cores_usable']} usable)  "
          f"memory: {info['memory_gib']} GiB  load avg: {' '.join(map(str, info['load_avg']))}")
    print(f"python {info['python']}  pyarrow {info['pyarrow']}  arcticdb {info['arcticdb']}  "
          f"duckdb {info['duckdb']}  polars {info['polars']}  pandas {info['pandas']}  "
          f"git {info['git'] or '?'}", flush=True)
    a.dir.mkdir(parents=True, exist_ok=True)
    try:
        out = run(a.rows, a.instruments, a.seed, a.repeats, a.write_repeats, a.per_symbol, a.dir,
                  log=lambda s: print(s, file=sys.stderr, flush=True), slot=a.slot)
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)
    print(f"tick store slot: {a.slot} (a file per schema and {a.slot} of ts_event)")
    print(f"{out['rows']:,} mbo rows, {out['instruments']} instruments, seed {a.seed}; medians of "
          f"{a.repeats} queries / {a.write_repeats} writes after a warm-up; hour {HOUR[0]}-{HOUR[1][11:]} "
          f"UTC, minute {MINUTE[0]}-{MINUTE[1][11:]} UTC")
    print()
    print("\n".join(table(out)))
    print()
    print("tickpipe's Parquet file, per column (compressed bytes per row, from the file's metadata):")
    print("\n".join(column_table(out["columns"], out["rows"])))
    wall = time.perf_counter() - wall0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"wall time {wall:.1f} s; load avg at the end: {load}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join([sys.executable, *sys.argv]), "machine": info, **out,
               "wall_s": wall}
        a.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
