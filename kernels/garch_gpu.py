"""GARCH(1,1) and EWMA (:mod:`kernels.garch`) on a CUDA GPU: one thread per instrument.

The kernels call the CPU module's per-instrument functions (:func:`kernels.garch._fit_one`,
:func:`kernels.garch._ewma_one` and what they call), compiled by numba for the device from the
same Python source, so both devices do the same arithmetic in the same order. The only
difference is the C library's ``log`` and ``lgamma`` on the CPU against libdevice's on the GPU
(both within an ulp or two), so a GPU fit can differ from the CPU's in its last bits; under
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI runs this module) the kernels run as
Python with the C library's functions, and the results are equal bit for bit.

Memory layout: thread ``i`` reads return ``t`` of instrument ``i`` at the same step as its
neighbours, so the returns (and each thread's work row) are stored time-major on the device
(``(time, instruments)``) and seen by the shared code through a transposed view: neighbouring
threads read neighbouring addresses.
"""

from __future__ import annotations

import time

import numpy as np
from numba import cuda

from kernels import garch as G
from kernels.devicefn import SIMULATOR, device_chain

THREADS = 64
_CHAIN = ("_mn", "_mx", "_flush", "_var_bounds", "_log_product", "_normal_terms", "_t_terms",
          "_backcast", "_psi", "_psi1", "_bound", "_pass", "_solve", "_direction",
          "_grid", "_setup", "_request", "_start", "_trial", "_newton", "_advance", "_finish",
          "_run", "_fit_one", "_ewma_one")


_F = device_chain(G, _CHAIN)       # the per-instrument functions for the device, callees first
_fit_one = _F["_fit_one"]
_ewma_one = _F["_ewma_one"]


@cuda.jit
def _fit_kernel(r, lo, n, status, dist, work, out):
    i = cuda.grid(1)
    if i < r.shape[0]:
        _fit_one(r, i, lo[i], n[i], status[i], dist, work, out)


@cuda.jit
def _ewma_kernel(r, lo, n, status, lam, h_out, out):
    i = cuda.grid(1)
    if i < r.shape[0]:
        _ewma_one(r, i, lo[i], n[i], status[i], lam, h_out, out)


def _time_major(a: np.ndarray):
    """``a`` (instruments x k) on the device, stored as ``(k, instruments)``: ``(the stored
    array, the view of it as instruments x k)``."""
    base = cuda.to_device(np.ascontiguousarray(a.T))
    return base, base.T


def fit_gpu(r, lo, n, status, dist: int, timings: dict | None = None) -> np.ndarray:
    """:func:`kernels.garch.garch11`'s output rows, fitted on the GPU. ``timings`` (when given)
    gets the seconds of the copies to the device, the kernel, and the copy back."""
    t0 = time.perf_counter()
    _, d_r = _time_major(r)
    d_lo, d_n, d_st = cuda.to_device(lo), cuda.to_device(n), cuda.to_device(status)
    d_work = cuda.device_array((G.N_WORK, r.shape[0])).T
    d_out = cuda.device_array((r.shape[0], G.N_OUT))
    cuda.synchronize()
    t1 = time.perf_counter()
    blocks = (r.shape[0] + THREADS - 1) // THREADS
    _fit_kernel[blocks, THREADS](d_r, d_lo, d_n, d_st, dist, d_work, d_out)
    cuda.synchronize()
    t2 = time.perf_counter()
    out = d_out.copy_to_host()
    if timings is not None:
        timings.update(to_device=t1 - t0, kernel=t2 - t1, to_host=time.perf_counter() - t2)
    return out


def ewma_gpu(r, lo, n, status, lam: float, variances: bool):
    """:func:`kernels.garch.ewma` on the GPU: ``(out rows, h)``."""
    _, d_r = _time_major(r)
    h_base, d_h = (_time_major(np.full(r.shape, np.nan)) if variances
                   else (None, cuda.device_array((0, 0))))
    d_out = cuda.device_array((r.shape[0], 2))
    blocks = max(1, (r.shape[0] + THREADS - 1) // THREADS)
    _ewma_kernel[blocks, THREADS](d_r, cuda.to_device(lo), cuda.to_device(n),
                                  cuda.to_device(status), lam, d_h, d_out)
    h = h_base.copy_to_host().T if variances else np.zeros((0, 0))
    return d_out.copy_to_host(), h
