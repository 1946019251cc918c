"""The tick store: normalized records as Parquet + zstd, partitioned by schema and day.

Layout (an open format: any Parquet reader reads the files as they are)::

    {root}/{schema}/date=YYYY-MM-DD/part-{first ts_event}-{uuid}.parquet
    {root}/_catalog/{schema}.jsonl      one line per commit (an append or a compaction)
    {root}/_lock                        held by the one writer
    {root}/_readers                     shared by readers while they read

A file holds one schema and one time slot of ``ts_event`` (the store's ``slot``: five
minutes by default, one minute to a UTC day, chosen when the store is made), rows sorted by
``(instrument_id, ts_event)``. Its catalog entry records its rows, instrument and time
ranges, size and CRC-32, so queries choose files without opening them.

**Commit protocol.** An append writes each slot's rows to ``.tmp-*`` in the partition, fsyncs
it and renames it to its final name, fsyncs the partitions' directories once all are renamed,
then appends one catalog line listing all of the append's files (with the line's own CRC-32 at
its end) and fsyncs the catalog. The append is committed exactly when its line is complete, all its files or none, and
only committed files are visible. A compaction commits the same way: one line that adds the
merged file and removes the files it replaces, so a reader sees the old files or the new one,
never both or neither. A writer killed at any point leaves at most a temporary file, a renamed
file with no line, or a torn last line: opening the store as a writer removes the first two and
truncates the torn line. A second writer gets :class:`StoreLocked`.

**Readers and deletion.** A reader holds a shared lock on ``_readers`` from before it reads the
catalog until it has read its files. Files that a compaction replaced are deleted only under
the exclusive lock, so a reader's files stay in place for as long as it reads them; while
readers are busy the deletion waits for the next compaction, close or writer open.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import threading
import types
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from normalize.records import RECORD_TYPES, arrow_schema
from tickstore import filewrite, parquet, reader
from tickpipe.durable import fsync_dir
from tickpipe.errors import TickpipeError

NS_PER_DAY = 86_400 * 1_000_000_000
ROW_GROUP = 128 * 1024
BATCH_ROWS = 64 * 1024
HEAVY = 16               # an instrument with a row group's 1/HEAVY has row groups of its own,
HEAVY_ROWS = 2048        # ... and this many rows at least (a row group's footprint: ~2 KB)
PART_NAME = re.compile(r"^(\.tmp-)?part-\d{19}-[0-9a-f]{12}\.parquet$")
FOOTER_MEMORY = 64 << 20  # what a store keeps of the files' footers for its own decoders
                         # (row groups' ranges, chunks' places: ~3 KiB a one-minute file)
FRAGMENT_MEMORY = 64 << 20  # pyarrow's parsed footers a store keeps (filters and files its
FOOTER_SCALE = 48        # decoders do not read), by their memory: ~48 times a footer's bytes
_LOCAL = pafs.LocalFileSystem()
# pages checked against their CRC-32; no pre-buffering: the files are local, mostly in the
# page cache, and coalesced asynchronous reads only add to a range query (the instrument-hour
# over sixty one-minute files 29-34 -> 28 ms, the minute 4.7-6.6 -> 4.3-4.8 ms; a full read
# the same)
_FORMAT = ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
    page_checksum_verification=True, pre_buffer=False))


class StoreError(ValueError, TickpipeError):
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
    slot: int                 # start of the file's time slot, ns since the epoch

    def overlaps(self, instruments, start, end) -> bool:
        if start is not None and self.ts_max < start:
            return False
        if end is not None and self.ts_min >= end:
            return False
        if instruments is not None:
            lo = np.searchsorted(instruments, self.instrument_min)
            return lo < instruments.size and instruments[lo] <= self.instrument_max
        return True


@dataclass
class Problem:
    """One thing :meth:`TickStore.verify` found wrong: the file (relative to the root) and what."""
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class VerifyReport:
    files: int = 0
    rows: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    pending_deletion: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            crc = filewrite.crc32(chunk, crc)
    return crc


def _line(add: list[FileEntry], remove: list[str] = ()) -> str:
    """The catalog line committing ``add`` and retiring ``remove`` together."""
    body = json.dumps({"add": [e.__dict__ for e in add], "remove": list(remove)},
                      sort_keys=True, separators=(",", ":"))
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n"


def _parse(line: str, cat: Path, number: int) -> tuple[list[FileEntry], list[str]] | None:
    """The (added entries, removed paths) of a complete catalog line; None for a torn one (no
    newline, or a CRC that does not match). A line whose CRC matches but which does not hold
    a commit is an error naming the catalog and the line, never taken for a torn one (the
    writer's recovery would truncate it and every commit after it)."""
    if not line.endswith("\n") or "\t" not in line:
        return None
    body, crc = line[:-1].rsplit("\t", 1)
    try:
        if int(crc, 16) != zlib.crc32(body.encode()):
            return None
    except ValueError:
        return None
    try:
        obj = json.loads(body)
        return [FileEntry(**e) for e in obj["add"]], [str(p) for p in obj["remove"]]
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{cat}: line {number} has a valid CRC but is not a commit this "
                         f"tickpipe reads ({e}).") from e


def _read_catalog(cat: Path) -> tuple[list[tuple[list[FileEntry], list[str]]], int, int]:
    """A catalog file's commits up to its first torn line, the bytes they take, and the
    file's size (more: a torn tail)."""
    raw = cat.read_bytes() if cat.exists() else b""
    commits, good = [], 0
    for number, line in enumerate(raw.decode(errors="replace").splitlines(keepends=True), 1):
        parsed = _parse(line, cat, number)
        if parsed is None:
            break                                 # a writer's torn line: not committed
        commits.append(parsed)
        good += len(line.encode())
    return commits, good, len(raw)


def _ns(value, name: str) -> int | None:
    """A time argument as ns since the epoch (int ns, numpy/pandas/datetime, or ISO string)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        if isinstance(value, _dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        if isinstance(value, str) and value.endswith("Z"):
            value = value[:-1]
        return int(np.datetime64(value, "ns").astype(np.int64))
    except (ValueError, TypeError) as e:
        raise StoreError(f"The `{name}` must be a time (ns since the epoch, a datetime or an ISO "
                         f"string), was {value!r}.") from e


SLOTS = {"1min": 60, "2min": 120, "5min": 300, "10min": 600, "15min": 900, "30min": 1800,
         "1h": 3600, "2h": 7200, "4h": 14400, "1D": 86400}
DEFAULT_SLOT = "5min"     # (bench/RESULTS.md, 2026-12-03: the slots against ArcticDB)
FORMAT = 1                    # the layout's version, in _catalog/_store.json
EVENT_SCHEMAS = ("mbo", "trades")      # the schemas the store's slot applies to (others: 1D)


def _slot_ns(slot) -> int:
    if isinstance(slot, str) and slot in SLOTS:
        return SLOTS[slot] * 1_000_000_000
    raise StoreError(f"The `slot` must be one of {', '.join(SLOTS)} (a length that divides a "
                     f"day), was {slot!r}.")


def _row_group(rows: int, cap: int) -> int:
    """The row groups' size for a file of ``rows``: about two a file, 16,384 to ``cap`` rows
    each, cut at instruments' bounds by :func:`_group_bounds` (busy instruments alone in
    theirs: a sixteenth of this size, :data:`HEAVY`, the eighth of four a file), so that an
    instrument's rows can be found without reading the whole file. (Four a file cost 0.15
    B/row more in one-minute files, 792 row groups for the benchmark day's 132 files against
    528, for the same instrument-hour.)"""
    return int(min(cap, max(16_384, -(-rows // 2))))


@numba.njit(cache=True, nogil=True)
def _group_bounds(runs, target):
    """The row groups of a slot's sorted rows, whose instruments have ``runs`` rows each (in
    order): their bounds, from 0 to the rows' count. An instrument's rows are not split
    between row groups when they fit in one (``target`` rows). A busy instrument, with
    ``target // HEAVY`` rows and :data:`HEAVY_ROWS` or more (or more than ``target``), has row
    groups of its own (pieces of ``target``), so that a query for it reads its rows and few
    others'. The other instruments fill row groups of up to ``target`` rows."""
    heavy = min(max(target // HEAVY, HEAVY_ROWS), target)
    total = 0
    for r in runs:
        total += r
    bounds = np.empty(2 * runs.size + total // max(target, 1) + 2, np.int64)
    k = 1
    bounds[0] = 0
    size = 0
    alone = False                     # the open group holds a heavy instrument's rows
    i = 0
    for r in runs:
        if r >= heavy:
            if i > bounds[k - 1]:
                bounds[k] = i
                k += 1
            c = i + target
            while c < i + r:
                bounds[k] = c
                k += 1
                c += target
            alone = True
        else:
            if (alone or size + r > target) and i > bounds[k - 1]:
                bounds[k] = i
                k += 1
                size = 0
            alone = False
            size += r
        i += r
    if total > bounds[k - 1]:
        bounds[k] = total
        k += 1
    return bounds[:k]


def _runs(inst: np.ndarray) -> np.ndarray:
    """The lengths of the runs of equal values of ``inst`` (sorted), in order."""
    if inst.size == 0:
        return np.zeros(0, np.int64)
    change = np.flatnonzero(inst[1:] != inst[:-1]) + 1
    return np.diff(np.r_[0, change, inst.size]).astype(np.int64)


def _group_keys(md) -> np.ndarray:
    """Each row group's (first and last instrument id, first and last ``ts_event``) from a
    file's metadata; a group without statistics spans every value."""
    names = md.schema.names
    ci, ct = names.index("instrument_id"), names.index("ts_event")
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    out = np.empty((md.num_row_groups, 4), np.int64)
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        si, st = rg.column(ci).statistics, rg.column(ct).statistics
        out[g, :2] = (si.min, si.max) if si is not None and si.has_min_max else (lo, hi)
        out[g, 2:] = (st.min_raw, st.max_raw) if st is not None and st.has_min_max else (lo, hi)
    return out


def _keep(g: np.ndarray, inst, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Of row groups with the ranges ``g`` (:func:`_group_keys`): those that can hold rows of
    ``inst`` (sorted ids; None: all) in ``[lo, hi)`` (None: open), and those all of whose rows
    are such."""
    keep = np.ones(len(g), bool)
    exact = keep.copy()
    if lo is not None:
        keep &= g[:, 3] >= lo
        exact &= g[:, 2] >= lo
    if hi is not None:
        keep &= g[:, 2] < hi
        exact &= g[:, 3] < hi
    if inst is not None:                 # wanted ids in each group's id range
        n = np.searchsorted(inst, g[:, 1], "right") - np.searchsorted(inst, g[:, 0], "left")
        keep &= n > 0
        exact &= n == g[:, 1] - g[:, 0] + 1          # every id of the range is wanted
    return keep, exact


@numba.njit(cache=True, nogil=True)
def _rising(v, i, j):
    """Whether ``v[i:j]`` does not decrease (a pass without a branch, which LLVM
    vectorizes)."""
    if j - i < 2:
        return True
    a, b = v[i:j - 1], v[i + 1:j]
    bad = 0
    for x in range(a.size):
        bad |= b[x] < a[x]
    return bad == 0


@numba.njit(cache=True, nogil=True)
def _run_end(inst, i, end):
    """The end of the run of ``inst[i]``'s value in ``inst[i:end]`` (non-decreasing there):
    by galloping, then binary search."""
    v = inst[i]
    step = 1
    hi = i + 1
    while hi < end and inst[hi] == v:
        lo = hi
        hi = min(end, hi + step)
        step *= 2
        if inst[hi - 1] != v:
            hi = lo + np.searchsorted(inst[lo:hi], v, side="right")
            break
    return hi


@numba.njit(cache=True, nogil=True)
def _wanted(inst, ts, group_rows, ids, any_id, lo, hi):
    """The rows of row groups (``group_rows``: each one's first row, then the end) sorted by
    (instrument, time) that are of the instruments ``ids`` (sorted; ``any_id``: all) with a
    time in ``[lo, hi)``: ``[start, end)`` pairs, in order, adjacent ones joined. An
    instrument's run in a group and its rows in time are found by binary search, after a
    check (one pass, no branch: vectorized) that the group's instruments, and the times of
    each instrument wanted, are in order. ``(pairs, False)`` when they are not (the caller
    then filters)."""
    out = np.empty((16, 2), np.int64)
    m = 0
    for g in range(group_rows.size - 1):
        i, end = group_rows[g], group_rows[g + 1]
        if not _rising(inst, i, end):
            return out[:m], False
        while i < end:
            j = _run_end(inst, i, end)
            ok = any_id
            if not ok:
                k = np.searchsorted(ids, inst[i])
                ok = k < ids.size and ids[k] == inst[i]
            if ok:
                if not _rising(ts, i, j):
                    return out[:m], False
                a = i + np.searchsorted(ts[i:j], lo)
                b = i + np.searchsorted(ts[i:j], hi)
                if b > a:
                    if m and out[m - 1, 1] == a:
                        out[m - 1, 1] = b
                    else:
                        if m == out.shape[0]:
                            grown = np.empty((2 * m, 2), np.int64)
                            grown[:m] = out
                            out = grown
                        out[m, 0] = a
                        out[m, 1] = b
                        m += 1
            i = j
    return out[:m], True


@numba.njit(cache=True, nogil=True)
def _take_ranges(v, sel, out):
    """The rows ``sel`` (``[start, end)`` pairs) of ``v``, one after another, into ``out``."""
    o = 0
    for r in range(sel.shape[0]):
        n = sel[r, 1] - sel[r, 0]
        out[o:o + n] = v[sel[r, 0]:sel[r, 1]]
        o += n


def _date(day: int) -> str:
    return str(np.datetime64(day, "D"))


def _check_schema(schema: str) -> None:
    if schema not in RECORD_TYPES:
        raise StoreError(f"Unknown schema {schema!r}; the store holds "
                         f"{', '.join(RECORD_TYPES)}.")


def _keys(t) -> tuple[np.ndarray, np.ndarray]:
    return (t.column("instrument_id").to_numpy().astype(np.int64),
            t.column("ts_event").cast(pa.int64()).to_numpy())


@numba.njit(cache=True, nogil=True)
def _scan(ts, inst):
    """Whether ``ts`` never falls, its least value, and the least and greatest of ``inst``,
    in two compiled loops (numpy's four passes took 25 to 45 ms of the benchmark day's 0.7 s
    append, on one thread before the others start; these take 9)."""
    n = ts.size
    if n == 0:
        return True, 0, 0, 0
    falls = 0
    tlo = ts[0]
    ilo = np.int64(inst[0])
    ihi = ilo
    cur = ts[1:]                  # (slices from 0 and no branches: loops LLVM vectorizes)
    prev = ts[:n - 1]
    for i in range(n - 1):
        falls |= cur[i] < prev[i]
        tlo = min(tlo, cur[i])
    for i in range(n):
        x = np.int64(inst[i])
        ilo = min(ilo, x)
        ihi = max(ihi, x)
    rises = falls == 0
    return rises, int(tlo), int(ilo), int(ihi)


def _sort_order(ts: np.ndarray, inst: np.ndarray, slot_ns: int,
                facts: tuple | None = None) -> tuple[np.ndarray | None, np.ndarray, tuple | None]:
    """How to put rows in the store's order, by (slot of ``ts``, instrument, ts), stably: the
    rows' indices in that order (None when they are in it already; int32 when they fit), the
    slots' bounds in it (``cuts``: slot k is ``cuts[k]:cuts[k + 1]``), and what is left to do:
    None, or (lo, span) of the counting sort (:func:`_slot_sort`) each slot's task runs, whose
    indices (``order``, not filled yet) it fills only when it needs them. Rows in time order (a
    feed's) need only a stable sort by instrument within each slot, whose bounds are where the
    slots' starts fall: a counting sort when the ids span at most 65,536 (ITCH locate codes do)
    or a quarter of the rows. Other rows: one lexsort of them all. ``facts``: what
    :func:`_scan` gives of the rows, when known."""
    in_time, _, ilo, ihi = _scan(ts, inst) if facts is None else facts
    itype = np.int32 if ts.size < 1 << 31 else np.int64
    if not in_time:
        slot = ts // slot_ns
        order = np.lexsort((ts, inst, slot))
        slot = slot[order]
        return (order.astype(itype),
                np.r_[0, np.flatnonzero(slot[1:] != slot[:-1]) + 1, ts.size].astype(np.int64),
                None)
    first, last = int(ts[0]) // slot_ns, int(ts[-1]) // slot_ns
    starts = np.arange(first + 1, last + 1, dtype=np.int64) * slot_ns
    cuts = np.r_[0, np.searchsorted(ts, starts, "left"), ts.size].astype(np.int64)
    if all(bool(np.all(inst[a + 1:b] >= inst[a:b - 1])) for a, b in zip(cuts[:-1], cuts[1:])):
        return None, cuts, None
    lo, span = ilo, ihi - ilo + 1
    order = np.empty(ts.size, itype)
    if span <= max(1 << 16, ts.size // 4):
        return order, cuts, (lo, span)
    for a, b in zip(cuts[:-1], cuts[1:]):
        order[a:b] = np.argsort(inst[a:b], kind="stable") + a
    return order, cuts, None


class _Kept:
    """The values last used, by key, up to ``limit`` bytes of them (as the caller counts them;
    the last one kept whatever its size); thread-safe."""

    def __init__(self, limit: int):
        self.limit, self.bytes = limit, 0
        self.items: OrderedDict = OrderedDict()        # key: (value, bytes)
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def get(self, key):
        with self.lock:
            hit = self.items.get(key)
            if hit is None:
                return None
            self.items.move_to_end(key)
            return hit[0]

    def put(self, key, value, size: int) -> None:
        with self.lock:
            if key in self.items:
                return
            self.items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.limit and len(self.items) > 1:
                _, (_, gone) = self.items.popitem(last=False)
                self.bytes -= gone


def _on_store_thread() -> bool:
    """Whether this is one of a store's threads (whose tasks run their own inner maps in turn:
    waiting on the pool from inside it could wait for ever)."""
    return threading.current_thread().name.startswith("tickstore")


def _gathered(v: np.ndarray | None, idx: np.ndarray | None, lo: int, hi: int,
              slot: str) -> np.ndarray | None:
    """Rows ``lo:hi`` of ``v`` in the store's order (``idx``: :func:`_sort_order`'s indices;
    None: ``v``'s own), in a buffer the thread keeps (``slot``: which of its buffers): valid
    until the thread's next call with that slot."""
    if v is None or idx is None:
        return None if v is None else v[lo:hi]
    n = hi - lo
    buf = reader._buffer(f"gather-{slot}", n * v.itemsize, keep=None)
    out = buf[:n * v.itemsize].view(v.dtype)
    _gather(v.view(_UINT[v.itemsize]), idx, lo, out.view(_UINT[v.itemsize]))
    return out


_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_NO_ORDER = np.zeros(1, np.int32)


@numba.njit(cache=True, nogil=True)
def _gather(v, idx, lo, out):
    """``out[i] = v[idx[lo + i]]`` (numpy's take converts int32 indices to intp first, and
    costs 3 ns a row here against about 1)."""
    for i in range(out.size):
        out[i] = v[idx[lo + i]]


@numba.njit(cache=True, nogil=True)
def _slot_facts(ts, inst, idx, gather, lo, hi):
    """Of the rows ``idx[lo:hi]`` (or ``lo:hi`` when not ``gather``), in the store's order:
    their least and greatest ``ts_event``, the lengths of their instruments' runs, in order,
    and their first and last instrument (as :func:`_slot_sort` gives them). (One pass, for a
    file's catalog entry and row groups; gathering the two columns and finding the runs with
    numpy took 0.15 s of an append's 1.5 s of one thread.)"""
    n = hi - lo
    runs = np.empty(max(n, 1), np.int64)
    k = 0
    tlo = np.iinfo(np.int64).max
    thi = np.iinfo(np.int64).min
    prev = first = np.int64(-1)
    for i in range(lo, hi):
        j = idx[i] if gather else i
        t = np.int64(ts[j])
        tlo = min(tlo, t)
        thi = max(thi, t)
        x = np.int64(inst[j])
        if i == lo or x != prev:
            runs[k] = 0
            k += 1
            prev = x
            if i == lo:
                first = x
        runs[k - 1] += 1
    return tlo, thi, runs[:k], first, prev


@numba.njit(cache=True, nogil=True)
def _slot_sort(inst, a, b, lo, span, dest):
    """The stable counting sort by instrument (``lo`` to ``lo + span - 1``) of the rows
    ``a:b``, as each row's place in the new order (into ``dest``: written in order, where the
    indices of the rows in the new order were written a thousand places apart), and the
    lengths of the instruments' runs in it, with the first and last instrument."""
    count = np.zeros(span, np.int64)
    for i in range(a, b):
        count[inst[i] - lo] += 1
    k = 0
    for j in range(span):
        k += count[j] > 0
    runs = np.empty(k, np.int64)
    k = 0
    at = 0
    first = last = -1
    for j in range(span):
        c = count[j]
        if c:
            runs[k] = c
            k += 1
            last = j
            if first < 0:
                first = j
        count[j] = at
        at += c
    for i in range(a, b):
        j = inst[i] - lo
        dest[i - a] = count[j]
        count[j] += 1
    return runs, first + lo, last + lo


@numba.njit(cache=True, nogil=True)
def _order_of(dest, a, order):
    """The rows' indices in the new order (into ``order[a:]``) from their places ``dest``."""
    for i in range(dest.size):
        order[a + dest[i]] = a + i


def _count_below(inst: np.ndarray, ts: np.ndarray, key: tuple[int, int]) -> int:
    """How many of the rows (sorted by (inst, ts)) have a key below ``key``."""
    lo = int(np.searchsorted(inst, key[0], "left"))
    hi = int(np.searchsorted(inst, key[0], "right"))
    return lo + int(np.searchsorted(ts[lo:hi], key[1], "left"))


def _last_key(t: pa.Table) -> tuple[int, int]:
    return (int(t.column("instrument_id")[-1].as_py()),
            int(t.column("ts_event")[-1].cast(pa.int64()).as_py()))


def _merge_sorted(streams: list[Iterator[pa.RecordBatch]]) -> Iterator[pa.Table]:
    """Merge streams of batches, each sorted by (instrument_id, ts_event), into one sorted
    stream; rows equal in both come in stream order. Holds about one batch per stream."""
    k = len(streams)
    bufs: list[pa.Table | None] = [None] * k
    done = [False] * k

    def refill(i):
        for b in streams[i]:
            if b.num_rows:
                t = pa.Table.from_batches([b])
                bufs[i] = t if bufs[i] is None else pa.concat_tables([bufs[i], t])
                return
        done[i] = True

    for i in range(k):
        refill(i)
    while True:
        for i in range(k):                        # every open stream has rows in hand
            while not done[i] and (bufs[i] is None or bufs[i].num_rows == 0):
                refill(i)
        lasts = [_last_key(bufs[i]) for i in range(k) if not done[i]]
        held = [i for i in range(k) if bufs[i] is not None and bufs[i].num_rows]
        if not held:
            return
        parts = []
        if not lasts:                             # every stream ended: the rest is final
            parts = [bufs[i] for i in held]
            for i in held:
                bufs[i] = None
        else:
            frontier = min(lasts)                 # no open stream can still bring a key below
            for i in held:
                n = _count_below(*_keys(bufs[i]), frontier)
                if n:
                    parts.append(bufs[i].slice(0, n))
                    bufs[i] = bufs[i].slice(n)
            if not parts:                         # all at the frontier key: read further
                for i in range(k):
                    if not done[i] and _last_key(bufs[i]) == frontier:
                        refill(i)
                continue
        t = pa.concat_tables(parts)
        if len(parts) > 1:
            inst, ts = _keys(t)
            t = t.take(pa.array(np.lexsort((ts, inst))))      # stable: stream order kept
        yield t


SORTING = ("instrument_id", "ts_event")      # the rows' order in a file
PLAIN_PRICES = 1500     # rows an instrument in a file, below which prices pay no dictionary
SPLIT_ORDERS = 5000     # ... and below which order references are byte-stream split
PLAIN_SMALL = ("instrument_id", "channel", "tracking", "cross_type")


def _policy(schema: pa.Schema, rows_per_instrument: float = np.inf) -> types.MappingProxyType:
    """Each column's (encoding, zstd or not), as measured on 10 M simulated ``mbo`` rows
    (bench/RESULTS.md, 2026-12-02 and 2026-12-03), zstd level 1:

    - the times and sequence numbers, which rise within an instrument: delta, uncompressed
      (zstd finds under 3% in the bit-packed deltas, for more time than the encoding takes);
    - order references: byte-stream split + zstd in files of up to an hour's slot (B/row
      against delta: 2.37 / 2.75 at 5 minutes, 2.39 / 2.75 at 10, 2.46 / 2.76 at 30, 2.51 /
      2.76 at an hour), delta in longer ones' (a day's: 2.62 against 2.76 B/row, but 4 against
      17 ns/row to encode);
    - the mostly-zero match and new-order references, and columns of long runs of one value:
      plain + zstd (zstd packs a run faster than a dictionary);
    - prices: plain + zstd in files of up to 15 minutes' slots (1.37 against 1.55 B/row for
      the dictionary at 5 minutes, 1.30 / 1.41 at 10, 1.27 / 1.31 at 15), else a dictionary +
      zstd (1.18 / 1.24 at 30 minutes, 0.93 / 1.20 for a day);
    - every other column: dictionary (plain past :data:`tickstore.parquet.DICT_LIMIT`
      distinct values a chunk) + zstd.

    A chunk that holds one value is a one-entry dictionary whatever this says
    (:func:`tickstore.parquet.encode_chunk`). The mapping is shared, read-only."""
    return _policy_of(schema, bool(rows_per_instrument < PLAIN_PRICES),
                      bool(rows_per_instrument < SPLIT_ORDERS))


@parquet.by_schema
def _policy_of(schema: pa.Schema, plain_prices: bool,
               split_orders: bool) -> types.MappingProxyType:
    pol = {}
    for f in schema:
        n = f.name
        if n.startswith("ts_") or n == "sequence" or (n == "order_id" and not split_orders):
            pol[n] = ("DELTA_BINARY_PACKED", False)
        elif n == "order_id":
            pol[n] = ("BYTE_STREAM_SPLIT", True)
        elif (n in ("match_id", "new_order_id") or n in PLAIN_SMALL or f.type == pa.float64()
              or (n == "price" and plain_prices)):
            pol[n] = ("PLAIN", True)
        else:
            pol[n] = ("RLE_DICTIONARY", True)
    return types.MappingProxyType(pol)


def _columns_of(table: pa.Table, columns) -> dict[str, tuple]:
    """``{name: (values, validity or None)}`` of a table, as the Parquet writer takes them."""
    return {c.name: parquet.arrow_values(table.column(c.name), c) for c in columns}


def _concat(pieces: list[dict]) -> dict:
    if len(pieces) == 1:
        return pieces[0]
    out = {}
    for name in pieces[0]:
        vals = np.concatenate([p[name][0] for p in pieces])
        valid = (None if all(p[name][1] is None for p in pieces) else
                 np.concatenate([np.ones(p[name][0].size, bool) if p[name][1] is None
                                 else p[name][1] for p in pieces]))
        out[name] = (vals, valid)
    return out


def _slice(cols: dict, lo: int, hi: int) -> dict:
    return {k: (v[lo:hi], None if m is None else m[lo:hi]) for k, (v, m) in cols.items()}


class _PartWriter:
    """One slot's sorted rows (``rows`` of them, about), written in row groups to a temporary
    file, which is opened at the first write; ``commit`` fsyncs and renames it and returns its
    (not yet committed) catalog entry. Rows come as tables (:meth:`add`, a compaction's stream)
    or as row groups encoded already (:meth:`add_encoded`, an append's)."""

    def __init__(self, store: "TickStore", schema: str, slot: int, first_ts: int, rows: int,
                 instruments: int):
        day = slot // NS_PER_DAY
        self.store, self.schema, self.date, self.slot = store, schema, _date(day), slot
        self.rg = _row_group(rows, store.row_group_rows)
        self.name = f"part-{first_ts:019d}-{uuid.uuid4().hex[:12]}.parquet"
        # the paths as strings (pathlib's objects took 0.3 ms a file, most of it under the GIL)
        self.rel = f"{schema}/date={self.date}/{self.name}"
        self.part = os.path.join(store.root_str, schema, f"date={self.date}")
        self.tmp = os.path.join(self.part, f".tmp-{self.name}")
        self.arrow = arrow_schema(schema)
        self.columns = parquet.columns_of(self.arrow)
        self.policy = _policy(self.arrow, rows / max(instruments, 1))
        self.file = self.writer = self.image = None
        self.pending: list[dict] = []
        self.pending_rows = 0
        self.bounds = ()                 # the row groups' bounds, for rows given by add()
        self.grouped = 0                 # rows written in row groups by add()
        self.rows = 0
        self.inst = [np.iinfo(np.int64).max, -1]
        self.ts = [np.iinfo(np.int64).max, -1]

    def _create(self) -> None:
        try:
            self.file = open(self.tmp, "wb")
        except FileNotFoundError:                # the partition's first file
            os.makedirs(self.part, exist_ok=True)
            self.file = open(self.tmp, "wb")

    def _open(self) -> parquet.FileWriter:
        if self.writer is None:
            self._create()
            self.writer = parquet.FileWriter(self.file, self.arrow, self.policy,
                                             level=self.store.zstd_level, page_rows=self.rg,
                                             sorting=SORTING)
        return self.writer

    def encode_chunk(self, col: parquet.Column, values: np.ndarray, valid) -> parquet._Chunk:
        enc, comp = self.policy[col.name]
        return parquet.encode_chunk(col, values, valid, enc, comp, self.store.zstd_level,
                                    self.rg)

    def _note(self, inst: np.ndarray, ts: np.ndarray) -> None:
        self._cover(inst.size, (int(inst[0]), int(inst[-1])), (int(ts.min()), int(ts.max())))

    def _cover(self, rows: int, inst: tuple[int, int], ts: tuple[int, int]) -> None:
        """``rows`` more rows, whose instrument ids and ``ts_event`` values span ``inst`` and
        ``ts`` (least, greatest)."""
        self.rows += rows
        self.inst = [min(self.inst[0], inst[0]), max(self.inst[1], inst[1])]
        self.ts = [min(self.ts[0], ts[0]), max(self.ts[1], ts[1])]

    def add_encoded(self, groups: list[list], rows: int, inst: tuple[int, int],
                    ts: tuple[int, int]) -> None:
        """Row groups encoded by :meth:`encode_chunk` (each a chunk per column) of ``rows``
        rows, whose instrument ids and ``ts_event`` values span ``inst`` and ``ts``."""
        self._cover(rows, inst, ts)
        w = self._open()
        for chunks in groups:
            w.write(chunks)

    def add_image(self, image: np.ndarray, rows: int, inst: tuple[int, int],
                  ts: tuple[int, int]) -> None:
        """The whole file, written already (by :func:`tickstore.filewrite.write_file`), of
        ``rows`` rows whose instrument ids and ``ts_event`` values span ``inst`` and ``ts``
        (least, greatest)."""
        self._cover(rows, inst, ts)
        self._create()
        view, fd = memoryview(image), self.file.fileno()
        while view.nbytes:
            view = view[os.write(fd, view):]
        self.image = (image.size, filewrite.crc32(image))

    def add(self, cols: pa.Table | dict, inst: np.ndarray, ts: np.ndarray) -> None:
        """Rows (a table, or ``{name: (values, validity or None)}``) with their instrument ids
        and ``ts_event`` values, sorted by them and after the rows added before; written in
        the row groups of ``bounds`` (:func:`_group_bounds`, set before the first call)."""
        if not inst.size:
            return
        if isinstance(cols, pa.Table):
            cols = _columns_of(cols, self.columns)
        self._note(inst, ts)
        self.pending.append(cols)
        self.pending_rows += inst.size
        ends = [int(x) - self.grouped for x in self.bounds
                if self.grouped < x <= self.grouped + self.pending_rows]
        if ends:
            whole, lo = _concat(self.pending), 0
            for hi in ends:
                self._write(_slice(whole, lo, hi))
                lo = hi
            rest = self.pending_rows - lo
            self.pending = [_slice(whole, lo, self.pending_rows)] if rest else []
            self.pending_rows = rest
            self.grouped += lo

    def _write(self, cols: dict) -> None:
        w = self._open()
        w.write(w.encode(cols))

    def commit(self, sync_dir: bool = True) -> FileEntry:
        """Finish the file: footer, fsync, rename to its final name, and (unless the caller
        fsyncs the partition once for all its files, before the commit) the directory's fsync."""
        if self.pending:
            self._write(_concat(self.pending))
        if self.image is not None:
            size, crc = self.image
        else:
            size = self._open().close()
            crc = self.writer.crc
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, os.path.join(self.part, self.name))
        if sync_dir:
            fsync_dir(self.part)
        return FileEntry(path=self.rel, schema=self.schema,
                         date=self.date, rows=self.rows, instrument_min=self.inst[0],
                         instrument_max=self.inst[1], ts_min=self.ts[0], ts_max=self.ts[1],
                         bytes=size, crc32=crc, slot=self.slot)

    def abort(self) -> None:
        if self.file is None:
            return
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class TickStore:
    """A tick store at ``root``. Readers need no writer lock; ``writer=True`` (the default)
    takes the store's writer lock and cleans what a killed writer left."""

    def __init__(self, root, *, writer: bool = True, slot: str | None = None,
                 zstd_level: int = 1, row_group_rows: int = ROW_GROUP, threads: int | None = None):
        self.root = Path(root)
        self.root_str = str(self.root)
        self.zstd_level = int(zstd_level)
        self.row_group_rows = int(row_group_rows)
        self.threads = int(threads or min(os.cpu_count() or 1, 8))
        self._pool = None               # the store's threads, kept (their buffers with them)
        self._io_pool = None            # the thread that fsyncs an append's files
        self._lock_fd = None
        self._commit_lock = threading.Lock()
        self._duck = None                         # (catalog key, DuckDB connection) for sql()
        self._footers = _Kept(FOOTER_MEMORY)     # path: _footer()
        self._fragments = _Kept(FRAGMENT_MEMORY)  # path: _fragment()
        self._catalogs: dict[str, list] = {}     # schema: what _live read of its catalog
        self._catalog_lock = threading.Lock()
        self._sql_lock = threading.Lock()
        if writer:
            (self.root / "_catalog").mkdir(parents=True, exist_ok=True)
            self._lock()
            try:
                self._settle_slot(slot)
                self._recover()
            except BaseException:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise
        elif not (self.root / "_catalog").is_dir():
            raise StoreError(f"There is no tick store at {self.root} (no _catalog folder).")
        else:
            self._settle_slot(None, write=False)

    def _settle_slot(self, slot, write: bool = True) -> None:
        """The store's time slot: each file holds one slot of one schema. Chosen when the store
        is made (``_catalog/_store.json``); an open that asks for another one is an error. The
        slot is for the event schemas (``mbo``, ``trades``); the small ones (definitions,
        status, imbalance, forecasts) keep a file a day, so that a day of them is not
        hundreds of tiny files."""
        meta = self.root / "_catalog" / "_store.json"
        try:
            doc = json.loads(meta.read_text()) if meta.exists() else None
            have = doc["slot"] if doc else None
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{meta} is not a tick store's settings file: {e}") from e
        if doc and int(doc.get("format", 1)) > FORMAT:
            raise StoreError(f"The tick store at {self.root} has format {doc['format']}; this "
                             f"tickpipe reads formats up to {FORMAT}.")
        if have is not None and slot is not None and slot != have:
            raise StoreError(f"The tick store at {self.root} has {have!r} slots; it was opened "
                             f"with slot={slot!r}.")
        self.slot = have or slot or ("1D" if not write else DEFAULT_SLOT)
        self.slot_ns = _slot_ns(self.slot)
        if doc is not None:
            self.slots = {k: doc.get("slots", {}).get(k, self.slot) for k in RECORD_TYPES}
        else:
            self.slots = {k: self.slot if k in EVENT_SCHEMAS else "1D" for k in RECORD_TYPES}
        self._slot_of = {k: _slot_ns(v) for k, v in self.slots.items()}
        if have is None and write:
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "slot": self.slot, "slots": self.slots}))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, meta)
            fsync_dir(meta.parent)

    def __repr__(self) -> str:
        return f"TickStore({str(self.root)!r}, writer={self._lock_fd is not None})"

    # -- locks --------------------------------------------------------------------------------

    def _lock(self) -> None:
        fd = os.open(self.root / "_lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"The tick store at {self.root} has a writer already "
                              f"({self.root / '_lock'} is locked).") from None
        self._lock_fd = fd

    @contextlib.contextmanager
    def reading(self):
        """Hold the readers' shared lock: the files of any catalog read inside stay in place."""
        try:
            fd = self._readers_fd()
        except OSError:                          # a read-only copy of a store: no writer
            try:
                fd = os.open(self.root / "_readers", os.O_RDONLY)
            except OSError:
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _readers_fd(self) -> int:
        return os.open(self.root / "_readers", os.O_RDWR | os.O_CREAT, 0o644)

    def close(self) -> None:
        for pool in (self._pool, self._io_pool):
            if pool is not None:
                pool.shutdown()
        self._pool = self._io_pool = None
        if self._duck is not None:
            self._duck[1].close()
            self._duck = None
        if self._lock_fd is not None:
            self._collect()
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _require_writer(self) -> None:
        if self._lock_fd is None:
            raise StoreError(f"The tick store at {self.root} was opened read-only.")

    # -- the catalog --------------------------------------------------------------------------

    def _catalog(self, schema: str) -> Path:
        return self.root / "_catalog" / f"{schema}.jsonl"

    def _live(self, schema: str) -> list[FileEntry]:
        """The committed files of ``schema`` that no later commit removed, in commit order.
        The catalog is append-only: the commits read before are kept, and only the lines
        appended since are read and applied (a torn last line is left for the next call; a
        catalog replaced, as by a new store at this root, is read again from its start)."""
        cat = self._catalog(schema)
        with self._catalog_lock:
            try:
                st = os.stat(cat)
            except FileNotFoundError:
                self._catalogs.pop(schema, None)
                return []
            kept = self._catalogs.get(schema)
            ident = (st.st_dev, st.st_ino)
            if kept is None or kept[0] != ident or st.st_size < kept[1]:
                kept = [ident, 0, 0, {}]              # (file, bytes read, lines, live)
            if st.st_size > kept[1]:
                with open(cat, "rb") as f:
                    f.seek(kept[1])
                    raw = f.read()
                live = kept[3]
                for line in raw.decode(errors="replace").splitlines(keepends=True):
                    parsed = _parse(line, cat, kept[2] + 1)
                    if parsed is None:
                        break                         # a writer's torn line: not committed
                    for p in parsed[1]:
                        live.pop(p, None)
                    for e in parsed[0]:
                        live[e.path] = e
                    kept[1] += len(line.encode())
                    kept[2] += 1
            self._catalogs[schema] = kept
            return list(kept[3].values())

    def _commit(self, schema: str, add: list[FileEntry], remove: list[str] = ()) -> None:
        with open(self._catalog(schema), "a", encoding="utf-8") as f:
            f.write(_line(add, remove))
            f.flush()
            os.fsync(f.fileno())

    def _part_files(self) -> Iterator[tuple[str, Path]]:
        """Every file under the schema folders, with its schema."""
        for schema in RECORD_TYPES:
            base = self.root / schema
            if base.is_dir():
                for p in sorted(base.rglob("*")):
                    if p.is_file():
                        yield schema, p

    def _recover(self) -> None:
        """Truncate torn catalog lines; remove temporary files and files no line commits."""
        for cat in (self.root / "_catalog").glob("*.jsonl"):
            _, good, size = _read_catalog(cat)
            if good != size:
                with open(cat, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        for _, p in self._part_files():
            if p.name.startswith(".tmp-part-") and PART_NAME.match(p.name):
                p.unlink()                        # only this writer ever writes these
        self._collect()

    def _collect(self) -> list[str]:
        """Delete part files that are not live (uncommitted, or replaced by a compaction) when
        no reader holds the store; returns what was deleted."""
        fd = self._readers_fd()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []                          # a reader is busy: next time
            gone, dirs = [], set()
            live = {e.path for s in RECORD_TYPES for e in self._live(s)}
            for _, p in self._part_files():
                rel = p.relative_to(self.root).as_posix()
                if PART_NAME.match(p.name) and not p.name.startswith(".tmp-") and rel not in live:
                    p.unlink()
                    gone.append(rel)
                    dirs.add(p.parent)
            for d in dirs:
                fsync_dir(d)
            return gone
        finally:
            os.close(fd)

    # -- writes -------------------------------------------------------------------------------

    def append(self, schema: str, data) -> list[FileEntry]:
        """Commit ``data`` (a table, record batch, iterable of batches or pandas DataFrame with
        the schema's columns) as one new file per time slot of ``ts_event``; returns their
        catalog entries."""
        self._require_writer()
        table = self._conform(schema, data)
        if table.num_rows == 0:
            return []
        tcol = table.column("ts_event")
        ts = tcol.cast(pa.int64())
        ts = (ts.fill_null(-1) if tcol.null_count else ts).to_numpy()
        inst = table.column("instrument_id").to_numpy()
        facts = _scan(ts, inst)
        if tcol.null_count or facts[1] < 0:
            raise StoreError(f"The `{schema}` rows to append have ts_event values that are null "
                             f"or before 1970 (first at row {int(np.argmax(ts < 0))}).")
        slot_ns = self._slot_of[schema]
        order, cuts, later = _sort_order(ts, inst, slot_ns, facts)
        arrow = arrow_schema(schema)
        pieces = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        columns = parquet.columns_of(arrow)
        nulls_only = frozenset(c.name for c in columns      # their values are not read
                               if table.column(c.name).null_count == table.num_rows)
        src = {c.name: ((np.zeros(1, c.dtype), np.zeros(1, bool)) if c.name in nulls_only
                        else parquet.arrow_values(table.column(c.name), c)) for c in columns}
        with_validity = any(m is not None for n, (_, m) in src.items() if n not in nulls_only)
        writers: list[_PartWriter] = []
        syncs: list[concurrent.futures.Future] = []      # the files' fsyncs and renames

        def write(k):          # a file a slot: its rows in order, encoded, written, fsynced
            a, b = pieces[k]
            direct = filewrite.supports(arrow, b - a)       # in one call, the GIL released
            dest = None
            if later is not None:                 # the slot's counting sort, on this thread
                dest = reader._buffer("dest", 4 * (b - a), keep=None).view(np.int32)
                runs, ilo, ihi = _slot_sort(inst, a, b, later[0], later[1], dest)
                first, last = int(ts[a]), int(ts[b - 1])          # rows in time order
                if with_validity or not direct:
                    _order_of(dest, a, order)
                    dest = None
            else:
                first, last, runs, ilo, ihi = _slot_facts(
                    ts, inst, _NO_ORDER if order is None else order, order is not None, a, b)
            w = _PartWriter(self, schema, first // slot_ns * slot_ns, first, b - a, runs.size)
            writers.append(w)
            ranges = b - a, (int(ilo), int(ihi)), (first, last)
            if direct:
                bounds = _group_bounds(runs, w.rg)
                w.add_image(filewrite.write_file(
                    w.arrow, w.policy, src, None if dest is not None else order, a, bounds,
                    self.zstd_level, SORTING, nulls_only, page_rows=w.rg, dest=dest), *ranges)
                syncs.append(self._io().submit(w.commit, False))  # fsync, rename: meanwhile
                return syncs[-1]
            bounds = _group_bounds(runs, w.rg).tolist()
            spans = list(zip(bounds[:-1], bounds[1:]))
            groups = [[] for _ in spans]
            for col in columns:
                v, m = src[col.name]
                if col.name in nulls_only:
                    v, m = np.broadcast_to(v[:1], (b - a,)), np.zeros(b - a, bool)
                else:
                    v, m = (_gathered(v, order, a, b, "values"),
                            _gathered(m, order, a, b, "valid"))
                for g, (lo, hi) in enumerate(spans):
                    groups[g].append(w.encode_chunk(col, v[lo:hi],
                                                    None if m is None else m[lo:hi]))
            w.add_encoded(groups, *ranges)
            return w.commit(sync_dir=False)

        try:
            done = self._map(write, range(len(pieces)))
            concurrent.futures.wait(syncs)
            entries = [d.result() if isinstance(d, concurrent.futures.Future) else d
                       for d in done]
            for part in {w.part for w in writers}:          # the renames, durable: then commit
                fsync_dir(part)
        except BaseException:
            concurrent.futures.wait(syncs)       # (a file renamed but not committed is removed
            for w in writers:                    # on the next open, as a killed writer's is)
                w.abort()
            raise
        self._commit(schema, entries)             # the commit: one line, all the files
        return entries

    def _map(self, fn, items) -> list:
        """``fn`` over ``items`` on the store's threads (the numba loops, zstd and the reads'
        and writes' system calls release the GIL), in order; the first error is raised after
        every call has ended (an append's files already written by the others stay
        uncommitted, removed on the next open)."""
        items = list(items)
        if len(items) < 2 or self.threads < 2 or _on_store_thread():
            return [fn(x) for x in items]
        futs = [self._threads().submit(fn, x) for x in items]
        concurrent.futures.wait(futs)
        return [f.result() for f in futs]

    def _io(self) -> concurrent.futures.ThreadPoolExecutor:
        """The thread that fsyncs and renames an append's files while the store's threads
        encode the next ones (an fsync waits on the disk: 0.14 s of the benchmark day's 2.0 s
        of one thread, in which a core sat idle)."""
        if self._io_pool is None:
            self._io_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="tickstore-io")
        return self._io_pool

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        """The store's threads, kept from call to call (with the decoders' buffers and zstd
        contexts, and the writer's scratch, which are per thread)."""
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.threads, thread_name_prefix="tickstore")
        return self._pool

    def _conform(self, schema: str, data) -> pa.Table:
        _check_schema(schema)
        want = arrow_schema(schema)
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        elif type(data).__name__ == "DataFrame" and hasattr(data, "columns"):   # pandas
            missing = [f.name for f in want if f.name not in data.columns]
            if missing:
                raise StoreError(f"The rows to append do not have the `{schema}` schema: "
                                 f"missing {missing}.")
            try:
                data = pa.Table.from_pandas(data, schema=want, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
                raise StoreError(f"The DataFrame to append does not convert to the `{schema}` "
                                 f"schema: {e}") from e
        elif not isinstance(data, pa.Table):
            try:
                data = pa.Table.from_batches(list(data), schema=want)
            except (pa.ArrowInvalid, TypeError) as e:
                raise StoreError(f"The batches to append do not have the `{schema}` schema: "
                                 f"{e}") from e
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
        nulls = [f.name for f in want if not f.nullable and data.column(f.name).null_count]
        if nulls:
            first = int(np.argmax(data.column(nulls[0]).is_null().to_numpy(zero_copy_only=False)))
            raise StoreError(f"The `{schema}` rows to append have null values in "
                             f"{', '.join(nulls)}, which cannot be null (first: {nulls[0]} at "
                             f"row {first}).")
        return data.select(want.names).cast(want)

    def compact(self, schema: str | None = None, *, date: str | None = None,
                min_files: int = 2) -> list[FileEntry]:
        """Merge each slot's files into one (for ``schema``, or every schema; the slots of one
        ``date``, or every slot with at least ``min_files`` files). Each slot's merge is one
        commit: readers see the slot's old files or its new one. Memory: about one batch per
        merged file. Returns the new files' entries."""
        self._require_writer()
        schemas = [schema] if schema is not None else list(RECORD_TYPES)
        for s in schemas:
            _check_schema(s)
        out = []
        for s in schemas:
            by_slot: dict[int, list[FileEntry]] = {}
            for e in self._live(s):
                by_slot.setdefault(e.slot, []).append(e)
            todo = [es for _, es in sorted(by_slot.items())
                    if (date is None or es[0].date == str(date)) and len(es) >= max(min_files, 1)]
            out += self._map(lambda es: self._merge_slot(s, es), todo) if todo else []
        self._collect()
        return out

    def _merge_slot(self, schema: str, entries: list[FileEntry]) -> FileEntry:
        cols = arrow_schema(schema).names
        runs = self._slot_runs(entries)          # the instruments counted, as an append does
        w = _PartWriter(self, schema, entries[0].slot, min(e.ts_min for e in entries),
                        sum(e.rows for e in entries), max(runs.size, 1))
        try:
            w.bounds = _group_bounds(runs, w.rg)
            for t in self._slot_stream(entries, cols, BATCH_ROWS):
                w.add(t, *_keys(t))
            new = w.commit()
        except BaseException:
            w.abort()
            raise
        if new.rows != sum(e.rows for e in entries):
            raise StoreError(f"Compacting {schema} {entries[0].date}: read {new.rows} rows from "
                             f"files whose catalog entries say {sum(e.rows for e in entries)}.")
        with self._commit_lock:
            self._commit(schema, [new], [e.path for e in entries])
        return new

    def _slot_runs(self, entries: list[FileEntry]) -> np.ndarray:
        """The rows of each instrument in the files of ``entries`` together, in instrument
        order: the runs of a merge of the files. Their ``instrument_id`` columns are read
        batch by batch; each file is sorted by instrument, so a batch's runs are where the
        id changes."""
        ids, counts = [], []
        for e in entries:
            try:
                for b in self._fragment(e).to_batches(columns=["instrument_id"],
                                                      batch_size=BATCH_ROWS):
                    v = b.column(0).to_numpy()
                    runs = _runs(v)
                    ids.append(v[np.cumsum(runs) - runs].astype(np.int64))
                    counts.append(runs)
            except (OSError, pa.ArrowInvalid) as err:
                raise StoreError(f"The committed file {self.root / e.path} cannot be "
                                 f"read: {err}") from err
        if not ids:
            return np.zeros(0, np.int64)
        u, back = np.unique(np.concatenate(ids), return_inverse=True)
        return np.bincount(back, np.concatenate(counts), u.size).astype(np.int64)

    # -- reads --------------------------------------------------------------------------------

    def symbol_map(self, date=None) -> dict[str, dict[str, int]]:
        """``{date: {symbol: instrument_id}}`` from the stored ``definitions`` (one date's, or
        every date's)."""
        lo = hi = None
        if date is not None:
            lo = _ns(date, "date") // NS_PER_DAY * NS_PER_DAY
            hi = lo + NS_PER_DAY
        with self.reading():
            plan, lo, hi = self._plan("definitions", None, None, lo, hi)
            defs = self._read_planned("definitions", plan, lo, hi,
                                      ["ts_event", "symbol", "instrument_id"], None)
        out: dict[str, dict[str, int]] = {}
        days = (defs.column("ts_event").cast(pa.int64()).to_numpy() // NS_PER_DAY)
        for day, sym, inst in zip(days, defs.column("symbol").to_pylist(),
                                  defs.column("instrument_id").to_pylist()):
            out.setdefault(_date(int(day)), {})[sym.decode("ascii", "replace").strip()] = inst
        return out

    def _plan(self, schema, symbols, instruments, start, end):
        """The live files to read, each with the instrument ids wanted on its date (None: all),
        and the time bounds."""
        _check_schema(schema)
        lo, hi = _ns(start, "start"), _ns(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise StoreError(f"The `start` ({start}) is after the `end` ({end}).")
        if symbols is not None and instruments is not None:
            raise StoreError("Give `symbols` or `instruments`, not both.")
        inst = None if instruments is None else np.unique(np.asarray(instruments, np.int64))
        entries = [e for e in self._live(schema) if e.overlaps(inst, lo, hi)]
        if symbols is None:
            return [(e, inst) for e in entries], lo, hi
        if isinstance(symbols, str):
            symbols = [symbols]
        want = [str(s).strip() for s in symbols]
        smap = self.symbol_map()
        found = {s for m in smap.values() for s in m if s in want}
        unknown = [s for s in want if s not in found]
        if unknown:
            raise StoreError(f"Unknown symbol(s) {unknown}: not in the stored `definitions` "
                             f"({sum(len(m) for m in smap.values())} symbols on "
                             f"{len(smap)} dates).")
        plan, by_date = [], {}
        for e in entries:
            ids = by_date.get(e.date)
            if ids is None:                  # one id set a date (the same object)
                m = smap.get(e.date, {})
                ids = by_date[e.date] = np.unique(np.array([m[s] for s in want if s in m],
                                                           np.int64))
            if ids.size and e.overlaps(ids, lo, hi):
                plan.append((e, ids))
        return plan, lo, hi

    def _filter(self, inst, lo, hi, extra):
        flt = extra
        if inst is not None:
            cond = pc.field("instrument_id").isin(pa.array(inst, pa.uint32()))
            flt = cond if flt is None else flt & cond
        for bound, ge in ((lo, True), (hi, False)):
            if bound is not None:
                s = pa.scalar(bound, pa.timestamp("ns", tz="UTC"))
                cond = pc.field("ts_event") >= s if ge else pc.field("ts_event") < s
                flt = cond if flt is None else flt & cond
        return flt

    def _columns(self, schema, columns) -> list[str]:
        _check_schema(schema)
        want = arrow_schema(schema)
        cols = list(want.names) if columns is None else list(columns)
        bad = [c for c in cols if c not in want.names]
        if bad:
            raise StoreError(f"Unknown column(s) {bad} for `{schema}` (columns: "
                             f"{', '.join(want.names)}).")
        return cols

    def _empty(self, schema, cols) -> pa.Table:
        want = arrow_schema(schema)
        return pa.Table.from_batches([], schema=pa.schema([want.field(c) for c in cols]))

    def _fragment(self, e: FileEntry) -> ds.ParquetFileFragment:
        """The committed file of ``e`` as a dataset fragment (pyarrow's reader: filters' pruning
        by statistics, and files the store's decoders do not read), its footer read and parsed
        once and kept (those used last, up to :data:`FRAGMENT_MEMORY`): committed files never
        change."""
        frag = self._fragments.get(e.path)
        if frag is None:
            path = str(self.root / e.path)
            try:
                frag = _FORMAT.make_fragment(path, _LOCAL)
                frag.ensure_complete_metadata()
            except (OSError, pa.ArrowInvalid) as err:
                raise StoreError(f"The committed file {path} cannot be read: {err}") from err
            self._fragments.put(e.path, frag, FOOTER_SCALE * frag.metadata.serialized_size)
        return frag

    def _footer(self, e: FileEntry) -> tuple:
        """What a query needs of a file's footer: its row groups' instrument and time ranges
        (:func:`_group_keys`), where its column chunks lie (:func:`tickstore.reader.layout`;
        None for a file the store's decoders do not read) and its path; kept (those used last,
        up to :data:`FOOTER_MEMORY`), so that a query prunes row groups and reads them without
        parsing a footer. pyarrow's parsed footer is kept apart (:meth:`_fragment`): it takes
        about 30 times the memory (150 against 3-5 KiB for a file of a live writer's append),
        and a day of such files thrashed one cache for both."""
        hit = self._footers.get(e.path)
        if hit is not None:
            return hit
        frag = self._fragments.get(e.path)
        path = str(self.root / e.path)
        try:
            md = frag.metadata if frag is not None else pq.read_metadata(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise StoreError(f"The committed file {path} cannot be read: {err}") from err
        groups = _group_keys(md)
        try:
            lay = reader.layout(md, arrow_schema(e.schema))
        except reader.Unsupported:
            lay = None
        kept = (groups, lay, path)
        self._footers.put(e.path, kept, 1024 + groups.nbytes + (
            0 if lay is None else lay.chunks.nbytes + 128 * len(lay.columns)))
        return kept

    def _picked(self, items, lo, hi) -> tuple[list, bool]:
        """The row groups to read of ``items`` (a date's ``(entry, ids)``, with one id set):
        ``(entry, group ids)`` of the files with any, by :meth:`_pruned`'s rule for all files
        at once, and whether some group kept holds rows not asked for."""
        inst = items[0][1]
        if any(x[1] is not inst for x in items):
            out, cut = [], False
            for e, ids in items:
                keep, c = self._pruned(e, ids, lo, hi)
                if keep is not None:
                    out.append((e, keep))
                    cut |= c
            return out, cut
        keys = [self._footer(e)[0] for e, _ in items]
        keep, exact = _keep(np.concatenate(keys), inst, lo, hi)
        out = []
        at = 0
        for (e, _), k in zip(items, keys):
            ids = np.flatnonzero(keep[at:at + len(k)])
            if ids.size:
                out.append((e, ids.tolist()))
            at += len(k)
        return out, bool((keep & ~exact).any())

    def _pruned(self, e: FileEntry, inst, lo, hi) -> tuple[list[int] | None, bool]:
        """The row groups of ``e`` that can hold rows of ``inst`` (None: all) in ``[lo, hi)``
        (None: open), by the kept statistics, and whether some of them hold other rows too (the
        rows then need the filter). None when no row group can."""
        keep, exact = _keep(self._footer(e)[0], inst, lo, hi)
        if not keep.any():
            return None, False
        return np.flatnonzero(keep).tolist(), bool((keep & ~exact).any())

    def read(self, schema: str, *, symbols=None, instruments=None, start=None, end=None,
             columns=None, filter=None) -> pa.Table:
        """The rows of ``schema`` for ``symbols`` (per date, from the stored definitions) or
        ``instruments`` (ids; all when both are None) with ``ts_event`` in ``[start, end)`` and
        matching ``filter`` (a ``pyarrow.compute`` expression): slot by slot in time order,
        sorted by (instrument_id, ts_event) within a slot (rows equal in both in the order
        they were appended)."""
        cols = self._columns(schema, columns)
        with self.reading():
            plan, lo, hi = self._plan(schema, symbols, instruments, start, end)
            return self._read_planned(schema, plan, lo, hi, cols, filter)

    def _read_planned(self, schema, plan, lo, hi, cols, extra) -> pa.Table:
        """The files of ``plan`` read day by day, each day's files as one dataset (its files
        read in parallel), in slot order; slots with several files (appends not yet compacted)
        are put in order by a stable sort, so rows equal in (instrument, time) keep the order
        of their commits."""
        need = list(dict.fromkeys(cols + ["instrument_id", "ts_event"]))
        by_date: dict[str, list] = {}
        for e, inst in plan:                      # catalog order: the order of the commits
            by_date.setdefault(e.date, []).append((e, inst))
        parts = []
        for date in sorted(by_date):
            items = sorted(by_date[date], key=lambda x: x[0].slot)     # stable
            entries = [e for e, _ in items]
            picked, cut = self._picked(items, lo, hi)
            if not picked:
                continue
            t = None
            wanted = self._filter_columns(schema, need, extra)
            if wanted is not None and extra is not None:
                picked = self._by_statistics(picked, extra)
                if not picked:
                    continue
            bounds = (items[0][1], lo, hi) if cut else None     # one id set a date (symbols)
            if wanted is not None:
                t = self._read_native(schema, picked, wanted, bounds)
                if t is not None and extra is not None:
                    t = t.filter(extra)
            if t is None:
                t = self._read_arrow(schema, picked, need, extra, items, lo, hi)
                if cut:             # the rows of groups kept that are not all wanted
                    t = t.filter(self._filter(*bounds, None))
            slots = [e.slot for e in entries]
            if len(set(slots)) < len(slots) and t.num_rows:
                inst, ts = _keys(t)
                t = t.take(pa.array(np.lexsort((ts, inst, ts // self._slot_of[schema]))))
            parts.append(t.select(cols))
        if not parts:
            return self._empty(schema, cols)
        return pa.concat_tables(parts)

    def _by_statistics(self, picked, extra) -> list:
        """``picked`` (``(entry, group ids)``) less the row groups whose statistics show that no
        row of theirs matches the expression ``extra`` (pyarrow's simplification of it against
        each group's statistics, as its scanner prunes)."""
        out = []
        for e, ids in picked:
            frag = self._fragment(e)
            if len(ids) < frag.metadata.num_row_groups:
                frag = frag.subset(row_group_ids=ids)
            ok = {rg.id for rg in frag.subset(filter=extra).row_groups}    # ids in the file
            keep = [g for g in ids if g in ok]
            if keep:
                out.append((e, keep))
        return out

    def _filter_columns(self, schema, need, extra) -> list[str] | None:
        """The columns the decoders read for ``need`` and the filter expression ``extra``: those
        and the ones ``extra`` names (all the schema's when that is not enough); None for an
        expression that does not apply to the schema (pyarrow's scanner then says why)."""
        if extra is None:
            return need
        want = arrow_schema(schema)
        text = str(extra)
        named = [c for c in want.names if re.search(rf"\b{re.escape(c)}\b", text)]
        for cols in (list(dict.fromkeys(need + named)), list(want.names)):
            try:
                pa.Table.from_batches([], schema=pa.schema([want.field(c) for c in cols])).filter(
                    extra)
                return cols
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
                    KeyError):
                continue
        return None

    def _read_native(self, schema, picked, need, bounds=None) -> pa.Table | None:
        """The row groups ``picked`` (``(entry, group ids)``, in order) by the store's own
        decoders (:mod:`tickstore.reader`), a column's pages of all files at once, the columns
        on the store's threads; None when a file is not one they decode. With ``bounds``
        (instrument ids, sorted, or None; start; end), only the rows in them: the key columns
        are decoded first (the others' pages decompressed meanwhile), and of the others only
        the rows they pick, so that a minute of long slots' files costs little more than their
        pages' zstd."""
        parts = []
        for e, ids in picked:
            _, lay, path = self._footer(e)
            if lay is None:
                return None
            parts.append((path, lay, ids))
        want = arrow_schema(schema)
        fields = [want.field(c) for c in need]
        out_schema = pa.schema(fields)
        try:
            got = reader.fetch(parts, fields)
            if got is None:
                return out_schema.empty_table()
            names = [f.name for f in fields]
            sel = None
            if bounds is None:
                cols = reader.decode(got, names, self._map)
            else:
                keys = ["instrument_id", "ts_event"]
                cols, sel = reader.decode_within(
                    got, keys, names, lambda k: self._rows_within(k, got.group_rows, bounds),
                    self._map)
                if sel is not None:
                    rows = int((sel[:, 1] - sel[:, 0]).sum())
                    for n in keys:
                        arr = cols[n]
                        dt = np.dtype(f"u{arr.type.bit_width // 8}")
                        dst = np.empty(rows, dt)
                        _take_ranges(np.frombuffer(arr.buffers()[1], dt, count=len(arr)), sel,
                                     dst)
                        cols[n] = pa.Array.from_buffers(arr.type, rows, [None, pa.py_buffer(dst)])
        except reader.Unsupported:
            return None
        except (OSError, reader.CorruptFile) as err:
            raise StoreError(f"The committed file {err}") from err
        t = pa.Table.from_arrays([cols[f.name] for f in fields], schema=out_schema)
        if bounds is not None and sel is None:
            t = t.filter(self._filter(*bounds, None))
        return t

    @staticmethod
    def _rows_within(keys, group_rows, bounds) -> np.ndarray | None:
        """The ranges of rows (:func:`_wanted`) of the decoded key columns ``keys`` within
        ``bounds``; None when they cannot be found so (nulls, rows out of order)."""
        inst, ts = keys["instrument_id"], keys["ts_event"]
        if inst.null_count or ts.null_count:
            return None
        ids, lo, hi = bounds
        i64 = np.iinfo(np.int64)
        sel, ok = _wanted(np.frombuffer(inst.buffers()[1], np.uint32, count=len(inst)),
                          np.frombuffer(ts.buffers()[1], np.int64, count=len(ts)),
                          group_rows, np.zeros(0, np.int64) if ids is None else ids,
                          ids is None, i64.min if lo is None else lo,
                          i64.max if hi is None else hi)
        return sel if ok else None

    def _read_arrow(self, schema, picked, need, extra, items, lo, hi) -> pa.Table:
        """The row groups ``picked`` through pyarrow's dataset scanner, with ``extra``."""
        frags = []
        for e, ids in picked:
            frag = self._fragment(e)
            frags.append(frag if len(ids) == frag.metadata.num_row_groups
                         else frag.subset(row_group_ids=ids))
        try:
            return ds.FileSystemDataset(frags, arrow_schema(schema), _FORMAT, _LOCAL).to_table(
                columns=need, filter=extra)
        except (OSError, pa.ArrowInvalid) as err:
            self._name_bad_file([e for e, _ in items], need,
                                self._filter(items[0][1], lo, hi, extra), err)
            raise

    def _name_bad_file(self, entries, need, flt, err) -> None:
        """Raise a StoreError naming the first of ``entries`` that cannot be read."""
        for e in entries:
            try:
                self._fragment(e).to_table(columns=need, filter=flt)
            except (OSError, pa.ArrowInvalid) as bad:
                raise StoreError(f"The committed file {self.root / e.path} cannot be read: "
                                 f"{bad}") from bad
        raise StoreError(f"The files of {entries[0].date} cannot be read: {err}") from err

    def scan(self, schema: str, *, symbols=None, instruments=None, start=None, end=None,
             columns=None, filter=None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """:meth:`read`'s rows, in the same order, as ``RecordBatch``es of at most
        ``batch_rows`` rows; memory is about a row group per file of the slot being read."""
        cols = self._columns(schema, columns)
        with self.reading():
            plan, lo, hi = self._plan(schema, symbols, instruments, start, end)
            slots: dict[int, list] = {}
            for e, inst in plan:
                slots.setdefault(e.slot, []).append((e, inst))
            need = list(dict.fromkeys(cols + ["instrument_id", "ts_event"]))
            wanted = self._filter_columns(schema, need, filter)      # once for every file
            for slot in sorted(slots):
                for t in self._slot_stream([e for e, _ in slots[slot]], cols, batch_rows,
                                           [(lo, hi, inst, filter, wanted)
                                            for _, inst in slots[slot]]):
                    for b in t.select(cols).to_batches(max_chunksize=batch_rows):
                        if b.num_rows:
                            yield b

    def _file_stream(self, e: FileEntry, need, bounds, batch_rows) -> Iterator[pa.RecordBatch]:
        """One file's rows in file order, a row group at a time: the groups that can hold rows
        within ``bounds`` (``(lo, hi, instruments, filter, columns to read)``, the last from
        :meth:`_filter_columns`; None: every row), chosen by the kept statistics and the
        filter's, read by the store's decoders (pyarrow's scanner for a filter they cannot
        apply or a file they do not take) and filtered where a group holds other rows too."""
        lo, hi, inst, extra, wanted = bounds or (None, None, None, None, need)
        ids, cut = self._pruned(e, inst, lo, hi)
        if ids is None:
            return
        flt = self._filter(inst, lo, hi, extra) if cut or extra is not None else None
        _, lay, path = self._footer(e)
        want = arrow_schema(e.schema)
        if wanted is not None and extra is not None:
            ids = self._by_statistics([(e, ids)], extra)
            ids = ids[0][1] if ids else []
        fields = [want.field(c) for c in wanted or need]
        for g in ids:
            t = None
            if lay is not None and wanted is not None:
                try:            # (columns in turn: a row group is too small for threads)
                    cols = reader.read([(path, lay, [g])], fields)
                    t = pa.Table.from_arrays([cols[f.name] for f in fields],
                                             schema=pa.schema(fields))
                except reader.Unsupported:
                    lay = None
                except (OSError, reader.CorruptFile) as err:
                    raise StoreError(f"The committed file {err}") from err
                if t is not None and flt is not None:
                    t = t.filter(flt)
                if t is not None and len(fields) > len(need):
                    t = t.select(need)          # (as pyarrow's scanner gives them)
            if t is None:
                try:
                    t = self._fragment(e).subset(row_group_ids=[g]).to_table(
                        columns=need, filter=flt)
                except (OSError, pa.ArrowInvalid) as err:
                    raise StoreError(f"The committed file {path} cannot be read: {err}") from err
            yield from t.to_batches(max_chunksize=batch_rows)

    def _slot_stream(self, entries, cols, batch_rows, bounds=None) -> Iterator[pa.Table]:
        """One slot's files as one sorted stream (merged when there are several), each within
        its ``bounds`` (:meth:`_file_stream`; None: every row)."""
        need = list(dict.fromkeys(list(cols) + ["instrument_id", "ts_event"]))
        streams = [self._file_stream(e, need, b, batch_rows)
                   for e, b in zip(entries, bounds or [None] * len(entries))]
        if len(streams) == 1:
            return (pa.Table.from_batches([b]) for b in streams[0])
        return _merge_sorted(streams)

    def to_pandas(self, schema: str, **kw):
        """:meth:`read` as a pandas DataFrame (timestamps tz-aware UTC, ns)."""
        return self.read(schema, **kw).to_pandas()

    def to_polars(self, schema: str, **kw):
        """:meth:`read` as a polars DataFrame."""
        import polars as pl
        return pl.from_arrow(self.read(schema, **kw))

    def to_cudf(self, schema: str, **kw):
        """:meth:`read` as a cuDF DataFrame (needs cuDF and a GPU)."""
        try:
            import cudf
        except ImportError as e:
            raise StoreError("to_cudf needs cuDF (RAPIDS), which is not installed here; "
                             "read() or to_pandas() give the same rows.") from e
        return cudf.DataFrame.from_arrow(self.read(schema, **kw))

    def files(self, schema: str, *, symbols=None, instruments=None, start=None,
              end=None) -> list[FileEntry]:
        """The committed files of ``schema`` that may hold the rows asked for, from the
        catalog alone."""
        plan, _, _ = self._plan(schema, symbols, instruments, start, end)
        return [e for e, _ in plan]

    def schemas(self) -> list[str]:
        """The schemas that have committed rows."""
        return [s for s in RECORD_TYPES if self._live(s)]

    # -- SQL, as-of joins, Dask ---------------------------------------------------------------

    def sql(self, query: str, params=None) -> pa.Table:
        """Run ``query`` with DuckDB, where each schema is a view over its committed files and
        ``symbols`` a view (date, symbol, instrument_id) of the symbol map. Timestamps are
        ``TIMESTAMPTZ_NS``: nanoseconds kept exact. Returns an Arrow table. The connection and
        its views are kept until a commit changes the catalog."""
        from tickstore.sql import connect, run_sql
        with self.reading():
            key = self._catalog_key()
            with self._sql_lock:                  # one query at a time on the connection
                if self._duck is None or self._duck[0] != key:
                    if self._duck is not None:
                        self._duck[1].close()
                    self._duck = (key, connect(self))     # views of the catalog as it is now
                return run_sql(self._duck[1], query, params)

    def _catalog_key(self) -> tuple:
        """Changes whenever a commit (or a writer's recovery) changes a catalog."""
        out = []
        for cat in sorted((self.root / "_catalog").glob("*.jsonl")):
            st = cat.stat()
            out.append((cat.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def asof_join(self, trades: pa.Table, quotes: pa.Table, **kw) -> pa.Table:
        """:func:`tickstore.asof.asof_join`."""
        from tickstore.asof import asof_join
        return asof_join(trades, quotes, **kw)

    def to_dask(self, schema: str, **kw):
        """:func:`tickstore.scale.to_dask` on this store."""
        from tickstore.scale import to_dask
        return to_dask(self.root, schema, **kw)

    # -- checks -------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every committed file against its catalog entry (size, CRC-32, row count,
        schema, day and slot, sort order, instrument and time ranges) and the tree for files no catalog
        knows. Reads every byte of every file."""
        rep = VerifyReport()
        with self.reading():
            live = set()
            for schema in RECORD_TYPES:
                cat = self._catalog(schema)
                commits, good, size = _read_catalog(cat)
                if good != size:
                    rep.problems.append(Problem(
                        cat.relative_to(self.root).as_posix(),
                        f"line {len(commits) + 1} is torn or fails its CRC (the writer's next "
                        f"open truncates it)"))
                for e in self._live(schema):
                    live.add(e.path)
                    rep.files += 1
                    rep.rows += e.rows
                    rep.bytes += e.bytes
                    rep.problems += self._verify_file(schema, e)
            for schema, p in self._part_files():
                rel = p.relative_to(self.root).as_posix()
                if rel in live:
                    continue
                if PART_NAME.match(p.name):
                    rep.pending_deletion.append(rel)
                else:
                    rep.problems.append(Problem(rel, "a foreign file: no catalog lists it and "
                                                     "it is not named as the store's files are"))
        return rep

    def _verify_file(self, schema: str, e: FileEntry) -> list[Problem]:
        path = self.root / e.path
        bad = lambda what: [Problem(e.path, what)]            # noqa: E731
        if not path.is_file():
            return bad("missing (the catalog commits it)")
        if path.stat().st_size != e.bytes:
            return bad(f"{path.stat().st_size} bytes, the catalog says {e.bytes}")
        crc = _file_crc(path)
        if crc != e.crc32:
            return bad(f"CRC-32 {crc:08x}, the catalog says {e.crc32:08x}")
        try:
            t = pq.read_table(path, page_checksum_verification=True)
        except (OSError, pa.ArrowInvalid) as err:
            return bad(f"cannot be read as Parquet: {err}")
        out = []
        want = arrow_schema(schema)
        if not t.schema.remove_metadata().equals(want.remove_metadata()):
            out += bad(f"schema is not `{schema}`'s: {t.schema.remove_metadata()}")
            return out
        if t.num_rows != e.rows:
            out += bad(f"{t.num_rows} rows, the catalog says {e.rows}")
        if not t.num_rows:
            return out
        inst, ts = _keys(t)
        step = np.flatnonzero((np.diff(inst) < 0) | ((np.diff(inst) == 0) & (np.diff(ts) < 0)))
        if step.size:
            out += bad(f"not sorted by (instrument_id, ts_event) at row {int(step[0]) + 1}")
        if (int(inst.min()), int(inst.max())) != (e.instrument_min, e.instrument_max):
            out += bad(f"instruments {inst.min()}..{inst.max()}, the catalog says "
                       f"{e.instrument_min}..{e.instrument_max}")
        if (int(ts.min()), int(ts.max())) != (e.ts_min, e.ts_max):
            out += bad(f"ts_event {ts.min()}..{ts.max()}, the catalog says {e.ts_min}..{e.ts_max}")
        days = np.unique(ts // NS_PER_DAY)
        if days.size != 1 or _date(int(days[0])) != e.date or f"date={e.date}" not in e.path:
            out += bad(f"rows of {[_date(int(d)) for d in days[:3]]} in the partition of {e.date}")
        else:
            outside = (ts < e.slot) | (ts >= e.slot + self._slot_of[schema])
            if outside.any():
                out += bad(f"row {int(np.argmax(outside))} is outside the file's "
                           f"{self.slots[schema]} slot from {np.datetime64(e.slot, 'ns')}")
        return out
