"""Compiled ITCH 5.0 decoding: framing, normalization and raw gathering over byte buffers.

Python hands whole buffers to these functions; the loops over messages are numba-compiled and
write straight into preallocated record arrays (no Python object per message).

Two steps:

1. *Framing* finds each message: :func:`frame_binaryfile` walks NASDAQ BinaryFILE length
   prefixes; ``ingest.moldudp64`` and ``ingest.pcap`` do the same for MoldUDP64 packets and pcap/pcapng captures and
   produces a message index (:data:`MSG_INDEX`) with sequence numbers and receive times. Every
   length is checked against the type byte (:data:`normalize.itch_spec.MESSAGE_LENGTH`).
2. *Decoding* (:func:`decode_messages`) reads each framed message and writes the normalized
   ``mbo``, ``definitions``, ``status`` and ``imbalance`` columns (one array per field, so the
   Arrow tables wrap them without a copy); ``normalize.ordermap`` then
   resolves prices and sides of executions, cancels and deletes and emits ``trades``.

Field offsets are derived from :data:`normalize.itch_spec.WIRE_DTYPES` (``_o("A", "price")``),
never typed by hand.
"""

from __future__ import annotations

import numba
import numpy as np

from normalize import records as R
from normalize._bytes import be16, be32, be48, be64, u8
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

# Table-driven decode of the common order messages (A F E C X D U P): per type byte, where
# each normalized field sits (0: absent) and what the message implies, derived from the wire
# layouts. The hot loop reads through these tables instead of branching per type, so a feed
# that mixes types does not pay a branch misprediction per message.
_ORDER_TYPES = "AFECXDUP"


def _field_off(letter: str, names: tuple[str, ...], size: int) -> int:
    dt = WIRE_DTYPES[letter]
    for n in names:
        if n in dt.names and dt.fields[n][0].itemsize == size:
            return dt.fields[n][1]
    return 0


def _type_table(dtype, fn) -> np.ndarray:
    out = np.zeros(256, dtype=dtype)
    for letter in _ORDER_TYPES:
        out[ord(letter)] = fn(letter)
    return out


ORDER_TYPE = _type_table(np.bool_, lambda c: True)
MB_ACTION = _type_table(np.uint8, lambda c: {"A": R.ACTION_ADD, "F": R.ACTION_ADD, "E": R.ACTION_EXECUTE,
                                             "C": R.ACTION_EXECUTE, "X": R.ACTION_CANCEL,
                                             "D": R.ACTION_DELETE, "U": R.ACTION_REPLACE,
                                             "P": R.ACTION_TRADE}[c])
MB_FLAGS = _type_table(np.uint8, lambda c: {"F": R.F_MPID, "E": R.F_PRINTABLE, "C": R.F_WITH_PRICE,
                                            "P": R.F_PRINTABLE}.get(c, 0))
MB_SIDE_OFF = _type_table(np.int64, lambda c: _field_off(c, ("buy_sell_indicator",), 1))
MB_SIZE_OFF = _type_table(np.int64, lambda c: _field_off(
    c, ("shares", "executed_shares", "cancelled_shares"), 4))
MB_PRICE_OFF = _type_table(np.int64, lambda c: _field_off(c, ("price", "execution_price"), 4))
MB_MATCH_OFF = _type_table(np.int64, lambda c: _field_off(c, ("match_number",), 8))
MB_NEW_OFF = _type_table(np.int64, lambda c: _field_off(c, ("new_order_reference_number",), 8))
MB_PRINTABLE_OFF = _type_table(np.int64, lambda c: _field_off(c, ("printable",), 1))
assert all(_field_off(c, ("order_reference_number", "original_order_reference_number"), 8) == O_REF
           for c in _ORDER_TYPES)
# an absent field reads offset 0 (inside every message) and is then masked or replaced
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


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


@numba.njit(inline="always")
def record_skip(skipped_at, skipped_why, ns, pos, why):
    """Note skipped unit ``ns`` (at ``pos``, for ``why``) while there is room; returns ``ns + 1``."""
    if ns < skipped_at.shape[0]:
        skipped_at[ns] = pos
        skipped_why[ns] = why
    return ns + 1


@numba.njit(cache=True, nogil=True)
def frame_binaryfile(buf, pos, stop, explen, offsets, types, counts, skip, skipped_at, skipped_why,
                     units):
    """Walk BinaryFILE framing (``u16`` big-endian length, then the message) in ``buf[pos:stop]``.

    Fills ``offsets``/``types`` with each complete, valid message (up to their capacity) and adds
    to ``counts[type]``; when ``units`` is not empty, also each message's position among the
    framing units walked, skipped ones included (its sequence number less the first's). A bad unit either stops the walk (``skip`` false) or is recorded in
    ``skipped_at``/``skipped_why`` and stepped over using its length prefix. An incomplete
    message at ``stop`` ends the walk with status OK: the caller decides whether more bytes
    will come (chunk edge) or the input is truncated.

    Returns ``(n_messages, next_pos, status, fault_pos, n_skipped)``.
    """
    n = 0
    ns = 0
    cap = offsets.shape[0]
    with_units = units.shape[0] > 0
    while pos + 2 <= stop:
        if n >= cap:
            return n, pos, FULL, pos, ns
        length = be16(buf, pos)
        if length == 0:
            if not skip:
                return n, pos, ERR_ZERO_LENGTH, pos, ns
            ns = record_skip(skipped_at, skipped_why, ns, pos, ERR_ZERO_LENGTH)
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
            ns = record_skip(skipped_at, skipped_why, ns, pos, why)
            pos = end
            continue
        offsets[n] = pos + 2
        types[n] = t
        if with_units:
            units[n] = n + ns
        counts[t] += 1
        n += 1
        pos = end
    return n, pos, OK, pos, ns


@numba.njit(inline="always")
def _ts(b, p, clk_mid, clk_switch, clk_off0, clk_off1):
    t = np.int64(be48(b, p + O_TS))
    off = clk_off0 if t < clk_switch else clk_off1
    return np.uint64(clk_mid + t - off)


P8_MAX = np.uint64(R.UNDEF_PRICE // R.PRICE8_TO_NANO)


@numba.njit(inline="always")
def _p8(v):
    """A Price(8) in 1e-9 units; one too large for int64 (over $922 million) is UNDEF_PRICE."""
    if v > P8_MAX:
        return UNDEF_PRICE
    return np.int64(v) * P8


@numba.njit(inline="always")
def mbo_event(buf, p, t):
    """The book-relevant fields of the ``mbo`` message (type ``t``) at ``buf[p]``:
    ``(action, order_id, new_order_id, price, size, side)``, exactly as :func:`decode_messages`
    writes them (absent fields: price ``UNDEF_PRICE``, size 0, side ``SIDE_NONE``, ids 0)."""
    if ORDER_TYPE[t]:
        so = MB_SIDE_OFF[t]
        side = u8(buf, p + so)
        zo = MB_SIZE_OFF[t]
        size = np.uint64(be32(buf, p + zo))
        po = MB_PRICE_OFF[t]
        price = np.int64(be32(buf, p + po)) * P4
        no = MB_NEW_OFF[t]
        new = be64(buf, p + no)
        return (MB_ACTION[t], be64(buf, p + O_REF), new if no != 0 else np.uint64(0),
                price if po != 0 else UNDEF_PRICE, size if zo != 0 else np.uint64(0),
                side if so != 0 else np.uint8(R.SIDE_NONE))
    if t == 81:  # Q
        return (np.uint8(R.ACTION_CROSS), np.uint64(0), np.uint64(0),
                np.int64(be32(buf, p + O_Q_PRICE)) * P4, be64(buf, p + O_Q_SHARES),
                np.uint8(R.SIDE_NONE))
    return (np.uint8(R.ACTION_BROKEN), np.uint64(0), np.uint64(0), UNDEF_PRICE, np.uint64(0),
            np.uint8(R.SIDE_NONE))


@numba.njit(inline="always")
def _copy(dst, row, b, p, n):
    for k in range(n):
        dst[row, k] = u8(b, p + k)


@numba.njit(inline="always")
def _zero(dst, row, n):
    for k in range(n):
        dst[row, k] = 0


@numba.njit(cache=True, nogil=True)
def decode_messages(buf, offsets, index, seq_base, channel, clk_mid, clk_switch, clk_off0,
                    clk_off1, m, d, st, im, walk_pos, walk_stop, walk_max, explen, skip,
                    skipped_at, skipped_why, counts):
    """Decode messages into normalized columns, from a message list or straight off BinaryFILE.

    ``offsets`` (int64) lists message positions in ``buf``. ``index`` is either an empty
    :data:`MSG_INDEX` array (BinaryFILE: ``sequence = seq_base + i``, ``ts_recv`` undefined,
    ``channel`` as given) or one entry per message carrying sequence, receive time, channel and
    flags. ``m``, ``d``, ``st``, ``im`` are the ``mbo``, ``definitions``, ``status`` and
    ``imbalance`` columns (:data:`normalize.records.COLUMNS`), with room for every message of
    their kind. Every field of every row written is set (0 where a message does not carry it)
    except ``mpid``, written by F messages only: the columns may come uninitialised (recycled
    memory, :mod:`normalize.arena`) as long as ``mpid`` comes zeroed (zeroing it per row in
    this loop costs a third of its time; a bulk fill of 4 bytes a row is cheap).

    With ``offsets`` empty and ``walk_pos < walk_stop``, the kernel frames as it decodes
    (one pass, no message list): it walks BinaryFILE length prefixes in ``buf[walk_pos:
    walk_stop]``, checks each length against ``explen`` like :func:`frame_binaryfile`, skips
    (``skip``: recorded in ``skipped_at``/``skipped_why``) or stops at a bad unit, stops at an
    incomplete message (status OK: more bytes may come) and stops with status FULL after
    ``walk_max`` messages or when an output table has no room. Sequence numbers count framing units, skipped ones included, so
    later messages keep their numbers. Walking also adds each message to ``counts[type]``.

    Returns ``(n_mbo, n_defs, n_status, n_imbalance, next_pos, status, fault_pos, n_skipped,
    n_units)``.
    """
    # unpack the column tuples once: indexing an array taken out of a tuple inside the loop
    # would cost a reference-count update per access
    (m_ts_event, m_ts_recv, m_sequence, m_order_id, m_new_order_id, m_match_id, m_price, m_size,
     m_instrument_id, m_channel, m_tracking, m_action, m_side, m_flags, m_cross_type, m_mpid) = m
    (d_ts_event, d_sequence, d_round_lot_size, d_etp_leverage_factor, d_instrument_id, d_channel,
     d_symbol, d_market_category, d_financial_status, d_round_lots_only, d_issue_classification,
     d_issue_subtype, d_authenticity, d_short_sale_threshold, d_ipo_flag, d_luld_tier, d_etp_flag,
     d_inverse) = d
    (st_ts_event, st_ts_recv, st_sequence, st_price_1, st_price_2, st_price_3, st_value,
     st_instrument_id, st_channel, st_tracking, st_msg_type, st_code, st_code2, st_code3,
     st_reason, st_mpid, st_symbol) = st
    (im_ts_event, im_ts_recv, im_sequence, im_paired_shares, im_imbalance_shares, im_far_price,
     im_near_price, im_ref_price, im_min_price, im_max_price, im_lower_collar, im_upper_collar,
     im_near_exec_time, im_instrument_id, im_channel, im_tracking, im_msg_type,
     im_imbalance_direction, im_cross_type, im_price_variation, im_interest_flag,
     im_open_eligibility) = im
    n = offsets.shape[0]
    walking = n == 0 and walk_pos < walk_stop
    has_index = index.shape[0] == n and n > 0
    cap_m = m_action.shape[0]
    cap_d = d_ts_event.shape[0]
    cap_s = st_ts_event.shape[0]
    cap_i = im_ts_event.shape[0]
    scap = skipped_at.shape[0]
    km = 0
    kd = 0
    ks = 0
    ki = 0
    pos = walk_pos
    status = OK
    fault = walk_pos
    n_skipped = 0
    units = 0
    i = 0
    ts_recv = UNDEF_TS
    chan = channel
    xflags = np.uint8(0)
    while True:
        if walking:
            if pos + 2 > walk_stop:
                break
            if i >= walk_max:
                status = FULL
                fault = pos
                break
            length = be16(buf, pos)
            end = pos + 2 + length
            why = 0
            if length == 0:
                why = ERR_ZERO_LENGTH
            else:
                if end > walk_stop:
                    break
                t = u8(buf, pos + 2)
                if explen[t] != length:
                    why = ERR_UNKNOWN_TYPE if explen[t] == 0 else ERR_LENGTH
            if why != 0:                  # a bad unit: stop at it, or record it and step over
                if not skip:
                    status = why
                    fault = pos
                    break
                if n_skipped < scap:
                    skipped_at[n_skipped] = pos
                    skipped_why[n_skipped] = why
                n_skipped += 1
                units += 1
                pos = end
                continue
            kind = TYPE_KIND[t]
            if ((kind == KIND_MBO and km >= cap_m) or (kind == KIND_DEF and kd >= cap_d)
                    or (kind == KIND_STATUS and ks >= cap_s) or (kind == KIND_IMB and ki >= cap_i)):
                status = FULL
                fault = pos
                break
            p = pos + 2
            counts[t] += 1
            seq = np.uint64(seq_base + units)
            units += 1
            pos = end
        else:
            if i >= n:
                break
            p = offsets[i]
            t = u8(buf, p)
            kind = TYPE_KIND[t]
            if has_index:
                seq = index[i].sequence
                ts_recv = index[i].ts_recv
                chan = index[i].channel
                xflags = index[i].flags
            else:
                seq = np.uint64(seq_base + i)
        i += 1
        ts = _ts(buf, p, clk_mid, clk_switch, clk_off0, clk_off1)
        locate = be16(buf, p + O_LOCATE)
        tracking = be16(buf, p + O_TRACKING)
        if kind == KIND_MBO:
            k = np.uint64(km)   # unsigned: no negative-index check per store
            m_ts_event[k] = ts
            m_sequence[k] = seq
            m_instrument_id[k] = locate
            m_tracking[k] = tracking
            m_ts_recv[k] = ts_recv
            m_channel[k] = chan
            (m_action[k], m_order_id[k], m_new_order_id[k], m_price[k], m_size[k],
             m_side[k]) = mbo_event(buf, p, t)
            if ORDER_TYPE[t]:
                mo = MB_MATCH_OFF[t]
                match = be64(buf, p + mo)
                m_match_id[k] = match if mo != 0 else np.uint64(0)
                flags = xflags | MB_FLAGS[t]
                ro = MB_PRINTABLE_OFF[t]
                if ro != 0 and u8(buf, p + ro) == 89:  # C printable 'Y'
                    flags |= R.F_PRINTABLE
                m_cross_type[k] = 0
                if t == 70:  # F: the attribution
                    _copy(m_mpid, k, buf, p + O_F_MPID, 4)
            elif t == 81:  # Q
                flags = xflags | R.F_PRINTABLE
                m_match_id[k] = be64(buf, p + O_Q_MATCH)
                m_cross_type[k] = u8(buf, p + O_Q_CROSS)
                _zero(m_mpid, k, 4)
            else:  # B
                flags = xflags
                m_match_id[k] = be64(buf, p + O_B_MATCH)
                m_cross_type[k] = 0
                _zero(m_mpid, k, 4)
            m_flags[k] = flags
            km += 1
        elif kind == KIND_STATUS:
            k = np.uint64(ks)
            st_ts_event[k] = ts
            st_ts_recv[k] = ts_recv
            st_sequence[k] = seq
            st_instrument_id[k] = locate
            st_channel[k] = chan
            st_tracking[k] = tracking
            st_price_1[k] = UNDEF_PRICE
            st_price_2[k] = UNDEF_PRICE
            st_price_3[k] = UNDEF_PRICE
            st_value[k] = 0
            st_msg_type[k] = t
            st_code[k] = 0
            st_code2[k] = 0
            st_code3[k] = 0
            _zero(st_reason, k, 4)
            _zero(st_mpid, k, 4)
            _zero(st_symbol, k, 8)
            if t == 83:  # S
                st_code[k] = u8(buf, p + O_S_CODE)
            elif t == 86:  # V
                st_price_1[k] = _p8(be64(buf, p + O_V_1))
                st_price_2[k] = _p8(be64(buf, p + O_V_2))
                st_price_3[k] = _p8(be64(buf, p + O_V_3))
            elif t == 87:  # W
                st_code[k] = u8(buf, p + O_W_LEVEL)
            elif t == 76:  # L
                _copy(st_mpid, k, buf, p + O_L_MPID, 4)
                _copy(st_symbol, k, buf, p + O_L_STOCK, 8)
                st_code[k] = u8(buf, p + O_L_PMM)
                st_code2[k] = u8(buf, p + O_L_MODE)
                st_code3[k] = u8(buf, p + O_L_STATE)
            else:
                _copy(st_symbol, k, buf, p + O_STOCK, 8)
                if t == 72:  # H
                    st_code[k] = u8(buf, p + O_H_STATE)
                    st_code2[k] = u8(buf, p + O_H_RES)
                    _copy(st_reason, k, buf, p + O_H_REASON, 4)
                elif t == 89:  # Y
                    st_code[k] = u8(buf, p + O_Y_ACTION)
                elif t == 75:  # K
                    st_value[k] = be32(buf, p + O_K_TIME)
                    st_code[k] = u8(buf, p + O_K_QUAL)
                    st_price_1[k] = np.int64(be32(buf, p + O_K_PRICE)) * P4
                elif t == 74:  # J
                    st_price_1[k] = np.int64(be32(buf, p + O_J_REF)) * P4
                    st_price_2[k] = np.int64(be32(buf, p + O_J_UP)) * P4
                    st_price_3[k] = np.int64(be32(buf, p + O_J_LO)) * P4
                    st_value[k] = be32(buf, p + O_J_EXT)
                else:  # h
                    st_code[k] = u8(buf, p + O_h_ACTION)
                    st_code2[k] = u8(buf, p + O_h_MKT)
            ks += 1
        elif kind == KIND_DEF:
            k = np.uint64(kd)
            d_ts_event[k] = ts
            d_sequence[k] = seq
            d_instrument_id[k] = locate
            d_channel[k] = chan
            d_round_lot_size[k] = be32(buf, p + O_R_LOT)
            d_etp_leverage_factor[k] = be32(buf, p + O_R_LEV)
            _copy(d_symbol, k, buf, p + O_R_STOCK, 8)
            d_market_category[k] = u8(buf, p + O_R_MKT)
            d_financial_status[k] = u8(buf, p + O_R_FIN)
            d_round_lots_only[k] = u8(buf, p + O_R_LOTONLY)
            d_issue_classification[k] = u8(buf, p + O_R_CLASS)
            _copy(d_issue_subtype, k, buf, p + O_R_SUB, 2)
            d_authenticity[k] = u8(buf, p + O_R_AUTH)
            d_short_sale_threshold[k] = u8(buf, p + O_R_SSTI)
            d_ipo_flag[k] = u8(buf, p + O_R_IPO)
            d_luld_tier[k] = u8(buf, p + O_R_LULD)
            d_etp_flag[k] = u8(buf, p + O_R_ETP)
            d_inverse[k] = u8(buf, p + O_R_INV)
            kd += 1
        elif kind == KIND_IMB:
            k = np.uint64(ki)
            im_ts_event[k] = ts
            im_ts_recv[k] = ts_recv
            im_sequence[k] = seq
            im_instrument_id[k] = locate
            im_channel[k] = chan
            im_tracking[k] = tracking
            im_paired_shares[k] = 0
            im_imbalance_shares[k] = 0
            im_far_price[k] = UNDEF_PRICE
            im_near_price[k] = UNDEF_PRICE
            im_ref_price[k] = UNDEF_PRICE
            im_min_price[k] = UNDEF_PRICE
            im_max_price[k] = UNDEF_PRICE
            im_lower_collar[k] = UNDEF_PRICE
            im_upper_collar[k] = UNDEF_PRICE
            im_near_exec_time[k] = 0
            im_msg_type[k] = t
            im_imbalance_direction[k] = 0
            im_cross_type[k] = 0
            im_price_variation[k] = 0
            im_interest_flag[k] = 0
            im_open_eligibility[k] = 0
            if t == 73:  # I
                im_paired_shares[k] = be64(buf, p + O_I_PAIRED)
                im_imbalance_shares[k] = be64(buf, p + O_I_IMB)
                im_far_price[k] = np.int64(be32(buf, p + O_I_FAR)) * P4
                im_near_price[k] = np.int64(be32(buf, p + O_I_NEAR)) * P4
                im_ref_price[k] = np.int64(be32(buf, p + O_I_REF)) * P4
                im_imbalance_direction[k] = u8(buf, p + O_I_DIR)
                im_cross_type[k] = u8(buf, p + O_I_CROSS)
                im_price_variation[k] = u8(buf, p + O_I_PVI)
            elif t == 78:  # N
                im_interest_flag[k] = u8(buf, p + O_N_FLAG)
            else:  # O
                im_open_eligibility[k] = u8(buf, p + O_O_ELIG)
                im_min_price[k] = np.int64(be32(buf, p + O_O_MIN)) * P4
                im_max_price[k] = np.int64(be32(buf, p + O_O_MAX)) * P4
                im_near_price[k] = np.int64(be32(buf, p + O_O_NEARP)) * P4
                im_near_exec_time[k] = be64(buf, p + O_O_NEART)
                im_lower_collar[k] = np.int64(be32(buf, p + O_O_LO)) * P4
                im_upper_collar[k] = np.int64(be32(buf, p + O_O_UP)) * P4
            ki += 1
    return km, kd, ks, ki, pos, status, fault, n_skipped, units


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


