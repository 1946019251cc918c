"""``tickpipe store``: the tick store from the shell.

    tickpipe store ls ROOT [--schema S] [--date D]        the committed files
    tickpipe store info ROOT                              rows, bytes, days, instruments per schema
    tickpipe store query ROOT SCHEMA [--symbols ...] [--instruments ...] [--start T] [--end T]
                         [--columns ...] [--limit N] [--out FILE.parquet|.csv]
    tickpipe store sql ROOT "SELECT ..." [--limit N] [--out FILE]
    tickpipe store compact ROOT [--schema S] [--date D]   merge each day's files into one
    tickpipe store verify ROOT                            every file against the catalog
"""

from __future__ import annotations

import argparse


CODES = {"action", "side", "kind"}


def _store(args, writer: bool = False):
    from tickstore import TickStore
    return TickStore(args.root, writer=writer)


def _table(headers, rows, aligns):
    from tickpipe.cli import _table as t
    return t(headers, rows, aligns)


def _iso(ns: int) -> str:
    import numpy as np
    return str(np.datetime64(int(ns), "ns"))


def cmd_ls(args) -> int:
    s = _store(args)
    schemas = [args.schema] if args.schema else s.schemas()
    rows = []
    for schema in schemas:
        for e in s.files(schema):
            if args.date and e.date != args.date:
                continue
            rows.append((e.path, f"{e.rows:,}", f"{e.bytes:,}", f"{e.bytes / max(e.rows, 1):.2f}",
                         f"{e.instrument_min}-{e.instrument_max}", _iso(e.ts_min)[11:],
                         _iso(e.ts_max)[11:]))
    print(_table(["file", "rows", "bytes", "B/row", "instruments", "first (UTC)", "last (UTC)"],
                 rows, "lrrrrll"))
    return 0


def cmd_info(args) -> int:
    s = _store(args)
    rows = []
    for schema in s.schemas():
        es = s.files(schema)
        n, b = sum(e.rows for e in es), sum(e.bytes for e in es)
        days = sorted({e.date for e in es})
        rows.append((schema, f"{len(es):,}", f"{n:,}", f"{b:,}", f"{b / max(n, 1):.2f}",
                     f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0], f"{len(days)}",
                     f"{min(e.instrument_min for e in es)}-{max(e.instrument_max for e in es)}"))
    print(f"tick store {s.root}")
    print(_table(["schema", "files", "rows", "bytes", "B/row", "dates", "days", "instruments"],
                 rows, "lrrrrlrr"))
    smap = s.symbol_map()
    if smap:
        print(f"symbols: {', '.join(f'{d}: {len(m):,}' for d, m in sorted(smap.items()))}")
    return 0


def _emit(t, args) -> None:
    if args.out:
        if args.out.endswith(".csv"):
            import pyarrow.csv as pcsv
            pcsv.write_csv(t, args.out)
        else:
            import pyarrow.parquet as pq
            pq.write_table(t, args.out, compression="zstd")
        print(f"wrote {t.num_rows:,} rows to {args.out}")
        return
    import pandas as pd
    df = t.slice(0, args.limit).to_pandas()
    for c in CODES & set(df.columns):              # ASCII codes shown as their letters
        df[c] = [chr(v) if 32 <= v < 127 else v for v in df[c]]
    with pd.option_context("display.max_columns", 40, "display.width", 200):
        print(df.to_string(index=False))
    if t.num_rows > args.limit:
        print(f"... {t.num_rows:,} rows in all (--limit {args.limit}; --out FILE for all)")


def cmd_query(args) -> int:
    s = _store(args)
    t = s.read(args.schema, symbols=args.symbols or None,
               instruments=[int(i) for i in args.instruments] if args.instruments else None,
               start=args.start, end=args.end, columns=args.columns or None)
    _emit(t, args)
    return 0


def cmd_sql(args) -> int:
    _emit(_store(args).sql(args.query), args)
    return 0


def cmd_compact(args) -> int:
    with _store(args, writer=True) as s:
        new = s.compact(args.schema, date=args.date)
    for e in new:
        print(f"{e.path}: {e.rows:,} rows, {e.bytes:,} bytes")
    print(f"compacted {len(new)} day(s)")
    return 0


def cmd_verify(args) -> int:
    rep = _store(args).verify()
    print(f"{args.root}: {rep.files:,} files, {rep.rows:,} rows, {rep.bytes:,} bytes")
    for p in rep.problems:
        print(f"  problem: {p}")
    if rep.pending_deletion:
        print(f"  {len(rep.pending_deletion)} replaced or uncommitted file(s) wait for deletion "
              f"(the writer removes them when no reader is busy)")
    print("OK: every committed file matches its catalog entry" if rep.ok else "FAILED")
    return 0 if rep.ok else 1


def _command(ssub, name: str, help: str, func, *, schema_date: bool = False):
    c = ssub.add_parser(name, help=help)
    c.add_argument("root", help="the store's folder")
    if schema_date:
        c.add_argument("--schema")
        c.add_argument("--date", help="YYYY-MM-DD")
    c.set_defaults(func=func)
    return c


def add_parser(sub) -> None:
    s = sub.add_parser("store", help="the tick store: ls, info, query, sql, compact, verify")
    ssub = s.add_subparsers(dest="store_cmd", required=True)
    _command(ssub, "ls", "the committed files", cmd_ls, schema_date=True)
    _command(ssub, "info", "rows, bytes, days and instruments per schema", cmd_info)
    c = _command(ssub, "query", "rows of a schema by symbol or instrument and time", cmd_query)
    c.add_argument("schema")
    c.add_argument("--symbols", nargs="+")
    c.add_argument("--instruments", nargs="+")
    c.add_argument("--start", type=_time, help="ISO time (UTC) or ns since the epoch")
    c.add_argument("--end", type=_time, help="ISO time (UTC) or ns since the epoch (exclusive)")
    c.add_argument("--columns", nargs="+")
    c.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")
    c.add_argument("--out", help="write all rows to FILE (.parquet or .csv)")
    c = _command(ssub, "sql", "DuckDB SQL; each schema is a view, and `symbols`", cmd_sql)
    c.add_argument("query")
    c.add_argument("--limit", type=int, default=40)
    c.add_argument("--out")
    _command(ssub, "compact", "merge each time slot's files into one", cmd_compact,
             schema_date=True)
    _command(ssub, "verify", "check every file against the catalog", cmd_verify)


def _time(value: str):
    """A time argument: digits are ns since the epoch, anything else an ISO time."""
    return int(value) if value.isdigit() else value


def main_args(argv: list[str]) -> int:
    """Run ``tickpipe store ARGV`` in this process (the demo's way in)."""
    p = argparse.ArgumentParser(prog="tickpipe")
    add_parser(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(["store", *argv])
    return args.func(args)
