"""Live capture of MoldUDP64 feeds: lines A and B, arbitration, gap recovery, journal, decode.

One :class:`Capture` owns the sockets of a feed's two lines (UDP multicast, joined on a chosen
interface, large receive buffers, kernel receive timestamps via ``SO_TIMESTAMPNS``), a UDP
socket for re-requests, and the output: the raw journal (``ingest.journal``) and, optionally,
normalized Parquet per schema.

How packets become a stream:

* Each socket is drained in batches into a preallocated buffer; one compiled call
  (:func:`scan_packets`) checks every packet of the batch (header length, session, message
  blocks inside the datagram) and reads its sequence number and message count. Malformed
  packets are counted and logged, never accepted.
* Arbitration by MoldUDP64 sequence: the first copy of a packet wins, from either line; later
  copies are dropped and counted. Packets ahead of the next expected sequence wait.
* A gap (the next expected sequence is missing while later packets or a heartbeat show it was
  sent) is held for ``gap_timeout`` seconds (the other line's copy usually arrives), then
  re-requested from the re-request server in ranges of at most ``max_request`` messages, with
  ``retries`` attempts ``retry_timeout`` apart. A gap still open after that is declared: it is
  journaled and reported as a ``status`` record of type ``G`` (``value`` = messages lost,
  ``sequence`` = the first lost one, instrument 0: every instrument's book is stale from there)
  and the capture goes on with the messages after it. It never hangs and never invents data.
* End of session (count 0xFFFF) ends the capture once everything before it was delivered or
  declared lost.

Not thread-safe: one thread runs :meth:`Capture.poll` / :meth:`Capture.run`.
"""

from __future__ import annotations

import heapq
import logging
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa

from ingest import moldudp64 as M
from normalize import records as R
from normalize._bytes import be16, be64, u8
from normalize.itch_spec import MESSAGE_LENGTH

log = logging.getLogger("tickpipe.capture")

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)     # Linux
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
SLOT = 2048                    # bytes per received datagram slot (MoldUDP64 packets fit an MTU)
BATCH = 256                    # datagrams drained per socket per round

# packet checks (scan_packets)
P_OK = 0
P_SHORT = 1                    # shorter than the MoldUDP64 header
P_SESSION = 2                  # another session than the one being captured
P_OVERRUN = 3                  # a block length or the count runs past the datagram
P_TRUNCATED = 4                # the datagram filled its receive slot: it may have been cut
P_BAD_MESSAGE = 5              # a message length disagrees with its type
CHECK_TEXT = {P_SHORT: "shorter than the MoldUDP64 header", P_SESSION: "wrong session",
              P_OVERRUN: "message count overruns the datagram", P_TRUNCATED: "datagram larger than the receive slot",
              P_BAD_MESSAGE: "a message length disagrees with its type"}

MAX_IN_FLIGHT = 256            # re-requests sent at once for one gap
FLUSH_INTERVAL = 0.02          # seconds delivered packets may wait for the journal/decoder

#: status record type of a declared gap (not an ITCH letter)
GAP_TYPE = ord("G")


@numba.njit(cache=True, nogil=True)
def scan_packets(buf, lengths, n, session, explen, seq_out, count_out, check_out):
    """Check ``n`` datagrams (slot ``i`` at ``buf[i * SLOT:]``, ``lengths[i]`` bytes).

    ``session`` is the expected 10-byte session (empty: any). Writes each packet's first
    sequence, message count and check code (``P_*``).
    """
    for i in range(n):
        p = i * SLOT
        ln = lengths[i]
        seq_out[i] = 0
        count_out[i] = 0
        if ln > SLOT - 1:
            check_out[i] = P_TRUNCATED
            continue
        if ln < M.HEADER_LENGTH:
            check_out[i] = P_SHORT
            continue
        ok = True
        if session.shape[0] == M.SESSION_LENGTH:
            for k in range(M.SESSION_LENGTH):
                if u8(buf, p + k) != session[k]:
                    ok = False
        if not ok:
            check_out[i] = P_SESSION
            continue
        seq_out[i] = be64(buf, p + M.SEQUENCE_OFFSET)
        count = be16(buf, p + M.COUNT_OFFSET)
        count_out[i] = count
        if count == M.HEARTBEAT or count == M.END_OF_SESSION:
            check_out[i] = P_OK
            continue
        q = p + M.HEADER_LENGTH
        end = p + ln
        status = P_OK
        for _ in range(count):
            if q + 2 > end:
                status = P_OVERRUN
                break
            mlen = be16(buf, q)
            if q + 2 + mlen > end:
                status = P_OVERRUN
                break
            if mlen == 0 or explen[u8(buf, q + 2)] != mlen:
                status = P_BAD_MESSAGE
                break
            q += 2 + mlen
        check_out[i] = status


def trim_packet(packet: bytes, skip: int) -> bytes:
    """The same packet without its first ``skip`` messages (a re-request reply that overlaps)."""
    seq = M.sequence(packet)
    count = M.message_count(packet)
    q = M.HEADER_LENGTH
    for _ in range(skip):
        q += 2 + struct.unpack_from(">H", packet, q)[0]
    return M.encode_header(M.session(packet), seq + skip, count - skip) + packet[q:]


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)   # Linux; needs CAP_NET_ADMIN


def _set_rcvbuf(sock: socket.socket, nbytes: int) -> int:
    """Ask for a large receive buffer: past ``net.core.rmem_max`` when privileged (bursts of
    a fast feed must not overflow it), else as much as the kernel allows. Returns the size got."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, nbytes)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if got < nbytes // 2:
        log.warning("receive buffer is %d bytes, asked for %d: raise net.core.rmem_max "
                    "(sysctl) or run with CAP_NET_ADMIN, or bursts may be dropped", got, nbytes)
    return got


def _parse_endpoint(value, name: str) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"The `{name}` was not HOST:PORT, was {value!r}.")
    return host, int(port)


@dataclass
class Gap:
    first: int                  # first missing sequence
    count: int                  # messages missing (so far)
    opened: float               # monotonic time it was seen
    requests: int = 0
    last_request: float = 0.0


@dataclass
class CaptureStats:
    packets_a: int = 0
    packets_b: int = 0
    accepted: int = 0                   # packets delivered in sequence
    messages: int = 0                   # messages delivered
    duplicates: int = 0                 # copies dropped by arbitration
    heartbeats: int = 0
    malformed: int = 0
    malformed_reasons: dict[str, int] = field(default_factory=dict)
    other_sessions: dict[str, int] = field(default_factory=dict)   # session -> packets seen
    recovered_packets: int = 0          # delivered from re-request replies
    recovered_messages: int = 0
    rerequests: int = 0
    gaps_declared: list[tuple[int, int]] = field(default_factory=list)   # (first, count)
    gap_seconds: list[float] = field(default_factory=list)  # seen-to-declared time of each
    end_of_session: bool = False
    first_sequence: int | None = None
    next_sequence: int | None = None
    seconds: float = 0.0
    active_seconds: float = 0.0         # first datagram received to the last message delivered

    @property
    def msgs_per_s(self) -> float:
        """Messages delivered per second while the feed was flowing."""
        return self.messages / self.active_seconds if self.active_seconds > 0 else 0.0

    @property
    def messages_lost(self) -> int:
        return sum(c for _, c in self.gaps_declared)


class Capture:
    """Capture one MoldUDP64 session from lines A and B; journal it; decode it.

    Parameters
    ----------
    line_a, line_b
        ``(group, port)`` or ``"GROUP:PORT"`` of each line (``line_b`` may be None).
    interface
        The local address whose interface joins the groups (``127.0.0.1`` for loopback).
    rerequest
        ``(host, port)`` of the MoldUDP64 re-request server, or None (gaps are then declared
        after ``gap_timeout``).
    out
        Directory for the journal (``journal.bin``, ``index.bin``: ``ingest.read_journal(out)``)
        and, with ``decode_date``, the normalized Parquet files (``mbo.parquet``, ...). None: keep nothing but statistics.
    session
        The 10-byte MoldUDP64 session to capture; None: the first one seen.
    """

    def __init__(self, line_a, line_b=None, *, interface: str = "127.0.0.1", rerequest=None,
                 out=None, decode_date=None, session: bytes | None = None,
                 gap_timeout: float = 0.05, retry_timeout: float = 0.1, retries: int = 3,
                 max_request: int = 1000, rcvbuf: int = 64 << 20, flush_packets: int = 500,
                 journal_level: int = 1, sink=None):
        self.lines = [_parse_endpoint(line_a, "line_a")]
        if line_b is not None:
            self.lines.append(_parse_endpoint(line_b, "line_b"))
        self.interface = interface
        self.rerequest = _parse_endpoint(rerequest, "rerequest") if rerequest else None
        self.session = session
        self.gap_timeout, self.retry_timeout, self.retries = gap_timeout, retry_timeout, retries
        self.max_request = max(1, min(int(max_request), M.MAX_MESSAGE_COUNT))
        self.stats = CaptureStats()
        self.expected: int | None = None          # next sequence to deliver
        self.pending: dict[int, tuple[int, bytes, int, bool]] = {}   # seq -> (ts, packet, count, recovered)
        self._heap: list[int] = []                # the pending sequences, smallest first
        self.gap: Gap | None = None
        self.eos_seq: int | None = None
        self._rcvbuf = rcvbuf
        self._socks: list[socket.socket] = []
        self._req_sock: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._buf = np.zeros(BATCH * SLOT, np.uint8)
        self._lengths = np.zeros(BATCH, np.int64)
        self._ts = [0] * BATCH
        self._tsa = np.zeros(BATCH, np.uint64)
        self._mv = memoryview(self._buf)
        from ingest import _recvmmsg
        self._mm = _recvmmsg.BatchReceiver(self._buf, BATCH, SLOT) if _recvmmsg.available() else None
        self._seq = np.zeros(BATCH, np.uint64)
        self._count = np.zeros(BATCH, np.uint32)
        self._check = np.zeros(BATCH, np.uint8)
        self._out_packets: list[bytes] = []
        self._out_ts: list[int] = []
        self._out_seq: list[int] = []
        self._flush_packets = flush_packets
        self.out = Path(out) if out is not None else None
        self.journal = None
        self.sink = None
        if self.out is not None:
            from ingest.journal import JournalWriter
            self.out.mkdir(parents=True, exist_ok=True)
            self.journal = JournalWriter(self.out, level=journal_level)   # beside the Parquet files
            if sink is not None:
                self.sink = sink
            elif decode_date is not None:
                self.sink = ParquetSink(self.out, decode_date)
        # journal and Parquet are written by one background thread, in delivery order, so the
        # receive loop only receives and arbitrates (zstd, hashing, numba and Arrow release the GIL)
        self._writer = _Writer(self.journal, self.sink) if (self.journal or self.sink) else None
        self._t0 = time.monotonic()
        self._t_first = self._t_last = None
        self._last_flush = time.monotonic()
        self._per_packet = 32          # messages per packet seen lately: the re-request size
        # compile (or load) the packet check now, not in the first poll with sockets filling
        for sess in (np.frombuffer(b"0123456789", np.uint8), np.zeros(0, np.uint8)):
            scan_packets(self._buf, self._lengths, 0, sess, MESSAGE_LENGTH, self._seq,
                         self._count, self._check)  # both kinds poll passes (read-only or not)
        self._open()

    # -- sockets ----------------------------------------------------------------------------
    def _open(self) -> None:
        for name, (group, port) in zip("AB", self.lines):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _set_rcvbuf(s, self._rcvbuf)
            s.bind((group, port))
            mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(self.interface))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setblocking(False)
            self._socks.append(s)
            self._sel.register(s, selectors.EVENT_READ, name)
        if self.rerequest is not None:
            r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            _set_rcvbuf(r, self._rcvbuf)
            r.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            r.bind((self.interface, 0))
            r.setblocking(False)
            self._req_sock = r
            self._sel.register(r, selectors.EVENT_READ, "R")

    def close(self) -> None:
        """Deliver what can be delivered, flush the journal and Parquet, close the sockets."""
        self._flush_output()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        for s in self._socks + ([self._req_sock] if self._req_sock else []):
            try:
                self._sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self._socks, self._req_sock = [], None
        self.stats.seconds = time.monotonic() - self._t0
        if self._t_first is not None and self._t_last is not None:
            self.stats.active_seconds = self._t_last - self._t_first

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- receiving ----------------------------------------------------------------------------
    def _drain(self, sock: socket.socket) -> int:
        """Receive up to BATCH datagrams from one socket into the slot buffer."""
        if self._mm is not None:
            n = self._mm.recv(sock, self._lengths, self._tsa)
            if n:
                missing = self._tsa[:n] == 0
                if missing.any():
                    self._tsa[:n][missing] = time.time_ns()
                self._ts = self._tsa[:n].tolist()
            return n
        n = 0
        mv = memoryview(self._buf)
        while n < BATCH:
            try:
                nbytes, anc, _flags, _addr = sock.recvmsg_into([mv[n * SLOT:(n + 1) * SLOT]], 64)
            except BlockingIOError:
                break
            ts = 0
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("qq", data)
                    ts = sec * 1_000_000_000 + nsec
            self._lengths[n] = nbytes
            self._ts[n] = ts if ts else time.time_ns()
            n += 1
        return n

    def poll(self, timeout: float = 0.01) -> int:
        """Receive what has arrived (waiting at most ``timeout`` s), arbitrate, handle gaps.

        Returns the number of datagrams processed (bounded work per call).
        """
        work = 0
        for key, _ in self._sel.select(timeout):
            line = key.data
            n = self._drain(key.fileobj)
            if n == 0:
                continue
            work += n
            sess = np.frombuffer(self.session, np.uint8) if self.session else np.zeros(0, np.uint8)
            scan_packets(self._buf, self._lengths, n, sess, MESSAGE_LENGTH, self._seq, self._count,
                         self._check)
            if line == "A":
                self.stats.packets_a += n
            elif line == "B":
                self.stats.packets_b += n
            seq, count, check = self._seq[:n], self._count[:n], self._check[:n]
            # copies the stream already has (usually the slower line's): dropped without a look
            stale = ((check == P_OK) & (count != M.HEARTBEAT) & (count != M.END_OF_SESSION)
                     & (seq + count <= np.uint64(self.expected))) if self.expected is not None else None
            if stale is not None and stale.any():
                self.stats.duplicates += int(stale.sum())
                todo = np.flatnonzero(~stale).tolist()
            else:
                todo = range(n)
            seqs, counts, checks = seq.tolist(), count.tolist(), check.tolist()
            for i in todo:
                if checks[i] != P_OK:
                    self._malformed(i, checks[i], line)
                    continue
                if self.session is None:
                    self.session = bytes(self._buf[i * SLOT:i * SLOT + M.SESSION_LENGTH])
                self._on_packet(i, seqs[i], counts[i], line == "R")
        self._deliver()
        self._handle_gap()
        if self._out_packets and (len(self._out_packets) >= self._flush_packets
                                  or time.monotonic() - self._last_flush > FLUSH_INTERVAL):
            self._flush_output()
        return work

    def _malformed(self, i: int, code: int, line: str) -> None:
        self.stats.malformed += 1
        why = CHECK_TEXT.get(code, str(code))
        if code == P_SESSION:
            other = bytes(self._buf[i * SLOT:i * SLOT + M.SESSION_LENGTH]).decode("ascii", "replace")
            n = self.stats.other_sessions.get(other, 0)
            self.stats.other_sessions[other] = n + 1
            if n == 0:
                log.warning("line %s: packets of session %r while capturing %r: counted, not "
                            "accepted; this capture ends with %r (capture %r with a new run)",
                            line, other, self.session.decode("ascii", "replace"),
                            self.session.decode("ascii", "replace"), other)
            return
        self.stats.malformed_reasons[why] = self.stats.malformed_reasons.get(why, 0) + 1
        log.warning("line %s: malformed MoldUDP64 datagram (%d bytes) skipped: %s", line,
                    int(self._lengths[i]), why)

    def _on_packet(self, i: int, seq: int, count: int, recovered: bool) -> None:
        if self.stats.first_sequence is None:
            self.stats.first_sequence = seq
            self._t_first = time.monotonic()
        if self.expected is None:
            self.expected = seq
        if count == M.HEARTBEAT:
            self.stats.heartbeats += 1
            if seq > self.expected and not self.pending:
                self._open_gap(seq)         # the heartbeat says messages before `seq` were sent
            return
        if count == M.END_OF_SESSION:
            self.eos_seq = seq
            if seq > self.expected and not self.pending:
                self._open_gap(seq)
            return
        if not recovered:          # the feed's packets, not replies, set the request size
            self._per_packet = max(self._per_packet, count) if count < self._per_packet * 2 else self._per_packet
        end = seq + count
        if end <= self.expected or seq in self.pending:
            self.stats.duplicates += 1
            return
        pkt = self._mv[i * SLOT:i * SLOT + int(self._lengths[i])].tobytes()
        if seq < self.expected:                     # overlapping reply: keep the new part
            pkt = trim_packet(pkt, self.expected - seq)
            count -= self.expected - seq
            seq = self.expected
        self._hold(seq, (self._ts[i], pkt, count, recovered))

    def _min_pending(self) -> int | None:
        """Smallest pending sequence (the heap may hold keys already taken out)."""
        h = self._heap
        while h and h[0] not in self.pending:
            heapq.heappop(h)
        return h[0] if h else None

    def _hold(self, seq: int, entry) -> None:
        if seq not in self.pending:
            heapq.heappush(self._heap, seq)
        self.pending[seq] = entry

    def _deliver(self) -> None:
        while True:
            first = self._min_pending()
            if first is None:
                break
            if first < self.expected:
                # a copy cut differently (a re-request reply) that the stream has passed
                heapq.heappop(self._heap)
                t2, p2, c2, r2 = self.pending.pop(first)
                if first + c2 > self.expected:
                    skip = self.expected - first
                    self._hold(self.expected, (t2, trim_packet(p2, skip), c2 - skip, r2))
                else:
                    self.stats.duplicates += 1
                continue
            if first != self.expected:
                break
            heapq.heappop(self._heap)
            ts, pkt, count, recovered = self.pending.pop(first)
            self._out_packets.append(pkt)
            self._out_ts.append(ts)
            self._out_seq.append(first)
            self.stats.accepted += 1
            self.stats.messages += count
            if recovered:
                self.stats.recovered_packets += 1
                self.stats.recovered_messages += count
            self.expected += count
            self._t_last = time.monotonic()
        self.stats.next_sequence = self.expected
        held_since = None
        if self.gap is not None and (self.expected is None or self.expected > self.gap.first):
            # progress: a reply (at most one packet's worth) or the other line filled the front
            # of the gap; what remains is asked for again at once, without a second hold
            held_since = self.gap.opened if self.gap.requests else None
            self.gap = None
        first = self._min_pending()
        if first is not None and self.gap is None:
            self._open_gap(first)
            if self.gap is not None and held_since is not None:
                self.gap.opened = held_since

    def _open_gap(self, upto: int) -> None:
        if self.gap is None and upto > self.expected:
            self.gap = Gap(self.expected, upto - self.expected, time.monotonic())

    def _handle_gap(self) -> None:
        g = self.gap
        if g is None:
            return
        first = self._min_pending()
        upto = first if first is not None else (self.eos_seq or g.first + g.count)
        g.count = max(g.count, upto - g.first)
        now = time.monotonic()
        if now - g.opened < self.gap_timeout:
            return
        if self._req_sock is not None and g.requests < self.retries:
            if g.requests == 0 or now - g.last_request >= self.retry_timeout:
                # a reply holds one packet at most; the rest of the range is asked for again
                self._request(g.first, g.count)
                g.requests += 1
                g.last_request = now
            return
        if self._req_sock is not None and now - g.last_request < self.retry_timeout:
            return
        self._declare(g)

    def _request(self, first: int, count: int) -> None:
        """Ask for ``count`` messages from ``first``: one request per packet's worth of messages
        (a server answers a request with at most one packet), at most ``MAX_IN_FLIGHT`` at once;
        what is still missing when the replies are in is asked for again."""
        from ingest.exchange import rerequest_packet
        chunk = max(1, min(self.max_request, self._per_packet))
        s, end = first, first + count
        for _ in range(MAX_IN_FLIGHT):
            if s >= end:
                break
            k = min(chunk, end - s)
            self._req_sock.sendto(rerequest_packet(self.session or b" " * 10, s, k), self.rerequest)
            self.stats.rerequests += 1
            s += k

    def _declare(self, g: Gap) -> None:
        first = self._min_pending()
        upto = first if first is not None else (self.eos_seq or g.first + g.count)
        count = upto - g.first
        log.warning("gap declared: sequences %d..%d (%d messages) could not be recovered",
                    g.first, upto - 1, count)
        self.stats.gaps_declared.append((g.first, count))
        self.stats.gap_seconds.append(time.monotonic() - g.opened)
        self._flush_output()
        if self._writer is not None:
            self._writer.put_gap(g.first, count, time.time_ns())
        self.expected = upto
        self.gap = None
        self._deliver()

    def _flush_output(self) -> None:
        if not self._out_packets or self._writer is None:
            self._out_packets, self._out_ts, self._out_seq = [], [], []
            return
        self._writer.put(self._out_seq, self._out_ts, self._out_packets)
        self._out_packets, self._out_ts, self._out_seq = [], [], []
        self._last_flush = time.monotonic()

    # -- running --------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.eos_seq is not None and self.expected is not None
                and self.expected >= self.eos_seq and not self.pending)

    def run(self, *, timeout: float | None = None, idle_timeout: float | None = 10.0) -> CaptureStats:
        """Capture until end of session (everything before it delivered or declared lost), or
        ``timeout`` seconds in all, or ``idle_timeout`` seconds without any datagram."""
        t0 = last = time.monotonic()
        try:
            while not self.done:
                if self.poll(0.005):
                    last = time.monotonic()
                now = time.monotonic()
                if timeout is not None and now - t0 > timeout:
                    log.warning("capture stopped after its %.1f s time limit", timeout)
                    break
                if idle_timeout is not None and now - last > idle_timeout and self.gap is None:
                    log.warning("capture stopped: nothing received for %.1f s", idle_timeout)
                    break
        finally:
            self.close()
        self.stats.end_of_session = self.done
        return self.stats


class _Writer:
    """One thread that journals and decodes delivered packets, in order. Errors are re-raised
    in the capture thread at the next ``put`` or at ``close``."""

    def __init__(self, journal, sink):
        import queue
        import threading
        self.journal, self.sink = journal, sink
        self.q: queue.Queue = queue.Queue(maxsize=64)
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name="tickpipe-capture-writer", daemon=True)
        self.t.start()

    def put(self, seqs: list[int], ts: list[int], packets: list[bytes]) -> None:
        self._raise()
        self.q.put(("p", seqs, ts, packets))

    def put_gap(self, first: int, count: int, ts: int) -> None:
        self._raise()
        self.q.put(("g", first, count, ts))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                if item[0] == "p":
                    _, seqs, ts, packets = item
                    lengths = np.fromiter(map(len, packets), np.int64, len(packets))
                    buf = np.frombuffer(b"".join(packets), np.uint8)
                    if self.journal is not None:
                        self.journal.append_many(seqs, ts, buf, lengths)
                    if self.sink is not None:
                        self.sink.write(buf, lengths, ts)
                else:
                    _, first, count, ts = item
                    if self.journal is not None:
                        self.journal.append_gap(first, count, ts)
                    if self.sink is not None:
                        self.sink.gap(first, count, ts)
            except BaseException as e:      # keep draining; report in the capture thread
                log.error("capture writer failed: %s", e)
                self.error = e

    def close(self) -> None:
        self.q.put(None)
        self.t.join()
        self._raise()


class ParquetOutput:
    """Normalized Parquet per schema (``mbo.parquet``, ...) under ``out``."""

    def __init__(self, out: Path):
        import pyarrow.parquet as pq

        from normalize.reader import SCHEMA_KEYS
        self.writers = {k: pq.ParquetWriter(Path(out) / f"{k}.parquet", R.arrow_schema(k),
                                            compression="zstd") for k in SCHEMA_KEYS}
        self.rows = dict.fromkeys(SCHEMA_KEYS, 0)

    def _write(self, key: str, table) -> None:
        for b in (table.to_batches() if isinstance(table, pa.Table) else [table]):
            if b.num_rows:
                self.writers[key].write_batch(b)
                self.rows[key] += b.num_rows

    def put(self, channel: int, key: str, batch) -> None:
        self._write(key, batch)

    def close_channel(self, channel: int) -> None:
        pass

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


class MergedOutput(ParquetOutput):
    """Parquet of several channels merged into ``ts_event`` order (``ingest.merge``).

    Thread-safe: each channel's writer thread calls :meth:`put`."""

    def __init__(self, out: Path, channels, *, window_s: float = 0.5):
        import threading

        from ingest.merge import ChannelMerger
        super().__init__(out)
        self.mergers = {k: ChannelMerger(channels, window_s=window_s) for k in self.writers}
        self.lock = threading.Lock()

    def put(self, channel: int, key: str, batch) -> None:
        with self.lock:
            for t in self.mergers[key].push(channel, batch):
                self._write(key, t)

    def close_channel(self, channel: int) -> None:
        with self.lock:
            for key, m in self.mergers.items():
                for t in m.close(channel):
                    self._write(key, t)

    def close(self) -> None:
        with self.lock:
            for key, m in self.mergers.items():
                for t in m.flush():
                    self._write(key, t)
        super().close()

    @property
    def late(self) -> int:
        return sum(m.late for m in self.mergers.values())


_WARM = False


def _warm_up(date) -> None:
    """Decode a small generated session's packet with a throwaway decoder, once a process, so
    that the decoder's kernels are compiled (or loaded from numba's cache) before any socket
    receives: compiling holds the GIL for seconds, and a receive loop starved that long loses
    the packets its socket buffers cannot hold, on both lines at once."""
    global _WARM
    if _WARM:
        return
    from ingest.moldudp64 import packetize
    from ingest.simulator import generate_session
    from normalize.reader import SessionDecoder, to_batches
    pkts = packetize(generate_session(300, 3, seed=0).to_binaryfile(), b"WARMUP    ", 1)
    buf = np.frombuffer(b"".join(pkts), np.uint8)
    cols = SessionDecoder(date).decode_packets(buf, np.array([len(p) for p in pkts], np.int64),
                                               np.zeros(len(pkts), np.uint64), 0,
                                               path="<warm-up>", errors="skip")
    to_batches(cols)
    _WARM = True


class ParquetSink:
    """Decodes delivered packets (in sequence order) into normalized records for an output
    (its own :class:`ParquetOutput` under ``out`` unless one is given); records carry
    ``channel``."""

    def __init__(self, out: Path, date, *, channel: int = 0, output: ParquetOutput | None = None):
        from normalize.reader import SessionDecoder, resolve_date
        self.channel = channel
        self.decoder = SessionDecoder(resolve_date(None, date), channel=channel)
        _warm_up(resolve_date(None, date))
        self.own = output is None
        self.output = ParquetOutput(out) if output is None else output

    @property
    def rows(self) -> dict[str, int]:
        return self.output.rows

    def write(self, buf: np.ndarray, lengths: np.ndarray, ts: list[int]) -> None:
        """Decode packets lying back to back in ``buf`` and pass on their records."""
        from normalize.reader import to_batches
        cols = self.decoder.decode_packets(buf, lengths, np.asarray(ts, np.uint64), self.channel,
                                           path="<capture>", errors="skip")
        for k, b in to_batches(cols).items():
            if b.num_rows:
                self.output.put(self.channel, k, b)

    def gap(self, first: int, count: int, ts: int) -> None:
        st = R.alloc_columns("status", 1, zero=True)
        st.ts_event[0] = ts
        st.ts_recv[0] = ts
        st.sequence[0] = first
        st.value[0] = count
        st.channel[0] = self.channel
        st.msg_type[0] = GAP_TYPE
        st.price_1[0] = st.price_2[0] = st.price_3[0] = R.UNDEF_PRICE
        self.output.put(self.channel, "status", R.columns_to_arrow("status", st))

    def close(self) -> None:
        self.output.close_channel(self.channel)
        if self.own:
            self.output.close()


class MultiCapture:
    """Several channels (MoldUDP64 sessions), each with lines A/B and its own re-request
    server, captured together: one journal per channel (``out/channel<k>/``) and one set of
    normalized Parquet under ``out`` merged in ``ts_event`` order (a channel silent for
    ``window_s`` seconds stops holding the others back).

    ``channels`` is a list of ``(line_a, line_b, rerequest)``. Not thread-safe.
    """

    def __init__(self, channels, *, out, decode_date, interface: str = "127.0.0.1",
                 window_s: float = 0.5, **capture_options):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        ids = list(range(len(channels)))
        self.output = MergedOutput(self.out, ids, window_s=window_s)
        self.captures = []
        for k, (a, b, rr) in zip(ids, channels):
            sink = ParquetSink(self.out, decode_date, channel=k, output=self.output)
            self.captures.append(Capture(a, b, interface=interface, rerequest=rr,
                                         out=self.out / f"channel{k}", sink=sink, **capture_options))

    def run(self, *, timeout: float | None = None, idle_timeout: float | None = 10.0) -> list[CaptureStats]:
        t0 = last = time.monotonic()
        try:
            while not all(c.done for c in self.captures):
                work = sum(c.poll(0.001) for c in self.captures if not c.done)
                now = time.monotonic()
                if work:
                    last = now
                if timeout is not None and now - t0 > timeout:
                    break
                if idle_timeout is not None and now - last > idle_timeout:
                    break
        finally:
            for c in self.captures:
                c.stats.end_of_session = c.done
                c.close()
            self.output.close()
        return [c.stats for c in self.captures]


def capture_dir_tables(out) -> dict[str, pa.Table]:
    """The normalized tables a capture wrote under ``out``."""
    import pyarrow.parquet as pq
    from normalize.reader import SCHEMA_KEYS
    return {k: pq.read_table(Path(out) / f"{k}.parquet") for k in SCHEMA_KEYS
            if (Path(out) / f"{k}.parquet").exists()}
