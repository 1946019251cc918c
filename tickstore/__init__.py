"""The tick store: Parquet + zstd partitioned by schema and day, with a crash-safe catalog.

``TickStore(root)`` appends, compacts, reads, scans, runs SQL (DuckDB), as-of joins and gives
Dask DataFrames; see :mod:`tickstore.store`.
"""

from tickstore.asof import asof_join
from tickstore.store import FileEntry, StoreError, StoreLocked, TickStore, VerifyReport

__all__ = ["TickStore", "StoreError", "StoreLocked", "FileEntry", "VerifyReport", "asof_join"]
