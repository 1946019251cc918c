"""MoldUDP64 downstream packets: layout constants, accessors, encoders and a compiled framer.

A downstream packet (NASDAQ "MoldUDP64 Protocol Specification" 1.00), integers big-endian::

    offset  length  field
    0       10      session (ASCII, right-padded with spaces)
    10      8       sequence number of the first message in the packet
    18      2       message count (0: heartbeat, 0xFFFF: end of session)
    20      ...     count message blocks: u16 length, then that many message bytes

Heartbeats and end-of-session packets carry no messages; their sequence number is the next
one expected. BinaryFILE framing (``u16`` length, message) is exactly a run of message blocks,
so :func:`packetize` cuts a BinaryFILE buffer into packets without copying messages one by one.

Thread safety: constants, accessors and encoders are pure functions of their arguments.
:func:`frame_moldudp64` is compiled ``nogil``: concurrent calls are safe when each has its own
output, skip and tally arrays (the input buffer is only read). :func:`frame_packets` allocates
its own arrays and is safe to call from several threads.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np

from normalize import records as R
from normalize._bytes import be16, be64
from normalize.itch_decode import (ERR_LENGTH, ERR_TRUNCATED, ERR_UNKNOWN_TYPE, ERR_ZERO_LENGTH,
                                   FULL, MSG_INDEX, OK, STATUS_TEXT)
from normalize.itch_spec import MESSAGE_LENGTH
from tickpipe.errors import DecodeError, DecodeWarning

# -- layout (flyweight offsets; every integer big-endian) ---------------------------------------
SESSION_OFFSET = 0
SESSION_LENGTH = 10
SEQUENCE_OFFSET = 10
SEQUENCE_LENGTH = 8
COUNT_OFFSET = 18
COUNT_LENGTH = 2
HEADER_LENGTH = 20
BLOCK_LENGTH_SIZE = 2          # the u16 length in front of every message
HEARTBEAT = 0                  # message count of a heartbeat
END_OF_SESSION = 0xFFFF        # message count of an end-of-session packet
MAX_MESSAGE_COUNT = 0xFFFE     # most messages in one packet (or one re-request)
MAX_MESSAGE_LENGTH = 0xFFFF
MAX_UDP_PAYLOAD = 65507        # IPv4 limit on one UDP datagram's payload
DEFAULT_MAX_PAYLOAD = 1400     # keeps a packet inside a 1500-byte Ethernet MTU
MIN_MESSAGE_LENGTH = int(MESSAGE_LENGTH[MESSAGE_LENGTH > 0].min())   # 12 (S, W)
MIN_BLOCK = BLOCK_LENGTH_SIZE + MIN_MESSAGE_LENGTH   # bytes per valid message, at least

# -- status codes (framing codes shared with normalize.itch_decode, plus these) -----------------
ERR_SHORT_PACKET = 32      # packet shorter than its header
ERR_OVERRUN = 33           # message count / a block length runs past the end of the packet
ERR_PACKET_BOUNDS = 34     # the packet table points outside the buffer
ERR_TOO_LONG = 35          # (packetize) one message does not fit in max_payload

MOLD_STATUS_TEXT = {
    **STATUS_TEXT,
    ERR_SHORT_PACKET: "MoldUDP64 packet shorter than its 20-byte header",
    ERR_OVERRUN: "MoldUDP64 message blocks run past the end of the packet",
    ERR_PACKET_BOUNDS: "packet lies outside the buffer",
    ERR_TOO_LONG: "message does not fit in one packet",
}

# slots of the tally array (uint64) that frame_moldudp64 adds to
T_HEARTBEATS = 0
T_END_OF_SESSION = 1
T_EOS_SEQUENCE = 2
T_PACKETS_SKIPPED = 3
T_MESSAGES_SKIPPED = 4
N_TALLY = 5

UNDEF_SEQ = np.uint64(np.iinfo(np.uint64).max)
_F_LAST = np.uint8(R.F_LAST)
_CHUNK_MESSAGES = 1 << 22   # output entries per compiled call (bounded memory per call)


# -- accessors (no object needed) ---------------------------------------------------------------

def _header(packet, offset: int) -> memoryview:
    mv = memoryview(packet).cast("B")
    if offset < 0 or offset + HEADER_LENGTH > len(mv):
        raise ValueError(f"The `packet` must hold a {HEADER_LENGTH}-byte MoldUDP64 header at "
                         f"offset {offset}, was {len(mv)} bytes long.")
    return mv[offset:offset + HEADER_LENGTH]


def session(packet, offset: int = 0) -> bytes:
    """The 10 session bytes of the packet starting at ``offset``."""
    return bytes(_header(packet, offset)[SESSION_OFFSET:SESSION_OFFSET + SESSION_LENGTH])


def sequence(packet, offset: int = 0) -> int:
    """Sequence number of the packet's first message (big-endian u64 at +10)."""
    return int.from_bytes(_header(packet, offset)[SEQUENCE_OFFSET:COUNT_OFFSET], "big")


def message_count(packet, offset: int = 0) -> int:
    """Message count (big-endian u16 at +18): 0 heartbeat, 0xFFFF end of session."""
    return int.from_bytes(_header(packet, offset)[COUNT_OFFSET:HEADER_LENGTH], "big")


@numba.njit(inline="always")
def nb_sequence(buf, p):
    """Compiled accessor: sequence of the packet at ``buf[p]`` (caller checks bounds)."""
    return be64(buf, p + SEQUENCE_OFFSET)


@numba.njit(inline="always")
def nb_count(buf, p):
    """Compiled accessor: message count of the packet at ``buf[p]`` (caller checks bounds)."""
    return be16(buf, p + COUNT_OFFSET)


# -- compiled framer ----------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def frame_moldudp64(buf, pkt_off, pkt_len, pkt_ts, pkt_chan, start, explen, skip,
                    out, sk_off, sk_pkt, sk_why, sk_seq, tally):
    """Frame packets ``start..`` of a packet table into ``out`` (:data:`MSG_INDEX`).

    Packet ``i`` is ``buf[pkt_off[i]:pkt_off[i] + pkt_len[i]]``, received at ``pkt_ts[i]`` on
    ``pkt_chan[i]``. Each message gets its type-byte offset, ``sequence = packet sequence + k``,
    and ``F_LAST`` when it is the last one written for its packet. Lengths are checked against
    ``explen`` (:data:`normalize.itch_spec.MESSAGE_LENGTH`).

    A bad message whose block is intact (unknown type, wrong length, zero length) is recorded in
    ``sk_*`` and stepped over when ``skip``; a bad packet (shorter than the header, or blocks
    running past its end) is recorded once and dropped whole. Without ``skip`` the walk stops at
    the first fault; messages written before it stay in ``out``. Heartbeats, end-of-session
    packets and skips are added to ``tally`` (``T_*`` slots).

    When ``out`` or ``sk_*`` fill up, the packet in hand is rolled back and status is ``FULL``:
    call again from ``next_pkt`` with fresh arrays.

    Returns ``(n_written, next_pkt, status, fault_pos, fault_seq, n_skipped)``; ``fault_pos`` is
    the buffer offset of the bad block (or packet), ``fault_seq`` its sequence or ``UNDEF_SEQ``.
    """
    npk = pkt_off.shape[0]
    nbuf = buf.shape[0]
    cap = out.shape[0]
    scap = sk_off.shape[0]
    n = ns = 0
    i = start
    while i < npk:
        p = pkt_off[i]
        end = p + pkt_len[i]
        n0, ns0 = n, ns
        status, fpos, fseq = OK, p, UNDEF_SEQ
        if p < 0 or end < p or end > nbuf:
            status = ERR_PACKET_BOUNDS
        elif end - p < HEADER_LENGTH:
            status = ERR_SHORT_PACKET
        else:
            seq = nb_sequence(buf, p)
            count = nb_count(buf, p)
            if count == HEARTBEAT:
                tally[T_HEARTBEATS] += np.uint64(1)
                i += 1
                continue
            if count == END_OF_SESSION:
                tally[T_END_OF_SESSION] += np.uint64(1)
                tally[T_EOS_SEQUENCE] = seq
                i += 1
                continue
            q = p + HEADER_LENGTH
            for k in range(count):
                mseq = seq + np.uint64(k)
                if q + BLOCK_LENGTH_SIZE > end:
                    status, fpos, fseq = ERR_OVERRUN, q, mseq
                    break
                ln = be16(buf, q)
                if q + BLOCK_LENGTH_SIZE + ln > end:
                    status, fpos, fseq = ERR_OVERRUN, q, mseq
                    break
                why = OK
                t = np.uint8(0)
                if ln == 0:
                    why = ERR_ZERO_LENGTH
                else:
                    t = buf[q + BLOCK_LENGTH_SIZE]
                    e = explen[t]
                    if e != ln:
                        why = ERR_UNKNOWN_TYPE if e == 0 else ERR_LENGTH
                if why != OK:
                    if not skip:
                        status, fpos, fseq = why, q, mseq
                        break
                    if ns >= scap:
                        status = FULL
                        break
                    sk_off[ns], sk_pkt[ns], sk_why[ns], sk_seq[ns] = q, i, why, mseq
                    ns += 1
                else:
                    if n >= cap:
                        status = FULL
                        break
                    r = out[n]
                    r.offset = q + BLOCK_LENGTH_SIZE
                    r.sequence = mseq
                    r.ts_recv = pkt_ts[i]
                    r.channel = pkt_chan[i]
                    r.flags = 0
                    r.type = t
                    r.length = ln
                    n += 1
                q += BLOCK_LENGTH_SIZE + ln
        if status == FULL:
            return n0, i, FULL, p, UNDEF_SEQ, ns0
        if status != OK:
            if not skip:
                return n, i, status, fpos, fseq, ns
            n, ns = n0, ns0
            if ns >= scap:
                return n0, i, FULL, p, UNDEF_SEQ, ns0
            sk_off[ns], sk_pkt[ns], sk_why[ns], sk_seq[ns] = fpos, i, status, fseq
            ns += 1
            tally[T_PACKETS_SKIPPED] += np.uint64(1)
        else:
            tally[T_MESSAGES_SKIPPED] += np.uint64(ns - ns0)
            if n > n0:
                out[n - 1].flags = _F_LAST
        i += 1
    return n, i, OK, 0, UNDEF_SEQ, ns


# -- Python driver -------------------------------------------------------------------------------

class Skip(NamedTuple):
    """One skipped unit: buffer offset, packet (or capture record) index, and why."""
    offset: int
    packet: int
    reason: str


class Framed(NamedTuple):
    """Raw result of :func:`frame_arrays` (codes, not text)."""
    index: np.ndarray           # MSG_INDEX
    tally: np.ndarray           # uint64[N_TALLY]
    skip_off: np.ndarray        # int64 buffer offset of each skipped unit
    skip_pkt: np.ndarray        # int64 packet index
    skip_why: np.ndarray        # uint8 status code
    skip_seq: np.ndarray        # uint64 sequence (UNDEF_SEQ when unknown)
    fault: tuple | None         # (status, byte offset, packet index, sequence | None)


def frame_arrays(buf, pkt_off, pkt_len, pkt_ts, pkt_chan, skip: bool) -> Framed:
    """Run :func:`frame_moldudp64` over a whole packet table in bounded chunks.

    Arrays must already have their final dtypes (uint8 buffer; int64 offsets and lengths; uint64
    timestamps; uint16 channels). One compiled call per chunk; no Python work per packet.
    """
    body = np.maximum(pkt_len - HEADER_LENGTH, 0)
    per = body // MIN_BLOCK                      # most valid messages a packet can hold
    total = int(per.sum())
    biggest = int(per.max(initial=0))
    scap = max(1024, int((body // BLOCK_LENGTH_SIZE).max(initial=0)) + 1) if skip else 1
    tally = np.zeros(N_TALLY, np.uint64)
    parts, sk_parts = [], []
    i, done = 0, 0
    status, fpos, fseq = OK, 0, UNDEF_SEQ
    while True:
        cap = max(min(total - done, _CHUNK_MESSAGES), biggest, 1)
        out = np.zeros(cap, MSG_INDEX)
        sk = (np.empty(scap, np.int64), np.empty(scap, np.int64), np.empty(scap, np.uint8),
              np.empty(scap, np.uint64))
        n, nxt, status, fpos, fseq, ns = frame_moldudp64(
            buf, pkt_off, pkt_len, pkt_ts, pkt_chan, i, MESSAGE_LENGTH, skip, out, *sk, tally)
        parts.append(out[:n] if 2 * n >= cap else out[:n].copy())
        sk_parts.append(tuple(a[:ns] for a in sk))
        if status != FULL:
            break
        if nxt == i and n == 0 and ns == 0:
            raise RuntimeError(f"MoldUDP64 framer made no progress at packet {i}")
        done += int(per[i:nxt].sum())
        i = nxt
    index = parts[0] if len(parts) == 1 else np.concatenate(parts)
    skips = [np.concatenate([p[j] for p in sk_parts]) for j in range(4)]
    fault = None
    if status != OK:
        fault = (int(status), int(fpos), int(nxt), None if fseq == UNDEF_SEQ else int(fseq))
    return Framed(index, tally, *skips, fault)


def _type_text(t: int) -> str:
    return repr(chr(t)) if 32 <= t < 127 else f"0x{t:02x}"


def describe(code: int, buf: np.ndarray, pos: int, pkt_off: int, pkt_len: int) -> str:
    """Human-readable reason for a framing status at ``buf[pos]`` in the packet given."""
    nbuf = buf.shape[0]
    if code == ERR_PACKET_BOUNDS:
        return (f"packet at offset {pkt_off} with length {pkt_len} lies outside the buffer of "
                f"{nbuf} bytes")
    if code == ERR_SHORT_PACKET:
        return (f"MoldUDP64 packet of {pkt_len} bytes is shorter than its {HEADER_LENGTH}-byte "
                f"header")
    end = pkt_off + pkt_len
    if code == ERR_OVERRUN:
        count = int(buf[pkt_off + COUNT_OFFSET]) << 8 | int(buf[pkt_off + COUNT_OFFSET + 1])
        need = BLOCK_LENGTH_SIZE
        if pos + BLOCK_LENGTH_SIZE <= end:
            need += int(buf[pos]) << 8 | int(buf[pos + 1])
        return (f"MoldUDP64 message count {count} overruns the packet: the block at packet byte "
                f"{pos - pkt_off} needs {need} bytes but {end - pos} of {pkt_len} remain")
    if code in (ERR_UNKNOWN_TYPE, ERR_LENGTH) and pos + BLOCK_LENGTH_SIZE < nbuf:
        ln = int(buf[pos]) << 8 | int(buf[pos + 1])
        t = int(buf[pos + BLOCK_LENGTH_SIZE])
        if code == ERR_UNKNOWN_TYPE:
            return f"unknown ITCH 5.0 message type {_type_text(t)} (length {ln})"
        return (f"message length {ln} disagrees with its type {_type_text(t)}: the "
                f"specification says {int(MESSAGE_LENGTH[t])}")
    return MOLD_STATUS_TEXT.get(code, f"framing status {code}")


def skip_reasons(fr: Framed, buf, pkt_off, pkt_len) -> list[tuple[int, int, str]]:
    """``(offset, packet index, reason text)`` for each skip recorded in ``fr``."""
    out = []
    for off, pk, why, seq in zip(fr.skip_off.tolist(), fr.skip_pkt.tolist(),
                                 fr.skip_why.tolist(), fr.skip_seq.tolist()):
        text = describe(why, buf, off, int(pkt_off[pk]), int(pkt_len[pk]))
        if seq != int(UNDEF_SEQ):
            text += f" (sequence {seq})"
        out.append((off, pk, text))
    return out


# -- public wrapper -----------------------------------------------------------------------------

@dataclass
class FrameResult:
    """Messages framed out of a table of MoldUDP64 packets."""
    index: np.ndarray                 # MSG_INDEX, one entry per valid message, in packet order
    n_packets: int                    # packets in the table
    n_heartbeats: int
    end_of_session: bool
    eos_sequence: int | None          # next sequence announced by the last end-of-session
    skipped: list[Skip] = field(default_factory=list)

    @property
    def n_messages(self) -> int:
        return int(self.index.shape[0])


def check_errors(errors: str) -> bool:
    """``True`` for ``errors="skip"``, ``False`` for ``"raise"``; anything else is an error."""
    if errors not in ("raise", "skip"):
        raise ValueError(f"The `errors` must be 'raise' or 'skip', was {errors!r}.")
    return errors == "skip"


def as_uint8(data) -> np.ndarray:
    """A flat, contiguous ``uint8`` view of bytes, a memoryview or an array (no copy if it can)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def _column(values, n: int, dtype, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim == 0:
        return np.full(n, a, dtype=dtype)
    if a.shape != (n,):
        raise ValueError(f"The `{name}` must hold one value per packet ({n}), had shape {a.shape}.")
    return np.ascontiguousarray(a, dtype=dtype)


def frame_packets(buf, pkt_offsets, pkt_lengths, pkt_ts=None, pkt_channel=0, *,
                  path: str = "<buffer>", errors: str = "raise") -> FrameResult:
    """Frame every MoldUDP64 packet ``buf[pkt_offsets[i]:][:pkt_lengths[i]]`` into a message index.

    ``pkt_ts`` (UTC ns, ``None``: unknown) and ``pkt_channel`` may be scalars or one value per
    packet. ``errors="raise"`` raises :class:`~tickpipe.errors.DecodeError` at the first bad
    packet or message, naming ``path``, the byte offset, the packet index (``.index``) and the
    sequence number, with the messages framed before it in ``.partial``; ``errors="skip"`` drops
    the bad unit, lists it in ``skipped`` and warns with :class:`~tickpipe.errors.DecodeWarning`.
    Thread-safe (allocates its own arrays; the buffer is only read).
    """
    skip = check_errors(errors)
    buf = as_uint8(buf)
    off = np.ascontiguousarray(pkt_offsets, dtype=np.int64).reshape(-1)
    n = off.shape[0]
    ln = _column(pkt_lengths, n, np.int64, "pkt_lengths")
    ts = _column(R.UNDEF_TIMESTAMP if pkt_ts is None else pkt_ts, n, np.uint64, "pkt_ts")
    ch = _column(pkt_channel, n, np.uint16, "pkt_channel")
    fr = frame_arrays(buf, off, ln, ts, ch, skip)
    skipped = [Skip(*s) for s in skip_reasons(fr, buf, off, ln)]
    eos = int(fr.tally[T_END_OF_SESSION]) > 0
    result = FrameResult(fr.index, n, int(fr.tally[T_HEARTBEATS]), eos,
                         int(fr.tally[T_EOS_SEQUENCE]) if eos else None, skipped)
    if fr.fault is not None:
        code, pos, pk, seq = fr.fault
        reason = f"packet {pk}: " + describe(code, buf, pos, int(off[pk]), int(ln[pk]))
        err = DecodeError(reason, path=path, offset=pos, sequence=seq, partial=result)
        err.index = pk
        raise err
    if skipped:
        warn_skipped(path, skipped, "packets or messages", stacklevel=3)
    return result


def warn_skipped(path: str, skipped: list, what: str, stacklevel: int = 2) -> None:
    """Warn (:class:`DecodeWarning`) how many units were skipped and the first few offsets."""
    first = ", ".join(str(s[0]) for s in skipped[:5])
    more = ", ..." if len(skipped) > 5 else ""
    warnings.warn(f"{path}: skipped {len(skipped)} bad {what} at byte offsets [{first}{more}]; "
                  f"first: {skipped[0][2]}", DecodeWarning, stacklevel=stacklevel)


# -- encoders (tests, simulator) ----------------------------------------------------------------

def _check_session(value) -> bytes:
    if isinstance(value, str):
        value = value.encode("ascii")
    if not isinstance(value, (bytes, bytearray)) or len(value) != SESSION_LENGTH:
        raise ValueError(f"The `session` must be {SESSION_LENGTH} bytes, was {value!r}.")
    return bytes(value)


def _check_seq(value: int, name: str = "sequence") -> int:
    if not 0 <= int(value) < 1 << 64:
        raise ValueError(f"The `{name}` must be in [0, 2**64), was {value!r}.")
    return int(value)


def encode_header(session_: bytes, sequence_: int, count: int) -> bytes:
    """The 20-byte MoldUDP64 header."""
    if not 0 <= count <= END_OF_SESSION:
        raise ValueError(f"The `count` must be in [0, {END_OF_SESSION}], was {count!r}.")
    return _check_session(session_) + struct.pack(">QH", _check_seq(sequence_), count)


def encode_packet(session: bytes, sequence: int, messages: list[bytes]) -> bytes:
    """One downstream packet carrying ``messages`` (any bytes; lengths are not checked)."""
    if len(messages) > MAX_MESSAGE_COUNT:
        raise ValueError(f"The `messages` must number at most {MAX_MESSAGE_COUNT}, "
                         f"were {len(messages)}.")
    blocks = []
    for k, m in enumerate(messages):
        if len(m) > MAX_MESSAGE_LENGTH:
            raise ValueError(f"The `messages[{k}]` must be at most {MAX_MESSAGE_LENGTH} bytes, "
                             f"was {len(m)}.")
        blocks.append(struct.pack(">H", len(m)))
        blocks.append(bytes(m))
    return encode_header(session, sequence, len(messages)) + b"".join(blocks)


def heartbeat(session: bytes, next_seq: int) -> bytes:
    """A heartbeat: no messages; ``next_seq`` is the next sequence number to be sent."""
    return encode_header(session, next_seq, HEARTBEAT)


def end_of_session(session: bytes, next_seq: int) -> bytes:
    """An end-of-session packet (count 0xFFFF); ``next_seq`` follows the last message sent."""
    return encode_header(session, next_seq, END_OF_SESSION)


@numba.njit(cache=True, nogil=True)
def _split_blocks(buf, max_body, max_count, starts, ends, counts):
    """Greedy cut of BinaryFILE blocks into packet bodies of at most ``max_body`` bytes.

    With empty output arrays only counts packets. Returns ``(n_packets, status, fault_pos)``.
    """
    n = buf.shape[0]
    fill = starts.shape[0] > 0
    npk = 0
    pos = 0
    while pos < n:
        s = pos
        c = 0
        while pos < n and c < max_count:
            if pos + BLOCK_LENGTH_SIZE > n:
                return npk, ERR_TRUNCATED, pos
            blk = BLOCK_LENGTH_SIZE + be16(buf, pos)
            if pos + blk > n:
                return npk, ERR_TRUNCATED, pos
            if blk > max_body:
                return npk, ERR_TOO_LONG, pos
            if pos + blk - s > max_body:
                break
            pos += blk
            c += 1
        if fill:
            starts[npk] = s
            ends[npk] = pos
            counts[npk] = c
        npk += 1
    return npk, OK, pos


def packetize(messages, session: bytes, first_seq: int,
              max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[bytes]:
    """Cut messages into MoldUDP64 packets no longer than ``max_payload`` bytes each.

    ``messages`` is either a BinaryFILE-framed buffer (bytes-like or ``uint8`` array of
    ``[u16 length][message]`` blocks) or a list of message bytes. Packets are filled greedily in
    order; sequence numbers run on from ``first_seq``.
    """
    ses = _check_session(session)
    seq0 = _check_seq(first_seq, "first_seq")
    if not HEADER_LENGTH + BLOCK_LENGTH_SIZE < max_payload <= MAX_UDP_PAYLOAD:
        raise ValueError(f"The `max_payload` must be in ({HEADER_LENGTH + BLOCK_LENGTH_SIZE}, "
                         f"{MAX_UDP_PAYLOAD}], was {max_payload!r}.")
    if isinstance(messages, (list, tuple)):
        for k, m in enumerate(messages):
            if len(m) > MAX_MESSAGE_LENGTH:
                raise ValueError(f"The `messages[{k}]` must be at most {MAX_MESSAGE_LENGTH} "
                                 f"bytes, was {len(m)}.")
        raw = b"".join(struct.pack(">H", len(m)) + bytes(m) for m in messages)
    else:
        raw = messages
    buf = as_uint8(raw)
    body = max_payload - HEADER_LENGTH
    empty = np.empty(0, np.int64)
    npk, status, pos = _split_blocks(buf, body, MAX_MESSAGE_COUNT, empty, empty, empty)
    if status == ERR_TRUNCATED:
        raise ValueError(f"The `messages` buffer ends inside the block at byte offset {pos}.")
    if status == ERR_TOO_LONG:
        size = BLOCK_LENGTH_SIZE + (int(buf[pos]) << 8 | int(buf[pos + 1]))
        raise ValueError(f"The message at byte offset {pos} ({size} bytes with its length) does "
                         f"not fit in `max_payload`={max_payload} after the header.")
    starts, ends, counts = (np.empty(npk, np.int64) for _ in range(3))
    _split_blocks(buf, body, MAX_MESSAGE_COUNT, starts, ends, counts)
    before = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    data = buf.tobytes()
    return [encode_header(ses, seq0 + k, c) + data[s:e]
            for k, c, s, e in zip(before.tolist(), counts.tolist(), starts.tolist(), ends.tolist())]
