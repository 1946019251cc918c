"""Scale-out: the tick store as a Dask DataFrame, one partition per stored day, and a
multi-day feature job (``kernels.features`` per day) that runs on any Dask cluster.

The tasks carry only the store's root and the query; each opens the store read-only on the
worker, so a cluster needs the store's folder on a shared file system, nothing more.
"""

from __future__ import annotations

import numpy as np

from tickstore.store import NS_PER_DAY, TickStore, _ns


def _days(store: TickStore, schema, symbols, instruments, start, end) -> list[str]:
    return sorted({e.date for e in store.files(schema, symbols=symbols, instruments=instruments,
                                               start=start, end=end)})


def _bounds(date: str, start, end) -> tuple[int, int]:
    lo = int(np.datetime64(date, "D").astype("datetime64[ns]").astype(np.int64))
    hi = lo + NS_PER_DAY
    a, b = _ns(start, "start"), _ns(end, "end")
    return max(lo, a) if a is not None else lo, min(hi, b) if b is not None else hi


def read_day(date: str, *, root, schema, symbols=None, instruments=None, start=None, end=None,
             columns=None):
    """One day of a store query, as pandas (a Dask partition)."""
    lo, hi = _bounds(date, start, end)
    return TickStore(root, writer=False).read(schema, symbols=symbols, instruments=instruments,
                                              start=lo, end=hi, columns=columns).to_pandas()


def to_dask(root, schema: str, *, symbols=None, instruments=None, start=None, end=None,
            columns=None):
    """A Dask DataFrame of the rows :meth:`TickStore.read` gives, one partition per day."""
    import dask.dataframe as dd
    s = TickStore(root, writer=False)
    meta = s.read(schema, instruments=[], columns=columns).to_pandas()
    days = _days(s, schema, symbols, instruments, start, end)
    if not days:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(read_day, days, root=str(root), schema=schema, symbols=symbols,
                       instruments=instruments, start=start, end=end, columns=columns,
                       meta=meta, enforce_metadata=False)


def features_day(date: str, *, root, bar: str, symbols=None, instruments=None, start=None,
                 end=None):
    """``kernels.features.compute`` over one stored day of ``mbo`` (a book per day, from that
    day's events), as pandas."""
    from kernels.features import compute
    lo, hi = _bounds(date, start, end)
    mbo = TickStore(root, writer=False).read("mbo", symbols=symbols, instruments=instruments,
                                             start=lo, end=hi)
    return compute(mbo, bar=bar, device="cpu").to_pandas()


def features(root, *, bar: str = "1min", symbols=None, instruments=None, start=None, end=None):
    """Bar features for every stored day of ``mbo`` (or those asked for), one Dask partition a
    day; ``.compute()`` on any Dask client runs it."""
    import dask.dataframe as dd

    from kernels.features import compute
    from normalize.records import arrow_schema
    meta = compute(arrow_schema("mbo").empty_table(), bar=bar, device="cpu").to_pandas()
    days = _days(TickStore(root, writer=False), "mbo", symbols, instruments, start, end)
    if not days:
        return dd.from_pandas(meta, npartitions=1)
    return dd.from_map(features_day, days, root=str(root), bar=bar, symbols=symbols,
                       instruments=instruments, start=start, end=end, meta=meta,
                       enforce_metadata=False)
