"""Run under NUMBA_ENABLE_CUDASIM=1 by test_garch.py: GARCH(1,1) (normal, t) and EWMA on the
GPU path (CUDA simulator) against the CPU. Prints ``AGREE <case>`` per case; exits 1 at the
first difference: integer columns equal, float columns within 1e-12 relative with NaN in the
same places (the simulator runs the kernels as Python, whose ``math.lgamma`` is not the C
library's that the compiled CPU code calls; with normal errors the fits are equal bit for bit)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kernels import garch as G  # noqa: E402


def same(a, b, case):
    for name in a.column_names:
        x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
        if x.dtype.kind == "f":
            ok = np.array_equal(np.isnan(x), np.isnan(y)) and np.allclose(
                x[~np.isnan(x)], y[~np.isnan(y)], rtol=1e-12, atol=0)
        else:
            ok = np.array_equal(x, y)
        if not ok:
            print(f"MISMATCH {case} {name}: {x} vs {y}")
            sys.exit(1)
    print(f"AGREE {case} {a.num_rows}")


rng = np.random.default_rng(4)
n, t = 5, 160
r = np.empty((n, t))
h = np.full(n, 1.0)
for k in range(t):
    r[:, k] = np.sqrt(h) * rng.standard_t(6, n) / np.sqrt(1.5)
    h = 0.1 + 0.1 * r[:, k] ** 2 + 0.8 * h
r[1, :40] = np.nan          # starts late
r[2, :] = 0.5               # constant: a status, no fit
r[3, 90:] = np.nan          # ends early
for dist in ("normal", "t"):
    same(G.garch11(r, dist=dist, device="cpu"), G.garch11(r, dist=dist, device="gpu"), dist)
c, hc = G.ewma(r, device="cpu", variances=True)
g, hg = G.ewma(r, device="gpu", variances=True)
if not np.array_equal(hc, hg, equal_nan=True):
    print("MISMATCH ewma variances")
    sys.exit(1)
same(c, g, "ewma")
