"""The LOBSTER GOOG 2012-06-21 level-1 day for the forecast tests: its messages as ``mbo``
events and LOBSTER's own level-1 book after each as a book table (a book rebuilt from level-1
messages alone lacks the levels that move up into view)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import normalize

DATA = Path(__file__).resolve().parents[1] / "data" / "lobster"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "lobster"
GOOG = "GOOG_2012-06-21_34200000_57600000"


def goog_mbo_and_book():
    for d in (DATA, SHARED):
        msg, ob = d / f"{GOOG}_message_1.csv", d / f"{GOOG}_orderbook_1.csv"
        if msg.exists() and ob.exists():
            break
    else:
        pytest.skip("LOBSTER GOOG day not found in tests/data or ../shared")
    mbo = normalize.read_lobster(msg, date="2012-06-21", symbol="GOOG")
    b = normalize.read_lobster_book(ob, levels=1)
    assert mbo.num_rows == len(b["bid_px"])
    book = pa.table({"instrument_id": mbo.column("instrument_id"), "ts_event": mbo.column("ts_event"),
                     "bid_px_0": b["bid_px"][:, 0], "bid_sz_0": b["bid_sz"][:, 0].astype(np.uint64),
                     "ask_px_0": b["ask_px"][:, 0], "ask_sz_0": b["ask_sz"][:, 0].astype(np.uint64)})
    return mbo, book
