"""Merging several channels' normalized streams into one, in ``ts_event`` order.

A feed with several MoldUDP64 sessions (channels) delivers each channel in its own sequence
order; consumers want one stream in exchange-time order. :class:`ChannelMerger` takes batches
(Arrow RecordBatches or Tables of one schema, e.g. ``mbo``) per channel as they arrive and
releases, in ``ts_event`` order, everything at or before the watermark: the smallest latest
``ts_event`` over the channels still open. A channel that falls silent would stall that
watermark, so the merge is bounded: a channel that has delivered nothing for ``window_s``
seconds (wall clock; exchange time can run faster than that in a replay) stops holding the
stream back, and no more than ``max_rows`` rows are held (the oldest go first). An event that
arrives behind what was already released is counted (``late``) and released at once, never
dropped. Ties keep channel order, then arrival order.

Not thread-safe: one thread feeds it.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa


NOTHING = -(1 << 63)        # a watermark below every timestamp


class ChannelMerger:
    def __init__(self, channels, *, window_s: float = 0.5, max_rows: int = 1 << 22,
                 clock=time.monotonic):
        self.channels = list(channels)
        if not self.channels:
            raise ValueError("The `channels` must name at least one channel.")
        if not window_s > 0:
            raise ValueError(f"The `window_s` must be positive, was {window_s!r}.")
        self.window_s = float(window_s)
        self.max_rows = int(max_rows)
        self.clock = clock
        self._heard = {c: clock() for c in self.channels}
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
        self._heard[channel] = self.clock()
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
        """Release events strictly before this (``NOTHING``: hold everything; None: all channels
        have ended, release everything). Strictly before: an event at the watermark may still be
        joined by an equal one from a channel ranked first."""
        if not self._open:
            return None
        now = self.clock()
        holding = [c for c in self._open if now - self._heard[c] <= self.window_s]
        if any(self._latest[c] is None for c in holding):
            return NOTHING                 # an active channel has not said where it is yet
        seen = [v for v in self._latest.values() if v is not None]
        if not seen:
            return NOTHING
        return min(self._latest[c] for c in holding) if holding else max(seen) + 1

    def _release(self, mark: int | None) -> list[pa.Table]:
        """Release events at or before ``mark`` (None: everything)."""
        if not self._held:
            return []
        held = pa.concat_tables(self._held)
        ts = held.column("ts_event").cast(pa.int64()).to_numpy()
        out_mask = np.ones(len(ts), bool) if mark is None else ts < mark
        if len(ts) - out_mask.sum() > self.max_rows:        # bounded: the oldest go first
            cut = np.sort(ts[~out_mask])[len(ts) - int(out_mask.sum()) - self.max_rows - 1]
            out_mask |= ts <= cut
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
