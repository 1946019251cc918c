"""pytest-benchmark versions of the decode and book benchmarks, on a small generated session.

Run with ``.venv/bin/python -m pytest bench/`` (not part of ``make test``). The full comparison
table, with the memory-copy ceiling and pure-Python itchfeed, is ``bench/run.py``.
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SESSION_DATE, itchcpp_books, message_ends, session_bytes  # noqa: E402

pytest.importorskip("pytest_benchmark")

N_MESSAGES = 100_000
N_INSTRUMENTS = 100
SEED = 7
ROUNDS = 5


@pytest.fixture(scope="module")
def session() -> tuple[bytes, int]:
    data, _, _ = session_bytes(N_MESSAGES, N_INSTRUMENTS, SEED)
    return data, int(message_ends(data).shape[0])


def _run(benchmark, fn, data: bytes, n_messages: int):
    benchmark.extra_info.update(messages=n_messages, bytes=len(data))
    return benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1, iterations=1)


def _non_trade_rows(out: dict) -> int:
    def rows(x):
        if isinstance(x, np.ndarray):
            return x.shape[0]
        return x.num_rows if hasattr(x, "num_rows") else len(x[0])
    return sum(rows(v) for k, v in out.items() if k != "trades")


def test_read_itch_decodes_every_message_of_a_buffer(benchmark, session):
    import normalize
    data, n = session
    tables = _run(benchmark, lambda: normalize.read_itch(data, date=SESSION_DATE), data, n)
    assert _non_trade_rows(tables) == n
    assert tables["trades"].num_rows > 0


def test_session_decoder_without_arrow_decodes_every_message(benchmark, session):
    from normalize.reader import SessionDecoder, framed_batches, resolve_date
    data, n = session
    clock = resolve_date(None, SESSION_DATE)

    def decode():
        sess = SessionDecoder(clock)
        return [sess.decode(fb.buf, fb.offsets, fb.counts, fb.index) for fb in framed_batches(data)]

    parts = _run(benchmark, decode, data, n)
    assert sum(_non_trade_rows(p) for p in parts) == n


def test_frame_binaryfile_frames_every_message(benchmark, session):
    from normalize import itch_decode as D
    from normalize.itch_spec import MESSAGE_LENGTH
    data, n = session
    buf = np.frombuffer(data, np.uint8)
    offsets, types = np.empty(n + 1, np.int64), np.empty(n + 1, np.uint8)
    counts = np.zeros(256, np.int64)
    sk_at, sk_why = np.empty(16, np.int64), np.empty(16, np.uint8)

    def frame():
        counts[:] = 0
        return D.frame_binaryfile(buf, 0, buf.shape[0], MESSAGE_LENGTH, offsets, types, counts,
                                  False, sk_at, sk_why, np.empty(0, np.int64))

    got, pos, status, _, _ = _run(benchmark, frame, data, n)
    assert (got, pos, status) == (n, buf.shape[0], D.OK)
    assert counts.sum() == n


def test_itchcpp_parse_stream_yields_every_message(benchmark, session):
    itchcpp = pytest.importorskip("itchcpp")
    data, n = session

    def parse():
        return collections.deque(itchcpp.MessageParser().parse_stream(data), maxlen=1)

    last = _run(benchmark, parse, data, n)
    assert sum(1 for _ in itchcpp.MessageParser().parse_stream(data)) == n
    assert last[0].message_type == b"S" and last[0].event_code == b"C"


def test_book_itch_writes_the_best_bid_and_offer_after_every_event(benchmark, session):
    from kernels.book_itch import book_itch
    data, n = session
    book = _run(benchmark, lambda: book_itch(data, levels=1, date=SESSION_DATE), data, n)
    assert book.num_rows > 0.99 * n
    assert set(book.column_names) >= {"bid_px_0", "ask_px_0", "bid_sz_0", "ask_sz_0"}


def test_itchcpp_book_manager_keeps_every_symbols_book(benchmark, session):
    pytest.importorskip("itchcpp")
    data, n = session
    bm = _run(benchmark, lambda: itchcpp_books(data, N_INSTRUMENTS), data, n)
    assert bm.book_count() == N_INSTRUMENTS
