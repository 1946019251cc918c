"""Pin every binary layout: ITCH 5.0 wire messages against the specification, and the
normalized records as declared (the databento ``layout_tests.rs`` habit).

The tables below are written out literally on purpose: a change to ``normalize.itch_spec`` or
``normalize.records`` that moves a field must show up here as a failing test, not pass silently
because the test derived its expectation from the code under test.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from normalize import itch_spec as S
from normalize import records as R

# ---------------------------------------------------------------------------------------------
# ITCH 5.0 (NASDAQ TotalView-ITCH 5.0 specification, section 1.x "Message Formats")

#: Message lengths as printed in the specification, without the BinaryFILE/MoldUDP64 prefix.
SPEC_TABLE = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}

_HEADER = [("message_type", 0, 1), ("stock_locate", 1, 2), ("tracking_number", 3, 2),
           ("timestamp", 5, 6)]

#: (field, offset, length) of every message, from the specification's tables.
SPEC_FIELDS: dict[str, list[tuple[str, int, int]]] = {
    "S": _HEADER + [("event_code", 11, 1)],
    "R": _HEADER + [("stock", 11, 8), ("market_category", 19, 1), ("financial_status_indicator", 20, 1),
                    ("round_lot_size", 21, 4), ("round_lots_only", 25, 1), ("issue_classification", 26, 1),
                    ("issue_sub_type", 27, 2), ("authenticity", 29, 1),
                    ("short_sale_threshold_indicator", 30, 1), ("ipo_flag", 31, 1),
                    ("luld_reference_price_tier", 32, 1), ("etp_flag", 33, 1),
                    ("etp_leverage_factor", 34, 4), ("inverse_indicator", 38, 1)],
    "H": _HEADER + [("stock", 11, 8), ("trading_state", 19, 1), ("reserved", 20, 1), ("reason", 21, 4)],
    "Y": _HEADER + [("stock", 11, 8), ("reg_sho_action", 19, 1)],
    "L": _HEADER + [("mpid", 11, 4), ("stock", 15, 8), ("primary_market_maker", 23, 1),
                    ("market_maker_mode", 24, 1), ("market_participant_state", 25, 1)],
    "V": _HEADER + [("level1", 11, 8), ("level2", 19, 8), ("level3", 27, 8)],
    "W": _HEADER + [("breached_level", 11, 1)],
    "K": _HEADER + [("stock", 11, 8), ("ipo_quotation_release_time", 19, 4),
                    ("ipo_quotation_release_qualifier", 23, 1), ("ipo_price", 24, 4)],
    "J": _HEADER + [("stock", 11, 8), ("auction_collar_reference_price", 19, 4),
                    ("upper_auction_collar_price", 23, 4), ("lower_auction_collar_price", 27, 4),
                    ("auction_collar_extension", 31, 4)],
    "h": _HEADER + [("stock", 11, 8), ("market_code", 19, 1), ("operational_halt_action", 20, 1)],
    "A": _HEADER + [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
                    ("stock", 24, 8), ("price", 32, 4)],
    "F": _HEADER + [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
                    ("stock", 24, 8), ("price", 32, 4), ("attribution", 36, 4)],
    "E": _HEADER + [("order_reference_number", 11, 8), ("executed_shares", 19, 4), ("match_number", 23, 8)],
    "C": _HEADER + [("order_reference_number", 11, 8), ("executed_shares", 19, 4), ("match_number", 23, 8),
                    ("printable", 31, 1), ("execution_price", 32, 4)],
    "X": _HEADER + [("order_reference_number", 11, 8), ("cancelled_shares", 19, 4)],
    "D": _HEADER + [("order_reference_number", 11, 8)],
    "U": _HEADER + [("original_order_reference_number", 11, 8), ("new_order_reference_number", 19, 8),
                    ("shares", 27, 4), ("price", 31, 4)],
    "P": _HEADER + [("order_reference_number", 11, 8), ("buy_sell_indicator", 19, 1), ("shares", 20, 4),
                    ("stock", 24, 8), ("price", 32, 4), ("match_number", 36, 8)],
    "Q": _HEADER + [("shares", 11, 8), ("stock", 19, 8), ("cross_price", 27, 4), ("match_number", 31, 8),
                    ("cross_type", 39, 1)],
    "B": _HEADER + [("match_number", 11, 8)],
    "I": _HEADER + [("paired_shares", 11, 8), ("imbalance_shares", 19, 8), ("imbalance_direction", 27, 1),
                    ("stock", 28, 8), ("far_price", 36, 4), ("near_price", 40, 4),
                    ("current_reference_price", 44, 4), ("cross_type", 48, 1),
                    ("price_variation_indicator", 49, 1)],
    "N": _HEADER + [("stock", 11, 8), ("interest_flag", 19, 1)],
    "O": _HEADER + [("stock", 11, 8), ("open_eligibility_status", 19, 1), ("minimum_allowable_price", 20, 4),
                    ("maximum_allowable_price", 24, 4), ("near_execution_price", 28, 4),
                    ("near_execution_time", 32, 8), ("lower_price_range_collar", 40, 4),
                    ("upper_price_range_collar", 44, 4)],
}

#: Price fields and their implied decimals: Price(4) everywhere except the MWCB levels, Price(8).
SPEC_PRICES = {
    "V": {"level1": 8, "level2": 8, "level3": 8},
    "K": {"ipo_price": 4},
    "J": {"auction_collar_reference_price": 4, "upper_auction_collar_price": 4, "lower_auction_collar_price": 4},
    "A": {"price": 4}, "F": {"price": 4}, "C": {"execution_price": 4}, "U": {"price": 4}, "P": {"price": 4},
    "Q": {"cross_price": 4},
    "I": {"far_price": 4, "near_price": 4, "current_reference_price": 4},
    "O": {"minimum_allowable_price": 4, "maximum_allowable_price": 4, "near_execution_price": 4,
          "lower_price_range_collar": 4, "upper_price_range_collar": 4},
}

LETTERS = sorted(SPEC_TABLE, key=lambda k: S.TYPE_LETTERS.index(k))


def test_spec_table_in_code_equals_the_specification():
    assert S.SPEC_LENGTH == SPEC_TABLE
    assert set(S.MESSAGES) == set(SPEC_TABLE) == set(S.TYPE_LETTERS)
    assert len(S.TYPE_LETTERS) == 23


@pytest.mark.parametrize("letter", LETTERS)
def test_wire_dtype_itemsize_equals_spec_length(letter):
    assert S.WIRE_DTYPES[letter].itemsize == SPEC_TABLE[letter] == S.SPEC_LENGTH[letter]


@pytest.mark.parametrize("letter", LETTERS)
def test_message_length_table_holds_the_spec_length_at_the_type_byte(letter):
    assert S.MESSAGE_LENGTH[ord(letter)] == SPEC_TABLE[letter]


def test_message_length_table_is_zero_for_every_other_byte():
    known = {ord(k) for k in SPEC_TABLE}
    assert S.MESSAGE_LENGTH.shape == (256,)
    assert all(S.MESSAGE_LENGTH[b] == 0 for b in range(256) if b not in known)


@pytest.mark.parametrize("letter", LETTERS)
def test_wire_dtype_field_offsets_and_sizes_equal_the_specification(letter):
    dt = S.WIRE_DTYPES[letter]
    got = []
    for name in dt.names:
        f, off = dt.fields[name][:2]
        got.append((name, off, f.itemsize))
    expected = []
    for name, off, size in SPEC_FIELDS[letter]:
        if name == "timestamp":            # 6 bytes: a big-endian u16 then u32
            expected += [("timestamp_hi", 5, 2), ("timestamp_lo", 7, 4)]
        else:
            expected.append((name, off, size))
    assert got == expected
    assert sum(size for _, _, size in SPEC_FIELDS[letter]) == SPEC_TABLE[letter]


@pytest.mark.parametrize("letter", LETTERS)
def test_wire_dtype_integers_are_big_endian_and_alpha_fields_are_bytes(letter):
    dt = S.WIRE_DTYPES[letter]
    for name in dt.names:
        f = dt.fields[name][0]
        if f.kind == "u" and f.itemsize > 1:
            assert f.byteorder == ">", (letter, name)
        else:
            assert f.kind == "S", (letter, name, f)


@pytest.mark.parametrize("letter", LETTERS)
def test_raw_dtype_is_native_with_one_uint64_timestamp(letter):
    raw, wire = S.RAW_DTYPES[letter], S.WIRE_DTYPES[letter]
    assert raw.names == tuple(n for n, _, _ in SPEC_FIELDS[letter])
    assert raw.fields["timestamp"][0] == np.dtype("<u8")
    for name in raw.names:
        f = raw.fields[name][0]
        if name != "timestamp":
            assert f.kind == wire.fields[name][0].kind
            assert f.itemsize == wire.fields[name][0].itemsize
        assert f.byteorder in ("<", "|", "="), (letter, name)


@pytest.mark.parametrize("letter", LETTERS)
def test_price_fields_and_their_decimals_equal_the_specification(letter):
    kinds = {name: kind for name, kind in S.fields(letter)}
    prices = {name: S.PRICE_DECIMALS[k] for name, k in kinds.items() if k in S.PRICE_DECIMALS}
    assert prices == SPEC_PRICES.get(letter, {})


def test_key_offsets_of_add_order_read_as_the_specification():
    a = S.WIRE_DTYPES["A"].fields
    assert [a[n][1] for n in ("message_type", "stock_locate", "tracking_number", "timestamp_hi",
                              "order_reference_number", "buy_sell_indicator", "shares", "stock",
                              "price")] == [0, 1, 3, 5, 11, 19, 20, 24, 32]


def test_wire_dtype_views_a_spec_example_message_without_parsing():
    msg = (b"A" + (7).to_bytes(2, "big") + (3).to_bytes(2, "big") + (34_200_000_000_123).to_bytes(6, "big")
           + (123456789).to_bytes(8, "big") + b"B" + (300).to_bytes(4, "big") + b"AAPL    "
           + (1_502_500).to_bytes(4, "big"))
    assert len(msg) == 36
    v = np.frombuffer(msg, S.WIRE_DTYPES["A"])
    raw = S.wire_to_raw(v, "A")[0]
    assert (raw["stock_locate"], raw["tracking_number"], raw["timestamp"]) == (7, 3, 34_200_000_000_123)
    assert (raw["order_reference_number"], raw["buy_sell_indicator"], raw["shares"]) == (123456789, b"B", 300)
    assert (raw["stock"], raw["price"]) == (b"AAPL    ", 1_502_500)
    assert S.raw_to_wire(S.wire_to_raw(v, "A"), "A").tobytes() == msg


def test_raw_to_wire_refuses_a_timestamp_wider_than_48_bits():
    raw = np.zeros(1, S.RAW_DTYPES["S"])
    raw["timestamp"] = 1 << 48
    with pytest.raises(ValueError, match="48 bits"):
        S.raw_to_wire(raw, "S")


# ---------------------------------------------------------------------------------------------
# normalized records, as declared in normalize/records.py

#: (field, offset, dtype str, shape) of every normalized record; sizes below.
RECORD_SIZES = {"mbo": 80, "trades": 72, "definitions": 56, "status": 88, "imbalance": 120}
RECORD_FIELDS = {
    "mbo": [
        ("ts_event", 0, "<u8"), ("ts_recv", 8, "<u8"), ("sequence", 16, "<u8"), ("order_id", 24, "<u8"),
        ("new_order_id", 32, "<u8"), ("match_id", 40, "<u8"), ("price", 48, "<i8"), ("size", 56, "<u8"),
        ("instrument_id", 64, "<u4"), ("channel", 68, "<u2"), ("tracking", 70, "<u2"), ("action", 72, "|u1"),
        ("side", 73, "|u1"), ("flags", 74, "|u1"), ("cross_type", 75, "|u1"), ("mpid", 76, "|S4"),
    ],
    "trades": [
        ("ts_event", 0, "<u8"), ("ts_recv", 8, "<u8"), ("sequence", 16, "<u8"), ("match_id", 24, "<u8"),
        ("order_id", 32, "<u8"), ("price", 40, "<i8"), ("size", 48, "<u8"), ("instrument_id", 56, "<u4"),
        ("channel", 60, "<u2"), ("kind", 62, "|u1"), ("side", 63, "|u1"), ("printable", 64, "|u1"),
        ("cross_type", 65, "|u1"), ("_pad", 66, "|u1", (6,)),
    ],
    "definitions": [
        ("ts_event", 0, "<u8"), ("sequence", 8, "<u8"), ("round_lot_size", 16, "<u4"),
        ("etp_leverage_factor", 20, "<u4"), ("instrument_id", 24, "<u4"), ("channel", 28, "<u2"),
        ("symbol", 30, "|S8"), ("market_category", 38, "|S1"), ("financial_status", 39, "|S1"),
        ("round_lots_only", 40, "|S1"), ("issue_classification", 41, "|S1"), ("issue_subtype", 42, "|S2"),
        ("authenticity", 44, "|S1"), ("short_sale_threshold", 45, "|S1"), ("ipo_flag", 46, "|S1"),
        ("luld_tier", 47, "|S1"), ("etp_flag", 48, "|S1"), ("inverse", 49, "|S1"), ("_pad", 50, "|u1", (6,)),
    ],
    "status": [
        ("ts_event", 0, "<u8"), ("ts_recv", 8, "<u8"), ("sequence", 16, "<u8"), ("price_1", 24, "<i8"),
        ("price_2", 32, "<i8"), ("price_3", 40, "<i8"), ("value", 48, "<u8"), ("instrument_id", 56, "<u4"),
        ("channel", 60, "<u2"), ("tracking", 62, "<u2"), ("msg_type", 64, "|S1"), ("code", 65, "|S1"),
        ("code2", 66, "|S1"), ("code3", 67, "|S1"), ("reason", 68, "|S4"), ("mpid", 72, "|S4"),
        ("symbol", 76, "|S8"), ("_pad", 84, "|u1", (4,)),
    ],
    "imbalance": [
        ("ts_event", 0, "<u8"), ("ts_recv", 8, "<u8"), ("sequence", 16, "<u8"), ("paired_shares", 24, "<u8"),
        ("imbalance_shares", 32, "<u8"), ("far_price", 40, "<i8"), ("near_price", 48, "<i8"),
        ("ref_price", 56, "<i8"), ("min_price", 64, "<i8"), ("max_price", 72, "<i8"),
        ("lower_collar", 80, "<i8"), ("upper_collar", 88, "<i8"), ("near_exec_time", 96, "<u8"),
        ("instrument_id", 104, "<u4"), ("channel", 108, "<u2"), ("tracking", 110, "<u2"),
        ("msg_type", 112, "|S1"), ("imbalance_direction", 113, "|S1"), ("cross_type", 114, "|S1"),
        ("price_variation", 115, "|S1"), ("interest_flag", 116, "|S1"), ("open_eligibility", 117, "|S1"),
        ("_pad", 118, "|u1", (2,)),
    ],
}
SCHEMA_NAMES = list(RECORD_SIZES)


def test_schemas_are_the_five_declared_records():
    assert list(R.SCHEMAS) == SCHEMA_NAMES
    assert R.SCHEMAS == {"mbo": R.MBO, "trades": R.TRADES, "definitions": R.DEFINITIONS,
                         "status": R.STATUS, "imbalance": R.IMBALANCE}


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_record_itemsize_is_pinned_and_a_multiple_of_eight(schema):
    dt = R.SCHEMAS[schema]
    assert dt.itemsize == RECORD_SIZES[schema]
    assert dt.itemsize % 8 == 0


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_record_field_offsets_and_types_are_pinned(schema):
    dt = R.SCHEMAS[schema]
    got = []
    for name in dt.names:
        f, off = dt.fields[name][:2]
        got.append((name, off, f.base.str) + ((f.shape,) if f.shape else ()))
    assert got == RECORD_FIELDS[schema]


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_record_fields_tile_the_record_without_gaps(schema):
    dt = R.SCHEMAS[schema]
    end = 0
    for name in dt.names:
        f, off = dt.fields[name][:2]
        assert off == end, (schema, name, off, end)
        assert off % f.base.alignment == 0, (schema, name, "misaligned")
        end = off + f.itemsize
    assert end == dt.itemsize


def test_named_scales_and_sentinels():
    assert R.PRICE_SCALE == 1_000_000_000
    assert R.PRICE4_TO_NANO == 100_000 == R.PRICE_SCALE // 10**4
    assert R.PRICE8_TO_NANO == 10 == R.PRICE_SCALE // 10**8
    assert R.UNDEF_PRICE == 2**63 - 1
    assert R.UNDEF_TIMESTAMP == 2**64 - 1


def test_action_side_and_flag_codes_are_pinned():
    assert [R.ACTION_ADD, R.ACTION_EXECUTE, R.ACTION_CANCEL, R.ACTION_DELETE, R.ACTION_REPLACE,
            R.ACTION_TRADE, R.ACTION_CROSS, R.ACTION_BROKEN, R.ACTION_CLEAR] == [ord(c) for c in "AECDUPQBR"]
    assert (R.SIDE_BID, R.SIDE_ASK, R.SIDE_NONE) == (ord("B"), ord("S"), ord("N"))
    flags = [R.F_MPID, R.F_WITH_PRICE, R.F_PRINTABLE, R.F_RESOLVED, R.F_UNKNOWN_ORDER, R.F_SNAPSHOT,
             R.F_LAST, R.F_BAD]
    assert flags == [1 << k for k in range(8)]


def test_time_columns_are_the_ts_fields():
    assert R.TIME_COLUMNS == {"mbo": ("ts_event", "ts_recv"), "trades": ("ts_event", "ts_recv"),
                              "definitions": ("ts_event",), "status": ("ts_event", "ts_recv"),
                              "imbalance": ("ts_event", "ts_recv")}


def test_price_columns_are_the_int64_price_fields():
    assert R.PRICE_COLUMNS["mbo"] == ("price",)
    assert R.PRICE_COLUMNS["trades"] == ("price",)
    assert R.PRICE_COLUMNS["definitions"] == ()
    assert R.PRICE_COLUMNS["status"] == ("price_1", "price_2", "price_3")
    assert set(R.PRICE_COLUMNS["imbalance"]) == {"far_price", "near_price", "ref_price", "min_price",
                                                 "max_price", "lower_collar", "upper_collar"}


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_every_price_column_is_an_int64_fixed_point_field(schema):
    # `price_variation` (imbalance) is a 1-byte code despite its name
    dt = R.SCHEMAS[schema]
    assert all(dt.fields[c][0] == np.dtype("<i8") for c in R.PRICE_COLUMNS[schema]), R.PRICE_COLUMNS[schema]


# ---------------------------------------------------------------------------------------------
# Arrow schemas derived from the records

@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_arrow_schema_drops_padding_and_keeps_field_order(schema):
    sch = R.arrow_schema(schema)
    assert sch.names == [n for n, *_ in RECORD_FIELDS[schema] if not n.startswith("_")]


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_arrow_schema_types_derive_from_the_dtype(schema):
    sch = R.arrow_schema(schema)
    for name, _off, code, *_ in RECORD_FIELDS[schema]:
        if name.startswith("_"):
            continue
        f = sch.field(name)
        if name.startswith("ts_"):
            assert f.type == pa.timestamp("ns", tz="UTC") and f.nullable, name
            continue
        assert not f.nullable, name
        if code == "|S1":
            assert f.type == pa.uint8(), name
        elif code.startswith("|S"):
            assert f.type == pa.binary(int(code[2:])), name
        else:
            assert f.type == pa.from_numpy_dtype(np.dtype(code)), name


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_arrow_schema_metadata_carries_the_price_scale_and_sentinel(schema):
    meta = R.arrow_schema(schema).metadata
    assert meta[b"tickpipe.schema"] == schema.encode()
    assert meta[b"tickpipe.price_scale"] == b"1000000000"
    assert meta[b"tickpipe.undef_price"] == str(2**63 - 1).encode()


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_empty_table_has_the_derived_schema(schema):
    t = R.empty_table(schema)
    assert t.num_rows == 0 and t.schema.equals(R.arrow_schema(schema), check_metadata=True)


def _random_records(schema: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = R.SCHEMAS[schema]
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    rec = raw.view(dt).copy()
    for name in dt.names:
        f = dt.fields[name][0]
        if name.startswith("_"):
            rec[name] = 0                                   # padding is not carried
        elif f.kind == "S":                                 # printable alpha, as decoded
            rec[name] = rng.integers(0x20, 0x7F, size=(n, f.itemsize), dtype=np.uint8).view(f).reshape(n)
        elif name.startswith("ts_"):
            ts = rng.integers(0, 2**62, size=n, dtype=np.uint64)
            ts[::7] = R.UNDEF_TIMESTAMP                      # unknown times become nulls
            rec[name] = ts
    return rec


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_to_arrow_then_from_arrow_returns_the_same_records(schema):
    rec = _random_records(schema, 257, seed=len(schema))
    batch = R.to_arrow(schema, rec)
    assert batch.schema.equals(R.arrow_schema(schema), check_metadata=True)
    back = R.from_arrow(schema, batch)
    assert back.dtype == rec.dtype
    assert back.tobytes() == rec.tobytes()
    # and through a chunked, sliced table
    table = pa.Table.from_batches([batch.slice(0, 100), batch.slice(100)])
    assert R.from_arrow(schema, table).tobytes() == rec.tobytes()
    assert R.from_arrow(schema, batch.slice(3, 50)).tobytes() == rec[3:53].tobytes()


@pytest.mark.parametrize("schema", SCHEMA_NAMES)
def test_to_arrow_stores_undefined_timestamps_as_nulls_and_codes_as_ascii(schema):
    rec = _random_records(schema, 64, seed=7)
    batch = R.to_arrow(schema, rec)
    for name in R.TIME_COLUMNS[schema]:
        col = batch.column(name)
        assert col.null_count == int((rec[name] == R.UNDEF_TIMESTAMP).sum()) > 0
        valid = rec[name] != R.UNDEF_TIMESTAMP
        ints = col.cast(pa.int64()).fill_null(0).to_numpy()
        assert (ints[valid].astype(np.uint64) == rec[name][valid]).all()
    for name, *_ in RECORD_FIELDS[schema]:
        if R.SCHEMAS[schema].fields[name][0] == np.dtype("S1"):
            assert batch.column(name).to_pylist() == [b[0] for b in rec[name].tolist()]


def test_to_arrow_refuses_records_of_another_layout():
    with pytest.raises(TypeError, match="mbo"):
        R.to_arrow("mbo", np.zeros(1, R.TRADES))
