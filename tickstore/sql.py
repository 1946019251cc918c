"""SQL over the tick store with DuckDB: each schema is a view over its committed files.

The views read the same Parquet files as every other reader, chosen from the catalog (so a
writer's uncommitted or replaced files are never seen). Timestamps are DuckDB
``TIMESTAMPTZ_NS``: nanoseconds kept exact; ``epoch_ns(ts_event)`` gives the integer.
Fixed-width text fields (``symbol``, ``mpid``, ``reason``) are shown as trimmed ``VARCHAR``.
The session time zone is UTC (``CAST(ts_event AS DATE)`` is the partition's day).
``symbols`` is a view of the symbol map: ``(date DATE, symbol VARCHAR, instrument_id
UINTEGER)`` from the stored ``definitions``.
"""

from __future__ import annotations

import pyarrow as pa

from normalize.records import RECORD_TYPES, arrow_schema
from tickstore.store import StoreError


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _select(schema: str) -> str:
    text = [f.name for f in arrow_schema(schema) if pa.types.is_fixed_size_binary(f.type)]
    if not text:
        return "*"
    repl = ", ".join(f"rtrim(decode({c}), ' ' || chr(0)) AS {c}" for c in text)
    return f"* REPLACE ({repl})"


def connect(store):
    """A DuckDB connection with the store's views as of now (the caller holds the store's
    readers' lock for as long as it queries, see ``TickStore.reading``)."""
    import duckdb
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")           # dates and casts of timestamps are UTC days
    for schema in RECORD_TYPES:
        files = [str(store.root / e.path) for e in store._live(schema)]
        if files:
            src = f"read_parquet([{', '.join(map(_quote, files))}], hive_partitioning = false)"
        else:
            con.register(f"_empty_{schema}", arrow_schema(schema).empty_table())
            src = f"_empty_{schema}"
        con.execute(f"CREATE VIEW {schema} AS SELECT {_select(schema)} FROM {src}")
    smap = store.symbol_map()
    rows = [(d, s, i) for d, m in sorted(smap.items()) for s, i in sorted(m.items())]
    sym = pa.table({"date": pa.array([r[0] for r in rows], pa.string()).cast(pa.date32()),
                    "symbol": pa.array([r[1] for r in rows], pa.string()),
                    "instrument_id": pa.array([r[2] for r in rows], pa.uint32())})
    con.register("_symbols", sym)
    con.execute("CREATE VIEW symbols AS SELECT * FROM _symbols")
    return con



def run_sql(con, query: str, params=None) -> pa.Table:
    """``query`` on a connection from :func:`connect`, as an Arrow table."""
    import duckdb
    try:
        rel = con.sql(query, params=params)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as e:
        raise StoreError(f"The SQL query failed: {e}") from e
