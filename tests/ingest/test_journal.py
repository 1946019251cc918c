"""Raw journal: layout, round trips, crash safety (writers killed with SIGKILL), tamper evidence."""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import journal as J
from ingest.journal import (JournalError, JournalWarning, JournalWriter, block_headers,
                            find_block, read_blocks, read_gaps, read_journal, verify)
from ingest.moldudp64 import (encode_packet, end_of_session, heartbeat, message_count, packetize,
                              sequence)
from ingest.simulator import generate_session
from tickpipe.errors import DecodeWarning, TickpipeError

SESSION = b"000012345A"
T0 = 1_710_491_400_000_000_000          # 2024-03-15 08:30 UTC in ns
CHILD = Path(__file__).resolve().parent / "journal_writer_child.py"


@pytest.fixture(scope="module")
def packets() -> list[bytes]:
    """Real MoldUDP64 packets over a simulated ITCH 5.0 session (2,397 of them)."""
    itch = generate_session(20_000, 10, seed=1).to_binaryfile()
    return packetize(itch, SESSION, 1, max_payload=300)


def stamps(n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return (T0 + np.cumsum(rng.integers(1, 5_000, n))).tolist()


def write_with_gaps(directory, packets, *, every=50, flush_every=97, block_bytes=4096):
    """Journal ``packets``, declaring every ``every``-th one a gap instead; returns the
    ``(ts, packet)`` pairs and the ``(first_seq, count)`` gaps written."""
    ts = stamps(len(packets))
    want, gaps = [], []
    with JournalWriter(directory, block_bytes=block_bytes) as w:
        for i, (t, p) in enumerate(zip(ts, packets)):
            if i % every == every - 1:
                gaps.append((sequence(p), message_count(p)))
                w.append_gap(sequence(p), message_count(p), t)
            else:
                want.append((t, p))
                w.append(sequence(p), t, p)
            if i % flush_every == flush_every - 1:
                w.flush()
    return want, gaps


def flip(path: Path, pos: int) -> None:
    buf = bytearray(path.read_bytes())
    buf[pos] ^= 0x01
    path.write_bytes(bytes(buf))


# -- layout ---------------------------------------------------------------------------------------

def test_block_header_and_index_row_layouts_match_the_documented_tables():
    offsets = {name: J.HEADER_DTYPE.fields[name][1] for name in J.HEADER_DTYPE.names}
    assert offsets == {"magic": 0, "version": 4, "flags": 6, "block": 8, "seq_min": 16,
                       "seq_max": 24, "seq_end": 32, "ts_min": 40, "ts_max": 48,
                       "n_records": 56, "n_packets": 60, "raw_length": 64,
                       "compressed_length": 68, "payload_crc": 72, "prev_hash": 76,
                       "hash": 108, "header_crc": 140}
    assert (J.HEADER_LENGTH, J._HEADER.size) == (144, 144)
    assert (J.BLOCK_OFFSET, J.PREV_HASH_OFFSET, J.HASH_OFFSET, J.HEADER_CRC_OFFSET) == \
        (8, 76, 108, 140)
    assert J.INDEX_ROW_LENGTH == 72 and J.INDEX_DTYPE.fields["offset"][1] == 8
    assert J.RECORD_FIXED == 8 + 8 + 8 + 2 + 1


def test_first_block_bytes_follow_the_layout(tmp_path, packets):
    with JournalWriter(tmp_path) as w:
        w.append(sequence(packets[0]), T0, packets[0])
        assert w.flush() == 0
    buf = (tmp_path / J.DATA_FILE).read_bytes()
    magic, version, flags, block, seq_min, seq_max, seq_end, ts_min, ts_max, n_rec, n_pk, raw_len, \
        comp_len = struct.unpack_from("<4sHHQQQQQQIIII", buf)
    assert (magic, version, flags, block, n_rec, n_pk) == (b"TPJB", 1, J.F_ORDERED, 0, 1, 1)
    assert (seq_min, seq_max, seq_end) == (1, 1, 1 + message_count(packets[0]))
    assert (ts_min, ts_max) == (T0, T0)
    assert raw_len == J.RECORD_FIXED + len(packets[0])
    assert len(buf) == J.HEADER_LENGTH + comp_len
    assert buf[J.PREV_HASH_OFFSET:J.HASH_OFFSET] == bytes(32)
    index = (tmp_path / J.INDEX_FILE).read_bytes()
    assert len(index) == J.INDEX_ROW_LENGTH
    assert struct.unpack_from("<QQ", index) == (0, 0)


# -- round trips ----------------------------------------------------------------------------------

def test_round_trip_across_many_blocks_returns_every_packet_gap_and_block(tmp_path, packets):
    want, gaps = write_with_gaps(tmp_path, packets)
    assert list(read_journal(tmp_path)) == want
    assert read_gaps(tmp_path) == gaps
    rep = verify(tmp_path)
    assert rep.ok, rep.problems
    assert (rep.packets, rep.gaps, rep.out_of_order) == (len(want), len(gaps), 0)
    assert rep.blocks > 50 and rep.bytes_raw > rep.bytes_compressed
    where = {}
    for b in read_blocks(tmp_path):
        for k in np.flatnonzero(b.kind == J.K_PACKET).tolist():
            s, c = int(b.seq[k]), int(b.count[k])
            where.update((q, b.number) for q in range(s, s + c))
    rng = random.Random(0)
    for q in rng.sample(sorted(where), 150) + [min(where), max(where)]:
        assert find_block(tmp_path, q) == where[q]
    for first, count in gaps[:10]:
        assert find_block(tmp_path, first) is None
        assert find_block(tmp_path, first + count - 1) is None
    assert find_block(tmp_path, max(where) + 1) is None
    assert find_block(tmp_path, 0) is None


def test_reopening_appends_with_continuing_block_numbers_and_chain(tmp_path, packets):
    ts = stamps(len(packets))
    half = len(packets) // 2
    with JournalWriter(tmp_path, block_bytes=8192) as w:
        for t, p in zip(ts[:half], packets[:half]):
            w.append(sequence(p), t, p)
    n0 = len(block_headers(tmp_path))
    with JournalWriter(tmp_path, block_bytes=8192) as w:
        assert w.recovered is None and not w.index_repaired
        assert w.blocks == n0 and w.next_seq == sequence(packets[half])
        for t, p in zip(ts[half:], packets[half:]):
            w.append(sequence(p), t, p)
    heads = block_headers(tmp_path)
    assert [h.block for h in heads] == list(range(len(heads)))
    assert all(b.prev_hash == a.hash for a, b in zip(heads, heads[1:]))
    assert list(read_journal(tmp_path)) == list(zip(ts, packets))
    assert verify(tmp_path).ok


def test_append_many_writes_the_same_bytes_as_append_in_a_loop(tmp_path, packets):
    ts = stamps(len(packets))
    seqs = np.array([sequence(p) for p in packets], np.uint64)
    with JournalWriter(tmp_path / "loop", block_bytes=5000) as w:
        for s, t, p in zip(seqs.tolist(), ts, packets):
            w.append(s, t, p)
    with JournalWriter(tmp_path / "list", block_bytes=5000) as w:
        for a in range(0, len(packets), 333):
            w.append_many(seqs[a:a + 333], ts[a:a + 333], packets[a:a + 333])
    buf = b"".join(packets)
    lens = np.array([len(p) for p in packets])
    with JournalWriter(tmp_path / "buffer", block_bytes=5000) as w:
        w.append_many(seqs, np.array(ts, np.uint64), buf, lengths=lens)
    # the buffer form with offsets: packets scattered in a capture buffer with junk between
    junk = b"\xee" * 7
    scattered = junk + junk.join(packets)
    offs = np.cumsum(np.r_[0, lens[:-1] + len(junk)]) + len(junk)
    with JournalWriter(tmp_path / "offsets", block_bytes=5000) as w:
        w.append_many(seqs, ts, np.frombuffer(scattered, np.uint8), lengths=lens, offsets=offs)
    want = (tmp_path / "loop" / J.DATA_FILE).read_bytes()
    for name in ("list", "buffer", "offsets"):
        assert (tmp_path / name / J.DATA_FILE).read_bytes() == want, name
        assert (tmp_path / name / J.INDEX_FILE).read_bytes() == \
            (tmp_path / "loop" / J.INDEX_FILE).read_bytes()


def test_heartbeats_and_end_of_session_are_journaled_and_cover_no_sequence(tmp_path, packets):
    hb = heartbeat(SESSION, 1)
    eos = end_of_session(SESSION, 1 + message_count(packets[0]))
    with JournalWriter(tmp_path) as w:
        w.append(1, T0, hb)
        w.append(1, T0 + 1, packets[0])
        w.append(sequence(eos), T0 + 2, eos)
        assert w.next_seq == 1 + message_count(packets[0])
    assert list(read_journal(tmp_path)) == [(T0, hb), (T0 + 1, packets[0]), (T0 + 2, eos)]
    (b,) = read_blocks(tmp_path)
    assert b.count.tolist() == [0, message_count(packets[0]), 0]
    assert verify(tmp_path).ok


def test_packets_filling_a_gap_late_are_read_back_in_sequence_order(tmp_path, packets):
    ts = stamps(40)
    with JournalWriter(tmp_path, block_bytes=2000) as w:
        for i in range(40):
            if 10 <= i < 15:
                continue
            if i == 15:
                first = sequence(packets[10])
                w.append_gap(first, sequence(packets[15]) - first, ts[i])
            w.append(sequence(packets[i]), ts[i], packets[i])
        for i in range(10, 15):                       # the re-requested packets arrive
            w.append(sequence(packets[i]), ts[i], packets[i])
    assert list(read_journal(tmp_path)) == list(zip(ts, packets[:40]))
    rep = verify(tmp_path)
    assert rep.ok, rep.problems
    assert rep.out_of_order == 5


def test_a_duplicate_packet_outside_any_gap_is_reported_by_verify(tmp_path, packets):
    with JournalWriter(tmp_path) as w:
        for i in range(6):
            w.append(sequence(packets[i]), T0 + i, packets[i])
        w.append(sequence(packets[2]), T0 + 9, packets[2])
    rep = verify(tmp_path)
    assert not rep.ok and rep.out_of_order == 1
    assert "block 0 at byte offset 0" in rep.problems[0]
    assert "fills no declared gap" in rep.problems[0]
    assert [t for t, _ in read_journal(tmp_path)] == [T0, T0 + 1, T0 + 2, T0 + 9, T0 + 3,
                                                      T0 + 4, T0 + 5]


@st.composite
def journal_ops(draw):
    """A script of appends, gaps, flushes and reopenings over random packets."""
    ops, seq = [], draw(st.integers(1, 1 << 40))
    for _ in range(draw(st.integers(0, 40))):
        what = draw(st.sampled_from(["packet"] * 6 + ["gap", "flush", "reopen", "heartbeat"]))
        if what == "packet":
            sizes = draw(st.lists(st.integers(0, 300), max_size=12))
            pkt = encode_packet(SESSION, seq, [bytes([len(ops) % 251]) * n for n in sizes])
            ops.append(("packet", seq, pkt))
            seq += len(sizes)
        elif what == "heartbeat":
            ops.append(("packet", seq, heartbeat(SESSION, seq)))
        elif what == "gap":
            n = draw(st.integers(1, 1000))
            ops.append(("gap", seq, n))
            seq += n
        else:
            ops.append((what,))
    return ops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=journal_ops(), block_bytes=st.sampled_from([1, 100, 700, 5000, 1 << 20]),
       many=st.booleans())
def test_any_script_of_appends_gaps_flushes_and_reopens_round_trips(tmp_path_factory, ops,
                                                                    block_bytes, many):
    d = tmp_path_factory.mktemp("j")
    want, gaps, t = [], [], T0
    w = JournalWriter(d, block_bytes=block_bytes)
    batch = []

    def drain():
        if batch:
            w.append_many([s for s, _, _ in batch], [x for _, x, _ in batch],
                          [p for _, _, p in batch])
            batch.clear()

    for op in ops:
        t += 1
        if op[0] == "packet":
            want.append((t, op[2]))
            if many:
                batch.append((op[1], t, op[2]))
            else:
                w.append(op[1], t, op[2])
        elif op[0] == "gap":
            drain()
            gaps.append((op[1], op[2]))
            w.append_gap(op[1], op[2], t)
        elif op[0] == "flush":
            drain()
            w.flush()
        else:
            drain()
            w.close()
            w = JournalWriter(d, block_bytes=block_bytes)
            assert w.recovered is None
    drain()
    w.close()
    assert list(read_journal(d)) == want
    assert read_gaps(d) == gaps
    rep = verify(d)
    assert rep.ok, rep.problems
    assert (rep.packets, rep.gaps) == (len(want), len(gaps))
    for t_, p in want[:3] + want[-3:]:
        if message_count(p) not in (0, 0xFFFF):
            assert find_block(d, sequence(p)) is not None


# -- writer contract ----------------------------------------------------------------------------

def test_append_rejects_a_sequence_that_disagrees_with_the_packet_header(tmp_path, packets):
    with JournalWriter(tmp_path) as w:
        with pytest.raises(ValueError, match=r"`seq` must be the packet's first sequence number 1"):
            w.append(2, T0, packets[0])
        with pytest.raises(ValueError, match=r"`packet` must be a MoldUDP64 packet"):
            w.append(1, T0, b"short")
        with pytest.raises(ValueError, match=r"`ts_recv`"):
            w.append(1, -1, packets[0])
        with pytest.raises(ValueError, match=r"`seqs\[1\]` must be packet 1's first sequence"):
            w.append_many([1, 1], [T0, T0], packets[:2])
        with pytest.raises(ValueError, match=r"`count` must be a positive"):
            w.append_gap(5, 0, T0)
        assert w.pending_bytes == 0
    assert verify(tmp_path).blocks == 0


def test_flush_with_nothing_pending_writes_nothing_and_returns_the_last_block(tmp_path, packets):
    with JournalWriter(tmp_path) as w:
        assert w.flush() == -1 and w.head is None
        w.append(1, T0, packets[0])
        assert w.flush() == 0
        assert w.flush() == 0 and w.blocks == 1 and w.head[0] == 0
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append(1, T0, packets[0])


def test_a_second_writer_on_the_same_journal_is_refused(tmp_path):
    with JournalWriter(tmp_path):
        with pytest.raises(JournalError, match="another writer") as e:
            JournalWriter(tmp_path)
    assert isinstance(e.value, ValueError) and isinstance(e.value, TickpipeError)
    JournalWriter(tmp_path).close()           # the lock went with the first writer


# -- crash safety ---------------------------------------------------------------------------------

def torn_prefix(d: Path, scratch: Path, pkts, seqs, rng) -> bytes:
    """The first bytes of the block a writer would add next: what a kill inside pwrite leaves."""
    shutil.copytree(d, scratch)
    size = (scratch / J.DATA_FILE).stat().st_size
    with JournalWriter(scratch) as w:
        i = next(k for k, s in enumerate(seqs) if s >= w.next_seq)
        for p in pkts[i:i + 30]:
            w.append(sequence(p), T0, p)
    block = (scratch / J.DATA_FILE).read_bytes()[size:]
    return block[:rng.randrange(1, len(block))]


def server_lines(server, reported: dict, until: tuple[str, ...]) -> dict:
    """Read the writer server's lines until each word in ``until`` has started one; block
    lines (``<number> <hash>``, from the writer) go into ``reported`` whenever they come."""
    got = {}
    for line in iter(server.stdout.readline, ""):
        words = line.split()
        if words[0].isdigit():
            assert len(words) == 2, line
            reported[int(words[0])] = words[1]
        elif words[0] != "exhausted":
            got[words[0]] = words
            if all(k in got for k in until):
                return got
    raise AssertionError("the writer server died")


def test_a_writer_killed_at_random_moments_keeps_every_block_it_reported(tmp_path):
    itch = generate_session(100_000, 10, seed=3).to_binaryfile()
    pkts = packetize(itch, SESSION, 1, max_payload=120)
    pfile = tmp_path / "packets.bin"
    pfile.write_bytes(b"".join(struct.pack(">H", len(p)) + p for p in pkts))
    seqs = [sequence(p) for p in pkts]
    d = tmp_path / "journal"
    reported: dict[int, str] = {}
    rng = random.Random(12345)
    injected_at, natural_cuts, runs = -1, 0, 30
    # a server process forks each writer (see journal_writer_child.py); writers are killed
    server = subprocess.Popen([sys.executable, str(CHILD), str(d), str(pfile)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for run in range(runs):
            server.stdin.write(f"{run}\n")
            server.stdin.flush()
            got = server_lines(server, reported, ("child", "ready"))
            # the writer cut exactly the torn block this test left after the previous kill
            assert int(got["ready"][2]) == injected_at
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(int(got["child"][1]), signal.SIGKILL)
            got = server_lines(server, reported, ("dead",))
            assert int(got["dead"][1]) == signal.SIGKILL
            with warnings.catch_warnings(record=True):
                warnings.simplefilter("always")
                w = JournalWriter(d)            # cuts a torn tail if the kill landed inside pwrite
            natural_cuts += w.recovered is not None
            assert w.blocks > max(reported, default=-1)
            w.close()
            heads = block_headers(d)
            for block, digest in reported.items():
                assert heads[block].hash.hex() == digest
            # the journal holds exactly the packets before its end, less the ones declared gaps
            end = max((h.seq_end for h in heads if h.n_packets), default=0)
            got = [p for _, p in read_journal(d)]
            keep = [i for i, s in enumerate(seqs) if s < end]
            assert got == [pkts[i] for i in keep if i % 37 != 36]
            assert read_gaps(d) == [(seqs[i], message_count(pkts[i])) for i in keep
                                    if i % 37 == 36]
            rep = verify(d)
            assert rep.ok, rep.problems
            injected_at = -1
            if run % 2 == 0:                    # leave a torn block for the next writer to find
                prefix = torn_prefix(d, tmp_path / f"scratch{run}", pkts, seqs, rng)
                injected_at = (d / J.DATA_FILE).stat().st_size
                with open(d / J.DATA_FILE, "ab") as f:
                    f.write(prefix)
                assert "torn tail" in " ".join(verify(d).problems)
    finally:
        server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert len(reported) > runs
    assert seqs[-1] >= end, "the writers ran out of packets"
    print(f"{len(reported)} blocks reported over {runs} kills; {natural_cuts} torn by the kill")


def test_truncating_the_file_mid_block_is_a_torn_tail_cut_back_on_reopen(tmp_path, packets):
    src = tmp_path / "src"
    want, gaps = write_with_gaps(src, packets[:400], block_bytes=6000)
    heads = block_headers(src)
    last, prev = heads[-1], heads[-2]
    for cut in (last.offset + 1, last.offset + J.HEADER_LENGTH - 1,
                last.offset + J.HEADER_LENGTH + 5, last.end - 1,
                heads[3].offset + J.HEADER_LENGTH + 10):
        d = tmp_path / f"cut{cut}"
        shutil.copytree(src, d)
        os.truncate(d / J.DATA_FILE, cut)
        lost = next(h for h in heads if h.offset <= cut < h.end)
        rep = verify(d)
        assert not rep.ok
        assert any(f"block {lost.block} at byte offset {lost.offset}: torn tail" in p
                   for p in rep.problems), rep.problems
        with pytest.warns(JournalWarning, match="torn tail"):
            got = list(read_journal(d))
        assert got == want[:sum(h.n_packets for h in heads[:lost.block])]
        with pytest.warns(JournalWarning, match="cut a torn tail"):
            w = JournalWriter(d)
        assert w.recovered.offset == lost.offset and w.recovered.block == lost.block
        assert w.recovered.bytes_cut == cut - lost.offset
        saved = (src / J.DATA_FILE).read_bytes()[lost.offset:cut]
        assert w.recovered.saved_to.read_bytes() == saved
        assert w.index_repaired and w.blocks == lost.block
        w.append(sequence(packets[500]), T0, packets[500])
        assert w.flush() == lost.block
        w.close()
        assert verify(d).ok
    assert prev.end == last.offset


def test_zeros_after_the_last_block_are_a_damaged_tail_readers_refuse_and_a_writer_cuts(
        tmp_path, packets):
    want, _ = write_with_gaps(tmp_path, packets[:100], block_bytes=3000)
    size = (tmp_path / J.DATA_FILE).stat().st_size
    n = len(block_headers(tmp_path))
    with open(tmp_path / J.DATA_FILE, "ab") as f:
        f.write(bytes(4096))
    with pytest.raises(JournalError, match="unreadable block header") as e:
        list(read_journal(tmp_path))
    assert (e.value.block, e.value.offset) == (n, size)
    assert not verify(tmp_path).ok
    with pytest.warns(JournalWarning, match="damaged tail"):
        w = JournalWriter(tmp_path)
    assert w.recovered.offset == size and w.blocks == n
    w.close()
    assert list(read_journal(tmp_path)) == want and verify(tmp_path).ok


# -- tamper evidence ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_journal(tmp_path_factory, packets):
    """Three blocks, small enough to flip every byte of."""
    d = tmp_path_factory.mktemp("small")
    with JournalWriter(d) as w:
        for k in range(3):
            for i in range(2 * k, 2 * k + 2):
                w.append(sequence(packets[i]), T0 + i, packets[i][:60])
            if k == 1:
                w.append_gap(10_000, 5, T0 + 99)
            w.flush()
    return d


def test_every_single_byte_flip_in_the_data_file_is_reported_with_its_block_and_offset(
        tmp_path, small_journal):
    d = tmp_path / "j"
    shutil.copytree(small_journal, d)
    data = d / J.DATA_FILE
    clean = data.read_bytes()
    heads = block_headers(d)
    assert len(heads) == 3 and len(clean) < 2000
    buf = bytearray(clean)
    for pos in range(len(clean)):
        buf[pos] ^= 0x01
        data.write_bytes(buf)
        buf[pos] ^= 0x01
        h = next(h for h in heads if h.offset <= pos < h.end)
        rep = verify(d)
        assert not rep.ok, pos
        assert f"{J.DATA_FILE}: block {h.block} at byte offset {h.offset}:" in rep.problems[0], \
            (pos, rep.problems)
    data.write_bytes(clean)
    assert verify(d).ok


@pytest.mark.parametrize("where", ["first header", "first payload", "middle header",
                                   "middle payload", "last header", "last payload"])
def test_reading_a_flipped_block_raises_journal_error_naming_block_and_offset(
        tmp_path, small_journal, where):
    d = tmp_path / "j"
    shutil.copytree(small_journal, d)
    heads = block_headers(d)
    h = heads[{"first": 0, "middle": 1, "last": 2}[where.split()[0]]]
    pos = h.offset + (20 if where.endswith("header") else J.HEADER_LENGTH + 7)
    flip(d / J.DATA_FILE, pos)
    with pytest.raises(JournalError) as e:
        list(read_journal(d))
    assert (e.value.block, e.value.offset) == (h.block, h.offset)
    assert J.DATA_FILE in str(e.value) and f"block {h.block}" in str(e.value)
    if where in ("first header", "middle header"):    # good blocks follow: no writer cuts them
        with pytest.raises(JournalError, match="not a torn tail"):
            JournalWriter(d)


def test_every_single_byte_flip_in_the_index_is_reported_and_find_block_still_answers(
        tmp_path, small_journal, packets):
    d = tmp_path / "j"
    shutil.copytree(small_journal, d)
    index = d / J.INDEX_FILE
    clean = index.read_bytes()
    buf = bytearray(clean)
    for pos in range(len(clean)):
        buf[pos] ^= 0x01
        index.write_bytes(buf)
        buf[pos] ^= 0x01
        rep = verify(d)
        assert not rep.ok and J.INDEX_FILE in rep.problems[0], pos
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JournalWarning)
        assert find_block(d, sequence(packets[2])) == 1      # block 1 holds packets 2 and 3
    index.write_bytes(clean[:-5])
    assert not verify(d).ok
    with JournalWriter(d) as w:
        assert w.index_repaired
    assert index.read_bytes() == clean and verify(d).ok


def test_journal_warning_and_error_fit_the_shared_error_types():
    assert issubclass(JournalWarning, DecodeWarning)
    e = JournalError("bad", path="x/journal.bin", block=3, offset=99)
    assert str(e) == "bad (file 'x/journal.bin', block 3, byte offset 99)"


def test_bench_journal_reports_rates_and_compression(tmp_path):
    out = J.bench_journal(300, directory=tmp_path, block_bytes=1 << 16)
    assert out["packets"] == 300 and out["ratio"] > 1
    assert out["write_append_many_MBps"] > 0 and out["read_journal_MBps"] > 0
