"""Channels merged into one ts_event-ordered stream within a bounded window."""

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.merge import ChannelMerger


def _batch(ts, channel):
    return pa.table({"ts_event": pa.array(np.asarray(ts, np.int64)).cast(pa.timestamp("ns", "UTC")),
                     "channel": pa.array(np.full(len(ts), channel, np.uint16))})


@given(st.lists(st.lists(st.integers(0, 10_000), max_size=30), min_size=2, max_size=4),
       st.integers(1, 7), st.randoms(use_true_random=False))
@settings(max_examples=150, deadline=None)
def test_merged_stream_is_the_stable_ts_order_of_all_channels(chans, split, rnd):
    streams = [sorted(c) for c in chans]
    m = ChannelMerger(range(len(streams)), window_s=3600)
    cursors = [0] * len(streams)
    out = []
    while any(c < len(s) for c, s in zip(cursors, streams)):
        k = rnd.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])
        part = streams[k][cursors[k]:cursors[k] + split]
        cursors[k] += len(part)
        out += m.push(k, _batch(part, k))
        if cursors[k] == len(streams[k]):
            out += m.close(k)
    out += m.flush()
    got = pa.concat_tables(out) if out else _batch([], 0)
    ts = got.column("ts_event").cast(pa.int64()).to_pylist()
    ch = got.column("channel").to_pylist()
    want = sorted(((t, k) for k, s in enumerate(streams) for t in s))
    assert list(zip(ts, ch)) == want
    assert m.late == 0


def test_a_silent_channel_holds_events_back_no_longer_than_the_window():
    now = [0.0]
    m = ChannelMerger(["A", "B"], window_s=0.05, clock=lambda: now[0])
    assert m.push("A", _batch([10, 20], 0)) == []           # B has said nothing yet
    now[0] = 0.2                                            # B silent for longer than the window
    released = m.push("A", _batch([500], 0))               # A alone sets the watermark: 500
    assert pa.concat_tables(released).column("ts_event").cast(pa.int64()).to_pylist() == [10, 20]
    late = m.push("B", _batch([15], 1))                    # behind what was released
    assert m.late == 1 and pa.concat_tables(late).column("ts_event").cast(pa.int64()).to_pylist() == [15]


def test_the_merger_holds_no_more_than_max_rows():
    m = ChannelMerger(["A", "B"], window_s=3600, max_rows=3)
    m.push("B", _batch([0], 1))
    out = m.push("A", _batch([1, 2, 3, 4, 5, 6], 0))       # B holds the watermark at 0
    assert sum(t.num_rows for t in out) == 4                # 0 plus the oldest of A, 3 held
