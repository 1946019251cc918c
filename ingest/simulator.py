"""A deterministic NASDAQ-like session generator (ITCH 5.0).

:func:`generate_session` produces a whole trading session for N instruments from a seed: system
events and the stock directory at the start, trading actions, then order flow around a moving
mid per instrument (adds with and without MPID, executions with and without price, partial
cancels, deletes, replaces, hidden executions, opening and closing crosses, a halt and resume,
Reg SHO, LULD collars, imbalance messages, a broken trade) and the closing system events. Every
execution, cancel, replace and delete refers to a live order of the right instrument: the
generator keeps its own books. The flow is produced by compiled code (several million messages
per second) as one column set; :func:`session_tables` splits it into raw per-type tables for
:func:`normalize.encode_itch`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numba
import numpy as np

from normalize.encode import encode_itch
from normalize.itch_spec import RAW_DTYPES

OPEN_NS = (9 * 3600 + 30 * 60) * 1_000_000_000
CLOSE_NS = 16 * 3600 * 1_000_000_000
TICK = 100            # $0.01 in Price(4) units
MAX_LIVE = 512        # live orders tracked per instrument by the generator

# event columns produced by the compiled generator
EVENT = np.dtype([
    ("type", "u1"), ("side", "u1"), ("flag", "u1"), ("locate", "<u2"), ("ts", "<u8"),
    ("ref", "<u8"), ("ref2", "<u8"), ("shares", "<u8"), ("price", "<u8"), ("match", "<u8"),
])


@numba.njit(inline="always")
def _place(live_px, live_side, nl, inst, side, want):
    """``want`` moved so that it does not cross the other side's best price: the generator has no
    matching engine, so a buy never goes at or above the best ask, a sell at or below the best
    bid, and the books it writes are never crossed or locked."""
    px = want
    for j in range(nl):
        if side == 66 and live_side[inst, j] == 83 and live_px[inst, j] - TICK < px:
            px = live_px[inst, j] - TICK
        elif side == 83 and live_side[inst, j] == 66 and live_px[inst, j] + TICK > px:
            px = live_px[inst, j] + TICK
    return max(px, np.uint64(TICK))


@numba.njit(cache=True)
def _flow(n, n_inst, seed, ev, mids, weights_cum, start_ref, t0, t1):
    np.random.seed(seed)
    live = np.zeros((n_inst, MAX_LIVE), np.uint64)
    live_px = np.zeros((n_inst, MAX_LIVE), np.uint64)
    live_sz = np.zeros((n_inst, MAX_LIVE), np.uint64)
    live_side = np.zeros((n_inst, MAX_LIVE), np.uint8)
    nlive = np.zeros(n_inst, np.int64)
    next_ref = start_ref
    match = np.uint64(1)
    ts = np.uint64(t0)
    span = t1 - t0
    mean_gap = max(1.0, span / max(n, 1))
    k = 0
    burst = 0
    while k < n:
        # clustered arrivals: bursts of closely spaced events between quiet gaps
        if burst > 0:
            gap = np.random.exponential(mean_gap * 0.05)
            burst -= 1
        else:
            gap = np.random.exponential(mean_gap * 1.8)
            if np.random.random() < 0.5:
                burst = np.random.randint(1, 20)
        ts += np.uint64(1 + int(gap))
        if ts >= np.uint64(t1):
            ts = np.uint64(t1 - 1)
        u = np.random.random()
        inst = np.searchsorted(weights_cum, u)
        if inst >= n_inst:
            inst = n_inst - 1
        # random walk of the mid, in ticks
        if np.random.random() < 0.02:
            step = np.random.randint(-1, 2)
            if mids[inst] + step * TICK > 10 * TICK:
                mids[inst] += step * TICK
        e = ev[k]
        e.locate = inst + 1
        e.ts = ts
        e.flag = 0
        e.ref2 = 0
        e.match = 0
        e.side = 0
        e.shares = 0
        e.price = 0
        e.ref = 0
        nl = nlive[inst]
        r = np.random.random()
        if nl == 0 or (nl < MAX_LIVE and r < 0.44):
            side = 66 if np.random.random() < 0.5 else 83
            off = np.random.geometric(0.35)
            if side == 66:
                px = mids[inst] - off * TICK
            else:
                px = mids[inst] + off * TICK
            px = _place(live_px, live_side, nl, inst, side, np.uint64(px))
            sz = np.uint64(100 * np.random.randint(1, 10))
            if np.random.random() < 0.15:
                sz = np.uint64(np.random.randint(1, 100))
            e.type = 70 if np.random.random() < 0.08 else 65
            e.ref = next_ref
            e.side = side
            e.shares = sz
            e.price = px
            live[inst, nl] = next_ref
            live_px[inst, nl] = px
            live_sz[inst, nl] = sz
            live_side[inst, nl] = side
            nlive[inst] = nl + 1
            next_ref += np.uint64(1)
        elif r < 0.52 and nl >= MAX_LIVE:
            # book full: delete the oldest live order
            j = 0
            e.type = 68
            e.ref = live[inst, j]
            nlive[inst] = nl - 1
            live[inst, j] = live[inst, nl - 1]
            live_px[inst, j] = live_px[inst, nl - 1]
            live_sz[inst, j] = live_sz[inst, nl - 1]
            live_side[inst, j] = live_side[inst, nl - 1]
        else:
            j = np.random.randint(0, nl)
            ref = live[inst, j]
            rem = live_sz[inst, j]
            r2 = np.random.random()
            full = False
            if r2 < 0.20:                      # execution (E), sometimes C with price
                q = rem if np.random.random() < 0.6 else np.uint64(np.random.randint(1, int(rem) + 1))
                e.ref = ref
                e.shares = q
                e.match = match
                match += np.uint64(1)
                if np.random.random() < 0.05:
                    e.type = 67
                    e.flag = 89 if np.random.random() < 0.8 else 78
                    e.price = live_px[inst, j]
                else:
                    e.type = 69
                full = q == rem
                live_sz[inst, j] = rem - q
            elif r2 < 0.36 and rem > 1:        # partial cancel (X)
                q = np.uint64(np.random.randint(1, int(rem)))
                e.type = 88
                e.ref = ref
                e.shares = q
                live_sz[inst, j] = rem - q
            elif r2 < 0.46:                    # replace (U): new reference, new price and size
                e.type = 85
                e.ref = ref
                e.ref2 = next_ref
                off = np.random.geometric(0.35)
                if live_side[inst, j] == 66:
                    px = mids[inst] - off * TICK
                else:
                    px = mids[inst] + off * TICK
                px = _place(live_px, live_side, nl, inst, live_side[inst, j], np.uint64(px))
                sz = np.uint64(100 * np.random.randint(1, 10))
                e.shares = sz
                e.price = px
                live[inst, j] = next_ref
                live_px[inst, j] = px
                live_sz[inst, j] = sz
                next_ref += np.uint64(1)
            elif r2 < 0.485:                   # hidden execution (P)
                e.type = 80
                e.side = 66 if np.random.random() < 0.5 else 83
                e.shares = np.uint64(np.random.randint(1, 50) * 10)
                e.price = mids[inst]
                e.match = match
                match += np.uint64(1)
            else:                              # delete (D)
                e.type = 68
                e.ref = ref
                full = True
            if full:
                nlive[inst] = nl - 1
                live[inst, j] = live[inst, nl - 1]
                live_px[inst, j] = live_px[inst, nl - 1]
                live_sz[inst, j] = live_sz[inst, nl - 1]
                live_side[inst, j] = live_side[inst, nl - 1]
        k += 1
    return next_ref, match, nlive, live, live_px, live_sz, live_side


#: One live order of the generator's ground-truth books (price in ITCH Price(4) units).
LIVE_ORDER = np.dtype([("order_id", "<u8"), ("instrument_id", "<u4"), ("side", "u1"),
                       ("price4", "<u8"), ("shares", "<u8")])


@dataclass
class Session:
    """A generated session: the ITCH message columns in output order, and its parameters."""

    events: np.ndarray          # EVENT, one row per message, in sequence order
    n_instruments: int
    seed: int
    date: _dt.date
    symbols: list[str]
    live_orders: np.ndarray     # LIVE_ORDER: the generator's books after the last message

    def tables(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Raw per-type tables and each row's output position (for ``encode_itch``)."""
        return session_tables(self.events, self.symbols)

    def to_binaryfile(self) -> bytes:
        raw, pos = self.tables()
        return encode_itch(raw, positions=pos)


def _symbols(n: int) -> list[str]:
    out = []
    for i in range(n):
        s, k = "", i
        while True:
            s = chr(65 + k % 26) + s
            k = k // 26 - 1
            if k < 0:
                break
        out.append(("T" + s)[:8])
    return out


def generate_session(n_messages: int = 100_000, n_instruments: int = 100, *, seed: int = 0,
                     date: _dt.date | str = "2024-03-15") -> Session:
    """Generate a consistent ITCH 5.0 session of about ``n_messages`` messages.

    Deterministic for a given (``n_messages``, ``n_instruments``, ``seed``).
    """
    from normalize.clock import parse_date
    if n_instruments < 1 or n_instruments > 65535:
        raise ValueError(f"The `n_instruments` must be in 1..65535, was {n_instruments}.")
    if n_messages < 1:
        raise ValueError(f"The `n_messages` must be at least 1, was {n_messages}.")
    rng = np.random.default_rng(seed)
    d = parse_date(date)
    syms = _symbols(n_instruments)
    loc = np.arange(1, n_instruments + 1, dtype=np.uint16)
    pre: list[np.ndarray] = []

    def block(n, typ):
        b = np.zeros(n, EVENT)
        b["type"] = ord(typ)
        return b

    t = 3 * 3600 * 1_000_000_000
    # system events, directory, trading actions, Reg SHO, MWCB levels, IPO and participants
    for code in "OS":
        b = block(1, "S"); b["flag"] = ord(code); b["ts"] = t; t += 1000; pre.append(b)
    b = block(n_instruments, "R"); b["locate"] = loc; b["ts"] = t + np.arange(n_instruments) * 10
    t += n_instruments * 10 + 1000; pre.append(b)
    b = block(1, "V"); b["ts"] = t; b["price"] = 0; t += 1000; pre.append(b)
    b = block(n_instruments, "H"); b["locate"] = loc; b["flag"] = ord("T")
    b["ts"] = t + np.arange(n_instruments) * 10; t += n_instruments * 10 + 1000; pre.append(b)
    b = block(1, "Y"); b["locate"] = 1; b["flag"] = ord("0"); b["ts"] = t; t += 1000; pre.append(b)
    b = block(1, "L"); b["locate"] = 1; b["ts"] = t; t += 1000; pre.append(b)
    b = block(1, "K"); b["locate"] = min(2, n_instruments); b["ts"] = t; b["price"] = 250000
    t += 1000; pre.append(b)
    b = block(1, "N"); b["locate"] = 1; b["ts"] = t; b["flag"] = ord("B"); t += 1000; pre.append(b)
    b = block(1, "I"); b["locate"] = 1; b["ts"] = t; t += 1000; pre.append(b)
    b = block(1, "S"); b["flag"] = ord("Q"); b["ts"] = OPEN_NS - 1000; pre.append(b)

    mids = (rng.integers(10, 500, n_instruments) * 100 * TICK // 100).astype(np.uint64) * 100
    mids = np.maximum(mids, 20 * TICK).astype(np.uint64)
    w = 1.0 / np.arange(1, n_instruments + 1) ** 0.8     # Zipf-like activity
    wc = np.cumsum(w / w.sum())
    n_flow = max(1, n_messages - sum(len(x) for x in pre) - 3 * n_instruments - 12)
    ev = np.zeros(n_flow, EVENT)
    next_ref, match, nlive, live, live_px, live_sz, live_side = _flow(
        n_flow, n_instruments, seed, ev, mids, wc, np.uint64(1),
                               OPEN_NS, CLOSE_NS - 1_000_000)
    # opening cross per instrument right at the open, closing cross at the close
    oc = block(n_instruments, "Q"); oc["locate"] = loc; oc["ts"] = OPEN_NS; oc["flag"] = ord("O")
    oc["price"] = mids; oc["shares"] = 1000; oc["match"] = match + np.arange(n_instruments)
    match += n_instruments
    cc = block(n_instruments, "Q"); cc["locate"] = loc; cc["ts"] = CLOSE_NS; cc["flag"] = ord("C")
    cc["price"] = mids; cc["shares"] = 5000; cc["match"] = match + np.arange(n_instruments)
    # a halt and resume of instrument 1 in mid-session, an LULD collar, an operational halt,
    # a DLCR message, MWCB status, a broken trade
    mid_t = (OPEN_NS + CLOSE_NS) // 2
    extra = []
    b = block(1, "H"); b["locate"] = 1; b["flag"] = ord("H"); b["ts"] = mid_t; extra.append(b)
    b = block(1, "J"); b["locate"] = 1; b["ts"] = mid_t + 1; b["price"] = mids[0]; extra.append(b)
    b = block(1, "h"); b["locate"] = 1; b["ts"] = mid_t + 2; b["flag"] = ord("H"); extra.append(b)
    b = block(1, "O"); b["locate"] = 1; b["ts"] = mid_t + 3; b["price"] = mids[0]; extra.append(b)
    b = block(1, "H"); b["locate"] = 1; b["flag"] = ord("T"); b["ts"] = mid_t + 4; extra.append(b)
    b = block(1, "W"); b["ts"] = mid_t + 5; b["flag"] = ord("1"); extra.append(b)
    ex = ev[ev["type"] == ord("E")]
    b = block(1, "B"); b["ts"] = CLOSE_NS - 500_000
    if ex.shape[0]:
        b["locate"] = ex[0]["locate"]; b["match"] = ex[0]["match"]
    extra.append(b)
    post = []
    for i, code in enumerate("MEC"):
        b = block(1, "S"); b["flag"] = ord(code); b["ts"] = CLOSE_NS + 1_000_000 * (i + 1)
        post.append(b)
    # opening crosses and mid-session events are merged into the flow by timestamp
    flow = np.concatenate([oc, ev, *extra, cc])
    flow = flow[np.argsort(flow["ts"], kind="stable")]
    events = np.concatenate(pre + [flow] + post)
    return Session(events, n_instruments, seed, d, syms,
                   _ground_truth(nlive, live, live_px, live_sz, live_side))


def _ground_truth(nlive, live, px, sz, side) -> np.ndarray:
    """The generator's own books at the end of the session: every live order."""
    rows = [(int(live[i, j]), i + 1, int(side[i, j]), int(px[i, j]), int(sz[i, j]))
            for i in range(nlive.shape[0]) for j in range(int(nlive[i]))]
    out = np.array(rows, dtype=LIVE_ORDER) if rows else np.zeros(0, LIVE_ORDER)
    return out[np.argsort(out["order_id"], kind="stable")]


def session_tables(events: np.ndarray, symbols: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split generator events into raw per-type ITCH tables plus their output positions."""
    sym_arr = np.array([s.ljust(8).encode() for s in symbols], dtype="S8")
    out, pos = {}, {}
    types = events["type"]
    for letter in RAW_DTYPES:
        idx = np.flatnonzero(types == ord(letter))
        if idx.size == 0:
            continue
        e = events[idx]
        a = np.zeros(idx.size, RAW_DTYPES[letter])
        a["message_type"] = letter.encode()
        a["stock_locate"] = e["locate"]
        a["tracking_number"] = 0
        a["timestamp"] = e["ts"]
        f = a.dtype.names
        stock = sym_arr[np.maximum(e["locate"].astype(np.int64) - 1, 0)]
        if "stock" in f:
            a["stock"] = stock
        if letter in "AF":
            a["order_reference_number"] = e["ref"]; a["buy_sell_indicator"] = e["side"].view("S1")
            a["shares"] = e["shares"]; a["price"] = e["price"]
            if letter == "F":
                a["attribution"] = b"SIMX"
        elif letter in "EC":
            a["order_reference_number"] = e["ref"]; a["executed_shares"] = e["shares"]
            a["match_number"] = e["match"]
            if letter == "C":
                a["printable"] = e["flag"].view("S1"); a["execution_price"] = e["price"]
        elif letter == "X":
            a["order_reference_number"] = e["ref"]; a["cancelled_shares"] = e["shares"]
        elif letter == "D":
            a["order_reference_number"] = e["ref"]
        elif letter == "U":
            a["original_order_reference_number"] = e["ref"]
            a["new_order_reference_number"] = e["ref2"]; a["shares"] = e["shares"]; a["price"] = e["price"]
        elif letter == "P":
            a["order_reference_number"] = 0; a["buy_sell_indicator"] = e["side"].view("S1")
            a["shares"] = e["shares"]; a["price"] = e["price"]; a["match_number"] = e["match"]
        elif letter == "Q":
            a["shares"] = e["shares"]; a["cross_price"] = e["price"]; a["match_number"] = e["match"]
            a["cross_type"] = e["flag"].view("S1")
        elif letter == "B":
            a["match_number"] = e["match"]
        elif letter == "S":
            a["event_code"] = e["flag"].view("S1")
        elif letter == "R":
            a["market_category"] = b"Q"; a["financial_status_indicator"] = b"N"
            a["round_lot_size"] = 100; a["round_lots_only"] = b"N"; a["issue_classification"] = b"C"
            a["issue_sub_type"] = b"Z "; a["authenticity"] = b"P"
            a["short_sale_threshold_indicator"] = b"N"; a["ipo_flag"] = b"N"
            a["luld_reference_price_tier"] = b"1"; a["etp_flag"] = b"N"
            a["etp_leverage_factor"] = 0; a["inverse_indicator"] = b"N"
        elif letter == "H":
            a["trading_state"] = e["flag"].view("S1"); a["reserved"] = b" "
            a["reason"] = np.where(e["flag"] == ord("H"), b"T1  ", b"    ")
        elif letter == "Y":
            a["reg_sho_action"] = e["flag"].view("S1")
        elif letter == "L":
            a["mpid"] = b"SIMX"; a["primary_market_maker"] = b"Y"; a["market_maker_mode"] = b"N"
            a["market_participant_state"] = b"A"
        elif letter == "V":
            a["level1"] = 1_000_000_000_000; a["level2"] = 950_000_000_000; a["level3"] = 900_000_000_000
        elif letter == "W":
            a["breached_level"] = e["flag"].view("S1")
        elif letter == "K":
            a["ipo_quotation_release_time"] = 34200; a["ipo_quotation_release_qualifier"] = b"A"
            a["ipo_price"] = e["price"]
        elif letter == "J":
            a["auction_collar_reference_price"] = e["price"]
            a["upper_auction_collar_price"] = e["price"] + 5 * TICK
            a["lower_auction_collar_price"] = e["price"] - 5 * TICK
            a["auction_collar_extension"] = 1
        elif letter == "h":
            a["market_code"] = b"Q"; a["operational_halt_action"] = e["flag"].view("S1")
        elif letter == "I":
            a["paired_shares"] = 10_000; a["imbalance_shares"] = 2_500; a["imbalance_direction"] = b"B"
            a["far_price"] = 1_000_000; a["near_price"] = 1_000_100; a["current_reference_price"] = 1_000_050
            a["cross_type"] = b"O"; a["price_variation_indicator"] = b"L"
        elif letter == "N":
            a["interest_flag"] = e["flag"].view("S1")
        elif letter == "O":
            a["open_eligibility_status"] = b"Y"; a["minimum_allowable_price"] = e["price"] - 10 * TICK
            a["maximum_allowable_price"] = e["price"] + 10 * TICK; a["near_execution_price"] = e["price"]
            a["near_execution_time"] = 34_500_000_000_000; a["lower_price_range_collar"] = e["price"] - 20 * TICK
            a["upper_price_range_collar"] = e["price"] + 20 * TICK
        out[letter] = a
        pos[letter] = idx
    return out, pos


def write_binaryfile(path, n_messages: int = 100_000, n_instruments: int = 100, *, seed: int = 0,
                     date="2024-03-15", compress: str | None = None) -> int:
    """Generate a session and write it as a NASDAQ BinaryFILE (optionally .gz / .zst)."""
    data = generate_session(n_messages, n_instruments, seed=seed, date=date).to_binaryfile()
    if compress == "gzip":
        import gzip
        data = gzip.compress(data, compresslevel=1)
    elif compress == "zstd":
        import zstandard
        data = zstandard.ZstdCompressor(level=3).compress(data)
    elif compress is not None:
        raise ValueError(f"The `compress` was not a valid value, was {compress!r}. Use None, 'gzip' or 'zstd'.")
    with open(path, "wb") as f:
        f.write(data)
    return len(data)
