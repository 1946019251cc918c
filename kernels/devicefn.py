"""One Python source for the CPU and the GPU: compiled helpers turned into device functions.

The CPU kernels are numba ``njit`` functions; the CUDA kernels call the same helpers. Under
Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels run as Python, and compiled
functions cannot take the simulator's arrays, so a helper's Python body is used instead, with
its callees swapped for theirs (:func:`python_twin`); on a device build the same body is
compiled by numba and inlined into the kernel (:func:`device_function`).
"""

from __future__ import annotations

import types

import numba

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def python_twin(fn, **callees):
    """The Python body of compiled helper ``fn`` calling the given ``callees`` instead of its
    globals of those names."""
    g = dict(fn.py_func.__globals__)
    g.update(callees)
    return types.FunctionType(fn.py_func.__code__, g, fn.py_func.__name__, fn.py_func.__defaults__)


def device_function(fn, **callees):
    """``fn`` for CUDA kernels: its Python twin under the simulator, else the twin compiled by
    numba and inlined into the kernel (compiling it needs no device)."""
    t = python_twin(fn, **callees)
    return t if SIMULATOR else numba.njit(inline="always")(t)


def device_chain(module, names) -> dict:
    """:func:`device_function` of each of ``module``'s helpers ``names`` (callees first), each
    calling the device versions of the ones before it."""
    out: dict = {}
    for name in names:
        out[name] = device_function(getattr(module, name), **out)
    return out
