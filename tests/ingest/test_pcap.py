"""Capture readers on real NASDAQ / BX / PSX captures and on variants derived from them.

The committed captures (``tests/data/pcap``, see PROVENANCE.md) are little-endian nanosecond
pcap over Ethernet + 802.1Q. The tests rebuild the same packets as microsecond and big-endian
pcap, pcapng (both byte orders, several resolutions, SPB), extra VLAN tags, Linux SLL and raw
IPv4, and check that every variant yields the identical message index.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import moldudp64 as M
from ingest import pcap as P
from ingest.pcap import is_capture, read_capture
from normalize.records import F_LAST, UNDEF_TIMESTAMP
from tickpipe.errors import DecodeError, DecodeWarning, TruncatedError

DATA = Path(__file__).resolve().parents[1] / "data" / "pcap"
FILES = sorted(DATA.glob("*/*.pcap"))
MULTI = DATA / "Nasdaq.Equities.TotalView.Itch.v5.0" / "Multiple.Packets.pcap"

# ITCH types each capture holds, by file stem (the names differ between venues and years)
TYPES = {
    "AddOrderNoMpidAttributionMessage": "A", "AddOrderNoMPID": "A",
    "AddOrderMpidAttributionMessage": "F", "AddOrderWithMpidAttributionMessage": "F",
    "AddOrderWithMPID": "F", "NonCrossTradeMessage": "P", "NonCrossTrade": "P",
    "TradeMessageNon-cross": "P", "CrossTrade": "Q", "OrderCancelMessage": "X",
    "OrderCancel": "X", "OrderDeleteMessage": "D", "OrderDelete": "D",
    "OrderExecutedMessage": "E", "OrderExecuted": "E", "OrderExecutedWithPriceMessage": "C",
    "OrderExecutedWithPrice": "C", "OrderReplaceMessage": "U", "OrderReplace": "U",
    "RegShoShortSalePriceTestRestrictedIndicatorMessage": "Y", "RegSHORestriction": "Y",
    "RetailInterestMessage": "N", "StockTradingActionMessage": "H", "StockTradingAction": "H",
    "SystemEventMessage": "S", "SystemEvent": "S", "LULDAuctionCollar": "J",
    "MarketParticipantPositionMessage": "L", "MarketParticipantPosition": "L",
    "NetOrderImbalanceIndicatorMessage": "I", "NetOrderImbalanceIndicator": "I",
    "Multiple.Packets": "ADF",
}


# -- capture writers (test-only, Python) ----------------------------------------------------------

def records(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(ts_sec, ts_frac, frame)`` of each record of a little-endian classic pcap."""
    out, pos = [], 24
    while pos < len(data):
        sec, frac, incl, _ = struct.unpack_from("<IIII", data, pos)
        out.append((sec, frac, data[pos + 16:pos + 16 + incl]))
        pos += 16 + incl
    return out


def write_pcap(recs, *, nanos=True, big=False, link=1) -> bytes:
    e = ">" if big else "<"
    magic = P.PCAP_MAGIC_NS if nanos else P.PCAP_MAGIC_US
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, link)]
    for sec, frac, frame in recs:
        out.append(struct.pack(e + "IIII", sec, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def shb(e: str) -> bytes:
    return block(e, P.PCAPNG_SHB, struct.pack(e + "IHHq", P.PCAPNG_BYTE_ORDER_MAGIC, 1, 0, -1))


def idb(e: str, link=1, tsresol=None, tsoffset=None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HHB3x", P.OPT_IF_TSRESOL, 1, tsresol)
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", P.OPT_IF_TSOFFSET, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return block(e, P.PCAPNG_IDB, struct.pack(e + "HHI", link, 0, 262144) + opts)


def epb(e: str, ticks: int, frame: bytes, ifid=0) -> bytes:
    head = struct.pack(e + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
    return block(e, P.PCAPNG_EPB, head + frame)


def write_pcapng(recs, *, big=False, tsresol=9, ticks=None, link=1, spb=False) -> bytes:
    """SHB + IDB + one EPB (or SPB) per record; ``ticks(sec, frac)`` gives the timestamp."""
    e = ">" if big else "<"
    ticks = ticks or (lambda sec, frac: sec * 10**9 + frac)
    out = [shb(e), idb(e, link, tsresol)]
    for sec, frac, frame in recs:
        if spb:
            out.append(block(e, P.PCAPNG_SPB, struct.pack(e + "I", len(frame)) + frame))
        else:
            out.append(epb(e, ticks(sec, frac), frame))
    return b"".join(out)


def udp_frame(template: bytes, payload: bytes, port: int | None = None) -> bytes:
    """``template`` (Ethernet + 802.1Q + IPv4 + UDP) carrying ``payload`` instead."""
    ip = bytearray(template[18:18 + 20])
    ip[2:4] = (20 + 8 + len(payload)).to_bytes(2, "big")
    udp = bytearray(template[38:46])
    udp[4:6] = (8 + len(payload)).to_bytes(2, "big")
    if port is not None:
        udp[2:4] = port.to_bytes(2, "big")
    return template[:18] + bytes(ip) + bytes(udp) + payload


def message_bytes(cap) -> list[bytes]:
    return [cap.buf[o:o + n].tobytes() for o, n in zip(cap.index["offset"], cap.index["length"])]


def assert_same_messages(got, want, ts=True):
    """Identical index except for byte offsets (the layouts differ); identical message bytes."""
    names = ["sequence", "channel", "flags", "type", "length"] + (["ts_recv"] if ts else [])
    for name in names:
        np.testing.assert_array_equal(got.index[name], want.index[name], err_msg=name)
    assert message_bytes(got) == message_bytes(want)
    assert got.channels == want.channels


@pytest.fixture(scope="module")
def multi() -> bytes:
    return MULTI.read_bytes()


@pytest.fixture(scope="module")
def multi_cap(multi):
    return read_capture(multi, path=str(MULTI))


# -- real captures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_capture_parses_into_messages_of_the_type_its_name_says(path):
    cap = read_capture(path.read_bytes(), path=str(path))
    assert cap.format == "pcap" and cap.n_messages >= 1 and not cap.skipped
    assert cap.n_packets == cap.n_records and cap.n_non_udp == 0
    assert {chr(t) for t in cap.index["type"]} == set(TYPES[path.stem])
    assert message_bytes(cap)[0][0] == cap.index["type"][0]


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sequences_and_channels_are_plausible(path):
    cap = read_capture(path.read_bytes())
    (chan,) = cap.channels                  # one feed per capture
    assert (cap.index["channel"] == 0).all()
    if path.parent.name.endswith("20230822"):     # addresses, session and sequence zeroed
        assert chan == P.Channel("0.0.0.0", 0, "") and (cap.index["sequence"] == 0).all()
    else:
        assert chan.ip.startswith("233.") and chan.port > 1024
        assert len(chan.session) == 10 and chan.session.isalnum()
        assert (cap.index["sequence"] > 1_000_000).all()
    ts = cap.index["ts_recv"].astype(object)
    assert all(1692711000 * 10**9 <= t < 1692800000 * 10**9 for t in ts)   # 2023-08-22 UTC
    assert np.count_nonzero(cap.index["flags"] & F_LAST) == cap.n_packets


def test_multiple_packets_gives_two_packets_and_38_consecutive_messages_in_the_second(multi_cap):
    cap = multi_cap
    assert (cap.n_records, cap.n_packets, cap.n_messages) == (2, 2, 39)
    seq = cap.index["sequence"].tolist()
    assert seq[0] == 14764496 and seq[1:] == list(range(19009117, 19009117 + 38))
    assert np.flatnonzero(cap.index["flags"] & F_LAST).tolist() == [0, 38]
    assert np.bincount(cap.index["type"], minlength=256)[[ord("A"), ord("D"), ord("F")]].tolist() == [36, 1, 2]
    assert cap.channels == [P.Channel("233.54.12.111", 26477, "000010059B")]
    assert cap.n_heartbeats == 0 and not cap.end_of_session


def test_nanosecond_pcap_timestamps_are_exact_integers_from_the_record_header(multi, multi_cap):
    sec, frac = struct.unpack_from("<II", multi, 24)          # first record header, by hand
    second = 24 + 16 + struct.unpack_from("<I", multi, 32)[0]
    sec2, frac2 = struct.unpack_from("<II", multi, second)
    assert (sec, frac) == (1692711000, 7661955)
    assert int(multi_cap.index["ts_recv"][0]) == 1692711000_007661955
    assert set(multi_cap.index["ts_recv"][1:].tolist()) == {sec2 * 10**9 + frac2}
    assert multi_cap.index["ts_recv"].dtype == np.uint64


def test_microsecond_pcap_timestamps_are_exact_integers(multi):
    recs = [(sec, frac // 1000, frame) for sec, frac, frame in records(multi)]
    cap = read_capture(write_pcap(recs, nanos=False))
    assert int(cap.index["ts_recv"][0]) == 1692711000 * 10**9 + 7661 * 1000
    assert int(cap.index["ts_recv"][1]) == 1692711038 * 10**9 + 952561 * 1000


def test_big_endian_pcap_gives_the_identical_index(multi, multi_cap):
    big = write_pcap(records(multi), big=True)
    assert big[:4] == b"\xa1\xb2\x3c\x4d"
    assert_same_messages(read_capture(big), multi_cap)


# -- pcapng -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("big", [False, True], ids=["little-endian", "big-endian"])
def test_pcapng_with_nanosecond_tsresol_gives_the_identical_index(multi, multi_cap, big):
    cap = read_capture(write_pcapng(records(multi), big=big, tsresol=9))
    assert cap.format == "pcapng" and cap.n_records == 2
    assert_same_messages(cap, multi_cap)


def test_pcapng_default_resolution_is_microseconds(multi):
    recs = records(multi)
    cap = read_capture(write_pcapng(recs, tsresol=None, ticks=lambda s, f: s * 10**6 + f // 1000))
    assert int(cap.index["ts_recv"][0]) == 1692711000_007661000


def test_pcapng_power_of_two_resolution_converts_exactly(multi):
    ticks = (1692711000 << 30) | (1 << 29)                   # half a second past the second
    cap = read_capture(write_pcapng(records(multi)[:1], tsresol=0x80 | 30, ticks=lambda s, f: ticks))
    assert int(cap.index["ts_recv"][0]) == 1692711000_500000000


def test_pcapng_tsoffset_adds_whole_seconds(multi):
    e = "<"
    sec, frac, frame = records(multi)[0]
    data = shb(e) + idb(e, tsresol=9, tsoffset=-3600) + epb(e, sec * 10**9 + frac, frame)
    assert int(read_capture(data).index["ts_recv"][0]) == (sec - 3600) * 10**9 + frac


def test_pcapng_simple_packet_blocks_have_no_receive_time(multi, multi_cap):
    cap = read_capture(write_pcapng(records(multi), spb=True))
    assert (cap.index["ts_recv"] == UNDEF_TIMESTAMP).all()
    assert_same_messages(cap, multi_cap, ts=False)


def test_pcapng_skips_unknown_blocks_and_reads_a_second_section(multi, multi_cap):
    recs = records(multi)
    first = write_pcapng(recs[:1])
    custom = block("<", 0x00000BAD, b"vendor data")
    second = write_pcapng(recs[1:], big=True)
    cap = read_capture(first + custom + second)
    assert_same_messages(cap, multi_cap)
    assert cap.n_records == 2


# -- link layers --------------------------------------------------------------------------------------

def retag(frame: bytes, tags: bytes) -> bytes:
    """Replace the frame's 802.1Q tag with ``tags`` (zero or more 4-byte tags)."""
    assert frame[12:14] == b"\x81\x00"
    return frame[:12] + tags + frame[16:]


@pytest.mark.parametrize("tags", [b"", b"\x81\x00\x00\x8d", b"\x88\xa8\x00\x07\x81\x00\x00\x8d",
                                  b"\x88\xa8\x00\x07\x81\x00\x00\x8d\x81\x00\x00\x01"],
                         ids=["untagged", "802.1Q", "802.1ad+802.1Q", "three tags"])
def test_vlan_tagged_frames_parse_the_same(multi, multi_cap, tags):
    recs = [(s, f, retag(fr, tags)) for s, f, fr in records(multi)]
    assert_same_messages(read_capture(write_pcap(recs)), multi_cap)


def test_linux_cooked_and_raw_ipv4_captures_parse_the_same(multi, multi_cap):
    ip = [(s, f, fr[18:]) for s, f, fr in records(multi)]          # strip Ethernet + tag
    sll = [(s, f, struct.pack(">HHH8sH", 0, 1, 6, b"", 0x0800) + fr) for s, f, fr in ip]
    sll2 = [(s, f, struct.pack(">HHIHBB8s", 0x0800, 0, 2, 1, 0, 6, b"") + fr) for s, f, fr in ip]
    for recs, link in ((ip, P.LINKTYPE_RAW), (ip, P.LINKTYPE_IPV4), (sll, P.LINKTYPE_LINUX_SLL),
                       (sll2, P.LINKTYPE_LINUX_SLL2)):
        assert_same_messages(read_capture(write_pcap(recs, link=link)), multi_cap)


def test_non_udp_frames_and_fragments_are_counted_not_errors(multi, multi_cap):
    recs = records(multi)
    sec, frac, frame = recs[0]
    arp = frame[:12] + b"\x08\x06" + bytes(28)
    tcp = bytearray(frame)
    tcp[18 + 9] = 6
    frag = bytearray(frame)
    frag[18 + 6:18 + 8] = b"\x20\x00"                           # more-fragments flag
    extra = [(sec, frac, f) for f in (arp, bytes(tcp), bytes(frag))]
    cap = read_capture(write_pcap(extra[:2] + recs[:1] + extra[2:] + recs[1:]))
    assert (cap.n_records, cap.n_packets, cap.n_non_udp, cap.n_fragments) == (5, 2, 3, 1)
    assert_same_messages(cap, multi_cap)


def test_channels_number_destinations_and_sessions_by_first_appearance(multi):
    (s1, f1, a), (s2, f2, b) = records(multi)
    other = bytearray(a)
    other[18 + 20 + 2:18 + 20 + 4] = (26478).to_bytes(2, "big")     # another UDP port
    cap = read_capture(write_pcap([(s1, f1, bytes(other)), (s1, f1, a), (s2, f2, b)]))
    assert [c.port for c in cap.channels] == [26478, 26477]
    assert cap.index["channel"].tolist() == [0, 1] + [1] * 38


def test_heartbeats_and_end_of_session_in_a_capture_are_counted(multi):
    (sec, frac, frame), _ = records(multi)
    ses = b"000010059B"
    recs = [(sec, frac, udp_frame(frame, M.heartbeat(ses, 14764496))), (sec, frac, frame),
            (sec, frac + 1, udp_frame(frame, M.heartbeat(ses, 14764497))),
            (sec, frac + 2, udp_frame(frame, M.end_of_session(ses, 14764497)))]
    cap = read_capture(write_pcap(recs))
    assert (cap.n_packets, cap.n_messages, cap.n_heartbeats) == (4, 1, 2)
    assert cap.end_of_session and cap.eos_sequence == 14764497


def test_packetized_messages_read_back_from_a_capture(multi, multi_cap):
    (sec, frac, frame), _ = records(multi)
    msgs = message_bytes(multi_cap)
    packets = M.packetize(msgs, b"000010059B", 1000, max_payload=400)
    cap = read_capture(write_pcap([(sec, frac + i, udp_frame(frame, p))
                                   for i, p in enumerate(packets)]))
    assert message_bytes(cap) == msgs and len(packets) == cap.n_packets > 3
    assert cap.index["sequence"].tolist() == list(range(1000, 1000 + len(msgs)))
    assert cap.index["ts_recv"][-1] == sec * 10**9 + frac + len(packets) - 1


def test_chunked_scanning_gives_the_same_capture(multi, multi_cap, monkeypatch):
    monkeypatch.setattr(P, "_CHUNK_PACKETS", 1)
    monkeypatch.setattr(P, "_SKIP_CHUNK", 1)
    assert_same_messages(read_capture(multi), multi_cap)
    assert_same_messages(read_capture(write_pcapng(records(multi))), multi_cap)


# -- detection and bad input ----------------------------------------------------------------------

def test_is_capture_knows_both_magics_in_both_byte_orders_and_pcapng():
    for magic in (P.PCAP_MAGIC_US, P.PCAP_MAGIC_NS):
        assert is_capture(magic.to_bytes(4, "little")) == "pcap"
        assert is_capture(magic.to_bytes(4, "big")) == "pcap"
    assert is_capture(b"\x0a\x0d\x0d\x0a\x1c\x00") == "pcapng"
    assert is_capture(b"\x00\x24Sxxx") is None and is_capture(b"\xd4") is None


def test_corrupt_magic_raises_decode_error_at_offset_0(multi):
    with pytest.raises(DecodeError, match="not a pcap or pcapng capture") as info:
        read_capture(b"\x00\x00" + multi[2:], path="x.pcap")
    assert info.value.offset == 0 and info.value.path == "x.pcap"


def test_corrupt_global_header_and_unsupported_link_type_raise(multi):
    with pytest.raises(DecodeError, match="version_major 9"):
        read_capture(multi[:4] + b"\x09" + multi[5:])
    with pytest.raises(DecodeError, match="link type 147 is not supported"):
        read_capture(multi[:20] + (147).to_bytes(4, "little") + multi[24:])
    with pytest.raises(TruncatedError, match="global header"):
        read_capture(multi[:10])


def test_truncated_record_raises_truncated_error_keeping_the_first_packet(multi):
    second = 24 + 16 + 87
    with pytest.raises(TruncatedError, match="capture record 1: capture ends inside a record") as info:
        read_capture(multi[:-10], path="cut.pcap")
    err = info.value
    assert (err.offset, err.index, err.path) == (second, 1, "cut.pcap")
    assert err.partial.index["sequence"].tolist() == [14764496]
    with pytest.warns(DecodeWarning, match=f"skipped 1 bad .* at byte offsets \\[{second}\\]"):
        cap = read_capture(multi[:-10], errors="skip")
    assert cap.index["sequence"].tolist() == [14764496] and cap.skipped[0].packet == 1


def test_absurd_captured_length_is_a_decode_error_not_truncation(multi):
    second = 24 + 16 + 87
    bad = multi[:second + 8] + (0x7FFFFFFF).to_bytes(4, "little") + multi[second + 12:]
    with pytest.raises(DecodeError, match="corrupt captured length") as info:
        read_capture(bad)
    assert not isinstance(info.value, TruncatedError) and info.value.offset == second


def set_count(multi: bytes, count: int) -> bytes:
    """Multiple.Packets with the second packet's MoldUDP64 message count replaced."""
    pos = 24 + 16 + 87 + 16 + 18 + 20 + 8 + M.COUNT_OFFSET
    assert multi[pos:pos + 2] == (38).to_bytes(2, "big")
    return multi[:pos] + count.to_bytes(2, "big") + multi[pos + 2:]


def test_count_overrunning_the_packet_raises_with_record_and_sequence(multi):
    with pytest.raises(DecodeError, match="count 39 overruns the packet") as info:
        read_capture(set_count(multi, 39), path="m.pcap")
    err = info.value
    assert err.sequence == 19009117 + 38 and err.index == 1
    assert "capture record 1" in str(err) and "sequence 19009155" in str(err)
    assert err.offset == len(multi)                         # the missing 39th block
    assert err.partial.n_messages == 39                     # everything before the fault
    with pytest.warns(DecodeWarning):
        cap = read_capture(set_count(multi, 39), errors="skip")
    assert cap.index["sequence"].tolist() == [14764496]


def test_message_length_mismatch_raises_and_skip_drops_only_that_message(multi, multi_cap):
    pos = int(multi_cap.index["offset"][5])                 # an 'A' (36 bytes) made an 'F' (40)
    bad = multi[:pos] + b"F" + multi[pos + 1:]
    with pytest.raises(DecodeError, match="length 36 disagrees with its type 'F'") as info:
        read_capture(bad)
    assert info.value.offset == pos - 2 and info.value.sequence == 19009117 + 4
    with pytest.warns(DecodeWarning):
        cap = read_capture(bad, errors="skip")
    assert cap.n_messages == 38 and 19009121 not in cap.index["sequence"].tolist()


def test_datagram_cut_by_the_snapshot_length_is_an_error(multi):
    recs = records(multi)
    sec, frac, frame = recs[1]
    data = write_pcap([recs[0], (sec, frac, frame[:200])])
    with pytest.raises(DecodeError, match="snapshot length"):
        read_capture(data)
    with pytest.warns(DecodeWarning):
        assert read_capture(data, errors="skip").n_messages == 1


def test_pcapng_corrupt_block_length_and_unknown_interface_raise(multi):
    good = write_pcapng(records(multi))
    first_epb = len(shb("<")) + len(idb("<", tsresol=9))
    with pytest.raises(DecodeError, match="corrupt pcapng block length") as info:
        read_capture(good[:-4] + b"\x00\x00\x00\x00")
    assert info.value.index == 3                            # blocks: SHB, IDB, EPB, EPB
    sec, frac, frame = records(multi)[0]
    stray = shb("<") + idb("<") + epb("<", 1, frame, ifid=4)
    with pytest.raises(DecodeError, match="undescribed interface"):
        read_capture(stray)
    with pytest.raises(TruncatedError):
        read_capture(good[:first_epb + 20])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["pcap", "pcapng", "pcapng-big"]),
       st.lists(st.tuples(st.integers(0, 1700), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 1800), st.sampled_from(["raise", "skip"]))
def test_corrupted_captures_only_ever_raise_decode_errors(kind, flips, cut, errors):
    data = MULTI.read_bytes()
    if kind != "pcap":
        data = write_pcapng(records(data), big=kind == "pcapng-big")
    data = bytearray(data)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[:max(cut, 4)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecodeWarning)
            cap = read_capture(data, errors=errors)
    except DecodeError:
        return
    assert (cap.index["offset"] + cap.index["length"] <= len(data)).all()
