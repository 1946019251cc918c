"""The best bid and offer book (``levels=1``, hashed levels) against the sorted-level book.

``levels=1`` keeps each side's levels in a hash table and tracks the best slot
(:mod:`kernels.levels`); ``levels >= 2`` keeps them sorted. Level 0 of both must agree after
every event, and so must the reports, on any event stream: many levels per side (the tables
grow), prices that collide in the hash, levels emptied in the middle of a probe run (backward
shift), the best level emptied (rescan), unknown orders, impossible executions and clears.
"""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

import normalize
from ingest.simulator import generate_session
from kernels.book import BookBuilder, reconstruct
from kernels.levels import hashed_find, hashed_room
from normalize import records as R

LEVEL0 = [f"{s}_{f}_0" for s in ("bid", "ask") for f in ("px", "sz", "ct")]
ACTIONS = [R.ACTION_ADD] * 5 + [R.ACTION_EXECUTE, R.ACTION_CANCEL, R.ACTION_DELETE] * 2 + [
    R.ACTION_REPLACE, R.ACTION_REPLACE, R.ACTION_TRADE, R.ACTION_CLEAR]


def _same_top(mbo, **kw):
    one = BookBuilder(levels=1, **kw)
    two = BookBuilder(levels=2)
    a, b = one.apply(mbo), two.apply(mbo)
    assert one.hashed and not two.hashed
    for c in ["instrument_id", "ts_event", "sequence"] + LEVEL0:
        assert a.column(c).equals(b.column(c)), c
    assert one.report == two.report
    return one


@st.composite
def event_streams(draw):
    n = draw(st.integers(1, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([3, 40, 400]))       # price levels a side may use
    c = R.alloc_columns("mbo", n, zero=True)
    c.action[:] = rng.choice(ACTIONS, n)
    c.instrument_id[:] = rng.integers(1, 4, n)
    c.order_id[:] = rng.integers(1, max(2, n // 2), n)  # references reused and unknown ones
    c.new_order_id[:] = rng.integers(1, n + 2, n)
    c.side[:] = rng.choice([R.SIDE_BID, R.SIDE_ASK, R.SIDE_BID, R.SIDE_ASK, R.SIDE_NONE], n)
    c.price[:] = (1000 + rng.integers(0, spread, n)) * R.PRICE4_TO_NANO * 100
    c.price[rng.random(n) < 0.1] = R.UNDEF_PRICE
    c.size[:] = rng.integers(0, 500, n)
    c.ts_event[:] = np.sort(rng.integers(0, 10**9, n))
    c.sequence[:] = np.arange(1, n + 1)
    return pa.Table.from_batches([R.columns_to_arrow("mbo", c)])


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.sampled_from([4, 8, 64]))
def test_any_event_stream_gives_the_same_best_levels_as_sorted_levels(mbo, initial):
    _same_top(mbo, initial_levels=initial)


def test_a_generated_session_gives_the_same_best_levels_growing_from_four_slots():
    s = generate_session(60_000, 12, seed=11)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date, resolve=False)["mbo"]
    b = _same_top(mbo, initial_levels=4)
    assert b._cap > 4                       # the tables grew on the way
    assert b.report.inconsistent == 0 and b.report.unknown == 0


def test_every_level_stays_findable_after_deletions_in_probe_runs():
    # one side, prices that all hash into a small table: adds and deletes in every order
    rng = np.random.default_rng(3)
    n = 3000
    c = R.alloc_columns("mbo", n, zero=True)
    live: dict[int, int] = {}
    next_ref = 1
    for i in range(n):
        if live and rng.random() < 0.45:
            ref = int(rng.choice(list(live)))
            c.action[i], c.order_id[i] = R.ACTION_DELETE, ref
            del live[ref]
        else:
            px = int(1000 + rng.integers(0, 30)) * R.PRICE_SCALE
            c.action[i], c.order_id[i], c.price[i], c.size[i] = R.ACTION_ADD, next_ref, px, 100
            live[next_ref] = px
            next_ref += 1
        c.side[i] = R.SIDE_BID if c.action[i] == R.ACTION_ADD else R.SIDE_NONE
        c.instrument_id[i], c.sequence[i] = 5, i + 1
    mbo = pa.Table.from_batches([R.columns_to_arrow("mbo", c)])
    b = _same_top(mbo, initial_levels=64)
    # every live price is in the hashed table, at the slot a lookup finds
    prices = sorted(set(live.values()))
    assert b.nlev[0, 0] == len(prices)
    for px in prices:
        slot, found = hashed_find(b.lv, 0, b._cap, px)
        assert found
        assert b.lv[(int(slot)) * 4] == px
    assert hashed_room(b.nlev[0, 0], b._cap)


def test_the_parallel_book_of_best_levels_equals_one_thread(monkeypatch):
    import kernels.book as KB
    s = generate_session(40_000, 9, seed=2)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date, resolve=False)["mbo"]
    monkeypatch.setattr(KB, "PARALLEL_MIN_EVENTS", 0)
    one = reconstruct(mbo, levels=1, device="cpu", threads=1)
    par = reconstruct(mbo, levels=1, device="cpu", threads=3)
    assert par.equals(one)
