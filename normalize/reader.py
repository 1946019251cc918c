"""Reading ITCH 5.0 from files and buffers: BinaryFILE (plain, gzip, zstd), pcap and pcapng.

BinaryFILE input is streamed: bytes are read and decompressed in chunks, each chunk is framed
up to its last complete message, and the rest is carried into the next chunk, so a 10 GB day
decodes in memory bounded by the chunk and batch sizes. Captures (pcap/pcapng) are read whole
and framed by ``ingest.pcap``.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from normalize import itch_decode as D
from normalize import records as R
from normalize.clock import SessionClock, date_from_filename, session_clock
from normalize.itch_spec import MESSAGE_LENGTH, TYPE_LETTERS, WIRE_DTYPES, wire_to_raw
from normalize.ordermap import OrderMap
from tickpipe.errors import DecodeError, TruncatedError, warn

SCHEMA_KEYS = ("mbo", "trades", "definitions", "status", "imbalance")
DEFAULT_BATCH = 1 << 20           # messages per batch on one thread
PIPELINE_BATCH = 1 << 18          # smaller batches when the order map runs on a second thread
DEFAULT_CHUNK = 16 << 20          # bytes read per step
MIN_MESSAGE = int(MESSAGE_LENGTH[MESSAGE_LENGTH > 0].min())
SIDE_TABLE_ROWS = 1 << 15         # rows reserved per batch for definitions, status, imbalance
_MBO_TYPES = np.array([ord(c) for c in "AFECXDUPQB"])
_STATUS_TYPES = np.array([ord(c) for c in "SHYLVWKJh"])
_IMB_TYPES = np.array([ord(c) for c in "INO"])
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

ERRORS = ("raise", "skip")
_NO_OFFSETS = np.empty(0, np.int64)
_NO_INDEX = np.empty(0, D.MSG_INDEX)
_NO_SKIPS = np.empty(0, np.int64)
_NO_UNITS = np.empty(0, np.int64)
_NO_WHY = np.empty(0, np.uint8)


@dataclass
class DecodeStats:
    """What a decode saw: counts, bytes, and every unit it skipped or could not finish."""

    messages: int = 0
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (byte offset, reason)
    n_skipped: int = 0
    truncated_at: int | None = None      # byte offset of an incomplete trailing message
    unknown_orders: int = 0              # E/C/X/D/U events for orders not live in the map
    ts_first: int | None = None          # local ns since midnight of the first/last message
    ts_last: int | None = None

    def add_counts(self, counts: np.ndarray) -> None:
        for c in TYPE_LETTERS:
            k = int(counts[ord(c)])
            if k:
                self.counts[c] = self.counts.get(c, 0) + k


def _check_errors(errors: str) -> bool:
    if errors not in ERRORS:
        raise ValueError(f"The `errors` was not a valid value, was {errors!r}. Use any of {ERRORS}.")
    return errors == "skip"


def resolve_date(path, date) -> SessionClock:
    """The session clock from ``date`` or, failing that, from a NASDAQ file name."""
    if date is not None:
        return session_clock(date)
    if path is not None:
        d = date_from_filename(path)
        if d is not None:
            return session_clock(d)
        raise ValueError(
            f"The session date is missing: no `date` was given and the file name {Path(str(path)).name!r} "
            "does not carry one (NASDAQ names files MMDDYYYY.NASDAQ_ITCH50). Pass date='YYYY-MM-DD'.")
    raise ValueError("The session date is missing: pass date='YYYY-MM-DD' when decoding a buffer.")


class SessionDecoder:
    """Stateful decoder of one ITCH session: its clock, channel and order map.

    Feed it framed messages batch by batch (:meth:`decode`); the order map carries live orders
    across batches. Not thread-safe.
    """

    def __init__(self, clock: SessionClock, *, channel: int = 0, order_map: OrderMap | None = None,
                 resolve: bool = True):
        self.clock = clock
        self.channel = channel
        self.orders = order_map if order_map is not None else OrderMap()
        self.resolve = resolve
        self.next_sequence = 1

    def decode(self, buf: np.ndarray, offsets: np.ndarray, counts: np.ndarray,
               index: np.ndarray | None = None) -> dict:
        """Normalize the messages at ``offsets`` (``index``: per-message metadata, or None).

        Returns the columns (:data:`normalize.records.COLUMNS`) of each schema.
        """
        out = self.decode_unresolved(buf, offsets, counts, index)
        return self.resolve_batch(out)

    def decode_unresolved(self, buf, offsets, counts, index=None) -> dict:
        """First half of :meth:`decode`: the columns, before the order map has run."""
        n_mbo = int(counts[_MBO_TYPES].sum())
        n_def = int(counts[ord("R")])
        n_st = int(counts[_STATUS_TYPES].sum())
        n_imb = int(counts[_IMB_TYPES].sum())
        mbo = R.alloc_columns("mbo", n_mbo)      # decode_messages writes every field but mpid
        mbo.mpid.fill(0)
        defs = R.alloc_columns("definitions", n_def)
        st = R.alloc_columns("status", n_st)
        imb = R.alloc_columns("imbalance", n_imb)
        idx = index if index is not None else np.empty(0, D.MSG_INDEX)
        c = self.clock
        got = D.decode_messages(
            buf, offsets, idx, self.next_sequence, self.channel, c.local_midnight_ns, c.switch_ns,
            c.offset_before, c.offset_after, mbo, defs, st, imb, 0, 0, 0, MESSAGE_LENGTH, False,
            _NO_SKIPS, _NO_WHY, np.zeros(256, np.int64))
        assert got[:4] == (n_mbo, n_def, n_st, n_imb), (got, (n_mbo, n_def, n_st, n_imb))
        if index is None:
            self.next_sequence += offsets.shape[0]
        return {"mbo": mbo, "trades": None, "definitions": defs, "status": st, "imbalance": imb}

    def decode_packets(self, buf: np.ndarray, lengths: np.ndarray, ts_recv, channel, *,
                       path: str, errors: str) -> dict:
        """Frame and decode MoldUDP64 packets lying back to back in ``buf`` (``lengths`` each);
        ``ts_recv`` and ``channel`` label them (one value, or one per packet)."""
        from ingest.moldudp64 import frame_packets
        offsets = np.zeros(lengths.shape[0], np.int64)
        if lengths.shape[0]:
            np.cumsum(lengths[:-1], out=offsets[1:])
        idx = frame_packets(buf, offsets, lengths, ts_recv, channel, path=path, errors=errors).index
        counts = np.bincount(idx["type"], minlength=256).astype(np.int64)
        return self.decode(buf, np.ascontiguousarray(idx["offset"]), counts, idx)

    def decode_walk(self, buf, pos: int, stop: int, max_messages: int, skip: bool,
                    skipped_at: np.ndarray, skipped_why: np.ndarray, counts: np.ndarray):
        """Frame and decode BinaryFILE bytes ``buf[pos:stop]`` in one compiled pass.

        Adds the messages to ``counts`` (int64[256], by type byte). Returns ``(columns, n_messages, next_pos, status, fault_pos, n_skipped)``; the columns
        are before the order map (see :meth:`resolve_batch`).
        """
        # no more messages than the bytes can hold (the shortest is 12 bytes plus its prefix)
        max_messages = max(1, min(max_messages, (stop - pos) // (2 + MIN_MESSAGE)))
        side = min(max_messages, SIDE_TABLE_ROWS)
        mbo = R.alloc_columns("mbo", max_messages)   # decode_messages writes every field but mpid
        mbo.mpid.fill(0)
        defs = R.alloc_columns("definitions", side)
        st = R.alloc_columns("status", side)
        imb = R.alloc_columns("imbalance", side)
        c = self.clock
        km, kd, ks, ki, npos, status, fault, ns, units = D.decode_messages(
            buf, _NO_OFFSETS, _NO_INDEX, self.next_sequence, self.channel, c.local_midnight_ns,
            c.switch_ns, c.offset_before, c.offset_after, mbo, defs, st, imb, pos, stop,
            max_messages, MESSAGE_LENGTH, skip, skipped_at, skipped_why, counts)
        self.next_sequence += units
        mbo = R.slice_columns(mbo, km)
        cols = {"mbo": mbo, "trades": None, "definitions": R.slice_columns(defs, kd),
                "status": R.slice_columns(st, ks), "imbalance": R.slice_columns(imb, ki)}
        return cols, km + kd + ks + ki, npos, status, fault, ns

    def resolve_batch(self, out: dict) -> dict:
        """Second half of :meth:`decode`: run the order map over a batch (in order!)."""
        out["trades"] = (self.orders.apply(out["mbo"]) if self.resolve
                         else R.alloc_columns("trades", 0))
        return out


def to_batches(columns: dict) -> dict[str, pa.RecordBatch]:
    """Wrap decoded columns as Arrow RecordBatches (no copy of the data)."""
    return {k: R.columns_to_arrow(k, columns[k]) for k in SCHEMA_KEYS}


# ---------------------------------------------------------------------------------------------
# sources

def _as_uint8(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.view(np.uint8)
        return data.reshape(-1)
    return np.frombuffer(memoryview(data), dtype=np.uint8)


def _compression_of(head: bytes) -> str | None:
    return "gzip" if head[:2] == _GZIP_MAGIC else "zstd" if head[:4] == _ZSTD_MAGIC else None


def compression(path) -> str | None:
    """``"gzip"``, ``"zstd"`` or None (plain) for the file at ``path``, from its first bytes."""
    with open(path, "rb") as f:
        return _compression_of(f.read(4))


def _open_stream(path: Path):
    f = open(path, "rb")
    kind = _compression_of(f.read(4))
    f.seek(0)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=f, mode="rb")
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True, closefd=True)
    return f


def sniff(path_or_buffer) -> str:
    """``"pcap"``, ``"pcapng"`` or ``"binaryfile"`` from the first bytes (after decompression)."""
    if isinstance(path_or_buffer, (str, os.PathLike)):
        with _open_stream(Path(path_or_buffer)) as s:
            head = s.read(8)
    else:
        head = bytes(_as_uint8(path_or_buffer)[:8])
    return _capture_kind(head) or "binaryfile"


_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}


def _capture_kind(head: bytes) -> str | None:
    if head[:4] in _PCAP_MAGICS:
        return "pcap"
    if head[:4] == b"\x0a\x0d\x0d\x0a":
        return "pcapng"
    return None


def _read_all(path_or_buffer) -> np.ndarray:
    if isinstance(path_or_buffer, (str, os.PathLike)):
        with _open_stream(Path(path_or_buffer)) as s:
            return np.frombuffer(s.read(), dtype=np.uint8)
    return _as_uint8(path_or_buffer)


def _label(path_or_buffer) -> str:
    return str(path_or_buffer) if isinstance(path_or_buffer, (str, os.PathLike)) else "<buffer>"


def _chunks(path_or_buffer, chunk_bytes: int) -> Iterator[bytes | np.ndarray]:
    if isinstance(path_or_buffer, (str, os.PathLike)):
        with _open_stream(Path(path_or_buffer)) as s:
            while True:
                b = s.read(chunk_bytes)
                if not b:
                    return
                yield b
    elif isinstance(path_or_buffer, io.IOBase) or hasattr(path_or_buffer, "read"):
        while True:
            b = path_or_buffer.read(chunk_bytes)
            if not b:
                return
            yield b
    else:
        yield _as_uint8(path_or_buffer)


# ---------------------------------------------------------------------------------------------
# framing of BinaryFILE streams

@dataclass
class FramedBatch:
    buf: np.ndarray            # uint8 bytes the offsets point into
    offsets: np.ndarray        # int64 offset of each message (its type byte)
    types: np.ndarray          # uint8 type byte of each message
    counts: np.ndarray         # int64[256] messages per type byte
    index: np.ndarray | None = None   # MSG_INDEX for captures


def _raise_frame_error(status: int, label: str, file_off: int, msg_index: int, buf, pos) -> None:
    reason = D.STATUS_TEXT.get(status, f"framing status {status}")
    if status in (D.ERR_UNKNOWN_TYPE, D.ERR_LENGTH) and pos + 2 < buf.shape[0]:
        t = int(buf[pos + 2])
        length = int(buf[pos]) << 8 | int(buf[pos + 1])
        exp = int(MESSAGE_LENGTH[t])
        tc = chr(t) if 32 <= t < 127 else f"0x{t:02x}"
        reason += (f": type {tc!r} with length {length}" +
                   (f", the specification says {exp}" if exp else ""))
    raise DecodeError(reason, path=label, offset=file_off, index=msg_index)


def _walk_binaryfile(path_or_buffer, *, chunk_bytes: int, skip: bool, stats: DecodeStats, step):
    """Run ``step`` over a BinaryFILE source chunk by chunk; carry partial messages across.

    ``step(buf, pos, stop, skipped_at, skipped_why)`` works on ``buf[pos:stop]`` and returns
    ``(payload, n_messages, next_pos, status, fault_pos, n_skipped)``; payloads with messages
    are yielded. Bad units are recorded in ``stats`` (skip) or raised as
    :class:`~tickpipe.errors.DecodeError` after the payload decoded before them is yielded.
    """
    label = _label(path_or_buffer)
    carry = b""
    base = 0            # file offset of the first byte of the current buffer
    msg_index = 0       # messages delivered so far (0-based index of the next one)
    skipped_at = np.empty(1024, np.int64)
    skipped_why = np.empty(1024, np.uint8)
    for chunk in _chunks(path_or_buffer, chunk_bytes):
        data = carry + bytes(chunk) if carry else chunk
        buf = _as_uint8(data)
        stop = buf.shape[0]
        stats.bytes += len(chunk)
        pos = 0
        while True:
            payload, n, npos, status, fault, ns = step(buf, pos, stop, skipped_at, skipped_why)
            if ns:
                for k in range(min(ns, skipped_at.shape[0])):
                    stats.skipped.append((base + int(skipped_at[k]), D.STATUS_TEXT[int(skipped_why[k])]))
                stats.n_skipped += ns
            if n:
                stats.messages += n
                yield payload
                msg_index += n
            if status not in (D.OK, D.FULL):
                _raise_frame_error(status, label, base + fault, msg_index, buf, fault)
            pos = npos
            if status == D.OK:
                break
        carry = bytes(buf[pos:stop])
        base += pos
    if carry:
        stats.truncated_at = base
        need = (int(carry[0]) << 8 | int(carry[1])) + 2 if len(carry) >= 2 else 2
        reason = f"input ends inside a message: {len(carry)} of {need} bytes present"
        if skip:
            stats.skipped.append((base, reason))
            stats.n_skipped += 1
            warn(f"{label}: truncated trailing message at byte offset {base} "
                 f"(message index {msg_index}) was dropped; {len(carry)} bytes present of {need}")
        else:
            raise TruncatedError(reason, path=label, offset=base, index=msg_index)


def frame_binaryfile_stream(path_or_buffer, *, batch_size: int, chunk_bytes: int, skip: bool,
                            stats: DecodeStats) -> Iterator[FramedBatch]:
    """Yield framed batches of at most ``batch_size`` messages from a BinaryFILE source."""
    def step(buf, pos, stop, skipped_at, skipped_why):
        offsets = np.empty(batch_size, np.int64)
        types = np.empty(batch_size, np.uint8)
        counts = np.zeros(256, np.int64)
        n, npos, status, fault, ns = D.frame_binaryfile(
            buf, pos, stop, MESSAGE_LENGTH, offsets, types, counts, skip, skipped_at, skipped_why,
            _NO_UNITS)
        if n:
            stats.add_counts(counts)
        return FramedBatch(buf, offsets[:n], types[:n], counts), n, npos, status, fault, ns

    yield from _walk_binaryfile(path_or_buffer, chunk_bytes=chunk_bytes, skip=skip, stats=stats,
                                step=step)


def _decode_binaryfile_stream(path_or_buffer, sess: SessionDecoder, *, batch_size: int,
                              chunk_bytes: int, skip: bool, stats: DecodeStats):
    """Columns (before the order map) of at most ``batch_size`` messages at a time, framed and
    decoded in one pass."""
    def step(buf, pos, stop, skipped_at, skipped_why):
        counts = np.zeros(256, np.int64)
        out = sess.decode_walk(buf, pos, stop, batch_size, skip, skipped_at, skipped_why, counts)
        stats.add_counts(counts)
        return out

    yield from _walk_binaryfile(path_or_buffer, chunk_bytes=chunk_bytes, skip=skip, stats=stats,
                                step=step)


def _capture_batches(path_or_buffer, *, batch_size: int, skip: bool, stats: DecodeStats):
    from ingest.pcap import read_capture
    label = _label(path_or_buffer)
    data = _read_all(path_or_buffer)
    stats.bytes += data.shape[0]
    cap = read_capture(data, path=label, errors="skip" if skip else "raise")
    for off, _pkt, why in cap.skipped:
        stats.skipped.append((off, why))
    stats.n_skipped += len(cap.skipped)
    index = cap.index
    for s in range(0, index.shape[0], batch_size):
        part = index[s:s + batch_size]
        counts = np.bincount(part["type"], minlength=256).astype(np.int64)
        stats.messages += part.shape[0]
        stats.add_counts(counts)
        yield FramedBatch(cap.buf, np.ascontiguousarray(part["offset"]),
                          np.ascontiguousarray(part["type"]), counts, part)


def framed_batches(path_or_buffer, *, batch_size=DEFAULT_BATCH, chunk_bytes=DEFAULT_CHUNK,
                   errors="raise", stats: DecodeStats | None = None) -> Iterator[FramedBatch]:
    """Frame any supported source into batches (BinaryFILE streamed; captures read whole)."""
    skip = _check_errors(errors)
    if batch_size < 1:
        raise ValueError(f"The `batch_size` must be at least 1, was {batch_size}.")
    stats = stats if stats is not None else DecodeStats()
    if _source_kind(path_or_buffer) == "binaryfile":
        yield from frame_binaryfile_stream(path_or_buffer, batch_size=batch_size,
                                           chunk_bytes=chunk_bytes, skip=skip, stats=stats)
    else:
        yield from _capture_batches(path_or_buffer, batch_size=batch_size, skip=skip, stats=stats)


def _source_kind(path_or_buffer) -> str:
    if isinstance(path_or_buffer, (str, os.PathLike)) and not Path(path_or_buffer).exists():
        raise FileNotFoundError(f"ITCH input {str(path_or_buffer)!r} does not exist")
    return "binaryfile" if hasattr(path_or_buffer, "read") else sniff(path_or_buffer)


def decoded_batches(path_or_buffer, sess: SessionDecoder, *, batch_size: int, chunk_bytes: int,
                    skip: bool, stats: DecodeStats):
    """Columns of each batch before the order map: BinaryFILE framed and decoded in one pass,
    captures framed by ``ingest.pcap`` and then decoded."""
    if _source_kind(path_or_buffer) == "binaryfile":
        yield from _decode_binaryfile_stream(path_or_buffer, sess, batch_size=batch_size,
                                             chunk_bytes=chunk_bytes, skip=skip, stats=stats)
    else:
        for fb in _capture_batches(path_or_buffer, batch_size=batch_size, skip=skip, stats=stats):
            yield sess.decode_unresolved(fb.buf, fb.offsets, fb.counts, fb.index)


# ---------------------------------------------------------------------------------------------
# public API

def iter_itch(path_or_buffer, *, date, batch_size: int | None = None, errors: str = "raise",
              chunk_bytes: int = DEFAULT_CHUNK, channel: int = 0, resolve: bool = True,
              threads: int | None = None,
              stats: DecodeStats | None = None) -> Iterator[dict[str, pa.RecordBatch]]:
    """Stream an ITCH 5.0 source as dicts of Arrow RecordBatches.

    Each dict has the keys ``mbo``, ``trades``, ``definitions``, ``status``, ``imbalance`` and
    holds the records of at most ``batch_size`` consecutive messages (default: 2**18 when the
    order map runs on a second thread, else 2**20). Memory stays bounded by
    ``chunk_bytes`` and ``batch_size`` for BinaryFILE sources. Batches decoded before a fault are
    yielded before the :class:`~tickpipe.errors.DecodeError` is raised.

    ``resolve=True`` (the default) runs the order map: executions, cancels and deletes get the
    price and side of their order, and ``trades`` is filled. ``resolve=False`` skips it (faster;
    ``trades`` stays empty and those prices stay ``UNDEF_PRICE``) for consumers that keep their
    own books. ``threads``: 1 decodes on the calling thread only; 2 runs the order map on a
    second thread, one batch behind the decoder; ``None`` picks 2 when the machine has two or
    more cores.
    """
    # validate now, not at the first next(): a bad argument fails at the call
    clock = resolve_date(path_or_buffer if isinstance(path_or_buffer, (str, os.PathLike)) else None, date)
    _check_errors(errors)
    if threads is None:
        threads = 2 if (os.cpu_count() or 1) >= 2 else 1
    if threads not in (1, 2):
        raise ValueError(f"The `threads` was not a valid value, was {threads!r}. Use 1, 2 or None.")
    if batch_size is None:   # two threads overlap better on smaller batches
        batch_size = PIPELINE_BATCH if (resolve and threads == 2) else DEFAULT_BATCH
    return _iter_itch(path_or_buffer, clock, batch_size, errors, chunk_bytes, channel, resolve,
                      threads, stats if stats is not None else DecodeStats())


def _iter_itch(path_or_buffer, clock, batch_size, errors, chunk_bytes, channel, resolve, threads,
               stats):
    sess = SessionDecoder(clock, channel=channel, resolve=resolve)
    if batch_size < 1:
        raise ValueError(f"The `batch_size` must be at least 1, was {batch_size}.")
    parts = decoded_batches(path_or_buffer, sess, batch_size=batch_size, chunk_bytes=chunk_bytes,
                            skip=errors == "skip", stats=stats)
    try:
        if not resolve or threads == 1:
            for cols in parts:
                yield to_batches(sess.resolve_batch(cols))
            return
        # two stages on two cores: the order map (compiled, GIL released) resolves batch k in a
        # worker thread while this thread decodes batch k+1; batches stay in order
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1, thread_name_prefix="tickpipe-ordermap") as pool:
            pending = None
            try:
                for cols in parts:
                    nxt = pool.submit(sess.resolve_batch, cols)
                    if pending is not None:
                        yield to_batches(pending.result())
                    pending = nxt
            except DecodeError:
                if pending is not None:      # deliver what was decoded before the fault
                    yield to_batches(pending.result())
                raise
            if pending is not None:
                yield to_batches(pending.result())
    finally:
        stats.unknown_orders = sess.orders.unknown


def read_itch(path, *, date=None, errors: str = "raise", batch_size: int | None = None,
              resolve: bool = True, threads: int | None = None,
              stats: DecodeStats | None = None) -> dict[str, pa.Table]:
    """Decode a whole ITCH 5.0 file (BinaryFILE plain/.gz/.zst, pcap or pcapng) to Arrow tables.

    Returns a dict keyed ``"mbo"``, ``"trades"``, ``"definitions"``, ``"status"``,
    ``"imbalance"``. The session date comes from ``date`` or from NASDAQ's file name
    (``MMDDYYYY.NASDAQ_ITCH50``). ``resolve`` and ``threads`` as in :func:`iter_itch`. ``errors="skip"`` steps over bad messages and warns with
    their count and offsets (also in ``stats``). On a :class:`~tickpipe.errors.DecodeError`
    the tables decoded before the fault are in the exception's ``partial`` attribute.
    """
    clock_src = path if isinstance(path, (str, os.PathLike)) else None
    resolve_date(clock_src, date)   # fail early with a clear message
    stats = stats if stats is not None else DecodeStats()
    parts: dict[str, list[pa.RecordBatch]] = {k: [] for k in SCHEMA_KEYS}

    def tables() -> dict[str, pa.Table]:
        return {k: pa.Table.from_batches(parts[k], schema=R.arrow_schema(k)) for k in SCHEMA_KEYS}

    try:
        for batches in iter_itch(path, date=date, batch_size=batch_size, errors=errors,
                                 resolve=resolve, threads=threads, stats=stats):
            for k in SCHEMA_KEYS:
                if batches[k].num_rows:
                    parts[k].append(batches[k])
    except DecodeError as e:
        e.partial = tables()
        raise
    warn_skipped(path, stats, errors)
    return tables()


def warn_skipped(path, stats: DecodeStats, errors: str) -> None:
    """With ``errors="skip"``, one warning naming the bad units a whole read stepped over."""
    other = stats.n_skipped - (stats.truncated_at is not None)   # truncation warned already
    if other > 0 and errors == "skip":
        first = ", ".join(f"{o}" for o, _ in stats.skipped[:5])
        warn(f"{_label(path)}: skipped {stats.n_skipped} bad unit(s) at byte offset(s) {first}"
             + (" ..." if stats.n_skipped > 5 else ""))


def read_itch_raw(path, *, errors: str = "raise", stats: DecodeStats | None = None) -> dict[str, np.ndarray]:
    """Every message of an ITCH 5.0 source as raw per-type tables, keyed by type letter.

    Each array has :data:`normalize.itch_spec.RAW_DTYPES` ``[letter]``: the specification's
    fields in order, native-endian, the timestamp as one ``uint64`` (ns since midnight),
    prices as sent (integers with 4 or 8 implied decimals). Types absent from the input are
    absent from the dict.
    """
    stats = stats if stats is not None else DecodeStats()
    parts: dict[str, list[np.ndarray]] = {}
    for fb in framed_batches(path, errors=errors, stats=stats):
        for letter in TYPE_LETTERS:
            k = int(fb.counts[ord(letter)])
            if not k:
                continue
            wdt = WIRE_DTYPES[letter]
            rows = np.empty((k, wdt.itemsize), np.uint8)
            D.gather_rows(fb.buf, fb.offsets, fb.types, ord(letter), wdt.itemsize, rows)
            parts.setdefault(letter, []).append(wire_to_raw(rows.reshape(-1).view(wdt), letter))
    return {k: np.concatenate(v) for k, v in parts.items()}


def read_moldudp64(packets, *, date, ts_recv=None, channel=0, errors: str = "raise",
                   order_map: OrderMap | None = None) -> dict[str, pa.Table]:
    """Decode MoldUDP64 packets (a sequence of ``bytes``) to the normalized tables.

    ``ts_recv`` (UTC ns; one value or one per packet) and ``channel`` (one value or one per
    packet) label the records; sequence numbers come from the packet headers. Heartbeats and
    end-of-session packets carry no messages. Pass the same ``order_map`` to successive calls
    to keep live orders across them (live capture decodes packet batches this way).
    """
    clock = resolve_date(None, date)
    lengths = np.fromiter((len(p) for p in packets), dtype=np.int64, count=len(packets))
    buf = np.frombuffer(b"".join(bytes(p) for p in packets), dtype=np.uint8)
    sess = SessionDecoder(clock, channel=0, order_map=order_map)
    cols = sess.decode_packets(buf, lengths, ts_recv, channel, path="<packets>", errors=errors)
    return {k: pa.Table.from_batches([b]) for k, b in to_batches(cols).items()}
