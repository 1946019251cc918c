"""Raw journal: an append-only, crash-safe, tamper-evident record of accepted MoldUDP64 packets.

Live capture writes every accepted packet with its receive time (and every gap it declares);
every later stage can replay from the journal. A journal is a directory holding two files.

``journal.bin`` (the truth) is a run of blocks. Each block is a 144-byte header, then one zstd
frame holding the block's records. Header fields, little-endian (:data:`HEADER_DTYPE`)::

    offset  size  field
    0       4     magic b"TPJB"
    4       2     version (1)
    6       2     flags: bit 0 F_ORDERED, the packets' sequence numbers never decrease in the block
    8       8     block number (0, 1, 2, ... in file order)
    16      8     seq_min   smallest first-sequence of a packet in the block (0: no packet)
    24      8     seq_max   largest first-sequence of a packet in the block
    32      8     seq_end   one past the last sequence number any packet covers (max seq + count)
    40      8     ts_min    smallest ts of any record (UTC ns)
    48      8     ts_max    largest ts of any record
    56      4     n_records packets and gaps
    60      4     n_packets
    64      4     raw_length        bytes of the records before compression
    68      4     compressed_length bytes of the zstd frame that follows the header
    72      4     payload_crc       CRC-32 of the zstd frame as stored
    76      32    prev_hash         the previous block's hash (32 zero bytes for block 0)
    108     32    hash              SHA-256(header bytes 0..107 || the uncompressed records)
    140     4     header_crc        CRC-32 of header bytes 0..139

The records of a block are stored by column (no per-record walk on read), for ``n`` records::

    ts_recv  <u8[n]   receive time of a packet / time a gap was declared (UTC ns)
    seq      <u8[n]   a packet's first sequence number (its MoldUDP64 header) / a gap's first
    count    <u8[n]   a packet's message count (0 for heartbeats and end of session) / gap length
    length   <u2[n]   packet bytes (0 for a gap)
    kind     u1[n]    K_PACKET (0) or K_GAP (1)
    data     packets back to back, the whole MoldUDP64 packet as received

so ``raw_length = 27 * n + sum(length)``. The hash chains the blocks: changing, dropping or
reordering any block breaks the chain from there on; ``JournalWriter.head`` gives the last hash
to anchor elsewhere. ``payload_crc`` pins the stored bytes, so even a flip that zstd would decode
to the same records is seen.

``index.bin`` (derived, repairable) has one 72-byte row per block (:data:`INDEX_DTYPE`): block
number, byte offset in ``journal.bin``, the sequence and time ranges and counts of its header.
:func:`find_block` picks candidate blocks from it (one vectorized comparison) instead of
reading every header.

Durability. :meth:`JournalWriter.flush` writes header and frame with one ``pwrite``, then
``fdatasync``\\s ``journal.bin``; only then is the block reported (its number returned) and its
index row appended (not synced: the index is rebuilt from the headers whenever it disagrees).
So a block that ``flush()`` returned survives any crash. Reopening for writing walks the
headers, checks the last block in full, and cuts a torn tail back to the end of the last
complete block (the cut bytes are kept beside the journal as ``journal.bin.torn-<offset>``, and
described by ``JournalWriter.recovered``). What is at the tail is classified as

* torn: shorter than a header, or a valid header whose frame runs past the end of the file (what
  a killed writer leaves). Readers warn (:class:`JournalWarning`) and stop before it.
* damaged: full length but failing its checks, with no valid block after it (a crash of the
  machine, or damage). Readers raise :class:`JournalError`; the writer cuts it like a torn tail.
* corrupt: a bad block with valid blocks after it. Everyone raises :class:`JournalError`
  (naming the file, block and byte offset); :func:`verify` lists every problem.

Order. Capture appends packets in sequence order. Packets appended below the highest sequence
already journaled (e.g. re-requested packets that fill a declared gap) are kept where they were
appended; :func:`read_journal` then sorts all packets by sequence (stable: ties keep append
order) in memory, and streams block by block otherwise. :func:`verify` counts such packets and
reports those that do not fall inside a declared gap (a duplicate, or sequence going back).

Thread safety: a :class:`JournalWriter` is used by one thread; an exclusive ``flock`` on
``journal.bin`` keeps a second writer (any process) out. Readers take no lock and see the blocks
complete when they start; they can run while a writer appends.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import tempfile
import time
import warnings
import zlib
from array import array
from collections import namedtuple
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import zstandard as zstd

from ingest import moldudp64 as M
from tickpipe.durable import fsync_dir
from tickpipe.errors import DecodeWarning, TickpipeError, located

DATA_FILE = "journal.bin"
INDEX_FILE = "index.bin"
MAGIC = b"TPJB"
VERSION = 1
F_ORDERED = 1                    # header flag: packets' sequence numbers never decrease
K_PACKET = 0
K_GAP = 1
ZERO_HASH = bytes(32)
MAX_BLOCK_BYTES = 1 << 30        # largest `block_bytes` (raw_length is a u32)
MAX_PACKET_LENGTH = 0xFFFF       # the u16 length column; a UDP payload is at most 65507 bytes
MIN_LEVEL = -(1 << 17)           # zstd's fastest ("negative") level

# -- layouts (declared once; offsets and the struct format are derived) ------------------------
HEADER_DTYPE = np.dtype([
    ("magic", "S4"), ("version", "<u2"), ("flags", "<u2"), ("block", "<u8"),
    ("seq_min", "<u8"), ("seq_max", "<u8"), ("seq_end", "<u8"),
    ("ts_min", "<u8"), ("ts_max", "<u8"),
    ("n_records", "<u4"), ("n_packets", "<u4"), ("raw_length", "<u4"),
    ("compressed_length", "<u4"), ("payload_crc", "<u4"),
    ("prev_hash", "u1", (32,)), ("hash", "u1", (32,)), ("header_crc", "<u4")])

INDEX_DTYPE = np.dtype([
    ("block", "<u8"), ("offset", "<u8"), ("seq_min", "<u8"), ("seq_max", "<u8"),
    ("seq_end", "<u8"), ("ts_min", "<u8"), ("ts_max", "<u8"), ("n_records", "<u4"),
    ("n_packets", "<u4"), ("compressed_length", "<u4"), ("flags", "<u4")])

RECORD_COLUMNS = (("ts_recv", "<u8"), ("seq", "<u8"), ("count", "<u8"), ("length", "<u2"),
                  ("kind", "u1"))


def _offset(dtype: np.dtype, name: str) -> int:
    return dtype.fields[name][1]


MAGIC_OFFSET = _offset(HEADER_DTYPE, "magic")
VERSION_OFFSET = _offset(HEADER_DTYPE, "version")
FLAGS_OFFSET = _offset(HEADER_DTYPE, "flags")
BLOCK_OFFSET = _offset(HEADER_DTYPE, "block")
SEQ_MIN_OFFSET = _offset(HEADER_DTYPE, "seq_min")
SEQ_MAX_OFFSET = _offset(HEADER_DTYPE, "seq_max")
SEQ_END_OFFSET = _offset(HEADER_DTYPE, "seq_end")
TS_MIN_OFFSET = _offset(HEADER_DTYPE, "ts_min")
TS_MAX_OFFSET = _offset(HEADER_DTYPE, "ts_max")
N_RECORDS_OFFSET = _offset(HEADER_DTYPE, "n_records")
N_PACKETS_OFFSET = _offset(HEADER_DTYPE, "n_packets")
RAW_LENGTH_OFFSET = _offset(HEADER_DTYPE, "raw_length")
COMPRESSED_LENGTH_OFFSET = _offset(HEADER_DTYPE, "compressed_length")
PAYLOAD_CRC_OFFSET = _offset(HEADER_DTYPE, "payload_crc")
PREV_HASH_OFFSET = _offset(HEADER_DTYPE, "prev_hash")
HASH_OFFSET = _offset(HEADER_DTYPE, "hash")
HEADER_CRC_OFFSET = _offset(HEADER_DTYPE, "header_crc")
HEADER_LENGTH = HEADER_DTYPE.itemsize                                 # 144
INDEX_ROW_LENGTH = INDEX_DTYPE.itemsize                              # 72
RECORD_FIXED = sum(np.dtype(t).itemsize for _, t in RECORD_COLUMNS)  # 27 bytes per record


def _struct_of(dtype: np.dtype) -> struct.Struct:
    codes = []
    for name in dtype.names:
        f = dtype.fields[name][0]
        if f.subdtype is not None or f.kind == "S":
            codes.append(f"{f.itemsize}s")
        else:
            codes.append({1: "B", 2: "H", 4: "I", 8: "Q"}[f.itemsize])
    s = struct.Struct("<" + "".join(codes))
    assert s.size == dtype.itemsize
    return s


_HEADER = _struct_of(HEADER_DTYPE)


class BlockHeader(namedtuple("BlockHeader", ("offset",) + HEADER_DTYPE.names)):
    """One parsed block header; ``offset`` is its byte offset in ``journal.bin``."""
    __slots__ = ()

    @property
    def end(self) -> int:
        """Byte offset just past the block's zstd frame."""
        return self.offset + HEADER_LENGTH + self.compressed_length

    @property
    def n_gaps(self) -> int:
        return self.n_records - self.n_packets

    def packed(self) -> bytes:
        return _HEADER.pack(*self[1:])


# -- errors ---------------------------------------------------------------------------------------

class JournalError(ValueError, TickpipeError):
    """A journal that is corrupt (or locked, or of an unknown version).

    Attributes ``path`` (the file), ``block`` (block number) and ``offset`` (byte offset in the
    file) say where; each may be ``None``.
    """

    def __init__(self, reason: str, *, path=None, block: int | None = None,
                 offset: int | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        self.block = block
        self.offset = offset
        super().__init__(located(reason, ("file", self.path), ("block", block),
                                 ("byte offset", offset)))


class JournalWarning(DecodeWarning):
    """A torn tail was ignored by a reader, or cut by a writer reopening the journal."""


@dataclass(frozen=True)
class Recovery:
    """What :class:`JournalWriter` cut from the tail of ``journal.bin`` when it reopened it."""
    offset: int          # where journal.bin now ends: the end of the last complete block
    bytes_cut: int
    block: int           # the number the cut block would have had
    reason: str
    saved_to: Path       # the cut bytes, kept beside the journal


# -- reading blocks ------------------------------------------------------------------------------

TORN, DAMAGED, CORRUPT = "torn", "damaged", "corrupt"


class _Tail(NamedTuple):
    offset: int
    block: int
    state: str           # TORN, DAMAGED or CORRUPT
    reason: str


def _parse_header(buf: bytes, offset: int) -> tuple[BlockHeader | None, str | None]:
    if buf[:4] != MAGIC:
        return None, f"bad magic {bytes(buf[:4])!r}, expected {MAGIC!r}"
    fields = _HEADER.unpack(buf)
    crc = zlib.crc32(buf[:HEADER_CRC_OFFSET])
    if crc != fields[-1]:
        return None, f"header CRC-32 is {crc:#010x}, the header says {fields[-1]:#010x}"
    if fields[1] != VERSION:
        return None, f"journal version {fields[1]} is not supported (this reader knows {VERSION})"
    return BlockHeader(offset, *fields), None


class _File:
    """``journal.bin`` opened for reading, with its size when opened."""

    def __init__(self, directory):
        self.path = Path(directory) / DATA_FILE
        self.fd = os.open(self.path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def pread(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.size - offset))
        out = os.pread(self.fd, n, offset)
        while len(out) < n:              # a short read only near EOF on odd file systems
            more = os.pread(self.fd, n - len(out), offset + len(out))
            if not more:
                break
            out += more
        return out

    def header_at(self, offset: int) -> tuple[BlockHeader | None, str | None]:
        return _parse_header(self.pread(offset, HEADER_LENGTH), offset)

    def find_header(self, start: int, chunk: int = 1 << 20) -> int:
        """Offset of the first valid block header at or after ``start``, or -1."""
        pos = start
        while pos < self.size:
            buf = self.pread(pos, chunk + len(MAGIC) - 1)
            k = buf.find(MAGIC)
            while k != -1:
                if self.header_at(pos + k)[0] is not None:
                    return pos + k
                k = buf.find(MAGIC, k + 1)
            pos += chunk
        return -1


def _walk(f: _File, start: int = 0, block: int = 0, prev: bytes = ZERO_HASH):
    """Headers of the complete blocks from ``start`` on, and what stopped the walk (or None).

    Only headers are read (the chain of ``prev_hash`` is checked); payloads are not.
    """
    heads: list[BlockHeader] = []
    off = start
    while off < f.size:
        left = f.size - off
        if left < HEADER_LENGTH:
            return heads, _Tail(off, block, TORN, f"torn tail: {left} bytes, shorter than the "
                                                  f"{HEADER_LENGTH}-byte block header")
        head, why = f.header_at(off)
        if head is None:
            state = CORRUPT if f.find_header(off + 1) >= 0 else DAMAGED
            return heads, _Tail(off, block, state, f"unreadable block header: {why}")
        if head.block != block:
            return heads, _Tail(off, block, CORRUPT,
                                f"block number {head.block} where block {block} belongs")
        if head.prev_hash != prev:
            return heads, _Tail(off, block, CORRUPT, "broken chain: the previous-block hash "
                                                     "does not match the previous block")
        if head.end > f.size:
            return heads, _Tail(off, block, TORN,
                                f"torn tail: the block's zstd frame has {left - HEADER_LENGTH} "
                                f"of {head.compressed_length} bytes")
        heads.append(head)
        off, block, prev = head.end, block + 1, head.hash
    return heads, None


def _content_hash(head: BlockHeader, raw) -> bytes:
    h = hashlib.sha256(head.packed()[:HASH_OFFSET])
    h.update(raw)
    return h.digest()


def _load(f: _File, head: BlockHeader, dctx) -> tuple[bytes | None, str | None]:
    """The block's uncompressed records, checked against its CRC, length and hash."""
    comp = f.pread(head.offset + HEADER_LENGTH, head.compressed_length)
    if len(comp) != head.compressed_length:
        return None, f"zstd frame has {len(comp)} of {head.compressed_length} bytes"
    crc = zlib.crc32(comp)
    if crc != head.payload_crc:
        return None, (f"payload CRC-32 is {crc:#010x}, the header says "
                      f"{head.payload_crc:#010x} (stored bytes changed)")
    try:
        declared = zstd.frame_content_size(comp)
        if declared != head.raw_length:
            return None, (f"zstd frame declares {declared} bytes, the header says "
                          f"{head.raw_length}")
        raw = dctx.decompress(comp)
    except zstd.ZstdError as e:
        return None, f"zstd frame does not decompress: {e}"
    if len(raw) != head.raw_length:
        return None, f"records are {len(raw)} bytes, the header says {head.raw_length}"
    if _content_hash(head, raw) != head.hash:
        return None, "SHA-256 of the block does not match its header"
    return raw, None


class _Cols(NamedTuple):
    ts_recv: np.ndarray
    seq: np.ndarray
    count: np.ndarray
    length: np.ndarray
    kind: np.ndarray
    base: int            # where the packet bytes start in the raw records


def _columns(raw: bytes, n: int) -> tuple[_Cols | None, str | None]:
    if RECORD_FIXED * n > len(raw):
        return None, f"{n} records need {RECORD_FIXED * n} bytes, the block has {len(raw)}"
    a = np.frombuffer(raw, np.uint8)
    cols, pos = [], 0
    for _, t in RECORD_COLUMNS:
        w = np.dtype(t).itemsize * n
        cols.append(a[pos:pos + w].view(t))
        pos += w
    cols = _Cols(*cols, pos)
    total = int(cols.length.sum(dtype=np.uint64))
    if pos + total != len(raw):
        return None, (f"record lengths add up to {total} bytes, the block holds "
                      f"{len(raw) - pos}")
    return cols, None


def _starts(length: np.ndarray) -> np.ndarray:
    s = np.zeros(length.shape[0], np.int64)
    np.cumsum(length[:-1], out=s[1:])
    return s


class Block(NamedTuple):
    """One block's records, as columns (what later stages replay without per-record Python)."""
    number: int
    offset: int              # byte offset of its header in journal.bin
    hash: bytes              # its SHA-256 (the chain)
    kind: np.ndarray         # uint8: K_PACKET or K_GAP
    ts_recv: np.ndarray      # uint64 UTC ns
    seq: np.ndarray          # uint64 packet's first sequence / gap's first sequence
    count: np.ndarray        # uint64 packet's message count / gap length
    length: np.ndarray       # uint16 packet bytes (0 for gaps)
    start: np.ndarray        # int64 where each record's bytes start in `data`
    data: np.ndarray         # uint8 packets back to back


def _open_blocks(directory):
    """Yield ``(head, cols, raw)`` for every complete block, in file order.

    Raises :class:`JournalError` at the first block that fails its checks (after yielding the
    blocks before it) and at a damaged or corrupt tail; warns and stops at a torn tail.
    """
    with _File(directory) as f:
        heads, tail = _walk(f)
        dctx = zstd.ZstdDecompressor()
        for head in heads:
            raw, why = _load(f, head, dctx)
            if raw is not None:
                cols, why = _columns(raw, head.n_records)
            if why is not None:
                raise JournalError(why, path=f.path, block=head.block, offset=head.offset)
            yield head, cols, raw
        _end_of_walk(f, tail)


def _end_of_walk(f: _File, tail: _Tail | None) -> None:
    if tail is None:
        return
    if tail.state == TORN:
        warnings.warn(f"{f.path}: ignored a torn tail of {f.size - tail.offset} bytes at byte "
                      f"offset {tail.offset} (block {tail.block}): {tail.reason}",
                      JournalWarning, stacklevel=4)
        return
    raise JournalError(tail.reason, path=f.path, block=tail.block, offset=tail.offset)


def read_blocks(directory) -> Iterator[Block]:
    """Every block's records as columns, in file (append) order; see :class:`Block`."""
    for head, c, raw in _open_blocks(directory):
        data = np.frombuffer(raw, np.uint8)[c.base:]
        yield Block(head.block, head.offset, head.hash, c.kind, c.ts_recv, c.seq, c.count,
                    c.length, _starts(c.length), data)


def block_headers(directory) -> list[BlockHeader]:
    """The headers of the complete blocks (read from ``journal.bin``, no payload checked)."""
    with _File(directory) as f:
        heads, tail = _walk(f)
        _end_of_walk(f, tail)
    return heads


def _in_order(heads: list[BlockHeader]) -> bool:
    last = None
    for h in heads:
        if h.n_packets == 0:
            continue
        if not h.flags & F_ORDERED or (last is not None and h.seq_min < last):
            return False
        last = h.seq_max
    return True


def read_journal(directory) -> Iterator[tuple[int, bytes]]:
    """``(ts_recv, packet bytes)`` for every packet, in sequence order.

    Streams block by block when the packets were appended in sequence order (the block headers
    say so); otherwise loads every packet and sorts by sequence (stable). Gaps are not yielded
    (:func:`read_gaps`). Raises :class:`JournalError` at a block that fails its checks, after
    yielding the packets before it; warns (:class:`JournalWarning`) at a torn tail.
    """
    with _File(directory) as f:
        heads, _ = _walk(f)
    if _in_order(heads):
        for _, c, raw in _open_blocks(directory):
            yield from _packets(c, raw)
        return
    seqs, ts, starts, ends, which, raws = [], [], [], [], [], []
    for _, c, raw in _open_blocks(directory):
        pk = np.flatnonzero(c.kind == K_PACKET)
        s = _starts(c.length)[pk] + c.base
        seqs.append(c.seq[pk])
        ts.append(c.ts_recv[pk])
        starts.append(s)
        ends.append(s + c.length[pk])
        which.append(np.full(pk.shape[0], len(raws), np.int64))
        raws.append(raw)
    if not raws:
        return
    order = np.argsort(np.concatenate(seqs), kind="stable")
    cat = [np.concatenate(x)[order].tolist() for x in (ts, starts, ends, which)]
    for t, a, b, w in zip(*cat):
        yield t, raws[w][a:b]


def _packets(c: _Cols, raw: bytes):
    """The per-packet loop, isolated: ``(ts, bytes)`` of each packet record of one block."""
    pk = np.flatnonzero(c.kind == K_PACKET)
    s = _starts(c.length)[pk] + c.base
    e = s + c.length[pk]
    for t, a, b in zip(c.ts_recv[pk].tolist(), s.tolist(), e.tolist()):
        yield t, raw[a:b]


def read_gaps(directory) -> list[tuple[int, int]]:
    """``(first_seq, count)`` of every declared gap, sorted by ``first_seq`` (stable).

    Only blocks whose header counts a gap are decompressed.
    """
    firsts, counts = [], []
    with _File(directory) as f:
        heads, tail = _walk(f)
        dctx = zstd.ZstdDecompressor()
        for head in heads:
            if head.n_gaps == 0:
                continue
            raw, why = _load(f, head, dctx)
            if raw is not None:
                c, why = _columns(raw, head.n_records)
            if why is not None:
                raise JournalError(why, path=f.path, block=head.block, offset=head.offset)
            g = c.kind == K_GAP
            firsts.append(c.seq[g])
            counts.append(c.count[g])
        _end_of_walk(f, tail)
    if not firsts:
        return []
    first, count = np.concatenate(firsts), np.concatenate(counts)
    order = np.argsort(first, kind="stable")
    return list(zip(first[order].tolist(), count[order].tolist()))


# -- index ---------------------------------------------------------------------------------------

def _rows(heads: list[BlockHeader]) -> np.ndarray:
    rows = np.zeros(len(heads), INDEX_DTYPE)
    for name in INDEX_DTYPE.names:
        rows[name] = [getattr(h, name) for h in heads]
    return rows


def _read_index(directory) -> tuple[np.ndarray, int]:
    """The whole rows of ``index.bin`` (empty if missing) and how many stray bytes follow."""
    try:
        buf = (Path(directory) / INDEX_FILE).read_bytes()
    except FileNotFoundError:
        return np.zeros(0, INDEX_DTYPE), 0
    n = len(buf) // INDEX_ROW_LENGTH
    return np.frombuffer(buf, INDEX_DTYPE, count=n).copy(), len(buf) - n * INDEX_ROW_LENGTH


def _row_matches(row, head: BlockHeader) -> bool:
    return all(int(row[name]) == int(getattr(head, name)) for name in INDEX_DTYPE.names)


def _holds(f: _File, head: BlockHeader, seq: int, dctx) -> bool:
    raw, why = _load(f, head, dctx)
    if raw is not None:
        c, why = _columns(raw, head.n_records)
    if why is not None:
        raise JournalError(why, path=f.path, block=head.block, offset=head.offset)
    s = np.uint64(seq)
    return bool(np.any((c.kind == K_PACKET) & (c.seq <= s) & (s - c.seq < c.count)))


def _candidates(seq_min, seq_end, n_packets, seq: int) -> np.ndarray:
    s = np.uint64(seq)
    return np.flatnonzero((n_packets > 0) & (seq_min <= s) & (s < seq_end))


def find_block(directory, seq: int) -> int | None:
    """The number of the first block holding a packet that carries sequence number ``seq``.

    ``None`` when no packet does (the sequence fell in a gap, or was never journaled).
    Candidate blocks come from ``index.bin`` (blocks the index has not caught up with are read
    from their headers); each candidate is decompressed to confirm. An index that disagrees with
    ``journal.bin`` is ignored with a :class:`JournalWarning`.
    """
    seq = int(seq)
    if not 0 <= seq < 1 << 64:
        raise ValueError(f"The `seq` must be in [0, 2**64), was {seq!r}.")
    rows, _ = _read_index(directory)
    dctx = zstd.ZstdDecompressor()
    with _File(directory) as f:
        # the index is trusted while its rows are consecutive and inside the file
        k, end = 0, 0
        while (k < rows.shape[0] and int(rows["block"][k]) == k and int(rows["offset"][k]) == end
               and end + HEADER_LENGTH + int(rows["compressed_length"][k]) <= f.size):
            end += HEADER_LENGTH + int(rows["compressed_length"][k])
            k += 1
        rows = rows[:k]
        for i in _candidates(rows["seq_min"], rows["seq_end"], rows["n_packets"], seq):
            head, _ = f.header_at(int(rows["offset"][i]))
            if head is None or not _row_matches(rows[i], head):
                warnings.warn(f"{Path(directory) / INDEX_FILE}: row {i} disagrees with "
                              f"{DATA_FILE}; reading block headers instead (reopening the "
                              f"journal for writing rebuilds the index)", JournalWarning,
                              stacklevel=2)
                rows, end = rows[:0], 0
                break
            if _holds(f, head, seq, dctx):
                return head.block
        prev = ZERO_HASH
        if rows.shape[0]:
            last, why = f.header_at(int(rows["offset"][-1]))
            if last is None:
                raise JournalError(f"unreadable block header: {why}", path=f.path,
                                   block=rows.shape[0] - 1, offset=int(rows["offset"][-1]))
            prev = last.hash
        heads, tail = _walk(f, end, rows.shape[0], prev)
        if tail is not None and tail.state == CORRUPT:
            raise JournalError(tail.reason, path=f.path, block=tail.block, offset=tail.offset)
        tab = _rows(heads)
        for i in _candidates(tab["seq_min"], tab["seq_end"], tab["n_packets"], seq):
            if _holds(f, heads[i], seq, dctx):
                return heads[i].block
    return None


# -- writer --------------------------------------------------------------------------------------

def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _u64_column(values, n: int, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != (n,):
        raise ValueError(f"The `{name}` must hold one value per packet ({n}), had shape "
                         f"{a.shape}.")
    if a.dtype == object or a.dtype.kind not in "iu":
        try:
            a = np.array([int(v) for v in a.tolist()], dtype=np.uint64)
        except (OverflowError, TypeError, ValueError):
            raise ValueError(f"The `{name}` must hold integers in [0, 2**64).") from None
    elif a.dtype.kind == "i" and n and int(a.min()) < 0:
        raise ValueError(f"The `{name}` must hold integers in [0, 2**64), had {int(a.min())}.")
    return a.astype(np.uint64, copy=False)


def _be(buf: np.ndarray, at: np.ndarray, width: int) -> np.ndarray:
    """Big-endian unsigned integers of ``width`` bytes at offsets ``at`` (bounds checked)."""
    out = np.zeros(at.shape[0], np.uint64)
    for k in range(width):
        out = (out << np.uint64(8)) | buf[at + k].astype(np.uint64)
    return out


class JournalWriter:
    """Appends accepted MoldUDP64 packets and declared gaps to the journal in ``directory``.

    Records collect in memory and are written as one block by :meth:`flush`, or automatically
    once their raw size reaches ``block_bytes``; ``level`` is the zstd level. The directory is
    created if needed. An existing journal is reopened for append: a torn or damaged tail is cut
    back to the end of the last complete block (:attr:`recovered`, a :class:`JournalWarning`),
    an index that disagrees with the blocks is rebuilt (:attr:`index_repaired`), and a corrupt
    journal (a bad block with good blocks after it) raises :class:`JournalError`. One writer per
    directory (``flock``); one thread per writer.
    """

    def __init__(self, directory, *, block_bytes: int = 1 << 20, level: int = 3):
        if not isinstance(block_bytes, int) or not 1 <= block_bytes <= MAX_BLOCK_BYTES:
            raise ValueError(f"The `block_bytes` must be an int in [1, {MAX_BLOCK_BYTES}], "
                             f"was {block_bytes!r}.")
        if not isinstance(level, int) or not MIN_LEVEL <= level <= zstd.MAX_COMPRESSION_LEVEL:
            raise ValueError(f"The `level` must be a zstd level in [{MIN_LEVEL}, "
                             f"{zstd.MAX_COMPRESSION_LEVEL}], was {level!r}.")
        self.path = Path(directory)
        self.block_bytes = block_bytes
        self.level = level
        self.recovered: Recovery | None = None
        self.index_repaired = False
        self._cctx = zstd.ZstdCompressor(level=level)
        self._fd = self._ifd = -1
        created_dir = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        data = self.path / DATA_FILE
        created = not data.exists()
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = -1
            raise JournalError("the journal is open for writing by another writer",
                               path=data) from None
        try:
            heads = self._recover()
            self._ifd = os.open(self.path / INDEX_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                0o644)
        except BaseException:
            self._close_fds()
            raise
        if created:
            fsync_dir(self.path)
            if created_dir:
                fsync_dir(self.path.parent)
        last = heads[-1] if heads else None
        self._offset = last.end if last else 0
        self._block = len(heads)
        self._prev = last.hash if last else ZERO_HASH
        self._next_seq = max((h.seq_end for h in heads if h.n_packets), default=0)
        self._clear()

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> list[BlockHeader]:
        f = _File(self.path)
        try:
            heads, tail = _walk(f)
            if tail is not None and tail.state == CORRUPT:
                raise JournalError(f"{tail.reason}; not a torn tail, so nothing was cut "
                                   f"(run verify())", path=f.path, block=tail.block,
                                   offset=tail.offset)
            if heads:               # only the last complete block can be the torn one
                last = heads[-1]
                _, why = _load(f, last, zstd.ZstdDecompressor())
                if why is not None:
                    heads.pop()
                    tail = _Tail(last.offset, last.block, DAMAGED, why)
            if tail is not None:
                cut = f.pread(tail.offset, f.size - tail.offset)
        finally:
            f.close()
        if tail is not None:
            self._cut(tail, cut)
        rows = _rows(heads)
        have, stray = _read_index(self.path)
        if stray or have.tobytes() != rows.tobytes():
            self._write_index(rows)
            self.index_repaired = True
        return heads

    def _cut(self, tail: _Tail, cut: bytes) -> None:
        data = self.path / DATA_FILE
        saved = self.path / f"{DATA_FILE}.torn-{tail.offset}"
        k = 0
        while saved.exists():
            k += 1
            saved = self.path / f"{DATA_FILE}.torn-{tail.offset}.{k}"
        with open(saved, "wb") as out:
            out.write(cut)
            out.flush()
            os.fsync(out.fileno())
        os.ftruncate(self._fd, tail.offset)
        os.fsync(self._fd)
        fsync_dir(self.path)
        self.recovered = Recovery(tail.offset, len(cut), tail.block, tail.reason, saved)
        warnings.warn(f"{data}: cut a {tail.state} tail of {len(cut)} bytes at byte offset "
                      f"{tail.offset} (block {tail.block}): {tail.reason}; the bytes are kept "
                      f"in {saved.name}", JournalWarning, stacklevel=4)

    def _write_index(self, rows: np.ndarray) -> None:
        tmp = self.path / (INDEX_FILE + ".tmp")
        with open(tmp, "wb") as out:
            out.write(rows.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path / INDEX_FILE)
        fsync_dir(self.path)

    # -- state --------------------------------------------------------------------------------
    def _clear(self) -> None:
        self._ts, self._seq, self._cnt = array("Q"), array("Q"), array("Q")
        self._len, self._kind = array("H"), bytearray()
        self._data = bytearray()
        self._pending = 0

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ValueError(f"The journal writer for {str(self.path)!r} is closed.")

    @property
    def blocks(self) -> int:
        """How many blocks are durable (the next block's number)."""
        return self._block

    @property
    def head(self) -> tuple[int, str] | None:
        """``(number, SHA-256 hex)`` of the last durable block: an anchor for the chain."""
        return (self._block - 1, self._prev.hex()) if self._block else None

    @property
    def next_seq(self) -> int:
        """One past the highest sequence number a journaled packet covers (0: none yet)."""
        return self._next_seq

    @property
    def pending_bytes(self) -> int:
        """Raw bytes of the records not yet flushed."""
        return self._pending

    # -- appending ------------------------------------------------------------------------------
    def append(self, seq: int, ts_recv: int, packet: bytes) -> None:
        """Add one accepted MoldUDP64 packet; ``seq`` is its first sequence number.

        ``seq`` must equal the sequence in the packet's header (a check on the caller);
        ``ts_recv`` is the receive time in UTC ns.
        """
        self._check_open()
        n = len(packet)
        if not M.HEADER_LENGTH <= n <= MAX_PACKET_LENGTH:
            raise ValueError(f"The `packet` must be a MoldUDP64 packet of {M.HEADER_LENGTH} to "
                             f"{MAX_PACKET_LENGTH} bytes, was {n} bytes.")
        own = int.from_bytes(packet[M.SEQUENCE_OFFSET:M.COUNT_OFFSET], "big")
        if seq != own:
            raise ValueError(f"The `seq` must be the packet's first sequence number {own}, "
                             f"was {seq!r}.")
        if not 0 <= ts_recv < 1 << 64:
            raise ValueError(f"The `ts_recv` must be UTC ns in [0, 2**64), was {ts_recv!r}.")
        cnt = int.from_bytes(packet[M.COUNT_OFFSET:M.HEADER_LENGTH], "big")
        if cnt == M.END_OF_SESSION:
            cnt = 0
        self._ts.append(ts_recv)
        self._seq.append(own)
        self._cnt.append(cnt)
        self._len.append(n)
        self._kind.append(K_PACKET)
        self._data += packet
        if own + cnt > self._next_seq:
            self._next_seq = own + cnt
        self._pending += RECORD_FIXED + n
        if self._pending >= self.block_bytes:
            self.flush()

    def append_gap(self, first_seq: int, count: int, ts: int) -> None:
        """Declare that sequences ``first_seq .. first_seq + count - 1`` are missing (at ``ts``)."""
        self._check_open()
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"The `count` must be a positive number of sequences, was "
                             f"{count!r}.")
        if not 0 <= first_seq or first_seq + count > 1 << 64:
            raise ValueError(f"The `first_seq` + `count` must stay within [0, 2**64], were "
                             f"{first_seq!r} + {count!r}.")
        if not 0 <= ts < 1 << 64:
            raise ValueError(f"The `ts` must be UTC ns in [0, 2**64), was {ts!r}.")
        self._ts.append(int(ts))
        self._seq.append(int(first_seq))
        self._cnt.append(int(count))
        self._len.append(0)
        self._kind.append(K_GAP)
        self._pending += RECORD_FIXED
        if self._pending >= self.block_bytes:
            self.flush()

    def append_many(self, seqs, ts_recvs, packets, lengths=None, offsets=None) -> None:
        """Add a batch of packets; the same records, blocks and bytes as :meth:`append` in a loop.

        Two forms:

        * ``packets`` a list of bytes-like packets (``lengths`` and ``offsets`` left out);
        * ``packets`` one buffer (bytes-like or ``uint8`` array) and ``lengths`` the length of
          each packet in it; packet ``i`` is ``packets[offsets[i]:][:lengths[i]]``, and the
          packets lie back to back from byte 0 when ``offsets`` is left out (a capture's
          ``buf`` with its ``pkt_off``/``pkt_len`` fits directly).

        ``seqs`` and ``ts_recvs`` are one integer per packet (arrays or lists). Every packet's
        header sequence is checked against ``seqs`` before anything is added.
        """
        self._check_open()
        if lengths is None:
            if offsets is not None:
                raise ValueError("The `offsets` need `lengths` (the buffer form).")
            n = len(packets)
            ln = np.fromiter(map(len, packets), np.int64, n)
            buf = np.frombuffer(b"".join(packets), np.uint8)
            off = _starts(ln)
        else:
            buf = M.as_uint8(packets)
            ln = np.asarray(lengths, dtype=np.int64).reshape(-1)
            n = ln.shape[0]
            off = _starts(ln) if offsets is None else np.asarray(offsets, np.int64).reshape(-1)
            if off.shape != (n,):
                raise ValueError(f"The `offsets` must hold one offset per packet ({n}), had "
                                 f"shape {off.shape}.")
            bad = np.flatnonzero((off < 0) | (off + ln > buf.shape[0]))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"The packet {i} at `offsets[{i}]`={int(off[i])} with length "
                                 f"{int(ln[i])} lies outside the buffer of {buf.shape[0]} bytes.")
        seq = _u64_column(seqs, n, "seqs")
        ts = _u64_column(ts_recvs, n, "ts_recvs")
        bad = np.flatnonzero((ln < M.HEADER_LENGTH) | (ln > MAX_PACKET_LENGTH))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"The packet {i} must be a MoldUDP64 packet of {M.HEADER_LENGTH} "
                             f"to {MAX_PACKET_LENGTH} bytes, was {int(ln[i])} bytes.")
        own = _be(buf, off + M.SEQUENCE_OFFSET, 8)
        bad = np.flatnonzero(own != seq)
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"The `seqs[{i}]` must be packet {i}'s first sequence number "
                             f"{int(own[i])}, was {int(seq[i])}.")
        cnt = _be(buf, off + M.COUNT_OFFSET, 2)
        cnt[cnt == M.END_OF_SESSION] = 0
        if n == 0:
            return
        if not np.array_equal(off, _starts(ln)):      # gather the packets back to back
            total = int(ln.sum())
            idx = np.repeat(off - _starts(ln), ln) + np.arange(total, dtype=np.int64)
            buf, off = buf[idx], _starts(ln)
        self._next_seq = max(self._next_seq, int((seq + cnt).max()))
        rec = np.zeros(n + 1, np.int64)
        np.cumsum(ln + RECORD_FIXED, out=rec[1:])
        i = 0
        while i < n:
            room = self.block_bytes - self._pending
            # take records up to the one that brings the block to block_bytes, as append() would
            j = min(int(np.searchsorted(rec[1:], rec[i] + room, side="left")) + 1, n)
            self._ts.frombytes(ts[i:j].astype("=u8").tobytes())
            self._seq.frombytes(seq[i:j].astype("=u8").tobytes())
            self._cnt.frombytes(cnt[i:j].astype("=u8").tobytes())
            self._len.frombytes(ln[i:j].astype("=u2").tobytes())
            self._kind += bytes(j - i)
            a = int(off[i])
            self._data += memoryview(buf[a:a + int(ln[i:j].sum())])
            self._pending += int(rec[j] - rec[i])
            if self._pending >= self.block_bytes:
                self.flush()
            i = j

    # -- writing --------------------------------------------------------------------------------
    def flush(self) -> int:
        """Write the pending records as one block, make it durable, and return its number.

        After this returns the block survives any crash. With nothing pending, writes nothing
        and returns the number of the last block (-1 when there is none). If the write fails,
        the file is cut back to where it was and the records stay pending.
        """
        self._check_open()
        n = len(self._kind)
        if n == 0:
            return self._block - 1
        ts = np.frombuffer(self._ts, np.uint64)
        seq = np.frombuffer(self._seq, np.uint64)
        cnt = np.frombuffer(self._cnt, np.uint64)
        ln = np.frombuffer(self._len, np.uint16)
        kind = np.frombuffer(self._kind, np.uint8)
        raw = b"".join([ts.astype("<u8").tobytes(), seq.astype("<u8").tobytes(),
                        cnt.astype("<u8").tobytes(), ln.astype("<u2").tobytes(),
                        bytes(self._kind), bytes(self._data)])
        pk = kind == K_PACKET
        ps, pc = seq[pk], cnt[pk]
        n_packets = int(ps.shape[0])
        ordered = n_packets < 2 or bool(np.all(ps[1:] >= ps[:-1]))
        comp = self._cctx.compress(raw)
        if len(comp) >= 1 << 32 or len(raw) >= 1 << 32:
            raise ValueError(f"A block of {len(raw)} raw bytes is too large for the journal.")
        fields = [MAGIC, VERSION, F_ORDERED if ordered else 0, self._block,
                  int(ps.min()) if n_packets else 0, int(ps.max()) if n_packets else 0,
                  int((ps + pc).max()) if n_packets else 0, int(ts.min()), int(ts.max()),
                  n, n_packets, len(raw), len(comp), zlib.crc32(comp), self._prev, ZERO_HASH, 0]
        head = BlockHeader(self._offset, *fields)
        fields[-2] = _content_hash(head, raw)
        hdr = bytearray(_HEADER.pack(*fields))
        struct.pack_into("<I", hdr, HEADER_CRC_OFFSET, zlib.crc32(hdr[:HEADER_CRC_OFFSET]))
        blob = memoryview(bytes(hdr) + comp)
        try:
            done = 0
            while done < len(blob):
                done += os.pwrite(self._fd, blob[done:], self._offset + done)
            _sync(self._fd)
        except BaseException:
            try:
                os.ftruncate(self._fd, self._offset)
            except OSError:
                pass
            raise
        head = _parse_header(bytes(hdr), self._offset)[0]
        number = self._block
        self._offset += len(blob)
        self._block += 1
        self._prev = head.hash
        self._clear()
        try:
            os.write(self._ifd, _rows([head]).tobytes())
        except OSError as e:                    # the block is durable; the index is repairable
            warnings.warn(f"{self.path / INDEX_FILE}: could not append the row of block "
                          f"{number} ({e}); reopening the journal rebuilds it", JournalWarning,
                          stacklevel=2)
        return number

    def close(self) -> None:
        """Flush what is pending and close the files (idempotent)."""
        if self._fd < 0:
            return
        try:
            self.flush()
            if self._ifd >= 0:
                os.fsync(self._ifd)
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_ifd", "_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)            # closing journal.bin releases the flock
                setattr(self, name, -1)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- verify --------------------------------------------------------------------------------------

@dataclass
class VerifyReport:
    """What :func:`verify` found. ``ok`` is ``not problems``.

    ``bytes_raw`` counts the uncompressed records, ``bytes_compressed`` the zstd frames (block
    headers, 144 bytes each, excluded). ``out_of_order`` counts packets appended below the
    highest sequence already journaled (fine when they fill a declared gap).
    """
    ok: bool
    blocks: int
    packets: int
    gaps: int
    bytes_raw: int
    bytes_compressed: int
    problems: list[str] = field(default_factory=list)
    out_of_order: int = 0

    @property
    def ratio(self) -> float:
        return self.bytes_raw / self.bytes_compressed if self.bytes_compressed else 0.0


def _check_records(c: _Cols, raw: bytes, head: BlockHeader) -> list[str]:
    """Records against the writer's contract and the header's summary."""
    out = []
    kinds = np.unique(c.kind)
    if np.any((kinds != K_PACKET) & (kinds != K_GAP)):
        out.append(f"record kinds {kinds.tolist()}, expected {K_PACKET} and {K_GAP} only")
        return out
    pk, gp = c.kind == K_PACKET, c.kind == K_GAP
    if np.any(c.length[gp] != 0) or np.any(c.count[gp] == 0):
        out.append("a gap record has bytes or a zero count")
    buf = np.frombuffer(raw, np.uint8)
    start = _starts(c.length)[pk] + c.base
    short = c.length[pk] < M.HEADER_LENGTH
    if np.any(short):
        out.append(f"packet record {int(np.flatnonzero(pk)[np.argmax(short)])} is shorter than a "
                   f"MoldUDP64 header")
        return out
    own = _be(buf, start + M.SEQUENCE_OFFSET, 8)
    cnt = _be(buf, start + M.COUNT_OFFSET, 2)
    cnt[cnt == M.END_OF_SESSION] = 0
    for what, got, want in (("sequence", own, c.seq[pk]), ("message count", cnt, c.count[pk])):
        bad = np.flatnonzero(got != want)
        if bad.size:
            out.append(f"packet record {int(np.flatnonzero(pk)[bad[0]])}: its header says "
                       f"{what} {int(got[bad[0]])}, the journal says {int(want[bad[0]])}")
    ps, pc = c.seq[pk], c.count[pk]
    np_ = int(ps.shape[0])
    summary = {"n_packets": np_, "seq_min": int(ps.min()) if np_ else 0,
               "seq_max": int(ps.max()) if np_ else 0,
               "seq_end": int((ps + pc).max()) if np_ else 0,
               "ts_min": int(c.ts_recv.min()) if head.n_records else 0,
               "ts_max": int(c.ts_recv.max()) if head.n_records else 0,
               "flags": F_ORDERED if np_ < 2 or bool(np.all(ps[1:] >= ps[:-1])) else 0}
    for name, want in summary.items():
        if int(getattr(head, name)) != want:
            out.append(f"header field {name} is {int(getattr(head, name))}, the records say "
                       f"{want}")
    return out


def verify(directory) -> VerifyReport:
    """Check every block (header CRC, chain, payload CRC, zstd, length, SHA-256, records), the
    sequence order, and that ``index.bin`` agrees with the blocks.

    Keeps going past a bad block (to the next valid header) so every problem is listed; each
    names the file, the block number and the byte offset of the block's header.
    """
    directory = Path(directory)
    problems: list[str] = []
    rep = VerifyReport(True, 0, 0, 0, 0, 0, problems)
    heads: list[BlockHeader] = []
    back = []                    # (seq, end, block, offset) of packets below the high-water mark
    gap_first, gap_end = [], []
    hw = None
    dctx = zstd.ZstdDecompressor()

    def say(block, off, text):
        problems.append(f"{DATA_FILE}: block {block} at byte offset {off}: {text}")

    with _File(directory) as f:
        off, block, prev = 0, 0, ZERO_HASH
        while off < f.size:
            left = f.size - off
            if left < HEADER_LENGTH:
                say(block, off, f"torn tail: {left} bytes, shorter than the {HEADER_LENGTH}-byte "
                                f"block header")
                break
            head, why = f.header_at(off)
            if head is None:
                nxt = f.find_header(off + 1)
                if nxt < 0:
                    say(block, off, f"unreadable block header ({why}), {left} bytes to the end "
                                    f"of the file (damaged tail)")
                    break
                say(block, off, f"unreadable block header ({why}); {nxt - off} bytes skipped to "
                                f"the next valid header at byte offset {nxt}")
                off, block, prev = nxt, block + 1, None
                continue
            if head.block != block:
                say(head.block, off, f"block number {head.block} where block {block} belongs")
            if prev is not None and head.prev_hash != prev:
                say(head.block, off, f"broken chain: the previous-block hash does not match "
                                     f"block {head.block - 1}")
            if head.end > f.size:
                say(head.block, off, f"torn tail: the zstd frame has {left - HEADER_LENGTH} of "
                                     f"{head.compressed_length} bytes")
                break
            heads.append(head)
            rep.blocks += 1
            rep.bytes_compressed += head.compressed_length
            raw, why = _load(f, head, dctx)
            if raw is not None:
                c, why = _columns(raw, head.n_records)
            if why is not None:
                say(head.block, off, why)
            else:
                rep.bytes_raw += len(raw)
                for text in _check_records(c, raw, head):
                    say(head.block, off, text)
                pk = c.kind == K_PACKET
                rep.packets += int(np.count_nonzero(pk))
                gp = ~pk
                rep.gaps += int(np.count_nonzero(gp))
                gap_first.append(c.seq[gp])
                gap_end.append(c.seq[gp] + c.count[gp])
                live = pk & (c.count > 0)           # heartbeats cover no sequence number
                s, e = c.seq[live], c.seq[live] + c.count[live]
                if s.shape[0]:
                    if hw is None:
                        hw = int(s[0])
                    before = np.empty_like(e)
                    before[0] = hw
                    np.maximum(np.maximum.accumulate(e)[:-1], np.uint64(hw), out=before[1:])
                    b = np.flatnonzero(s < before)
                    if b.size:
                        back.append((s[b], e[b], np.full(b.size, head.block, np.int64),
                                     np.full(b.size, off, np.int64)))
                    hw = max(hw, int(e.max()))
            off, block, prev = head.end, head.block + 1, head.hash
    # packets that went back must fill a declared gap
    if back:
        s, e, blk, boff = (np.concatenate(x) for x in zip(*back))
        rep.out_of_order = int(s.shape[0])
        inside = np.zeros(s.shape[0], bool)
        if gap_first:
            gf, ge = np.concatenate(gap_first), np.concatenate(gap_end)
            order = np.argsort(gf, kind="stable")
            gf, ge = gf[order], np.maximum.accumulate(ge[order])
            i = np.searchsorted(gf, s, side="right") - 1
            ok = i >= 0
            inside[ok] = e[ok] <= ge[i[ok]]
        bad = np.flatnonzero(~inside)
        for k in bad[:20].tolist():
            say(int(blk[k]), int(boff[k]), f"packet with sequences {int(s[k])}..{int(e[k]) - 1} "
                                           f"goes back below sequences already journaled and "
                                           f"fills no declared gap")
        if bad.size > 20:
            problems.append(f"{DATA_FILE}: {bad.size - 20} more packets go back outside "
                            f"declared gaps")
    _check_index(directory, heads, problems)
    rep.ok = not problems
    return rep


def _check_index(directory: Path, heads: list[BlockHeader], problems: list[str]) -> None:
    if not (directory / INDEX_FILE).exists():
        problems.append(f"{INDEX_FILE}: missing (reopening the journal for writing rebuilds it)")
        return
    rows, stray = _read_index(directory)
    if stray:
        problems.append(f"{INDEX_FILE}: {stray} bytes at byte offset "
                        f"{rows.shape[0] * INDEX_ROW_LENGTH} do not make a whole row")
    want = _rows(heads)
    n = min(rows.shape[0], want.shape[0])
    for i in range(n):
        if rows[i].tobytes() != want[i].tobytes():
            names = [k for k in INDEX_DTYPE.names if int(rows[k][i]) != int(want[k][i])]
            problems.append(f"{INDEX_FILE}: row {i} at byte offset {i * INDEX_ROW_LENGTH} "
                            f"disagrees with block {heads[i].block} at byte offset "
                            f"{heads[i].offset} of {DATA_FILE} in {', '.join(names)}")
    if rows.shape[0] < want.shape[0]:
        problems.append(f"{INDEX_FILE}: lacks the rows of blocks {rows.shape[0]}.."
                        f"{want.shape[0] - 1} (it lags {DATA_FILE}; reopening the journal for "
                        f"writing rebuilds it)")
    elif rows.shape[0] > want.shape[0]:
        problems.append(f"{INDEX_FILE}: rows {want.shape[0]}..{rows.shape[0] - 1} name blocks "
                        f"that {DATA_FILE} does not hold")


# -- benchmark -----------------------------------------------------------------------------------

def bench_journal(n_packets: int = 20_000, *, directory=None, block_bytes: int = 1 << 20,
                  level: int = 3, max_payload: int = M.DEFAULT_MAX_PAYLOAD) -> dict:
    """Write and read ``n_packets`` MoldUDP64 packets of a simulated ITCH session; rates in MB/s.

    MB/s count packet bytes (1e6 bytes per MB). Writes go through :meth:`JournalWriter.append`
    one packet at a time and through :meth:`JournalWriter.append_many` in batches of 4096;
    reads through :func:`read_journal` (one ``bytes`` per packet) and :func:`read_blocks`.
    """
    from ingest.simulator import generate_session
    n_msgs = max(1000, int(n_packets * max_payload / 32))
    pkts: list[bytes] = []
    while len(pkts) < n_packets:
        pkts = M.packetize(generate_session(n_msgs, 100, seed=7).to_binaryfile(),
                           b"BENCH00001", 1, max_payload)
        n_msgs *= 2
    pkts = pkts[:n_packets]
    seqs = np.array([M.sequence(p) for p in pkts], np.uint64)
    ts = (1_710_000_000_000_000_000 + np.arange(n_packets, dtype=np.uint64) * 1_000)
    nbytes = sum(map(len, pkts))
    out: dict = {"packets": n_packets, "packet_bytes": nbytes, "block_bytes": block_bytes,
                 "level": level}
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        t0 = time.perf_counter()
        with JournalWriter(one, block_bytes=block_bytes, level=level) as w:
            for s, t, p in zip(seqs.tolist(), ts.tolist(), pkts):
                w.append(s, t, p)
        t1 = time.perf_counter()
        with JournalWriter(many, block_bytes=block_bytes, level=level) as w:
            for a in range(0, n_packets, 4096):
                w.append_many(seqs[a:a + 4096], ts[a:a + 4096], pkts[a:a + 4096])
        t2 = time.perf_counter()
        got = sum(len(p) for _, p in read_journal(many))
        t3 = time.perf_counter()
        blocks = sum(b.data.shape[0] for b in read_blocks(many))
        t4 = time.perf_counter()
        rep = verify(many)
        t5 = time.perf_counter()
        assert got == nbytes == blocks and rep.ok, (got, nbytes, blocks, rep.problems)
        size = (many / DATA_FILE).stat().st_size
        mb = nbytes / 1e6
        out.update(blocks=rep.blocks, file_bytes=size, bytes_raw=rep.bytes_raw,
                   bytes_compressed=rep.bytes_compressed, ratio=round(rep.ratio, 3),
                   ratio_packets_to_file=round(nbytes / size, 3),
                   write_append_MBps=round(mb / (t1 - t0), 1),
                   write_append_many_MBps=round(mb / (t2 - t1), 1),
                   read_journal_MBps=round(mb / (t3 - t2), 1),
                   read_blocks_MBps=round(mb / (t4 - t3), 1),
                   verify_MBps=round(mb / (t5 - t4), 1))
    return out
