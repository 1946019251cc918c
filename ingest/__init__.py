"""Ingest: captures (pcap, pcapng) and MoldUDP64 packets down to ITCH 5.0 message indexes.

Public API::

    read_capture(data, *, path="<buffer>", errors="raise") -> Capture
    is_capture(first_bytes) -> "pcap" | "pcapng" | None
    frame_packets(buf, pkt_offsets, pkt_lengths, pkt_ts, pkt_channel, *, path, errors) -> FrameResult
    encode_packet(session, sequence, messages) -> bytes
    heartbeat(session, next_seq) -> bytes
    end_of_session(session, next_seq) -> bytes
    packetize(messages, session, first_seq, max_payload=1400) -> list[bytes]
"""

from ingest.moldudp64 import (FrameResult, Skip, encode_packet, end_of_session, frame_packets,
                              heartbeat, packetize)
from ingest.pcap import Capture, Channel, is_capture, read_capture

__all__ = ["read_capture", "is_capture", "Capture", "Channel", "frame_packets", "FrameResult",
           "Skip", "encode_packet", "heartbeat", "end_of_session", "packetize"]
