"""MoldUDP64 framing: layout, encoders, round trips, heartbeats, end of session, bad input."""

from __future__ import annotations

import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import moldudp64 as M
from ingest.moldudp64 import (encode_packet, end_of_session, frame_packets, heartbeat,
                              packetize)
from normalize.itch_decode import MSG_INDEX
from normalize.itch_spec import MESSAGE_LENGTH, WIRE_DTYPES
from normalize.records import F_LAST, UNDEF_TIMESTAMP
from tickpipe.errors import DecodeError, DecodeWarning

SESSION = b"000012345A"
LETTERS = sorted(WIRE_DTYPES)


def itch(letter: str, locate: int = 0) -> bytes:
    """A valid ITCH 5.0 message of type ``letter`` (all other fields zero)."""
    rec = np.zeros(1, WIRE_DTYPES[letter])
    rec["message_type"] = letter.encode()
    rec["stock_locate"] = locate
    return rec.tobytes()


def table(packets: list[bytes]):
    """Concatenate packets; return the buffer, their offsets and lengths."""
    lens = [len(p) for p in packets]
    return b"".join(packets), np.cumsum([0] + lens)[:-1], lens


def expected_index(packets, seqs, messages, ts, chans):
    """The MSG_INDEX the framer should produce, computed independently in Python."""
    rows, base = [], 0
    for pkt, seq, msgs, t, c in zip(packets, seqs, messages, ts, chans):
        pos = base + M.HEADER_LENGTH
        for k, m in enumerate(msgs):
            flags = F_LAST if k == len(msgs) - 1 else 0
            rows.append((pos + 2, seq + k, t, c, flags, m[0], len(m)))
            pos += 2 + len(m)
        base += len(pkt)
    out = np.zeros(len(rows), MSG_INDEX)
    for name, col in zip(("offset", "sequence", "ts_recv", "channel", "flags", "type", "length"),
                         zip(*rows) if rows else [[]] * 7):
        out[name] = col
    return out


def assert_same_index(got, want):
    for name in ("offset", "sequence", "ts_recv", "channel", "flags", "type", "length"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# -- layout and encoders --------------------------------------------------------------------------

def test_header_constants_match_the_moldudp64_specification():
    assert (M.SESSION_OFFSET, M.SESSION_LENGTH, M.SEQUENCE_OFFSET, M.COUNT_OFFSET,
            M.HEADER_LENGTH) == (0, 10, 10, 18, 20)
    assert (M.HEARTBEAT, M.END_OF_SESSION, M.MAX_MESSAGE_COUNT) == (0, 0xFFFF, 0xFFFE)


def test_encoded_packet_has_session_sequence_count_and_length_prefixed_blocks():
    pkt = encode_packet(SESSION, 0x0102030405060708, [itch("S"), itch("D")])
    assert pkt[:10] == SESSION
    assert pkt[10:18] == bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert pkt[18:20] == b"\x00\x02"
    assert pkt[20:22] == b"\x00\x0c" and pkt[22:34] == itch("S")
    assert pkt[34:36] == b"\x00\x13" and pkt[36:] == itch("D")
    assert (M.session(pkt), M.sequence(pkt), M.message_count(pkt)) == (SESSION, 0x0102030405060708, 2)


def test_accessors_read_a_header_at_an_offset_and_reject_short_input():
    buf = b"xx" + heartbeat(SESSION, 99)
    assert M.sequence(buf, 2) == 99 and M.message_count(buf, 2) == 0
    with pytest.raises(ValueError, match="packet"):
        M.sequence(buf[:15])


def test_heartbeat_and_end_of_session_are_bare_headers_with_count_0_and_0xffff():
    assert heartbeat(SESSION, 5) == SESSION + struct.pack(">QH", 5, 0)
    assert end_of_session(SESSION, 6) == SESSION + struct.pack(">QH", 6, 0xFFFF)


@pytest.mark.parametrize("session", [b"short", b"elevenbytes", 12345])
def test_encoders_reject_a_session_that_is_not_10_bytes_naming_the_parameter(session):
    with pytest.raises(ValueError, match="`session`"):
        encode_packet(session, 1, [])


def test_encoders_reject_a_negative_sequence_naming_the_parameter():
    with pytest.raises(ValueError, match="`sequence`"):
        heartbeat(SESSION, -1)


# -- framing ----------------------------------------------------------------------------------------

message = st.builds(lambda letter, body: letter.encode() + body[:MESSAGE_LENGTH[ord(letter)] - 1],
                    st.sampled_from(LETTERS), st.binary(min_size=49, max_size=49))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2**63), st.lists(message, max_size=12),
                          st.integers(0, 2**63), st.integers(0, 65535)), max_size=8))
def test_encode_then_frame_round_trips_offsets_lengths_sequences_and_flags(spec):
    packets = [encode_packet(SESSION, seq, msgs) for seq, msgs, _, _ in spec]
    buf, offs, lens = table(packets)
    ts = [t for _, _, t, _ in spec]
    ch = [c for _, _, _, c in spec]
    res = frame_packets(buf, offs, lens, np.array(ts, np.uint64), np.array(ch, np.uint16))
    want = expected_index(packets, [s for s, *_ in spec], [m for _, m, _, _ in spec], ts, ch)
    assert_same_index(res.index, want)
    got_bytes = [buf[o:o + n] for o, n in zip(res.index["offset"], res.index["length"])]
    assert got_bytes == [m for _, msgs, _, _ in spec for m in msgs]
    assert res.n_packets == len(spec) and not res.skipped
    assert res.n_heartbeats == sum(not msgs for _, msgs, _, _ in spec)   # count 0 = heartbeat


def test_unknown_receive_time_and_a_scalar_channel_fill_every_message():
    buf, offs, lens = table([encode_packet(SESSION, 1, [itch("A"), itch("E")])])
    res = frame_packets(buf, offs, lens, None, 7)
    assert (res.index["ts_recv"] == UNDEF_TIMESTAMP).all() and (res.index["channel"] == 7).all()


def test_heartbeats_and_end_of_session_are_counted_and_carry_no_messages():
    packets = [heartbeat(SESSION, 10), encode_packet(SESSION, 10, [itch("A"), itch("D")]),
               heartbeat(SESSION, 12), end_of_session(SESSION, 12)]
    res = frame_packets(*table(packets), 0, 0)
    assert res.n_messages == 2 and list(res.index["sequence"]) == [10, 11]
    assert res.n_heartbeats == 2 and res.end_of_session and res.eos_sequence == 12


def test_a_session_without_end_of_session_reports_none():
    res = frame_packets(*table([heartbeat(SESSION, 1)]), 0, 0)
    assert not res.end_of_session and res.eos_sequence is None and res.n_messages == 0


def test_chunked_framing_gives_the_same_index_as_one_call(monkeypatch):
    packets = [encode_packet(SESSION, 100 * k, [itch("A")] * (k % 4)) for k in range(40)]
    buf, offs, lens = table(packets)
    whole = frame_packets(buf, offs, lens, 0, 0)
    monkeypatch.setattr(M, "_CHUNK_MESSAGES", 3)
    assert_same_index(frame_packets(buf, offs, lens, 0, 0).index, whole.index)


def test_compiled_framer_rolls_back_a_packet_when_the_skip_list_is_full():
    bad = encode_packet(SESSION, 1, [b"z" * 12])
    buf, offs, lens = table([bad, bad])
    args = (np.frombuffer(buf, np.uint8), offs.astype(np.int64), np.array(lens, np.int64),
            np.zeros(2, np.uint64), np.zeros(2, np.uint16))
    sk = (np.empty(1, np.int64), np.empty(1, np.int64), np.empty(1, np.uint8), np.empty(1, np.uint64))
    out = np.zeros(4, MSG_INDEX)
    tally = np.zeros(M.N_TALLY, np.uint64)
    n, nxt, status, _, _, ns = M.frame_moldudp64(*args, 0, MESSAGE_LENGTH, True, out, *sk, tally)
    assert (n, nxt, status, ns) == (0, 1, M.FULL, 1)
    n, nxt, status, _, _, ns = M.frame_moldudp64(*args, nxt, MESSAGE_LENGTH, True, out, *sk, tally)
    assert (n, nxt, status, ns) == (0, 2, M.OK, 1)
    assert tally[M.T_MESSAGES_SKIPPED] == 2


# -- bad input --------------------------------------------------------------------------------------

GOOD = encode_packet(SESSION, 500, [itch("A"), itch("D")])


def frame_with_bad(bad: bytes, errors="raise"):
    packets = [GOOD, bad, encode_packet(SESSION, 900, [itch("S")])]
    return frame_packets(*table(packets), 0, 0, path="feed.bin", errors=errors)


def test_packet_shorter_than_its_header_raises_naming_offset_and_packet():
    with pytest.raises(DecodeError, match="shorter than its 20-byte header") as info:
        frame_with_bad(GOOD[:15])
    err = info.value
    assert (err.path, err.offset, err.index, err.sequence) == ("feed.bin", len(GOOD), 1, None)
    assert f"byte offset {len(GOOD)}" in str(err) and "packet 1" in str(err)
    assert err.partial.n_messages == 2


def test_count_overrunning_the_packet_raises_with_sequence_and_partial_result():
    bad = bytearray(encode_packet(SESSION, 700, [itch("A"), itch("E")]))
    bad[18:20] = (3).to_bytes(2, "big")
    with pytest.raises(DecodeError, match="count 3 overruns the packet") as info:
        frame_with_bad(bytes(bad))
    err = info.value
    assert err.sequence == 702 and err.offset == len(GOOD) + len(bad) and err.index == 1
    assert "sequence 702" in str(err)
    assert list(err.partial.index["sequence"]) == [500, 501, 700, 701]


def test_block_length_running_past_the_packet_raises_overrun():
    bad = encode_packet(SESSION, 700, [itch("A"), itch("E")])[:-5]
    with pytest.raises(DecodeError, match="overruns") as info:
        frame_with_bad(bad)
    assert info.value.sequence == 701 and info.value.offset == len(GOOD) + 20 + 38


@pytest.mark.parametrize("bad_msg, text", [
    (itch("A")[:-1], "message length 35 disagrees with its type 'A'"),
    (b"z" + bytes(11), "unknown ITCH 5.0 message type 'z'"),
    (b"", "zero message length"),
])
def test_bad_message_raises_naming_its_offset_and_sequence(bad_msg, text):
    bad = encode_packet(SESSION, 700, [itch("A"), bad_msg, itch("E")])
    with pytest.raises(DecodeError, match=text) as info:
        frame_with_bad(bad)
    assert info.value.sequence == 701 and info.value.offset == len(GOOD) + 20 + 38


def test_skip_drops_only_a_bad_message_when_its_packet_framing_is_intact():
    bad = encode_packet(SESSION, 700, [itch("A"), itch("A")[:-1], itch("E")])
    with pytest.warns(DecodeWarning, match="skipped 1 bad"):
        res = frame_with_bad(bad, errors="skip")
    assert list(res.index["sequence"]) == [500, 501, 700, 702, 900]
    assert list(res.index["flags"]) == [0, F_LAST, 0, F_LAST, F_LAST]
    (off, pkt, reason), = res.skipped
    assert (off, pkt) == (len(GOOD) + 20 + 38, 1) and "sequence 701" in reason


def test_skip_drops_a_whole_packet_whose_blocks_overrun_and_keeps_the_others():
    bad = bytearray(encode_packet(SESSION, 700, [itch("A"), itch("E")]))
    bad[18:20] = (9).to_bytes(2, "big")
    with pytest.warns(DecodeWarning, match=f"byte offsets \\[{len(GOOD) + len(bad)}\\]"):
        res = frame_with_bad(bytes(bad), errors="skip")
    assert list(res.index["sequence"]) == [500, 501, 900]
    assert res.skipped[0].packet == 1 and "overruns" in res.skipped[0].reason


def test_skip_drops_a_short_packet():
    with pytest.warns(DecodeWarning):
        res = frame_with_bad(b"\x00" * 7, errors="skip")
    assert list(res.index["sequence"]) == [500, 501, 900] and res.skipped[0].offset == len(GOOD)


def test_packet_table_pointing_outside_the_buffer_is_a_decode_error():
    with pytest.raises(DecodeError, match="outside the buffer"):
        frame_packets(GOOD, [0], [len(GOOD) + 1], 0, 0)


def test_errors_must_be_raise_or_skip():
    with pytest.raises(ValueError, match="`errors`.*'ignore'"):
        frame_packets(GOOD, [0], [len(GOOD)], 0, 0, errors="ignore")


def test_columns_must_have_one_value_per_packet():
    with pytest.raises(ValueError, match="`pkt_ts`"):
        frame_packets(GOOD, [0], [len(GOOD)], [1, 2], 0)


# -- packetize ----------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.lists(message, max_size=120), st.integers(20 + 2 + 50, 1500), st.integers(0, 2**40))
def test_packetize_respects_max_payload_and_frames_back_to_the_same_messages(msgs, max_payload, seq0):
    packets = packetize(msgs, SESSION, seq0, max_payload)
    assert all(len(p) <= max_payload for p in packets)
    assert sum(M.message_count(p) for p in packets) == len(msgs)
    res = frame_packets(*table(packets), 0, 0)
    assert list(res.index["sequence"]) == list(range(seq0, seq0 + len(msgs)))
    buf = b"".join(packets)
    assert [buf[o:o + n] for o, n in zip(res.index["offset"], res.index["length"])] == msgs


def test_packetize_accepts_a_binaryfile_buffer_and_gives_the_same_packets():
    msgs = [itch(letter) for letter in LETTERS] * 5
    framed = b"".join(struct.pack(">H", len(m)) + m for m in msgs)
    assert packetize(framed, SESSION, 1) == packetize(msgs, SESSION, 1)
    assert packetize(np.frombuffer(framed, np.uint8), SESSION, 1) == packetize(msgs, SESSION, 1)


def test_packetize_fills_packets_greedily():
    packets = packetize([itch("A")] * 10, SESSION, 1, max_payload=20 + 3 * 38)
    assert [M.message_count(p) for p in packets] == [3, 3, 3, 1]
    assert [M.sequence(p) for p in packets] == [1, 4, 7, 10]


def test_packetize_rejects_a_message_that_cannot_fit_and_a_truncated_buffer():
    with pytest.raises(ValueError, match="does not fit in `max_payload`=40"):
        packetize([itch("A")], SESSION, 1, max_payload=40)
    with pytest.raises(ValueError, match="ends inside the block at byte offset 0"):
        packetize(b"\x00\x24AAAA", SESSION, 1)


def test_framing_warns_nothing_on_clean_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame_packets(*table([GOOD]), 0, 0, errors="skip")
