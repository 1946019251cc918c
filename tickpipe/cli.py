"""The ``tickpipe`` command line.

    tickpipe inspect FILE            counts by message type, instruments, time range, bytes
    tickpipe decode FILE --out DIR   normalized Parquet per schema (mbo, trades, ...)
    tickpipe book FILE --out FILE    the book after every order event, straight from ITCH
    tickpipe generate FILE           write a generated ITCH 5.0 session (BinaryFILE)
    tickpipe simulate ...            send a generated session on MoldUDP64 lines A and B
    tickpipe capture ... --out DIR   capture lines A and B: journal + normalized Parquet
    tickpipe journal verify DIR      check a raw journal's hash chain, blocks and index
    tickpipe store ls|info|query|sql|compact|verify ROOT ...   the tick store
    tickpipe demo                    generate, inspect, decode; simulate and capture on loopback
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
    from normalize.reader import compression
    return compression(path) is None


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


def cmd_book(args) -> int:
    import pyarrow.parquet as pq

    from kernels.book import BookReport, book_schema, report_metadata
    from kernels.book_itch import ItchBook, iter_book_itch, order_slots
    from normalize.reader import DecodeStats, resolve_date, warn_skipped
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = os.path.getsize(args.file)
    prog = Progress(size if _is_plain(args.file) else None, "book")
    stats = DecodeStats()
    book = ItchBook(resolve_date(args.file, args.date), levels=args.levels,
                    orders=order_slots(args.file))
    rows = 0
    t0 = time.perf_counter()
    with pq.ParquetWriter(out, book_schema(args.levels), compression="zstd") as w:
        try:
            for t in iter_book_itch(args.file, levels=args.levels, errors=args.errors,
                                    book=book, stats=stats):
                if t.num_rows:
                    w.write_table(t)
                    rows += t.num_rows
                prog(stats)
        finally:
            prog.done()
        r: BookReport = book.builder.report     # known at the end: in the file's footer
        w.add_key_value_metadata(report_metadata(r))
    warn_skipped(args.file, stats, args.errors)
    dt = time.perf_counter() - t0
    print(f"read {stats.messages:,} messages ({stats.bytes / 1e6:,.1f} MB), wrote the top "
          f"{args.levels} level(s) a side after each of {rows:,} order events for "
          f"{book.builder.instruments.size:,} instruments in {dt:.2f} s "
          f"({stats.messages / max(dt, 1e-9) / 1e6:.1f} M msg/s) to {out}")
    print(f"live orders at the end {len(book.builder.orders):,}")
    for what, n in (("events for orders never seen (not applied)", r.unknown),
                    ("events for orders never seen, applied at their own price", r.applied_unknown),
                    ("events that left a book crossed or locked", r.crossed),
                    ("events older than their instrument's latest", r.late),
                    ("events whose order or level was missing", r.inconsistent)):
        if n:
            print(f"note: {n:,} {what}")
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
    demo_books(t, sym)
    rec = demo_forecasts(t, sym)
    demo_store(out, t, rec)
    demo_live(out, args)
    return 0


def demo_books(t, sym) -> None:
    """Books of the most active instruments at the close, from the decoded mbo."""
    import numpy as np
    import pyarrow.compute as pc

    from kernels.book import BookBuilder
    from normalize.records import PRICE_SCALE, UNDEF_PRICE
    print("\n== books (kernels.book): 3 levels a side at the last event of the 5 busiest instruments")
    mbo = t["mbo"]
    counts = mbo.group_by("instrument_id").aggregate([("instrument_id", "count")])
    top = [i for i, _ in sorted(zip(counts.column("instrument_id").to_pylist(),
                                    counts.column("instrument_id_count").to_pylist()),
                                key=lambda r: -r[1])[:5]]
    sub = mbo.filter(pc.is_in(mbo.column("instrument_id"), pa_array(top)))
    b = BookBuilder(levels=3)
    book = b.apply(sub)
    inst = book.column("instrument_id").to_numpy()
    rows = []
    for i in top:
        last = book.slice(int(np.flatnonzero(inst == i)[-1]), 1).to_pylist()[0]

        def lv(side, k):
            px, sz = last[f"{side}_px_{k}"], last[f"{side}_sz_{k}"]
            return "-" if px == UNDEF_PRICE else f"{sz:,} @ {px / PRICE_SCALE:,.2f}"
        rows.append((sym.get(i, str(i)), lv("bid", 0), lv("ask", 0), lv("bid", 1), lv("ask", 1)))
    print(_table(["symbol", "bid 1", "ask 1", "bid 2", "ask 2"], rows, "lrrrr"))
    r = b.report
    print(f"{r.events:,} events; crossed or locked after {r.crossed:,} of them; "
          f"{r.unknown:,} events for unseen orders")
    from kernels.features import compute
    feats = compute(sub, bar="30min").to_pandas()
    feats = feats[(feats.instrument_id == top[0]) & (feats.trade_count > 0)].head(8)
    print(f"\n== features (kernels.features), 30-minute bars of {sym.get(top[0], top[0])}")
    rows = [(str(r.bar_start)[11:16], f"{r.trade_count:,}", f"{r.volume:,}", f"{r.vwap:,.4f}",
             f"{r.signed_trade_imbalance:+.3f}", f"{r.realized_variance:.2e}", f"{r.vpin:.3f}",
             f"{r.effective_spread * 1e4:.1f}") for r in feats.itertuples()]
    print(_table(["bar (UTC)", "trades", "volume", "vwap", "imbalance", "RV", "VPIN", "eff spread bp"],
                 rows, "lrrrrrrr"))


def demo_forecasts(t, sym) -> None:
    """Volatility forecasts for every simulated instrument from its 1-minute mid returns."""
    import numpy as np

    from kernels.book import reconstruct
    from kernels.features import compute
    from kernels.forecast import ewma, garch11, liquidity, mid_returns, quote_bars, to_records
    book = reconstruct(t["mbo"], levels=5)
    bars = compute(t["mbo"], book=book, bar="1min")
    ret = mid_returns(bars)                         # basis points
    fits = garch11(ret, device="auto")
    g = fits.to_pandas()
    e = ewma(ret).to_pandas()
    n = ret.group_by("instrument_id").aggregate([("return", "count")]).to_pandas()
    n = dict(zip(n.instrument_id, n.return_count))
    print(f"\n== volatility forecasts (kernels.forecast), 1-minute mid returns in basis points, "
          f"{len(g)} instruments in one call")
    rows = []
    for r, ew in zip(g.itertuples(), e.itertuples()):
        ok = r.status == 0
        rows.append((sym.get(r.instrument_id, str(r.instrument_id)), f"{n.get(r.instrument_id, 0):,}",
                     f"{r.alpha:.3f}" if ok else "-", f"{r.beta:.3f}" if ok else "-",
                     f"{np.sqrt(r.variance_forecast):.2f}" if ok else "-",
                     f"{np.sqrt(ew.variance_forecast):.2f}" if ew.status == 0 else "-",
                     "yes" if r.converged else "no", str(r.status)))
    print(_table(["symbol", "returns", "alpha", "beta", "GARCH vol 1-min bp", "EWMA vol bp",
                  "converged", "status"], rows[:10], "lrrrrrrr"))
    last = int(t["mbo"].column("ts_event").cast("int64")[-1].as_py())
    rec = to_records(fits, model="G", target="V", ts_event=last, value="variance_forecast")
    print(f"{rec.num_rows} `forecasts` records (schema {rec.schema.metadata[b'tickpipe.schema'].decode()}), "
          f"e.g. {rec.slice(0, 1).to_pylist()[0]}")
    forecasts = rec
    size = 1_000
    liq = liquidity(bars, quote_bars(book, bar="1min"), size=size).to_pandas()
    print(f"\n== liquidity forecasts for the next minute (kernels.forecast.liquidity): HAR on log "
          f"spread and depth, EWMA of Amihud and Kyle's lambda, impact of {size:,} shares")
    rows = [(sym.get(r.instrument_id, str(r.instrument_id)), f"{r.spread_har * 100:.2f}",
             f"{r.spread_ewma * 100:.2f}", f"{r.depth_har:,.0f}", f"{r.depth_ewma:,.0f}",
             f"{r.impact_kyle / r.price * 1e4:.3f}", f"{r.impact_amihud * 1e4:.3f}")
            for r in liq.head(10).itertuples()]
    print(_table(["symbol", "spread HAR c", "spread EWMA c", "depth HAR", "depth EWMA",
                  "impact Kyle bp", "impact Amihud bp"], rows, "lrrrrrr"))
    return forecasts


def demo_store(out: Path, t, forecasts) -> None:
    """The session into a tick store (mbo in ten appends, as the live pipeline writes it, then
    compacted), a query by symbol, SQL through DuckDB, an as-of join and verify."""
    import shutil

    import numpy as np
    import pyarrow.compute as pc

    from tickstore import TickStore
    root = out / "store"
    if root.exists():
        shutil.rmtree(root)
    print(f"\n== tick store (tickstore): the session's tables into {root}")
    with TickStore(root) as s:
        m = t["mbo"]
        step = -(-m.num_rows // 10)
        for k in range(0, m.num_rows, step):
            s.append("mbo", m.slice(k, step))
        for schema in ("trades", "definitions", "status", "imbalance"):
            if t[schema].num_rows:
                s.append(schema, t[schema])
        s.append("forecasts", forecasts)
        before = len(s.files("mbo"))
        s.compact()
        print(f"mbo: 10 appends made {before} files (a file per {s.slot} of ts_event an append "
              f"touches); compacted into {len(s.files('mbo'))}, one per {s.slot}")
    from tickpipe.store_cli import main_args
    main_args(["info", str(root)])
    s = TickStore(root, writer=False)
    busiest = s.sql("SELECT s.symbol, count(*) AS n FROM trades t JOIN symbols s USING (instrument_id) "
                    "GROUP BY ALL ORDER BY n DESC LIMIT 1").column("symbol")[0].as_py()
    q = ["query", str(root), "trades", "--symbols", busiest, "--start", "2024-03-15T14:30",
         "--end", "2024-03-15T14:31", "--columns", "ts_event", "price", "size", "side", "--limit", "5"]
    print(f"\n$ tickpipe store {' '.join(q)}")
    main_args(q)
    sql = ("SELECT s.symbol, time_bucket(INTERVAL 1 minute, ts_event) AS minute, count(*) AS trades, "
           "sum(size) AS volume, round(sum(price::DOUBLE * size) / sum(size) / 1e9, 4) AS vwap "
           "FROM trades t JOIN symbols s ON s.instrument_id = t.instrument_id "
           "AND s.date = CAST(t.ts_event AS DATE) WHERE printable = 1 "
           "GROUP BY ALL ORDER BY volume DESC LIMIT 5")
    print(f"\n$ tickpipe store sql {root} \"{sql}\"")
    main_args(["sql", str(root), sql])
    day = s.read("mbo", symbols=[busiest], columns=["instrument_id", "ts_event", "price", "size",
                                                    "side", "action"])
    trades = s.read("trades", symbols=[busiest], columns=["instrument_id", "ts_event", "price",
                                                          "size"])
    adds = day.filter(pc.equal(day.column("action"), ord("A")))
    j = s.asof_join(trades, adds.select(["instrument_id", "ts_event", "price", "side"]),
                    tolerance="1s", quote_columns=["ts_event", "price"])
    age = pc.subtract(j.column("ts_event").cast("int64"), j.column("quote_ts_event").cast("int64"))
    print(f"\nas-of join: {j.num_rows:,} {busiest} trades, each with the last order added before it "
          f"(within 1 s: {j.num_rows - j.column('quote_price').null_count:,}; median age "
          f"{np.nanmedian(age.to_numpy(zero_copy_only=False).astype(float)) / 1e6:.2f} ms)")
    print(f"\n$ tickpipe store verify {root}")
    main_args(["verify", str(root)])


def pa_array(values):
    import pyarrow as pa
    return pa.array(values, type=pa.uint32())


def demo_live(out: Path, args) -> None:
    """The simulator in its own process sends on loopback multicast; this process captures."""
    import subprocess

    import normalize
    from ingest.capture import Capture, capture_dir_tables
    n, inst = min(args.messages, 500_000), min(args.instruments, 100)
    sim = [sys.executable, "-m", "tickpipe.cli", "simulate", "--messages", str(n), "--instruments",
           str(inst), "--seed", str(args.seed), "--rate", "1000000", "--loss-a", "0.01",
           "--loss-b", "0.01", "--dup", "0.01", "--reorder", "0.01", "--lose-both", "3",
           "--delay", "1.0", "--linger", "2"]
    print(f"\n== live: tickpipe simulate (own process) -> MoldUDP64 on loopback multicast, lines A and B "
          f"(1% loss each, 1% duplicates, 1% reordered, 3 packets lost on both) -> tickpipe capture")
    print("   " + " ".join(sim[1:]))
    live = out / "live"
    if live.exists():
        import shutil
        shutil.rmtree(live)
    cap = Capture("239.192.1.1:31001", "239.192.1.2:31002", rerequest="127.0.0.1:31009", out=live,
                  decode_date="2024-03-15")
    proc = subprocess.Popen(sim, stdout=subprocess.PIPE, text=True)
    st = cap.run(timeout=120, idle_timeout=10)
    sent = proc.communicate(timeout=60)[0].strip()
    print(f"simulator: {sent}")
    print_capture(st, live)
    truth = normalize.read_itch(_session_itch(argparse.Namespace(
        messages=n, instruments=inst, seed=args.seed, date="2024-03-15")), date="2024-03-15")
    got = capture_dir_tables(live)
    same = all(got[k].select(["sequence", "order_id", "price", "size", "action"]).equals(
        truth[k].select(["sequence", "order_id", "price", "size", "action"])) for k in ("mbo",))
    print(f"captured mbo equals the simulator's session exactly: {'yes' if same else 'NO'} "
          f"({got['mbo'].num_rows:,} of {truth['mbo'].num_rows:,} events)")


def _session_itch(args) -> bytes:
    from ingest.simulator import generate_session
    return generate_session(args.messages, args.instruments, seed=args.seed, date=args.date).to_binaryfile()


def cmd_simulate(args) -> int:
    from ingest.exchange import Exchange, LineConfig
    itch = Path(args.input).read_bytes() if args.input else _session_itch(args)
    if args.binaryfile or args.pcap:
        if args.binaryfile:
            Path(args.binaryfile).write_bytes(itch)
            print(f"wrote the session as BinaryFILE: {args.binaryfile} ({len(itch):,} bytes)")
        if args.pcap:
            from ingest.moldudp64 import packetize
            from ingest.pcap import write_pcap
            write_pcap(args.pcap, packetize(itch, args.session.encode(), 1))
            print(f"wrote the session as pcap: {args.pcap}")
        return 0
    a = LineConfig(*_endpoint(args.line_a), loss=args.loss_a, dup=args.dup, reorder=args.reorder)
    b = (LineConfig(*_endpoint(args.line_b), loss=args.loss_b, dup=args.dup, reorder=args.reorder)
         if args.line_b else None)
    rr = _endpoint(args.rerequest) if args.rerequest else None
    lose_both = ()
    if args.lose_both:
        import numpy as np
        from ingest.moldudp64 import packetize
        n_packets = len(packetize(itch, args.session.encode(), 1))
        rng = np.random.default_rng(args.seed + 7)
        lose_both = sorted(rng.choice(np.arange(1, n_packets - 1), size=min(args.lose_both, n_packets - 2),
                                      replace=False).tolist())
    with Exchange(itch, session=args.session.encode(), line_a=a, line_b=b, interface=args.interface,
                  rerequest=rr, rate=args.rate, seed=args.seed, lose_both=lose_both) as ex:
        if rr:
            ex.start_rerequest_server()
        if args.delay:
            time.sleep(args.delay)
        st = ex.send()
        print(f"sent {st.messages:,} messages in {st.packets:,} packets in {st.seconds:.2f} s "
              f"({st.msgs_per_s / 1e6:.2f} M msg/s); line A lost {st.lost_a}, line B lost {st.lost_b}, "
              f"duplicated {st.dup_a}/{st.dup_b}, reordered {st.reordered_a}/{st.reordered_b}", flush=True)
        if rr and args.linger:
            time.sleep(args.linger)          # keep answering re-requests
    return 0


def _endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def cmd_capture(args) -> int:
    from ingest.capture import Capture, MultiCapture
    if args.channel:
        chans = []
        for spec in args.channel:
            parts = spec.split(",")
            if len(parts) != 3:
                raise ValueError(f"The `--channel` must be LINE_A,LINE_B,REREQUEST, was {spec!r}.")
            chans.append((parts[0], parts[1] or None, parts[2] or None))
        mc = MultiCapture(chans, out=args.out, decode_date=args.date, interface=args.interface,
                          gap_timeout=args.gap_timeout, retry_timeout=args.retry_timeout,
                          retries=args.retries)
        all_stats = mc.run(timeout=args.timeout, idle_timeout=args.idle_timeout)
        for k, st in enumerate(all_stats):
            print(f"-- channel {k} (journal in {args.out}/channel{k}/)")
            print_capture(st, args.out)
        print(f"merged Parquet in {args.out}/ ({mc.output.late} events arrived behind the merge)")
        return 0 if all(st.end_of_session and not st.gaps_declared for st in all_stats) else 1
    cap = Capture(args.line_a, args.line_b or None, interface=args.interface, rerequest=args.rerequest or None,
                  out=args.out, decode_date=None if args.no_parquet else args.date,
                  gap_timeout=args.gap_timeout,
                  retry_timeout=args.retry_timeout, retries=args.retries)
    try:
        st = cap.run(timeout=args.timeout, idle_timeout=args.idle_timeout)
    except KeyboardInterrupt:
        cap.close()
        st = cap.stats
        print("interrupted: journal and Parquet flushed", file=sys.stderr)
    print_capture(st, args.out)
    return 0 if st.end_of_session and not st.gaps_declared else 1


def print_capture(st, out) -> None:
    print(f"received      line A {st.packets_a:,} packets, line B {st.packets_b:,} packets "
          f"({st.duplicates:,} duplicates dropped, {st.malformed:,} malformed)")
    print(f"delivered     {st.messages:,} messages in {st.accepted:,} packets, sequences "
          f"{st.first_sequence}..{(st.next_sequence or 1) - 1}, in {st.seconds:.2f} s")
    print(f"recovered     {st.recovered_messages:,} messages in {st.recovered_packets:,} packets "
          f"from the re-request server ({st.rerequests:,} requests)")
    lost = ", ".join(f"{a}..{a + c - 1}" for a, c in st.gaps_declared[:5]) or "none"
    print(f"declared lost {st.messages_lost:,} messages in {len(st.gaps_declared)} gap(s): {lost}")
    print(f"end of session {'seen' if st.end_of_session else 'NOT seen'}; journal and Parquet in {out}/")


def cmd_journal_verify(args) -> int:
    from ingest.journal import verify
    rep = verify(args.dir)
    print(f"{args.dir}: {rep.blocks:,} blocks, {rep.packets:,} packets, {rep.gaps:,} gaps, "
          f"{rep.bytes_raw:,} bytes raw, {rep.bytes_compressed:,} compressed")
    for p in rep.problems:
        print(f"  problem: {p}")
    print("OK: every block's hash and the chain check out" if rep.ok else "FAILED")
    return 0 if rep.ok else 1


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
    s = sub.add_parser("book", help="the book after every order event, straight from ITCH, to Parquet")
    s.add_argument("file")
    s.add_argument("--out", required=True, help="output Parquet file")
    s.add_argument("--levels", type=int, default=10, help="price levels a side (default 10)")
    s.add_argument("--date", help="session date YYYY-MM-DD (default: from a NASDAQ file name)")
    s.add_argument("--errors", choices=["raise", "skip"], default="raise")
    s.set_defaults(func=cmd_book)

    s = sub.add_parser("generate", help="write a generated ITCH 5.0 session")
    s.add_argument("file")
    s.add_argument("--messages", type=int, default=1_000_000)
    s.add_argument("--instruments", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--date", default="2024-03-15")
    s.add_argument("--compress", choices=["gzip", "zstd"])
    s.set_defaults(func=cmd_generate)
    s = sub.add_parser("simulate", help="send a generated session on MoldUDP64 multicast lines A and B")
    s.add_argument("--line-a", default="239.192.1.1:31001", help="GROUP:PORT of line A")
    s.add_argument("--line-b", default="239.192.1.2:31002", help="GROUP:PORT of line B ('' for none)")
    s.add_argument("--interface", default="127.0.0.1", help="local address of the sending interface")
    s.add_argument("--rerequest", default="127.0.0.1:31009", help="HOST:PORT of the re-request server")
    s.add_argument("--instruments", type=int, default=100)
    s.add_argument("--messages", type=int, default=1_000_000)
    s.add_argument("--rate", type=float, default=0.0, help="messages/s (0: as fast as possible)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--date", default="2024-03-15")
    s.add_argument("--session", default="TICKPIPE01", help="10-character MoldUDP64 session")
    s.add_argument("--loss-a", type=float, default=0.0)
    s.add_argument("--loss-b", type=float, default=0.0)
    s.add_argument("--dup", type=float, default=0.0)
    s.add_argument("--reorder", type=float, default=0.0)
    s.add_argument("--lose-both", type=int, default=0, help="packets to drop on both lines (recovered by re-request)")
    s.add_argument("--delay", type=float, default=0.5, help="seconds to wait before sending")
    s.add_argument("--linger", type=float, default=2.0, help="seconds to keep answering re-requests")
    s.add_argument("--input", help="send this BinaryFILE instead of generating a session")
    s.add_argument("--binaryfile", help="write the session as a BinaryFILE instead of sending")
    s.add_argument("--pcap", help="write the session as a pcap instead of sending")
    s.set_defaults(func=cmd_simulate)
    s = sub.add_parser("capture", help="capture lines A and B into a journal and normalized Parquet")
    s.add_argument("--line-a", default="239.192.1.1:31001")
    s.add_argument("--line-b", default="239.192.1.2:31002")
    s.add_argument("--interface", default="127.0.0.1")
    s.add_argument("--rerequest", default="127.0.0.1:31009")
    s.add_argument("--out", required=True)
    s.add_argument("--date", default="2024-03-15", help="session date YYYY-MM-DD (for timestamps)")
    s.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    s.add_argument("--idle-timeout", type=float, default=10.0)
    s.add_argument("--gap-timeout", type=float, default=0.05)
    s.add_argument("--retry-timeout", type=float, default=0.1)
    s.add_argument("--retries", type=int, default=3)
    s.add_argument("--no-parquet", action="store_true", help="journal only (decode later from it)")
    s.add_argument("--channel", action="append", metavar="LINE_A,LINE_B,REREQUEST",
                   help="capture several channels (repeat); Parquet merged in ts_event order")
    s.set_defaults(func=cmd_capture)
    s = sub.add_parser("journal", help="raw journal tools")
    jsub = s.add_subparsers(dest="journal_cmd", required=True)
    j = jsub.add_parser("verify", help="check every block's hash, the chain and the index")
    j.add_argument("dir")
    j.set_defaults(func=cmd_journal_verify)
    from tickpipe.store_cli import add_parser as add_store
    add_store(sub)
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
