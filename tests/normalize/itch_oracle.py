"""Test-side references for the ITCH normalizer, written in plain Python from the specification.

Nothing here imports the decoder under test: messages are framed with ``struct``, order state is
a ``dict``, and the expected normalized records are built row by row following the conventions
documented in :mod:`normalize.records`. The tests feed these references either with
``itchfeed``'s parsed messages or with the rows hypothesis drew, and compare with
:func:`normalize.read_itch`.

* :func:`split_binaryfile` — message bytes of a BinaryFILE buffer (``u16`` length prefix).
* :func:`walk_pcap` — message bytes plus per-message metadata of a classic pcap of Ethernet /
  802.1Q / IPv4 / UDP / MoldUDP64 packets.
* :func:`expected_records` — the five normalized tables, from messages in input order.
* :func:`assert_records_equal` — field-by-field comparison naming the first differing row.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from normalize import records as R

UNDEF_PRICE = int(R.UNDEF_PRICE)
UNDEF_TS = int(R.UNDEF_TIMESTAMP)
P4 = R.PRICE4_TO_NANO
P8 = R.PRICE8_TO_NANO
SIDE_NONE = R.SIDE_NONE

#: itchfeed attribute name of each raw-table field whose name differs (letter, field) -> attr.
ITCHFEED_NAMES: dict[tuple[str, str], str] = {
    ("R", "luld_reference_price_tier"): "luld_ref",
    ("V", "level1"): "level1_price",
    ("V", "level2"): "level2_price",
    ("V", "level3"): "level3_price",
    ("K", "ipo_quotation_release_time"): "ipo_release_time",
    ("K", "ipo_quotation_release_qualifier"): "ipo_release_qualifier",
    ("J", "auction_collar_extension"): "auction_collar_extention",
    ("U", "original_order_reference_number"): "order_reference_number",
    ("I", "price_variation_indicator"): "variation_indicator",
}


def itchfeed_name(letter: str, field: str) -> str:
    return ITCHFEED_NAMES.get((letter, field), field)


# ---------------------------------------------------------------------------------------------
# framing references

def split_binaryfile(data: bytes) -> list[bytes]:
    """Every message of a BinaryFILE buffer, in order (the buffer must be well formed)."""
    out, pos, n = [], 0, len(data)
    while pos < n:
        (length,) = struct.unpack_from(">H", data, pos)
        out.append(bytes(data[pos + 2:pos + 2 + length]))
        pos += 2 + length
    assert pos == n, "buffer ends inside a message"
    return out


def binaryfile(messages: Iterable[bytes]) -> bytes:
    """BinaryFILE framing of message bytes."""
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


@dataclass
class PcapMessage:
    data: bytes          # the ITCH message
    sequence: int        # MoldUDP64 sequence number of this message
    ts_recv: int         # capture time, UTC ns
    channel: int         # 0-based, by first appearance of (dst ip, dst port, session)
    last: bool           # last message of its packet
    packet: int          # 0-based record number in the capture


def walk_pcap(data: bytes) -> list[PcapMessage]:
    """MoldUDP64 messages of a classic pcap (Ethernet link type, VLAN tags, IPv4, UDP)."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"not a classic pcap: magic {magic.hex()}")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    (link,) = struct.unpack_from(e + "I", data, 20)
    assert link == 1, f"walk_pcap reads Ethernet captures only, got link type {link}"
    channels: dict[tuple, int] = {}
    out: list[PcapMessage] = []
    pos, rec = 24, 0
    while pos + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(e + "IIII", data, pos)
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ts = sec * 1_000_000_000 + (frac if nanos else frac * 1000)
        p = 12
        (ethertype,) = struct.unpack_from(">H", pkt, p)
        p += 2
        while ethertype in (0x8100, 0x88A8, 0x9100):
            (ethertype,) = struct.unpack_from(">H", pkt, p + 2)
            p += 4
        assert ethertype == 0x0800 and pkt[p + 9] == 17, "IPv4 UDP expected"
        dst_ip = bytes(pkt[p + 16:p + 20])
        udp = p + (pkt[p] & 0x0F) * 4
        dst_port, ulen = struct.unpack_from(">HH", pkt, udp + 2)
        mold = pkt[udp + 8:udp + ulen]
        session = bytes(mold[:10])
        seq, count = struct.unpack_from(">QH", mold, 10)
        chan = channels.setdefault((dst_ip, dst_port, session), len(channels))
        q = 20
        if count not in (0, 0xFFFF):
            for k in range(count):
                (length,) = struct.unpack_from(">H", mold, q)
                out.append(PcapMessage(bytes(mold[q + 2:q + 2 + length]), seq + k, ts, chan,
                                       k == count - 1, rec))
                q += 2 + length
        rec += 1
    return out


# ---------------------------------------------------------------------------------------------
# the expected normalized records

def _p8(v) -> int:
    """A Price(8) at 1e-9; one the int64 scale cannot hold is undefined."""
    v = int(v)
    return v * P8 if v <= UNDEF_PRICE // P8 else UNDEF_PRICE


def _b(v) -> int:
    """The byte value of a 1-byte alpha field (bytes of length 1)."""
    return bytes(v)[0] if len(bytes(v)) else 0


@dataclass
class Meta:
    """Per-message metadata a capture carries (BinaryFILE: sequence = 1-based message number)."""

    sequence: Sequence[int]
    ts_recv: Sequence[int]
    channel: Sequence[int]
    last: Sequence[bool]


def expected_records(messages: Sequence[tuple[str, Mapping]],
                     ts_to_utc: Callable[[np.ndarray], np.ndarray], *,
                     meta: Meta | None = None) -> dict[str, np.ndarray]:
    """The normalized tables the ITCH messages should produce, per ``normalize.records``.

    ``messages`` are ``(letter, fields)`` pairs in input order, ``fields`` keyed by the raw-table
    field names (``RAW_DTYPES``); ``ts_to_utc`` maps ITCH nanoseconds since midnight to UTC epoch
    nanoseconds. Order state is a plain dict ``ref -> [price, side, remaining]``:

    * an add of a live reference is ``F_BAD`` and replaces it;
    * an execution, cancel or delete of a reference not live is ``F_UNKNOWN_ORDER`` (side ``N``,
      price undefined unless the message carries one, a delete's size 0); of a live one it is
      ``F_RESOLVED`` with the order's side and price (``C`` keeps its own price), a delete's size
      is what remained, and executing or cancelling more than remains is ``F_BAD`` and ends it;
    * a replace removes the original (unknown: ``F_UNKNOWN_ORDER``, side ``N``) and adds the new
      reference with the original's side; a new reference that is already live is ``F_BAD``.
    """
    n = len(messages)
    ts = [int(x) for x in ts_to_utc(np.array([int(f["timestamp"]) for _, f in messages],
                                             dtype=np.uint64))] if n else []
    book: dict[int, list[int]] = {}
    mbo, trades, defs, status, imb = [], [], [], [], []
    for i, (t, f) in enumerate(messages):
        if meta is None:
            seq, recv, chan, xflags = i + 1, UNDEF_TS, 0, 0
        else:
            seq, recv, chan = int(meta.sequence[i]), int(meta.ts_recv[i]), int(meta.channel[i])
            xflags = R.F_LAST if meta.last[i] else 0
        te = ts[i]
        loc, trk = int(f["stock_locate"]), int(f["tracking_number"])

        def add_mbo(order_id, new_id, match, price, size, action, side, flags, cross=0, mpid=b""):
            mbo.append((te, recv, seq, order_id, new_id, match, price, size, loc, chan, trk,
                        ord(action), side, flags | xflags, cross, mpid))

        def add_trade(match, order_id, price, size, kind, side, printable, cross=0):
            trades.append((te, recv, seq, match, order_id, price, size, loc, chan, ord(kind), side,
                           printable, cross, np.zeros(6, np.uint8)))

        if t in "AF":
            ref, side = int(f["order_reference_number"]), _b(f["buy_sell_indicator"])
            price, size = int(f["price"]) * P4, int(f["shares"])
            flags = R.F_MPID if t == "F" else 0
            if ref in book:
                flags |= R.F_BAD
            book[ref] = [price, side, size]
            add_mbo(ref, 0, 0, price, size, "A", side, flags, mpid=bytes(f["attribution"]) if t == "F" else b"")
        elif t in "ECXD":
            ref = int(f["order_reference_number"])
            o = book.get(ref)
            flags, side = 0, SIDE_NONE
            if t == "C":
                price = int(f["execution_price"]) * P4
                flags |= R.F_WITH_PRICE | (R.F_PRINTABLE if bytes(f["printable"]) == b"Y" else 0)
            else:
                price = UNDEF_PRICE
                flags |= R.F_PRINTABLE if t == "E" else 0
            size = {"E": "executed_shares", "C": "executed_shares", "X": "cancelled_shares"}.get(t)
            size = int(f[size]) if size else 0
            if o is None:
                flags |= R.F_UNKNOWN_ORDER
            else:
                side = o[1]
                flags |= R.F_RESOLVED
                if t != "C":
                    price = o[0]
                if t == "D":
                    size = o[2]
                    del book[ref]
                else:
                    rem = o[2]
                    if size > rem:
                        flags |= R.F_BAD
                        rem = 0
                    else:
                        rem -= size
                    if rem == 0:
                        del book[ref]
                    else:
                        o[2] = rem
            action = {"E": "E", "C": "E", "X": "C", "D": "D"}[t]
            match = int(f["match_number"]) if t in "EC" else 0
            add_mbo(ref, 0, match, price, size, action, side, flags)
            if t in "EC":
                add_trade(match, ref, price, size, t, side, 1 if flags & R.F_PRINTABLE else 0)
        elif t == "U":
            orig, new = int(f["original_order_reference_number"]), int(f["new_order_reference_number"])
            price, size = int(f["price"]) * P4, int(f["shares"])
            o = book.pop(orig, None)
            if o is None:
                flags, side = R.F_UNKNOWN_ORDER, SIDE_NONE
            else:
                flags, side = R.F_RESOLVED, o[1]
            if new in book:
                flags |= R.F_BAD
            book[new] = [price, side, size]
            add_mbo(orig, new, 0, price, size, "U", side, flags)
        elif t == "P":
            ref, side = int(f["order_reference_number"]), _b(f["buy_sell_indicator"])
            price, size, match = int(f["price"]) * P4, int(f["shares"]), int(f["match_number"])
            add_mbo(ref, 0, match, price, size, "P", side, R.F_PRINTABLE)
            add_trade(match, ref, price, size, "P", side, 1)
        elif t == "Q":
            price, size, match = int(f["cross_price"]) * P4, int(f["shares"]), int(f["match_number"])
            cross = _b(f["cross_type"])
            add_mbo(0, 0, match, price, size, "Q", SIDE_NONE, R.F_PRINTABLE, cross=cross)
            add_trade(match, 0, price, size, "Q", SIDE_NONE, 1, cross=cross)
        elif t == "B":
            match = int(f["match_number"])
            add_mbo(0, 0, match, UNDEF_PRICE, 0, "B", SIDE_NONE, 0)
            add_trade(match, 0, UNDEF_PRICE, 0, "B", SIDE_NONE, 0)
        elif t == "R":
            defs.append((te, seq, int(f["round_lot_size"]), int(f["etp_leverage_factor"]), loc, chan,
                         bytes(f["stock"]), f["market_category"], f["financial_status_indicator"],
                         f["round_lots_only"], f["issue_classification"], f["issue_sub_type"],
                         f["authenticity"], f["short_sale_threshold_indicator"], f["ipo_flag"],
                         f["luld_reference_price_tier"], f["etp_flag"], f["inverse_indicator"],
                         np.zeros(6, np.uint8)))
        elif t in "SHYLVWKJh":
            p1 = p2 = p3 = UNDEF_PRICE
            value, code, code2, code3 = 0, b"", b"", b""
            reason = mpid = symbol = b""
            if t == "S":
                code = f["event_code"]
            elif t == "H":
                symbol, code, code2, reason = f["stock"], f["trading_state"], f["reserved"], f["reason"]
            elif t == "Y":
                symbol, code = f["stock"], f["reg_sho_action"]
            elif t == "L":
                mpid, symbol = f["mpid"], f["stock"]
                code, code2, code3 = (f["primary_market_maker"], f["market_maker_mode"],
                                      f["market_participant_state"])
            elif t == "V":
                p1, p2, p3 = (_p8(f["level1"]), _p8(f["level2"]), _p8(f["level3"]))
            elif t == "W":
                code = f["breached_level"]
            elif t == "K":
                symbol, value = f["stock"], int(f["ipo_quotation_release_time"])
                code, p1 = f["ipo_quotation_release_qualifier"], int(f["ipo_price"]) * P4
            elif t == "J":
                symbol = f["stock"]
                p1 = int(f["auction_collar_reference_price"]) * P4
                p2 = int(f["upper_auction_collar_price"]) * P4
                p3 = int(f["lower_auction_collar_price"]) * P4
                value = int(f["auction_collar_extension"])
            else:  # h
                symbol, code, code2 = f["stock"], f["operational_halt_action"], f["market_code"]
            status.append((te, recv, seq, p1, p2, p3, value, loc, chan, trk, t.encode(), code, code2,
                           code3, reason, mpid, symbol, np.zeros(4, np.uint8)))
        elif t in "INO":
            paired = imbs = near_time = 0
            far = near = ref = lo_p = hi_p = lo_c = hi_c = UNDEF_PRICE
            direction = cross = pvi = flag = elig = b""
            if t == "I":
                paired, imbs = int(f["paired_shares"]), int(f["imbalance_shares"])
                far, near = int(f["far_price"]) * P4, int(f["near_price"]) * P4
                ref = int(f["current_reference_price"]) * P4
                direction, cross, pvi = (f["imbalance_direction"], f["cross_type"],
                                         f["price_variation_indicator"])
            elif t == "N":
                flag = f["interest_flag"]
            else:
                elig = f["open_eligibility_status"]
                lo_p, hi_p = int(f["minimum_allowable_price"]) * P4, int(f["maximum_allowable_price"]) * P4
                near, near_time = int(f["near_execution_price"]) * P4, int(f["near_execution_time"])
                lo_c = int(f["lower_price_range_collar"]) * P4
                hi_c = int(f["upper_price_range_collar"]) * P4
            imb.append((te, recv, seq, paired, imbs, far, near, ref, lo_p, hi_p, lo_c, hi_c, near_time,
                        loc, chan, trk, t.encode(), direction, cross, pvi, flag, elig,
                        np.zeros(2, np.uint8)))
        else:
            raise ValueError(f"not an ITCH 5.0 message type: {t!r}")
    return {"mbo": np.array(mbo, dtype=R.MBO), "trades": np.array(trades, dtype=R.TRADES),
            "definitions": np.array(defs, dtype=R.DEFINITIONS), "status": np.array(status, dtype=R.STATUS),
            "imbalance": np.array(imb, dtype=R.IMBALANCE)}


def assert_records_equal(got: np.ndarray, exp: np.ndarray, schema: str, what: str = "") -> None:
    """Every field of every record equal (padding excepted); names the first difference."""
    assert got.dtype == exp.dtype, (schema, got.dtype, exp.dtype)
    assert got.shape == exp.shape, f"{what} {schema}: {got.shape[0]} records, expected {exp.shape[0]}"
    for name in exp.dtype.names:
        if name.startswith("_"):
            continue
        g, e = got[name], exp[name]
        bad = np.flatnonzero(g != e)
        if bad.size:
            i = int(bad[0])
            raise AssertionError(
                f"{what} {schema}.{name}: {bad.size} of {g.shape[0]} records differ; first at row {i} "
                f"(sequence {int(exp['sequence'][i])}): got {g[i]!r}, expected {e[i]!r}")


def tables_to_records(tables: Mapping) -> dict[str, np.ndarray]:
    """Arrow tables of ``read_itch`` as normalized record arrays."""
    return {k: R.from_arrow(k, tables[k]) for k in R.SCHEMAS}
