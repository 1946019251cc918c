"""NASDAQ TotalView-ITCH 5.0 message layouts, declared once.

Every message type of the ITCH 5.0 specification (section 1.x, "Message Formats") is declared
here as a list of ``(field, kind)`` pairs in wire order. Everything else is derived from it:

* :data:`WIRE_DTYPES` — big-endian NumPy dtypes whose ``itemsize`` equals the message length
  in the specification (the 6-byte timestamp is ``'>u2'`` + ``'>u4'``); ``np.frombuffer`` of a
  message's bytes with it is a zero-parse view;
* :data:`RAW_DTYPES` — the native-endian "raw table" dtypes returned by
  :func:`normalize.read_itch_raw` (the timestamp joined into one ``uint64``);
* :data:`MESSAGE_LENGTH` — a 256-entry table of expected lengths (0 = unknown type) used by the
  compiled framer to check every length prefix against the type byte.

Prices on the wire are unsigned integers with 4 implied decimals (``Price(4)``), except the
MWCB decline levels which have 8 (``Price(8)``). Alpha fields are left-justified and padded
with spaces.
"""

from __future__ import annotations

import numpy as np

# kinds: c=1-byte alpha, aN=N-byte alpha, u2/u4/u8 unsigned big-endian integers, ts=6-byte
# nanoseconds since midnight, p4=Price(4), p8=Price(8)
_HEAD = [("message_type", "c"), ("stock_locate", "u2"), ("tracking_number", "u2"), ("timestamp", "ts")]

MESSAGES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "S": ("system_event", [("event_code", "c")]),
    "R": ("stock_directory", [
        ("stock", "a8"), ("market_category", "c"), ("financial_status_indicator", "c"),
        ("round_lot_size", "u4"), ("round_lots_only", "c"), ("issue_classification", "c"),
        ("issue_sub_type", "a2"), ("authenticity", "c"), ("short_sale_threshold_indicator", "c"),
        ("ipo_flag", "c"), ("luld_reference_price_tier", "c"), ("etp_flag", "c"),
        ("etp_leverage_factor", "u4"), ("inverse_indicator", "c")]),
    "H": ("stock_trading_action", [
        ("stock", "a8"), ("trading_state", "c"), ("reserved", "c"), ("reason", "a4")]),
    "Y": ("reg_sho_restriction", [("stock", "a8"), ("reg_sho_action", "c")]),
    "L": ("market_participant_position", [
        ("mpid", "a4"), ("stock", "a8"), ("primary_market_maker", "c"),
        ("market_maker_mode", "c"), ("market_participant_state", "c")]),
    "V": ("mwcb_decline_level", [("level1", "p8"), ("level2", "p8"), ("level3", "p8")]),
    "W": ("mwcb_status", [("breached_level", "c")]),
    "K": ("ipo_quoting_period_update", [
        ("stock", "a8"), ("ipo_quotation_release_time", "u4"),
        ("ipo_quotation_release_qualifier", "c"), ("ipo_price", "p4")]),
    "J": ("luld_auction_collar", [
        ("stock", "a8"), ("auction_collar_reference_price", "p4"),
        ("upper_auction_collar_price", "p4"), ("lower_auction_collar_price", "p4"),
        ("auction_collar_extension", "u4")]),
    "h": ("operational_halt", [
        ("stock", "a8"), ("market_code", "c"), ("operational_halt_action", "c")]),
    "A": ("add_order", [
        ("order_reference_number", "u8"), ("buy_sell_indicator", "c"), ("shares", "u4"),
        ("stock", "a8"), ("price", "p4")]),
    "F": ("add_order_mpid", [
        ("order_reference_number", "u8"), ("buy_sell_indicator", "c"), ("shares", "u4"),
        ("stock", "a8"), ("price", "p4"), ("attribution", "a4")]),
    "E": ("order_executed", [
        ("order_reference_number", "u8"), ("executed_shares", "u4"), ("match_number", "u8")]),
    "C": ("order_executed_with_price", [
        ("order_reference_number", "u8"), ("executed_shares", "u4"), ("match_number", "u8"),
        ("printable", "c"), ("execution_price", "p4")]),
    "X": ("order_cancel", [("order_reference_number", "u8"), ("cancelled_shares", "u4")]),
    "D": ("order_delete", [("order_reference_number", "u8")]),
    "U": ("order_replace", [
        ("original_order_reference_number", "u8"), ("new_order_reference_number", "u8"),
        ("shares", "u4"), ("price", "p4")]),
    "P": ("trade", [
        ("order_reference_number", "u8"), ("buy_sell_indicator", "c"), ("shares", "u4"),
        ("stock", "a8"), ("price", "p4"), ("match_number", "u8")]),
    "Q": ("cross_trade", [
        ("shares", "u8"), ("stock", "a8"), ("cross_price", "p4"), ("match_number", "u8"),
        ("cross_type", "c")]),
    "B": ("broken_trade", [("match_number", "u8")]),
    "I": ("noii", [
        ("paired_shares", "u8"), ("imbalance_shares", "u8"), ("imbalance_direction", "c"),
        ("stock", "a8"), ("far_price", "p4"), ("near_price", "p4"),
        ("current_reference_price", "p4"), ("cross_type", "c"), ("price_variation_indicator", "c")]),
    "N": ("rpii", [("stock", "a8"), ("interest_flag", "c")]),
    "O": ("dlcr_price_discovery", [
        ("stock", "a8"), ("open_eligibility_status", "c"), ("minimum_allowable_price", "p4"),
        ("maximum_allowable_price", "p4"), ("near_execution_price", "p4"),
        ("near_execution_time", "u8"), ("lower_price_range_collar", "p4"),
        ("upper_price_range_collar", "p4")]),
}

#: Message lengths as printed in the ITCH 5.0 specification (without the framing prefix).
SPEC_LENGTH = {
    "S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
    "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
    "I": 50, "N": 20, "O": 48,
}

#: Implied decimals of each price kind.
PRICE_DECIMALS = {"p4": 4, "p8": 8}

_WIRE_KIND = {"c": "S1", "u2": ">u2", "u4": ">u4", "u8": ">u8", "p4": ">u4", "p8": ">u8"}
_RAW_KIND = {"c": "S1", "u2": "<u2", "u4": "<u4", "u8": "<u8", "p4": "<u4", "p8": "<u8", "ts": "<u8"}


def fields(letter: str) -> list[tuple[str, str]]:
    """All fields of a message type in wire order, the common header included."""
    return _HEAD + MESSAGES[letter][1]


def _kind_dtype(kind: str, table: dict[str, str]) -> str:
    if kind.startswith("a"):
        return f"S{int(kind[1:])}"
    return table[kind]


def _wire_dtype(letter: str) -> np.dtype:
    out = []
    for name, kind in fields(letter):
        if kind == "ts":
            out += [(name + "_hi", ">u2"), (name + "_lo", ">u4")]
        else:
            out.append((name, _kind_dtype(kind, _WIRE_KIND)))
    return np.dtype(out)


def _raw_dtype(letter: str) -> np.dtype:
    return np.dtype([(name, _kind_dtype(kind, _RAW_KIND)) for name, kind in fields(letter)])


WIRE_DTYPES: dict[str, np.dtype] = {k: _wire_dtype(k) for k in MESSAGES}
RAW_DTYPES: dict[str, np.dtype] = {k: _raw_dtype(k) for k in MESSAGES}
NAMES: dict[str, str] = {k: v[0] for k, v in MESSAGES.items()}

MESSAGE_LENGTH = np.zeros(256, dtype=np.int64)
for _k, _dt in WIRE_DTYPES.items():
    MESSAGE_LENGTH[ord(_k)] = _dt.itemsize
del _k, _dt

#: Type letters in a fixed order; the index is the "type code" used in compiled code.
TYPE_LETTERS = "SRHYLVWKJhAFECXDUPQBINO"


def wire_to_raw(wire: np.ndarray, letter: str) -> np.ndarray:
    """Convert an array of wire-layout messages to the native raw-table layout."""
    out = np.empty(wire.shape[0], dtype=RAW_DTYPES[letter])
    for name, kind in fields(letter):
        if kind == "ts":
            out[name] = (wire[name + "_hi"].astype(np.uint64) << np.uint64(32)) | wire[name + "_lo"]
        else:
            out[name] = wire[name]
    return out


def raw_to_wire(raw: np.ndarray, letter: str) -> np.ndarray:
    """Convert native raw-table messages to the big-endian wire layout (the inverse)."""
    out = np.empty(raw.shape[0], dtype=WIRE_DTYPES[letter])
    for name, kind in fields(letter):
        if kind == "ts":
            ts = raw[name].astype(np.uint64)
            if ts.size and int(ts.max()) >= 1 << 48:
                raise ValueError(f"{letter!r} timestamp does not fit in 48 bits: {int(ts.max())}")
            out[name + "_hi"] = ts >> np.uint64(32)
            out[name + "_lo"] = ts & np.uint64(0xFFFFFFFF)
        elif name == "message_type":
            out[name] = letter.encode()
        else:
            out[name] = raw[name]
    return out
