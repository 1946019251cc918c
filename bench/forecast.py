"""GARCH(1,1) fits across a market on the CPU against a loop of ``arch`` fits (issue 5).

The same simulated returns (instruments x time, GARCH(1,1) with parameters drawn per
instrument, in percent) go to ``kernels.garch.garch11`` (one call, every core) and to
``arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist=...).fit(disp="off")`` for a
sample of the instruments, timed one by one and scaled to all of them (arch fits one series
at a time). The sample's likelihoods are compared before the ratio is printed (the
largest relative difference, and the most ours is below arch's: 0 when ours is never worse).

    .venv/bin/python bench/forecast.py [--instruments 10000] [--length 2000] [--sample 100]
                                       [--dist normal|t|both] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def simulate(n_inst: int, length: int, seed: int = 7, nu: float | None = None) -> np.ndarray:
    """GARCH(1,1) returns, one row per instrument (vectorised over instruments)."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.03, 0.15, n_inst)
    beta = rng.uniform(0.75, 0.95, n_inst) * (1 - alpha)
    omega = rng.uniform(0.01, 0.1, n_inst)
    mu = rng.normal(0.0, 0.03, n_inst)
    h = omega / (1 - alpha - beta)
    r = np.empty((n_inst, length))
    for t in range(length):
        z = rng.standard_normal(n_inst) if nu is None else rng.standard_t(nu, n_inst) / np.sqrt(
            nu / (nu - 2))
        e = np.sqrt(h) * z
        r[:, t] = mu + e
        h = omega + alpha * e * e + beta * h
    return r


def run(n_inst: int, length: int, sample: int, dist: str, gpu: bool) -> dict:
    from arch import arch_model

    from kernels.garch import garch11
    r = simulate(n_inst, length, nu=6.0 if dist == "t" else None)
    garch11(r[:8], dist=dist, device="cpu")                      # compile / load the cache
    t0 = time.perf_counter()
    fit = garch11(r, dist=dist, device="cpu")
    ours = time.perf_counter() - t0
    idx = np.linspace(0, n_inst - 1, min(sample, n_inst)).astype(int)
    lls = fit.column("loglik").to_numpy()
    worst = below = 0.0
    t0 = time.perf_counter()
    for i in idx:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = arch_model(r[i], mean="Constant", vol="GARCH", p=1, q=1, dist=dist).fit(
                disp="off")
        worst = max(worst, abs(lls[i] - res.loglikelihood) / abs(res.loglikelihood))
        below = max(below, (res.loglikelihood - lls[i]) / abs(res.loglikelihood))
    per_arch = (time.perf_counter() - t0) / idx.size
    out = {"dist": dist, "instruments": n_inst, "length": length, "ours_s": ours,
           "arch_s_per_fit": per_arch, "arch_s_scaled": per_arch * n_inst,
           "ratio": per_arch * n_inst / ours, "loglik_rel_diff_max": worst,
           "loglik_rel_below_arch_max": below,
           "converged": float(fit.column("converged").to_numpy().mean()),
           "iterations_mean": float(fit.column("iterations").to_numpy().mean())}
    if gpu:
        from kernels.book import _cuda_available
        if _cuda_available():
            from numba import cuda

            from kernels import garch as G
            from kernels.garch_gpu import fit_gpu
            lo, n, st = G.series_extent(r)
            fit_gpu(r[:64], lo[:64], n[:64], st[:64], G.DISTS.index(dist))      # compile
            tm: dict = {}
            t0 = time.perf_counter()
            fit_gpu(r, lo, n, st, G.DISTS.index(dist), timings=tm)
            out.update(gpu_s=time.perf_counter() - t0, gpu_kernel_s=tm["kernel"],
                       gpu_device=cuda.get_current_device().name.decode()
                       if isinstance(cuda.get_current_device().name, bytes)
                       else str(cuda.get_current_device().name))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instruments", type=int, default=10_000)
    ap.add_argument("--length", type=int, default=2_000)
    ap.add_argument("--sample", type=int, default=100, help="arch fits timed (then scaled)")
    ap.add_argument("--dist", choices=["normal", "t", "both"], default="both")
    ap.add_argument("--gpu", action="store_true", help="also time the CUDA fit when there is a GPU")
    a = ap.parse_args(argv)
    print(f"cpu cores usable: {len(os.sched_getaffinity(0))}  instruments {a.instruments:,} x "
          f"{a.length:,} returns  arch sample {a.sample}")
    print(f"{'dist':6}  {'tickpipe s':>10}  {'arch ms/fit':>11}  {'arch s (scaled)':>15}  "
          f"{'x arch':>7}  {'max |dll|/|ll|':>14}  {'ours below':>10}  {'converged':>9}  {'iters':>5}  "
          f"gpu")
    for dist in (["normal", "t"] if a.dist == "both" else [a.dist]):
        o = run(a.instruments, a.length, a.sample, dist, a.gpu)
        g = (f"{o['gpu_s']:.3f} s ({o['gpu_kernel_s']:.3f} kernel) on {o['gpu_device']}"
             if "gpu_s" in o else "-")
        print(f"{dist:6}  {o['ours_s']:10.3f}  {o['arch_s_per_fit'] * 1e3:11.2f}  "
              f"{o['arch_s_scaled']:15.1f}  {o['ratio']:7.1f}  {o['loglik_rel_diff_max']:14.2e}  "
              f"{o['loglik_rel_below_arch_max']:10.1e}  {o['converged']:9.3f}  {o['iterations_mean']:5.1f}  {g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
