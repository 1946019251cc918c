"""Venue message layouts, normalized record schemas, and the ITCH 5.0 normalizer.

Public API::

    read_itch(path, *, date=None, errors="raise") -> dict[str, pyarrow.Table]
    iter_itch(path_or_buffer, *, date, batch_size=...) -> Iterator[dict[str, pyarrow.RecordBatch]]
    read_itch_raw(path) -> dict[str, numpy.ndarray]
    encode_itch(messages, ...) -> bytes

Record layouts live in :mod:`normalize.records`, ITCH wire layouts in :mod:`normalize.itch_spec`.
"""

from normalize.encode import encode_itch
from normalize.reader import DecodeStats, iter_itch, read_itch, read_itch_raw

__all__ = ["read_itch", "iter_itch", "read_itch_raw", "encode_itch", "DecodeStats"]
