"""The compiled order map against a plain dict, over random consistent order flow."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from normalize import records as R
from normalize.ordermap import OrderMap


def _flow(ops, n_inst=3, stride=1):
    """Turn (kind, pick, qty, px) draws into consistent mbo columns and the expected results
    (order references ``stride`` apart: 1 as ITCH assigns them, others to crowd the direct
    rows and exercise the spill)."""
    live: dict[int, list] = {}      # ref -> [price, remaining, side, inst]
    rows = []
    expect = []                     # per row: (price, side, size, flags-bit-of-interest)
    next_ref = 1
    for kind, pick, qty, px in ops:
        refs = sorted(live)
        if kind == "add" or not refs:
            side = R.SIDE_BID if pick % 2 else R.SIDE_ASK
            inst = pick % n_inst + 1
            price = (100 + px) * R.PRICE4_TO_NANO
            live[next_ref * stride] = [price, qty, side, inst]
            rows.append((R.ACTION_ADD, next_ref * stride, 0, price, qty, side, inst, 0))
            expect.append((price, side, qty))
            next_ref += 1
            continue
        ref = refs[pick % len(refs)]
        price, rem, side, inst = live[ref]
        if kind == "exec":
            q = min(qty, rem)
            rows.append((R.ACTION_EXECUTE, ref, 0, R.UNDEF_PRICE, q, R.SIDE_NONE, inst, R.F_PRINTABLE))
            expect.append((price, side, q))
            live[ref][1] -= q
            if live[ref][1] == 0:
                del live[ref]
        elif kind == "cancel":
            q = min(qty, rem)
            rows.append((R.ACTION_CANCEL, ref, 0, R.UNDEF_PRICE, q, R.SIDE_NONE, inst, 0))
            expect.append((price, side, q))
            live[ref][1] -= q
            if live[ref][1] == 0:
                del live[ref]
        elif kind == "delete":
            rows.append((R.ACTION_DELETE, ref, 0, R.UNDEF_PRICE, 0, R.SIDE_NONE, inst, 0))
            expect.append((price, side, rem))
            del live[ref]
        else:  # replace
            nprice = (100 + px) * R.PRICE4_TO_NANO
            rows.append((R.ACTION_REPLACE, ref, next_ref * stride, nprice, qty, R.SIDE_NONE, inst, 0))
            expect.append((nprice, side, qty))
            del live[ref]
            live[next_ref * stride] = [nprice, qty, side, inst]
            next_ref += 1
    m = R.alloc_columns("mbo", len(rows), zero=True)
    for i, (a, ref, new, price, size, side, inst, flags) in enumerate(rows):
        m.action[i], m.order_id[i], m.new_order_id[i], m.price[i] = a, ref, new, price
        m.size[i], m.side[i], m.instrument_id[i], m.flags[i] = size, side, inst, flags
    return m, expect, live


ops_strategy = st.lists(
    st.tuples(st.sampled_from(["add", "add", "exec", "cancel", "delete", "replace"]),
              st.integers(0, 10_000), st.integers(1, 500), st.integers(0, 50)),
    min_size=1, max_size=400)


@given(ops=ops_strategy, batch=st.integers(1, 64), cap=st.sampled_from([16, 64, 1 << 12]),
       stride=st.sampled_from([1, 1, 16, 4097, (1 << 20) + 1, 0x9E3779B97F4A7C15 >> 40]))
@settings(max_examples=200, deadline=None)
def test_order_map_resolves_price_side_and_size_like_a_dict(ops, batch, cap, stride):
    m, expect, live = _flow(ops, stride=stride)
    om = OrderMap(capacity=cap)
    n = m.action.shape[0]
    for s in range(0, n, batch):           # streaming: state carried across batches
        part = R.COLUMNS["mbo"](*(c[s:s + batch] for c in m))
        om.apply(part)
    assert [(int(p), int(sd), int(sz)) for p, sd, sz in zip(m.price, m.side, m.size)] == \
           [(int(p), int(sd), int(sz)) for p, sd, sz in expect]
    assert not (m.flags & (R.F_BAD | R.F_UNKNOWN_ORDER)).any()
    got = om.live_orders()
    assert len(om) == len(live)
    assert got["order_id"].tolist() == sorted(live)
    assert got["remaining"].tolist() == [live[r][1] for r in sorted(live)]
    assert got["price"].tolist() == [live[r][0] for r in sorted(live)]


def test_order_map_flags_events_for_orders_it_never_saw():
    m = R.alloc_columns("mbo", 2, zero=True)
    m.action[:] = [R.ACTION_EXECUTE, R.ACTION_DELETE]
    m.order_id[:] = [77, 78]
    m.price[:] = R.UNDEF_PRICE
    m.size[:] = [100, 0]
    m.side[:] = R.SIDE_NONE
    om = OrderMap()
    trades = om.apply(m)
    assert (m.flags & R.F_UNKNOWN_ORDER).all()
    assert om.unknown == 2
    assert trades.price.tolist() == [R.UNDEF_PRICE] and trades.side.tolist() == [R.SIDE_NONE]


def test_order_map_flags_an_execution_larger_than_the_order():
    m = R.alloc_columns("mbo", 2, zero=True)
    m.action[:] = [R.ACTION_ADD, R.ACTION_EXECUTE]
    m.order_id[:] = [5, 5]
    m.price[:] = [10 * R.PRICE_SCALE, R.UNDEF_PRICE]
    m.size[:] = [100, 150]
    m.side[0] = R.SIDE_BID
    om = OrderMap()
    om.apply(m)
    assert m.flags[1] & R.F_BAD
    assert len(om) == 0


def test_order_map_survives_many_rebuilds_with_sequential_references():
    n = 50_000
    m = R.alloc_columns("mbo", 2 * n, zero=True)
    refs = np.arange(1, n + 1, dtype=np.uint64)
    m.action[:n] = R.ACTION_ADD
    m.order_id[:n] = refs
    m.price[:n] = refs.astype(np.int64) * 1000
    m.size[:n] = 100
    m.side[:n] = R.SIDE_ASK
    m.action[n:] = R.ACTION_DELETE
    m.order_id[n:] = refs[::-1]
    om = OrderMap(capacity=16)
    om.apply(m)
    assert len(om) == 0
    assert (m.price[n:] == refs[::-1].astype(np.int64) * 1000).all()
    assert (m.size[n:] == 100).all()


def test_orders_pushed_out_of_their_direct_row_are_found_in_the_spill():
    om = OrderMap(capacity=16)          # 16 direct rows: references 16 apart share one
    refs = np.array([3 + 16 * k for k in range(40)] + [5, 21], np.uint64)
    n = refs.size
    m = R.alloc_columns("mbo", 2 * n, zero=True)
    m.action[:n] = R.ACTION_ADD
    m.order_id[:n] = refs
    m.price[:n] = np.arange(n) * R.PRICE_SCALE
    m.size[:n] = np.arange(n) + 1
    m.side[:n] = R.SIDE_BID
    m.action[n:] = R.ACTION_DELETE
    m.order_id[n:] = refs[::-1]
    om.apply(R.slice_columns(m, n))
    assert len(om) == n and om.spilled >= n - 16 and om.spill >= 2 * om.spilled
    assert om.live_orders()["order_id"].tolist() == sorted(refs.tolist())
    rest = R.COLUMNS["mbo"](*(c[n:] for c in m))
    om.apply(rest)
    assert len(om) == 0 and om.spilled == 0
    assert (rest.size == (np.arange(n) + 1)[::-1]).all()
    assert (rest.price == (np.arange(n) * R.PRICE_SCALE)[::-1]).all()
