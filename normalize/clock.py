"""Session clocks: ITCH nanoseconds since midnight (America/New_York) to UTC epoch nanoseconds.

ITCH timestamps count nanoseconds since midnight, local time in New York, of the session date.
The conversion uses the real time zone database, so daylight saving time is right on every date,
including the two days a year whose UTC offset changes at 02:00 local time (markets are closed
then, but the conversion is still exact: before the switch one offset applies, after it the
other). Integer arithmetic only: no float round trip of nanoseconds.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

NEW_YORK = ZoneInfo("America/New_York")
_NS = 1_000_000_000
_EPOCH = _dt.datetime(1970, 1, 1)


@dataclass(frozen=True)
class SessionClock:
    """Integer parameters of one session date's local-to-UTC conversion.

    ``utc_ns = local_midnight_ns + ts - (offset_before if ts < switch_ns else offset_after)``
    where ``local_midnight_ns`` is the session date's midnight read as if it were UTC and the
    offsets are the zone's UTC offsets in nanoseconds (negative west of Greenwich).
    """

    date: _dt.date
    local_midnight_ns: int
    switch_ns: int
    offset_before: int
    offset_after: int

    def to_utc(self, ts_local: np.ndarray) -> np.ndarray:
        ts = np.asarray(ts_local, dtype=np.int64)
        off = np.where(ts < self.switch_ns, self.offset_before, self.offset_after)
        return (self.local_midnight_ns + ts - off).astype(np.uint64)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.local_midnight_ns, self.switch_ns, self.offset_before, self.offset_after)


def _offset_ns(local: _dt.datetime) -> int:
    off = local.replace(tzinfo=NEW_YORK).utcoffset()
    return (off.days * 86400 + off.seconds) * _NS


def session_clock(date: _dt.date | str) -> SessionClock:
    """The :class:`SessionClock` of a session date (``datetime.date`` or ``"YYYY-MM-DD"``)."""
    date = parse_date(date)
    midnight = _dt.datetime(date.year, date.month, date.day)
    delta = midnight - _EPOCH
    local_midnight_ns = (delta.days * 86400 + delta.seconds) * _NS
    before = _offset_ns(midnight)
    after = _offset_ns(midnight + _dt.timedelta(hours=23, minutes=59, seconds=59))
    switch = 1 << 62
    if before != after:
        lo, hi = 0, 86399  # first whole local second whose offset is `after`
        while lo < hi:
            mid = (lo + hi) // 2
            if _offset_ns(midnight + _dt.timedelta(seconds=mid)) == after:
                hi = mid
            else:
                lo = mid + 1
        switch = lo * _NS
    return SessionClock(date, local_midnight_ns, switch, before, after)


def parse_date(value) -> _dt.date:
    """Accept a ``date``, a ``datetime`` or an ISO ``YYYY-MM-DD`` / ``YYYYMMDD`` string."""
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        s = value.strip()
        for fmt in ("%Y-%m-%d", "%Y%m%d"):
            try:
                return _dt.datetime.strptime(s, fmt).date()
            except ValueError:
                pass
    raise ValueError(f"The `date` was not a valid session date, was {value!r}. "
                     "Use a datetime.date or a 'YYYY-MM-DD' string.")


_NASDAQ_NAME = re.compile(r"(?<!\d)(\d{2})(\d{2})(\d{4})\.(?:NASDAQ|BX|PSX)_ITCH_?50", re.IGNORECASE)
_ISO_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")


def date_from_filename(path) -> _dt.date | None:
    """The session date in a NASDAQ file name (``MMDDYYYY.NASDAQ_ITCH50[.gz]``), else None."""
    name = Path(str(path)).name
    m = _NASDAQ_NAME.search(name)
    if m:
        mm, dd, yyyy = (int(g) for g in m.groups())
        try:
            return _dt.date(yyyy, mm, dd)
        except ValueError:
            return None
    return None
