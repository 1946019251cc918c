"""Run under NUMBA_ENABLE_CUDASIM=1 by test_har.py and test_liquidity.py: the GPU paths of
:mod:`kernels.har`, :mod:`kernels.liquidity` and :mod:`kernels.evaluate` against the CPU.

    NUMBA_ENABLE_CUDASIM=1 python forecast_gpu_child.py har|liquidity|evaluate ...

Prints ``AGREE <case> <rows>`` per comparison, or one ``SKIP <why>`` line when numba.cuda (or
its simulator) is unavailable; exits 1 at the first difference. Integer, string and timestamp
columns must be equal; float columns equal value for value with NaN in the same places (under
the simulator both devices run the same Python arithmetic; on a real GPU, where the compiler
may fuse a multiply and an add, to 1e-12 relative).
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

try:
    import numba
    from numba import cuda
    if not cuda.is_available():
        raise ImportError("numba.cuda finds no device (and the simulator is off)")
except Exception as e:          # noqa: BLE001 -- any failure to get CUDA means skip
    print(f"SKIP numba.cuda unavailable: {e}")
    sys.exit(0)

from kernels import evaluate as E  # noqa: E402
from kernels import har as H  # noqa: E402
from kernels import liquidity as L  # noqa: E402

import agree  # noqa: E402  (this directory)
from agree import fail  # noqa: E402

SIM = bool(numba.config.ENABLE_CUDASIM)


RTOL = 0.0 if SIM else 1e-12


def same_tables(case: str, want: pa.Table, got: pa.Table) -> None:
    agree.same_tables(case, want, got, rtol=RTOL)


def har_series(n: int, T: int, seed: int) -> np.ndarray:
    """Positive HAR-like series with the bad rows of every status."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, T))
    x[:, :22] = rng.uniform(0.5, 1.5, (n, 22))
    for t in range(22, T):
        x[:, t] = 0.1 + 0.3 * x[:, t - 1] + 0.3 * x[:, t - 5:t].mean(1) \
            + 0.3 * x[:, t - 22:t].mean(1) + 0.05 * rng.standard_normal(n)
    x = np.abs(x) + 0.01
    x[1, :T - 12] = np.nan            # too short
    x[2] = np.nan                     # all NaN
    x[3] = 0.7                        # constant
    x[4, 20] = np.inf                 # non-finite
    x[5, 30] = np.nan                 # a gap
    x[6, 21:] = 0.4                   # singular: the regressors' daily column is constant
    x[7, :5] = np.nan                 # padding at the start
    x[8, T - 3:] = np.nan             # ... and at the end
    return x


def har() -> None:
    x = har_series(12, 64, 3)
    for log in (False, True):
        want = H.har_rv(x, horizon=3, log=log, device="cpu")
        st = want.column("status").to_numpy()
        if sorted(set(st.tolist())) != sorted(H.STATUS):
            fail(f"har log={log}: statuses {sorted(set(st.tolist()))}; want every code")
        same_tables(f"har log={log}", want, H.har_rv(x, horizon=3, log=log, device="gpu"))


def liquidity() -> None:
    rng = np.random.default_rng(7)
    n_bars = 48
    rows = []
    for inst in (1, 2, 5):
        k = n_bars if inst != 5 else 10            # instrument 5: too few bars for HAR
        start = 10**18 + 60 * 10**9 * np.arange(k)
        rows.append(dict(instrument_id=np.full(k, inst, np.uint32),
                         bar_start=start,
                         spread=np.exp(rng.normal(-3, 0.3, k)),
                         depth=np.exp(rng.normal(6, 0.5, k)),
                         amihud=np.where(rng.random(k) < 0.2, np.nan, rng.uniform(1e-11, 1e-10, k)),
                         kyle_lambda=np.where(rng.random(k) < 0.2, np.nan, rng.normal(1e-4, 5e-5, k)),
                         mid=100 + np.cumsum(rng.normal(0, 0.1, k))))
    cat = {c: np.concatenate([r[c] for r in rows]) for c in rows[0]}
    tsz = pa.timestamp("ns", tz="UTC")
    quotes = pa.table({"instrument_id": cat["instrument_id"], "bar_start": pa.array(cat["bar_start"], tsz),
                       "spread": cat["spread"], "depth": cat["depth"]})
    bars = pa.table({"instrument_id": cat["instrument_id"], "bar_start": pa.array(cat["bar_start"], tsz),
                     "amihud": cat["amihud"], "kyle_lambda": cat["kyle_lambda"], "mid": cat["mid"]})
    want = L.liquidity(bars, quotes, size=300, lam=0.9, device="cpu")
    if not np.isfinite(want.column("spread_har").to_numpy()[:2]).all():
        fail("liquidity: no HAR spread forecast; pick an input that exercises it")
    same_tables("liquidity", want, L.liquidity(bars, quotes, size=300, lam=0.9, device="gpu"))
    x = np.where(rng.random((9, 30)) < 0.3, np.nan, rng.normal(size=(9, 30)))
    x[4] = np.inf
    agree.same_floats("ewma rows", "ewma", L.ewma_rows(x, 0.8, False), L.ewma_rows(x, 0.8, True),
                      RTOL)
    print("AGREE ewma rows 9")


def evaluate() -> None:
    x = har_series(9, 40, 5)
    kw = dict(model=("har", "ewma"), lags=(1, 2, 4), min_obs=5, loss=("qlike", "mse", "mae"))
    for extra in (dict(), dict(window=12, refit=3), dict(log=True, refit=2)):
        want = E.walk_forward(x, device="cpu", **kw, **extra)
        if not np.isfinite(want.column("value").to_numpy()).any():
            fail(f"evaluate {extra}: no finite loss")
        same_tables(f"evaluate {extra}", want, E.walk_forward(x, device="gpu", **kw, **extra))


if __name__ == "__main__":
    cases = {"har": har, "liquidity": liquidity, "evaluate": evaluate}
    for c in sys.argv[1:]:
        cases[c]()
