"""GPU benchmark: order-book reconstruction and bar features on the device, against the CPU.

    .venv/bin/python bench/gpu.py                                  # 100 M events, 10,000 instruments
    .venv/bin/python bench/gpu.py --events 20000000 --instruments 2000
    NUMBA_ENABLE_CUDASIM=1 .venv/bin/python bench/gpu.py --events 3000 --instruments 6 --no-results

Input: a generated ITCH session (``ingest.simulator``) decoded to ``mbo`` without the order map,
then tiled: copy ``c`` gets instrument ids ``+ c * instruments_per_copy`` and order references
``+ c * 2**40``, so the copies are independent markets and the whole is ``--events`` events over
``--instruments`` instruments (each copy's events in their own order, copies one after another).

Book (``kernels.book_gpu.GpuBook``, one CUDA thread per instrument), timed apart:

* ``prepare``: grouping by instrument on the host (stable sort) and sizing the tables;
* ``to device``: copying the event columns over;
* ``kernel``: the reconstruction alone, data already on the device (median of ``--repeats``);
* ``to host``: copying the book (top ``--levels`` levels, every event) back.

"with transfers" is prepare + to device + kernel + to host. The CPU row is
``kernels.book.BookBuilder`` on one core over the same events, and the GPU book is checked equal
to it (every cell). Features: ``kernels.features.compute`` with ``device="gpu"`` and ``"cpu"`` on
the same events and books (1-second bars), checked equal; the kernel alone is timed too.

Without a CUDA device (and without the simulator) the script says so and exits 0. With
``--results`` (the default) the table, the device name and the date go to bench/RESULTS.md
(replacing the previous "GPU" section) and JSON to bench/out/gpu.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import OUT_DIR, REPO, SESSION_DATE, machine_info  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## GPU: books and features on the device (issue 4)"
COLS = ("action", "order_id", "new_order_id", "price", "size", "side", "instrument_id", "ts_event",
        "sequence", "flags")


def _device_name() -> str | None:
    from numba import config, cuda
    if config.ENABLE_CUDASIM:
        return "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if not cuda.is_available():
            return None
        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None


def tiled_events(n_events: int, n_instruments: int, seed: int = 7, copies: int | None = None):
    """``mbo`` columns of about ``n_events`` events over ``n_instruments`` instruments, as
    ``copies`` independent copies of one generated session (default: one per 1,000
    instruments from 10 M events up, where generating one big session would take minutes)."""
    import normalize
    from ingest.simulator import generate_session
    if copies is None:
        copies = max(1, n_instruments // 1000) if n_events >= 10_000_000 else 1
    per_inst = max(1, n_instruments // copies)
    t0 = time.perf_counter()
    s = generate_session(max(1, n_events // copies), per_inst, seed=seed, date=SESSION_DATE)
    mbo = normalize.read_itch(s.to_binaryfile(), date=SESSION_DATE, resolve=False)["mbo"]
    base = {c: mbo.column(c).to_numpy() if c != "ts_event" else
            mbo.column(c).cast("int64").to_numpy() for c in COLS}
    n1 = base["action"].shape[0]
    out = {c: np.empty(n1 * copies, v.dtype) for c, v in base.items()}
    for c in range(copies):
        sl = slice(c * n1, (c + 1) * n1)
        for name, v in base.items():
            out[name][sl] = v
        out["instrument_id"][sl] += np.uint32(c * per_inst)
        for name in ("order_id", "new_order_id"):
            v = out[name][sl]                    # a view: reference 0 (none) stays 0
            v[base[name] != 0] += np.uint64(c) << np.uint64(40)
        out["sequence"][sl] += np.uint64(c * n1)
    return out, copies, time.perf_counter() - t0


def _table(cols: dict):
    import pyarrow as pa
    from normalize import records as R
    arrays = []
    sch = R.arrow_schema("mbo")
    n = cols["action"].shape[0]
    for f in sch:
        if f.name in cols:
            v = cols[f.name]
            arrays.append(pa.array(v, pa.timestamp("ns", tz="UTC")) if f.name == "ts_event"
                          else pa.array(v, f.type))
        elif f.name == "ts_recv":
            arrays.append(pa.nulls(n, f.type))
        elif f.name == "mpid":
            arrays.append(pa.array(np.zeros((n, 4), np.uint8).view("S4").ravel(), f.type))
        else:
            arrays.append(pa.array(np.zeros(n, R.SCHEMAS["mbo"].fields[f.name][0]), f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def _median(xs):
    return float(np.median(xs)) if xs else float("nan")


def bench_book(cols: dict, levels: int, repeats: int, cpu: bool) -> tuple[list[dict], object]:
    from numba import cuda
    from kernels.book_gpu import GpuBook
    n = cols["action"].shape[0]
    rows = []
    t0 = time.perf_counter()
    g = GpuBook(cols, levels)
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    g.to_device()
    cuda.synchronize()
    t_h2d = time.perf_counter() - t0
    g.run()                                  # warm-up: compiles the kernel
    kern = []
    for _ in range(repeats):
        g.reset()
        cuda.synchronize()
        t0 = time.perf_counter()
        g.run()
        kern.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    out_px, out_sz, out_ct, tally = g.fetch()
    t_d2h = time.perf_counter() - t0
    t_kernel = _median(kern)
    total = t_prep + t_h2d + t_kernel + t_d2h
    rows.append(dict(what=f"book levels={levels}: kernel only", seconds=t_kernel, events=n))
    rows.append(dict(what=f"book levels={levels}: prepare (host grouping)", seconds=t_prep, events=n))
    rows.append(dict(what=f"book levels={levels}: to device", seconds=t_h2d, events=n))
    rows.append(dict(what=f"book levels={levels}: to host", seconds=t_d2h, events=n))
    rows.append(dict(what=f"book levels={levels}: with transfers", seconds=total, events=n))
    book = None
    if cpu:
        from kernels.book import BookBuilder
        table = _table(cols)
        t0 = time.perf_counter()
        book = BookBuilder(levels=levels).apply(table)
        t_cpu = time.perf_counter() - t0
        same = True
        for k in range(levels):
            for s, name in ((0, "bid"), (1, "ask")):
                same &= np.array_equal(book.column(f"{name}_px_{k}").to_numpy(), out_px[s, k])
                same &= np.array_equal(book.column(f"{name}_sz_{k}").to_numpy(), out_sz[s, k])
                same &= np.array_equal(book.column(f"{name}_ct_{k}").to_numpy(), out_ct[s, k])
        rows.append(dict(what=f"book levels={levels}: CPU, one core (BookBuilder)", seconds=t_cpu,
                         events=n, note="GPU book equals it" if same else "CHECK FAILED: books differ"))
    return rows, book


def render(rows: list[dict], head: list[str]) -> str:
    lines = head + ["", "| what | seconds | M events/s | note |", "|---|---:|---:|---|"]
    for r in rows:
        rate = r["events"] / r["seconds"] / 1e6 if r["seconds"] > 0 else float("inf")
        lines.append(f"| {r['what']} | {r['seconds']:.4f} | {rate:,.1f} | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def write_results(text: str, path: Path = RESULTS) -> None:
    """Put ``text`` (starting with SECTION) in place of the previous GPU section, or first."""
    old = path.read_text() if path.exists() else "# Benchmarks: results\n"
    start = old.find(SECTION)
    if start >= 0:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("\n" + old[end + 1:] if end >= 0 else "")
    else:
        first = old.find("\n## ")
        new = old[:first + 1] + text + "\n" + old[first + 1:] if first >= 0 else old + "\n" + text
    path.write_text(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--instruments", type=int, default=10_000)
    ap.add_argument("--levels", type=int, default=1, help="book levels written per event (default 1: BBO)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--garch-instruments", type=int, default=10_000)
    ap.add_argument("--garch-length", type=int, default=2_000)
    ap.add_argument("--no-cpu", dest="cpu", action="store_false", help="skip the CPU rows and checks")
    ap.add_argument("--no-results", dest="results", action="store_false",
                    help="do not write bench/RESULTS.md and bench/out/gpu.json")
    args = ap.parse_args(argv)
    device = _device_name()
    if device is None:
        print("bench/gpu.py: no CUDA device here (numba.cuda.is_available() is false); nothing to "
              "measure. Run it on a machine with an NVIDIA GPU, or with NUMBA_ENABLE_CUDASIM=1 "
              "on a small --events to check the code path.")
        return 0
    info = machine_info()
    cols, copies, t_gen = tiled_events(args.events, args.instruments)
    n = cols["action"].shape[0]
    n_inst = int(np.unique(cols["instrument_id"]).size)
    print(f"GPU benchmark on {device}: {n:,} events, {n_inst:,} instruments "
          f"({copies} copies of a generated session, built in {t_gen:.1f} s)")
    rows, book = bench_book(cols, args.levels, args.repeats, args.cpu)
    rows += bench_features(cols, book, args.repeats, args.cpu)
    rows += bench_garch(args.garch_instruments, args.garch_length, args.repeats, args.cpu)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"{SECTION} — {stamp}, {device}", "",
            f"`{' '.join([Path(sys.executable).name, 'bench/gpu.py', *(argv or sys.argv[1:])])}`: "
            f"{n:,} events over {n_inst:,} instruments; host {info.get('cpu', '?')}, "
            f"{info.get('cores', '?')} cores; git {info.get('git', '?')}. Kernel rows: median of "
            f"{args.repeats} runs after a warm-up, data already on the device."]
    text = render(rows, head)
    print(text)
    if args.results:
        write_results(text)
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUT_DIR / "gpu.json").write_text(json.dumps(
            dict(device=device, date=stamp, events=n, instruments=n_inst, rows=rows, machine=info),
            indent=2, default=str))
        print(f"wrote {RESULTS} and {OUT_DIR / 'gpu.json'}")
    return 0 if all("CHECK FAILED" not in r.get("note", "") for r in rows) else 1


def _same_bars(got, want) -> bool:
    """Equal tables, NaN equal to NaN; realized variance and bipower variation to 1e-12
    relative (the device's ``log`` may differ from the C library's in the last bits)."""
    if got.column_names != want.column_names or got.num_rows != want.num_rows:
        return False
    for name in want.column_names:
        a = got.column(name).to_numpy()
        b = want.column(name).to_numpy()
        if name in ("realized_variance", "bipower_variation"):
            ok = np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
        else:
            ok = np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        if not ok:
            return False
    return True


def bench_features(cols: dict, book, repeats: int, cpu: bool) -> list[dict]:
    """Bar features (1-second bars) on the GPU and, with ``cpu``, on the CPU; checked equal.

    The GPU part of ``compute`` (``kernels.features_gpu.GpuBars``) is timed apart: to device,
    the kernels alone (median of ``repeats``), to host."""
    from numba import cuda
    import kernels.features_gpu as FG
    from kernels import features as F
    from kernels.book import reconstruct
    table = _table(cols)
    if book is None or book.num_rows != table.num_rows:
        book = reconstruct(table, levels=5, device="auto")
    n = table.num_rows
    parts: dict[str, float] = {}
    plain = FG.bars_gpu

    def timed(*args):
        g = FG.GpuBars(*args)
        t0 = time.perf_counter()
        g.to_device()
        cuda.synchronize()
        parts["to device"] = time.perf_counter() - t0
        g.run()                                         # warm-up: compiles
        ks = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            g.run()
            ks.append(time.perf_counter() - t0)
        parts["kernel only"] = _median(ks)
        t0 = time.perf_counter()
        out = g.fetch()
        parts["to host"] = time.perf_counter() - t0
        return out

    FG.bars_gpu = timed
    try:
        F.compute(table, book=book, bar="1s", device="gpu")
    finally:
        FG.bars_gpu = plain
    t0 = time.perf_counter()
    got = F.compute(table, book=book, bar="1s", device="gpu")
    t_all = time.perf_counter() - t0
    rows = [dict(what=f"features, 1 s bars, GPU: {k}", seconds=v, events=n) for k, v in parts.items()]
    rows.append(dict(what="features, 1 s bars, GPU: compute() end to end", events=n, seconds=t_all,
                     note="host preparation, transfers and finishing included"))
    if cpu:
        t0 = time.perf_counter()
        want = F.compute(table, book=book, bar="1s", device="cpu")
        rows.append(dict(what="features, 1 s bars: CPU, one core", seconds=time.perf_counter() - t0,
                         events=n, note="GPU bars equal them" if _same_bars(got, want)
                         else "CHECK FAILED: bars differ"))
    return rows


def bench_garch(n_inst: int, length: int, repeats: int, cpu: bool) -> list[dict]:
    """GARCH(1,1) fits (normal errors) of ``n_inst`` simulated series on the GPU, timed apart
    (to device, the kernel alone as the median of ``repeats``, to host) and, with ``cpu``, on
    every CPU core; the fits are checked equal (likelihoods to 1e-9 relative, statuses and
    convergence the same)."""
    from forecast import simulate

    from kernels import garch as G
    from kernels.garch_gpu import fit_gpu
    r = simulate(n_inst, length)
    lo, n, st = G.series_extent(r)
    fit_gpu(r[:64], lo[:64], n[:64], st[:64], 0)                     # compile
    ks, tm = [], {}
    for _ in range(repeats):
        tm = {}
        out = fit_gpu(r, lo, n, st, 0, timings=tm)
        ks.append(tm["kernel"])
    what = f"GARCH(1,1) fits, {n_inst:,} x {length:,} returns, GPU"
    rows = [dict(what=f"{what}: to device", seconds=tm["to_device"], events=n_inst),
            dict(what=f"{what}: kernel only", seconds=_median(ks), events=n_inst),
            dict(what=f"{what}: to host", seconds=tm["to_host"], events=n_inst)]
    if cpu:
        t0 = time.perf_counter()
        want = G.garch11(r, device="cpu")
        t_cpu = time.perf_counter() - t0
        got = G._garch_table(np.arange(n_inst, dtype=np.uint32), out, "normal")
        same = (np.allclose(got.column("loglik").to_numpy(), want.column("loglik").to_numpy(),
                            rtol=1e-9, atol=0, equal_nan=True)
                and got.column("status").equals(want.column("status"))
                and got.column("converged").equals(want.column("converged")))
        rows.append(dict(what=f"GARCH(1,1) fits: CPU, every core", seconds=t_cpu, events=n_inst,
                         note="GPU fits equal them" if same else "CHECK FAILED: fits differ"))
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
