"""Books straight from ITCH bytes (``kernels.book_itch``) equal the two-step path, decode to the
``mbo`` table and then ``kernels.book.reconstruct``, row for row, on generated sessions, the real
NASDAQ sample and real pcap captures; bad input gives the same typed errors and skips."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

import normalize
from ingest.simulator import generate_session
from kernels.book import book_report, reconstruct
from kernels.book_itch import book_itch, iter_book_itch
from normalize.reader import DecodeStats
from tickpipe.errors import DecodeError, DecodeWarning, TruncatedError

TESTS = Path(__file__).resolve().parents[1]
SAMPLE = TESTS / "data" / "itch50" / "nasdaq-2019-start-of-day-head1000.itch"
PCAPS = sorted((TESTS / "data" / "pcap").rglob("*.pcap"))
DATE = "2024-03-15"


def two_step(src, levels: int, date: str, **kw) -> pa.Table:
    mbo = normalize.read_itch(src, date=date, resolve=False, **kw)["mbo"]
    return reconstruct(mbo, levels=levels, device="cpu", threads=1)


def assert_same_books(got: pa.Table, want: pa.Table) -> None:
    assert got.schema.equals(want.schema)
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        assert got.column(name).equals(want.column(name)), name
    assert book_report(got) == book_report(want)


@pytest.fixture(scope="module")
def session_bytes() -> bytes:
    return generate_session(60_000, 40, seed=23, date=DATE).to_binaryfile()


@pytest.mark.parametrize("levels", [1, 10])
def test_the_book_from_itch_bytes_equals_decode_then_reconstruct(session_bytes, levels):
    got = book_itch(session_bytes, levels=levels, date=DATE)
    assert got.num_rows > 50_000
    assert_same_books(got, two_step(session_bytes, levels, DATE))


def test_batches_of_any_size_give_the_same_book_as_one_call(session_bytes):
    whole = book_itch(session_bytes, levels=3, date=DATE)
    parts = list(iter_book_itch(session_bytes, levels=3, date=DATE, batch_size=4_999,
                                chunk_bytes=100_003))
    assert len(parts) > 10
    assert pa.concat_tables(parts).equals(whole.replace_schema_metadata(parts[0].schema.metadata))


def test_the_real_nasdaq_sample_then_a_session_compressed_gives_the_same_book(tmp_path, session_bytes):
    # the real sample (system event, directory, trading actions: no order messages, so no
    # rows) followed by generated order flow, gzip-compressed, the date from NASDAQ's file name
    data = SAMPLE.read_bytes() + session_bytes
    path = tmp_path / "01302019.NASDAQ_ITCH50.gz"
    path.write_bytes(gzip.compress(data))
    got = book_itch(path, levels=5)
    assert got.num_rows > 50_000
    assert got.column("sequence")[0].as_py() > 1000        # numbered after the sample's 1,000
    assert_same_books(got, two_step(data, 5, "2019-01-30"))
    assert book_itch(SAMPLE, levels=5, date="2019-01-30").num_rows == 0


@pytest.mark.parametrize("pcap", PCAPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_pcap_captures_give_the_same_book(pcap):
    got = book_itch(pcap, levels=2, date="2023-08-22")
    want = two_step(pcap, 2, "2023-08-22")
    assert_same_books(got, want)


def test_a_truncated_file_raises_naming_the_offset_and_keeps_the_books_before(session_bytes):
    cut = len(session_bytes) - 5
    with pytest.raises(TruncatedError) as ei:
        book_itch(session_bytes[:cut], levels=2, date=DATE, batch_size=7_000)
    e = ei.value
    assert "byte offset" in str(e) and e.offset < cut
    before = book_itch(session_bytes[:e.offset], levels=2, date=DATE)   # every whole message
    assert e.partial.num_rows == before.num_rows > 50_000
    assert_same_books(e.partial, before)


def test_a_bad_unit_is_raised_or_skipped_like_the_decoder_does(session_bytes):
    # an E message framed with A's length: 36 bytes where the specification says 31
    bad = b"\x00\x24" + b"E" + bytes(35)
    pos, k = 0, 0
    while pos < len(session_bytes) // 2:      # the unit boundary after the middle
        pos += 2 + int.from_bytes(session_bytes[pos:pos + 2], "big")
        k += 1
    data = session_bytes[:pos] + bad + session_bytes[pos:]
    with pytest.raises(DecodeError, match="length disagrees") as ei:
        book_itch(data, levels=1, date=DATE)
    assert ei.value.offset == pos and ei.value.index == k
    stats = DecodeStats()
    with pytest.warns(DecodeWarning, match=f"skipped 1 bad unit.*{pos}"):
        got = book_itch(data, levels=1, date=DATE, errors="skip", stats=stats)
    assert stats.skipped == [(pos, "message length disagrees with its type")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecodeWarning)
        want = two_step(data, 1, DATE, errors="skip")
    assert_same_books(got, want)          # sequence numbers count the skipped unit too


def test_events_out_of_time_order_are_reported_as_the_two_step_path_does(session_bytes):
    data = bytearray(session_bytes)
    pos, late = 0, []
    while pos < len(data):       # three adds past the first tenth get the timestamp 0 (midnight)
        n = int.from_bytes(data[pos:pos + 2], "big")
        if data[pos + 2] == ord("A") and pos > len(data) // 10 and len(late) < 3 and pos % 5 == 0:
            data[pos + 2 + 5:pos + 2 + 11] = bytes(6)
            late.append(pos)
        pos += 2 + n
    assert late
    got = book_itch(bytes(data), levels=2, date=DATE)
    report = book_report(got)
    assert report.late == len(late) and len(report.late_at) == len(late)
    assert_same_books(got, two_step(bytes(data), 2, DATE))
