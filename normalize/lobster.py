"""LOBSTER importer: message (and orderbook) CSV files to ``mbo`` events.

LOBSTER (lobsterdata.com) reconstructs NASDAQ books from TotalView-ITCH and ships two CSV files
per symbol and day, neither with a header:

* message file, one event per line: ``time`` (seconds after midnight, America/New_York, decimal
  to the nanosecond), ``type``, ``order_id``, ``size``, ``price`` (dollars x 10,000),
  ``direction`` (1 buy, -1 sell; for executions the side of the resting order). Some exports add
  a seventh column, the MPID attribution (read into ``mpid``).
* orderbook file: row i is the book after message i; per level k ``ask_price_k, ask_size_k,
  bid_price_k, bid_size_k``; an empty level is price 9999999999 (ask) / -9999999999 (bid), size 0.

Mapping to ``mbo`` (docs/records.md):

====  ======================  ===========================================================
type  LOBSTER                 mbo
====  ======================  ===========================================================
1     submission              ``ACTION_ADD``: side, price, size (MPID: ``mpid``, F_MPID)
2     partial cancellation    ``ACTION_CANCEL``: size cancelled; price, side from the message
3     deletion                ``ACTION_DELETE``: size deleted; price, side from the message
4     visible execution       ``ACTION_EXECUTE``: size, price, resting side;
                              ``F_PRINTABLE | F_WITH_PRICE``
5     hidden execution        ``ACTION_TRADE`` (no book change): side, price, size;
                              ``F_PRINTABLE``
6     cross trade             ``ACTION_CROSS`` (no book change): price, size, side ``N``,
                              ``F_PRINTABLE``, ``cross_type`` from the order id (below)
7     trading halt            nothing in ``mbo``: see :func:`read_lobster_status`
====  ======================  ===========================================================

Decisions:

* **Halts** (type 7) have no ``mbo`` action. :func:`read_lobster` skips them and records how
  many in the table's schema metadata (``tickpipe.lobster.halts``);
  :func:`read_lobster_status` returns them as ``status`` rows shaped like ITCH ``H`` (trading
  action): ``msg_type`` 'H', ``code`` 'H' (halt, price -1), 'Q' (quoting resumes, price 0) or
  'T' (trading resumes, price 1), the symbol space-padded, ``reason`` empty.
* **Order ids** are kept when >= 0 (hidden executions carry 0, as ITCH ``P`` does). Negative ids
  become 0. For cross trades they are LOBSTER's documented cross kind and set ``cross_type``:
  -1 opening cross 'O', -2 closing cross 'C'; -3 and -4 (IPO, halt, intraday crosses, not told
  apart by LOBSTER) leave ``cross_type`` 0. For any other type a negative id also sets
  ``F_UNKNOWN_ORDER``.
* **Snapshot**: with ``orderbook_csv`` the first book row (the book after the first message)
  becomes an ``ACTION_CLEAR`` followed by one ``ACTION_ADD`` per non-empty level, all
  ``F_SNAPSHOT``, ``sequence`` 0, at the first message's time; the first message itself is then
  not emitted (the row already holds it). Each level is one synthetic order with id
  ``SNAPSHOT_ORDER_ID_BASE + 2 * (k - 1)`` (ask level k) or ``... + 2 * (k - 1) + 1`` (bid level
  k). LOBSTER ids are non-negative int64, below 2**63, so they cannot collide.
* ``sequence`` is the 1-based line number of the message, ``ts_recv`` unknown, ``channel`` 0,
  ``match_id`` 0 (LOBSTER has no match numbers).

Times are parsed exactly from the text (integer seconds, fraction padded or truncated to nine
digits), never through a float, and converted to UTC with :func:`normalize.clock.session_clock`.
Parsing is vectorized: Arrow's CSV reader, one compiled pass over the time text, then NumPy.
Only a malformed file is walked line by line, to name the faulty line in the
:class:`~tickpipe.errors.DecodeError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from normalize import records as R
from normalize.clock import parse_date, session_clock
from tickpipe.errors import DecodeError

__all__ = ["read_lobster", "read_lobster_status", "read_lobster_book", "SNAPSHOT_ORDER_ID_BASE"]

LOBSTER_PRICE_TO_NANO = R.PRICE4_TO_NANO     # dollars x 10,000 -> 1e-9 units
EMPTY_ASK_PRICE = 9_999_999_999              # orderbook file: no order at this ask level
EMPTY_BID_PRICE = -9_999_999_999             # orderbook file: no order at this bid level
SNAPSHOT_ORDER_ID_BASE = 1 << 63             # synthetic snapshot orders: base + 2(k-1) [+1 bid]
MAX_PRICE = np.iinfo(np.int64).max // LOBSTER_PRICE_TO_NANO   # largest price that scales exactly
MAX_SECONDS = 86_400                         # times are within the session's day

TYPE_SUBMIT, TYPE_CANCEL, TYPE_DELETE, TYPE_EXECUTE, TYPE_HIDDEN, TYPE_CROSS, TYPE_HALT = range(1, 8)

MESSAGE_COLUMNS = ("time", "type", "order_id", "size", "price", "direction")
BOOK_FIELDS = ("ask_px", "ask_sz", "bid_px", "bid_sz")    # per level, in file order

# per LOBSTER type (index 0 unused): mbo action and flags
_ACTION = np.array([0, R.ACTION_ADD, R.ACTION_CANCEL, R.ACTION_DELETE, R.ACTION_EXECUTE,
                    R.ACTION_TRADE, R.ACTION_CROSS, 0], np.uint8)
_FLAGS = np.array([0, 0, 0, 0, R.F_PRINTABLE | R.F_WITH_PRICE, R.F_PRINTABLE, R.F_PRINTABLE, 0],
                  np.uint8)
#: cross trades: LOBSTER's negative order id -> ITCH cross type
CROSS_TYPES = {-1: ord("O"), -2: ord("C")}
#: halts: LOBSTER's price field -> ITCH trading state
HALT_STATES = {-1: ord("H"), 0: ord("Q"), 1: ord("T")}

_INT = re.compile(rb"-?[0-9]+\Z")
_TIME = re.compile(rb"[0-9]+(\.[0-9]+)?\Z")


# -- input and faults -------------------------------------------------------------------------

def _load(path) -> tuple[str, bytes]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"The LOBSTER file must be a path, was {type(path).__name__}.")
    return str(path), Path(path).read_bytes()


def _line_start(data: bytes, row: int) -> int:
    """Byte offset of 0-based line ``row``."""
    nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    return 0 if row == 0 else int(nl[row - 1]) + 1


def _fault(name: str, data: bytes, row: int, reason: str) -> DecodeError:
    """A DecodeError for 0-based line ``row``: the reason names the 1-based line number."""
    err = DecodeError(f"{reason} on line {row + 1}", path=name, offset=_line_start(data, row),
                      index=row)
    err.line = row + 1
    return err


def _lines(data: bytes):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()                     # the newline that ends the last line
    for i, line in enumerate(lines):
        yield i, line[:-1] if line.endswith(b"\r") else line


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return (data if end < 0 else data[:end]).rstrip(b"\r")


def _field_count(data: bytes) -> int:
    first = _first_line(data)
    return first.count(b",") + 1 if first else 0


def _text(field) -> str:
    return (field.decode("utf-8", "replace") if isinstance(field, bytes) else field)[:40]


def _time_ok(field: bytes) -> bool:
    whole = field.split(b".", 1)[0]
    return bool(_TIME.match(field)) and len(whole) <= 5 and int(whole) < MAX_SECONDS


def _bad_time(text) -> str:
    return f"field 1 (time) is not a decimal number of seconds below {MAX_SECONDS}: {_text(text)!r}"


def _bad_mpid(text) -> str:
    return f"MPID {_text(text)!r} is not 0 to 4 ASCII characters"


def _locate(name: str, data: bytes, kinds: tuple[str, ...], arrow_error: Exception) -> DecodeError:
    """Walk the lines to find the one the vectorized parser refused (the error path only)."""
    for i, line in _lines(data):
        fields = line.split(b",")
        if len(fields) != len(kinds):
            return _fault(name, data, i, f"expected {len(kinds)} comma-separated fields, got "
                          f"{len(fields) if line else 0}")
        for col, (kind, f) in enumerate(zip(kinds, fields)):
            if kind == "time" and not _time_ok(f):
                return _fault(name, data, i, _bad_time(f))
            if kind == "str" and not (f.isascii() and len(f) <= 4):
                return _fault(name, data, i, _bad_mpid(f))
            if kind == "int":
                if not _INT.match(f):
                    return _fault(name, data, i, f"field {col + 1} is not an integer: {_text(f)!r}")
                if not -(1 << 63) <= int(f) < (1 << 63):
                    return _fault(name, data, i, f"field {col + 1} is out of the int64 range: "
                                  f"{_text(f)!r}")
    return DecodeError(f"unreadable LOBSTER CSV: {arrow_error}", path=name)


def _read_csv(name: str, data: bytes, kinds: tuple[str, ...], include: int | None = None) -> pa.Table:
    """Parse ``data`` (no header) with one column per entry of ``kinds``: 'time' and 'str'
    columns as strings, 'int' columns as int64. Nothing is null: an empty number is an error."""
    names = [f"f{i}" for i in range(len(kinds))]
    types = {n: (pa.int64() if k == "int" else pa.string()) for n, k in zip(names, kinds)}
    try:
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=",", quote_char=False, escape_char=False,
                                             newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, null_values=[], strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                include_columns=None if include is None else names[:include]))
    except pa.ArrowInvalid as exc:
        raise _locate(name, data, kinds, exc) from None


def _first_bad(checks) -> tuple[int, str] | None:
    """The earliest row any check flags, with that check's reason (``checks``: (mask, why(row)))."""
    best = None
    for mask, why in checks:
        hit = np.flatnonzero(mask)
        if hit.size and (best is None or hit[0] < best[0]):
            best = (int(hit[0]), why)
    return None if best is None else (best[0], best[1](best[0]))


def _col(table: pa.Table, i: int) -> np.ndarray:
    return table.column(i).to_numpy()


# -- exact time parsing -----------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _seconds_to_ns(chars, offs, ns, bad):
    """Decimal seconds text (Arrow string buffers) to int64 nanoseconds since midnight, exactly.

    Row i is ``chars[offs[i]:offs[i + 1]]``: digits, at most one '.', at least one digit on
    each side of it, fewer than :data:`MAX_SECONDS` seconds. The fraction is padded or
    truncated to nine digits. A row that breaks a rule gets ``bad[i] = True`` and ``ns[i] = 0``.
    """
    for i in range(ns.shape[0]):
        secs = np.int64(0)
        frac = np.int64(0)
        n_int = 0
        n_frac = 0
        n_frac_all = 0
        dot = False
        ok = offs[i + 1] > offs[i]
        for p in range(offs[i], offs[i + 1]):
            d = np.int64(chars[p]) - 48
            if 0 <= d <= 9:
                if dot:
                    if n_frac < 9:
                        frac = frac * 10 + d
                        n_frac += 1
                    n_frac_all += 1
                else:
                    if n_int < 6:
                        secs = secs * 10 + d
                    n_int += 1
            elif d == -2 and not dot and n_int > 0:     # '.'
                dot = True
            else:
                ok = False
                break
        if n_int == 0 or n_int > 5 or secs >= MAX_SECONDS or (dot and n_frac_all == 0):
            ok = False
        while n_frac < 9:
            frac *= 10
            n_frac += 1
        ns[i] = secs * 1_000_000_000 + frac if ok else 0
        bad[i] = not ok


def _parse_seconds(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string column of decimal seconds to (int64 nanoseconds, mask of malformed rows)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    offs = np.frombuffer(arr.buffers()[1], np.int32, count=n + 1, offset=arr.offset * 4)
    raw = arr.buffers()[2]
    chars = np.frombuffer(raw, np.uint8) if raw is not None and raw.size else np.zeros(1, np.uint8)
    ns = np.empty(n, np.int64)
    bad = np.empty(n, np.bool_)
    _seconds_to_ns(chars, offs, ns, bad)
    return ns, bad


# -- message file -----------------------------------------------------------------------------

def _read_messages(path) -> tuple[str, bytes, dict[str, np.ndarray] | None]:
    """Parse and check a message file: the columns as arrays (None when the file is empty)."""
    name, data = _load(path)
    if not data or data.isspace():
        return name, data, None
    nf = _field_count(data)
    if nf not in (6, 7):
        raise _fault(name, data, 0, f"expected 6 or 7 comma-separated fields (LOBSTER message "
                     f"file, 7 with MPID), got {nf}")
    kinds = ("time", "int", "int", "int", "int", "int") + (("str",) if nf == 7 else ())
    t = _read_csv(name, data, kinds)
    ns, bad_time = _parse_seconds(t.column(0))
    m = {c: _col(t, i) for i, c in enumerate(MESSAGE_COLUMNS) if i}
    m["ns"] = ns
    typ, price, size, direction = m["type"], m["price"], m["size"], m["direction"]
    trade = (typ >= TYPE_SUBMIT) & (typ <= TYPE_CROSS)
    halt = typ == TYPE_HALT
    times = t.column(0)
    checks = [
        (bad_time, lambda i: _bad_time(times[i].as_py())),
        (~(trade | halt), lambda i: f"unknown LOBSTER event type {typ[i]} (valid: 1 to 7)"),
        (trade & (direction != 1) & (direction != -1),
         lambda i: f"direction {direction[i]} is not 1 (buy) or -1 (sell)"),
        (trade & (size < 0), lambda i: f"negative size {size[i]}"),
        (trade & ((price < 0) | (price > MAX_PRICE)),
         lambda i: f"price {price[i]} is outside 0..{MAX_PRICE} (dollars x 10,000)"),
        (halt & ~np.isin(price, list(HALT_STATES)),
         lambda i: f"trading halt (type 7) with price {price[i]}: expected -1 (halt), "
                   f"0 (quoting resumes) or 1 (trading resumes)"),
    ]
    if nf == 7:
        mp = t.column(6).combine_chunks()
        mp_len = pc.binary_length(mp).to_numpy()
        mp_ascii = pc.string_is_ascii(mp).to_numpy(zero_copy_only=False)
        checks.append((~mp_ascii | (mp_len > 4),
                       lambda i: _bad_mpid(mp[i].as_py())))
    bad = _first_bad(checks)
    if bad is not None:
        raise _fault(name, data, bad[0], bad[1])
    if nf == 7:                         # now known to be 0..4 ASCII bytes each: pad to 4
        padded = pc.utf8_rpad(mp, 4, " ")
        offs = np.frombuffer(padded.buffers()[1], np.int32, count=len(padded) + 1,
                             offset=padded.offset * 4)
        body = np.frombuffer(padded.buffers()[2], np.uint8)
        m["mpid"] = body[offs[0]:offs[-1]].reshape(-1, 4)
        m["has_mpid"] = mp_len > 0
    return name, data, m


def _check_args(date, symbol, instrument_id):
    if date is None:
        raise ValueError("The `date` is required for LOBSTER files (their times are seconds "
                         "after midnight, New York time), was None. Use 'YYYY-MM-DD'.")
    clock = session_clock(parse_date(date))
    if (not isinstance(symbol, str) or not 0 < len(symbol) <= 8 or not symbol.isascii()
            or not symbol.isprintable() or " " in symbol):
        raise ValueError(f"The `symbol` was not 1 to 8 ASCII characters without spaces, "
                         f"was {symbol!r}.")
    if (isinstance(instrument_id, bool) or not isinstance(instrument_id, (int, np.integer))
            or not 0 <= int(instrument_id) < 1 << 32):
        raise ValueError(f"The `instrument_id` was not an integer in 0..{(1 << 32) - 1}, "
                         f"was {instrument_id!r}.")
    return clock


def _metadata(schema: str, symbol: str, date, **extra) -> dict[str, str]:
    sch = R.arrow_schema(schema)
    meta = {k.decode(): v.decode() for k, v in sch.metadata.items()}
    meta.update({"tickpipe.source": "lobster", "tickpipe.symbol": symbol,
                 "tickpipe.date": parse_date(date).isoformat()})
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def _table(schema: str, cols, meta: dict[str, str]) -> pa.Table:
    table = pa.Table.from_batches([R.columns_to_arrow(schema, cols)])
    return table.replace_schema_metadata(meta)


def read_lobster(message_csv, *, orderbook_csv=None, date, symbol: str,
                 instrument_id: int = 1) -> pa.Table:
    """A LOBSTER message file (and optionally its orderbook file) as ``mbo`` events.

    Parameters
    ----------
    message_csv : path
        The message file (6 columns, or 7 with an MPID column).
    orderbook_csv : path, optional
        Its orderbook file. When given, the first book row seeds the book: an ``ACTION_CLEAR``
        and one ``ACTION_ADD`` per non-empty level (``F_SNAPSHOT``, sequence 0, synthetic order
        ids from :data:`SNAPSHOT_ORDER_ID_BASE`), then the events from the second message on.
        Without it every message is converted.
    date : date or 'YYYY-MM-DD'
        The session date (required): the file's times are seconds after midnight in New York.
    symbol : str
        The instrument's symbol, kept in the schema metadata (``tickpipe.symbol``).
    instrument_id : int
        The ``instrument_id`` of every event.

    Returns
    -------
    pyarrow.Table with the ``mbo`` schema (:func:`normalize.records.arrow_schema`); its metadata
    adds ``tickpipe.source`` ('lobster'), ``tickpipe.symbol``, ``tickpipe.date`` and
    ``tickpipe.lobster.halts`` (type 7 messages skipped: see :func:`read_lobster_status`).

    Raises
    ------
    DecodeError
        A malformed line (field count, non-numeric field, unknown type, bad direction, time,
        price or MPID), naming the file, the 1-based line number (``err.line``; ``err.index`` is
        the 0-based line) and its byte offset.
    ValueError
        ``date``, ``symbol`` or ``instrument_id`` missing or invalid.
    """
    clock = _check_args(date, symbol, instrument_id)
    name, data, m = _read_messages(message_csv)
    meta = _metadata("mbo", symbol, date, **{"tickpipe.lobster.halts": 0})
    if m is None:
        return R.empty_table("mbo").replace_schema_metadata(meta)
    meta["tickpipe.lobster.halts"] = str(int(np.count_nonzero(m["type"] == TYPE_HALT)))

    rows = np.flatnonzero(m["type"] != TYPE_HALT)
    snap = None
    if orderbook_csv is not None:
        rows = rows[rows > 0]           # the first book row already holds message 1
        snap = _snapshot_rows(orderbook_csv)
    n_snap = 0 if snap is None else 1 + snap["price"].size
    n = n_snap + rows.size
    c = R.alloc_columns("mbo", n, zero=True)
    ts = clock.to_utc(m["ns"])
    c.ts_recv[:] = R.UNDEF_TIMESTAMP
    c.instrument_id[:] = instrument_id

    if snap is not None:
        c.ts_event[:n_snap] = ts[0]
        c.action[0] = R.ACTION_CLEAR
        c.side[0] = R.SIDE_NONE
        c.price[0] = R.UNDEF_PRICE
        c.action[1:n_snap] = R.ACTION_ADD
        c.order_id[1:n_snap] = snap["order_id"]
        c.side[1:n_snap] = snap["side"]
        c.price[1:n_snap] = snap["price"]
        c.size[1:n_snap] = snap["size"]
        c.flags[:n_snap] = R.F_SNAPSHOT

    e = slice(n_snap, n)
    typ = m["type"][rows]
    oid = m["order_id"][rows]
    neg = oid < 0
    cross = typ == TYPE_CROSS
    flags = _FLAGS[typ] | np.where(neg & ~cross, R.F_UNKNOWN_ORDER, 0).astype(np.uint8)
    c.ts_event[e] = ts[rows]
    c.sequence[e] = rows + 1
    c.order_id[e] = np.where(neg, 0, oid)
    c.price[e] = m["price"][rows] * LOBSTER_PRICE_TO_NANO
    c.size[e] = m["size"][rows]
    c.action[e] = _ACTION[typ]
    c.side[e] = np.where(cross, R.SIDE_NONE,
                         np.where(m["direction"][rows] == 1, R.SIDE_BID, R.SIDE_ASK))
    ct = np.zeros(rows.size, np.uint8)
    for lob_id, code in CROSS_TYPES.items():
        ct[cross & (oid == lob_id)] = code
    c.cross_type[e] = ct
    if "mpid" in m:
        c.mpid[e] = m["mpid"][rows]
        flags |= np.where((typ == TYPE_SUBMIT) & m["has_mpid"][rows], R.F_MPID, 0).astype(np.uint8)
    c.flags[e] = flags
    return _table("mbo", c, meta)


def read_lobster_status(message_csv, *, date, symbol: str, instrument_id: int = 1) -> pa.Table:
    """The trading halts (type 7) of a LOBSTER message file as ``status`` rows.

    One row per type 7 message, shaped like an ITCH ``H`` (trading action): ``msg_type`` 'H',
    ``code`` 'H' (halted; LOBSTER price -1), 'Q' (quoting resumes; price 0) or 'T' (trading
    resumes; price 1), ``symbol`` space-padded to 8, ``sequence`` the 1-based line number,
    ``reason`` empty (LOBSTER gives none), prices undefined. Errors as :func:`read_lobster`.
    """
    clock = _check_args(date, symbol, instrument_id)
    name, data, m = _read_messages(message_csv)
    meta = _metadata("status", symbol, date)
    if m is None:
        return R.empty_table("status").replace_schema_metadata(meta)
    rows = np.flatnonzero(m["type"] == TYPE_HALT)
    c = R.alloc_columns("status", rows.size, zero=True)
    c.ts_event[:] = clock.to_utc(m["ns"][rows])
    c.ts_recv[:] = R.UNDEF_TIMESTAMP
    c.sequence[:] = rows + 1
    c.price_1[:] = R.UNDEF_PRICE
    c.price_2[:] = R.UNDEF_PRICE
    c.price_3[:] = R.UNDEF_PRICE
    c.instrument_id[:] = instrument_id
    c.msg_type[:] = ord("H")
    code = np.zeros(rows.size, np.uint8)
    for lob_price, state in HALT_STATES.items():
        code[m["price"][rows] == lob_price] = state
    c.code[:] = code
    c.symbol[:] = np.frombuffer(symbol.encode("ascii").ljust(8), np.uint8)
    return _table("status", c, meta)


# -- orderbook file ---------------------------------------------------------------------------

def _parse_book(name: str, data: bytes, levels: int | None) -> dict[str, np.ndarray]:
    nf = _field_count(data)
    if nf == 0 or nf % 4:
        raise _fault(name, data, 0, f"expected 4 fields per level (ask price, ask size, bid "
                     f"price, bid size) in a LOBSTER orderbook file, got {nf}")
    have = nf // 4
    if levels is None:
        levels = have
    elif (isinstance(levels, bool) or not isinstance(levels, (int, np.integer))
          or not 1 <= levels <= have):
        raise ValueError(f"The `levels` was not a level count in 1..{have} (the file's depth), "
                         f"was {levels!r}.")
    t = _read_csv(name, data, ("int",) * nf, include=4 * levels)
    n = t.num_rows
    out = {}
    for j, field in enumerate(BOOK_FIELDS):
        out[field] = (np.column_stack([_col(t, 4 * k + j) for k in range(levels)])
                      if n else np.zeros((0, levels), np.int64))
    checks = []
    for side, empty in (("ask", EMPTY_ASK_PRICE), ("bid", EMPTY_BID_PRICE)):
        px, sz = out[f"{side}_px"], out[f"{side}_sz"]
        hole = px == empty
        checks += [
            ((sz < 0).any(1), lambda i, sz=sz, side=side: f"negative {side} size {sz[i].min()}"),
            ((hole & (sz != 0)).any(1),
             lambda i, side=side, empty=empty: f"empty {side} level (price {empty}) with a "
                                               f"non-zero size"),
            ((~hole & ((px < 0) | (px > MAX_PRICE))).any(1),
             lambda i, side=side, empty=empty: f"{side} price outside 0..{MAX_PRICE} (dollars x 10,000) "
                                         f"and not the empty-level {empty}"),
        ]
        out[f"{side}_px"] = np.where(hole, R.UNDEF_PRICE, px * LOBSTER_PRICE_TO_NANO)
        out[f"{side}_sz"] = np.where(hole, 0, sz)
    bad = _first_bad(checks)
    if bad is not None:
        raise _fault(name, data, bad[0], bad[1])
    return out


def read_lobster_book(orderbook_csv, levels: int | None = None) -> dict[str, np.ndarray]:
    """A LOBSTER orderbook file as arrays: ``ask_px``, ``ask_sz``, ``bid_px``, ``bid_sz``.

    Each is ``(n_rows, levels)`` int64, row i the book after message i, column k level k + 1;
    prices in 1e-9 units (:data:`normalize.records.PRICE_SCALE`), an empty level as
    :data:`normalize.records.UNDEF_PRICE` with size 0. ``levels`` (default: all the file has)
    keeps the first levels only. A malformed line raises DecodeError naming file and line.
    """
    name, data = _load(orderbook_csv)
    if not data or data.isspace():
        n = levels or 0
        return {f: np.zeros((0, n), np.int64) for f in BOOK_FIELDS}
    return _parse_book(name, data, levels)


def _snapshot_rows(orderbook_csv) -> dict[str, np.ndarray]:
    """The first orderbook row as one synthetic order per non-empty level (ask_1, bid_1, ...)."""
    name, data = _load(orderbook_csv)
    first = _first_line(data)
    if not first.strip():
        raise _fault(name, data, 0, "no book row to seed the snapshot (empty first line)")
    book = _parse_book(name, first, None)
    levels = book["ask_px"].shape[1]
    k = np.arange(levels)
    ids = np.stack([SNAPSHOT_ORDER_ID_BASE + 2 * k.astype(np.uint64),
                    SNAPSHOT_ORDER_ID_BASE + 2 * k.astype(np.uint64) + 1], axis=1).reshape(-1)
    px = np.stack([book["ask_px"][0], book["bid_px"][0]], axis=1).reshape(-1)
    sz = np.stack([book["ask_sz"][0], book["bid_sz"][0]], axis=1).reshape(-1)
    side = np.tile(np.array([R.SIDE_ASK, R.SIDE_BID], np.uint8), levels)
    live = (px != R.UNDEF_PRICE) & (sz > 0)
    return {"order_id": ids[live], "price": px[live], "size": sz[live], "side": side[live]}
