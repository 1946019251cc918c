"""A one-pass summary of an ITCH source: counts by type, instruments, time range, bytes.

Framing only (no normalization), so ``tickpipe inspect`` reads a day file at framing speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from normalize import itch_decode as D
from normalize._bytes import be16, be48
from normalize.itch_spec import NAMES, TYPE_LETTERS
from normalize.reader import DecodeStats, framed_batches


@numba.njit(cache=True, nogil=True)
def _scan(buf, offsets, seen, tmin, tmax):
    for i in range(offsets.shape[0]):
        p = offsets[i]
        t = be48(buf, p + D.O_TS)
        if t < tmin:
            tmin = t
        if t > tmax:
            tmax = t
        seen[be16(buf, p + D.O_LOCATE)] = True
    return tmin, tmax


@dataclass
class Summary:
    path: str
    bytes: int
    messages: int
    counts: dict[str, int]
    instruments: int              # distinct stock locates seen (0 = market-wide excluded)
    directory: int                # stock directory (R) messages
    ts_first: int | None          # ITCH ns since midnight
    ts_last: int | None
    skipped: list = field(default_factory=list)
    truncated_at: int | None = None

    def rows(self) -> list[tuple[str, str, int, float]]:
        total = max(self.messages, 1)
        return [(c, NAMES[c], self.counts[c], 100.0 * self.counts[c] / total)
                for c in TYPE_LETTERS if self.counts.get(c)]


def summarize(path, *, errors: str = "raise", progress=None) -> Summary:
    """Count messages by type, distinct instruments and the time range of an ITCH source."""
    stats = DecodeStats()
    seen = np.zeros(65536, np.bool_)
    tmin, tmax = np.uint64(2**63), np.uint64(0)
    for fb in framed_batches(path, errors=errors, stats=stats):
        tmin, tmax = _scan(fb.buf, fb.offsets, seen, tmin, tmax)
        if progress is not None:
            progress(stats)
    seen[0] = False
    return Summary(str(path), stats.bytes, stats.messages, dict(stats.counts), int(seen.sum()),
                   stats.counts.get("R", 0), int(tmin) if stats.messages else None,
                   int(tmax) if stats.messages else None, stats.skipped, stats.truncated_at)
