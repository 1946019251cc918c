"""The network side of the exchange simulator: a MoldUDP64 multicast sender and re-request server.

:class:`Exchange` cuts a BinaryFILE session (``[u16 length][ITCH message]`` blocks, e.g.
:meth:`ingest.simulator.Session.to_binaryfile`) into MoldUDP64 downstream packets and sends
them on one or two multicast lines (A/B arbitration feeds) over real UDP sockets, with seeded
impairments per line (loss, duplication, reordering), pacing to a message rate, heartbeats while
idle and end-of-session packets at the end. A unicast re-request server answers MoldUDP64
request packets from the messages already sent.

Everything is decided up front: the impairments are drawn as numpy arrays (A and B from
independent streams of the same seed, so a run is reproducible), the packets and the merged
transmission schedule are prebuilt, and :meth:`Exchange.send` only walks that schedule in
bursts, one ``sendto`` per datagram, checking the clock once per burst.

Network rules: multicast leaves through ``interface`` (``IP_MULTICAST_IF``, default the loopback
address) with TTL 0 and ``IP_MULTICAST_LOOP`` on, so datagrams never leave the host; the
re-request server binds a unicast address (default ``127.0.0.1``, any free port) and replies only
to the address a request came from.

MoldUDP64 request packet (client to server, 20 bytes, integers big-endian)::

    offset  length  field
    0       10      session
    10      8       sequence number of the first message requested
    18      2       requested message count

The reply is one downstream packet starting at the requested sequence number, holding as many
of the requested messages as fit in ``max_payload`` bytes. Requests for messages not yet sent
(or never in the session), for another session or for zero messages get no reply.

Thread safety: :meth:`Exchange.send` must not run in two threads at once. The re-request server
runs in its own thread and only reads what ``send`` publishes (the count of packet slots passed,
one integer); its counters are written by that thread alone.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Iterable

import numba
import numpy as np

from ingest import moldudp64 as M
from normalize._bytes import be16
from tickpipe.errors import DecodeError

# -- request packet (same layout as the downstream header) ---------------------------------------
REQUEST_LENGTH = M.HEADER_LENGTH          # 10-byte session + u64 first sequence + u16 count
_REQUEST = struct.Struct(">10sQH")

# -- sender settings -----------------------------------------------------------------------------
MULTICAST_TTL = 0                # datagrams stay on this host
SEND_BUFFER = 8 << 20            # SO_SNDBUF asked for (the kernel may grant less)
BURST_PERIOD = 0.001             # seconds of paced traffic sent per clock check
BURST_MAX = 256                  # datagrams sent per clock check, at most
EOS_GAP = 0.002                  # seconds between end-of-session repeats
_SERVER_POLL = 0.05              # seconds the re-request server blocks before checking for stop


def rerequest_packet(session: bytes | str, first_seq: int, count: int) -> bytes:
    """A MoldUDP64 request for ``count`` messages from ``first_seq`` of ``session``."""
    ses = session.encode("ascii") if isinstance(session, str) else bytes(session)
    if len(ses) != M.SESSION_LENGTH:
        raise ValueError(f"The `session` must be {M.SESSION_LENGTH} bytes, was {session!r}.")
    if not 0 <= first_seq < 1 << 64:
        raise ValueError(f"The `first_seq` must be in [0, 2**64), was {first_seq!r}.")
    if not 0 <= count <= 0xFFFF:
        raise ValueError(f"The `count` must be in [0, 65535], was {count!r}.")
    return _REQUEST.pack(ses, first_seq, count)


def parse_rerequest(data) -> tuple[bytes, int, int]:
    """``(session, first_seq, count)`` of a request packet; :class:`DecodeError` if malformed."""
    mv = memoryview(data).cast("B")
    if len(mv) != REQUEST_LENGTH:
        raise DecodeError(f"a MoldUDP64 request packet is {REQUEST_LENGTH} bytes, this one is "
                          f"{len(mv)}", offset=0)
    return _REQUEST.unpack(mv)


@dataclass
class LineConfig:
    """One multicast line (feed A or B) and its impairments, each drawn per packet."""
    group: str                   # multicast group (IPv4, 224.0.0.0/4)
    port: int
    loss: float = 0.0            # probability a packet is not sent on this line
    dup: float = 0.0             # probability a packet is sent twice (back to back)
    reorder: float = 0.0         # probability a packet is held back and sent after the next
    reorder_depth: int = 3       # 1..reorder_depth packets

    def check(self, name: str) -> None:
        try:
            first = int(socket.inet_aton(self.group)[0])
        except OSError:
            first = -1
        if not 224 <= first <= 239:
            raise ValueError(f"The `{name}.group` must be an IPv4 multicast address "
                             f"(224.0.0.0/4), was {self.group!r}.")
        if not 0 < self.port < 65536:
            raise ValueError(f"The `{name}.port` must be in 1..65535, was {self.port!r}.")
        for p in ("loss", "dup", "reorder"):
            v = getattr(self, p)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"The `{name}.{p}` must be a probability in [0, 1], was {v!r}.")
        if self.reorder_depth < 1:
            raise ValueError(f"The `{name}.reorder_depth` must be at least 1, "
                             f"was {self.reorder_depth!r}.")


@dataclass(frozen=True)
class LinePlan:
    """What one line will send, decided before sending (all arrays indexed by packet)."""
    order: np.ndarray            # int64 packet indexes in transmission order (dups repeated)
    key: np.ndarray              # float64 slot of each transmission (i, or i + delay + 0.5)
    lost: np.ndarray             # bool: never sent on this line
    dup: np.ndarray              # bool: sent twice
    reordered: np.ndarray        # bool: held back 1..reorder_depth packets


@dataclass
class SendStats:
    """What :meth:`Exchange.send` did. ``sent_*`` count data datagrams (duplicates included);
    heartbeats (per line) and end-of-session packets are not in them."""
    packets: int                 # downstream data packets whose slot passed
    messages: int                # messages in those packets
    sent_a: int
    sent_b: int
    lost_a: int
    lost_b: int
    dup_a: int
    dup_b: int
    reordered_a: int
    reordered_b: int
    heartbeats: int              # heartbeats sent on each line
    seconds: float               # data phase, first datagram to last (end of session excluded)
    msgs_per_s: float
    complete: bool = True        # False when duration_limit stopped the data phase


@numba.njit(cache=True, nogil=True)
def _block_starts(buf, out):
    """Offsets of the BinaryFILE blocks of ``buf`` (written while they fit); returns the count."""
    n = buf.shape[0]
    cap = out.shape[0]
    pos = 0
    k = 0
    while pos + M.BLOCK_LENGTH_SIZE <= n:
        if k < cap:
            out[k] = pos
        k += 1
        pos += M.BLOCK_LENGTH_SIZE + be16(buf, pos)
    return k


def plan_line(n_packets: int, cfg: LineConfig, rng: np.random.Generator,
              lose_both: np.ndarray) -> LinePlan:
    """Draw one line's impairments (vectorized) and order its transmissions."""
    u = rng.random((3, n_packets))
    delay = rng.integers(1, cfg.reorder_depth + 1, n_packets)
    lost = (u[0] < cfg.loss) | lose_both
    dup = (u[1] < cfg.dup) & ~lost
    reordered = (u[2] < cfg.reorder) & ~lost
    slot = np.arange(n_packets, dtype=np.float64) + np.where(reordered, delay + 0.5, 0.0)
    kept = np.flatnonzero(~lost)
    order = kept[np.argsort(slot[kept], kind="stable")]
    order = np.repeat(order, np.where(dup[order], 2, 1)).astype(np.int64)
    return LinePlan(order, slot[order], lost, dup, reordered)


def _multicast_socket(interface: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        s.bind((interface, 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, MULTICAST_TTL)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    except BaseException:
        s.close()
        raise
    return s


class Exchange:
    """Sends one MoldUDP64 session on multicast lines A (and B) and serves re-requests.

    ``itch`` is the session as BinaryFILE bytes; ``packets`` holds its downstream packets in
    order (sequence numbers from ``first_seq``). ``rate`` paces the data in messages per second
    (0: as fast as possible); ``heartbeat_interval`` is the idle time after which a heartbeat is
    sent on every line. ``lose_both`` lists packet indexes lost on both lines (gaps only a
    re-request can fill). ``seed`` fixes every impairment; A and B draw independently.
    Use as a context manager, or call :meth:`close`, to stop the re-request server.

    Attributes: ``packets``; ``n_messages``; ``msgs_through`` (messages in packets ``0..i``);
    ``plan_a`` / ``plan_b`` (:class:`LinePlan`, what each line will send); ``silent``,
    ``requests_received`` and ``requests_answered`` (re-request server). :meth:`send` may be
    called again; each call replays the same plan (re-requests are served only up to what the
    current call has passed).
    """

    def __init__(self, itch: bytes, *, session: bytes | str = b"TICKPIPE01",
                 line_a: LineConfig, line_b: LineConfig | None = None,
                 interface: str = "127.0.0.1", rerequest: tuple[str, int] | None = None,
                 rate: float = 0.0, max_payload: int = M.DEFAULT_MAX_PAYLOAD,
                 heartbeat_interval: float = 1.0, seed: int = 0, lose_both: Iterable[int] = (),
                 eos_repeats: int = 3, first_seq: int = 1):
        if not rate >= 0.0:
            raise ValueError(f"The `rate` must be >= 0 messages/s (0: unpaced), was {rate!r}.")
        if not heartbeat_interval > 0.0:
            raise ValueError(f"The `heartbeat_interval` must be > 0 s, was {heartbeat_interval!r}.")
        if eos_repeats < 1:
            raise ValueError(f"The `eos_repeats` must be at least 1, was {eos_repeats!r}.")
        line_a.check("line_a")
        if line_b is not None:
            line_b.check("line_b")
        self.session = session.encode("ascii") if isinstance(session, str) else bytes(session)
        self.itch = bytes(itch)
        self.packets: list[bytes] = M.packetize(self.itch, self.session, first_seq, max_payload)
        self.first_seq = int(first_seq)
        self.line_a, self.line_b = line_a, line_b
        self.interface = interface
        self.rerequest = rerequest
        self.rate = float(rate)
        self.max_payload = int(max_payload)
        self.heartbeat_interval = float(heartbeat_interval)
        self.eos_repeats = int(eos_repeats)
        self.seed = int(seed)
        n = len(self.packets)

        buf = np.frombuffer(self.itch, np.uint8)
        n_msg = _block_starts(buf, np.empty(0, np.int64))
        starts = np.empty(n_msg + 1, np.int64)
        _block_starts(buf, starts)
        starts[n_msg] = len(self.itch)
        self._block_starts = starts                       # + sentinel: end of the buffer
        body = np.fromiter(map(len, self.packets), np.int64, n) - M.HEADER_LENGTH
        # messages in packets 0..i (packets are consecutive slices of the BinaryFILE buffer)
        self.msgs_through = np.searchsorted(starts[:n_msg], np.cumsum(body), "left")
        self.n_messages = int(n_msg)

        both = np.zeros(n, bool)
        idx = np.fromiter(lose_both, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"The `lose_both` must hold packet indexes in [0, {n}), had "
                             f"{idx[(idx < 0) | (idx >= n)][:5].tolist()}.")
        both[idx] = True
        ss = np.random.SeedSequence(self.seed)
        rng_a, rng_b = (np.random.default_rng(s) for s in ss.spawn(2))
        self.plan_a = plan_line(n, line_a, rng_a, both)
        self.plan_b = plan_line(n, line_b, rng_b, both) if line_b is not None else None
        self._build_schedule()

        self.silent = False
        self.requests_received = 0
        self.requests_answered = 0
        self._slots_passed = 0         # packets whose transmission slot has passed (lost or not)
        self._server: socket.socket | None = None
        self._server_thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- schedule -------------------------------------------------------------------------------

    def _build_schedule(self) -> None:
        """Merge the lines' transmissions by slot (A before B on ties) and cut them into bursts."""
        plans = [(self.plan_a, (self.line_a.group, self.line_a.port))]
        if self.plan_b is not None:
            plans.append((self.plan_b, (self.line_b.group, self.line_b.port)))
        order = np.concatenate([p.order for p, _ in plans])
        key = np.concatenate([p.key for p, _ in plans])
        line = np.concatenate([np.full(p.order.shape[0], j, np.int64)
                               for j, (p, _) in enumerate(plans)])
        perm = np.lexsort((line, key))
        order, key, line = order[perm], key[perm], line[perm]
        n = len(self.packets)
        # packets whose slot has passed once a transmission is under way (lost ones included)
        slots = np.minimum(np.floor(key).astype(np.int64) + 1, n)
        through = np.concatenate([[0], self.msgs_through])
        t_due = (through[slots] / self.rate) if self.rate > 0 else np.zeros(key.shape[0])
        m = key.shape[0]
        cuts = [np.arange(0, m, BURST_MAX)]
        if self.rate > 0 and m:
            tick = np.floor(t_due / BURST_PERIOD)
            cuts.append(np.flatnonzero(np.diff(tick) != 0) + 1)
        bounds = np.union1d(np.concatenate(cuts), [m]).astype(np.int64)
        addr = [a for _, a in plans]
        self._tx_data = [self.packets[i] for i in order.tolist()]
        self._tx_addr = [addr[j] for j in line.tolist()]
        self._tx_slots = slots.tolist()
        self._tx_line = line
        self._tx_due = t_due.tolist()
        self._bounds = bounds.tolist()

    def next_sequence(self, slots: int) -> int:
        """Sequence number that follows the first ``slots`` packets."""
        return self.first_seq + (int(self.msgs_through[slots - 1]) if slots > 0 else 0)

    # -- sending --------------------------------------------------------------------------------

    def send(self, *, duration_limit: float | None = None) -> SendStats:
        """Send the session on every line (blocking); returns what was sent.

        Data goes out in bursts paced to ``rate``; while idle longer than ``heartbeat_interval``
        a heartbeat goes out on each line; then ``eos_repeats`` end-of-session packets per line,
        :data:`EOS_GAP` apart. ``duration_limit`` (seconds) stops the data phase early
        (``complete=False``); the end-of-session packets still follow, announcing the sequence
        after the last packet slot that passed.
        """
        if duration_limit is not None and not duration_limit > 0:
            raise ValueError(f"The `duration_limit` must be > 0 s or None, was {duration_limit!r}.")
        limit = float("inf") if duration_limit is None else float(duration_limit)
        lines = [(self.line_a.group, self.line_a.port)]
        if self.line_b is not None:
            lines.append((self.line_b.group, self.line_b.port))
        data, addr, slots, due, bounds = (self._tx_data, self._tx_addr, self._tx_slots,
                                          self._tx_due, self._bounds)
        hb_every = self.heartbeat_interval
        heartbeats = 0
        done = 0                                   # transmissions sent
        complete = True
        self._slots_passed = 0
        sock = _multicast_socket(self.interface)
        try:
            sendto = sock.sendto
            clock, sleep = time.perf_counter, time.sleep
            t0 = last = clock()
            for b in range(len(bounds) - 1):
                s, e = bounds[b], bounds[b + 1]
                now = clock()
                if now - t0 >= limit:
                    complete = False
                    break
                at = t0 + due[s]
                while now < at and now - t0 < limit:     # idle: sleep, heartbeat when due
                    if now - last >= hb_every:
                        hb = M.heartbeat(self.session, self.next_sequence(self._slots_passed))
                        for a in lines:
                            sendto(hb, a)
                        heartbeats += 1
                        last = now
                    sleep(max(0.0, min(at, last + hb_every, t0 + limit) - now))
                    now = clock()
                if now - t0 >= limit:
                    complete = False
                    break
                for k in range(s, e):
                    self._slots_passed = slots[k]        # before the datagram: gaps are servable
                    sendto(data[k], addr[k])
                done = e
                last = clock()
            if complete:
                self._slots_passed = len(self.packets)
            seconds = last - t0
            eos = M.end_of_session(self.session, self.next_sequence(self._slots_passed))
            for r in range(self.eos_repeats):
                if r:
                    sleep(EOS_GAP)
                for a in lines:
                    sendto(eos, a)
        finally:
            sock.close()
        return self._stats(done, heartbeats, seconds, complete)

    def _stats(self, done: int, heartbeats: int, seconds: float, complete: bool) -> SendStats:
        passed = self._slots_passed
        sent = np.bincount(self._tx_line[:done], minlength=2)

        def tally(plan):
            if plan is None:
                return 0, 0, 0
            return (int(plan.lost[:passed].sum()), int(plan.dup[:passed].sum()),
                    int(plan.reordered[:passed].sum()))
        la, da, ra = tally(self.plan_a)
        lb, db, rb = tally(self.plan_b)
        msgs = self.next_sequence(passed) - self.first_seq
        return SendStats(passed, msgs, int(sent[0]), int(sent[1]), la, lb, da, db, ra, rb,
                         heartbeats, seconds, msgs / seconds if seconds > 0 else 0.0, complete)

    # -- re-request server ----------------------------------------------------------------------

    def reply(self, request) -> bytes | None:
        """The downstream packet answering a request packet, or ``None`` when it gets none."""
        try:
            ses, first, count = parse_rerequest(request)
        except DecodeError:
            return None
        if ses != self.session or count == 0:
            return None
        i = first - self.first_seq                              # message index
        sent = self.next_sequence(self._slots_passed) - self.first_seq
        if i < 0 or i >= sent:
            return None
        last = min(i + count, sent, i + M.MAX_MESSAGE_COUNT)
        starts = self._block_starts
        body = self.max_payload - M.HEADER_LENGTH
        fit = int(np.searchsorted(starts, starts[i] + body, "right")) - 1    # blocks i..fit-1
        last = min(last, fit)
        if last <= i:
            return None
        return (M.encode_header(self.session, first, last - i)
                + self.itch[int(starts[i]):int(starts[last])])

    def start_rerequest_server(self, *, silent: bool | None = None, lifetime: float = 600.0,
                               max_requests: int = 1_000_000) -> tuple[str, int]:
        """Start (once) the UDP re-request server thread; returns the address it listens on.

        It binds ``rerequest`` (default ``127.0.0.1``, a free port) and stops on :meth:`close`,
        after ``lifetime`` seconds or after ``max_requests`` requests, whichever comes first.
        While ``silent`` is true requests are read and dropped (``silent`` given here sets it).
        """
        if silent is not None:
            self.silent = bool(silent)
        if self._server is not None:
            return self._server.getsockname()
        host, port = self.rerequest or ("127.0.0.1", 0)
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            srv.bind((host, port))
            srv.settimeout(_SERVER_POLL)
        except BaseException:
            srv.close()
            raise
        self._server = srv
        self._stop.clear()
        self._server_thread = threading.Thread(
            target=self._serve, args=(srv, time.monotonic() + lifetime, max_requests),
            name="moldudp64-rerequest", daemon=True)
        self._server_thread.start()
        return srv.getsockname()

    def _serve(self, srv: socket.socket, deadline: float, max_requests: int) -> None:
        while (not self._stop.is_set() and time.monotonic() < deadline
               and self.requests_received < max_requests):
            try:
                req, peer = srv.recvfrom(64)
            except socket.timeout:
                continue
            except OSError:
                break
            self.requests_received += 1
            if self.silent:
                continue
            out = self.reply(req)
            if out is not None:
                self.requests_answered += 1            # before the reply: a client may look
                try:
                    srv.sendto(out, peer)
                except OSError:
                    continue

    @property
    def server_address(self) -> tuple[str, int] | None:
        return None if self._server is None else self._server.getsockname()

    def close(self) -> None:
        """Stop the re-request server (waits for its thread)."""
        self._stop.set()
        if self._server_thread is not None:
            self._server_thread.join(timeout=5 * _SERVER_POLL + 1.0)
            self._server_thread = None
        if self._server is not None:
            self._server.close()
            self._server = None

    def __enter__(self) -> "Exchange":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
