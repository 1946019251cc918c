"""Exchange simulator network side: real UDP multicast on loopback, impairments, re-requests.

Receivers are plain multicast sockets joined on 127.0.0.1 (groups in 239.0.0.0/8, ports the
kernel picks), draining in a thread; sends are paced so the drain keeps up even with a small
SO_RCVBUF. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time

import numpy as np
import pytest

from ingest import moldudp64 as M
from ingest import pcap as P
from ingest.exchange import (Exchange, LineConfig, SendStats, parse_rerequest, rerequest_packet)
from ingest.simulator import generate_session
from tickpipe.errors import DecodeError

LOOPBACK = "127.0.0.1"
SESSION = b"TICKPIPE01"
NO_REPLY = 0.15          # seconds to wait for a reply that should not come
RATE = 400_000            # messages/s for the tests that receive (keeps a drain thread ahead)


@pytest.fixture(scope="module")
def itch() -> bytes:
    return generate_session(20_000, 20, seed=3).to_binaryfile()


@pytest.fixture(scope="module")
def small_itch() -> bytes:
    return generate_session(300, 5, seed=4).to_binaryfile()


class Listener:
    """A multicast receiver on loopback that drains in a thread until end of session."""

    def __init__(self, group: str, *, timeout: float = 10.0):
        self.group = group
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((group, 0))
        self.port = self.sock.getsockname()[1]
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                             socket.inet_aton(group) + socket.inet_aton(LOOPBACK))
        self.sock.settimeout(0.05)
        self.received: list[bytes] = []
        self._deadline = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while time.monotonic() < self._deadline and len(self.received) < 100_000:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.received.append(data)
            if M.message_count(data) == M.END_OF_SESSION:
                return

    def line(self, **impairments) -> LineConfig:
        return LineConfig(self.group, self.port, **impairments)

    def wait(self) -> list[bytes]:
        self._thread.join(timeout=max(0.0, self._deadline - time.monotonic()) + 1.0)
        self.sock.close()
        return self.received

    def data(self) -> list[bytes]:
        """Data packets received (heartbeats and end of session left out)."""
        return [p for p in self.wait() if M.message_count(p) not in (0, M.END_OF_SESSION)]


def seqs(packets) -> list[int]:
    return [M.sequence(p) for p in packets]


def messages(packet: bytes) -> list[bytes]:
    """The message bytes of one downstream packet (a test helper; a few messages at a time)."""
    out, pos = [], M.HEADER_LENGTH
    for _ in range(M.message_count(packet)):
        (n,) = struct.unpack_from(">H", packet, pos)
        out.append(packet[pos + 2:pos + 2 + n])
        pos += 2 + n
    assert pos == len(packet)
    return out


def all_messages(packets) -> list[bytes]:
    return [m for p in packets for m in messages(p)]


def client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    s.bind((LOOPBACK, 0))
    return s


def ask(sock, server, first_seq, count, session=SESSION, wait=1.0) -> bytes | None:
    """Send one request; the reply, or ``None`` when none came within ``wait`` seconds."""
    sock.sendto(rerequest_packet(session, first_seq, count), server)
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except socket.timeout:
        return None


# -- plain delivery ----------------------------------------------------------------------------

def test_line_a_without_impairments_delivers_every_packet_in_order_then_end_of_session(itch):
    rx = Listener("239.255.1.1")
    ex = Exchange(itch, line_a=rx.line(), rate=RATE)
    stats = ex.send()
    got = rx.wait()
    n = len(ex.packets)
    assert n > 100
    assert got[:n] == ex.packets
    assert len(got) == n + 1
    eos = got[-1]
    assert M.message_count(eos) == M.END_OF_SESSION
    assert M.sequence(eos) == 1 + ex.n_messages
    assert M.session(eos) == SESSION
    assert isinstance(stats, SendStats)
    assert (stats.packets, stats.messages, stats.sent_a, stats.sent_b) == (n, ex.n_messages, n, 0)
    assert stats.complete and stats.heartbeats == 0 and stats.lost_a == stats.dup_a == 0


def test_packets_carry_the_binaryfile_messages_with_consecutive_sequences(itch):
    ex = Exchange(itch, line_a=LineConfig("239.255.1.2", 30000), first_seq=1000)
    buf = np.frombuffer(itch, np.uint8)
    want, pos = [], 0
    while pos < len(itch):                      # the BinaryFILE blocks, walked independently
        n = int(buf[pos]) << 8 | int(buf[pos + 1])
        want.append(itch[pos + 2:pos + 2 + n])
        pos += 2 + n
    assert all_messages(ex.packets) == want
    counts = [M.message_count(p) for p in ex.packets]
    assert seqs(ex.packets) == (1000 + np.concatenate([[0], np.cumsum(counts)[:-1]])).tolist()
    assert all(len(p) <= 1400 for p in ex.packets)
    np.testing.assert_array_equal(ex.msgs_through, np.cumsum(counts))


def test_unpaced_small_session_arrives_whole_on_both_lines(small_itch):
    a, b = Listener("239.255.1.3"), Listener("239.255.1.4")
    ex = Exchange(small_itch, line_a=a.line(), line_b=b.line(), max_payload=200)
    stats = ex.send()
    got_a, got_b = a.wait(), b.wait()
    n = len(ex.packets)
    assert got_a[:n] == ex.packets and got_b[:n] == ex.packets
    assert stats.sent_a == stats.sent_b == n
    assert stats.msgs_per_s > 0


# -- impairments -------------------------------------------------------------------------------

def test_loss_dup_reorder_match_the_stats_and_the_plan(itch):
    a, b = Listener("239.255.2.1"), Listener("239.255.2.2")
    ex = Exchange(itch, line_a=a.line(loss=0.05, dup=0.05, reorder=0.05),
                  line_b=b.line(loss=0.05), rate=RATE, seed=11)
    stats = ex.send()
    got_a, got_b = a.data(), b.data()
    everything = seqs(ex.packets)
    n = len(everything)

    assert len(got_a) == stats.sent_a == n - stats.lost_a + stats.dup_a
    assert len(got_a) - len(set(seqs(got_a))) == stats.dup_a > 0
    lost_a = {everything[i] for i in np.flatnonzero(ex.plan_a.lost)}
    assert len(lost_a) == stats.lost_a > 0
    assert set(seqs(got_a)) == set(everything) - lost_a
    assert stats.reordered_a == int(ex.plan_a.reordered.sum()) > 0
    s = seqs(got_a)
    inversions = sum(1 for x, y in zip(s, s[1:]) if y < x)
    assert 0 < inversions <= stats.reordered_a
    assert s == [everything[i] for i in ex.plan_a.order]          # exactly as planned

    lost_b = {everything[i] for i in np.flatnonzero(ex.plan_b.lost)}
    assert len(got_b) == stats.sent_b == n - stats.lost_b
    assert seqs(got_b) == sorted(set(everything) - lost_b)        # no dup/reorder on B
    assert stats.dup_b == stats.reordered_b == 0
    assert lost_a != lost_b                                         # independent draws
    index = {q: p for q, p in zip(everything, ex.packets)}
    assert all(index[M.sequence(p)] == p for p in got_a + got_b)


def test_impairments_are_reproducible_from_the_seed(itch):
    def make(seed):
        return Exchange(itch, line_a=LineConfig("239.255.2.3", 30000, loss=0.1, dup=0.1,
                                                reorder=0.1),
                        line_b=LineConfig("239.255.2.4", 30001, loss=0.1), seed=seed)
    one, two, other = make(5), make(5), make(6)
    for name in ("order", "lost", "dup", "reordered"):
        np.testing.assert_array_equal(getattr(one.plan_a, name), getattr(two.plan_a, name))
        np.testing.assert_array_equal(getattr(one.plan_b, name), getattr(two.plan_b, name))
    assert not np.array_equal(one.plan_a.lost, other.plan_a.lost)
    assert not np.array_equal(one.plan_a.lost, one.plan_b.lost)


def test_reordered_packets_are_held_at_most_reorder_depth(itch):
    ex = Exchange(itch, line_a=LineConfig("239.255.2.5", 30000, reorder=0.3, reorder_depth=2))
    order = ex.plan_a.order
    position = np.empty_like(order)
    position[order] = np.arange(order.shape[0])
    late = position - np.arange(order.shape[0])
    assert late.max() == 2 and late.min() >= -2
    held = np.flatnonzero(late > 0)
    assert ex.plan_a.reordered[held].all()


def test_lose_both_drops_the_same_packets_on_both_lines(itch):
    a, b = Listener("239.255.3.1"), Listener("239.255.3.2")
    gone = [2, 5, 6, 40]
    ex = Exchange(itch, line_a=a.line(), line_b=b.line(), lose_both=gone, rate=RATE)
    stats = ex.send()
    want = [p for i, p in enumerate(ex.packets) if i not in gone]
    assert a.data() == want and b.data() == want
    assert stats.lost_a == stats.lost_b == len(gone)
    np.testing.assert_array_equal(np.flatnonzero(ex.plan_a.lost), gone)
    np.testing.assert_array_equal(np.flatnonzero(ex.plan_b.lost), gone)


# -- re-requests -------------------------------------------------------------------------------

def test_rerequest_packet_round_trips_and_rejects_bad_input():
    pkt = rerequest_packet("ABCDEFGHIJ", 2**64 - 1, 65535)
    assert len(pkt) == 20
    assert parse_rerequest(pkt) == (b"ABCDEFGHIJ", 2**64 - 1, 65535)
    with pytest.raises(DecodeError, match="20 bytes"):
        parse_rerequest(pkt[:19])
    with pytest.raises(ValueError, match="`session`"):
        rerequest_packet(b"SHORT", 1, 1)
    with pytest.raises(ValueError, match="`count`"):
        rerequest_packet(SESSION, 1, 65536)


def test_rerequest_server_fills_a_gap_lost_on_both_lines(itch):
    rx = Listener("239.255.4.1")
    with Exchange(itch, line_a=rx.line(), lose_both=[5, 6], rate=RATE) as ex:
        server = ex.start_rerequest_server()
        assert server[0] == LOOPBACK
        c = client()
        try:
            assert ask(c, server, 1, 10, wait=NO_REPLY) is None        # nothing sent yet
            ex.send()
            got = rx.data()
            assert seqs(ex.packets[5:7]) == [q for q in seqs(ex.packets)
                                             if q not in set(seqs(got))]
            first, count = M.sequence(ex.packets[5]), M.message_count(ex.packets[5])
            reply = ask(c, server, first, count)
            assert reply == ex.packets[5]                          # same header, same messages
            first6, count6 = M.sequence(ex.packets[6]), M.message_count(ex.packets[6])
            reply = ask(c, server, first6 + 1, count6 - 1)
            assert M.sequence(reply) == first6 + 1
            assert messages(reply) == messages(ex.packets[6])[1:]
            assert ex.requests_answered == 2
        finally:
            c.close()


def test_rerequest_reply_is_capped_to_max_payload(itch):
    with Exchange(itch, line_a=LineConfig("239.255.4.2", 30000), max_payload=300) as ex:
        ex.send()
        server = ex.start_rerequest_server()
        c = client()
        try:
            reply = ask(c, server, 1, 0xFFFF)
            assert len(reply) <= 300
            assert reply == ex.packets[0]                  # the same greedy cut as the feed
            start = M.sequence(ex.packets[3]) + 2
            reply = ask(c, server, start, 500)
            n = M.message_count(reply)
            assert 0 < n < 500 and len(reply) <= 300
            want = all_messages(ex.packets)[start - 1:start - 1 + n]
            assert messages(reply) == want
        finally:
            c.close()


def test_rerequest_server_ignores_unsent_foreign_and_silenced_requests(itch):
    with Exchange(itch, line_a=LineConfig("239.255.4.3", 30000)) as ex:
        ex.send()
        server = ex.start_rerequest_server()
        end = 1 + ex.n_messages
        c = client()
        try:
            assert ask(c, server, end, 5, wait=NO_REPLY) is None      # never sent
            assert ask(c, server, 0, 5, wait=NO_REPLY) is None        # before sequence 1
            assert ask(c, server, 1, 5, session=b"OTHERSESSN", wait=NO_REPLY) is None
            assert ask(c, server, 1, 0, wait=NO_REPLY) is None
            last = ask(c, server, end - 1, 5)                      # clipped at the last message
            assert M.message_count(last) == 1
            ex.silent = True
            assert ask(c, server, 1, 5, wait=NO_REPLY) is None
            ex.silent = False
            assert M.sequence(ask(c, server, 1, 5)) == 1
            assert ex.requests_received == 7 and ex.requests_answered == 2
        finally:
            c.close()
    assert ex.server_address is None                                # closed with the context


# -- pacing, heartbeats, limits ----------------------------------------------------------------

def test_rate_paces_the_send_to_the_requested_message_rate():
    itch = generate_session(100_000, 50, seed=7).to_binaryfile()
    ex = Exchange(itch, line_a=LineConfig("239.255.5.1", 30000), rate=200_000)
    t = time.perf_counter()
    stats = ex.send()
    wall = time.perf_counter() - t
    expected = ex.n_messages / 200_000
    assert 0.5 * expected <= stats.seconds <= 3 * expected
    assert 0.5 * expected <= wall <= 3 * expected + 0.1


def test_heartbeats_fill_idle_time_with_the_next_sequence(small_itch):
    rx = Listener("239.255.5.2")
    ex = Exchange(small_itch, line_a=rx.line(), max_payload=200, rate=2_000,
                  heartbeat_interval=0.001)
    stats = ex.send()
    got = rx.wait()
    beats = [k for k, p in enumerate(got) if M.message_count(p) == M.HEARTBEAT]
    assert len(beats) == stats.heartbeats > 0
    for k in beats:
        prev = [p for p in got[:k] if M.message_count(p) != M.HEARTBEAT]
        want = M.sequence(prev[-1]) + M.message_count(prev[-1]) if prev else 1
        assert M.sequence(got[k]) == want
    assert [p for p in got if M.message_count(p) not in (0, 0xFFFF)] == ex.packets


def test_duration_limit_stops_early_and_announces_the_end(itch):
    rx = Listener("239.255.5.3")
    ex = Exchange(itch, line_a=rx.line(), rate=50_000)
    stats = ex.send(duration_limit=0.05)
    got = rx.wait()
    assert not stats.complete
    assert 0 < stats.packets < len(ex.packets)
    assert M.message_count(got[-1]) == M.END_OF_SESSION
    assert M.sequence(got[-1]) == 1 + stats.messages
    assert got[:-1] == ex.packets[:len(got) - 1]


def test_bad_configuration_names_the_parameter(small_itch):
    with pytest.raises(ValueError, match="`line_a.group`"):
        Exchange(small_itch, line_a=LineConfig("10.1.2.3", 30000))
    with pytest.raises(ValueError, match="`line_b.loss`"):
        Exchange(small_itch, line_a=LineConfig("239.1.1.1", 30000),
                 line_b=LineConfig("239.1.1.2", 30000, loss=1.5))
    with pytest.raises(ValueError, match="`lose_both`"):
        Exchange(small_itch, line_a=LineConfig("239.1.1.1", 30000), lose_both=[10**6])
    with pytest.raises(ValueError, match="`rate`"):
        Exchange(small_itch, line_a=LineConfig("239.1.1.1", 30000), rate=-1)


# -- pcap writer ---------------------------------------------------------------------------------

def test_pcap_record_layout_is_58_bytes():
    d = P.PCAP_UDP_RECORD
    assert d.itemsize == P.PCAP_RECORD_HEADER_LENGTH + P.ETH_HEADER + P.IPV4_MIN_HEADER \
        + P.UDP_HEADER == 58
    assert [d.fields[f][1] for f in ("eth_dst", "ethertype", "ip_ver_ihl", "ip_checksum",
                                     "udp_src_port", "udp_checksum")] == [16, 28, 30, 40, 50, 56]


@pytest.mark.parametrize("nanosecond", [True, False])
def test_write_pcap_round_trips_through_read_capture(itch, nanosecond):
    ex = Exchange(itch, line_a=LineConfig("239.255.6.1", 30000), first_seq=77)
    ts = 1_710_509_400_123_456_789 + np.arange(len(ex.packets), dtype=np.uint64) * 1_001
    out = io.BytesIO()
    size = P.write_pcap(out, ex.packets, ts_ns=ts, nanosecond=nanosecond)
    data = out.getvalue()
    assert size == len(data)
    cap = P.read_capture(data)
    assert cap.format == "pcap" and cap.n_packets == len(ex.packets) and not cap.skipped
    assert cap.channels == [P.Channel("233.54.12.111", 26477, "TICKPIPE01")]
    idx = cap.index
    np.testing.assert_array_equal(idx["sequence"], 77 + np.arange(ex.n_messages))
    got = [cap.buf[o:o + n].tobytes() for o, n in zip(idx["offset"].tolist(),
                                                      idx["length"].tolist())]
    assert got == all_messages(ex.packets)
    per_packet = ts if nanosecond else ts // 1000 * 1000
    np.testing.assert_array_equal(np.unique(idx["ts_recv"]), per_packet)


def test_write_pcap_headers_have_valid_checksums_and_lengths(tmp_path, small_itch):
    packets = M.packetize(small_itch, SESSION, 1, 200)
    n_msgs = len(all_messages(packets))
    packets.append(M.end_of_session(SESSION, 1 + n_msgs))
    path = tmp_path / "s.pcap"
    P.write_pcap(path, packets, ts_ns=5, src=("10.9.8.7", 1234), dst=("239.1.2.3", 5678))
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data) == (P.PCAP_MAGIC_NS, 2, 4, 0, 0, P.MAX_CAPLEN,
                                                    P.LINKTYPE_ETHERNET)
    pos = 24
    for p in packets:
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        assert (sec, frac, incl, orig) == (0, 5, len(p) + 42, len(p) + 42)
        frame = data[pos + 16:pos + 16 + incl]
        assert frame[:6] == bytes([0x01, 0x00, 0x5E, 0x01, 0x02, 0x03])
        ip = frame[14:34]
        words = struct.unpack(">10H", ip)
        total = sum(words)
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        assert total == 0xFFFF                                     # checksum verifies
        assert words[1] == len(p) + 28 and ip[12:16] == socket.inet_aton("10.9.8.7")
        assert struct.unpack(">HHH", frame[34:40]) == (1234, 5678, len(p) + 8)
        assert frame[42:] == p
        pos += 16 + incl
    assert pos == len(data)
    cap = P.read_capture(data)
    assert cap.end_of_session and cap.eos_sequence == 1 + n_msgs and cap.n_messages == n_msgs
    assert cap.channels[0].ip == "239.1.2.3" and cap.channels[0].port == 5678


def test_write_pcap_of_nothing_is_a_bare_header():
    out = io.BytesIO()
    assert P.write_pcap(out, []) == 24
    assert P.read_capture(out.getvalue()).n_messages == 0
