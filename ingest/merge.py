"""Merging several channels' normalized streams into one, in ``ts_event`` order.

A feed with several MoldUDP64 sessions (channels) delivers each channel in its own sequence
order; consumers want one stream in exchange-time order. :class:`ChannelMerger` takes batches
(Arrow RecordBatches or Tables of one schema, e.g. ``mbo``) per channel as they arrive and
releases, in ``ts_event`` order, everything at or before the watermark: the smallest latest
``ts_event`` over the channels still open. A channel that falls silent would stall that
watermark, so the merge is bounded: events older than ``window_ns`` before the newest event seen
are released regardless, and an event that arrives behind what was already released is counted
(``late``) and released at once rather than dropped. Ties keep channel order, then arrival order.

Not thread-safe: one thread feeds it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class ChannelMerger:
    def __init__(self, channels, *, window_ns: int = 50_000_000):
        self.channels = list(channels)
        if not self.channels:
            raise ValueError("The `channels` must name at least one channel.")
        if window_ns <= 0:
            raise ValueError(f"The `window_ns` must be positive, was {window_ns!r}.")
        self.window_ns = int(window_ns)
        self._latest = {c: None for c in self.channels}
        self._open = set(self.channels)
        self._held: list[pa.Table] = []
        self._rank = {c: k for k, c in enumerate(self.channels)}
        self._arrivals = 0
        self.released_upto: int | None = None
        self.late = 0

    def push(self, channel, batch) -> list[pa.Table]:
        """Add one batch of ``channel`` (in its own ts_event order); return what is released."""
        if channel not in self._rank:
            raise ValueError(f"The `channel` was not one of {self.channels}, was {channel!r}.")
        t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if t.num_rows:
            ts = t.column("ts_event").cast(pa.int64()).to_numpy()
            self._latest[channel] = int(ts.max()) if self._latest[channel] is None else max(
                self._latest[channel], int(ts.max()))
            n = t.num_rows
            t = t.append_column("__rank", pa.array(np.full(n, self._rank[channel], np.int64)))
            t = t.append_column("__arrival", pa.array(np.arange(self._arrivals, self._arrivals + n)))
            self._arrivals += n
            self._held.append(t)
        return self._release(self._watermark())

    def close(self, channel) -> list[pa.Table]:
        """``channel`` has ended (end of session): it no longer holds the watermark back."""
        self._open.discard(channel)
        return self._release(self._watermark())

    def flush(self) -> list[pa.Table]:
        """Release everything held (end of the merged stream)."""
        return self._release(None)

    def _watermark(self) -> int | None:
        seen = [v for v in self._latest.values() if v is not None]
        if not seen:
            return None
        open_latest = [self._latest[c] for c in self._open]
        if self._open and all(v is not None for v in open_latest):
            mark = min(open_latest)
        elif not self._open:
            mark = max(seen)
        else:
            mark = None
        bound = max(seen) - self.window_ns          # a silent channel holds back no longer
        return bound if mark is None else max(mark, bound)

    def _release(self, mark: int | None) -> list[pa.Table]:
        if not self._held:
            return []
        held = pa.concat_tables(self._held)
        ts = held.column("ts_event").cast(pa.int64()).to_numpy()
        out_mask = np.ones(len(ts), bool) if mark is None else ts <= mark
        if self.released_upto is not None:
            late = ts < self.released_upto
            self.late += int(late.sum())
            out_mask |= late
        if not out_mask.any():
            self._held = [held]
            return []
        out = held.filter(pa.array(out_mask))
        rest = held.filter(pa.array(~out_mask))
        self._held = [rest] if rest.num_rows else []
        order = np.lexsort((out.column("__arrival").to_numpy(), out.column("__rank").to_numpy(),
                            out.column("ts_event").cast(pa.int64()).to_numpy()))
        out = out.take(pa.array(order)).drop_columns(["__rank", "__arrival"])
        top = int(out.column("ts_event").cast(pa.int64()).to_numpy().max())
        self.released_upto = top if self.released_upto is None else max(self.released_upto, top)
        return [out]
