"""Venue message layouts, normalized record schemas, and the ITCH 5.0 normalizer.

Public API::

    read_itch(path, *, date=None, errors="raise") -> dict[str, pyarrow.Table]
    iter_itch(path_or_buffer, *, date, batch_size=...) -> Iterator[dict[str, pyarrow.RecordBatch]]
    read_itch_raw(path) -> dict[str, numpy.ndarray]
    read_moldudp64(packets, *, date, ts_recv=None, channel=0) -> dict[str, pyarrow.Table]
    read_lobster(message_csv, *, orderbook_csv=None, date, symbol, instrument_id=1) -> pyarrow.Table
    encode_itch(messages, ...) -> bytes

Record layouts live in :mod:`normalize.records`, ITCH wire layouts in :mod:`normalize.itch_spec`.
"""

import tickpipe.jitcache  # noqa: F401  (numba's cache directory, before any kernel is defined)

from normalize.encode import encode_itch
from normalize.lobster import read_lobster, read_lobster_book, read_lobster_status
from normalize.reader import DecodeStats, iter_itch, read_itch, read_itch_raw, read_moldudp64

__all__ = ["read_itch", "iter_itch", "read_itch_raw", "read_moldudp64", "encode_itch", "DecodeStats",
           "read_lobster", "read_lobster_status", "read_lobster_book"]
