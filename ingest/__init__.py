"""Ingest: captures (pcap, pcapng) and MoldUDP64 packets down to ITCH 5.0 message indexes.

Public API::

    read_capture(data, *, path="<buffer>", errors="raise") -> Capture
    is_capture(first_bytes) -> "pcap" | "pcapng" | None
    frame_packets(buf, pkt_offsets, pkt_lengths, pkt_ts, pkt_channel, *, path, errors) -> FrameResult
    encode_packet(session, sequence, messages) -> bytes
    heartbeat(session, next_seq) -> bytes
    end_of_session(session, next_seq) -> bytes
    packetize(messages, session, first_seq, max_payload=1400) -> list[bytes]
    read_journal(DIR) -> Iterator[(ts_recv, packet_bytes)]      (ingest.journal)
    read_gaps(DIR) -> list[(first_sequence, count)]
    ingest.capture.Capture, ingest.exchange.Exchange            (live capture, simulator)
"""

import tickpipe.jitcache  # noqa: F401  (numba's cache directory, before any kernel is defined)

from ingest.moldudp64 import (FrameResult, Skip, encode_packet, end_of_session, frame_packets,
                              heartbeat, packetize)
from ingest.pcap import Capture, Channel, is_capture, read_capture, write_pcap
from ingest.journal import (JournalError, JournalWarning, JournalWriter, find_block, read_gaps,
                            read_journal, verify)

__all__ = ["read_capture", "is_capture", "Capture", "Channel", "frame_packets", "FrameResult",
           "Skip", "encode_packet", "heartbeat", "end_of_session", "packetize", "write_pcap",
           "JournalWriter", "read_journal", "read_gaps", "find_block", "verify", "JournalError",
           "JournalWarning"]
