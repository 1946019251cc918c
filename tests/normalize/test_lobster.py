"""The LOBSTER importer (``normalize.lobster``) against LOBSTER's own sample files.

Inputs: the AAPL 2012-06-21 10-level sample (first 999 messages, committed under
``tests/data/lobster``) and the GOOG full day at level 1 (committed too, read from the shared
data folder when absent, skipped when neither is there). Every expectation comes from the raw
text (pandas, Python's own integer parsing) or from the orderbook file, never from the importer.
Variants the samples lack (MPID column, halts, crosses, negative ids, empty levels, faults) are
written into ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normalize import records as R
from normalize.clock import session_clock
from normalize.lobster import (SNAPSHOT_ORDER_ID_BASE, _parse_seconds, read_lobster,
                               read_lobster_book, read_lobster_status)
from tickpipe.errors import DecodeError, TickpipeError

TESTS = Path(__file__).resolve().parents[1]
DATA_DIRS = [TESTS / "data" / "lobster", Path("/work/shared/data/lobster")]
DATE = "2012-06-21"
AAPL_MSG = "AAPL_2012-06-21_34200000_57600000_message_10.head999.csv"
AAPL_BOOK = "AAPL_2012-06-21_34200000_57600000_orderbook_10.head999.csv"
GOOG_MSG = "GOOG_2012-06-21_34200000_57600000_message_1.csv"
GOOG_BOOK = "GOOG_2012-06-21_34200000_57600000_orderbook_1.csv"
SHA256 = {
    AAPL_MSG: "2e2c9733b3bc831e38b66e9324afc3b8167ba67a556e9a133c4c2060963a8976",
    AAPL_BOOK: "277aba2634356baa2f355598ffa7ae124abc60670ea4a56dc66b617bae33a12d",
    GOOG_MSG: "4d1c8b44c9c1c5d5bbb49fb2876cc3bbc1645e2d57694679a6d5116113c07924",
    GOOG_BOOK: "e0f365aee42d7bf74c0bc0a404c4466dd3d22658b9bc62755820e87e79219697",
}
MSG_COLS = ["time", "type", "order_id", "size", "price", "direction"]
ACTION_OF_TYPE = {1: R.ACTION_ADD, 2: R.ACTION_CANCEL, 3: R.ACTION_DELETE, 4: R.ACTION_EXECUTE,
                  5: R.ACTION_TRADE, 6: R.ACTION_CROSS}


def find(name: str) -> Path | None:
    return next((d / name for d in DATA_DIRS if (d / name).is_file()), None)


def aapl(name: str) -> Path:
    path = TESTS / "data" / "lobster" / name
    assert path.is_file(), f"{path} must be committed (see tests/data/lobster/PROVENANCE.md)"
    return path


def goog(name: str) -> Path:
    path = find(name)
    if path is None:
        pytest.skip(f"{name} is in neither {DATA_DIRS[0]} nor {DATA_DIRS[1]}")
    return path


def raw_messages(path: Path) -> pd.DataFrame:
    """The message file as text (time) and Python integers: the independent reading."""
    df = pd.read_csv(path, header=None, names=MSG_COLS, dtype={"time": str})
    assert len(df.columns) == 6
    return df


def exact_ns(text: str) -> int:
    """Seconds text to nanoseconds with Python integers: the oracle for the time column."""
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int((frac + "0" * 9)[:9])


def ints(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.to_numpy()


@pytest.fixture(scope="module")
def aapl_events() -> pa.Table:
    return read_lobster(aapl(AAPL_MSG), date=DATE, symbol="AAPL")


@pytest.fixture(scope="module")
def aapl_seeded() -> pa.Table:
    return read_lobster(aapl(AAPL_MSG), orderbook_csv=aapl(AAPL_BOOK), date=DATE, symbol="AAPL")


@pytest.fixture(scope="module")
def aapl_raw() -> pd.DataFrame:
    return raw_messages(aapl(AAPL_MSG))


# -- the committed samples ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SHA256))
def test_sample_files_have_the_sha256_recorded_in_provenance(name):
    path = aapl(name) if name.startswith("AAPL") else goog(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[name]


def test_aapl_sample_has_999_messages_and_999_book_rows(aapl_raw):
    assert len(aapl_raw) == 999
    assert read_lobster_book(aapl(AAPL_BOOK))["ask_px"].shape == (999, 10)


# -- row counts, schema, actions -------------------------------------------------------------------

def test_output_has_the_mbo_schema_and_lobster_metadata(aapl_seeded):
    assert aapl_seeded.schema.equals(R.arrow_schema("mbo"))
    meta = aapl_seeded.schema.metadata
    assert meta[b"tickpipe.schema"] == b"mbo"
    assert meta[b"tickpipe.source"] == b"lobster"
    assert meta[b"tickpipe.symbol"] == b"AAPL"
    assert meta[b"tickpipe.date"] == DATE.encode()
    assert meta[b"tickpipe.lobster.halts"] == b"0"


def test_without_orderbook_every_aapl_message_becomes_one_event(aapl_events):
    assert aapl_events.num_rows == 999
    np.testing.assert_array_equal(ints(aapl_events, "sequence"), np.arange(1, 1000))
    assert not (ints(aapl_events, "flags") & R.F_SNAPSHOT).any()


def test_with_orderbook_aapl_gives_clear_then_snapshot_adds_then_998_events(aapl_seeded):
    book = read_lobster_book(aapl(AAPL_BOOK))
    levels = int((book["ask_sz"][0] > 0).sum() + (book["bid_sz"][0] > 0).sum())
    assert levels == 20
    assert aapl_seeded.num_rows == 1 + levels + 998
    seq = ints(aapl_seeded, "sequence")
    np.testing.assert_array_equal(seq[:1 + levels], 0)
    np.testing.assert_array_equal(seq[1 + levels:], np.arange(2, 1000))


def test_actions_per_lobster_type_match_the_raw_value_counts(aapl_events, aapl_raw):
    counts = aapl_raw["type"].value_counts()
    actions = pd.Series(ints(aapl_events, "action")).value_counts()
    assert {ACTION_OF_TYPE[t]: n for t, n in counts.items()} == actions.to_dict()
    np.testing.assert_array_equal(ints(aapl_events, "action"),
                                  aapl_raw["type"].map(ACTION_OF_TYPE).to_numpy())


def test_flags_follow_the_lobster_type(aapl_events, aapl_raw):
    flags = ints(aapl_events, "flags")
    want = aapl_raw["type"].map({1: 0, 2: 0, 3: 0, 4: R.F_PRINTABLE | R.F_WITH_PRICE,
                                 5: R.F_PRINTABLE}).to_numpy()
    np.testing.assert_array_equal(flags, want)


def test_fields_without_a_lobster_source_are_constant(aapl_events):
    assert aapl_events.column("ts_recv").null_count == aapl_events.num_rows
    for name in ("channel", "tracking", "match_id", "new_order_id", "cross_type"):
        assert not ints(aapl_events, name).any(), name
    np.testing.assert_array_equal(ints(aapl_events, "instrument_id"), 1)
    assert set(aapl_events.column("mpid").to_pylist()) == {b"\0\0\0\0"}


def test_instrument_id_is_the_one_given():
    t = read_lobster(aapl(AAPL_MSG), date=DATE, symbol="AAPL", instrument_id=4_000_000_000)
    np.testing.assert_array_equal(ints(t, "instrument_id"), 4_000_000_000)


# -- field values against the raw text ---------------------------------------------------------

def test_first_timestamp_is_exact_to_the_nanosecond(aapl_events):
    clock = session_clock("2012-06-21")
    ns = 34200 * 1_000_000_000 + 4_241_176          # "34200.004241176"
    want = int(clock.to_utc(np.array([ns]))[0])
    assert want == 1340285400_004241176              # 09:30:00.004241176 EDT = 13:30 UTC
    assert int(ints(aapl_events, "ts_event")[0]) == want


def test_every_timestamp_matches_the_text_parsed_with_integers(aapl_events, aapl_raw):
    local = np.array([exact_ns(s) for s in aapl_raw["time"]], np.int64)
    want = session_clock(DATE).to_utc(local).view(np.int64)
    np.testing.assert_array_equal(ints(aapl_events, "ts_event"), want)


def test_prices_are_lobster_prices_times_100000(aapl_events, aapl_raw):
    np.testing.assert_array_equal(ints(aapl_events, "price"), aapl_raw["price"].to_numpy() * 100_000)
    assert int(ints(aapl_events, "price")[0]) == 585_330_000_000      # $585.33


def test_sizes_and_order_ids_are_the_raw_values(aapl_events, aapl_raw):
    np.testing.assert_array_equal(ints(aapl_events, "size"), aapl_raw["size"].to_numpy())
    np.testing.assert_array_equal(ints(aapl_events, "order_id"), aapl_raw["order_id"].to_numpy())


def test_sides_follow_the_direction_column(aapl_events, aapl_raw):
    want = np.where(aapl_raw["direction"].to_numpy() == 1, R.SIDE_BID, R.SIDE_ASK)
    np.testing.assert_array_equal(ints(aapl_events, "side"), want)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 86_399), st.text("0123456789", max_size=14)),
                min_size=1, max_size=40))
def test_time_text_parses_exactly_with_fractions_padded_or_truncated_to_9_digits(times):
    text = [f"{s}.{f}" if f else str(s) for s, f in times]
    ns, bad = _parse_seconds(pa.array(text, pa.string()))
    assert not bad.any()
    np.testing.assert_array_equal(ns, [exact_ns(t) for t in text])


@pytest.mark.parametrize("text", ["", ".5", "1.", "1..2", "-1.5", "1e3", " 1.5", "86400.0",
                                  "1234567.0", "12a.3"])
def test_time_text_that_is_not_plain_decimal_seconds_is_flagged(text):
    ns, bad = _parse_seconds(pa.array(["34200.1", text], pa.string()))
    assert bad.tolist() == [False, True]
    assert ns[0] == 34200_100_000_000


# -- the snapshot ------------------------------------------------------------------------------

def test_snapshot_starts_with_a_clear_at_the_first_message_time(aapl_seeded, aapl_events):
    first = aapl_seeded.slice(0, 1).to_pylist()[0]
    assert first["action"] == R.ACTION_CLEAR
    assert first["side"] == R.SIDE_NONE
    assert first["price"] == R.UNDEF_PRICE
    assert (first["size"], first["order_id"], first["sequence"]) == (0, 0, 0)
    assert first["flags"] == R.F_SNAPSHOT
    n_snap = 21
    ts = ints(aapl_seeded, "ts_event")
    np.testing.assert_array_equal(ts[:n_snap], ints(aapl_events, "ts_event")[0])
    assert (ints(aapl_seeded, "action")[1:n_snap] == R.ACTION_ADD).all()
    assert (ints(aapl_seeded, "flags")[:n_snap] == R.F_SNAPSHOT).all()


def test_snapshot_adds_reproduce_the_first_book_row(aapl_seeded):
    book = read_lobster_book(aapl(AAPL_BOOK))
    snap = aapl_seeded.filter(pc.and_(
        pc.equal(aapl_seeded.column("action"), R.ACTION_ADD),
        pc.equal(aapl_seeded.column("sequence"), 0))).to_pandas()
    got = snap.groupby(["side", "price"])["size"].sum()
    want = {}
    for side, code in (("ask", R.SIDE_ASK), ("bid", R.SIDE_BID)):
        for px, sz in zip(book[f"{side}_px"][0], book[f"{side}_sz"][0]):
            if sz:
                want[(code, int(px))] = want.get((code, int(px)), 0) + int(sz)
    assert {k: int(v) for k, v in got.items()} == want
    assert want[(R.SIDE_BID, 585_330_000_000)] == 18    # message 1's order is in the snapshot


def test_snapshot_order_ids_are_synthetic_and_cannot_collide(aapl_seeded):
    ids = ints(aapl_seeded, "order_id")
    snap_ids = ids[1:21]
    assert len(set(snap_ids.tolist())) == 20
    assert (snap_ids >= SNAPSHOT_ORDER_ID_BASE).all()
    assert (ids[21:] < SNAPSHOT_ORDER_ID_BASE).all()
    sides = ints(aapl_seeded, "side")[1:21]
    # ask level k -> base + 2(k - 1), bid level k -> base + 2(k - 1) + 1, in file order
    np.testing.assert_array_equal(snap_ids - SNAPSHOT_ORDER_ID_BASE, np.arange(20, dtype=np.uint64))
    np.testing.assert_array_equal(sides, [R.SIDE_ASK, R.SIDE_BID] * 10)


def test_events_after_the_snapshot_equal_the_unseeded_events_from_message_2(aapl_seeded,
                                                                              aapl_events):
    assert aapl_seeded.slice(21).equals(aapl_events.slice(1))


def test_applying_each_message_to_the_previous_book_row_gives_the_next(aapl_events):
    """LOBSTER's own transition oracle: book row i-1 plus message i is book row i, wherever row
    i-1 shows the depth (prices beyond its 10th level are unknown and left out)."""
    book = read_lobster_book(aapl(AAPL_BOOK))
    ev = {n: ints(aapl_events, n) for n in ("action", "side", "price", "size")}
    sign = {R.ACTION_ADD: 1, R.ACTION_CANCEL: -1, R.ACTION_DELETE: -1, R.ACTION_EXECUTE: -1}
    checked = 0
    for i in range(1, 999):
        for side, code, better in (("bid", R.SIDE_BID, np.greater_equal),
                                   ("ask", R.SIDE_ASK, np.less_equal)):
            px0, sz0 = book[f"{side}_px"][i - 1], book[f"{side}_sz"][i - 1]
            levels = {int(p): int(s) for p, s in zip(px0, sz0) if s}
            a = int(ev["action"][i])
            if a in sign and ev["side"][i] == code:
                p = int(ev["price"][i])
                levels[p] = levels.get(p, 0) + sign[a] * int(ev["size"][i])
                assert levels[p] >= 0, f"message {i + 1} takes more than level {p} holds"
            edge = px0[sz0 > 0][-1] if (sz0 > 0).all() else None    # deepest known price
            known = sorted((p for p, s in levels.items() if s and (edge is None or better(p, edge))),
                           reverse=side == "bid")
            px1, sz1 = book[f"{side}_px"][i], book[f"{side}_sz"][i]
            keep = (sz1 > 0) & (True if edge is None else better(px1, edge))
            assert known[:10] == px1[keep].tolist(), f"{side} prices after message {i + 1}"
            assert [levels[p] for p in known[:10]] == sz1[keep].tolist(), \
                f"{side} sizes after message {i + 1}"
            checked += 1
    assert checked == 2 * 998


# -- the orderbook helper --------------------------------------------------------------------

def test_read_lobster_book_scales_prices_and_keeps_sizes():
    book = read_lobster_book(aapl(AAPL_BOOK))
    row = [int(v) for v in aapl(AAPL_BOOK).read_text().split("\n", 1)[0].split(",")]
    for j, name in enumerate(("ask_px", "ask_sz", "bid_px", "bid_sz")):
        assert book[name].dtype == np.int64 and book[name].shape == (999, 10)
        scale = 100_000 if name.endswith("px") else 1
        assert book[name][0].tolist() == [v * scale for v in row[j::4]]


def test_read_lobster_book_keeps_the_first_levels_asked_for():
    full = read_lobster_book(aapl(AAPL_BOOK))
    three = read_lobster_book(aapl(AAPL_BOOK), levels=3)
    for name, arr in three.items():
        assert arr.shape == (999, 3)
        np.testing.assert_array_equal(arr, full[name][:, :3])


@pytest.mark.parametrize("levels", [0, 11, -1, 2.0, True])
def test_read_lobster_book_rejects_a_level_count_the_file_lacks(levels):
    with pytest.raises(ValueError, match="`levels`"):
        read_lobster_book(aapl(AAPL_BOOK), levels=levels)


def test_empty_book_levels_become_undef_price_and_size_0(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text("5859400,200,5853300,18,9999999999,0,-9999999999,0\n"
                    "9999999999,0,5853300,18,9999999999,0,-9999999999,0\n")
    book = read_lobster_book(path)
    assert book["ask_px"].tolist() == [[585_940_000_000, R.UNDEF_PRICE], [R.UNDEF_PRICE] * 2]
    assert book["bid_px"].tolist() == [[585_330_000_000, R.UNDEF_PRICE], [585_330_000_000, R.UNDEF_PRICE]]
    assert book["ask_sz"].tolist() == [[200, 0], [0, 0]]
    msg = tmp_path / "msg.csv"
    msg.write_text("34200.1,1,5,200,5859400,-1\n34200.2,3,5,200,5859400,-1\n")
    t = read_lobster(msg, orderbook_csv=path, date=DATE, symbol="AAPL")
    assert ints(t, "action").tolist() == [R.ACTION_CLEAR, R.ACTION_ADD, R.ACTION_ADD, R.ACTION_DELETE]
    assert ints(t, "order_id")[1:3].tolist() == [SNAPSHOT_ORDER_ID_BASE, SNAPSHOT_ORDER_ID_BASE + 1]


@pytest.mark.parametrize("row, why", [
    ("5859400,200,5853300", "expected 4 comma-separated fields, got 3"),
    ("9999999999,5,5853300,18", "empty ask level \\(price 9999999999\\) with a non-zero size"),
    ("5859400,-1,5853300,18", "negative ask size -1"),
    ("5859400,200,-5,18", "bid price outside"),
    ("5859400,200,5853300,x", "field 4 is not an integer"),
])
def test_bad_book_rows_raise_decode_error_naming_file_and_line(tmp_path, row, why):
    path = tmp_path / "book.csv"
    path.write_text(f"5859400,200,5853300,18\n{row}\n5859400,200,5853300,18\n")
    with pytest.raises(DecodeError, match=why) as exc:
        read_lobster_book(path)
    assert str(path) in str(exc.value) and "on line 2" in str(exc.value)
    assert (exc.value.line, exc.value.offset) == (2, len("5859400,200,5853300,18\n"))


def test_a_book_first_row_without_whole_levels_is_a_decode_error(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text("5859400,200,5853300\n")
    with pytest.raises(DecodeError, match="expected 4 fields per level") as exc:
        read_lobster_book(path)
    assert exc.value.line == 1


# -- the 7-column layout -----------------------------------------------------------------------

def with_mpid(tmp_path: Path, mpids) -> Path:
    lines = aapl(AAPL_MSG).read_text().splitlines()
    path = tmp_path / "AAPL_message_mpid.csv"
    path.write_text("".join(f"{ln},{mpids(i)}\n" for i, ln in enumerate(lines)))
    return path


def test_seven_column_layout_reads_mpid_space_padded_and_flags_adds(tmp_path, aapl_events,
                                                                    aapl_raw):
    names = ["GSCO", "", "UBS", "NSDQ", "A"]
    path = with_mpid(tmp_path, lambda i: names[i % 5])
    t = read_lobster(path, date=DATE, symbol="AAPL")
    want = [names[i % 5].ljust(4).encode() for i in range(999)]
    assert t.column("mpid").to_pylist() == want
    adds = aapl_raw["type"].to_numpy() == 1
    has = np.array([bool(names[i % 5]) for i in range(999)])
    np.testing.assert_array_equal(ints(t, "flags") & R.F_MPID, np.where(adds & has, R.F_MPID, 0))
    without = t.drop_columns(["mpid", "flags"])
    assert without.equals(aapl_events.drop_columns(["mpid", "flags"]))
    np.testing.assert_array_equal(ints(t, "flags") & (0xFF ^ R.F_MPID), ints(aapl_events, "flags"))


def test_seven_column_layout_with_orderbook_gives_the_same_snapshot(tmp_path, aapl_seeded):
    path = with_mpid(tmp_path, lambda i: "")
    t = read_lobster(path, orderbook_csv=aapl(AAPL_BOOK), date=DATE, symbol="AAPL")
    assert t.drop_columns(["mpid"]).equals(aapl_seeded.drop_columns(["mpid"]))
    assert set(t.column("mpid").to_pylist()[21:]) == {b"    "}


def test_an_mpid_longer_than_4_characters_is_a_decode_error(tmp_path):
    path = with_mpid(tmp_path, lambda i: "TOOLONG" if i == 7 else "GSCO")
    with pytest.raises(DecodeError, match="MPID 'TOOLONG'") as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    assert exc.value.line == 8


# -- halts, crosses and negative order ids (not in the samples) -----------------------------------

SPECIAL = """34200.1,1,10,100,5853300,1
34200.2,7,0,0,-1,-1
34200.3,6,-1,5000,5853000,1
34200.4,7,0,0,0,-1
34200.5,7,0,0,1,-1
34200.6,6,-2,700,5853100,-1
34200.7,6,-3,9,5853200,1
34200.8,5,-7,3,5853300,1
34200.9,4,10,100,5853300,1
"""


@pytest.fixture
def special(tmp_path) -> Path:
    path = tmp_path / "special.csv"
    path.write_text(SPECIAL)
    return path


def test_halts_are_left_out_of_mbo_and_counted_in_the_metadata(special):
    t = read_lobster(special, date=DATE, symbol="XYZ")
    assert ints(t, "sequence").tolist() == [1, 3, 6, 7, 8, 9]
    assert t.schema.metadata[b"tickpipe.lobster.halts"] == b"3"


def test_read_lobster_status_returns_halts_as_trading_actions(special):
    s = read_lobster_status(special, date=DATE, symbol="XYZ", instrument_id=7)
    assert s.schema.equals(R.arrow_schema("status"))
    assert ints(s, "sequence").tolist() == [2, 4, 5]
    assert [chr(c) for c in ints(s, "msg_type")] == ["H"] * 3
    assert [chr(c) for c in ints(s, "code")] == ["H", "Q", "T"]
    assert s.column("symbol").to_pylist() == [b"XYZ     "] * 3
    assert s.column("reason").to_pylist() == [b"\0\0\0\0"] * 3
    assert (ints(s, "instrument_id") == 7).all()
    assert (ints(s, "price_1") == R.UNDEF_PRICE).all()
    local = np.array([exact_ns(x) for x in ("34200.2", "34200.4", "34200.5")])
    np.testing.assert_array_equal(ints(s, "ts_event"), session_clock(DATE).to_utc(local).view(np.int64))


def test_the_aapl_sample_has_no_halts():
    assert read_lobster_status(aapl(AAPL_MSG), date=DATE, symbol="AAPL").num_rows == 0


def test_cross_trades_keep_their_kind_in_cross_type_and_have_no_side(special):
    t = read_lobster(special, date=DATE, symbol="XYZ")
    cross = ints(t, "action") == R.ACTION_CROSS
    assert [chr(c) if c else "" for c in ints(t, "cross_type")[cross]] == ["O", "C", ""]
    assert (ints(t, "order_id")[cross] == 0).all()
    assert (ints(t, "side")[cross] == R.SIDE_NONE).all()
    assert (ints(t, "flags")[cross] == R.F_PRINTABLE).all()
    assert ints(t, "size")[cross].tolist() == [5000, 700, 9]


def test_a_negative_order_id_outside_crosses_becomes_0_flagged_unknown(special):
    t = read_lobster(special, date=DATE, symbol="XYZ")
    row = t.filter(pc.equal(t.column("sequence"), 8)).to_pylist()[0]
    assert row["order_id"] == 0
    assert row["action"] == R.ACTION_TRADE
    assert row["flags"] == R.F_PRINTABLE | R.F_UNKNOWN_ORDER
    assert not (ints(t, "flags")[ints(t, "sequence") != 8] & R.F_UNKNOWN_ORDER).any()


def test_a_snapshot_skips_the_first_message_even_when_other_rows_are_halts(special, tmp_path):
    book = tmp_path / "book.csv"
    book.write_text("5853400,5,5853300,100\n" * 9)
    t = read_lobster(special, orderbook_csv=book, date=DATE, symbol="XYZ")
    assert ints(t, "sequence").tolist() == [0, 0, 0, 3, 6, 7, 8, 9]


# -- bad input -----------------------------------------------------------------------------------

GOOD = "34200.004241176,1,16113575,18,5853300,1\n"


@pytest.mark.parametrize("bad, why", [
    ("34200.1,1,5,18,5853300\n", "expected 6 comma-separated fields, got 5"),
    ("34200.1,1,5,18,5853300,1,GSCO\n", "expected 6 comma-separated fields, got 7"),
    ("\n", "expected 6 comma-separated fields, got 0"),
    ("34200.1,1,5,eighteen,5853300,1\n", "field 4 is not an integer: 'eighteen'"),
    ("34200.1,1,5,,5853300,1\n", "field 4 is not an integer"),
    ("34200.1,1,5,18,58533.5,1\n", "field 5 is not an integer"),
    ("34200.1,1,99999999999999999999,18,5853300,1\n", "field 3 is out of the int64 range"),
    ("9:30:00,1,5,18,5853300,1\n", "field 1 \\(time\\)"),
    ("34200.1.2,1,5,18,5853300,1\n", "field 1 \\(time\\)"),
    ("86400.5,1,5,18,5853300,1\n", "field 1 \\(time\\) is not a decimal number of seconds below"),
    ("34200.1,8,5,18,5853300,1\n", "unknown LOBSTER event type 8"),
    ("34200.1,0,5,18,5853300,1\n", "unknown LOBSTER event type 0"),
    ("34200.1,1,5,18,5853300,0\n", "direction 0 is not 1"),
    ("34200.1,1,5,-18,5853300,1\n", "negative size -18"),
    ("34200.1,4,5,18,-5853300,1\n", "price -5853300 is outside"),
    ("34200.1,7,0,0,2,-1\n", "trading halt \\(type 7\\) with price 2"),
    ("\xff34200.1,1,5,18,5853300,1\n", "field 1 \\(time\\)"),
])
def test_a_malformed_line_raises_decode_error_naming_file_line_and_offset(tmp_path, bad, why):
    path = tmp_path / "bad_message.csv"
    path.write_text(GOOD * 3 + bad + GOOD)
    with pytest.raises(DecodeError, match=why) as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    err = exc.value
    assert isinstance(err, ValueError) and isinstance(err, TickpipeError)
    assert str(path) in str(err) and "on line 4" in str(err)
    assert (err.line, err.index, err.offset) == (4, 3, 3 * len(GOOD))
    assert err.path == str(path)


def test_a_malformed_first_line_names_line_1(tmp_path):
    path = tmp_path / "bad_message.csv"
    path.write_text("34200.1,1,5,18\n" + GOOD)
    with pytest.raises(DecodeError, match="expected 6 or 7 comma-separated fields") as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    assert exc.value.line == 1 and exc.value.offset == 0


def test_the_first_fault_is_reported_when_a_file_has_several(tmp_path):
    path = tmp_path / "bad_message.csv"
    path.write_text(GOOD + "34200.1,1,5,18,5853300,2\n" + "34200.1,9,5,18,5853300,1\n")
    with pytest.raises(DecodeError, match="direction 2") as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    assert exc.value.line == 2


def test_a_bad_time_before_a_non_numeric_field_is_the_fault_reported(tmp_path):
    path = tmp_path / "bad_message.csv"
    path.write_text(GOOD + "86400.5,1,5,18,5853300,1\n" + "34200.1,1,5,x,5853300,1\n")
    with pytest.raises(DecodeError, match="field 1 \\(time\\).*'86400.5'") as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    assert exc.value.line == 2


@pytest.mark.parametrize("mpid", [b"\xff\xfe", "GS\u00c7O".encode()])
def test_an_mpid_that_is_not_ascii_is_a_decode_error_naming_its_line(tmp_path, mpid):
    path = tmp_path / "bad_mpid.csv"
    path.write_bytes(b"34200.1,1,5,18,5853300,1,GSCO\n" * 2 + b"34200.1,1,5,18,5853300,1," + mpid
                     + b"\n")
    with pytest.raises(DecodeError, match="MPID .* is not 0 to 4 ASCII characters") as exc:
        read_lobster(path, date=DATE, symbol="AAPL")
    assert exc.value.line == 3


def test_crlf_line_ends_and_a_missing_final_newline_are_accepted(tmp_path, aapl_events):
    path = tmp_path / "crlf.csv"
    path.write_bytes(aapl(AAPL_MSG).read_bytes().replace(b"\n", b"\r\n"))
    assert read_lobster(path, date=DATE, symbol="AAPL").equals(aapl_events)


def test_an_empty_message_file_gives_an_empty_table(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    t = read_lobster(path, date=DATE, symbol="AAPL")
    assert t.num_rows == 0 and t.schema.equals(R.arrow_schema("mbo"))
    assert read_lobster_status(path, date=DATE, symbol="AAPL").num_rows == 0


@pytest.mark.parametrize("date", [None, "2012-13-01", "21/06/2012", "", 20120621])
def test_a_missing_or_invalid_date_raises_value_error_naming_it(date):
    with pytest.raises(ValueError, match="`date`"):
        read_lobster(aapl(AAPL_MSG), date=date, symbol="AAPL")


@pytest.mark.parametrize("symbol", ["", "TOOLONGSYM", "A B", None, "ÄPL"])
def test_an_invalid_symbol_raises_value_error_naming_it(symbol):
    with pytest.raises(ValueError, match="`symbol`"):
        read_lobster(aapl(AAPL_MSG), date=DATE, symbol=symbol)


@pytest.mark.parametrize("instrument_id", [-1, 1 << 32, "1", 1.0])
def test_an_invalid_instrument_id_raises_value_error_naming_it(instrument_id):
    with pytest.raises(ValueError, match="`instrument_id`"):
        read_lobster(aapl(AAPL_MSG), date=DATE, symbol="AAPL", instrument_id=instrument_id)


# -- the GOOG full day ---------------------------------------------------------------------------

def test_goog_full_day_parses_all_49482_events():
    path = goog(GOOG_MSG)
    t = read_lobster(path, date=DATE, symbol="GOOG")
    raw = raw_messages(path)
    assert t.num_rows == len(raw) == 49_482
    assert pd.Series(ints(t, "action")).value_counts().to_dict() == {
        ACTION_OF_TYPE[k]: v for k, v in raw["type"].value_counts().items()}
    local = np.array([exact_ns(s) for s in raw["time"]], np.int64)
    np.testing.assert_array_equal(ints(t, "ts_event"), session_clock(DATE).to_utc(local).view(np.int64))
    np.testing.assert_array_equal(ints(t, "price"), raw["price"].to_numpy() * 100_000)
    # "34200.05990197" has 8 decimals: the fraction is padded, not read as 5990197 ns
    assert raw["time"][1] == "34200.05990197" and local[1] == 34200_059_901_970
    assert np.all(np.diff(ints(t, "ts_event")) >= 0)


def test_goog_full_day_with_orderbook_seeds_the_level_1_book():
    t = read_lobster(goog(GOOG_MSG), orderbook_csv=goog(GOOG_BOOK), date=DATE, symbol="GOOG")
    book = read_lobster_book(goog(GOOG_BOOK))
    assert book["ask_px"].shape == (49_482, 1)
    assert t.num_rows == 1 + 2 + 49_481
    snap = t.slice(1, 2).to_pydict()
    assert snap["price"] == [int(book["ask_px"][0, 0]), int(book["bid_px"][0, 0])]
    assert snap["size"] == [int(book["ask_sz"][0, 0]), int(book["bid_sz"][0, 0])]
    assert re.fullmatch(r"\d+", t.schema.metadata[b"tickpipe.lobster.halts"].decode())
