"""The book's order table (16-byte rows and the general map behind them) against a plain
Python book.

:mod:`kernels.orders` keeps an order in a 16-byte row when its price is a multiple of 1e-4 that
fits in 31 bits, its size fits in 32 and its row is free; otherwise in the general map. Which
of the two holds an order must never change a book: the streams below mix orders of both kinds,
references reused while live, reserved references (0 and 2**64-1), unknown orders and rows
taken by older orders (16 rows), and every book after every event, the report and the live
orders must equal those of a dict-and-list book written here from the semantics in
:mod:`kernels.book`'s docstring.
"""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.book import BookBuilder
from kernels.orders import BookOrders
from normalize import records as R

U = R.UNDEF_PRICE
ACTIONS = [R.ACTION_ADD] * 5 + [R.ACTION_EXECUTE, R.ACTION_CANCEL, R.ACTION_DELETE] * 2 + [
    R.ACTION_REPLACE, R.ACTION_REPLACE, R.ACTION_TRADE, R.ACTION_CLEAR]
TOMB = 2**64 - 1


def _side(code):
    return {R.SIDE_BID: 0, R.SIDE_ASK: 1}.get(int(code), -1)


class PlainBook:
    """Levels as dicts price -> [shares, orders]; orders as a dict."""

    def __init__(self):
        self.levels = {}                       # instrument -> (bids, asks)
        self.orders = {}                       # reference -> [price, remaining, side code, inst]
        self.unknown = self.applied_unknown = self.inconsistent = self.crossed = 0

    def side(self, inst, s):
        return self.levels.setdefault(inst, ({}, {}))[s]

    def sub(self, inst, s, price, qty, dcount):
        lv = self.side(inst, s)
        if price not in lv:
            return False
        level = lv[price]
        if level[0] > qty:
            level[0] -= qty
            level[1] = level[1] - dcount if level[1] > dcount else 0
        else:
            del lv[price]
        return True

    def add(self, inst, s, price, qty):
        level = self.side(inst, s).setdefault(price, [0, 0])
        level[0] += qty
        level[1] += 1

    def store(self, oid, price, size, sd, inst):
        if oid not in (0, TOMB):               # reserved references are never stored
            self.orders[oid] = [price, size, sd, inst]

    def apply(self, a, oid, noid, px, sz, sd0, inst):
        if a == R.ACTION_ADD:
            s = _side(sd0)
            if s < 0 or px == U:
                self.inconsistent += 1
                return
            if oid in self.orders:             # reused live reference: its old shares leave
                p0, rem, sd, _ = self.orders[oid]
                self.sub(inst, _side(sd), p0, rem, 1)
                self.inconsistent += 1
            self.store(oid, px, sz, sd0, inst)
            self.add(inst, s, px, sz)
        elif a in (R.ACTION_EXECUTE, R.ACTION_CANCEL, R.ACTION_DELETE):
            if oid not in self.orders:
                s = _side(sd0)
                if s >= 0 and px != U and sz > 0:
                    if not self.sub(inst, s, px, sz, 0):
                        self.inconsistent += 1
                    self.applied_unknown += 1
                else:
                    self.unknown += 1
                return
            o = self.orders[oid]
            rem = o[1]
            q = rem if a == R.ACTION_DELETE else sz
            if q > rem:
                self.inconsistent += 1
                q = rem
            gone = q >= rem
            if not self.sub(inst, _side(o[2]), o[0], q, 1 if gone else 0):
                self.inconsistent += 1
            if gone:
                del self.orders[oid]
            else:
                o[1] = rem - q
        elif a == R.ACTION_REPLACE:
            sd = sd0
            known = oid in self.orders
            if known:
                p0, rem, sd, _ = self.orders.pop(oid)
                if not self.sub(inst, _side(sd), p0, rem, 1):
                    self.inconsistent += 1
            s = _side(sd)
            if s < 0:
                self.unknown += 1
                return
            if not known:
                self.applied_unknown += 1
            self.store(noid, px, sz, sd, inst)
            self.add(inst, s, px, sz)
        elif a == R.ACTION_CLEAR:
            self.levels[inst] = ({}, {})

    def top(self, inst, levels):
        bids, asks = self.side(inst, 0), self.side(inst, 1)
        if bids and asks and max(bids) >= min(asks):
            self.crossed += 1
        out = []
        for lv, best_first in ((bids, True), (asks, False)):
            prices = sorted(lv, reverse=best_first)[:levels]
            rows = [(p, lv[p][0], lv[p][1]) for p in prices]
            out.append(rows + [(U, 0, 0)] * (levels - len(rows)))
        return out


@st.composite
def mixed_streams(draw, undefined_prices=True):
    """Events whose orders take 16-byte rows or the general map, with references reused."""
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    c = R.alloc_columns("mbo", n, zero=True)
    c.action[:] = rng.choice(ACTIONS, n)
    c.instrument_id[:] = rng.integers(1, 4, n)
    c.order_id[:] = rng.integers(0, max(2, n // 2), n)        # 0: a reserved reference
    c.order_id[rng.random(n) < 0.02] = TOMB
    c.new_order_id[:] = rng.integers(1, n + 2, n)
    c.side[:] = rng.choice([R.SIDE_BID, R.SIDE_ASK, R.SIDE_BID, R.SIDE_ASK, R.SIDE_NONE], n)
    px = (1000 + rng.integers(0, 12, n)) * R.PRICE4_TO_NANO * 100    # fits a 16-byte row
    kind = rng.random(n)
    px[kind < 0.15] += rng.integers(1, R.PRICE4_TO_NANO, int((kind < 0.15).sum()))  # not 1e-4
    px[(kind >= 0.15) & (kind < 0.2)] = 2**31 * R.PRICE4_TO_NANO                     # too large
    px[(kind >= 0.2) & (kind < 0.25)] *= -1                                          # negative
    if undefined_prices:
        px[(kind >= 0.25) & (kind < 0.3)] = U
    c.price[:] = px
    c.size[:] = rng.integers(0, 500, n)
    big = rng.random(n) < 0.08
    c.size[big] = 2**32 + rng.integers(0, 500, int(big.sum()))                        # too many shares
    c.ts_event[:] = np.sort(rng.integers(0, 10**9, n))
    c.sequence[:] = np.arange(1, n + 1)
    return pa.Table.from_batches([R.columns_to_arrow("mbo", c)])


def _check(mbo, levels, rows):
    b = BookBuilder(levels=levels, orders=rows)
    got = b.apply(mbo).to_pydict()
    ref = PlainBook()
    cols = mbo.to_pydict()
    for i in range(mbo.num_rows):
        inst = cols["instrument_id"][i]
        ref.apply(cols["action"][i], cols["order_id"][i], cols["new_order_id"][i],
                  cols["price"][i], cols["size"][i], cols["side"][i], inst)
        want = ref.top(inst, levels)
        for s, name in enumerate(("bid", "ask")):
            for k in range(levels):
                row = tuple(got[f"{name}_{f}_{k}"][i] for f in ("px", "sz", "ct"))
                assert row == want[s][k], (i, name, k)
    r = b.report
    assert (r.unknown, r.applied_unknown, r.inconsistent, r.crossed) == (
        ref.unknown, ref.applied_unknown, ref.inconsistent, ref.crossed)
    live = b.live_orders()
    assert live["order_id"].tolist() == sorted(ref.orders)
    assert [[int(x["price"]), int(x["remaining"]), int(x["side"]), int(x["instrument_id"])]
            for x in live] == [ref.orders[k] for k in sorted(ref.orders)]
    assert len(b.orders) == len(ref.orders)
    return b


@settings(max_examples=120, deadline=None)
@given(mixed_streams(), st.sampled_from([1, 3]), st.sampled_from([16, 1024]))
def test_any_mix_of_orders_gives_the_books_of_a_plain_python_book(mbo, levels, rows):
    _check(mbo, levels, rows)


@settings(max_examples=40, deadline=None)
@given(mixed_streams(undefined_prices=False))
def test_a_snapshot_of_mixed_orders_carries_every_live_order_to_a_new_book(mbo):
    # (no undefined prices: a replace without one stores an order that a snapshot's add refuses)
    a = BookBuilder(levels=3, orders=16)
    a.apply(mbo)
    b = BookBuilder(levels=3, orders=1024)
    b.apply(a.snapshot())
    assert b.live_orders().tolist() == a.live_orders().tolist()
    assert b.snapshot().equals(a.snapshot())


def test_orders_that_fit_take_rows_and_the_rest_the_general_map():
    p = 1234 * R.PRICE4_TO_NANO
    rows = [(1, p, 100), (2, p + 1, 100), (3, 2**31 * R.PRICE4_TO_NANO, 100), (4, p, 2**32),
            (17, p, 5)]                       # 17 takes row 1, held by order 1: the map
    c = R.alloc_columns("mbo", len(rows), zero=True)
    for i, (oid, px, sz) in enumerate(rows):
        c.action[i], c.order_id[i], c.side[i] = R.ACTION_ADD, oid, R.SIDE_BID
        c.price[i], c.size[i], c.instrument_id[i], c.sequence[i] = px, sz, 9, i + 1
    b = BookBuilder(levels=1, orders=16)
    b.apply(pa.Table.from_batches([R.columns_to_arrow("mbo", c)]))
    assert isinstance(b.orders, BookOrders)
    assert (b.orders.narrow, b.orders.wide.count, len(b.orders)) == (1, 4, 5)
    lo = b.live_orders()
    assert lo["order_id"].tolist() == [1, 2, 3, 4, 17]
    assert lo["price"].tolist() == [r[1] for r in rows]
    assert lo["remaining"].tolist() == [r[2] for r in rows]
    assert set(lo["instrument_id"].tolist()) == {9}
