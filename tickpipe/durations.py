"""Durations given as pandas frequency strings ("100ms", "5min", "1D") or Timedeltas, in
nanoseconds, shared by the kernels and the store."""

from __future__ import annotations

import warnings


def duration_value(value):
    """``value`` as a :class:`pandas.Timedelta` (NaT, or an error, as pandas gives them).

    A string is read as a fixed pandas frequency first (``to_offset``: "100ms", "1h30min",
    "1D"): pandas 2.3 parses a string in ``Timedelta`` through a NumPy timedelta of the generic
    unit, which NumPy 2.5 deprecates, a warning on every call that is not the caller's to fix.
    Other strings ("1 days 02:00:00") go to ``Timedelta`` with that warning silenced."""
    import pandas as pd
    if isinstance(value, str):
        from pandas.tseries.frequencies import to_offset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)     # "1M": month-end, no duration
            try:
                return pd.Timedelta(int(to_offset(value).nanos), "ns")
            except (ValueError, TypeError):
                pass
            warnings.filterwarnings("ignore", "The 'generic' unit", DeprecationWarning)
            return pd.Timedelta(value)
    return pd.Timedelta(value)
