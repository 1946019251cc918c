"""Compiled ITCH 5.0 decoding: framing, normalization and raw gathering over byte buffers.

Python hands whole buffers to these functions; the loops over messages are numba-compiled and
write straight into preallocated record arrays (no Python object per message).

Two steps:

1. *Framing* finds each message: :func:`frame_binaryfile` walks NASDAQ BinaryFILE length
   prefixes; ``ingest.framing`` does the same for MoldUDP64 packets and pcap/pcapng captures and
   produces a message index (:data:`MSG_INDEX`) with sequence numbers and receive times. Every
   length is checked against the type byte (:data:`normalize.itch_spec.MESSAGE_LENGTH`).
2. *Decoding* (:func:`decode_messages`) reads each framed message and writes the normalized
   ``mbo``, ``definitions``, ``status`` and ``imbalance`` records; ``normalize.ordermap`` then
   resolves prices and sides of executions, cancels and deletes and emits ``trades``.

Field offsets are derived from :data:`normalize.itch_spec.WIRE_DTYPES` (``_o("A", "price")``),
never typed by hand.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R
from normalize._bytes import be16, be32, be48, be64
from normalize.itch_spec import MESSAGE_LENGTH, WIRE_DTYPES

# framing / decoding status codes
OK = 0
ERR_UNKNOWN_TYPE = 1
ERR_LENGTH = 2
ERR_TRUNCATED = 3
ERR_ZERO_LENGTH = 4
FULL = 5          # output capacity reached; call again from the returned position

STATUS_TEXT = {
    ERR_UNKNOWN_TYPE: "unknown ITCH 5.0 message type",
    ERR_LENGTH: "message length disagrees with its type",
    ERR_TRUNCATED: "input ends inside a message",
    ERR_ZERO_LENGTH: "zero message length",
}

#: One entry per framed message, for inputs that carry per-message metadata (MoldUDP64, pcap).
MSG_INDEX = np.dtype([
    ("offset", "<i8"),      # byte offset of the message (its type byte) in the buffer
    ("sequence", "<u8"),    # MoldUDP64 sequence number
    ("ts_recv", "<u8"),     # capture time, UTC ns (UNDEF_TIMESTAMP when unknown)
    ("channel", "<u2"),
    ("flags", "u1"),        # F_LAST on the last message of a packet
    ("type", "u1"),
    ("length", "<u2"),
    ("_pad", "u1", (2,)),
])


def _o(letter: str, field: str) -> int:
    return WIRE_DTYPES[letter].fields[field][1]


# offsets of the fields the decoder reads (header fields are common to all types)
O_LOCATE = _o("A", "stock_locate")
O_TRACKING = _o("A", "tracking_number")
O_TS = _o("A", "timestamp_hi")
O_REF = _o("A", "order_reference_number")
O_A_SIDE, O_A_SHARES, O_A_PRICE = _o("A", "buy_sell_indicator"), _o("A", "shares"), _o("A", "price")
O_F_MPID = _o("F", "attribution")
O_E_SHARES, O_E_MATCH = _o("E", "executed_shares"), _o("E", "match_number")
O_C_PRINTABLE, O_C_PRICE = _o("C", "printable"), _o("C", "execution_price")
O_X_SHARES = _o("X", "cancelled_shares")
O_U_NEW, O_U_SHARES, O_U_PRICE = (_o("U", "new_order_reference_number"), _o("U", "shares"),
                                  _o("U", "price"))
O_P_SIDE, O_P_SHARES, O_P_PRICE, O_P_MATCH = (_o("P", "buy_sell_indicator"), _o("P", "shares"),
                                              _o("P", "price"), _o("P", "match_number"))
O_Q_SHARES, O_Q_PRICE, O_Q_MATCH, O_Q_CROSS = (_o("Q", "shares"), _o("Q", "cross_price"),
                                               _o("Q", "match_number"), _o("Q", "cross_type"))
O_B_MATCH = _o("B", "match_number")
O_S_CODE = _o("S", "event_code")
O_R = {f: _o("R", f) for f in WIRE_DTYPES["R"].names}
O_R_STOCK, O_R_MKT, O_R_FIN, O_R_LOT = (O_R["stock"], O_R["market_category"],
                                        O_R["financial_status_indicator"], O_R["round_lot_size"])
O_R_LOTONLY, O_R_CLASS, O_R_SUB, O_R_AUTH = (O_R["round_lots_only"], O_R["issue_classification"],
                                             O_R["issue_sub_type"], O_R["authenticity"])
O_R_SSTI, O_R_IPO, O_R_LULD, O_R_ETP = (O_R["short_sale_threshold_indicator"], O_R["ipo_flag"],
                                        O_R["luld_reference_price_tier"], O_R["etp_flag"])
O_R_LEV, O_R_INV = O_R["etp_leverage_factor"], O_R["inverse_indicator"]
O_STOCK = _o("H", "stock")     # the same offset (11) in H Y K J h N O
O_H_STATE, O_H_RES, O_H_REASON = _o("H", "trading_state"), _o("H", "reserved"), _o("H", "reason")
O_Y_ACTION = _o("Y", "reg_sho_action")
O_L_MPID, O_L_STOCK, O_L_PMM, O_L_MODE, O_L_STATE = (
    _o("L", "mpid"), _o("L", "stock"), _o("L", "primary_market_maker"),
    _o("L", "market_maker_mode"), _o("L", "market_participant_state"))
O_V_1, O_V_2, O_V_3 = _o("V", "level1"), _o("V", "level2"), _o("V", "level3")
O_W_LEVEL = _o("W", "breached_level")
O_K_TIME, O_K_QUAL, O_K_PRICE = (_o("K", "ipo_quotation_release_time"),
                                 _o("K", "ipo_quotation_release_qualifier"), _o("K", "ipo_price"))
O_J_REF, O_J_UP, O_J_LO, O_J_EXT = (_o("J", "auction_collar_reference_price"),
                                    _o("J", "upper_auction_collar_price"),
                                    _o("J", "lower_auction_collar_price"),
                                    _o("J", "auction_collar_extension"))
O_h_MKT, O_h_ACTION = _o("h", "market_code"), _o("h", "operational_halt_action")
O_I_PAIRED, O_I_IMB, O_I_DIR, O_I_STOCK = (_o("I", "paired_shares"), _o("I", "imbalance_shares"),
                                           _o("I", "imbalance_direction"), _o("I", "stock"))
O_I_FAR, O_I_NEAR, O_I_REF, O_I_CROSS, O_I_PVI = (
    _o("I", "far_price"), _o("I", "near_price"), _o("I", "current_reference_price"),
    _o("I", "cross_type"), _o("I", "price_variation_indicator"))
O_N_FLAG = _o("N", "interest_flag")
O_O_ELIG, O_O_MIN, O_O_MAX, O_O_NEARP, O_O_NEART, O_O_LO, O_O_UP = (
    _o("O", "open_eligibility_status"), _o("O", "minimum_allowable_price"),
    _o("O", "maximum_allowable_price"), _o("O", "near_execution_price"),
    _o("O", "near_execution_time"), _o("O", "lower_price_range_collar"),
    _o("O", "upper_price_range_collar"))
assert all(_o(t, "stock") == O_STOCK for t in "HYKJhNO")

# byte offsets of alpha fields inside the normalized records (written through a uint8 view)
MBO_MPID = R.MBO.fields["mpid"][1]
DEF_SYMBOL = R.DEFINITIONS.fields["symbol"][1]
DEF_MKT = R.DEFINITIONS.fields["market_category"][1]   # followed by the 1-byte codes in order
DEF_SUB = R.DEFINITIONS.fields["issue_subtype"][1]
ST_TYPE = R.STATUS.fields["msg_type"][1]               # msg_type, code, code2, code3 adjacent
ST_REASON = R.STATUS.fields["reason"][1]
ST_MPID = R.STATUS.fields["mpid"][1]
ST_SYMBOL = R.STATUS.fields["symbol"][1]
IM_TYPE = R.IMBALANCE.fields["msg_type"][1]            # then direction, cross, pvi, flag, elig
assert [R.DEFINITIONS.fields[n][1] - DEF_MKT for n in
        ("market_category", "financial_status", "round_lots_only", "issue_classification")] == [0, 1, 2, 3]
assert [R.STATUS.fields[n][1] - ST_TYPE for n in ("msg_type", "code", "code2", "code3")] == [0, 1, 2, 3]
assert [R.IMBALANCE.fields[n][1] - IM_TYPE for n in
        ("msg_type", "imbalance_direction", "cross_type", "price_variation", "interest_flag",
         "open_eligibility")] == [0, 1, 2, 3, 4, 5]

P4 = np.int64(R.PRICE4_TO_NANO)
P8 = np.int64(R.PRICE8_TO_NANO)
UNDEF_PRICE = np.int64(R.UNDEF_PRICE)
UNDEF_TS = np.uint64(R.UNDEF_TIMESTAMP)

KIND_MBO, KIND_DEF, KIND_STATUS, KIND_IMB = 1, 2, 3, 4
#: Which output table each type byte goes to (0: unknown type).
TYPE_KIND = np.zeros(256, dtype=np.uint8)
for _t in "AFECXDUPQB":
    TYPE_KIND[ord(_t)] = KIND_MBO
TYPE_KIND[ord("R")] = KIND_DEF
for _t in "SHYLVWKJh":
    TYPE_KIND[ord(_t)] = KIND_STATUS
for _t in "INO":
    TYPE_KIND[ord(_t)] = KIND_IMB


@numba.njit(cache=True, nogil=True)
def frame_binaryfile(buf, pos, stop, explen, offsets, types, counts, skip, skipped_at, skipped_why):
    """Walk BinaryFILE framing (``u16`` big-endian length, then the message) in ``buf[pos:stop]``.

    Fills ``offsets``/``types`` with each complete, valid message (up to their capacity) and adds
    to ``counts[type]``. A bad unit either stops the walk (``skip`` false) or is recorded in
    ``skipped_at``/``skipped_why`` and stepped over using its length prefix. An incomplete
    message at ``stop`` ends the walk with status OK: the caller decides whether more bytes
    will come (chunk edge) or the input is truncated.

    Returns ``(n_messages, next_pos, status, fault_pos, n_skipped)``.
    """
    n = 0
    ns = 0
    cap = offsets.shape[0]
    scap = skipped_at.shape[0]
    while pos + 2 <= stop:
        if n >= cap:
            return n, pos, FULL, pos, ns
        length = be16(buf, pos)
        if length == 0:
            if not skip:
                return n, pos, ERR_ZERO_LENGTH, pos, ns
            if ns < scap:
                skipped_at[ns] = pos
                skipped_why[ns] = ERR_ZERO_LENGTH
            ns += 1
            pos += 2
            continue
        end = pos + 2 + length
        if end > stop:
            break
        t = buf[pos + 2]
        e = explen[t]
        if e != length:
            why = ERR_UNKNOWN_TYPE if e == 0 else ERR_LENGTH
            if not skip:
                return n, pos, why, pos, ns
            if ns < scap:
                skipped_at[ns] = pos
                skipped_why[ns] = why
            ns += 1
            pos = end
            continue
        offsets[n] = pos + 2
        types[n] = t
        counts[t] += 1
        n += 1
        pos = end
    return n, pos, OK, pos, ns


@numba.njit(inline="always")
def _ts(b, p, clk_mid, clk_switch, clk_off0, clk_off1):
    t = np.int64(be48(b, p + O_TS))
    off = clk_off0 if t < clk_switch else clk_off1
    return np.uint64(clk_mid + t - off)


@numba.njit(inline="always")
def _copy(dst, row, doff, b, p, n):
    for k in range(n):
        dst[row, doff + k] = b[p + k]


@numba.njit(cache=True, nogil=True)
def decode_messages(buf, offsets, index, seq_base, channel, clk_mid, clk_switch, clk_off0,
                    clk_off1, mbo, mbo_b, defs, defs_b, status, status_b, imb, imb_b):
    """Decode framed messages into normalized records.

    ``offsets`` (int64) lists message positions in ``buf``. ``index`` is either an empty
    :data:`MSG_INDEX` array (BinaryFILE: ``sequence = seq_base + i``, ``ts_recv`` undefined,
    ``channel`` as given) or one entry per message carrying sequence, receive time, channel and
    flags. Output arrays must have room for every message of their kind; ``*_b`` are ``uint8``
    2-D views of the same memory (for alpha fields).

    Returns ``(n_mbo, n_defs, n_status, n_imbalance)``.
    """
    n = offsets.shape[0]
    has_index = index.shape[0] == n and n > 0
    km = 0
    kd = 0
    ks = 0
    ki = 0
    for i in range(n):
        p = offsets[i]
        if has_index:
            seq = index[i].sequence
            ts_recv = index[i].ts_recv
            chan = index[i].channel
            xflags = index[i].flags
        else:
            seq = np.uint64(seq_base + i)
            ts_recv = UNDEF_TS
            chan = channel
            xflags = np.uint8(0)
        t = buf[p]
        kind = TYPE_KIND[t]
        ts = _ts(buf, p, clk_mid, clk_switch, clk_off0, clk_off1)
        locate = be16(buf, p + O_LOCATE)
        tracking = be16(buf, p + O_TRACKING)
        if kind == KIND_MBO:
            r = mbo[km]
            r.ts_event = ts
            r.ts_recv = ts_recv
            r.sequence = seq
            r.instrument_id = locate
            r.channel = chan
            r.tracking = tracking
            r.new_order_id = 0
            r.match_id = 0
            r.cross_type = 0
            flags = xflags
            for k in range(4):
                mbo_b[km, MBO_MPID + k] = 0
            if t == 65 or t == 70:  # A F
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_ADD
                r.side = buf[p + O_A_SIDE]
                r.size = be32(buf, p + O_A_SHARES)
                r.price = np.int64(be32(buf, p + O_A_PRICE)) * P4
                if t == 70:
                    flags |= R.F_MPID
                    _copy(mbo_b, km, MBO_MPID, buf, p + O_F_MPID, 4)
            elif t == 69:  # E
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_EXECUTE
                r.side = R.SIDE_NONE
                r.size = be32(buf, p + O_E_SHARES)
                r.match_id = be64(buf, p + O_E_MATCH)
                r.price = UNDEF_PRICE
                flags |= R.F_PRINTABLE
            elif t == 67:  # C
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_EXECUTE
                r.side = R.SIDE_NONE
                r.size = be32(buf, p + O_E_SHARES)
                r.match_id = be64(buf, p + O_E_MATCH)
                r.price = np.int64(be32(buf, p + O_C_PRICE)) * P4
                flags |= R.F_WITH_PRICE
                if buf[p + O_C_PRINTABLE] == 89:  # 'Y'
                    flags |= R.F_PRINTABLE
            elif t == 88:  # X
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_CANCEL
                r.side = R.SIDE_NONE
                r.size = be32(buf, p + O_X_SHARES)
                r.price = UNDEF_PRICE
            elif t == 68:  # D
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_DELETE
                r.side = R.SIDE_NONE
                r.size = 0
                r.price = UNDEF_PRICE
            elif t == 85:  # U
                r.order_id = be64(buf, p + O_REF)
                r.new_order_id = be64(buf, p + O_U_NEW)
                r.action = R.ACTION_REPLACE
                r.side = R.SIDE_NONE
                r.size = be32(buf, p + O_U_SHARES)
                r.price = np.int64(be32(buf, p + O_U_PRICE)) * P4
            elif t == 80:  # P
                r.order_id = be64(buf, p + O_REF)
                r.action = R.ACTION_TRADE
                r.side = buf[p + O_P_SIDE]
                r.size = be32(buf, p + O_P_SHARES)
                r.price = np.int64(be32(buf, p + O_P_PRICE)) * P4
                r.match_id = be64(buf, p + O_P_MATCH)
                flags |= R.F_PRINTABLE
            elif t == 81:  # Q
                r.order_id = 0
                r.action = R.ACTION_CROSS
                r.side = R.SIDE_NONE
                r.size = be64(buf, p + O_Q_SHARES)
                r.price = np.int64(be32(buf, p + O_Q_PRICE)) * P4
                r.match_id = be64(buf, p + O_Q_MATCH)
                r.cross_type = buf[p + O_Q_CROSS]
                flags |= R.F_PRINTABLE
            else:  # B
                r.order_id = 0
                r.action = R.ACTION_BROKEN
                r.side = R.SIDE_NONE
                r.size = 0
                r.price = UNDEF_PRICE
                r.match_id = be64(buf, p + O_B_MATCH)
            r.flags = flags
            km += 1
        elif kind == KIND_STATUS:
            r = status[ks]
            r.ts_event = ts
            r.ts_recv = ts_recv
            r.sequence = seq
            r.instrument_id = locate
            r.channel = chan
            r.tracking = tracking
            r.price_1 = UNDEF_PRICE
            r.price_2 = UNDEF_PRICE
            r.price_3 = UNDEF_PRICE
            r.value = 0
            for k in range(ST_TYPE, ST_SYMBOL + 8):
                status_b[ks, k] = 0
            status_b[ks, ST_TYPE] = t
            if t == 83:  # S
                status_b[ks, ST_TYPE + 1] = buf[p + O_S_CODE]
            elif t == 86:  # V
                r.price_1 = np.int64(be64(buf, p + O_V_1)) * P8
                r.price_2 = np.int64(be64(buf, p + O_V_2)) * P8
                r.price_3 = np.int64(be64(buf, p + O_V_3)) * P8
            elif t == 87:  # W
                status_b[ks, ST_TYPE + 1] = buf[p + O_W_LEVEL]
            elif t == 76:  # L
                _copy(status_b, ks, ST_MPID, buf, p + O_L_MPID, 4)
                _copy(status_b, ks, ST_SYMBOL, buf, p + O_L_STOCK, 8)
                status_b[ks, ST_TYPE + 1] = buf[p + O_L_PMM]
                status_b[ks, ST_TYPE + 2] = buf[p + O_L_MODE]
                status_b[ks, ST_TYPE + 3] = buf[p + O_L_STATE]
            else:
                _copy(status_b, ks, ST_SYMBOL, buf, p + O_STOCK, 8)
                if t == 72:  # H
                    status_b[ks, ST_TYPE + 1] = buf[p + O_H_STATE]
                    status_b[ks, ST_TYPE + 2] = buf[p + O_H_RES]
                    _copy(status_b, ks, ST_REASON, buf, p + O_H_REASON, 4)
                elif t == 89:  # Y
                    status_b[ks, ST_TYPE + 1] = buf[p + O_Y_ACTION]
                elif t == 75:  # K
                    r.value = be32(buf, p + O_K_TIME)
                    status_b[ks, ST_TYPE + 1] = buf[p + O_K_QUAL]
                    r.price_1 = np.int64(be32(buf, p + O_K_PRICE)) * P4
                elif t == 74:  # J
                    r.price_1 = np.int64(be32(buf, p + O_J_REF)) * P4
                    r.price_2 = np.int64(be32(buf, p + O_J_UP)) * P4
                    r.price_3 = np.int64(be32(buf, p + O_J_LO)) * P4
                    r.value = be32(buf, p + O_J_EXT)
                else:  # h
                    status_b[ks, ST_TYPE + 1] = buf[p + O_h_ACTION]
                    status_b[ks, ST_TYPE + 2] = buf[p + O_h_MKT]
            ks += 1
        elif kind == KIND_DEF:
            r = defs[kd]
            r.ts_event = ts
            r.sequence = seq
            r.instrument_id = locate
            r.channel = chan
            r.round_lot_size = be32(buf, p + O_R_LOT)
            r.etp_leverage_factor = be32(buf, p + O_R_LEV)
            _copy(defs_b, kd, DEF_SYMBOL, buf, p + O_R_STOCK, 8)
            defs_b[kd, DEF_MKT] = buf[p + O_R_MKT]
            defs_b[kd, DEF_MKT + 1] = buf[p + O_R_FIN]
            defs_b[kd, DEF_MKT + 2] = buf[p + O_R_LOTONLY]
            defs_b[kd, DEF_MKT + 3] = buf[p + O_R_CLASS]
            _copy(defs_b, kd, DEF_SUB, buf, p + O_R_SUB, 2)
            defs_b[kd, DEF_SUB + 2] = buf[p + O_R_AUTH]
            defs_b[kd, DEF_SUB + 3] = buf[p + O_R_SSTI]
            defs_b[kd, DEF_SUB + 4] = buf[p + O_R_IPO]
            defs_b[kd, DEF_SUB + 5] = buf[p + O_R_LULD]
            defs_b[kd, DEF_SUB + 6] = buf[p + O_R_ETP]
            defs_b[kd, DEF_SUB + 7] = buf[p + O_R_INV]
            kd += 1
        elif kind == KIND_IMB:
            r = imb[ki]
            r.ts_event = ts
            r.ts_recv = ts_recv
            r.sequence = seq
            r.instrument_id = locate
            r.channel = chan
            r.tracking = tracking
            r.paired_shares = 0
            r.imbalance_shares = 0
            r.far_price = UNDEF_PRICE
            r.near_price = UNDEF_PRICE
            r.ref_price = UNDEF_PRICE
            r.min_price = UNDEF_PRICE
            r.max_price = UNDEF_PRICE
            r.lower_collar = UNDEF_PRICE
            r.upper_collar = UNDEF_PRICE
            r.near_exec_time = 0
            for k in range(6):
                imb_b[ki, IM_TYPE + k] = 0
            imb_b[ki, IM_TYPE] = t
            if t == 73:  # I
                r.paired_shares = be64(buf, p + O_I_PAIRED)
                r.imbalance_shares = be64(buf, p + O_I_IMB)
                r.far_price = np.int64(be32(buf, p + O_I_FAR)) * P4
                r.near_price = np.int64(be32(buf, p + O_I_NEAR)) * P4
                r.ref_price = np.int64(be32(buf, p + O_I_REF)) * P4
                imb_b[ki, IM_TYPE + 1] = buf[p + O_I_DIR]
                imb_b[ki, IM_TYPE + 2] = buf[p + O_I_CROSS]
                imb_b[ki, IM_TYPE + 3] = buf[p + O_I_PVI]
            elif t == 78:  # N
                imb_b[ki, IM_TYPE + 4] = buf[p + O_N_FLAG]
            else:  # O
                imb_b[ki, IM_TYPE + 5] = buf[p + O_O_ELIG]
                r.min_price = np.int64(be32(buf, p + O_O_MIN)) * P4
                r.max_price = np.int64(be32(buf, p + O_O_MAX)) * P4
                r.near_price = np.int64(be32(buf, p + O_O_NEARP)) * P4
                r.near_exec_time = be64(buf, p + O_O_NEART)
                r.lower_collar = np.int64(be32(buf, p + O_O_LO)) * P4
                r.upper_collar = np.int64(be32(buf, p + O_O_UP)) * P4
            ki += 1
    return km, kd, ks, ki


@numba.njit(cache=True, nogil=True)
def gather_rows(buf, offsets, types, letter, length, out):
    """Copy every message of type ``letter`` (``length`` bytes) into the rows of ``out``."""
    k = 0
    for i in range(offsets.shape[0]):
        if types[i] == letter:
            p = offsets[i]
            for j in range(length):
                out[k, j] = buf[p + j]
            k += 1
    return k


def byte_view(records: np.ndarray) -> np.ndarray:
    """A writable ``uint8`` (rows, itemsize) view of a record array."""
    return records.view(np.uint8).reshape(records.shape[0], records.dtype.itemsize)
