"""Normalized record layouts, declared once as little-endian NumPy dtypes.

Everything else derives from these declarations: the Arrow schemas (:func:`arrow_schema`), the
Parquet schemas written by the tick store, the Aeron wire format and the GPU column lists.
``tests/normalize/test_layouts.py`` pins every size and offset.

Conventions (see docs/records.md):

* prices are ``int64`` fixed point, 1 unit = 1e-9 (:data:`PRICE_SCALE`); ITCH ``Price(4)`` is
  multiplied by :data:`PRICE4_TO_NANO`, ``Price(8)`` by :data:`PRICE8_TO_NANO`; a missing price
  is :data:`UNDEF_PRICE`;
* timestamps are ``uint64`` nanoseconds since the UNIX epoch, UTC; an unknown one is
  :data:`UNDEF_TIMESTAMP`. ``ts_event`` is the exchange time, ``ts_recv`` the capture time;
* ``instrument_id`` is the ITCH stock locate of the session day; ``definitions`` maps it to the
  symbol. ``sequence`` is the MoldUDP64 sequence number (BinaryFILE: the 1-based message number
  in the file) and ``channel`` the feed channel the message came on.
"""

from __future__ import annotations

import functools
from collections import namedtuple

import numba
import numpy as np
import pyarrow as pa

from normalize import arena as _arena

PRICE_SCALE = 1_000_000_000          # units per 1.0 of currency
PRICE4_TO_NANO = 100_000             # ITCH Price(4) -> 1e-9 units
PRICE8_TO_NANO = 10                  # ITCH Price(8) -> 1e-9 units
UNDEF_PRICE = np.iinfo(np.int64).max
UNDEF_TIMESTAMP = np.iinfo(np.uint64).max

# -- mbo actions (ASCII) -----------------------------------------------------------------------
ACTION_ADD = ord("A")        # A, F
ACTION_EXECUTE = ord("E")    # E, C: execution of a visible resting order
ACTION_CANCEL = ord("C")     # X: partial cancel (size = shares cancelled)
ACTION_DELETE = ord("D")     # D: the order leaves the book
ACTION_REPLACE = ord("U")    # U: order_id leaves, new_order_id enters at price/size (new queue place)
ACTION_TRADE = ord("P")      # P: execution of a non-displayed order; no book change
ACTION_CROSS = ord("Q")      # Q: cross trade; no book change
ACTION_BROKEN = ord("B")     # B: a trade (match_id) was broken
ACTION_CLEAR = ord("R")      # book clear (snapshots and importers; ITCH itself sends none)

SIDE_BID = ord("B")
SIDE_ASK = ord("S")
SIDE_NONE = ord("N")

# -- mbo flags ---------------------------------------------------------------------------------
F_MPID = 0x01            # add carried an MPID attribution (message F)
F_WITH_PRICE = 0x02      # execution carried its own price (message C)
F_PRINTABLE = 0x04       # execution / trade is printable (counts toward volume)
F_RESOLVED = 0x08        # price and/or side came from the order map, not from this message
F_UNKNOWN_ORDER = 0x10   # the order reference was not live in the order map
F_SNAPSHOT = 0x20        # synthetic event that seeds a book from a snapshot
F_LAST = 0x40            # last message of its MoldUDP64 packet (or of the file)
F_BAD = 0x80             # inconsistent with the order map (e.g. executes more than remains)

MBO = np.dtype([
    ("ts_event", "<u8"),
    ("ts_recv", "<u8"),
    ("sequence", "<u8"),
    ("order_id", "<u8"),        # ITCH order reference number (replace: the original)
    ("new_order_id", "<u8"),    # replace: the new reference number, else 0
    ("match_id", "<u8"),        # executions and trades: the match number, else 0
    ("price", "<i8"),           # 1e-9; add/replace/trade: message price; E/X/D: resolved
    ("size", "<u8"),            # shares added / executed / cancelled / new size / traded
    ("instrument_id", "<u4"),
    ("channel", "<u2"),
    ("tracking", "<u2"),
    ("action", "u1"),
    ("side", "u1"),
    ("flags", "u1"),
    ("cross_type", "u1"),       # Q: ITCH cross type, else 0
    ("mpid", "S4"),             # F: attribution, else empty
])

TRADES = np.dtype([
    ("ts_event", "<u8"),
    ("ts_recv", "<u8"),
    ("sequence", "<u8"),
    ("match_id", "<u8"),
    ("order_id", "<u8"),        # resting order (E/C), ITCH's P reference (0 today), 0 for Q
    ("price", "<i8"),
    ("size", "<u8"),
    ("instrument_id", "<u4"),
    ("channel", "<u2"),
    ("kind", "u1"),             # source message: E, C, P, Q, or B for a broken trade
    ("side", "u1"),             # side of the resting order (B/S); aggressor is the other; N unknown
    ("printable", "u1"),        # 1 when the execution prints (E, P, Q always; C per message)
    ("cross_type", "u1"),
    ("_pad", "u1", (6,)),
])

DEFINITIONS = np.dtype([
    ("ts_event", "<u8"),
    ("sequence", "<u8"),
    ("round_lot_size", "<u4"),
    ("etp_leverage_factor", "<u4"),
    ("instrument_id", "<u4"),
    ("channel", "<u2"),
    ("symbol", "S8"),
    ("market_category", "S1"),
    ("financial_status", "S1"),
    ("round_lots_only", "S1"),
    ("issue_classification", "S1"),
    ("issue_subtype", "S2"),
    ("authenticity", "S1"),
    ("short_sale_threshold", "S1"),
    ("ipo_flag", "S1"),
    ("luld_tier", "S1"),
    ("etp_flag", "S1"),
    ("inverse", "S1"),
    ("_pad", "u1", (6,)),
])

# status covers S (system event), H (trading action), Y (Reg SHO), L (market participant
# position), V (MWCB levels), W (MWCB status), K (IPO quoting), J (LULD collar), h (operational
# halt). ``code`` holds the message's main code (event code, trading state, Reg SHO action,
# breached level, IPO qualifier, halt action, primary market maker), ``code2``/``code3`` the
# others (L: mode, state; h: market code).
STATUS = np.dtype([
    ("ts_event", "<u8"),
    ("ts_recv", "<u8"),
    ("sequence", "<u8"),
    ("price_1", "<i8"),         # V level 1, K IPO price, J reference price
    ("price_2", "<i8"),         # V level 2, J upper collar
    ("price_3", "<i8"),         # V level 3, J lower collar
    ("value", "<u8"),           # K release time (seconds since midnight), J extension count
    ("instrument_id", "<u4"),   # 0 for market-wide messages (S, V, W)
    ("channel", "<u2"),
    ("tracking", "<u2"),
    ("msg_type", "S1"),
    ("code", "S1"),
    ("code2", "S1"),
    ("code3", "S1"),
    ("reason", "S4"),           # H reason code
    ("mpid", "S4"),             # L market participant
    ("symbol", "S8"),
    ("_pad", "u1", (4,)),
])

# imbalance covers I (NOII), N (RPII) and O (DLCR price discovery).
IMBALANCE = np.dtype([
    ("ts_event", "<u8"),
    ("ts_recv", "<u8"),
    ("sequence", "<u8"),
    ("paired_shares", "<u8"),
    ("imbalance_shares", "<u8"),
    ("far_price", "<i8"),
    ("near_price", "<i8"),       # I near price; O near execution price
    ("ref_price", "<i8"),        # I current reference price
    ("min_price", "<i8"),        # O minimum allowable price
    ("max_price", "<i8"),        # O maximum allowable price
    ("lower_collar", "<i8"),     # O lower price range collar
    ("upper_collar", "<i8"),     # O upper price range collar
    ("near_exec_time", "<u8"),   # O near execution time (as sent)
    ("instrument_id", "<u4"),
    ("channel", "<u2"),
    ("tracking", "<u2"),
    ("msg_type", "S1"),
    ("imbalance_direction", "S1"),
    ("cross_type", "S1"),
    ("price_variation", "S1"),
    ("interest_flag", "S1"),     # N
    ("open_eligibility", "S1"),  # O
    ("_pad", "u1", (2,)),
])

SCHEMAS: dict[str, np.dtype] = {
    "mbo": MBO, "trades": TRADES, "definitions": DEFINITIONS, "status": STATUS,
    "imbalance": IMBALANCE,
}

# forecasts (kernels.forecast): one record per (instrument, time made, model, target, horizon).
# ``model`` and ``target`` are ASCII codes (FORECAST_MODELS, FORECAST_TARGETS); ``value`` is in
# the target's own units (variance of returns as given, spread in currency, depth in shares);
# ``status`` is the model's per-instrument status code (0: ok).
FORECASTS = np.dtype([
    ("ts_event", "<u8"),         # when the forecast was made (the last input's time)
    ("value", "<f8"),
    ("instrument_id", "<u4"),
    ("horizon", "<u2"),          # steps ahead (bars, days: the input's own step)
    ("model", "S1"),
    ("target", "S1"),
    ("status", "u1"),
    ("_pad", "u1", (7,)),
])
FORECAST_MODELS = {"E": "EWMA", "G": "GARCH(1,1), normal", "T": "GARCH(1,1), Student-t",
                   "H": "HAR", "N": "naive (last value)"}
FORECAST_TARGETS = {"V": "return variance", "S": "quoted spread", "D": "top-of-book depth",
                    "A": "Amihud illiquidity", "K": "Kyle's lambda", "I": "market impact"}

#: Every record type: the decoder's (:data:`SCHEMAS`) and those made downstream.
RECORD_TYPES: dict[str, np.dtype] = {**SCHEMAS, "forecasts": FORECASTS}

#: Columns that hold prices (1e-9 int64) and nanosecond timestamps, per schema.
PRICE_COLUMNS = {name: tuple(f for f in dt.names if dt.fields[f][0] == np.dtype("<i8")
                             and ("price" in f or f.endswith("_collar")))
                 for name, dt in SCHEMAS.items()}
TIME_COLUMNS = {name: tuple(f for f in dt.names if f.startswith("ts_")) for name, dt in SCHEMAS.items()}


def _arrow_type(schema: str, name: str, dt: np.dtype) -> pa.DataType:
    if name.startswith("ts_"):
        return pa.timestamp("ns", tz="UTC")
    if dt.kind == "S":
        return pa.binary(dt.itemsize) if dt.itemsize > 1 else pa.uint8()
    return pa.from_numpy_dtype(dt)


@functools.lru_cache(maxsize=None)
def arrow_schema(schema: str) -> pa.Schema:
    """The Arrow schema of a normalized record type, derived from its dtype.

    Timestamps become ``timestamp[ns, tz=UTC]`` (same int64 storage; :data:`UNDEF_TIMESTAMP`
    becomes null); 1-byte codes become ``uint8`` (their ASCII value); longer alpha fields
    fixed-size binary (symbols are space-padded as on the wire); padding is dropped. The
    schema metadata records the price scale and the no-price sentinel.
    """
    dt = RECORD_TYPES[schema]
    fields = [pa.field(n, _arrow_type(schema, n, dt.fields[n][0]), nullable=n.startswith("ts_"))
              for n in dt.names if not n.startswith("_")]
    meta = {"tickpipe.schema": schema, "tickpipe.price_scale": str(PRICE_SCALE),
            "tickpipe.undef_price": str(UNDEF_PRICE)}
    return pa.schema(fields, metadata=meta)


def to_arrow(schema: str, records: np.ndarray) -> pa.RecordBatch:
    """Convert an array of normalized records to an Arrow RecordBatch (one copy per column)."""
    dt = RECORD_TYPES[schema]
    if records.dtype != dt:
        raise TypeError(f"records for {schema!r} must have dtype {dt}, got {records.dtype}")
    sch = arrow_schema(schema)
    cols = []
    for f in sch:
        col = records[f.name]
        if f.name.startswith("ts_"):
            v = np.ascontiguousarray(col)
            mask = v == UNDEF_TIMESTAMP
            arr = pa.array(v.view(np.int64), type=pa.int64(), mask=mask if mask.any() else None)
            cols.append(arr.cast(f.type))
        elif col.dtype.kind == "S" and col.dtype.itemsize == 1:
            cols.append(pa.array(np.ascontiguousarray(col).view(np.uint8), type=pa.uint8()))
        elif col.dtype.kind == "S":
            buf = np.ascontiguousarray(col).tobytes()
            cols.append(pa.FixedSizeBinaryArray.from_buffers(
                f.type, len(col), [None, pa.py_buffer(buf)]))
        else:
            cols.append(pa.array(np.ascontiguousarray(col), type=f.type))
    return pa.RecordBatch.from_arrays(cols, schema=sch)


def from_arrow(schema: str, table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """The inverse of :func:`to_arrow`: Arrow columns back into normalized records."""
    dt = RECORD_TYPES[schema]
    out = np.zeros(table.num_rows, dtype=dt)
    for name in dt.names:
        if name.startswith("_"):
            continue
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        kind = dt.fields[name][0]
        if name.startswith("ts_"):
            v = col.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
            out[name] = v.view(np.uint64)
        elif kind.kind == "S" and kind.itemsize == 1:
            out[name] = col.to_numpy(zero_copy_only=False).astype(np.uint8).view("S1")
        elif kind.kind == "S":
            raw = np.frombuffer(col.buffers()[1], dtype=kind, count=len(col) + col.offset)
            out[name] = raw[col.offset:]
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


# -- columns: the same records, one array per field (what the compiled decoders write) ---------

def _column_names(dt: np.dtype) -> tuple[str, ...]:
    return tuple(n for n in dt.names if not n.startswith("_"))


#: A namedtuple class per schema, fields in declaration order (padding dropped). Compiled code
#: takes an instance as one argument and writes ``cols.price[i]``. Alpha fields are ``uint8``
#: arrays: shape ``(n,)`` for 1-byte codes, ``(n, k)`` for k-byte fields.
COLUMNS = {name: namedtuple(f"{name.capitalize()}Columns", _column_names(dt))
           for name, dt in RECORD_TYPES.items()}
# module-level names, so the classes pickle by reference (numba's on-disk cache needs that)
MboColumns = COLUMNS["mbo"]
TradesColumns = COLUMNS["trades"]
DefinitionsColumns = COLUMNS["definitions"]
StatusColumns = COLUMNS["status"]
ImbalanceColumns = COLUMNS["imbalance"]
ForecastsColumns = COLUMNS["forecasts"]


def _col_dtype(dt: np.dtype) -> tuple[np.dtype, tuple[int, ...]]:
    if dt.kind == "S":
        return np.dtype(np.uint8), (() if dt.itemsize == 1 else (dt.itemsize,))
    return dt, ()


def alloc_columns(schema: str, n: int, *, zero: bool = False):
    """Column arrays for ``n`` records of ``schema`` (uninitialised unless ``zero``).

    All columns are views into one allocation (each 64-byte aligned): one large block gets
    transparent huge pages, so filling fresh columns costs far fewer page faults, and two
    threads filling columns at once do not queue on the page-fault lock. Uninitialised arenas
    come from :mod:`normalize.arena`, which reuses the memory of dropped batches: whoever fills
    them writes every field of every row it exposes.
    """
    dt = RECORD_TYPES[schema]
    specs = []
    total = 0
    for name in COLUMNS[schema]._fields:
        cdt, extra = _col_dtype(dt.fields[name][0])
        nbytes = n * cdt.itemsize * (extra[0] if extra else 1)
        specs.append((cdt, extra, total, nbytes))
        total += (nbytes + 63) & ~63
    arena = np.zeros(total + 64, np.uint8) if zero else _arena.take(total + 64)
    base = (-arena.ctypes.data) % 64
    cols = [arena[base + off: base + off + nbytes].view(cdt).reshape((n,) + extra)
            for cdt, extra, off, nbytes in specs]
    return COLUMNS[schema](*cols)


def slice_columns(cols, stop: int):
    return type(cols)(*(c[:stop] for c in cols))


def columns_len(cols) -> int:
    return cols[0].shape[0]


@numba.njit(cache=True, nogil=True)
def _count_equal(col, value):
    n = 0
    for i in range(col.shape[0]):
        n += col[i] == value
    return n


def columns_to_arrow(schema: str, cols) -> pa.RecordBatch:
    """Wrap column arrays as an Arrow RecordBatch without copying the data buffers.

    The arrays must stay alive and unmodified while the batch is used (Arrow keeps a
    reference to them through the buffers).
    """
    sch = arrow_schema(schema)
    n = columns_len(cols)
    arrays = []
    for f, col in zip(sch, cols):
        col = np.ascontiguousarray(col)
        if f.name.startswith("ts_"):
            valid = None
            nulls = int(_count_equal(col, np.uint64(UNDEF_TIMESTAMP))) if n else 0
            if nulls == n:      # e.g. ts_recv of a file: no capture times at all
                valid = pa.py_buffer(np.zeros((n + 7) // 8, np.uint8))
            elif nulls:
                valid = pa.py_buffer(np.packbits(col != UNDEF_TIMESTAMP, bitorder="little"))
            arrays.append(pa.Array.from_buffers(f.type, n, [valid, pa.py_buffer(col)], null_count=nulls))
        elif pa.types.is_fixed_size_binary(f.type):
            arrays.append(pa.Array.from_buffers(f.type, n, [None, pa.py_buffer(col)]))
        else:
            arrays.append(pa.Array.from_buffers(f.type, n, [None, pa.py_buffer(col)]))
    return pa.RecordBatch.from_arrays(arrays, schema=sch)


def empty_table(schema: str) -> pa.Table:
    return arrow_schema(schema).empty_table()
