"""Book reconstruction against the simulator's ground truth and hand-built cases."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import normalize
from ingest.simulator import generate_session
from kernels.book import BookBuilder, book_report, reconstruct, shard_instruments
from normalize import records as R

L = 5


@pytest.fixture(scope="module")
def session():
    s = generate_session(120_000, 15, seed=5)
    return s, normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"]


def _levels(orders: pd.DataFrame, side: int, levels: int):
    g = orders[orders.side == side].groupby("price").shares.agg(["sum", "count"])
    g = g.sort_index(ascending=(side == R.SIDE_ASK)).head(levels)
    return list(zip(g.index, g["sum"], g["count"]))


def test_the_final_books_equal_the_simulators_ground_truth(session):
    s, mbo = session
    b = BookBuilder(levels=L)
    book = b.apply(mbo).to_pandas()
    gt = pd.DataFrame(s.live_orders)
    gt["price"] = gt.price4.astype(np.int64) * R.PRICE4_TO_NANO
    last = book.groupby("instrument_id").tail(1).set_index("instrument_id")
    for inst, orders in gt.groupby("instrument_id"):
        row = last.loc[inst]
        for name, side in (("bid", R.SIDE_BID), ("ask", R.SIDE_ASK)):
            want = _levels(orders, side, L)
            got = [(row[f"{name}_px_{k}"], row[f"{name}_sz_{k}"], row[f"{name}_ct_{k}"])
                   for k in range(len(want))]
            assert got == want, (inst, name)
            for k in range(len(want), L):
                assert row[f"{name}_px_{k}"] == R.UNDEF_PRICE and row[f"{name}_sz_{k}"] == 0
    lo = b.live_orders()
    assert lo["order_id"].tolist() == s.live_orders["order_id"].tolist()
    assert (lo["remaining"] == s.live_orders["shares"]).all()
    assert b.report.unknown == 0 and b.report.inconsistent == 0


def test_batches_fed_one_by_one_give_the_same_books_as_one_call(session):
    _, mbo = session
    whole = reconstruct(mbo, levels=L)
    b = BookBuilder(levels=L, initial_levels=8)          # grows its level arrays on the way
    parts = [b.apply(mbo.slice(i, 7_777)) for i in range(0, mbo.num_rows, 7_777)]
    assert pa.concat_tables(parts).equals(whole)


def test_a_snapshot_seeds_a_later_run_with_the_same_books(session):
    _, mbo = session
    half = mbo.num_rows // 2
    a = BookBuilder(levels=L)
    a.apply(mbo.slice(0, half))
    rest_a = a.apply(mbo.slice(half))
    b = BookBuilder(levels=L)
    first = BookBuilder(levels=L)
    first.apply(mbo.slice(0, half))
    b.apply(first.snapshot())
    rest_b = b.apply(mbo.slice(half))
    assert rest_b.equals(rest_a)


def _events(rows):
    c = R.alloc_columns("mbo", len(rows), zero=True)
    for i, (action, oid, side, price, size) in enumerate(rows):
        c.action[i], c.order_id[i], c.side[i] = action, oid, side
        c.price[i], c.size[i], c.instrument_id[i], c.sequence[i] = price, size, 7, i + 1
    return pa.Table.from_batches([R.columns_to_arrow("mbo", c)])


def test_an_event_for_an_unseen_order_is_applied_at_its_own_price_or_reported():
    P = R.PRICE_SCALE
    ev = _events([
        (R.ACTION_ADD, 1, R.SIDE_BID, 10 * P, 300),
        (R.ACTION_EXECUTE, 99, R.SIDE_BID, 10 * P, 100),        # unseen, carries price: applied
        (R.ACTION_DELETE, 98, R.SIDE_NONE, R.UNDEF_PRICE, 0),    # unseen, carries nothing: reported
    ])
    b = BookBuilder(levels=2)
    out = b.apply(ev).to_pandas()
    assert out.bid_sz_0.tolist() == [300, 200, 200]
    assert b.report.applied_unknown == 1 and b.report.unknown == 1


def test_a_crossed_book_is_reported_with_the_event_that_crossed_it():
    P = R.PRICE_SCALE
    ev = _events([
        (R.ACTION_ADD, 1, R.SIDE_ASK, 10 * P, 100),
        (R.ACTION_ADD, 2, R.SIDE_BID, 9 * P, 100),
        (R.ACTION_ADD, 3, R.SIDE_BID, 10 * P, 100),              # locks the book
        (R.ACTION_DELETE, 3, R.SIDE_NONE, R.UNDEF_PRICE, 0),
    ])
    b = BookBuilder(levels=2)
    out = b.apply(ev).to_pandas()
    assert b.report.crossed == 1 and b.report.crossed_at == [2]
    assert out.bid_px_0.tolist() == [R.UNDEF_PRICE, 9 * P, 10 * P, 9 * P]
    assert out.bid_ct_0.tolist() == [0, 1, 1, 1]


def test_a_replace_moves_the_order_to_a_new_queue_place_at_the_new_price():
    P = R.PRICE_SCALE
    ev = _events([
        (R.ACTION_ADD, 1, R.SIDE_ASK, 11 * P, 100),
        (R.ACTION_ADD, 2, R.SIDE_ASK, 12 * P, 100),
    ])
    c = R.alloc_columns("mbo", 1, zero=True)
    c.action[0], c.order_id[0], c.new_order_id[0] = R.ACTION_REPLACE, 1, 3
    c.price[0], c.size[0], c.side[0], c.instrument_id[0] = 12 * P, 50, R.SIDE_NONE, 7
    ev = pa.concat_tables([ev, pa.Table.from_batches([R.columns_to_arrow("mbo", c)])])
    out = BookBuilder(levels=2).apply(ev).to_pandas()
    assert (out.ask_px_0.iloc[-1], out.ask_sz_0.iloc[-1], out.ask_ct_0.iloc[-1]) == (12 * P, 150, 2)
    assert out.ask_px_1.iloc[-1] == R.UNDEF_PRICE


def test_an_unknown_device_is_refused_naming_the_valid_ones(session):
    with pytest.raises(ValueError, match="device"):
        reconstruct(session[1], device="tpu")


def test_auto_never_fails_for_lack_of_a_gpu(session):
    assert reconstruct(session[1].slice(0, 500), levels=2, device="auto").num_rows == 500


def test_instrument_ids_beyond_the_direct_table_give_the_same_books(session):
    """Ids past BookBuilder.LUT_MAX take the sorted-lookup path, also mixed with small ids
    across batches; the books equal those of the same events under small ids."""
    _, mbo = session
    ids = mbo.column("instrument_id").to_numpy()
    big = np.where(ids % 2 == 0, ids + np.uint32(BookBuilder.LUT_MAX + 11), ids).astype(np.uint32)
    mbo_big = mbo.set_column(mbo.schema.get_field_index("instrument_id"), "instrument_id",
                             pa.array(big, pa.uint32()))
    want = BookBuilder(levels=L).apply(mbo)
    b = BookBuilder(levels=L)
    k = mbo.num_rows // 3
    # a mixed batch (sorted lookups), then single events (small ids: the direct table, which
    # must find the books the sorted path made), then the rest
    parts = [b.apply(mbo_big.slice(0, k))]
    parts += [b.apply(mbo_big.slice(i, 1)) for i in range(k, k + 40)]
    parts.append(b.apply(mbo_big.slice(k + 40)))
    got = pa.concat_tables(parts)
    assert got.drop_columns(["instrument_id"]).equals(want.drop_columns(["instrument_id"]))
    assert (got.column("instrument_id").to_numpy() == big).all()
    assert sorted(b.instruments.tolist()) == sorted(set(big.tolist()))


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_the_parallel_cpu_book_equals_one_thread_row_for_row(session, monkeypatch, threads):
    import kernels.book as KB
    _, mbo = session
    monkeypatch.setattr(KB, "PARALLEL_MIN_EVENTS", 0)
    one = reconstruct(mbo, levels=L, device="cpu", threads=1)
    par = reconstruct(mbo, levels=L, device="cpu", threads=threads)
    assert par.equals(one)
    assert book_report(par) == book_report(one)
    assert book_report(one).events == mbo.num_rows


def test_the_parallel_book_reports_crossings_at_their_input_rows(monkeypatch):
    """Two instruments interleaved: each crossing is reported at its row of the whole input."""
    import kernels.book as KB
    monkeypatch.setattr(KB, "PARALLEL_MIN_EVENTS", 0)
    P = R.PRICE_SCALE
    rows = [(R.ACTION_ADD, 1, R.SIDE_ASK, 10 * P, 100), (R.ACTION_ADD, 2, R.SIDE_BID, 10 * P, 100)]
    a = _events(rows)                                           # instrument 7: locks at its row 1
    b = _events([(act, oid + 10, s, p + P, q) for act, oid, s, p, q in rows])
    k = b.schema.get_field_index("instrument_id")
    b = b.set_column(k, b.schema.field(k), pa.array([8, 8], pa.uint32()))
    ev = pa.concat_tables([a.slice(0, 1), b.slice(0, 1), b.slice(1, 1), a.slice(1, 1)])
    par = reconstruct(ev, levels=1, device="cpu", threads=2)
    rep = book_report(par)
    assert rep.crossed == 2 and rep.crossed_at == [2, 3]
    assert par.column("bid_px_0").to_pylist() == [R.UNDEF_PRICE, R.UNDEF_PRICE, 11 * P, 10 * P]


def test_instruments_are_dealt_to_shards_by_event_count():
    inst = np.repeat(np.arange(6, dtype=np.uint32), [50, 40, 30, 20, 10, 10])
    shard = shard_instruments(inst, 2)
    loads = np.bincount(shard, minlength=2)
    assert sorted(loads.tolist()) == [80, 80]
    assert all(len(set(shard[inst == i])) == 1 for i in range(6))


def test_events_out_of_time_order_within_an_instrument_are_counted_and_listed():
    P = R.PRICE_SCALE
    ev = _events([
        (R.ACTION_ADD, 1, R.SIDE_BID, 10 * P, 100),
        (R.ACTION_ADD, 2, R.SIDE_BID, 9 * P, 100),
        (R.ACTION_ADD, 3, R.SIDE_ASK, 11 * P, 100),
        (R.ACTION_DELETE, 2, R.SIDE_NONE, R.UNDEF_PRICE, 0),
    ])
    k = ev.schema.get_field_index("ts_event")
    ts = pa.array([100, 300, 200, 300], pa.int64()).cast(ev.schema.field(k).type)
    ev = ev.set_column(k, ev.schema.field(k), ts)
    b = BookBuilder(levels=1)
    out = b.apply(ev)
    assert b.report.late == 1 and b.report.late_at == [2]        # 200 after 300
    assert out.column("ask_px_0").to_pylist()[2] == 11 * P          # applied all the same
    rep = book_report(reconstruct(ev, levels=1, device="cpu"))
    assert (rep.late, rep.late_at) == (1, [2])
