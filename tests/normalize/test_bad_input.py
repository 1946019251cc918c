"""Bad BinaryFILE input, for ``read_itch`` and ``iter_itch``: every fault is a typed error that
names the file, the byte offset and the message index, keeps what was decoded before it, and
``errors="skip"`` steps over exactly the bad unit with a ``DecodeWarning``.

Corrupt pcap headers and MoldUDP64 count overruns are covered in ``tests/ingest``.
"""

from __future__ import annotations

import gzip
import re
import struct
import warnings
from collections import Counter

import pyarrow as pa
import numpy as np
import pytest

import normalize
from ingest.simulator import generate_session
from normalize import records as R
from normalize.reader import DecodeStats
from tickpipe.errors import DecodeError, DecodeWarning, TickpipeError, TruncatedError

from itch_oracle import binaryfile, split_binaryfile

DATE = "2024-03-15"
SCHEMA_OF = {**{c: "mbo" for c in "AFECXDUPQB"}, "R": "definitions",
             **{c: "status" for c in "SHYLVWKJh"}, **{c: "imbalance" for c in "INO"}}


@pytest.fixture(scope="module")
def units() -> list[bytes]:
    """The messages of a small valid session (every unit framed on its own)."""
    msgs = split_binaryfile(generate_session(400, 5, seed=11).to_binaryfile())
    assert len(msgs) > 300
    return msgs


def expected_counts(messages: list[bytes]) -> dict[str, int]:
    """Rows per normalized table that these messages produce."""
    c = Counter(SCHEMA_OF[m[:1].decode()] for m in messages)
    out = {k: c.get(k, 0) for k in R.SCHEMAS}
    out["trades"] = sum(m[:1] in (b"E", b"C", b"P", b"Q", b"B") for m in messages)
    return out


def counts(tables) -> dict[str, int]:
    return {k: tables[k].num_rows for k in R.SCHEMAS}


def batch_counts(batches) -> dict[str, int]:
    return {k: sum(b[k].num_rows for b in batches) for k in R.SCHEMAS}


def with_bad_unit(units: list[bytes], k: int, bad: bytes) -> tuple[bytes, int]:
    """The file with ``bad`` (a whole framed unit) inserted before message ``k``; its offset."""
    head = binaryfile(units[:k])
    return head + bad + binaryfile(units[k:]), len(head)


def iterate(source, **kw):
    got = []
    for b in normalize.iter_itch(source, **kw):
        got.append(b)
    return got


def assert_names_the_fault(err: DecodeError, path, offset: int, index: int) -> None:
    text = str(err)
    assert isinstance(err, DecodeError) and isinstance(err, ValueError) and isinstance(err, TickpipeError)
    assert str(path) in text
    assert f"byte offset {offset}" in text
    assert f"message index {index}" in text
    assert (err.path, err.offset, err.index) == (str(path), offset, index)


def fault_positions(n: int) -> list[int]:
    return [0, n // 2, n - 1]


# ---------------------------------------------------------------------------------------------
# truncation

@pytest.mark.parametrize("cut_into", [1, 2, 7], ids=["inside-length-prefix", "after-prefix", "inside-body"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_read_itch_when_file_ends_mid_message_raises_truncated_error_naming_path_offset_and_index(
        tmp_path, units, cut_into, where):
    k = {"first": 0, "middle": len(units) // 2, "last": len(units) - 1}[where]
    off = len(binaryfile(units[:k]))
    path = tmp_path / "cut.itch"
    path.write_bytes(binaryfile(units)[:off + cut_into])
    with pytest.raises(TruncatedError) as ei:
        normalize.read_itch(path, date=DATE)
    e = ei.value
    assert_names_the_fault(e, path, off, k)
    assert "ends inside a message" in str(e)
    assert counts(e.partial) == expected_counts(units[:k])
    assert all(isinstance(t, pa.Table) for t in e.partial.values())


@pytest.mark.parametrize("chunk_bytes", [64, 1 << 20])
def test_iter_itch_when_file_ends_mid_message_yields_everything_before_then_raises(tmp_path, units, chunk_bytes):
    k = len(units) // 2
    off = len(binaryfile(units[:k]))
    path = tmp_path / "cut.itch"
    path.write_bytes(binaryfile(units)[:off + 9])
    got = []
    with pytest.raises(TruncatedError) as ei:
        for b in normalize.iter_itch(path, date=DATE, batch_size=50, chunk_bytes=chunk_bytes):
            got.append(b)
    assert_names_the_fault(ei.value, path, off, k)
    assert batch_counts(got) == expected_counts(units[:k])


def test_read_itch_of_truncated_file_with_errors_skip_warns_and_keeps_every_message_before(tmp_path, units):
    k = len(units) // 2
    off = len(binaryfile(units[:k]))
    path = tmp_path / "cut.itch"
    path.write_bytes(binaryfile(units)[:off + 9])
    stats = DecodeStats()
    with pytest.warns(DecodeWarning) as record:
        tables = normalize.read_itch(path, date=DATE, errors="skip", stats=stats)
    texts = [str(w.message) for w in record]
    assert any(f"truncated trailing message at byte offset {off} (message index {k})" in t for t in texts), texts
    assert all(str(path) in t for t in texts), texts
    assert counts(tables) == expected_counts(units[:k])
    assert stats.truncated_at == off and stats.n_skipped == 1 and stats.messages == k


def test_iter_itch_of_truncated_file_with_errors_skip_warns_and_keeps_every_message_before(tmp_path, units):
    k = len(units) // 2
    off = len(binaryfile(units[:k]))
    path = tmp_path / "cut.itch"
    path.write_bytes(binaryfile(units)[:off + 9])
    with pytest.warns(DecodeWarning, match=f"message index {k}"):
        got = iterate(path, date=DATE, errors="skip", batch_size=64, chunk_bytes=100)
    assert batch_counts(got) == expected_counts(units[:k])


def test_read_itch_of_truncated_gzip_file_raises_truncated_error(tmp_path, units):
    k = 10
    off = len(binaryfile(units[:k]))
    path = tmp_path / "cut.itch.gz"
    path.write_bytes(gzip.compress(binaryfile(units)[:off + 5]))
    with pytest.raises(TruncatedError) as ei:
        normalize.read_itch(path, date=DATE)
    assert_names_the_fault(ei.value, path, off, k)


# ---------------------------------------------------------------------------------------------
# bad units in the middle: wrong length, unknown type, zero length

BAD_UNITS = {
    # an E message (31 bytes in the spec) framed with A's length, 36, and 36 bytes present
    "length-disagrees-with-type": (b"\x00\x24" + b"E" + bytes(35), "message length disagrees with its type",
                                   ["'E'", "length 36", "specification says 31"]),
    "unknown-type": (b"\x00\x14" + b"Z" + bytes(19), "unknown ITCH 5.0 message type", ["'Z'", "length 20"]),
    "unknown-type-byte-zero": (b"\x00\x0c" + bytes(12), "unknown ITCH 5.0 message type", ["0x00", "length 12"]),
    "zero-length": (b"\x00\x00", "zero message length", []),
}


@pytest.mark.parametrize("case", list(BAD_UNITS))
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_read_itch_when_a_unit_is_bad_raises_decode_error_naming_offset_and_index(tmp_path, units, case, where):
    bad, reason, details = BAD_UNITS[case]
    k = {"first": 0, "middle": len(units) // 2, "last": len(units)}[where]
    data, off = with_bad_unit(units, k, bad)
    path = tmp_path / "bad.itch"
    path.write_bytes(data)
    with pytest.raises(DecodeError) as ei:
        normalize.read_itch(path, date=DATE)
    e = ei.value
    assert not isinstance(e, TruncatedError)
    assert_names_the_fault(e, path, off, k)
    assert reason in str(e)
    for d in details:
        assert d in str(e), (d, str(e))
    assert counts(e.partial) == expected_counts(units[:k])


@pytest.mark.parametrize("case", list(BAD_UNITS))
def test_iter_itch_when_a_unit_is_bad_yields_everything_before_then_raises(units, case):
    bad, reason, _ = BAD_UNITS[case]
    k = len(units) // 3
    data, off = with_bad_unit(units, k, bad)
    got = []
    with pytest.raises(DecodeError, match=reason) as ei:
        for b in normalize.iter_itch(data, date=DATE, batch_size=40):
            got.append(b)
    assert_names_the_fault(ei.value, "<buffer>", off, k)
    assert batch_counts(got) == expected_counts(units[:k])


@pytest.mark.parametrize("case", list(BAD_UNITS))
def test_read_itch_with_errors_skip_skips_exactly_the_bad_unit_and_keeps_the_rest(tmp_path, units, case):
    bad, reason, _ = BAD_UNITS[case]
    k = len(units) // 2
    data, off = with_bad_unit(units, k, bad)
    path = tmp_path / "bad.itch"
    path.write_bytes(data)
    stats = DecodeStats()
    with pytest.warns(DecodeWarning, match=f"skipped 1 bad unit.*{off}"):
        tables = normalize.read_itch(path, date=DATE, errors="skip", stats=stats)
    assert counts(tables) == expected_counts(units)
    assert stats.n_skipped == 1 and stats.skipped == [(off, reason)]
    assert stats.messages == len(units)
    # nothing else moved: the tables equal those of the file without the bad unit, except that
    # the skipped unit keeps its place in the numbering (sequence = position in the file)
    clean = normalize.read_itch(binaryfile(units), date=DATE)
    for name in R.SCHEMAS:
        got, want = tables[name].combine_chunks(), clean[name].combine_chunks()
        assert got.drop_columns(["sequence"]).equals(want.drop_columns(["sequence"])), name
        seq = want.column("sequence").to_numpy()
        assert (got.column("sequence").to_numpy() == np.where(seq > k, seq + 1, seq)).all(), name


@pytest.mark.parametrize("case", list(BAD_UNITS))
@pytest.mark.parametrize("chunk_bytes", [50, 1 << 20])
def test_iter_itch_with_errors_skip_skips_exactly_the_bad_unit_and_keeps_the_rest(tmp_path, units, case, chunk_bytes):
    bad, reason, _ = BAD_UNITS[case]
    k = len(units) // 2
    data, off = with_bad_unit(units, k, bad)
    path = tmp_path / "bad.itch"
    path.write_bytes(data)
    stats = DecodeStats()
    got = iterate(path, date=DATE, errors="skip", batch_size=64, chunk_bytes=chunk_bytes, stats=stats)
    assert batch_counts(got) == expected_counts(units)
    assert stats.skipped == [(off, reason)] and stats.n_skipped == 1


def test_read_itch_with_errors_skip_steps_over_several_bad_units(units):
    bads = [BAD_UNITS[c][0] for c in BAD_UNITS]
    pieces, keep = [], []
    step = len(units) // (len(bads) + 1)
    for i, bad in enumerate(bads):
        pieces.append(binaryfile(units[i * step:(i + 1) * step]))
        pieces.append(bad)
    pieces.append(binaryfile(units[len(bads) * step:]))
    stats = DecodeStats()
    with pytest.warns(DecodeWarning, match=f"skipped {len(bads)} bad unit"):
        tables = normalize.read_itch(b"".join(pieces), date=DATE, errors="skip", stats=stats)
    assert counts(tables) == expected_counts(units)
    assert stats.n_skipped == len(bads)


def test_read_itch_raw_when_a_unit_is_bad_raises_and_skips_like_read_itch(units):
    data, off = with_bad_unit(units, 5, BAD_UNITS["unknown-type"][0])
    with pytest.raises(DecodeError, match=f"byte offset {off}, message index 5"):
        normalize.read_itch_raw(data)
    raw = normalize.read_itch_raw(data, errors="skip")
    assert sum(len(v) for v in raw.values()) == len(units)


# ---------------------------------------------------------------------------------------------
# the session date

def test_read_itch_of_a_buffer_without_date_raises_value_error_naming_the_date(units):
    with pytest.raises(ValueError, match=r"session date is missing.*date='YYYY-MM-DD'"):
        normalize.read_itch(binaryfile(units))


def test_read_itch_of_a_file_whose_name_has_no_date_raises_value_error_naming_the_file(tmp_path, units):
    path = tmp_path / "session.itch"
    path.write_bytes(binaryfile(units))
    with pytest.raises(ValueError, match=r"session date is missing.*'session\.itch'.*MMDDYYYY\.NASDAQ_ITCH50"):
        normalize.read_itch(path)


def test_iter_itch_without_date_raises_value_error_naming_the_date(tmp_path, units):
    path = tmp_path / "session.itch"
    path.write_bytes(binaryfile(units))
    with pytest.raises(ValueError, match="session date is missing"):
        next(normalize.iter_itch(path, date=None))
    with pytest.raises(ValueError, match="session date is missing"):
        next(normalize.iter_itch(binaryfile(units), date=None))


@pytest.mark.parametrize("bad", ["2024-02-30", "15/03/2024", "yesterday"])
def test_read_itch_with_an_invalid_date_raises_value_error_naming_the_value(units, bad):
    with pytest.raises(ValueError, match=r"`date`.*" + re.escape(repr(bad))):
        normalize.read_itch(binaryfile(units), date=bad)


@pytest.mark.parametrize("name,compress", [("01302019.NASDAQ_ITCH50", False),
                                           ("S01302019-v50-bx.txt.01302019.BX_ITCH_50", False),
                                           ("01302019.NASDAQ_ITCH50.gz", True)])
def test_read_itch_takes_the_date_from_a_nasdaq_file_name(tmp_path, units, name, compress):
    data = binaryfile(units)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress else data)
    by_name = normalize.read_itch(path)
    given = normalize.read_itch(data, date="2019-01-30")
    for k in R.SCHEMAS:
        assert by_name[k].combine_chunks().equals(given[k].combine_chunks()), k
    assert by_name["status"].num_rows > 0
    # and iter_itch does too
    assert batch_counts(list(normalize.iter_itch(path, date=None))) == counts(given)


def test_an_explicit_date_wins_over_the_file_name(tmp_path, units):
    path = tmp_path / "01302019.NASDAQ_ITCH50"
    path.write_bytes(binaryfile(units))
    a = normalize.read_itch(path, date="2024-07-16")
    b = normalize.read_itch(binaryfile(units), date="2024-07-16")
    assert a["mbo"].column("ts_event").equals(b["mbo"].column("ts_event"))


# ---------------------------------------------------------------------------------------------
# the errors= parameter

@pytest.mark.parametrize("value", ["ignore", "Skip", "", None])
def test_invalid_errors_value_raises_value_error_naming_the_valid_values(units, value):
    data = binaryfile(units)
    pattern = rf"`errors`.*{value!r}.*'raise', 'skip'"
    with pytest.raises(ValueError, match=pattern):
        normalize.read_itch(data, date=DATE, errors=value)
    with pytest.raises(ValueError, match=pattern):
        next(normalize.iter_itch(data, date=DATE, errors=value))
    with pytest.raises(ValueError, match=pattern):
        normalize.read_itch_raw(data, errors=value)


def test_a_valid_file_decodes_without_any_warning(units):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = normalize.read_itch(binaryfile(units), date=DATE, errors="skip")
    assert counts(tables) == expected_counts(units)


def test_a_missing_file_raises_file_not_found_naming_it(tmp_path):
    path = tmp_path / "nope.itch"
    with pytest.raises(FileNotFoundError, match="nope.itch"):
        normalize.read_itch(path, date=DATE)


def test_length_prefix_longer_than_the_rest_of_the_file_is_truncation_not_a_length_error(tmp_path, units):
    # a length prefix that runs past the end: the framer cannot tell a bad prefix from a cut
    data = binaryfile(units[:3]) + struct.pack(">H", 36) + b"A" + bytes(10)
    with pytest.raises(TruncatedError, match="13 of 38 bytes present"):
        normalize.read_itch(data, date=DATE)
