"""Microstructure features: per book event (:func:`per_event`) and per bar (:func:`compute`).

Formulas, conventions and references are in ``docs/features.md``. In short:

* :func:`per_event` turns a book table from :func:`kernels.book.reconstruct` into spread, mid,
  microprice, L1 / L5 depth imbalance and the order-flow imbalance ``ofi`` of Cont, Kukanov &
  Stoikov (2014), one row per book row. Prices are float64 currency units (``/ PRICE_SCALE``);
  a feature that needs a side the book does not have is NaN (crossed books are not special).
* :func:`compute` groups the events of each instrument into time bars (``bar="1s"``, any
  :class:`pandas.Timedelta` string) or volume bars (``bar="volume:N"``) and computes trade and
  price features per bar: trade count, volume, VWAP, signed trade imbalance, last mid, realized
  variance, bipower variation, Kyle's lambda, Amihud illiquidity, VPIN, effective and realized
  spread.

Trades are the printable (``F_PRINTABLE``) ``mbo`` events with action ``EXECUTE`` (visible
resting order; the price is the event's resolved price) or ``TRADE`` (non-displayed). The side
column is the resting side, so the initiator is the other one: an execution of a resting ask
(``S``) is buyer-initiated (sign +1), of a resting bid (``B``) seller-initiated (-1); side ``N``
is unsigned (0).

Python dispatches whole columns; the compiled loops (numba, ``cache=True``) do the per-event
work, reading the Arrow columns in place (chunk by chunk, no copies). :func:`compute` makes one
pass over the events in input order (:func:`_prepare`: mid, trade mask, price, size, sign, the
``ts_event`` check and each instrument's volume) that writes every event's record at its place
in the grouped order (a counting sort by instrument id, stable: within an instrument the input
order is kept and ``ts_event`` must not decrease); the bar loop then walks the events of one
instrument after another in memory order, and a compiled loop turns its accumulators into the
feature columns (:func:`_finish`). :func:`per_event` on the CPU is one pass in input order with
each instrument's OFI state in a table (:func:`_per_event_kernel`).

Devices: :func:`compute` runs the bar loop on the CPU (``device="cpu"``) or on a CUDA GPU
(``"gpu"``: :mod:`kernels.features_gpu`, one thread per instrument; ``"auto"``: the GPU when
there is one and the input is large, see :func:`_use_gpu`). Both devices run the same function
for one instrument's bars (:func:`_bar_group`) and return the same rows; the inputs are prepared
and the features finished on the host by the same code. :func:`per_event` takes the same
``device`` (on the GPU one thread per book row, each row linked to the previous row of its
instrument for its OFI); both devices run the same row functions (:func:`_event_row`,
:func:`_level0`, :func:`_ofi_term`) and return the same table.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from normalize import records as R
from tickpipe.durations import duration_value

DEVICES = ("auto", "cpu", "gpu")
L5 = 5                               # levels summed by the L5 depth imbalance
DEFAULT_BUCKETS = 50                 # VPIN: default bucket volume = instrument volume / 50
_NS = 1_000_000_000

PER_EVENT_COLUMNS = ("spread", "mid", "microprice", "imbalance_l1", "imbalance_l5", "ofi")
N_ACC = 22                           # float accumulators per bar (see _bar_group)
BAR_COLUMNS = ("event_count", "trade_count", "volume", "vwap", "signed_trade_imbalance", "mid",
               "realized_variance", "bipower_variation", "kyle_lambda", "amihud", "vpin",
               "effective_spread", "realized_spread")


# -- parameters ---------------------------------------------------------------------------------

def _check_device(device) -> None:
    if device not in DEVICES:
        raise ValueError(f"The `device` was not a valid value, was {device!r}. Use any of {DEVICES}.")


def _use_gpu(device: str, n: int) -> bool:
    """Whether ``device`` sends ``n`` events to the GPU (the rule of :func:`kernels.book.reconstruct`).

    "cpu": never. "gpu": always; RuntimeError when numba.cuda finds no CUDA device (the CUDA
    simulator, ``NUMBA_ENABLE_CUDASIM=1``, counts as one). "auto": when there is a device and at
    least ``kernels.book.GPU_MIN_EVENTS`` events; never an error.
    """
    _check_device(device)
    if device == "cpu":
        return False
    from kernels.book import GPU_MIN_EVENTS, _cuda_available
    if device == "auto" and n < GPU_MIN_EVENTS:
        return False                  # small input: no need to look for a device
    if _cuda_available():
        return True
    if device == "gpu":
        raise RuntimeError("device='gpu' was asked for, but numba.cuda finds no CUDA device; "
                           "use device='auto' or 'cpu'")
    return False


def parse_bar(bar) -> tuple[str, int]:
    """``("time", nanoseconds)`` or ``("volume", shares)``; ValueError naming ``bar`` otherwise."""
    if not isinstance(bar, str):
        raise ValueError(f"The `bar` must be a string such as '1s', '5min' or 'volume:1000', was {bar!r}.")
    if bar.startswith("volume:"):
        try:
            n = int(bar[len("volume:"):])
        except ValueError:
            n = 0
        if n <= 0:
            raise ValueError(f"The `bar` volume must be a positive integer number of shares "
                             f"('volume:N'), was {bar!r}.")
        return "volume", n
    try:
        td = duration_value(bar)
    except (ValueError, TypeError):
        td = None
    if td is None or td is pd.NaT or td.value <= 0:
        raise ValueError(f"The `bar` was not a positive pandas frequency ('1s', '1min', '5min', ...) "
                         f"or 'volume:N', was {bar!r}.")
    return "time", int(td.value)


# -- per-event features -------------------------------------------------------------------------

def _levels_of(book: pa.Table) -> int:
    k = 0
    while f"bid_px_{k}" in book.column_names and f"ask_px_{k}" in book.column_names:
        k += 1
    if k == 0:
        raise ValueError("The `book` has no bid_px_0 / ask_px_0 columns; pass a table from "
                         "kernels.book.reconstruct.")
    return k


def _np(t: pa.Table, name: str, dtype) -> np.ndarray:
    col = t.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return np.ascontiguousarray(col.to_numpy(zero_copy_only=False), dtype=dtype)


_UNDEF = int(R.UNDEF_PRICE)
_SCALE = float(R.PRICE_SCALE)
_EXEC = int(R.ACTION_EXECUTE)
_TRADE = int(R.ACTION_TRADE)
_PRINTABLE = int(R.F_PRINTABLE)
_ASK = int(R.SIDE_ASK)
_BID = int(R.SIDE_BID)
_LUT_MAX = 1 << 22                   # instrument ids below this (and <= 4 n) group by a table
_EVENT = np.dtype({"names": ["ts", "mid", "is_trade", "price", "size", "sign"],
                   "formats": [np.int64, np.float64, np.bool_, np.float64, np.float64, np.float64],
                   "offsets": [0, 8, 40, 16, 24, 32], "itemsize": 48})


def _chunks(t: pa.Table, name: str, dtype) -> list[np.ndarray]:
    """Column ``name`` as NumPy arrays of ``dtype``, one per non-empty chunk, without copying
    where the Arrow type allows; elementwise the values of :func:`_np` (which is used, for the
    whole column, when the column has nulls or a chunk cannot be viewed)."""
    col = t.column(name)
    if col.null_count == 0:
        try:
            out = []
            for ch in (col.chunks if isinstance(col, pa.ChunkedArray) else [col]):
                if len(ch) == 0:
                    continue
                a = ch.to_numpy(zero_copy_only=True)
                if pa.types.is_timestamp(ch.type):
                    a = a.view(np.int64)
                out.append(np.asarray(a, dtype=dtype))
            return out
        except (pa.ArrowInvalid, TypeError, ValueError):
            pass
    a = _np(t, name, dtype)
    return [a] if len(a) else []


def _segments(cols: list[list[np.ndarray]]):
    """Row ranges lying inside one chunk of every column (all of the same length): for each,
    the list of the columns' views on it."""
    offs = [np.cumsum([0] + [len(c) for c in chunks]) for chunks in cols]
    bounds = sorted(set().union(*(o.tolist() for o in offs)))
    ptr = [0] * len(cols)
    for a, b in zip(bounds[:-1], bounds[1:]):
        views = []
        for k, chunks in enumerate(cols):
            o = offs[k]
            while o[ptr[k] + 1] <= a:
                ptr[k] += 1
            views.append(chunks[ptr[k]][a - o[ptr[k]]:b - o[ptr[k]]])
        yield views


@numba.njit(cache=True, nogil=True)
def _count_keys(key, counts):
    for i in range(key.shape[0]):
        counts[key[i]] += 1


def _groups(inst: list[np.ndarray], n: int):
    """The instrument groups of ``n`` events (ids in chunks ``inst``), in id order:
    ``(ginst, counts, keys, lut)`` with group ``lut[keys[i]]`` for event ``i`` (``keys``:
    chunks, aligned with ``inst`` or one array). Ids below ``_LUT_MAX`` (and not far above
    ``n``) are counted into a table indexed by id; larger ones are ranked by ``np.unique``."""
    m = max(int(c.max()) for c in inst) if n else 0
    if m < (1 << 16) or (m < _LUT_MAX and m <= 4 * n):
        counts = np.zeros(m + 1, np.int64)
        for c in inst:
            _count_keys(c, counts)
        present = np.flatnonzero(counts)
        lut = np.zeros(m + 1, np.int64)
        lut[present] = np.arange(len(present))
        return present.astype(np.uint32), counts[present], inst, lut
    ginst, key = np.unique(np.concatenate(inst), return_inverse=True)
    key = key.reshape(-1).astype(np.int64, copy=False)
    return ginst.astype(np.uint32), np.bincount(key, minlength=len(ginst)), [key], \
        np.arange(len(ginst), dtype=np.int64)


def _group(inst: np.ndarray):
    """Stable order grouping events by instrument, group bounds, and the instrument of each group."""
    key = inst.astype(np.uint16) if inst.size and int(inst.max()) < 65536 else inst
    order = np.argsort(key, kind="stable")          # 16-bit keys: a radix sort, O(n)
    s = inst[order]
    cut = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = np.concatenate(([0], cut, [len(s)])).astype(np.int64)
    return order.astype(np.int64), starts, s[starts[:-1]] if len(s) else s[:0]


def _level(book: pa.Table, s: str, k: int):
    """Level ``k`` of side ``s``: price (currency units, NaN when empty), size, empty mask."""
    px = _np(book, f"{s}_px_{k}", np.int64)
    sz = _np(book, f"{s}_sz_{k}", np.float64)
    empty = px == R.UNDEF_PRICE
    return np.where(empty, np.nan, px / float(R.PRICE_SCALE)), np.where(empty, 0.0, sz), empty


def _mid(book: pa.Table) -> np.ndarray:
    """Mid price of each book row (NaN when a side is empty)."""
    return 0.5 * (_level(book, "bid", 0)[0] + _level(book, "ask", 0)[0])


@numba.njit
def _level0(i, bpx, bsz, apx, asz):
    """Level 0 of book row ``i`` as OFI sees it: bid price, bid size, ask price, ask size; an
    empty bid is price -inf with size 0, an empty ask +inf with size 0.

    ``bpx`` ... ``asz``: the level columns, indexed ``[k][i]`` (level ``k``, row ``i``): a tuple
    of arrays on the CPU, a 2-D array on the GPU. Shared by both devices (see
    :mod:`kernels.features_gpu`).
    """
    b0 = bpx[0][i]
    a0 = apx[0][i]
    if b0 == _UNDEF:
        b = -np.inf
        bq = 0.0
    else:
        b = b0 / _SCALE
        bq = np.float64(bsz[0][i])
    if a0 == _UNDEF:
        a = np.inf
        aq = 0.0
    else:
        a = a0 / _SCALE
        aq = np.float64(asz[0][i])
    return b, bq, a, aq


@numba.njit
def _event_row(i, bpx, bsz, apx, asz, spread, mid, micro, imb1, imb5):
    """The elementwise features of book row ``i`` (all but ``ofi``) into row ``i`` of the
    outputs; returns the row's :func:`_level0` for its OFI. Shared by both devices; the products
    in the microprice go through :func:`_mul` (no FMA on the GPU)."""
    nan = np.nan
    b, bq, a, aq = _level0(i, bpx, bsz, apx, asz)
    bempty = b == -np.inf             # a price from the book is finite
    aempty = a == np.inf
    bp = nan if bempty else b
    ap = nan if aempty else a
    spread[i] = ap - bp
    mid[i] = 0.5 * (ap + bp)
    if bempty or aempty:
        micro[i] = nan
        imb1[i] = nan
        imb5[i] = nan
    else:
        micro[i] = (_mul(bp, aq) + _mul(ap, bq)) / (bq + aq)
        imb1[i] = (bq - aq) / (bq + aq)
        bsum = bq
        asum = aq
        for k in range(1, len(bpx)):
            bsum += 0.0 if bpx[k][i] == _UNDEF else np.float64(bsz[k][i])
            asum += 0.0 if apx[k][i] == _UNDEF else np.float64(asz[k][i])
        imb5[i] = (bsum - asum) / (bsum + asum)
    return b, bq, a, aq


@numba.njit
def _ofi_term(b, bq, a, aq, pb, qb, pa_, qa):
    """OFI e_n of a row (level 0 ``b, bq, a, aq``) against the previous row of its instrument
    (``pb, qb, pa_, qa``; the empty book -inf, 0, +inf, 0 before the first row)."""
    e = 0.0
    if b >= pb:
        e += bq
    if b <= pb:
        e -= qb
    if a <= pa_:
        e -= aq
    if a >= pa_:
        e += qa
    return e


@numba.njit(cache=True, nogil=True, _nrt=False)
def _per_event_kernel(key, lut, state, bpx, bsz, apx, asz, spread, mid, micro, imb1, imb5, ofi):
    """The per-event features of a run of book rows, in input order; ``bpx`` ... ``asz``: tuples
    of the level columns (level 0 first).

    OFI e_n of each row against the previous row of its instrument (group ``lut[key[i]]``):
    ``state[g]`` holds that row's :func:`_level0` (before an instrument's first row, the empty
    book) and is kept from one run of rows to the next.

    Compiled without numba's reference counting (``_nrt=False``; nothing here allocates): with
    it, handing the 20 level arrays to :func:`_event_row` costs an atomic incref / decref pair
    per array and row, which made the pass about 5x slower.
    """
    for i in range(key.shape[0]):
        b, bq, a, aq = _event_row(i, bpx, bsz, apx, asz, spread, mid, micro, imb1, imb5)
        g = lut[key[i]]
        ofi[i] = _ofi_term(b, bq, a, aq, state[g, 0], state[g, 1], state[g, 2], state[g, 3])
        state[g, 0] = b
        state[g, 1] = bq
        state[g, 2] = a
        state[g, 3] = aq


@numba.njit(cache=True, nogil=True)
def _prev_kernel(key, lut, last, base, prev):
    """``prev[i]``: the row before row ``base + i`` of the same instrument (group
    ``lut[key[i]]``), -1 for an instrument's first row; ``last[g]``, the group's latest row, is
    kept from one run of rows to the next (the GPU's OFI link, :func:`per_event`)."""
    for i in range(key.shape[0]):
        g = lut[key[i]]
        prev[i] = last[g]
        last[g] = base + i


def _readonly(chunks: list[np.ndarray]) -> list[np.ndarray]:
    """Read-only views (Arrow's zero-copy arrays are; one array type for the compiled code)."""
    out = []
    for c in chunks:
        c = c.view()
        c.flags.writeable = False
        out.append(c)
    return out


def per_event(book: pa.Table, *, device: str = "auto") -> pa.Table:
    """Per-event features of a book table (one row per book row, same order).

    Columns: instrument_id, ts_event, spread, mid, microprice, imbalance_l1, imbalance_l5, ofi
    (float64; prices in currency units). NaN where a needed side is empty; ``ofi`` is always
    defined (an empty side counts as price -inf / +inf with size 0).

    ``device``: "cpu" (one compiled pass over the rows in input order, the OFI state of each
    instrument in a table, reading the Arrow columns in place), "gpu" (:mod:`kernels.features_gpu`,
    one CUDA thread per row, each row linked to the previous row of its instrument for its OFI;
    RuntimeError without a CUDA device) or "auto" (the GPU when there is one and at least
    ``kernels.book.GPU_MIN_EVENTS`` rows, else the CPU; see :func:`_use_gpu`). Both devices run
    the same row functions (:func:`_event_row`, :func:`_level0`, :func:`_ofi_term`) and give
    the same table.
    """
    _check_device(device)
    K = min(L5, _levels_of(book))
    n = book.num_rows
    gpu = _use_gpu(device, n)
    szt = np.uint64 if all(book.schema.field(f"{s}_sz_{k}").type == pa.uint64()
                           and book.column(f"{s}_sz_{k}").null_count == 0
                           for s in ("bid", "ask") for k in range(K)) else np.float64
    px = {s: [_readonly(_chunks(book, f"{s}_px_{k}", np.int64)) for k in range(K)] for s in ("bid", "ask")}
    sz = {s: [_readonly(_chunks(book, f"{s}_sz_{k}", szt)) for k in range(K)] for s in ("bid", "ask")}
    inst = _chunks(book, "instrument_id", np.uint32)
    ginst, _, keys, lut = _groups(inst, n)
    if n and gpu:
        out = _per_event_gpu(n, K, keys, lut, len(ginst), px, sz, szt)
    else:
        state = np.empty((len(ginst), 4), np.float64)
        state[:] = (-np.inf, 0.0, np.inf, 0.0)
        out = {c: np.empty(n, np.float64) for c in PER_EVENT_COLUMNS}
        cols = [keys, *px["bid"], *sz["bid"], *px["ask"], *sz["ask"]]
        a = 0
        for v in _segments(cols) if n else ():
            b = a + len(v[0])
            _per_event_kernel(v[0], lut, state, tuple(v[1:1 + K]), tuple(v[1 + K:1 + 2 * K]),
                              tuple(v[1 + 2 * K:1 + 3 * K]), tuple(v[1 + 3 * K:]),
                              *(out[c][a:b] for c in PER_EVENT_COLUMNS))
            a = b
    return pa.table({"instrument_id": book.column("instrument_id"),
                     "ts_event": book.column("ts_event"), **out})


def _per_event_gpu(n, K, keys, lut, ng, px, sz, szt) -> dict:
    """:func:`per_event`'s columns on the GPU: the previous row of each row's instrument
    (:func:`_prev_kernel`, on the host) and the level columns as ``(K, n)`` arrays go to
    :func:`kernels.features_gpu.per_event_gpu`."""
    prev = np.empty(n, np.int64)
    last = np.full(ng, -1, np.int64)
    a = 0
    for (k,) in _segments([keys]):
        _prev_kernel(k, lut, last, np.int64(a), prev[a:a + len(k)])
        a += len(k)

    def levels(chunks, dtype):
        m = np.empty((K, n), dtype)
        for k in range(K):
            np.concatenate(chunks[k], out=m[k])
        return m

    from kernels.features_gpu import per_event_gpu
    return per_event_gpu(prev, levels(px["bid"], np.int64), levels(sz["bid"], szt),
                         levels(px["ask"], np.int64), levels(sz["ask"], szt))


# -- bar features -------------------------------------------------------------------------------

@intrinsic
def _mul(typingctx, a, b):
    """``a * b`` in float64, rounded by itself: the product never fuses with a following add.

    The CUDA compiler contracts a multiply and an add into one FMA by default (one rounding
    instead of two), which would make the GPU bars differ from the CPU bars in the last bits;
    on the device this is libdevice's ``__nv_dmul_rn`` (PTX ``mul.rn.f64``, never contracted),
    on the CPU the plain multiply. The CUDA simulator runs a Python twin (``a * b``).
    """
    def codegen(context, builder, signature, args):
        x, y = args
        if builder.module.triple.startswith("nvptx"):
            dbl = ir.DoubleType()
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(dbl, [dbl, dbl]),
                                                "__nv_dmul_rn")
            return builder.call(fn, [x, y])
        return builder.fmul(x, y)
    return types.float64(types.float64, types.float64), codegen


@numba.njit
def _bar_group(g, order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param,
               horizon, V, nb, o_group, o_start, o_end, o_f, o_i):
    """Walk instrument group ``g`` (events ``order[starts[g]:starts[g+1]]``, at least one) and
    write its bars in time order from output row ``nb``; return the row after its last bar.

    ``V`` is the group's VPIN bucket volume. One body for both devices: the CPU loop
    (:func:`_bar_kernel`) calls it group after group with a running ``nb``; the CUDA kernel
    (:mod:`kernels.features_gpu`, which compiles this Python function for the device, inlined)
    calls it once per thread with ``nb = starts[g]`` (a group never has more bars than events).
    Products that feed a sum go through :func:`_mul`. (Plain ``njit`` on the CPU: numba-level
    inlining into the group loop measured a few percent slower.)
    """
    s0 = starts[g]
    s1 = starts[g + 1]
    t_last = ts[order[s1 - 1]]
    # VPIN bucket state (cumulative volume is exact in float64 below 2**53 shares)
    cum = 0.0
    kb = 0
    bbuy = 0.0
    bsell = 0.0
    later = s0            # realized-spread pointer: last event with ts <= t + horizon
    cur = -1              # current bar key
    vkey = 0              # volume bars: bar number and shares traded in it so far
    vacc = 0.0
    prev_mid = np.nan     # mid of the previous event of this instrument (any bar)
    prev_in_bar = False
    for j in range(s0, s1):
        i = order[j]
        t = ts[i]
        if bar_kind == 0:
            key = (t // bar_param) * bar_param
        else:                 # volume bar: a new one once the current holds >= N shares
            if vacc >= bar_param:
                vkey += 1
                vacc = 0.0
            key = vkey
        if key != cur or j == s0:
            if j != s0:
                nb += 1
            cur = key
            o_group[nb] = g
            o_start[nb] = key if bar_kind == 0 else t
            for c in range(o_f.shape[1]):
                o_f[nb, c] = 0.0
            for c in range(o_i.shape[1]):
                o_i[nb, c] = 0
            # float accumulators: 0 pv, 1 buy, 2 sell, 3 rv, 4 n_r, 5 bv, 6 n_bv, 7 first mid,
            # 8 last finite mid, 9 last mid, 10 kyle n, 11 mx, 12 my, 13 cxx, 14 cxy,
            # 15 es sum, 16 es n, 17 rs sum, 18 rs n, 19 vpin sum, 20 vpin n, 21 last r
            o_f[nb, 7] = np.nan
            o_f[nb, 8] = np.nan
            o_f[nb, 21] = np.nan
            prev_in_bar = False
        f = o_f[nb]
        o_end[nb] = key + bar_param if bar_kind == 0 else t
        o_i[nb, 0] += 1
        m = mid[i]
        # returns between consecutive events of the bar
        if prev_in_bar:
            r = math.log(m / prev_mid) if (m > 0 and prev_mid > 0) else np.nan
            if r == r:
                f[3] += _mul(r, r)
                f[4] += 1.0
                if f[21] == f[21]:
                    f[5] += _mul(abs(r), abs(f[21]))
                    f[6] += 1.0
            f[21] = r
        if m == m:
            if f[7] != f[7]:
                f[7] = m
            f[8] = m
        f[9] = m
        if is_trade[i]:
            p = price[i]
            q = size[i]
            d = sign[i]
            o_i[nb, 1] += 1
            o_i[nb, 2] += np.int64(q)
            f[0] += _mul(p, q)
            if d > 0:
                f[1] += q
            elif d < 0:
                f[2] += q
            mb = prev_mid
            # Kyle: mid change over the trade event against signed volume (Welford)
            dm = m - mb
            if d != 0 and dm == dm:
                x = _mul(d, q)
                f[10] += 1.0
                dx = x - f[11]
                f[11] += dx / f[10]
                f[12] += (dm - f[12]) / f[10]
                f[13] += _mul(dx, x - f[11])
                f[14] += _mul(dx, dm - f[12])
            if mb == mb and mb > 0:
                f[15] += 2.0 * abs(p - mb) / mb
                f[16] += 1.0
                if d != 0 and t + horizon <= t_last:
                    if later < j:
                        later = j
                    while later + 1 < s1 and ts[order[later + 1]] <= t + horizon:
                        later += 1
                    ml = mid[order[later]]
                    if ml == ml:
                        f[17] += 2.0 * d * (p - ml) / mb
                        f[18] += 1.0
            # VPIN: buckets [k V, (k+1) V) of cumulative volume; a bucket ends at the trade
            # that reaches its upper bound
            if V > 0:
                c0 = cum
                c1 = cum + q
                while _mul(kb + 1, V) <= c1:
                    lo = _mul(kb, V)          # part of [c0, c1) in bucket kb: from max(c0, kb V)
                    part = _mul(kb + 1, V) - (c0 if c0 > lo else lo)
                    if d > 0:
                        bbuy += part
                    elif d < 0:
                        bsell += part
                    f[19] += abs(bbuy - bsell) / V
                    f[20] += 1.0
                    kb += 1
                    bbuy = 0.0
                    bsell = 0.0
                lo = _mul(kb, V)
                part = c1 - (c0 if c0 > lo else lo)
                if part > 0:
                    if d > 0:
                        bbuy += part
                    elif d < 0:
                        bsell += part
            cum += q
            vacc += q
        prev_mid = m
        prev_in_bar = True
    return nb + 1


@numba.njit(cache=True, nogil=True)
def _bar_kernel(order, starts, ts, mid, is_trade, price, size, sign, bar_kind, bar_param,
                horizon, bucket_v,
                o_group, o_start, o_end, o_f, o_i):
    """Walk every instrument's events once and write one row per non-empty bar, instruments one
    after another (:func:`_bar_group`).

    ``o_f[:, c]`` float outputs (see ``compute``), ``o_i[:, 0..2]`` event_count, trade_count,
    volume. Returns the number of bars written.
    """
    nb = 0
    for g in range(starts.shape[0] - 1):
        nb = _bar_group(g, order, starts, ts, mid, is_trade, price, size, sign, bar_kind,
                        bar_param, horizon, bucket_v[g], nb, o_group, o_start, o_end, o_f, o_i)
    return nb


def _trades_from_table(trades: pa.Table, mbo: pa.Table, inst: np.ndarray):
    """Trade mask, price, size and resting side per mbo row from a normalized ``trades`` table.

    The printable rows of every kind but ``B`` (broken) are placed on the mbo event with the same
    ``sequence`` (crosses ``Q`` included, which the mbo-derived trade set leaves out).
    """
    if isinstance(trades, pa.RecordBatch):
        trades = pa.Table.from_batches([trades])
    need = ("sequence", "price", "size", "instrument_id", "kind", "side", "printable")
    missing = [c for c in need if c not in trades.column_names]
    if missing:
        raise ValueError(f"The `trades` table lacks columns {missing}; pass the normalizer's 'trades' table.")
    kind = _np(trades, "kind", np.uint8)
    tp = _np(trades, "price", np.int64)
    tq = _np(trades, "size", np.uint64)
    keep = (_np(trades, "printable", np.uint8) == 1) & (kind != R.ACTION_BROKEN) \
        & (tp != R.UNDEF_PRICE) & (tq > 0)
    tseq = _np(trades, "sequence", np.uint64)[keep]
    mseq = _np(mbo, "sequence", np.uint64)
    o = np.argsort(mseq, kind="stable")
    pos = np.searchsorted(mseq[o], tseq)
    ok = pos < len(mseq)
    row = o[np.minimum(pos, max(len(mseq) - 1, 0))] if len(mseq) else pos
    ok &= (mseq[row] == tseq) if len(mseq) else ok
    if not ok.all():
        raise ValueError(f"The `trades` table has {int((~ok).sum())} printable rows whose sequence is "
                         f"not an mbo event's.")
    if len(np.unique(row)) != len(row) or np.any(inst[row] != _np(trades, "instrument_id", np.uint32)[keep]):
        raise ValueError("The `trades` rows must map one to one onto mbo events of the same instrument "
                         "(by sequence).")
    n = len(mseq)
    is_trade = np.zeros(n, bool)
    is_trade[row] = True
    price = np.zeros(n, np.int64)
    price[row] = tp[keep]
    size = np.zeros(n, np.uint64)
    size[row] = tq[keep]
    side = np.full(n, R.SIDE_NONE, np.uint8)
    side[row] = _np(trades, "side", np.uint8)[keep]
    return is_trade, price, size, side


@numba.njit(cache=True, nogil=True)
def _prepare(key, lut, cursor, last_ts, gvol, ts, bpx, apx, action, flags, price_i, size, side,
             mask, use_mask, o_ts, o_mid, o_trade, o_price, o_size, o_sign):
    """One pass over a run of events in input order: the bar loop's inputs of each event,
    written at its place in the grouped order (``cursor[g]``: the next row of group
    ``g = lut[key[i]]``), so that the bar loop reads every array in order.

    Per event: ts; mid from the level-0 prices (NaN when a side is empty); the trade mask
    (action EXECUTE or TRADE, printable, a price and a positive size; ``mask`` instead when
    ``use_mask``); trade price and size (0 when not a trade); sign of the resting side. Adds the
    trade sizes to the group's ``gvol`` in event order. Returns True when ``ts`` decreases
    within a group (``last_ts``: each group's last ``ts``). ``cursor``, ``last_ts`` and
    ``gvol`` carry over from one run to the next.
    """
    bad = False
    for i in range(key.shape[0]):
        g = lut[key[i]]
        p = cursor[g]
        cursor[g] = p + 1
        t = ts[i]
        if t < last_ts[g]:
            bad = True
        last_ts[g] = t
        b = bpx[i]
        a = apx[i]
        bp = np.nan if b == _UNDEF else b / _SCALE
        ap = np.nan if a == _UNDEF else a / _SCALE
        pr = price_i[i]
        q = size[i]
        if use_mask:
            tr = mask[i]
        else:
            ac = action[i]
            tr = (ac == _EXEC or ac == _TRADE) and (flags[i] & _PRINTABLE) != 0 \
                and pr != _UNDEF and q > 0
        s = side[i]
        o_ts[p] = t
        o_mid[p] = 0.5 * (bp + ap)
        o_trade[p] = tr
        if tr:
            qf = np.float64(q)
            o_price[p] = pr / _SCALE
        else:
            qf = 0.0
            o_price[p] = 0.0
        o_size[p] = qf
        gvol[g] += qf
        o_sign[p] = 1.0 if s == _ASK else (-1.0 if s == _BID else 0.0)
    return bad


@numba.njit(cache=True, nogil=True)
def _finish_kernel(f, ints, o_i, o_f):
    """The feature columns of each bar from its accumulators (see ``_bar_group``):
    ``o_i`` event_count, trade_count, volume; ``o_f`` vwap, signed_trade_imbalance, mid,
    realized_variance, bipower_variation, kyle_lambda, mid ratio last / first (amihud's log
    return, taken by NumPy afterwards), vpin, effective_spread, realized_spread."""
    nan = np.nan
    for k in range(f.shape[0]):
        for c in range(3):
            o_i[c, k] = ints[k, c]
        vol = np.float64(ints[k, 2])
        o_f[0, k] = f[k, 0] / vol if vol > 0 else nan
        o_f[1, k] = (f[k, 1] - f[k, 2]) / vol if vol > 0 else nan
        o_f[2, k] = f[k, 9]
        o_f[3, k] = f[k, 3] if f[k, 4] > 0 else nan
        o_f[4, k] = (np.pi / 2) * f[k, 5] if f[k, 6] > 0 else nan
        o_f[5, k] = f[k, 14] / f[k, 13] if (f[k, 10] >= 2 and f[k, 13] > 0) else nan
        o_f[6, k] = f[k, 8] / f[k, 7]
        o_f[7, k] = f[k, 19] / f[k, 20] if f[k, 20] > 0 else nan
        o_f[8, k] = f[k, 15] / f[k, 16] if f[k, 16] > 0 else nan
        o_f[9, k] = f[k, 17] / f[k, 18] if f[k, 18] > 0 else nan


@numba.njit(cache=True, nogil=True)
def _amihud_kernel(f, ret, out):
    for k in range(f.shape[0]):
        out[k] = abs(ret[k]) / f[k, 0] if f[k, 0] > 0 else np.nan


def _finish(f: np.ndarray, ints: np.ndarray) -> dict:
    """The bar feature columns (``BAR_COLUMNS``) from the accumulators of ``nb`` bars."""
    nb = f.shape[0]
    o_i = np.empty((3, nb), np.int64)
    o_f = np.empty((10, nb), np.float64)
    _finish_kernel(f, ints, o_i, o_f)
    ret = o_f[6]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.log(ret, out=ret)
    amihud = np.empty(nb, np.float64)
    _amihud_kernel(f, ret, amihud)
    return {"event_count": o_i[0], "trade_count": o_i[1], "volume": o_i[2],
            "vwap": o_f[0], "signed_trade_imbalance": o_f[1], "mid": o_f[2],
            "realized_variance": o_f[3], "bipower_variation": o_f[4], "kyle_lambda": o_f[5],
            "amihud": amihud, "vpin": o_f[7], "effective_spread": o_f[8], "realized_spread": o_f[9]}


def compute(mbo: pa.Table, *, book: pa.Table | None = None, bar: str = "1s", device: str = "auto",
            trades=None, realized_horizon: str | float = "5s",
            bucket_volume: float | None = None) -> pa.Table:
    """Bar features per (instrument_id, bar_start); see the module docstring and docs/features.md.

    ``bar``: a pandas frequency (``"1s"``, ``"1min"``, ...; epoch-aligned bars
    ``[floor(t / f) f, + f)``) or ``"volume:N"`` (a bar ends with the trade that brings its own
    volume to N shares or more; the next event opens the next bar). Only bars with at
    least one event are returned. ``book``: the book after each ``mbo`` event (same rows); built
    with ``kernels.book.reconstruct(mbo, levels=5)`` when None. ``realized_horizon``: the
    realized-spread horizon (Timedelta string or seconds). ``bucket_volume``: VPIN bucket size
    in shares (default: the instrument's total traded volume / 50). ``trades``: the normalizer's ``trades``
    table to take the trades from instead of ``mbo`` (printable rows, broken ones left out,
    crosses included; each placed on the ``mbo`` event with its ``sequence``). ``device``: "cpu"
    (numba loop), "gpu" (:mod:`kernels.features_gpu`, one CUDA thread per instrument; RuntimeError
    without a CUDA device) or "auto" (the GPU when there is one and at least
    ``kernels.book.GPU_MIN_EVENTS`` events, else the CPU). Both devices give the same rows.
    """
    _check_device(device)
    kind, param = parse_bar(bar)
    try:
        horizon = int(duration_value(realized_horizon).value) if isinstance(realized_horizon, str) \
            else int(round(float(realized_horizon) * _NS))
    except (ValueError, TypeError):
        horizon = -1
    if horizon < 0:
        raise ValueError(f"The `realized_horizon` must be a non-negative duration ('5s' or seconds), "
                         f"was {realized_horizon!r}.")
    if bucket_volume is not None and not (bucket_volume > 0):
        raise ValueError(f"The `bucket_volume` must be a positive number of shares or None, was {bucket_volume!r}.")
    if isinstance(mbo, pa.RecordBatch):
        mbo = pa.Table.from_batches([mbo])
    gpu = _use_gpu(device, mbo.num_rows)
    if book is None:
        from kernels.book import reconstruct
        book = reconstruct(mbo, levels=5, device="gpu" if gpu else "cpu")
    if book.num_rows != mbo.num_rows:
        raise ValueError(f"The `book` must have one row per mbo event ({mbo.num_rows}), has {book.num_rows}.")

    n = mbo.num_rows
    bpx = _chunks(book, "bid_px_0", np.int64)      # the bars need the mid only, not the other
    apx = _chunks(book, "ask_px_0", np.int64)      # per-event features
    inst = _chunks(mbo, "instrument_id", np.uint32)
    if trades is not None:
        is_trade, price_i, size, side = _trades_from_table(trades, mbo, np.concatenate(inst) if inst
                                                           else np.empty(0, np.uint32))
        mask = is_trade
        tcols = [[price_i], [size], [side]] if n else [[], [], []]
    else:
        mask = np.zeros(1, np.bool_)
        tcols = [_chunks(mbo, "price", np.int64), _chunks(mbo, "size", np.uint64),
                 _chunks(mbo, "side", np.uint8)]
    ginst, counts, keys, lut = _groups(inst, n)
    ng = len(ginst)
    starts = np.zeros(ng + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    # the events in grouped order (stable: input order within an instrument), one record per
    # event so that the scattered writes below and the bar loop's reads touch one line per event
    ev = np.empty(n, _EVENT)
    ts, mid, is_trade, price, sizef, sign = (ev[c] for c in _EVENT.names)
    cursor = starts[:-1].copy()
    last_ts = np.full(ng, np.iinfo(np.int64).min, np.int64)
    gvol = np.zeros(ng, np.float64)
    cols = [keys, _chunks(mbo, "ts_event", np.int64), bpx, apx, _chunks(mbo, "action", np.uint8),
            _chunks(mbo, "flags", np.uint8), *tcols]
    bad = False
    a = 0
    for k, ts_k, bpx_k, apx_k, action, flags, price_k, size_k, side_k in _segments(cols) if n else ():
        b = a + len(k)
        bad |= _prepare(k, lut, cursor, last_ts, gvol, ts_k, bpx_k, apx_k, action, flags, price_k,
                        size_k, side_k, mask[a:b] if trades is not None else mask,
                        trades is not None, ts, mid, is_trade, price, sizef, sign)
        a = b
    if bad:
        raise ValueError("The `mbo` ts_event must not decrease within an instrument.")
    order = np.arange(n, dtype=np.int64)     # the arrays above are already in grouped order
    if bucket_volume is None:
        bucket_v = gvol / DEFAULT_BUCKETS
    else:
        bucket_v = np.full(ng, float(bucket_volume))

    bar_kind = 0 if kind == "time" else 1
    if n and gpu:
        from kernels.features_gpu import bars_gpu
        o_group, o_start, o_end, o_f, o_i, nb = bars_gpu(
            order, starts, ts, mid, is_trade, price, sizef, sign, bar_kind, param, horizon, bucket_v)
    else:
        o_group = np.empty(n, np.int64)
        o_start = np.empty(n, np.int64)
        o_end = np.empty(n, np.int64)
        o_f = np.empty((n, N_ACC), np.float64)
        o_i = np.empty((n, 3), np.int64)
        nb = _bar_kernel(order, starts, ts, mid, is_trade, price, sizef, sign, bar_kind,
                         np.int64(param), np.int64(horizon), bucket_v,
                         o_group, o_start, o_end, o_f, o_i) if n else 0
    out = _finish(o_f[:nb], o_i[:nb])
    tsz = pa.timestamp("ns", tz="UTC")
    cols = {
        "instrument_id": pa.array(ginst[o_group[:nb]], pa.uint32()),
        "bar_start": pa.array(o_start[:nb], tsz),
        "bar_end": pa.array(o_end[:nb], tsz),
        **{c: out[c] for c in BAR_COLUMNS},
    }
    meta = {"tickpipe.schema": "features-bars", "tickpipe.bar": bar,
            "tickpipe.realized_horizon_ns": str(horizon)}
    t = pa.table(cols)
    return t.replace_schema_metadata(meta)
