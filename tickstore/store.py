"""The tick store: normalized records as Parquet + zstd, partitioned by schema and day.

Layout (an open format: any Parquet reader reads the files as they are)::

    {root}/{schema}/date=YYYY-MM-DD/part-{first ts_event}-{uuid}.parquet
    {root}/_catalog/{schema}.jsonl      one line per committed file
    {root}/_lock                        held by the one writer

A file holds one schema and one UTC day of ``ts_event``, rows sorted by ``(instrument_id,
ts_event)``. Its catalog line records its rows, instrument and time ranges, size and CRC-32, so
queries choose files without opening them.

**Commit protocol.** An append writes each day's rows to ``.tmp-*`` in the partition, fsyncs
it, renames it to its final name and fsyncs the directory; then it appends one catalog line
listing all of the append's files (with the line's own CRC-32 at its end) and fsyncs the
catalog. The append is committed exactly when its line is complete, all its days or none, and
only committed files are visible. A writer killed at any
point leaves at most a temporary file, a renamed file with no line, or a torn last line. Opening
the store as a writer removes the first two and truncates the torn line. A second writer gets
:class:`StoreLocked`.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from normalize.records import RECORD_TYPES, arrow_schema
from tickpipe.durable import fsync_dir

NS_PER_DAY = 86_400 * 1_000_000_000
ROW_GROUP = 128 * 1024


class StoreError(Exception):
    """A tick store operation that cannot be done; the message names the file or argument."""


class StoreLocked(StoreError):
    """Another writer holds the store."""


@dataclass(frozen=True)
class FileEntry:
    """A committed file, as its catalog line describes it."""
    path: str                 # relative to the store's root
    schema: str
    date: str
    rows: int
    instrument_min: int
    instrument_max: int
    ts_min: int               # ns since the epoch, UTC
    ts_max: int
    bytes: int
    crc32: int

    def overlaps(self, instruments, start, end) -> bool:
        if start is not None and self.ts_max < start:
            return False
        if end is not None and self.ts_min >= end:
            return False
        if instruments is not None:
            lo = np.searchsorted(instruments, self.instrument_min)
            return lo < instruments.size and instruments[lo] <= self.instrument_max
        return True


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _line(entries: list[FileEntry]) -> str:
    """The catalog line committing ``entries`` together (one append's files)."""
    body = json.dumps([e.__dict__ for e in entries], sort_keys=True, separators=(",", ":"))
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n"


def _parse(line: str) -> list[FileEntry] | None:
    """The entries of a complete catalog line; None for a torn one."""
    if not line.endswith("\n") or "\t" not in line:
        return None
    body, crc = line[:-1].rsplit("\t", 1)
    try:
        if int(crc, 16) != zlib.crc32(body.encode()):
            return None
        return [FileEntry(**e) for e in json.loads(body)]
    except (ValueError, TypeError, KeyError):
        return None


def _ns(value, name: str) -> int | None:
    """A time argument as ns since the epoch (int ns, numpy/pandas/datetime, or ISO string)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        return int(np.datetime64(value if not isinstance(value, _dt.datetime) else
                                 value.astimezone(_dt.timezone.utc).replace(tzinfo=None), "ns")
                   .astype(np.int64))
    except (ValueError, TypeError) as e:
        raise StoreError(f"The `{name}` must be a time (ns since the epoch, a datetime or an ISO "
                         f"string), was {value!r}.") from e


class TickStore:
    """A tick store at ``root``. Readers need no lock; ``writer=True`` (the default) takes the
    store's writer lock and cleans what a killed writer left."""

    def __init__(self, root, *, writer: bool = True, zstd_level: int = 3,
                 row_group_rows: int = ROW_GROUP):
        self.root = Path(root)
        self.zstd_level = int(zstd_level)
        self.row_group_rows = int(row_group_rows)
        self._lock_fd = None
        (self.root / "_catalog").mkdir(parents=True, exist_ok=True)
        if writer:
            self._lock()
            self._recover()

    # -- writer side --------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.root / "_lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"The tick store at {self.root} has a writer already "
                              f"({self.root / '_lock'} is locked).") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recover(self) -> None:
        """Truncate torn catalog lines; remove temporary files and files no line commits."""
        committed = set()
        for cat in (self.root / "_catalog").glob("*.jsonl"):
            raw = cat.read_bytes()
            good = 0
            for line in raw.decode(errors="replace").splitlines(keepends=True):
                es = _parse(line)
                if es is None:
                    break
                committed.update(e.path for e in es)
                good += len(line.encode())
            if good != len(raw):
                with open(cat, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        for schema in RECORD_TYPES:
            for p in (self.root / schema).glob("date=*/*"):
                rel = p.relative_to(self.root).as_posix()
                if p.name.startswith(".tmp-") or (p.suffix == ".parquet" and rel not in committed):
                    p.unlink()

    def append(self, schema: str, data) -> list[FileEntry]:
        """Commit ``data`` (a table, record batch or iterable of batches with the schema's
        columns) as one new file per UTC day of ``ts_event``; returns their catalog entries."""
        if self._lock_fd is None:
            raise StoreError(f"The tick store at {self.root} was opened read-only.")
        table = self._conform(schema, data)
        if table.num_rows == 0:
            return []
        ts = table.column("ts_event").cast(pa.int64()).fill_null(-1).to_numpy()
        if np.any(ts < 0):
            raise StoreError(f"The `{schema}` rows to append have ts_event values that are null "
                             f"or before 1970 (first at row {int(np.argmax(ts < 0))}).")
        inst = table.column("instrument_id").to_numpy()
        day = ts // NS_PER_DAY
        order = np.lexsort((ts, inst, day))
        table = table.take(pa.array(order))
        ts, inst, day = ts[order], inst[order], day[order]
        cuts = np.flatnonzero(np.diff(day)) + 1
        entries = [self._write(schema, table.slice(lo, hi - lo), ts[lo:hi], inst[lo:hi],
                               int(day[lo]))
                   for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, day.size])]
        cat = self.root / "_catalog" / f"{schema}.jsonl"
        with open(cat, "a", encoding="utf-8") as f:     # the commit: one line, all the files
            f.write(_line(entries))
            f.flush()
            os.fsync(f.fileno())
        return entries

    def _conform(self, schema: str, data) -> pa.Table:
        if schema not in RECORD_TYPES:
            raise StoreError(f"Unknown schema {schema!r}; the store holds "
                             f"{', '.join(RECORD_TYPES)}.")
        want = arrow_schema(schema)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif not isinstance(data, pa.Table):
            data = pa.Table.from_batches(list(data), schema=want)
        missing = [f.name for f in want if f.name not in data.column_names]
        extra = [c for c in data.column_names if c not in want.names]
        if missing or extra:
            raise StoreError(f"The rows to append do not have the `{schema}` schema: missing "
                             f"{missing or 'none'}, unexpected {extra or 'none'}.")
        wrong = [f"{f.name} ({data.schema.field(f.name).type}, not {f.type})" for f in want
                 if not data.schema.field(f.name).type.equals(f.type)]
        if wrong:
            raise StoreError(f"The rows to append have columns of the wrong type for "
                             f"`{schema}`: {', '.join(wrong)}.")
        return data.select(want.names).replace_schema_metadata(want.metadata)

    def _write(self, schema: str, table: pa.Table, ts: np.ndarray, inst: np.ndarray,
               day: int) -> FileEntry:
        """One day's rows (sorted; ``ts``, ``inst``: their times and instruments) into a
        renamed, fsynced file; its catalog entry (not yet committed)."""
        date = (np.datetime64(day, "D")).astype(str)
        part = self.root / schema / f"date={date}"
        part.mkdir(parents=True, exist_ok=True)
        name = f"part-{int(ts.min()):019d}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = part / f".tmp-{name}"
        encodings = {c: "DELTA_BINARY_PACKED" for c in table.column_names
                     if c.startswith("ts_") or c in ("sequence", "order_id")}
        pq.write_table(table, tmp, compression="zstd", compression_level=self.zstd_level,
                       row_group_size=self.row_group_rows, write_statistics=True,
                       write_page_index=True, use_dictionary=[c for c in table.column_names
                                                              if c not in encodings],
                       column_encoding=encodings or None)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        final = part / name
        os.replace(tmp, final)
        fsync_dir(part)
        return FileEntry(path=final.relative_to(self.root).as_posix(), schema=schema,
                         date=date, rows=table.num_rows, instrument_min=int(inst.min()),
                         instrument_max=int(inst.max()), ts_min=int(ts.min()),
                         ts_max=int(ts.max()), bytes=final.stat().st_size,
                         crc32=_file_crc(final))

    # -- reader side --------------------------------------------------------------------------

    def files(self, schema: str, *, instruments=None, start=None, end=None) -> list[FileEntry]:
        """The committed files of ``schema`` that may hold rows of ``instruments`` in
        ``[start, end)``, from the catalog alone."""
        if schema not in RECORD_TYPES:
            raise StoreError(f"Unknown schema {schema!r}; the store holds "
                             f"{', '.join(RECORD_TYPES)}.")
        lo, hi = _ns(start, "start"), _ns(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise StoreError(f"The `start` ({start}) is after the `end` ({end}).")
        inst = None if instruments is None else np.unique(np.asarray(instruments, np.int64))
        cat = self.root / "_catalog" / f"{schema}.jsonl"
        out = []
        if cat.exists():
            for line in cat.read_text(encoding="utf-8", errors="replace").splitlines(True):
                es = _parse(line)
                if es is None:
                    break                      # a writer's torn line: not committed
                out += [e for e in es if e.overlaps(inst, lo, hi)]
        return out

    def read(self, schema: str, *, instruments=None, start=None, end=None,
             columns=None) -> pa.Table:
        """The rows of ``schema`` for ``instruments`` (ids; all when None) with ``ts_event`` in
        ``[start, end)``: day by day, sorted by (instrument_id, ts_event) within a day (rows
        equal in both in the order they were appended)."""
        entries = self.files(schema, instruments=instruments, start=start, end=end)
        want = arrow_schema(schema)
        cols = list(want.names) if columns is None else list(columns)
        bad = [c for c in cols if c not in want.names]
        if bad:
            raise StoreError(f"Unknown column(s) {bad} for `{schema}` (columns: "
                             f"{', '.join(want.names)}).")
        flt = None
        if instruments is not None:
            flt = pc.field("instrument_id").isin(pa.array(np.unique(instruments), pa.uint32()))
        for bound, op in ((_ns(start, "start"), "ge"), (_ns(end, "end"), "lt")):
            if bound is not None:
                s = pa.scalar(bound, pa.timestamp("ns", tz="UTC"))
                cond = pc.field("ts_event") >= s if op == "ge" else pc.field("ts_event") < s
                flt = cond if flt is None else flt & cond
        need = list(dict.fromkeys(cols + ["instrument_id", "ts_event"]))
        days: dict[str, list[pa.Table]] = {}
        for e in entries:                        # catalog order: the order of the appends
            path = self.root / e.path
            try:
                t = pq.read_table(path, columns=need, filters=flt)
            except (OSError, pa.ArrowInvalid) as err:
                raise StoreError(f"The committed file {path} cannot be read: {err}") from err
            days.setdefault(e.date, []).append(t)
        parts = []
        for date in sorted(days):
            t = pa.concat_tables(days[date])
            if len(days[date]) > 1:
                t = t.take(pc.sort_indices(t, [("instrument_id", "ascending"),
                                               ("ts_event", "ascending")]))
            parts.append(t.select(cols))
        if not parts:
            return pa.Table.from_batches([], schema=pa.schema([want.field(c) for c in cols]))
        return pa.concat_tables(parts)
