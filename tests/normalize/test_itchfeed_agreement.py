"""Field-by-field agreement of the ITCH 5.0 decoder with ``itchfeed``, an independent parser.

Three inputs: NASDAQ's real 2019 start-of-day sample (BinaryFILE, committed under
``tests/data/itch50``), the real captured packets under ``tests/data/pcap`` (MoldUDP64 in
pcap, one or more of each order message type) and a generated 200,000-message session that holds
every message type. For each, ``read_itch_raw`` must give every field exactly as ``itchfeed``
parses it, and ``read_itch``'s normalized tables must equal what ``tests/normalize/itch_oracle``
builds from ``itchfeed``'s messages (prices scaled to 1e-9, timestamps to UTC, order map kept in
a plain dict).

``itchfeed`` runs its pure-Python reader: ``tests/conftest.py`` sets ``ITCH_NO_CPP=1`` before
``itch`` is imported.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

import itch
from itch.parser import MessageParser

import normalize
from ingest.simulator import generate_session
from normalize import records as R
from normalize.clock import session_clock
from normalize.itch_spec import MESSAGES, RAW_DTYPES, SPEC_LENGTH, TYPE_LETTERS, fields

from itch_oracle import (Meta, assert_records_equal, binaryfile, expected_records, itchfeed_name,
                         split_binaryfile, tables_to_records, walk_pcap)

TESTS = Path(__file__).resolve().parents[1]
SAMPLE = TESTS / "data" / "itch50" / "nasdaq-2019-start-of-day-head1000.itch"
SAMPLE_SHA256 = "6eb643216cb4f0a1960457ca95d88a9fad167f5152841dd94c460dcddf58063b"
SAMPLE_DATE = "2019-01-30"          # see tests/data/itch50/PROVENANCE.md
PCAP_DIRS = [TESTS / "data" / "pcap", Path("/work/shared/data/pcap")]
GEN_DATE = "2024-03-15"

PARSER = MessageParser()


# ---------------------------------------------------------------------------------------------
# helpers

def parse_with_itchfeed(messages: list[bytes]) -> list:
    return [PARSER.get_message_type(m) for m in messages]


def itchfeed_fields(msg) -> tuple[str, dict]:
    """(letter, fields keyed by raw-table names) of one itchfeed message."""
    letter = msg.message_type.decode()
    out = {}
    for name, _kind in fields(letter):
        out[name] = msg.message_type if name == "message_type" else getattr(msg, itchfeed_name(letter, name))
    return letter, out


def itchfeed_raw_tables(msgs: list) -> dict[str, np.ndarray]:
    """itchfeed's messages as raw per-type tables (``RAW_DTYPES``), in input order per type."""
    rows: dict[str, list[tuple]] = {}
    for m in msgs:
        letter, f = itchfeed_fields(m)
        rows.setdefault(letter, []).append(tuple(f[name] for name, _ in fields(letter)))
    return {k: np.array(v, dtype=RAW_DTYPES[k]) for k, v in rows.items()}


def assert_raw_tables_equal(got: dict[str, np.ndarray], exp: dict[str, np.ndarray], what: str) -> None:
    assert sorted(got) == sorted(exp), f"{what}: message types {sorted(got)} != itchfeed's {sorted(exp)}"
    for letter in exp:
        g, e = got[letter], exp[letter]
        assert g.dtype == RAW_DTYPES[letter]
        assert g.shape == e.shape, f"{what} {letter!r}: {g.shape[0]} messages, itchfeed {e.shape[0]}"
        for name, _kind in fields(letter):
            np.testing.assert_array_equal(g[name], e[name], err_msg=f"{what}: {letter!r}.{name}")


def assert_itchfeed_attributes_all_mapped(msgs: list) -> None:
    """Every attribute itchfeed parses is one of our fields (so none escapes the comparison)."""
    seen = set()
    for m in msgs:
        letter = m.message_type.decode()
        if letter in seen:
            continue
        seen.add(letter)
        ours = {itchfeed_name(letter, n) for n, _ in fields(letter) if n != "message_type"}
        assert set(vars(m)) == ours, (letter, sorted(set(vars(m)) ^ ours))


def normalized_agreement(data_or_path, msgs: list, date: str, *, meta: Meta | None = None,
                         what: str = "") -> dict[str, np.ndarray]:
    got = tables_to_records(normalize.read_itch(data_or_path, date=date))
    exp = expected_records([itchfeed_fields(m) for m in msgs], session_clock(date).to_utc, meta=meta)
    for schema in R.SCHEMAS:
        assert_records_equal(got[schema], exp[schema], schema, what)
    return got


# ---------------------------------------------------------------------------------------------
# the reference itself

def test_itchfeed_runs_its_pure_python_reader():
    assert itch.USING_CPP_BACKEND is False
    assert MessageParser.__module__ == "itch.parser"


def test_itchfeed_message_sizes_equal_the_spec_lengths():
    from itch.messages import messages as classes
    assert {k.decode(): cls.message_size for k, cls in classes.items()} == SPEC_LENGTH


# ---------------------------------------------------------------------------------------------
# (a) NASDAQ's real BinaryFILE sample

@pytest.fixture(scope="module")
def sample():
    data = SAMPLE.read_bytes()
    msgs = parse_with_itchfeed(split_binaryfile(data))
    return data, msgs


def test_sample_file_is_the_one_in_provenance():
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == SAMPLE_SHA256


def test_read_itch_raw_of_nasdaq_sample_equals_itchfeed_field_by_field(sample):
    data, msgs = sample
    assert len(msgs) == 1000
    assert_itchfeed_attributes_all_mapped(msgs)
    raw = normalize.read_itch_raw(SAMPLE)
    assert {k: len(v) for k, v in raw.items()} == {"S": 1, "R": 993, "H": 3, "Y": 3}
    assert_raw_tables_equal(raw, itchfeed_raw_tables(msgs), "sample")


def test_read_itch_of_nasdaq_sample_equals_itchfeed_normalized(sample):
    _data, msgs = sample
    got = normalized_agreement(SAMPLE, msgs, SAMPLE_DATE, what="sample")
    defs = got["definitions"]
    directory = [m for m in msgs if m.message_type == b"R"]
    assert defs.shape[0] == 993
    assert defs["symbol"].tolist() == [m.stock for m in directory]
    assert defs["instrument_id"].tolist() == [m.stock_locate for m in directory]
    midnight_utc = session_clock(SAMPLE_DATE).local_midnight_ns + 5 * 3600 * 10**9   # EST
    assert defs["ts_event"].tolist() == [midnight_utc + m.timestamp for m in directory]


# ---------------------------------------------------------------------------------------------
# (b) real captures: MoldUDP64 in pcap

def _pcap_root() -> Path | None:
    for d in PCAP_DIRS:
        if d.is_dir() and any(d.glob("*/*.pcap")):
            return d
    return None


PCAP_ROOT = _pcap_root()
PCAPS = sorted(PCAP_ROOT.glob("*/*.pcap")) if PCAP_ROOT else []
PCAP_IDS = [f"{p.parent.name}/{p.name}" for p in PCAPS]
needs_pcaps = pytest.mark.skipif(not PCAPS, reason="no pcap captures in tests/data/pcap or /work/shared/data/pcap")


def _pcap_date(path: Path) -> str:
    m = re.search(r"\.(\d{4})(\d{2})(\d{2})$", path.parent.name)
    return f"{m[1]}-{m[2]}-{m[3]}" if m else "2020-01-02"


def _read_capture():
    try:
        from ingest.pcap import read_capture
    except ImportError as e:  # pragma: no cover - depends on the tree
        pytest.skip(f"ingest.pcap.read_capture is not available yet ({e})")
    return read_capture


@needs_pcaps
def test_pcap_captures_hold_every_order_message_type():
    letters = {m.data[:1].decode() for p in PCAPS for m in walk_pcap(p.read_bytes())}
    assert set("AFECXDUPQ") <= letters


@needs_pcaps
@pytest.mark.parametrize("path", PCAPS, ids=PCAP_IDS)
def test_read_itch_raw_of_captured_messages_equals_itchfeed(path):
    msgs = walk_pcap(path.read_bytes())
    assert msgs
    parsed = parse_with_itchfeed([m.data for m in msgs])
    assert_itchfeed_attributes_all_mapped(parsed)
    raw = normalize.read_itch_raw(binaryfile(m.data for m in msgs))
    assert_raw_tables_equal(raw, itchfeed_raw_tables(parsed), path.name)


@needs_pcaps
@pytest.mark.parametrize("path", PCAPS, ids=PCAP_IDS)
def test_read_capture_index_points_at_every_moldudp64_message(path):
    read_capture = _read_capture()
    data = path.read_bytes()
    walked = walk_pcap(data)
    cap = read_capture(data)
    idx = cap.index
    buf = np.asarray(cap.buf)
    assert idx.shape[0] == len(walked)
    assert [bytes(buf[o:o + n]) for o, n in zip(idx["offset"], idx["length"])] == [m.data for m in walked]
    assert idx["type"].tolist() == [m.data[0] for m in walked]
    assert idx["sequence"].tolist() == [m.sequence for m in walked]
    assert idx["ts_recv"].tolist() == [m.ts_recv for m in walked]
    assert idx["channel"].tolist() == [m.channel for m in walked]
    assert ((idx["flags"] & R.F_LAST) != 0).tolist() == [m.last for m in walked]


@needs_pcaps
@pytest.mark.parametrize("path", PCAPS, ids=PCAP_IDS)
def test_read_itch_of_capture_equals_itchfeed_raw_and_normalized(path):
    read_capture = _read_capture()
    data = path.read_bytes()
    cap = read_capture(data)
    buf = np.asarray(cap.buf)
    parsed = parse_with_itchfeed([bytes(buf[o:o + n]) for o, n in zip(cap.index["offset"], cap.index["length"])])
    assert_raw_tables_equal(normalize.read_itch_raw(path), itchfeed_raw_tables(parsed), path.name)
    walked = walk_pcap(data)
    meta = Meta([m.sequence for m in walked], [m.ts_recv for m in walked],
                [m.channel for m in walked], [m.last for m in walked])
    normalized_agreement(path, parsed, _pcap_date(path), meta=meta, what=path.name)


# ---------------------------------------------------------------------------------------------
# (c) a generated session with every message type

@pytest.fixture(scope="module")
def session():
    s = generate_session(200_000, 50, seed=20240315, date=GEN_DATE)
    data = s.to_binaryfile()
    msgs = parse_with_itchfeed(split_binaryfile(data))
    return data, msgs


def test_generated_session_holds_every_message_type(session):
    _data, msgs = session
    assert {m.message_type.decode() for m in msgs} == set(TYPE_LETTERS) == set(MESSAGES)


def test_read_itch_raw_of_generated_session_equals_itchfeed_field_by_field(session):
    data, msgs = session
    assert_itchfeed_attributes_all_mapped(msgs)
    assert_raw_tables_equal(normalize.read_itch_raw(data), itchfeed_raw_tables(msgs), "generated")


def test_read_itch_of_generated_session_equals_itchfeed_normalized(session):
    data, msgs = session
    got = normalized_agreement(data, msgs, GEN_DATE, what="generated")
    # a consistent session: every execution, cancel, delete and replace finds its order
    assert not (got["mbo"]["flags"] & (R.F_UNKNOWN_ORDER | R.F_BAD)).any()


def test_every_execution_of_generated_session_trades_at_its_orders_price(session):
    data, msgs = session
    trades = tables_to_records(normalize.read_itch(data, date=GEN_DATE))["trades"]
    price: dict[int, int] = {}        # live order -> Price(4), kept from itchfeed's messages
    left: dict[int, int] = {}
    expected_e = []
    for m in msgs:
        t = m.message_type
        if t in (b"A", b"F"):
            price[m.order_reference_number], left[m.order_reference_number] = m.price, m.shares
        elif t == b"U":
            del price[m.order_reference_number], left[m.order_reference_number]
            price[m.new_order_reference_number] = m.price
            left[m.new_order_reference_number] = m.shares
        elif t == b"D":
            del price[m.order_reference_number], left[m.order_reference_number]
        elif t in (b"E", b"C", b"X"):
            ref = m.order_reference_number
            if t == b"E":
                expected_e.append((m.match_number, price[ref] * R.PRICE4_TO_NANO))
            left[ref] -= m.cancelled_shares if t == b"X" else m.executed_shares
            if left[ref] == 0:
                del price[ref], left[ref]
    e = trades[trades["kind"] == ord("E")]
    assert len(expected_e) > 10_000
    assert list(zip(e["match_id"].tolist(), e["price"].tolist())) == expected_e
    n_trade_msgs = sum(m.message_type in (b"E", b"C", b"P", b"Q", b"B") for m in msgs)
    assert trades.shape[0] == n_trade_msgs


# ---------------------------------------------------------------------------------------------
# order-map edge cases the conventions fix (regressions of bugs found by these tests)

def _rows(*specs):
    out = []
    for letter, kw in specs:
        row = np.zeros(1, RAW_DTYPES[letter])
        for k, v in kw.items():
            row[k] = v
        out.append(row)
    return out


def test_replace_of_unknown_order_onto_a_live_reference_is_flagged_bad():
    data = normalize.encode_itch(_rows(
        ("A", dict(order_reference_number=7, buy_sell_indicator=b"B", shares=100, price=10_000)),
        ("U", dict(original_order_reference_number=99, new_order_reference_number=7, shares=5, price=1))))
    mbo = tables_to_records(normalize.read_itch(data, date=GEN_DATE))["mbo"]
    assert mbo["flags"][1] == R.F_UNKNOWN_ORDER | R.F_BAD


@pytest.mark.parametrize("ref", [0, 2**64 - 1])
def test_execution_of_a_reserved_order_reference_that_was_never_added_is_unknown(ref):
    # 0 and 2**64-1 are the order map's empty and deleted keys; ITCH never sends them
    data = normalize.encode_itch(_rows(
        ("A", dict(order_reference_number=5, buy_sell_indicator=b"S", shares=100, price=10_000)),
        ("D", dict(order_reference_number=5)),
        ("E", dict(order_reference_number=ref, executed_shares=10, match_number=1))))
    mbo = tables_to_records(normalize.read_itch(data, date=GEN_DATE))["mbo"]
    assert mbo["flags"][2] == R.F_PRINTABLE | R.F_UNKNOWN_ORDER
    assert mbo["side"][2] == R.SIDE_NONE
    assert mbo["price"][2] == R.UNDEF_PRICE
