"""kernels.book against LOBSTER's own books, transition by transition, in one call.

A LOBSTER message file lists only the events inside the requested number of levels, so the
check is: for every message i, the book rebuilt from book row i-1 (as snapshot events) plus
message i equals book row i at every level, except that when message i empties a level of a full
side, the level that moves up from beyond the visible range is unknown. All transitions run as
one reconstruction call, each transition its own instrument, interleaved in time.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import normalize
from kernels.book import reconstruct
from normalize import records as R

DATA = Path(__file__).resolve().parents[1] / "data" / "lobster"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"


def _files(stem, levels):
    for d in (DATA, SHARED):
        msg = d / f"{stem}_message_{levels}{'.head999' if stem.startswith('AAPL') else ''}.csv"
        book = d / f"{stem}_orderbook_{levels}{'.head999' if stem.startswith('AAPL') else ''}.csv"
        if msg.exists() and book.exists():
            return msg, book
    pytest.skip(f"LOBSTER sample {stem} not found in tests/data or ../shared")


def _transitions(msg_path, book_path, levels):
    """All transitions as one interleaved mbo table, plus the books to compare with."""
    events = normalize.read_lobster(msg_path, date="2012-06-21", symbol="X")
    book = normalize.read_lobster_book(book_path)
    n = events.num_rows
    assert n == len(book["bid_px"]), "halts (left out of mbo) would misalign events and book rows"
    ev = {c: events.column(c).to_numpy(zero_copy_only=False) for c in
          ("ts_event", "action", "order_id", "price", "size", "side", "flags")}
    ts = events.column("ts_event").cast(pa.int64()).to_numpy()
    rows = []
    for i in range(1, n):
        parts = {"inst": [i], "ts": [ts[i]], "action": [R.ACTION_CLEAR], "oid": [0], "price": [R.UNDEF_PRICE],
                 "size": [0], "side": [R.SIDE_NONE], "flags": [R.F_SNAPSHOT]}
        for name, side, px, sz in (("bid", R.SIDE_BID, book["bid_px"][i - 1], book["bid_sz"][i - 1]),
                                   ("ask", R.SIDE_ASK, book["ask_px"][i - 1], book["ask_sz"][i - 1])):
            for k in range(levels):
                if sz[k] > 0:
                    parts["inst"].append(i); parts["ts"].append(ts[i]); parts["action"].append(R.ACTION_ADD)
                    parts["oid"].append((1 << 62) + i * 64 + k * 2 + (side == R.SIDE_BID))
                    parts["price"].append(px[k]); parts["size"].append(sz[k]); parts["side"].append(side)
                    parts["flags"].append(R.F_SNAPSHOT)
        # message i; its order ids live in this transition only
        parts["inst"].append(i); parts["ts"].append(ts[i]); parts["action"].append(ev["action"][i])
        parts["oid"].append((i << 32) | (int(ev["order_id"][i]) & 0xFFFFFFFF))
        parts["price"].append(ev["price"][i]); parts["size"].append(ev["size"][i])
        parts["side"].append(ev["side"][i]); parts["flags"].append(ev["flags"][i])
        rows.append(parts)
    cat = {k: np.concatenate([np.asarray(r[k]) for r in rows]) for k in rows[0]}
    order = np.argsort(cat["ts"], kind="stable")              # interleaved in time
    c = R.alloc_columns("mbo", order.size, zero=True)
    c.instrument_id[:], c.ts_event[:] = cat["inst"][order], cat["ts"][order]
    c.ts_recv[:] = R.UNDEF_TIMESTAMP
    c.action[:], c.order_id[:], c.price[:] = cat["action"][order], cat["oid"][order], cat["price"][order]
    c.size[:], c.side[:], c.flags[:] = cat["size"][order], cat["side"][order], cat["flags"][order]
    c.sequence[:] = np.arange(order.size)
    return pa.Table.from_batches([R.columns_to_arrow("mbo", c)]), book, ev


def _check(stem, levels):
    msg, bookf = _files(stem, levels)
    mbo, book, ev = _transitions(msg, bookf, levels)
    out = reconstruct(mbo, levels=levels).to_pandas()
    last = out.groupby("instrument_id").tail(1).set_index("instrument_id").sort_index()
    n = len(book["bid_px"])
    checked = 0
    for name in ("bid", "ask"):
        full_before = (book[f"{name}_sz"][:-1] > 0).all(axis=1)          # row i-1 had every level
        got_px = np.stack([last[f"{name}_px_{k}"].to_numpy() for k in range(levels)], axis=1)
        got_sz = np.stack([last[f"{name}_sz_{k}"].to_numpy() for k in range(levels)], axis=1)
        want_px, want_sz = book[f"{name}_px"][1:n], book[f"{name}_sz"][1:n]
        ok = (got_px == want_px) & (got_sz == want_sz)
        # the deepest level is unknown when the message emptied a level of a full side
        emptied = full_before & (got_sz[:, levels - 1] == 0)
        ok[emptied, levels - 1] = True
        bad = np.flatnonzero(~ok.all(axis=1))
        assert bad.size == 0, f"{stem} {name}: transitions {bad[:10] + 1} differ"
        checked += ok.size
    return checked


def test_every_transition_of_the_aapl_ten_level_sample_matches_lobsters_books():
    assert _check("AAPL_2012-06-21_34200000_57600000", 10) == 2 * 998 * 10


def test_every_transition_of_the_goog_full_day_at_level_one_matches_lobsters_books():
    assert _check("GOOG_2012-06-21_34200000_57600000", 1) > 2 * 49_000
