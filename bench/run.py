"""ITCH 5.0 decode throughput: tickpipe against a memory copy, itchcpp and pure-Python itchfeed.

All measurements run on the same bytes in the same process (itchfeed in a child process, so
its import cannot pick the C++ backend): a generated NASDAQ BinaryFILE session, cached under
``bench/out/``. Each benchmark is warmed up once (numba loads or compiles its kernels there),
then timed ``--repeats`` times; the table shows the median and the best run.

    .venv/bin/python bench/run.py --size quick --json bench/out/quick.json
    .venv/bin/python bench/run.py --size full
    .venv/bin/python bench/run.py --size full --only read_itch,itchcpp

Columns: messages and bytes parsed per run; Mmsg/s and MB/s (decimal) from the median;
``x itchcpp``: message rate over itchcpp's; ``% memcpy``: MB/s over the memory copy's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import (MB, SESSION_DATE, SIZES, BENCH_DIR, Size, Timing, itchcpp_books,  # noqa: E402
                    machine_info, measure, message_ends, session_bytes)


@dataclass
class Context:
    size: Size
    data: bytes
    path: Path
    n_messages: int
    ends: np.ndarray            # byte offset past each message
    repeats: int


@dataclass
class Result:
    name: str
    label: str
    messages: int
    nbytes: int
    timing: Timing | None
    note: str = ""
    error: str = ""

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.timing.median

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.timing.median / MB


def _rows(x) -> int:
    """Row count of one decoded output: a record array, a tuple of columns or an Arrow batch."""
    if isinstance(x, np.ndarray):
        return x.shape[0]
    if hasattr(x, "num_rows"):
        return x.num_rows
    return len(x[0])


def _check_counts(rows: dict, n_messages: int) -> str:
    """Every message yields exactly one row outside ``trades`` (``rows``: count per table)."""
    got = sum(v for k, v in rows.items() if k != "trades")
    return "" if got == n_messages else f"CHECK FAILED: {got} rows for {n_messages} messages"


def _check_rows(out: dict, n_messages: int) -> str:
    """:func:`_check_counts` of decoded outputs (record arrays, column tuples, Arrow batches)."""
    return _check_counts({k: _rows(v) for k, v in out.items()}, n_messages)


# ---------------------------------------------------------------------------------------------
# benchmarks

def bench_memcpy(ctx: Context) -> Result:
    src = np.frombuffer(ctx.data, np.uint8)
    dst = np.empty_like(src)
    dst[:] = 0                                  # fault the pages in before timing
    t, _ = measure(lambda: np.copyto(dst, src), ctx.repeats)
    ok = "" if np.array_equal(dst, src) else "CHECK FAILED: copy differs"
    return Result("memcpy", "memory copy of the input (np.copyto, preallocated)",
                  ctx.n_messages, len(ctx.data), t, "ceiling", ok)


def bench_frame(ctx: Context) -> Result:
    from normalize import itch_decode as D
    from normalize.itch_spec import MESSAGE_LENGTH
    buf = np.frombuffer(ctx.data, np.uint8)
    offsets = np.empty(ctx.n_messages + 1, np.int64)
    types = np.empty(ctx.n_messages + 1, np.uint8)
    counts = np.zeros(256, np.int64)
    sk_at, sk_why = np.empty(1024, np.int64), np.empty(1024, np.uint8)

    def run():
        counts[:] = 0
        return D.frame_binaryfile(buf, 0, buf.shape[0], MESSAGE_LENGTH, offsets, types, counts,
                                  False, sk_at, sk_why, np.empty(0, np.int64))

    t, (n, pos, status, _, _) = measure(run, ctx.repeats)
    ok = "" if (n, pos, status) == (ctx.n_messages, buf.shape[0], D.OK) else \
        f"CHECK FAILED: framed {n} messages, status {status}"
    return Result("frame", "tickpipe framing only (frame_binaryfile kernel)", n, len(ctx.data), t,
                  "outputs preallocated", ok)


def bench_decode(ctx: Context) -> Result:
    from normalize.reader import (DEFAULT_BATCH, DEFAULT_CHUNK, DecodeStats, SessionDecoder,
                                  decoded_batches, resolve_date)
    clock = resolve_date(None, SESSION_DATE)

    def run():
        sess = SessionDecoder(clock)
        out: dict[str, int] = collections.Counter()
        for cols in decoded_batches(ctx.data, sess, batch_size=DEFAULT_BATCH,
                                    chunk_bytes=DEFAULT_CHUNK, skip=False, stats=DecodeStats()):
            for k, v in sess.resolve_batch(cols).items():
                out[k] += _rows(v)
        return out

    t, out = measure(run, ctx.repeats)
    ok = _check_counts(out, ctx.n_messages)
    return Result("decode", "tickpipe decode, no Arrow (framed_batches + SessionDecoder.decode)",
                  ctx.n_messages, len(ctx.data), t, "framing + decode + order map", ok)


def bench_read_itch(ctx: Context) -> Result:
    import normalize
    t, tables = measure(lambda: normalize.read_itch(ctx.data, date=SESSION_DATE), ctx.repeats)
    return Result("read_itch", "tickpipe read_itch end to end (to Arrow tables)",
                  ctx.n_messages, len(ctx.data), t, "+ Arrow tables", _check_rows(tables, ctx.n_messages))


def bench_read_itch_one_thread(ctx: Context) -> Result:
    import normalize
    t, tables = measure(lambda: normalize.read_itch(ctx.data, date=SESSION_DATE, threads=1),
                        ctx.repeats)
    return Result("read_itch_1t", "tickpipe read_itch(threads=1): one core, order map included",
                  ctx.n_messages, len(ctx.data), t, "read_itch on one thread",
                  _check_rows(tables, ctx.n_messages))


def bench_read_itch_unresolved(ctx: Context) -> Result:
    import normalize
    t, tables = measure(lambda: normalize.read_itch(ctx.data, date=SESSION_DATE, resolve=False),
                        ctx.repeats)
    return Result("unresolved", "tickpipe read_itch(resolve=False): normalized Arrow, no order map",
                  ctx.n_messages, len(ctx.data), t, "read_itch without the order map",
                  _check_rows(tables, ctx.n_messages))


def bench_read_itch_unresolved_fresh(ctx: Context) -> Result:
    import normalize
    from normalize import arena
    saved, arena.POOL = arena.POOL, arena.ArenaPool(max_idle_bytes=0)    # no recycled memory
    try:
        t, tables = measure(lambda: normalize.read_itch(ctx.data, date=SESSION_DATE, resolve=False),
                            ctx.repeats)
    finally:
        arena.POOL = saved
    return Result("unres_fresh", "tickpipe read_itch(resolve=False), every column in fresh memory",
                  ctx.n_messages, len(ctx.data), t, "as unresolved, no recycled memory",
                  _check_rows(tables, ctx.n_messages))


def bench_stream_unresolved(ctx: Context) -> Result:
    import normalize

    def run():
        rows = collections.Counter()
        for batches in normalize.iter_itch(ctx.data, date=SESSION_DATE, resolve=False):
            for k, b in batches.items():
                rows[k] += b.num_rows
        return rows

    t, rows = measure(run, ctx.repeats)
    ok = _check_counts(rows, ctx.n_messages)
    return Result("stream", "tickpipe iter_itch(resolve=False): batches consumed and dropped",
                  ctx.n_messages, len(ctx.data), t, "streaming, no order map", ok)


def _book_run(ctx: Context):
    """tickpipe's ITCH bytes -> BBO after every event, as one call."""
    from kernels.book_itch import book_itch
    return lambda: book_itch(ctx.data, levels=1, date=SESSION_DATE)


def _itchcpp_book_run(ctx: Context):
    """itchcpp's BookManager over the same bytes, every symbol tracked, as one call."""
    return lambda: itchcpp_books(ctx.data, ctx.size.n_instruments)


def bench_book(ctx: Context) -> Result:
    t, book = measure(_book_run(ctx), ctx.repeats)
    ok = "" if book.num_rows > 0.99 * ctx.n_messages else f"CHECK FAILED: {book.num_rows} book rows"
    return Result("book", "tickpipe ITCH bytes -> best bid/offer after every event (one core)",
                  ctx.n_messages, len(ctx.data), t, "kernels.book_itch, levels=1", ok)


def bench_book_mbo(ctx: Context) -> Result:
    import normalize
    from kernels.book import BookBuilder

    def run():
        mbo = normalize.read_itch(ctx.data, date=SESSION_DATE, resolve=False, threads=1)["mbo"]
        return BookBuilder(levels=1).apply(mbo)

    t, book = measure(run, ctx.repeats)
    ok = "" if book.num_rows > 0.99 * ctx.n_messages else f"CHECK FAILED: {book.num_rows} book rows"
    return Result("book_mbo", "tickpipe ITCH bytes -> mbo table -> BBO after every event (one core)",
                  ctx.n_messages, len(ctx.data), t, "decode, then kernels.book, levels=1", ok)


def bench_book_parallel(ctx: Context) -> Result:
    import normalize
    from kernels.book import _usable_cores, reconstruct

    def run():
        mbo = normalize.read_itch(ctx.data, date=SESSION_DATE, resolve=False, threads=1)["mbo"]
        return reconstruct(mbo, levels=1, device="cpu")

    t, book = measure(run, ctx.repeats)
    ok = "" if book.num_rows > 0.99 * ctx.n_messages else f"CHECK FAILED: {book.num_rows} book rows"
    return Result("book_par", "tickpipe ITCH bytes -> BBO after every event, book parallel over "
                  "instruments on every core", ctx.n_messages, len(ctx.data), t,
                  f"decode + reconstruct, {_usable_cores()} threads", ok)


def bench_itchcpp_book(ctx: Context) -> Result:
    t, bm = measure(_itchcpp_book_run(ctx), ctx.repeats)
    ok = "" if bm.book_count() == ctx.size.n_instruments else f"CHECK FAILED: {bm.book_count()} books"
    return Result("itchcpp_book", "itchcpp BookManager.process_stream (C++ L3 books, BBO)",
                  ctx.n_messages, len(ctx.data), t, "peer for the book row", ok)


def paired_book_ratios(ctx: Context, pairs: int) -> list[float]:
    """tickpipe's ``book`` over itchcpp's ``BookManager``, timed in alternation: each pair
    runs both back to back, so both see the same machine (this VM's speed drifts by a quarter
    over minutes, more than the rows' own spread). One ratio per pair, sorted."""
    ours, peer = _book_run(ctx), _itchcpp_book_run(ctx)
    ours(), peer()                                  # warm-up
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        peer()
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
    return sorted(ratios)


def bench_itchcpp(ctx: Context) -> Result:
    from itchcpp import MessageParser
    data = ctx.data
    n = sum(1 for _ in MessageParser().parse_stream(data))      # count once (also warms up)
    t, _ = measure(lambda: collections.deque(MessageParser().parse_stream(data), maxlen=0),
                   ctx.repeats, warmup=0)
    ok = "" if n == ctx.n_messages else f"CHECK FAILED: parsed {n} of {ctx.n_messages} messages"
    return Result("itchcpp", "itchcpp MessageParser.parse_stream (C++, one object per message)",
                  n, len(ctx.data), t, "every message consumed", ok)


def bench_itchfeed(ctx: Context) -> Result:
    k = min(ctx.size.itchfeed_messages, ctx.n_messages)
    nbytes = int(ctx.ends[k - 1])
    repeats = max(1, min(ctx.repeats, 3))
    worker = BENCH_DIR / "itchfeed_worker.py"
    env = dict(os.environ, ITCH_NO_CPP="1")
    proc = subprocess.run([sys.executable, str(worker), str(ctx.path), str(nbytes), str(repeats)],
                          capture_output=True, text=True, env=env, timeout=1800)
    label = "itchfeed parse_stream, pure Python (ITCH_NO_CPP=1, subprocess)"
    try:
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        got = {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    if "error" in got:
        return Result("itchfeed", label, k, nbytes, None, error=got["error"])
    ok = "" if got["messages"] == k else f"CHECK FAILED: parsed {got['messages']} of {k} messages"
    note = f"first {k:,} messages only" if k < ctx.n_messages else ""
    return Result("itchfeed", label, got["messages"], got["bytes"], Timing(got["times"]), note, ok)


BENCHMARKS = {
    "memcpy": bench_memcpy,
    "frame": bench_frame,
    "decode": bench_decode,
    "read_itch": bench_read_itch,
    "read_itch_1t": bench_read_itch_one_thread,
    "unresolved": bench_read_itch_unresolved,
    "unres_fresh": bench_read_itch_unresolved_fresh,
    "stream": bench_stream_unresolved,
    "book": bench_book,
    "book_mbo": bench_book_mbo,
    "book_par": bench_book_parallel,
    "itchcpp_book": bench_itchcpp_book,
    "itchcpp": bench_itchcpp,
    "itchfeed": bench_itchfeed,
}


# ---------------------------------------------------------------------------------------------
# report

def _table(results: list[Result], n_total: int) -> list[str]:
    by = {r.name: r for r in results if r.timing is not None}
    cpp = by.get("itchcpp")
    mem = by.get("memcpy")
    head = ["benchmark", "messages", "MB", "median s", "best s", "Mmsg/s", "MB/s", "ns/msg",
            "x itchcpp", "% memcpy", "note"]
    rows = []
    for r in results:
        if r.timing is None:
            rows.append([r.name, f"{r.messages:,}", f"{r.nbytes / MB:.1f}", "-", "-", "-", "-", "-",
                         "-", "-", f"ERROR: {r.error}"])
            continue
        rows.append([
            r.name, f"{r.messages:,}", f"{r.nbytes / MB:.1f}", f"{r.timing.median:.4f}",
            f"{r.timing.best:.4f}", f"{r.msgs_per_s / 1e6:.2f}", f"{r.mb_per_s:,.0f}",
            f"{1e9 / r.msgs_per_s:.1f}",
            f"{r.msgs_per_s / cpp.msgs_per_s:.2f}" if cpp else "-",
            f"{100 * r.mb_per_s / mem.mb_per_s:.1f}" if mem else "-",
            "; ".join(x for x in (r.note, r.error) if x),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    right = set(range(1, len(head) - 1))

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
    feed = by.get("itchfeed")
    if feed and feed.messages < n_total:
        out.append(f"itchfeed parsed a prefix; at its rate the whole session would take "
                   f"{n_total / feed.msgs_per_s:.1f} s (extrapolated, not measured).")
    return out


def _result_json(r: Result, cpp: Result | None, mem: Result | None) -> dict:
    d = {"name": r.name, "label": r.label, "messages": r.messages, "bytes": r.nbytes,
         "note": r.note, "error": r.error}
    if r.timing is not None:
        d.update(times_s=r.timing.times, median_s=r.timing.median, best_s=r.timing.best,
                 msgs_per_s=r.msgs_per_s, mb_per_s=r.mb_per_s,
                 x_itchcpp=r.msgs_per_s / cpp.msgs_per_s if cpp and cpp.timing else None,
                 frac_memcpy=r.mb_per_s / mem.mb_per_s if mem and mem.timing else None)
    return d


def _exe() -> str:
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(BENCH_DIR.parent))
    except ValueError:
        return exe.name


def _parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(BENCHMARKS)
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    bad = [n for n in names if n not in BENCHMARKS]
    if bad:
        raise SystemExit(f"error: The `--only` was not a valid benchmark name, was {bad[0]!r}. "
                         f"Use any of {', '.join(BENCHMARKS)}.")
    return [n for n in BENCHMARKS if n in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="quick",
                   help="quick: %(q)s messages; full: %(f)s messages" %
                   {"q": f"{SIZES['quick'].n_messages:,}", "f": f"{SIZES['full'].n_messages:,}"})
    p.add_argument("--only", action="append", metavar="NAME",
                   help=f"run only these benchmarks (comma-separated or repeated): {', '.join(BENCHMARKS)}")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--repeats", type=int, help="timed runs per benchmark (default: per size)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    args = p.parse_args(argv)
    names = _parse_only(args.only)
    size = SIZES[args.size]
    repeats = args.repeats or size.repeats
    if repeats < 1:
        raise SystemExit(f"error: The `--repeats` must be at least 1, was {repeats}.")

    wall0 = time.perf_counter()
    info = machine_info()
    t0 = time.perf_counter()
    data, path, generated = session_bytes(size.n_messages, size.n_instruments, args.seed)
    t_input = time.perf_counter() - t0
    ends = message_ends(data)
    ctx = Context(size, data, path, int(ends.shape[0]), ends, repeats)

    print(f"tickpipe ITCH 5.0 decode benchmark  {info['date']}")
    print(f"cpu: {info['cpu']}  cores: {info['cores']} ({info['cores_usable']} usable)  "
          f"memory: {info['memory_gib']} GiB  load avg: {' '.join(map(str, info['load_avg']))}")
    print(f"python {info['python']}  numpy {info['numpy']}  numba {info['numba']}  "
          f"pyarrow {info['pyarrow']}  itchcpp {info['itchcpp']}  itchfeed {info['itchfeed']}  "
          f"git {info['git'] or '?'}")
    print(f"input: {path.relative_to(BENCH_DIR.parent)}  {ctx.n_messages:,} messages  "
          f"{len(data) / MB:.1f} MB  {size.n_instruments} instruments  seed {args.seed}  "
          f"({'generated' if generated else 'cached'} in {t_input:.1f} s)")
    print(f"size {size.name}: median of {repeats} timed runs after a warm-up; read_itch runs its order map on a second thread (read_itch_1t: one thread), every other row on one")
    print(flush=True)

    results = []
    for name in names:
        t0 = time.perf_counter()
        try:
            r = BENCHMARKS[name](ctx)
        except Exception as e:       # report and go on: one broken benchmark keeps the others
            r = Result(name, name, 0, 0, None, error=f"{type(e).__name__}: {e}")
        results.append(r)
        status = f"{r.msgs_per_s / 1e6:.2f} Mmsg/s" if r.timing else f"ERROR {r.error}"
        print(f"  {name:<10} {status}  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)

    print("\n".join(_table(results, ctx.n_messages)))
    by = {r.name: r for r in results if r.timing is not None}
    cpp, mem = by.get("itchcpp"), by.get("memcpy")
    cbook = by.get("itchcpp_book")
    paired: list[float] = []
    if cbook:
        print()
        for name, what in (("book", "ITCH bytes to BBO, one core"),
                           ("book_mbo", "ITCH bytes to mbo table to BBO, one core"),
                           ("book_par", "the same, book on every core")):
            r = by.get(name)
            if r:
                print(f"{what:<48} {r.msgs_per_s / cbook.msgs_per_s:5.1f}x itchcpp BookManager "
                      f"({r.msgs_per_s / 1e6:.1f} vs {cbook.msgs_per_s / 1e6:.2f} Mmsg/s)")
        if "book" in by:
            paired = paired_book_ratios(ctx, repeats)
            print(f"{'the first, timed in alternation with the peer':<48} "
                  f"{statistics.median(paired):5.1f}x itchcpp BookManager (median of {repeats} "
                  f"pairs; {paired[0]:.2f}-{paired[-1]:.2f}x)")
    if cpp and cpp.timing is not None:
        print()
        for name, what in (("stream", "decode to normalized columns, streaming"),
                           ("unresolved", "decode to normalized columns, whole file"),
                           ("unres_fresh", "the same, every column in fresh memory"),
                           ("read_itch_1t", "read_itch with the order map, one core"),
                           ("read_itch", "read_itch with the order map on a second core")):
            r = by.get(name)
            if r and r.timing is not None:
                print(f"{what:<48} {r.msgs_per_s / cpp.msgs_per_s:5.1f}x itchcpp "
                      f"({r.msgs_per_s / 1e6:.1f} vs {cpp.msgs_per_s / 1e6:.2f} Mmsg/s)")
    wall = time.perf_counter() - wall0
    print(f"wall time {wall:.1f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join([_exe(), *sys.argv]),
            "machine": info,
            "size": {"name": size.name, "n_messages": ctx.n_messages, "bytes": len(data),
                     "n_instruments": size.n_instruments, "seed": args.seed, "repeats": repeats,
                     "input": str(path)},
            "results": [_result_json(r, cpp, mem) for r in results],
            "book_over_itchcpp_paired": paired,
            "wall_s": wall,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
