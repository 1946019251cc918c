"""MoldUDP64 packets to normalized tables: the same records as the BinaryFILE of the session."""

import numpy as np
import pytest

import normalize
from ingest.moldudp64 import end_of_session, heartbeat, packetize
from ingest.simulator import generate_session
from normalize import records as R
from tickpipe.errors import DecodeError


@pytest.fixture(scope="module")
def session_bytes():
    return generate_session(5_000, 10, seed=11).to_binaryfile()


def test_packets_decode_to_the_same_records_as_the_binaryfile(session_bytes):
    packets = packetize(session_bytes, b"SESSION001", 1, max_payload=1200)
    packets.insert(3, heartbeat(b"SESSION001", 10))
    nxt = 1 + sum(1 for _ in normalize.read_itch_raw(session_bytes).values())
    packets.append(end_of_session(b"SESSION001", nxt))
    ts = np.arange(len(packets), dtype=np.uint64) + 1_700_000_000_000_000_000
    got = normalize.read_moldudp64(packets, date="2024-03-15", ts_recv=ts, channel=3)
    want = normalize.read_itch(session_bytes, date="2024-03-15")
    for key in want:
        g, w = got[key], want[key]
        assert g.num_rows == w.num_rows, key
        for col in w.column_names:
            if col in ("ts_recv", "channel"):
                continue
            if col == "flags":   # packets add F_LAST on the last message of each packet
                gf = g.column(col).to_numpy() & ~np.uint8(R.F_LAST)
                assert (gf == w.column(col).to_numpy()).all()
                continue
            assert g.column(col).equals(w.column(col)), (key, col)
    mbo = got["mbo"]
    assert set(mbo.column("channel").to_pylist()) == {3}
    assert mbo.column("ts_recv").null_count == 0
    last = mbo.column("flags").to_numpy() & R.F_LAST
    assert last.sum() > 0


def test_a_packet_whose_count_overruns_it_raises_naming_the_sequence(session_bytes):
    packets = packetize(session_bytes, b"SESSION001", 1, max_payload=1200)
    bad = bytearray(packets[2])
    bad[18:20] = (0xFFF0).to_bytes(2, "big")
    packets[2] = bytes(bad)
    with pytest.raises(DecodeError) as e:
        normalize.read_moldudp64(packets, date="2024-03-15")
    first = int.from_bytes(bad[10:18], "big")
    assert e.value.sequence is not None and first <= e.value.sequence < first + 200
    assert f"sequence {e.value.sequence}" in str(e.value) and "packet 2" in str(e.value)
    assert e.value.partial.n_messages > 0          # the packets before it were framed


def test_read_itch_stats_count_messages_by_type_like_the_raw_reader(session_bytes):
    stats = normalize.DecodeStats()
    normalize.read_itch(session_bytes, date="2024-03-15", stats=stats)
    raw = normalize.read_itch_raw(session_bytes)
    assert stats.counts == {k: len(v) for k, v in raw.items()}
    assert stats.messages == sum(len(v) for v in raw.values())


def test_the_simulators_ground_truth_books_equal_the_live_orders_after_decoding():
    from ingest.simulator import generate_session
    from normalize.ordermap import OrderMap
    from normalize.reader import SessionDecoder, decoded_batches, DecodeStats
    from normalize.clock import session_clock
    s = generate_session(100_000, 30, seed=9)
    sess = SessionDecoder(session_clock(s.date), order_map=OrderMap())
    for cols in decoded_batches(s.to_binaryfile(), sess, batch_size=1 << 14, chunk_bytes=1 << 20,
                                skip=False, stats=DecodeStats()):
        sess.resolve_batch(cols)
    got = sess.orders.live_orders()
    want = s.live_orders
    assert len(want) > 1000
    assert got["order_id"].tolist() == want["order_id"].tolist()
    assert (got["remaining"] == want["shares"]).all()
    assert (got["price"] == want["price4"].astype(np.int64) * R.PRICE4_TO_NANO).all()
    assert (got["side"] == want["side"]).all() and (got["instrument_id"] == want["instrument_id"]).all()


def test_the_simulator_handles_ten_thousand_instruments():
    from ingest.simulator import generate_session
    s = generate_session(50_000, 10_000, seed=1)
    t = normalize.read_itch(s.to_binaryfile(), date="2024-03-15")
    assert t["definitions"].num_rows == 10_000
    assert not (t["mbo"].column("flags").to_numpy() & (R.F_UNKNOWN_ORDER | R.F_BAD)).any()
