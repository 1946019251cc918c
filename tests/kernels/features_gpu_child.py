"""Run under NUMBA_ENABLE_CUDASIM=1 by test_features_gpu.py: bar features (``itch``, ``lobster``)
and per-event features (``per_event``) on the GPU path (CUDA simulator) against the CPU, table
for table.

    NUMBA_ENABLE_CUDASIM=1 python features_gpu_child.py itch|lobster|per_event

Prints ``AGREE <case> <rows>`` per case; exits 1 at the first difference. Integer and timestamp
columns must be equal, float columns equal value for value with NaN in the same places.
"""

import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import normalize  # noqa: E402
from kernels import features as F  # noqa: E402
from kernels.book import reconstruct  # noqa: E402

from agree import fail, same_tables  # noqa: E402  (this directory)

LOBSTER = ROOT / "tests" / "data" / "lobster"


def exercised(case: str, t: pa.Table, columns) -> None:
    """The case is no proof unless the features it is about have values."""
    for name in columns:
        if not np.isfinite(t.column(name).to_numpy()).any():
            fail(f"{case}: no finite {name}; pick an input that exercises it")


def agree(case: str, mbo, book, **kw) -> pa.Table:
    want = F.compute(mbo, book=book, device="cpu", **kw)
    same_tables(case, want, F.compute(mbo, book=book, device="gpu", **kw))
    return want


def itch() -> None:
    from ingest.simulator import generate_session
    s = generate_session(2_500, 6, seed=11)
    data = normalize.read_itch(s.to_binaryfile(), date=s.date)
    mbo = data["mbo"]
    book = reconstruct(mbo, levels=5, device="cpu")
    t = agree("itch 1s", mbo, book, bar="1s", realized_horizon="2s")
    exercised("itch 1s", t, ("realized_variance", "bipower_variation", "kyle_lambda", "vpin",
                             "effective_spread", "realized_spread", "amihud"))
    if len(np.unique(t.column("instrument_id").to_numpy())) < 5:
        fail("itch 1s: fewer than 5 instruments")
    t = agree("itch volume:300", mbo, book, bar="volume:300", realized_horizon=0.5,
              bucket_volume=200)
    exercised("itch volume:300", t, ("vpin", "realized_spread", "kyle_lambda"))
    agree("itch 1min trades table", mbo, book, bar="1min", trades=data["trades"])
    # without a book, device="gpu" rebuilds it with the GPU book too
    want = F.compute(mbo, bar="5s", device="cpu")
    same_tables("itch 5s, book built on the device", want, F.compute(mbo, bar="5s", device="gpu"))


def _lobster_mbo():
    """The committed AAPL LOBSTER sample (with its book) as mbo, or None (SKIP printed)."""
    stem = "AAPL_2012-06-21_34200000_57600000"
    msg = LOBSTER / f"{stem}_message_10.head999.csv"
    if not msg.exists():
        print("SKIP lobster: sample not committed")
        return None
    return normalize.read_lobster(msg, orderbook_csv=LOBSTER / f"{stem}_orderbook_10.head999.csv",
                                  date="2012-06-21", symbol="AAPL")


def lobster() -> None:
    from kernels import features_gpu as G
    mbo = _lobster_mbo()
    if mbo is None:
        return
    book = reconstruct(mbo, levels=5, device="cpu")
    t = agree("lobster 1s", mbo, book, bar="1s", realized_horizon="1s", bucket_volume=500)
    exercised("lobster 1s", t, ("vpin", "realized_spread", "realized_variance"))
    agree("lobster volume:200", mbo, book, bar="volume:200")
    # GpuBars as a benchmark drives it: run twice on the same device arrays, same bars
    inst = mbo.column("instrument_id").to_numpy().astype(np.uint32)
    order, starts, _ = F._group(inst)
    n = mbo.num_rows
    rng = np.random.default_rng(5)
    ts = mbo.column("ts_event").cast(pa.int64()).to_numpy()
    mid = F._mid(book)
    trade = rng.random(n) < 0.3
    price = np.where(trade, mid + 0.01, 0.0)
    size = np.where(trade, rng.integers(1, 300, n).astype(np.float64), 0.0)
    sign = np.where(trade, rng.choice([-1.0, 0.0, 1.0], n), 0.0)
    bucket_v = np.full(starts.size - 1, 400.0)
    args = (order, starts, ts, mid, trade, price, size, sign, 0, 10**9, 3 * 10**9, bucket_v)
    o = [np.empty(n, np.int64) for _ in range(3)] + [np.empty((n, F.N_ACC)), np.empty((n, 3), np.int64)]
    nb = F._bar_kernel(*args[:8], 0, np.int64(10**9), np.int64(3 * 10**9), bucket_v, *o)
    g = G.GpuBars(*args).to_device()
    for rep in range(2):
        if g.run() != nb:
            fail(f"GpuBars run {rep}: {g.nb} bars, the CPU kernel {nb}")
        got = g.fetch()
        for k, (a, b) in enumerate(zip(o, got[:5])):
            if not np.array_equal(a[:nb], b, equal_nan=True):
                fail(f"GpuBars run {rep}: output {k}")
    print(f"AGREE GpuBars twice {nb}")


def per_event() -> None:
    """per_event on both devices: a generated session (several instruments, 5 levels), the same
    book in several chunks with float64 sizes, and the LOBSTER sample."""
    from ingest.simulator import generate_session
    s = generate_session(3_000, 6, seed=11)
    book = reconstruct(normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"], levels=5,
                       device="cpu")
    if len(np.unique(book.column("instrument_id").to_numpy())) < 5:
        fail("per_event itch: fewer than 5 instruments")
    want = F.per_event(book, device="cpu")
    same_tables("per_event itch", want, F.per_event(book, device="gpu"))
    exercised("per_event itch", want, F.PER_EVENT_COLUMNS)
    for name in F.PER_EVENT_COLUMNS[:-1]:      # the empty sides are exercised too
        if not np.isnan(want.column(name).to_numpy()).any():
            fail(f"per_event itch: no NaN {name}; pick an input with an empty side")
    if not (want.column("ofi").to_numpy() != 0).any():
        fail("per_event itch: ofi all 0")
    # chunks (an instrument's rows spread over them) and float64 sizes take the other host path
    cut = book.num_rows // 3
    chunked = pa.concat_tables([book.slice(0, cut), book.slice(cut, cut), book.slice(2 * cut)])
    i = chunked.column_names.index("ask_sz_3")
    chunked = chunked.set_column(i, "ask_sz_3", chunked.column(i).cast(pa.float64()))
    if chunked.column("bid_px_0").num_chunks < 3:
        fail("per_event chunked: one chunk")
    got = F.per_event(chunked, device="gpu")
    same_tables("per_event chunked float sizes", F.per_event(chunked, device="cpu"), got)
    same_tables("per_event chunked = whole", want, got)
    mbo = _lobster_mbo()
    if mbo is None:
        return
    book = reconstruct(mbo, levels=10, device="cpu")       # per_event sums the first 5 levels
    want = F.per_event(book, device="cpu")
    same_tables("per_event lobster", want, F.per_event(book, device="gpu"))
    exercised("per_event lobster", want, F.PER_EVENT_COLUMNS)


if __name__ == "__main__":
    if not numba.config.ENABLE_CUDASIM:
        sys.exit("run with NUMBA_ENABLE_CUDASIM=1")
    {"itch": itch, "lobster": lobster, "per_event": per_event}[sys.argv[1]]()
