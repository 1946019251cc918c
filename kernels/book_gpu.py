"""Order-book reconstruction on a CUDA GPU: one thread per instrument (numba.cuda).

Events are grouped by instrument with a stable sort; thread ``j`` walks instrument ``j``'s
events in their original order, keeping that instrument's orders in its own open-addressing
table (a slice of one flat pool, sized so it never needs rebuilding) and its price levels in its
own slice of flat level arrays (best level last). It writes the top ``levels`` of the book after
each event at the event's original row, so the output equals :func:`kernels.book.reconstruct`'s
row for row. The semantics are the CPU ones (see :mod:`kernels.book`); the level operations are
the same compiled functions on both devices (``level_pos``, ``level_add``, ``level_sub``).

Runs on a real GPU when ``numba.cuda.is_available()``; CI runs it under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) on small inputs and checks it against the CPU row for row.
"""

from __future__ import annotations


import numba
import numpy as np
from numba import cuda

from kernels import levels as _levels
from kernels.devicefn import python_twin as _python_twin
from kernels.levels import ASK, BID, PX, W
from normalize import records as R

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


if SIMULATOR:
    _pos = _python_twin(_levels.level_pos, _better_or_equal=_levels._better_or_equal.py_func,
                        _px=_levels._px.py_func)
    level_add = _python_twin(_levels.level_add, level_pos=_pos)
    level_sub = _python_twin(_levels.level_sub, level_pos=_pos)
    _side = _levels.side_index.py_func
    write_top = _levels.write_top.py_func
    _device = lambda f: f                                        # noqa: E731
else:
    level_add, level_sub = _levels.level_add, _levels.level_sub   # compiled for the device
    _side = _levels.side_index
    write_top = _levels.write_top
    _device = numba.njit(inline="always")

THREADS = 64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


if SIMULATOR:
    def _h(key, mask):        # Python integers: the same 64-bit product, without overflow noise
        return (((int(key) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 32) & int(mask)
else:
    @numba.njit(inline="always")
    def _h(key, mask):
        return np.int64(((key * _GOLDEN) >> np.uint64(32)) & np.uint64(mask))


@_device
def h_find(keys, base, mask, key):
    """Slot of ``key`` in the table ``keys[base : base + mask + 1]``, or -1 (0 = empty)."""
    if key == 0:
        return -1
    i = _h(key, mask)
    for _ in range(mask + 1):
        k = keys[base + i]
        if k == key:
            return base + i
        if k == 0:
            return -1
        i = (i + 1) & mask
    return -1


@_device
def h_insert(keys, base, mask, key):
    """Slot for ``key`` (its own, else the first empty one); -1 when the table is full."""
    i = _h(key, mask)
    for _ in range(mask + 1):
        k = keys[base + i]
        if k == key or k == 0:
            return base + i
        i = (i + 1) & mask
    return -1


TOMBSTONE = np.uint64(0xFFFFFFFFFFFFFFFF)   # a deleted order (tables are sized never to fill)


@cuda.jit
def _book_kernel(order, starts, action, order_id, new_order_id, price, size, side, ts,
                 keys, kprice, krem, kside, kbase, kmask, lv, lbase, lcap, nlev,
                 out_px, out_sz, out_ct, tally):
    j = cuda.grid(1)
    if j >= starts.shape[0] - 1:
        return
    kb = kbase[j]
    km = kmask[j]
    last = ts[order[starts[j]]] if starts[j + 1] > starts[j] else 0
    for t in range(starts[j], starts[j + 1]):
        i = order[t]
        a = action[i]
        if ts[i] < last:
            tally[j, 4] += 1
        else:
            last = ts[i]
        if a == R.ACTION_ADD:
            s = _side(side[i])
            if s < 0 or price[i] == R.UNDEF_PRICE:
                tally[j, 3] += 1
            else:
                slot = h_insert(keys, kb, km, order_id[i])
                if slot >= 0 and order_id[i] != 0:
                    if keys[slot] == order_id[i]:
                        b = lbase[j, _side(kside[slot])]
                        m = level_sub(lv, b, nlev[j, _side(kside[slot])],
                                      _side(kside[slot]), kprice[slot], krem[slot], 1)
                        if m >= 0:
                            nlev[j, _side(kside[slot])] = m
                        tally[j, 3] += 1
                    keys[slot] = order_id[i]
                    kprice[slot] = price[i]
                    krem[slot] = size[i]
                    kside[slot] = side[i]
                m = level_add(lv, lbase[j, s], nlev[j, s], lcap[j], s, price[i], size[i], 1)
                if m >= 0:
                    nlev[j, s] = m
                else:
                    tally[j, 3] += 1
        elif a == R.ACTION_EXECUTE or a == R.ACTION_CANCEL or a == R.ACTION_DELETE:
            slot = h_find(keys, kb, km, order_id[i])
            if slot < 0:
                s = _side(side[i])
                if s >= 0 and price[i] != R.UNDEF_PRICE and size[i] > 0:
                    m = level_sub(lv, lbase[j, s], nlev[j, s], s, price[i], size[i], 0)
                    if m >= 0:
                        nlev[j, s] = m
                    else:
                        tally[j, 3] += 1
                    tally[j, 1] += 1
                else:
                    tally[j, 0] += 1
            else:
                rem = krem[slot]
                q = rem if a == R.ACTION_DELETE else size[i]
                if q > rem:
                    tally[j, 3] += 1
                    q = rem
                s = _side(kside[slot])
                m = level_sub(lv, lbase[j, s], nlev[j, s], s, kprice[slot], q,
                              1 if q >= rem else 0)
                if m >= 0:
                    nlev[j, s] = m
                else:
                    tally[j, 3] += 1
                if q >= rem:
                    keys[slot] = TOMBSTONE
                else:
                    krem[slot] = rem - q
        elif a == R.ACTION_REPLACE:
            slot = h_find(keys, kb, km, order_id[i])
            sd = side[i]
            if slot >= 0:
                sd = kside[slot]
                s = _side(sd)
                m = level_sub(lv, lbase[j, s], nlev[j, s], s, kprice[slot], krem[slot], 1)
                if m >= 0:
                    nlev[j, s] = m
                else:
                    tally[j, 3] += 1
                keys[slot] = TOMBSTONE
            s = _side(sd)
            if s < 0:
                tally[j, 0] += 1
            else:
                if slot < 0:
                    tally[j, 1] += 1
                slot2 = h_insert(keys, kb, km, new_order_id[i])
                if slot2 >= 0:
                    keys[slot2] = new_order_id[i]
                    kprice[slot2] = price[i]
                    krem[slot2] = size[i]
                    kside[slot2] = sd
                m = level_add(lv, lbase[j, s], nlev[j, s], lcap[j], s, price[i], size[i], 1)
                if m >= 0:
                    nlev[j, s] = m
                else:
                    tally[j, 3] += 1
        elif a == R.ACTION_CLEAR:
            nlev[j, BID] = 0
            nlev[j, ASK] = 0
        nb = nlev[j, BID]
        na = nlev[j, ASK]
        tb = (lbase[j, BID] + nb - 1) * W        # top level of each side
        ta = (lbase[j, ASK] + na - 1) * W
        if nb > 0 and na > 0 and lv[tb + PX] >= lv[ta + PX]:
            tally[j, 2] += 1
        write_top(lv, tb, ta, nb, na, out_px, out_sz, out_ct, i)


def _pow2(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 2))).astype(np.int64)).astype(np.int64)


class GpuBook:
    """One reconstruction on the device, in steps a benchmark can time apart.

    ``GpuBook(cols, levels)`` groups the events by instrument on the host (stable sort) and
    sizes each instrument's order table and level slice; :meth:`to_device` copies the inputs
    over; :meth:`run` launches the kernel and waits for it; :meth:`fetch` copies the book back
    as ``(out_px, out_sz, out_ct)`` (``[side, level, event]``) and returns the tallies summed
    over instruments.
    """

    def __init__(self, cols: dict, levels: int):
        self.levels = levels
        self.n = n = cols["action"].shape[0]
        inst_ids, ix = np.unique(cols["instrument_id"], return_inverse=True)
        self.n_inst = n_inst = inst_ids.size
        self.order = np.argsort(ix, kind="stable").astype(np.int64)
        per = np.bincount(ix, minlength=n_inst)
        self.starts = np.zeros(n_inst + 1, np.int64)
        np.cumsum(per, out=self.starts[1:])
        grows = (cols["action"] == R.ACTION_ADD) | (cols["action"] == R.ACTION_REPLACE)
        inserts = np.bincount(ix, weights=grows, minlength=n_inst).astype(np.int64)
        self.kcap = _pow2(2 * inserts + 2)             # never more than half full: no rebuilds
        self.kbase = np.zeros(n_inst, np.int64)
        np.cumsum(self.kcap[:-1], out=self.kbase[1:])
        self.lcap = inserts + 2                        # each insert makes at most one level
        side_base = np.zeros(2 * n_inst, np.int64)
        np.cumsum(np.repeat(self.lcap, 2)[:-1], out=side_base[1:])
        self.lbase = side_base.reshape(n_inst, 2).copy()
        self.total_levels = int(2 * self.lcap.sum())
        self.cols = cols
        self.dev = None

    def to_device(self) -> "GpuBook":
        d = cuda.to_device
        c = self.cols
        ktot = int(self.kcap.sum())
        n, L = self.n, self.levels
        self.dev = dict(
            order=d(self.order), starts=d(self.starts), action=d(c["action"]),
            order_id=d(c["order_id"]), new_order_id=d(c["new_order_id"]), price=d(c["price"]),
            size=d(c["size"]), side=d(c["side"]), ts=d(c["ts_event"]),
            keys=d(np.zeros(ktot, np.uint64)), kprice=d(np.zeros(ktot, np.int64)),
            krem=d(np.zeros(ktot, np.uint64)), kside=d(np.zeros(ktot, np.uint8)),
            kbase=d(self.kbase), kmask=d(self.kcap - 1),
            lv=d(np.zeros(self.total_levels * W, np.int64)), lbase=d(self.lbase), lcap=d(self.lcap),
            nlev=d(np.zeros((self.n_inst, 2), np.int64)),
            out_px=cuda.device_array((2, L, n), np.int64),       # [side, level, event]
            out_sz=cuda.device_array((2, L, n), np.uint64),
            out_ct=cuda.device_array((2, L, n), np.uint32),
            tally=d(np.zeros((self.n_inst, 5), np.int64)))
        return self

    def reset(self) -> None:
        """Empty order tables and books on the device (to run the same events again)."""
        v = self.dev
        for name in ("keys", "kprice", "krem", "kside", "lv", "nlev", "tally"):
            v[name] = cuda.to_device(np.zeros(v[name].shape, v[name].dtype))

    def run(self) -> None:
        v = self.dev
        blocks = (self.n_inst + THREADS - 1) // THREADS
        if self.n_inst:
            _book_kernel[blocks, THREADS](
                v["order"], v["starts"], v["action"], v["order_id"], v["new_order_id"],
                v["price"], v["size"], v["side"], v["ts"], v["keys"], v["kprice"], v["krem"], v["kside"],
                v["kbase"], v["kmask"], v["lv"], v["lbase"], v["lcap"], v["nlev"],
                v["out_px"], v["out_sz"], v["out_ct"], v["tally"])
        cuda.synchronize()

    def fetch(self):
        v = self.dev
        return (v["out_px"].copy_to_host(), v["out_sz"].copy_to_host(), v["out_ct"].copy_to_host(),
                v["tally"].copy_to_host().sum(axis=0))


def reconstruct_gpu(cols: dict, levels: int):
    """Book arrays ``(out_px, out_sz, out_ct, tally_totals)`` for event columns ``cols``
    (``action, order_id, new_order_id, price, size, side, instrument_id`` as NumPy arrays)."""
    g = GpuBook(cols, levels).to_device()
    g.run()
    return g.fetch()
