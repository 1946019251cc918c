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

Python dispatches whole columns; the compiled loops (numba, ``cache=True``) walk the events of
one instrument after another (a stable sort by instrument groups them; within an instrument the
input order is kept and ``ts_event`` must not decrease).

Devices: :func:`compute` runs the bar loop on the CPU (``device="cpu"``) or on a CUDA GPU
(``"gpu"``: :mod:`kernels.features_gpu`, one thread per instrument; ``"auto"``: the GPU when
there is one and the input is large, see :func:`_use_gpu`). Both devices run the same function
for one instrument's bars (:func:`_bar_group`) and return the same rows; the inputs are prepared
and the features finished on the host by the same code. :func:`per_event` runs on the CPU.
"""

from __future__ import annotations

import functools
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
        td = pd.Timedelta(bar)
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


@numba.njit(cache=True, nogil=True)
def _ofi_kernel(order, starts, bpx, bsz, apx, asz, out):
    """OFI e_n per event, instruments one after another (``order[starts[g]:starts[g+1]]``).

    Empty sides carry price -inf (bid) / +inf (ask) and size 0 (UNDEF_PRICE is mapped by the
    caller); the state before an instrument's first event is the empty book.
    """
    for g in range(starts.shape[0] - 1):
        pb = -np.inf
        qb = 0.0
        pa_ = np.inf
        qa = 0.0
        for j in range(starts[g], starts[g + 1]):
            i = order[j]
            b = bpx[i]
            a = apx[i]
            e = 0.0
            if b >= pb:
                e += bsz[i]
            if b <= pb:
                e -= qb
            if a <= pa_:
                e -= asz[i]
            if a >= pa_:
                e += qa
            out[i] = e
            pb = b
            qb = bsz[i]
            pa_ = a
            qa = asz[i]


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


def per_event(book: pa.Table) -> pa.Table:
    """Per-event features of a book table (one row per book row, same order).

    Columns: instrument_id, ts_event, spread, mid, microprice, imbalance_l1, imbalance_l5, ofi
    (float64; prices in currency units). NaN where a needed side is empty; ``ofi`` is always
    defined (an empty side counts as price -inf / +inf with size 0).
    """
    L = _levels_of(book)
    n = book.num_rows
    side = functools.partial(_level, book)
    bp, bq, bempty = side("bid", 0)
    ap, aq, aempty = side("ask", 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = ap - bp
        mid = 0.5 * (ap + bp)
        micro = (bp * aq + ap * bq) / (bq + aq)
        imb1 = (bq - aq) / (bq + aq)
        bsum = bq.copy()
        asum = aq.copy()
        for k in range(1, min(L5, L)):
            bsum += side("bid", k)[1]
            asum += side("ask", k)[1]
        imb5 = (bsum - asum) / (bsum + asum)
    imb1[bempty | aempty] = np.nan
    imb5[bempty | aempty] = np.nan
    micro[bempty | aempty] = np.nan

    inst = _np(book, "instrument_id", np.uint32)
    order, starts, _ = _group(inst)
    ofi = np.empty(n)
    bpx = np.where(bempty, -np.inf, bp)
    apx = np.where(aempty, np.inf, ap)
    _ofi_kernel(order, starts, bpx, bq, apx, aq, ofi)
    return pa.table({
        "instrument_id": book.column("instrument_id"), "ts_event": book.column("ts_event"),
        "spread": spread, "mid": mid, "microprice": micro, "imbalance_l1": imb1,
        "imbalance_l5": imb5, "ofi": ofi})


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


def _trades_mask(action, flags, price, size):
    return (((action == R.ACTION_EXECUTE) | (action == R.ACTION_TRADE))
            & ((flags & R.F_PRINTABLE) != 0) & (price != R.UNDEF_PRICE) & (size > 0))


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
        horizon = int(pd.Timedelta(realized_horizon).value) if isinstance(realized_horizon, str) \
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

    mid = _mid(book)       # the bars need the mid only, not the other per-event features
    inst = _np(mbo, "instrument_id", np.uint32)
    ts = _np(mbo, "ts_event", np.int64)
    action = _np(mbo, "action", np.uint8)
    flags = _np(mbo, "flags", np.uint8)
    price_i = _np(mbo, "price", np.int64)
    size = _np(mbo, "size", np.uint64)
    side = _np(mbo, "side", np.uint8)
    is_trade = _trades_mask(action, flags, price_i, size)
    if trades is not None:
        is_trade, price_i, size, side = _trades_from_table(trades, mbo, inst)
    price = np.where(is_trade, price_i / float(R.PRICE_SCALE), 0.0)
    sizef = np.where(is_trade, size.astype(np.float64), 0.0)
    sign = np.where(side == R.SIDE_ASK, 1.0, np.where(side == R.SIDE_BID, -1.0, 0.0))

    order, starts, ginst = _group(inst)
    tso = ts[order]
    if len(tso) > 1 and np.any((np.diff(tso) < 0) & (np.diff(inst[order].astype(np.int64)) == 0)):
        raise ValueError("The `mbo` ts_event must not decrease within an instrument.")
    gid = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    gvol = np.bincount(gid, weights=sizef[order], minlength=len(starts) - 1)
    if bucket_volume is None:
        bucket_v = gvol / DEFAULT_BUCKETS
    else:
        bucket_v = np.full(len(starts) - 1, float(bucket_volume))

    n = mbo.num_rows
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
    f = o_f[:nb]
    ints = o_i[:nb]
    with np.errstate(invalid="ignore", divide="ignore"):
        vol = ints[:, 2].astype(np.float64)
        vwap = np.where(vol > 0, f[:, 0] / vol, np.nan)
        sti = np.where(vol > 0, (f[:, 1] - f[:, 2]) / vol, np.nan)
        rv = np.where(f[:, 4] > 0, f[:, 3], np.nan)
        bv = np.where(f[:, 6] > 0, (np.pi / 2) * f[:, 5], np.nan)
        kyle = np.where((f[:, 10] >= 2) & (f[:, 13] > 0), f[:, 14] / f[:, 13], np.nan)
        ret = np.log(f[:, 8] / f[:, 7])
        amihud = np.where(f[:, 0] > 0, np.abs(ret) / f[:, 0], np.nan)
        vpin = np.where(f[:, 20] > 0, f[:, 19] / f[:, 20], np.nan)
        es = np.where(f[:, 16] > 0, f[:, 15] / f[:, 16], np.nan)
        rs = np.where(f[:, 18] > 0, f[:, 17] / f[:, 18], np.nan)
    tsz = pa.timestamp("ns", tz="UTC")
    cols = {
        "instrument_id": pa.array(ginst[o_group[:nb]], pa.uint32()),
        "bar_start": pa.array(o_start[:nb], tsz),
        "bar_end": pa.array(o_end[:nb], tsz),
        "event_count": pa.array(ints[:, 0]),
        "trade_count": pa.array(ints[:, 1]),
        "volume": pa.array(ints[:, 2]),
        "vwap": vwap, "signed_trade_imbalance": sti, "mid": f[:, 9].copy(),
        "realized_variance": rv, "bipower_variation": bv, "kyle_lambda": kyle, "amihud": amihud,
        "vpin": vpin, "effective_spread": es, "realized_spread": rs,
    }
    meta = {"tickpipe.schema": "features-bars", "tickpipe.bar": bar,
            "tickpipe.realized_horizon_ns": str(horizon)}
    t = pa.table(cols)
    return t.replace_schema_metadata(meta)
