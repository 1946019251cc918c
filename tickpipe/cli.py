"""The ``tickpipe`` command line.

    tickpipe inspect FILE            counts by message type, instruments, time range, bytes
    tickpipe decode FILE --out DIR   normalized Parquet per schema (mbo, trades, ...)
    tickpipe generate FILE           write a generated ITCH 5.0 session (BinaryFILE)
    tickpipe demo                    generate a session, inspect it, decode it, summarize it
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tickpipe.errors import TickpipeError


def _fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    s, frac = divmod(ns, 1_000_000_000)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{sec:02d}.{frac:09d}"


def _table(headers: list[str], rows: list[tuple], aligns: str) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals):
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w) for v, w, a in zip(vals, widths, aligns))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


class Progress:
    """A one-line progress bar on stderr for long inputs (silent when not a terminal)."""

    def __init__(self, total_bytes: int | None, label: str, enabled: bool | None = None):
        self.total = total_bytes
        self.label = label
        self.t0 = time.perf_counter()
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.shown = False

    def __call__(self, stats) -> None:
        if not self.enabled:
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = stats.messages / dt / 1e6
        if self.total:
            frac = min(stats.bytes / self.total, 1.0)
            bar = "#" * int(30 * frac)
            msg = f"\r{self.label} [{bar:<30}] {100 * frac:5.1f}%  {stats.messages:,} msgs  {rate:.1f} M msg/s"
        else:
            msg = f"\r{self.label} {stats.bytes / 1e6:,.0f} MB  {stats.messages:,} msgs  {rate:.1f} M msg/s"
        sys.stderr.write(msg)
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")


def _is_plain(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head[:2] == b"\x1f\x8b" or head == b"\x28\xb5\x2f\xfd")


def cmd_inspect(args) -> int:
    from normalize.summary import summarize
    size = os.path.getsize(args.file)
    prog = Progress(size if _is_plain(args.file) else None, "inspect")
    t0 = time.perf_counter()
    s = summarize(args.file, errors=args.errors, progress=prog)
    prog.done()
    dt = time.perf_counter() - t0
    print(f"file          {args.file}")
    print(f"bytes         {s.bytes:,} (decompressed)   on disk {size:,}")
    print(f"messages      {s.messages:,}   in {dt:.2f} s ({s.messages / max(dt, 1e-9) / 1e6:.1f} M msg/s)")
    print(f"instruments   {s.instruments:,} locates seen, {s.directory:,} stock directory messages")
    print(f"time range    {_fmt_ns(s.ts_first)} .. {_fmt_ns(s.ts_last)} (ITCH time, America/New_York)")
    if s.skipped:
        print(f"skipped       {len(s.skipped)} bad unit(s), first at byte offset {s.skipped[0][0]}: {s.skipped[0][1]}")
    if s.truncated_at is not None:
        print(f"truncated     trailing partial message at byte offset {s.truncated_at}")
    print()
    print(_table(["type", "message", "count", "share"],
                 [(c, n, f"{k:,}", f"{p:.2f}%") for c, n, k, p in s.rows()], "llrr"))
    return 0


def cmd_decode(args) -> int:
    import pyarrow.parquet as pq

    from normalize import records as R
    from normalize.reader import SCHEMA_KEYS, DecodeStats, iter_itch
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = os.path.getsize(args.file)
    prog = Progress(size if _is_plain(args.file) else None, "decode")
    stats = DecodeStats()
    writers = {k: pq.ParquetWriter(out / f"{k}.parquet", R.arrow_schema(k), compression="zstd")
               for k in SCHEMA_KEYS}
    rows = dict.fromkeys(SCHEMA_KEYS, 0)
    t0 = time.perf_counter()
    try:
        for batches in iter_itch(args.file, date=args.date, errors=args.errors, stats=stats):
            for k, b in batches.items():
                if b.num_rows:
                    writers[k].write_batch(b)
                    rows[k] += b.num_rows
            prog(stats)
    finally:
        for w in writers.values():
            w.close()
        prog.done()
    dt = time.perf_counter() - t0
    print(f"decoded {stats.messages:,} messages ({stats.bytes / 1e6:,.1f} MB) and wrote zstd Parquet "
          f"in {dt:.2f} s ({stats.messages / max(dt, 1e-9) / 1e6:.1f} M msg/s) into {out}/")
    print(_table(["schema", "rows", "file"],
                 [(k, f"{rows[k]:,}", str(out / f"{k}.parquet")) for k in SCHEMA_KEYS], "lrl"))
    if stats.unknown_orders:
        print(f"note: {stats.unknown_orders:,} events referred to orders not seen in this file "
              "(flagged F_UNKNOWN_ORDER; their price/side stay unresolved)")
    if stats.n_skipped:
        print(f"note: skipped {stats.n_skipped} bad unit(s); first at byte offset {stats.skipped[0][0]}")
    return 0


def cmd_generate(args) -> int:
    from ingest.simulator import write_binaryfile
    n = write_binaryfile(args.file, args.messages, args.instruments, seed=args.seed, date=args.date,
                         compress=args.compress)
    print(f"wrote {n:,} bytes to {args.file}")
    return 0


def cmd_demo(args) -> int:
    import datetime as dt

    import numpy as np
    import pyarrow.compute as pc

    from normalize import read_itch
    from normalize.records import PRICE_SCALE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    date = dt.date(2024, 3, 15)
    path = out / f"{date:%m%d%Y}.NASDAQ_ITCH50"
    print(f"== generating a {args.messages:,}-message ITCH 5.0 session, {args.instruments} instruments -> {path}")
    from ingest.simulator import write_binaryfile
    write_binaryfile(path, args.messages, args.instruments, seed=args.seed, date=date)
    print("\n== tickpipe inspect")
    cmd_inspect(argparse.Namespace(file=str(path), errors="raise"))
    print("\n== tickpipe decode")
    cmd_decode(argparse.Namespace(file=str(path), out=str(out / "parquet"), date=None, errors="raise"))
    print("\n== the normalized data (read_itch: session date from the NASDAQ file name)")
    t = read_itch(path)
    defs = t["definitions"]
    sym = dict(zip(defs.column("instrument_id").to_pylist(),
                   [s.decode().strip() for s in defs.column("symbol").to_pylist()]))
    tr = t["trades"].filter(pc.equal(t["trades"].column("printable"), 1))
    g = tr.group_by("instrument_id").aggregate([("size", "sum"), ("size", "count")])
    px = tr.column("price").to_numpy().astype(np.float64) / PRICE_SCALE
    sz = tr.column("size").to_numpy().astype(np.float64)
    inst = tr.column("instrument_id").to_numpy()
    rows = []
    for i, vol, cnt in sorted(zip(g.column("instrument_id").to_pylist(), g.column("size_sum").to_pylist(),
                                  g.column("size_count").to_pylist()), key=lambda r: -r[1])[:8]:
        m = inst == i
        vwap = float((px[m] * sz[m]).sum() / sz[m].sum())
        rows.append((sym.get(i, str(i)), i, f"{cnt:,}", f"{vol:,}", f"{vwap:,.4f}"))
    print(_table(["symbol", "locate", "trades", "volume", "vwap"], rows, "lrrrr"))
    m = t["mbo"]
    print(f"\nmbo events {m.num_rows:,}; first: {m.column('ts_event')[0]} (UTC), last: {m.column('ts_event')[-1]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tickpipe", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("inspect", help="counts by message type, instruments, time range, bytes")
    s.add_argument("file")
    s.add_argument("--errors", choices=["raise", "skip"], default="raise")
    s.set_defaults(func=cmd_inspect)
    s = sub.add_parser("decode", help="decode to Parquet per schema")
    s.add_argument("file")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--date", help="session date YYYY-MM-DD (default: from a NASDAQ file name)")
    s.add_argument("--errors", choices=["raise", "skip"], default="raise")
    s.set_defaults(func=cmd_decode)
    s = sub.add_parser("generate", help="write a generated ITCH 5.0 session")
    s.add_argument("file")
    s.add_argument("--messages", type=int, default=1_000_000)
    s.add_argument("--instruments", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--date", default="2024-03-15")
    s.add_argument("--compress", choices=["gzip", "zstd"])
    s.set_defaults(func=cmd_generate)
    s = sub.add_parser("demo", help="generate, inspect and decode a session")
    s.add_argument("--out", default="demo-out")
    s.add_argument("--messages", type=int, default=2_000_000)
    s.add_argument("--instruments", type=int, default=200)
    s.add_argument("--seed", type=int, default=42)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (TickpipeError, ValueError, FileNotFoundError) as e:
        print(f"tickpipe {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
