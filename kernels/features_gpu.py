"""Bar features (:func:`kernels.features.compute`) on a CUDA GPU, one thread per instrument; and
per-event features (:func:`kernels.features.per_event`, :func:`per_event_gpu`), one thread per
book row.

:func:`kernels.features.compute` prepares the inputs on the host for both devices (the mid of
every book row, trade mask, price, size and sign per event, the stable grouping of the events by
instrument ``order`` / ``starts``, the VPIN bucket volume of each group) and turns the raw bar
accumulators into the feature columns afterwards (NumPy, the same code for both devices). Only
the walk over the events differs:

* CPU (:func:`kernels.features._bar_kernel`): one loop, group after group, with one running bar
  counter.
* GPU (:data:`_bars_kernel`): thread ``g`` walks group ``g``. Threads cannot share a running bar
  counter, so group ``g`` writes its bars, in time order, into the scratch rows ``starts[g] ..``
  (a group never has more bars than events) and its bar count into ``counts[g]``. The host takes
  the counts back (one integer per group) and sums them into the offsets ``offsets[g]``; a
  second kernel (:data:`_compact_kernel`, one thread per bar) copies scratch row
  ``starts[g] + k`` to row ``offsets[g] + k``. The result is the CPU's rows in the CPU's order.

Both walks run the same function, :func:`kernels.features._bar_group` (the state and the
arithmetic of one group; numba compiles its Python body for each device), so the devices do the
same float operations in the same order. Products that feed a sum go through
``kernels.features._mul``, which the CUDA compiler may not fuse into an FMA (``mul.rn.f64``;
by default it would, rounding once instead of twice), and float64 division is IEEE on both. The
one difference left is ``math.log`` of the event-to-event mid returns (libdevice on the GPU, the
C library on the CPU, both within an ulp): on a device ``realized_variance`` and
``bipower_variation`` may differ from the CPU's in their last bits; every other column is
identical. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, how CI runs this module)
the kernels run as Python, with the C library's ``log``, and the tables are equal bit for bit.

Steps a benchmark can time apart (:class:`GpuBars`): ``GpuBars(...)`` keeps the host inputs;
:meth:`GpuBars.to_device` copies them over and allocates the scratch rows (one per event);
:meth:`GpuBars.run` is the device work with the data already there (bar kernel, the counts to
the host and the offsets back, the output arrays allocated on the first run, compaction kernel;
it waits for the device); :meth:`GpuBars.fetch` copies the bars back. :func:`bars_gpu` does
all of it and returns host arrays like the CPU kernel's.

Per-event features: the elementwise columns need only their own row; the OFI needs level 0 of
the previous row of the same instrument, which the host finds in its pass over the rows
(``prev[i]``, -1 for an instrument's first row: the stable grouping by instrument as a link per
row). So :data:`_per_event_kernel` runs one thread per row, with the CPU's row functions
(:func:`kernels.features._event_row`, ``_level0``, ``_ofi_term``; the microprice's products
through ``_mul``), and returns the CPU's table bit for bit (no ``log`` here).
"""

from __future__ import annotations


import numba
import numpy as np
from numba import cuda

from kernels import features as _features
from kernels.devicefn import python_twin as _python_twin
from kernels.features import N_ACC

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
THREADS = 64                # threads per block of the bar kernel (one per instrument)
COMPACT_THREADS = 256       # threads per block of the compaction kernel (one per bar)
EVENT_THREADS = 256         # threads per block of the per-event kernel (one per book row)


if SIMULATOR:
    _bar_group = _python_twin(_features._bar_group, _mul=lambda a, b: a * b)
    _level0 = _python_twin(_features._level0)
    _event_row = _python_twin(_features._event_row, _mul=lambda a, b: a * b, _level0=_level0)
    _ofi_term = _python_twin(_features._ofi_term)
else:
    # the CPU's Python functions, inlined into the kernels by numba (compiling them needs no device)
    _bar_group = numba.njit(inline="always")(_features._bar_group.py_func)
    _level0 = numba.njit(inline="always")(_features._level0.py_func)
    _event_row = numba.njit(inline="always")(_python_twin(_features._event_row, _level0=_level0))
    _ofi_term = numba.njit(inline="always")(_features._ofi_term.py_func)


@cuda.jit
def _bars_kernel(order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param,
                 horizon, bucket_v, o_group, o_start, o_end, o_f, o_i, counts):
    """Thread ``g``: the bars of group ``g`` into rows ``starts[g] ..``, their number into
    ``counts[g]``."""
    g = cuda.grid(1)
    if g >= starts.shape[0] - 1:
        return
    s0 = starts[g]
    counts[g] = _bar_group(g, order, starts, ts, mid, is_trade, price, size, sign, bar_kind,
                           bar_param, horizon, bucket_v[g], s0, o_group, o_start, o_end,
                           o_f, o_i) - s0


@cuda.jit
def _compact_kernel(starts, offsets, s_group, s_start, s_end, s_f, s_i,
                    o_group, o_start, o_end, o_f, o_i):
    """Thread ``k``: output row ``k`` from the scratch rows (``offsets``: the groups' first
    output rows, then the number of bars)."""
    k = cuda.grid(1)
    if k >= o_group.shape[0]:
        return
    lo = 0                            # the group of row k: offsets[lo] <= k < offsets[lo + 1]
    hi = offsets.shape[0] - 1
    while hi - lo > 1:
        m = (lo + hi) // 2
        if offsets[m] <= k:
            lo = m
        else:
            hi = m
    src = starts[lo] + (k - offsets[lo])
    o_group[k] = s_group[src]
    o_start[k] = s_start[src]
    o_end[k] = s_end[src]
    for c in range(s_f.shape[1]):
        o_f[k, c] = s_f[src, c]
    for c in range(s_i.shape[1]):
        o_i[k, c] = s_i[src, c]


class GpuBars:
    """One bar computation on the device, in steps a benchmark can time apart.

    The arguments are those of the CPU kernel, as host NumPy arrays: ``order`` / ``starts`` from
    ``kernels.features._group``, per event ``ts`` (int64 ns), ``mid``, ``is_trade``, ``price``,
    ``size``, ``sign`` (float64; ``is_trade`` bool), the bar kind (0 time, 1 volume) and parameter,
    the realized-spread ``horizon`` (ns) and the VPIN bucket volume of each group.
    """

    def __init__(self, order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param,
                 horizon, bucket_v):
        self.host = dict(order=order, starts=starts, ts=ts, mid=mid, is_trade=is_trade,
                         price=price, size=size, sign=sign, bucket_v=bucket_v)
        self.bar_kind = np.int64(bar_kind)
        self.bar_param = np.int64(bar_param)
        self.horizon = np.int64(horizon)
        self.n = int(ts.shape[0])
        self.n_groups = int(starts.shape[0]) - 1 if self.n else 0
        self.dev = None
        self.out = None
        self.nb = 0

    def to_device(self) -> "GpuBars":
        """Copy the inputs over; allocate the scratch rows (one per event) and the counts."""
        d = {name: cuda.to_device(np.ascontiguousarray(v)) for name, v in self.host.items()}
        n = self.n
        d.update(s_group=cuda.device_array(n, np.int64), s_start=cuda.device_array(n, np.int64),
                 s_end=cuda.device_array(n, np.int64),
                 s_f=cuda.device_array((n, N_ACC), np.float64),
                 s_i=cuda.device_array((n, 3), np.int64),
                 counts=cuda.device_array(max(self.n_groups, 1), np.int64))
        self.dev = d
        return self

    def run(self) -> int:
        """Bar kernel, offsets (through the host), compaction kernel; wait. Returns the number of
        bars. May be called again (every row it reads is written first)."""
        v = self.dev
        if self.n_groups == 0:
            self.nb = 0
            self.out = None
            return 0
        _bars_kernel[(self.n_groups + THREADS - 1) // THREADS, THREADS](
            v["order"], v["starts"], v["ts"], v["mid"], v["is_trade"], v["price"], v["size"],
            v["sign"], self.bar_kind, self.bar_param, self.horizon, v["bucket_v"],
            v["s_group"], v["s_start"], v["s_end"], v["s_f"], v["s_i"], v["counts"])
        counts = v["counts"].copy_to_host()[:self.n_groups]
        offsets = np.zeros(self.n_groups + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        nb = int(offsets[-1])
        if self.out is None or self.out["o_group"].shape[0] != nb:
            self.out = dict(o_group=cuda.device_array(nb, np.int64),
                            o_start=cuda.device_array(nb, np.int64),
                            o_end=cuda.device_array(nb, np.int64),
                            o_f=cuda.device_array((nb, N_ACC), np.float64),
                            o_i=cuda.device_array((nb, 3), np.int64))
        o = self.out
        _compact_kernel[(nb + COMPACT_THREADS - 1) // COMPACT_THREADS, COMPACT_THREADS](
            v["starts"], cuda.to_device(offsets), v["s_group"], v["s_start"], v["s_end"],
            v["s_f"], v["s_i"], o["o_group"], o["o_start"], o["o_end"], o["o_f"], o["o_i"])
        cuda.synchronize()
        self.nb = nb
        return nb

    def fetch(self):
        """``(o_group, o_start, o_end, o_f, o_i, nb)`` on the host, ``nb`` rows each."""
        if self.out is None:
            return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64),
                    np.empty((0, N_ACC), np.float64), np.empty((0, 3), np.int64), 0)
        o = self.out
        return (o["o_group"].copy_to_host(), o["o_start"].copy_to_host(),
                o["o_end"].copy_to_host(), o["o_f"].copy_to_host(), o["o_i"].copy_to_host(),
                self.nb)


def bars_gpu(order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param, horizon,
             bucket_v):
    """The CPU kernel's outputs ``(o_group, o_start, o_end, o_f, o_i, nb)`` computed on the GPU,
    as host arrays of ``nb`` rows (the rows and their order are the CPU's)."""
    g = GpuBars(order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param,
                horizon, bucket_v).to_device()
    g.run()
    return g.fetch()


# -- per-event features ----------------------------------------------------------------------

@cuda.jit
def _per_event_kernel(prev, bpx, bsz, apx, asz, spread, mid, micro, imb1, imb5, ofi):
    """Thread ``i``: the features of book row ``i`` (``bpx`` ... ``asz``: ``(levels, rows)``);
    its OFI against row ``prev[i]``, the previous row of its instrument (-1: none, the empty
    book)."""
    i = cuda.grid(1)
    if i >= prev.shape[0]:
        return
    b, bq, a, aq = _event_row(i, bpx, bsz, apx, asz, spread, mid, micro, imb1, imb5)
    p = prev[i]
    if p < 0:
        pb = -np.inf
        qb = 0.0
        pa_ = np.inf
        qa = 0.0
    else:
        pb, qb, pa_, qa = _level0(p, bpx, bsz, apx, asz)
    ofi[i] = _ofi_term(b, bq, a, aq, pb, qb, pa_, qa)


def per_event_gpu(prev, bpx, bsz, apx, asz) -> dict:
    """The columns of :func:`kernels.features.per_event` (``PER_EVENT_COLUMNS``, host float64
    arrays in row order) computed on the GPU.

    ``prev[i]``: the previous row of row ``i``'s instrument, -1 for its first row (the stable
    grouping by instrument, as a link per row: :func:`kernels.features._prev_kernel`);
    ``bpx`` / ``apx``: int64 level prices, ``bsz`` / ``asz``: level sizes (uint64 or float64),
    each ``(levels, rows)``, level 0 first. One thread per row: the elementwise columns need
    only their row, and the OFI also reads level 0 of row ``prev[i]``; both with the CPU's
    functions (:func:`kernels.features._event_row`, ``_level0``, ``_ofi_term``), so the
    table is the CPU's bit for bit (no FMA: the microprice's products go through ``_mul``;
    division is IEEE on both).
    """
    n = int(prev.shape[0])
    d = [cuda.to_device(np.ascontiguousarray(a)) for a in (prev, bpx, bsz, apx, asz)]
    out = [cuda.device_array(n, np.float64) for _ in _features.PER_EVENT_COLUMNS]
    if n:
        _per_event_kernel[(n + EVENT_THREADS - 1) // EVENT_THREADS, EVENT_THREADS](*d, *out)
        cuda.synchronize()
    return {c: o.copy_to_host() for c, o in zip(_features.PER_EVENT_COLUMNS, out)}
