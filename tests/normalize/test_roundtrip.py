"""Round trips through the ITCH encoder and decoder, with hypothesis-drawn messages.

* ``encode_itch`` then ``read_itch_raw`` returns every message of every type unchanged, at the
  positions it was given;
* ``encode_itch`` then ``read_itch`` gives normalized records whose every field follows from the
  inputs (prices scaled to 1e-9, timestamps converted to UTC with ``zoneinfo``, order state kept
  in a plain dict — ``tests/normalize/itch_oracle.py``);
* ``iter_itch`` with small batches and small read chunks (messages straddle chunk edges) gives the
  same tables as ``read_itch``; gzip and zstd files decode as the plain file does;
* session clocks on both daylight-saving days of 2024 and on a winter and a summer day equal
  ``zoneinfo`` arithmetic, exactly, in integer nanoseconds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import normalize
from ingest.simulator import generate_session
from normalize import records as R
from normalize.clock import session_clock
from normalize.itch_spec import RAW_DTYPES, TYPE_LETTERS, fields, raw_to_wire

from itch_oracle import assert_records_equal, expected_records, split_binaryfile, tables_to_records
from strategies import DAY_NS, MESSAGE_STRATEGIES, P8_MAX, group, letter_of_row, messages

NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
DATE = dt.date(2024, 3, 15)
NS = 1_000_000_000

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_utc_ns(date: dt.date, ts: int) -> int:
    """ITCH nanoseconds since local midnight -> UTC epoch ns, by zoneinfo datetime arithmetic.

    The timestamp is read as New York wall-clock time of the session date with ``fold=0``: in
    the hour the clocks repeat (first Sunday of November) the first, daylight-time occurrence;
    in the hour they skip (second Sunday of March) the offset in force before the jump (PEP 495).
    Whole seconds go through datetime; the nanoseconds are added as an integer.
    """
    secs, frac = divmod(int(ts), NS)
    local = dt.datetime.combine(date, dt.time()) + dt.timedelta(seconds=secs)
    delta = local.replace(tzinfo=NEW_YORK).astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS + frac


def reference_clock(date: dt.date):
    return lambda ts: np.array([reference_utc_ns(date, t) for t in ts.tolist()], dtype=np.uint64)


def as_pairs(rows) -> list[tuple[str, dict]]:
    return [(letter_of_row(r), {name: r[name] for name, _ in fields(letter_of_row(r))}) for r in rows]


def encode_rows(rows) -> bytes:
    tables, positions = group(rows)
    return normalize.encode_itch(tables, positions=positions)


# ---------------------------------------------------------------------------------------------
# raw round trip

@pytest.mark.parametrize("letter", TYPE_LETTERS)
@FEW
@given(data=st.data())
def test_encode_then_read_itch_raw_returns_each_message_type_unchanged(letter, data):
    rows = data.draw(st.lists(MESSAGE_STRATEGIES[letter], min_size=1, max_size=20))
    table = np.array(rows, dtype=RAW_DTYPES[letter])
    raw = normalize.read_itch_raw(normalize.encode_itch({letter: table}))
    assert list(raw) == [letter]
    assert raw[letter].dtype == RAW_DTYPES[letter]
    for name, _ in fields(letter):
        np.testing.assert_array_equal(raw[letter][name], table[name], err_msg=f"{letter}.{name}")


@SETTINGS
@given(rows=messages(min_size=1, max_size=60))
def test_encode_with_positions_then_read_itch_raw_returns_mixed_messages_unchanged(rows):
    tables, positions = group(rows)
    data = normalize.encode_itch(tables, positions=positions)
    # the bytes hold each message at its position, in the wire layout
    wire = split_binaryfile(data)
    assert [m[:1].decode() for m in wire] == [letter_of_row(r) for r in rows]
    for r, m in zip(rows, wire):
        k = letter_of_row(r)
        assert m == raw_to_wire(np.array([r], RAW_DTYPES[k]), k).tobytes()
    raw = normalize.read_itch_raw(data)
    assert sorted(raw) == sorted(tables)
    for k, t in tables.items():
        for name, _ in fields(k):
            np.testing.assert_array_equal(raw[k][name], t[name], err_msg=f"{k}.{name}")


@SETTINGS
@given(rows=messages(min_size=1, max_size=30))
def test_encode_with_timestamp_positions_orders_messages_by_time_stably(rows):
    tables, _ = group(rows)
    wire = split_binaryfile(normalize.encode_itch(tables, positions="timestamp"))
    # the input order is the tables' order, rows in order; Python's sort is stable too
    given = [raw_to_wire(t[i:i + 1], k).tobytes() for k, t in tables.items() for i in range(len(t))]
    assert wire == sorted(given, key=lambda m: int.from_bytes(m[5:11], "big"))


# ---------------------------------------------------------------------------------------------
# normalized round trip

@SETTINGS
@given(rows=messages(max_size=60))
def test_encode_then_read_itch_normalizes_every_field_of_the_inputs(rows):
    got = tables_to_records(normalize.read_itch(encode_rows(rows), date=DATE))
    exp = expected_records(as_pairs(rows), reference_clock(DATE))
    for schema in R.SCHEMAS:
        assert_records_equal(got[schema], exp[schema], schema)


@SETTINGS
@given(rows=messages("AFECXDU", min_size=1, max_size=60))
def test_order_flow_resolves_prices_and_sides_like_a_dict_of_live_orders(rows):
    got = tables_to_records(normalize.read_itch(encode_rows(rows), date=DATE))
    exp = expected_records(as_pairs(rows), reference_clock(DATE))
    assert_records_equal(got["mbo"], exp["mbo"], "mbo")
    assert_records_equal(got["trades"], exp["trades"], "trades")


def test_normalized_prices_are_the_wire_prices_times_the_named_scales():
    rows = []
    for letter, price_fields, value in (("A", ["price"], 1_502_500), ("V", ["level1", "level2", "level3"], 123_456_789_012),
                                        ("K", ["ipo_price"], 250_000)):
        r = np.zeros(1, RAW_DTYPES[letter])
        for f in price_fields:
            r[f] = value
        rows.append(r)
    t = tables_to_records(normalize.read_itch(normalize.encode_itch(rows), date=DATE))
    assert t["mbo"]["price"].tolist() == [150_250_000_000]           # $150.25 at 1e-9
    assert t["status"]["price_1"].tolist() == [1_234_567_890_120, 25_000_000_000]   # $1234.5678..., $25
    assert t["status"]["price_2"].tolist() == [1_234_567_890_120, R.UNDEF_PRICE]


def test_mwcb_level_beyond_the_int64_scale_is_undefined_not_a_wrapped_negative_price():
    # a Price(8) above (2**63 - 1) // 10 has no 1e-9 int64 value
    v = np.zeros(2, RAW_DTYPES["V"])
    v["level1"], v["level2"], v["level3"] = [2**64 - 1, P8_MAX], [2**63, P8_MAX + 1], [10**18, 0]
    st_ = tables_to_records(normalize.read_itch(normalize.encode_itch([v]), date=DATE))["status"]
    assert st_["price_1"].tolist() == [R.UNDEF_PRICE, P8_MAX * 10]
    assert st_["price_2"].tolist() == [R.UNDEF_PRICE, R.UNDEF_PRICE]
    assert st_["price_3"].tolist() == [R.UNDEF_PRICE, 0]


# ---------------------------------------------------------------------------------------------
# streaming: small batches and chunks

def _concat(batches: list[dict[str, pa.RecordBatch]]) -> dict[str, pa.Table]:
    return {k: pa.Table.from_batches([b[k] for b in batches], schema=R.arrow_schema(k)) for k in R.SCHEMAS}


def assert_tables_equal(got: dict[str, pa.Table], exp: dict[str, pa.Table]) -> None:
    for k in R.SCHEMAS:
        assert got[k].schema.equals(exp[k].schema, check_metadata=True), k
        assert got[k].num_rows == exp[k].num_rows, k
        assert got[k].combine_chunks().equals(exp[k].combine_chunks()), k


@SETTINGS
@given(rows=messages(min_size=1, max_size=40), batch_size=st.sampled_from([1, 2, 3, 7, 1 << 20]),
       chunk_bytes=st.sampled_from([7, 64, 1000]))
@example(rows=[], batch_size=1, chunk_bytes=7).via("an empty input")
def test_iter_itch_with_small_batches_and_chunks_equals_read_itch(rows, batch_size, chunk_bytes):
    data = encode_rows(rows)
    whole = normalize.read_itch(data, date=DATE)
    batches = list(normalize.iter_itch(io.BytesIO(data), date=DATE, batch_size=batch_size,
                                       chunk_bytes=chunk_bytes))
    assert all(sum(b[k].num_rows for k in ("mbo", "definitions", "status", "imbalance")) <= batch_size
               for b in batches)
    if batches:
        assert_tables_equal(_concat(batches), whole)
    else:
        assert all(whole[k].num_rows == 0 for k in R.SCHEMAS)


@pytest.fixture(scope="module")
def small_session() -> bytes:
    return generate_session(1_200, 12, seed=7).to_binaryfile()


@pytest.mark.parametrize(("chunk_bytes", "batch_size"), [(7, 17), (64, 1000), (1000, 17), (1 << 20, 100)])
def test_iter_itch_of_a_file_read_in_small_chunks_equals_read_itch(tmp_path, small_session, chunk_bytes, batch_size):
    path = tmp_path / "session.itch"
    path.write_bytes(small_session)
    whole = normalize.read_itch(path, date=DATE)
    batches = list(normalize.iter_itch(path, date=DATE, batch_size=batch_size, chunk_bytes=chunk_bytes))
    sizes = [sum(b[k].num_rows for k in ("mbo", "definitions", "status", "imbalance")) for b in batches]
    assert max(sizes) <= batch_size and sum(sizes) == len(split_binaryfile(small_session))
    assert_tables_equal(_concat(batches), whole)
    assert whole["trades"].num_rows > 0 and whole["definitions"].num_rows == 12


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_files_decode_exactly_as_the_plain_file(tmp_path, small_session, compress):
    plain = tmp_path / "session.itch"
    plain.write_bytes(small_session)
    packed = tmp_path / f"session.itch.{'gz' if compress == 'gzip' else 'zst'}"
    if compress == "gzip":
        packed.write_bytes(gzip.compress(small_session, compresslevel=1))
    else:
        # two frames: the reader must read across frame boundaries
        half = len(small_session) // 2
        z = zstandard.ZstdCompressor(level=3)
        packed.write_bytes(z.compress(small_session[:half]) + z.compress(small_session[half:]))
    assert packed.read_bytes()[:2] != small_session[:2]
    expected = normalize.read_itch(plain, date=DATE)
    assert_tables_equal(normalize.read_itch(packed, date=DATE), expected)
    assert_tables_equal(_concat(list(normalize.iter_itch(packed, date=DATE, batch_size=100, chunk_bytes=333))),
                        expected)
    raw_plain, raw_packed = normalize.read_itch_raw(plain), normalize.read_itch_raw(packed)
    assert sorted(raw_plain) == sorted(raw_packed)
    for k in raw_plain:
        assert raw_packed[k].tobytes() == raw_plain[k].tobytes(), k


# ---------------------------------------------------------------------------------------------
# session clocks and daylight saving time

DST_DATES = {
    "spring_forward": dt.date(2024, 3, 10),    # 02:00 EST -> 03:00 EDT
    "fall_back": dt.date(2024, 11, 3),         # 02:00 EDT -> 01:00 EST
    "winter": dt.date(2024, 1, 16),
    "summer": dt.date(2024, 7, 16),
}
H = 3600 * NS
EDGES = [0, 1, H - 1, H, 2 * H - 1, 2 * H, 2 * H + 1, 2 * H + 1800 * NS, 3 * H - 1, 3 * H, 3 * H + 1,
         9 * H + 1800 * NS, 16 * H, DAY_NS - 1]


def test_reference_clock_knows_the_2024_offsets():
    # sanity of the reference itself, with hand-written UTC times
    d = DST_DATES
    assert reference_utc_ns(d["winter"], 9 * H + 1800 * NS) == int(dt.datetime(2024, 1, 16, 14, 30, tzinfo=UTC).timestamp()) * NS
    assert reference_utc_ns(d["summer"], 9 * H + 1800 * NS) == int(dt.datetime(2024, 7, 16, 13, 30, tzinfo=UTC).timestamp()) * NS
    assert reference_utc_ns(d["spring_forward"], 1 * H) == int(dt.datetime(2024, 3, 10, 6, 0, tzinfo=UTC).timestamp()) * NS
    assert reference_utc_ns(d["spring_forward"], 3 * H) == int(dt.datetime(2024, 3, 10, 7, 0, tzinfo=UTC).timestamp()) * NS
    assert reference_utc_ns(d["fall_back"], 1 * H) == int(dt.datetime(2024, 11, 3, 5, 0, tzinfo=UTC).timestamp()) * NS
    assert reference_utc_ns(d["fall_back"], 2 * H) == int(dt.datetime(2024, 11, 3, 7, 0, tzinfo=UTC).timestamp()) * NS


@pytest.mark.parametrize("name", list(DST_DATES))
def test_session_clock_at_edge_times_equals_zoneinfo(name):
    date = DST_DATES[name]
    got = session_clock(date).to_utc(np.array(EDGES, dtype=np.uint64))
    assert got.dtype == np.uint64
    assert got.tolist() == [reference_utc_ns(date, t) for t in EDGES]


@pytest.mark.parametrize("name", list(DST_DATES))
@SETTINGS
@given(ts=st.lists(st.integers(0, DAY_NS - 1), min_size=1, max_size=30))
def test_read_itch_converts_timestamps_like_zoneinfo(name, ts):
    date = DST_DATES[name]
    rows = np.zeros(len(ts), RAW_DTYPES["S"])
    rows["event_code"] = b"O"
    rows["timestamp"] = ts
    t = normalize.read_itch(normalize.encode_itch({"S": rows}), date=date.isoformat())
    got = tables_to_records(t)["status"]["ts_event"]
    assert got.tolist() == [reference_utc_ns(date, x) for x in ts]
    # the Arrow column is timestamp[ns, UTC] holding the same integers
    col = t["status"].column("ts_event")
    assert col.type == pa.timestamp("ns", tz="UTC")
    assert col.cast(pa.int64()).to_pylist() == [reference_utc_ns(date, x) for x in ts]


def test_session_clock_offsets_are_the_zone_offsets_in_integer_nanoseconds():
    d = DST_DATES
    assert session_clock(d["winter"]).as_tuple()[2:] == (-5 * H, -5 * H)
    assert session_clock(d["summer"]).as_tuple()[2:] == (-4 * H, -4 * H)
    spring, fall = session_clock(d["spring_forward"]), session_clock(d["fall_back"])
    assert (spring.offset_before, spring.offset_after, spring.switch_ns) == (-5 * H, -4 * H, 3 * H)
    assert (fall.offset_before, fall.offset_after, fall.switch_ns) == (-4 * H, -5 * H, 2 * H)
    assert session_clock("2024-03-10") == session_clock("20240310") == spring
