"""Capture readers: classic pcap and pcapng down to a MoldUDP64 message index.

Two compiled passes, no Python work per packet:

1. :func:`scan_pcap` / :func:`scan_pcapng` walk the capture records, take each frame through
   Ethernet (any number of 802.1Q / 802.1ad tags), Linux cooked (SLL, SLL2) or raw IP, IPv4
   and UDP, and write a packet table (UDP payload offset and length, receive time in UTC ns,
   destination address and port, record index). Frames that are not unfragmented IPv4 UDP are
   counted, not errors.
2. :func:`ingest.moldudp64.frame_arrays` frames each UDP payload as a MoldUDP64 packet.

Timestamps become UTC nanoseconds with integer arithmetic only: pcap seconds + micro- or
nanoseconds (by magic; ``thiszone`` is ignored, as every writer leaves it 0), pcapng ticks of
``if_tsresol`` (10^-n, or 2^-n with bit 7 set; default 10^-6) plus ``if_tsoffset`` seconds.
Simple packet blocks carry no time: :data:`~normalize.records.UNDEF_TIMESTAMP`.

Channels number each distinct (destination IPv4 address, destination port, MoldUDP64 session)
in order of first appearance.

Thread safety: the scanners are compiled ``nogil`` and write only into the arrays they are
given; :func:`read_capture` allocates its own and may run in several threads at once.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from typing import NamedTuple

import numba
import numpy as np

from ingest import moldudp64 as M
from normalize import records as R
from normalize._bytes import be16, be32, le16, le32
from normalize.itch_decode import ERR_TRUNCATED, FULL, OK
from tickpipe.errors import DecodeError, TruncatedError

# -- formats ------------------------------------------------------------------------------------
PCAP_MAGIC_US = 0xA1B2C3D4          # classic pcap, microsecond timestamps
PCAP_MAGIC_NS = 0xA1B23C4D          # classic pcap, nanosecond timestamps
PCAP_GLOBAL_HEADER_LENGTH = 24
PCAP_RECORD_HEADER_LENGTH = 16      # ts_sec, ts_frac, incl_len, orig_len
PCAP_VERSION_MAJOR = 2
MAX_CAPLEN = 262144                 # libpcap's MAXIMUM_SNAPLEN; larger records are corrupt
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 1
PCAPNG_PB = 2                       # obsolete packet block
PCAPNG_SPB = 3
PCAPNG_EPB = 6
PCAPNG_BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_MIN_BLOCK = 12
OPT_ENDOFOPT, OPT_IF_TSRESOL, OPT_IF_TSOFFSET = 0, 9, 14
DEFAULT_TSRESOL = 6                 # 10^-6 s
TSRESOL_UNKNOWN = 255               # marks an interface whose resolution was unusable
MAX_INTERFACES = 256

LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL = 1, 101, 113
LINKTYPE_IPV4, LINKTYPE_LINUX_SLL2 = 228, 276
LINKTYPES = {LINKTYPE_ETHERNET: "Ethernet", LINKTYPE_RAW: "raw IP",
             LINKTYPE_LINUX_SLL: "Linux cooked (SLL)", LINKTYPE_IPV4: "raw IPv4",
             LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)"}
ETHERTYPE_IPV4, ETHERTYPE_VLAN, ETHERTYPE_QINQ, ETHERTYPE_VLAN_OLD = 0x0800, 0x8100, 0x88A8, 0x9100
IPPROTO_UDP = 17
ETH_HEADER, VLAN_TAG, SLL_HEADER, SLL2_HEADER, IPV4_MIN_HEADER, UDP_HEADER = 14, 4, 16, 20, 20, 8

# frame classes from parse_frame
FRAME_UDP, FRAME_OTHER, FRAME_FRAGMENT, FRAME_CUT = 0, 1, 2, 3

# capture status codes (besides the framing codes of itch_decode and moldudp64)
ERR_MAGIC, ERR_CAPLEN, ERR_BLOCK, ERR_SNAPLEN, ERR_INTERFACE, ERR_TSRESOL = range(48, 54)
CAPTURE_STATUS_TEXT = {
    ERR_TRUNCATED: "capture ends inside a record",
    ERR_MAGIC: "corrupt section header: unknown byte-order magic",
    ERR_CAPLEN: "corrupt captured length",
    ERR_BLOCK: "corrupt pcapng block length",
    ERR_SNAPLEN: "UDP datagram cut short by the capture's snapshot length",
    ERR_INTERFACE: "packet block names an undescribed interface (or too many interfaces)",
    ERR_TSRESOL: "unusable if_tsresol option",
}

# scanner state slots (int64 array carried between calls)
ST_POS, ST_REC, ST_PACKETS, ST_NON_UDP, ST_FRAGMENTS, ST_BIG, ST_NIF = range(7)
N_STATE = 7

_NS = np.uint64(1_000_000_000)
_US = np.uint64(1000)
_UNDEF_TS = np.uint64(R.UNDEF_TIMESTAMP)
_POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)
_MIN_UDP_RECORD = 44     # bytes a stored record takes at least (SPB or pcap header + IPv4 + UDP)
_CHUNK_PACKETS = 1 << 20
_SKIP_CHUNK = 1024


# -- compiled helpers -----------------------------------------------------------------------------

@numba.njit(inline="always")
def _u16(b, p, big):
    return be16(b, p) if big else le16(b, p)


@numba.njit(inline="always")
def _u32(b, p, big):
    return be32(b, p) if big else le32(b, p)


@numba.njit(inline="always")
def _u64(b, p, big):
    """64-bit value stored as one integer in the section's byte order."""
    lo = np.uint64(_u32(b, p + 4 if big else p, big))
    hi = np.uint64(_u32(b, p if big else p + 4, big))
    return (hi << np.uint64(32)) | lo


@numba.njit(cache=True, nogil=True)
def parse_frame(buf, p, end, link):
    """Classify the frame ``buf[p:end]``; for IPv4 UDP find its payload.

    Returns ``(kind, payload_offset, payload_length, dst_ip, dst_port)`` with ``kind`` one of
    ``FRAME_UDP``, ``FRAME_OTHER`` (not IPv4 UDP, malformed, unknown link type),
    ``FRAME_FRAGMENT`` or ``FRAME_CUT`` (the datagram is longer than what was captured).
    """
    if link == LINKTYPE_ETHERNET:
        head, type_at = ETH_HEADER, 12
    elif link == LINKTYPE_LINUX_SLL:
        head, type_at = SLL_HEADER, 14
    elif link == LINKTYPE_LINUX_SLL2:
        head, type_at = SLL2_HEADER, 0
    elif link == LINKTYPE_RAW or link == LINKTYPE_IPV4:
        head, type_at = 0, -1
    else:
        return FRAME_OTHER, 0, 0, 0, 0
    if p + head > end:
        return FRAME_OTHER, 0, 0, 0, 0
    et = be16(buf, p + type_at) if type_at >= 0 else ETHERTYPE_IPV4
    q = p + head
    while link == LINKTYPE_ETHERNET and (et == ETHERTYPE_VLAN or et == ETHERTYPE_QINQ
                                         or et == ETHERTYPE_VLAN_OLD):
        if q + VLAN_TAG > end:
            return FRAME_OTHER, 0, 0, 0, 0
        et = be16(buf, q + 2)
        q += VLAN_TAG
    if et != ETHERTYPE_IPV4 or q + IPV4_MIN_HEADER > end or (buf[q] >> 4) != 4:
        return FRAME_OTHER, 0, 0, 0, 0
    ihl = np.int64(buf[q] & 15) * 4
    total = np.int64(be16(buf, q + 2))
    if ihl < IPV4_MIN_HEADER or total < ihl + UDP_HEADER:
        return FRAME_OTHER, 0, 0, 0, 0
    if (be16(buf, q + 6) & 0x3FFF) != 0:        # more-fragments flag or a fragment offset
        return FRAME_FRAGMENT, 0, 0, 0, 0
    if buf[q + 9] != IPPROTO_UDP:
        return FRAME_OTHER, 0, 0, 0, 0
    if q + total > end:
        return FRAME_CUT, q, end - q, 0, 0
    u = q + ihl
    ulen = np.int64(be16(buf, u + 4))
    if ulen < UDP_HEADER or ulen > total - ihl:
        return FRAME_OTHER, 0, 0, 0, 0
    return FRAME_UDP, u + UDP_HEADER, ulen - UDP_HEADER, be32(buf, q + 16), be16(buf, u + 2)


@numba.njit(cache=True, nogil=True)
def ticks_to_ns(t, tsresol, offset_s):
    """pcapng timestamp ``t`` in units of ``tsresol`` (+ ``offset_s`` seconds) -> UTC ns."""
    if tsresol == TSRESOL_UNKNOWN:
        return _UNDEF_TS
    ei = tsresol & 0x7F
    if tsresol & 0x80:
        e = np.uint64(ei)
        sec = t >> e
        frac = t & ((np.uint64(1) << e) - np.uint64(1))
        if ei > 32:
            frac >>= e - np.uint64(32)
            e = np.uint64(32)
        ns = sec * _NS + ((frac * _NS) >> e)
    elif ei <= 9:
        ns = t * _POW10[9 - ei]
    else:
        ns = t // _POW10[ei - 9]
    return ns + np.uint64(offset_s * 1_000_000_000)


@numba.njit(inline="always")
def _take(buf, p, end, link, ts, rec, k, st, cols):
    """Classify the frame ``buf[p:end]``, store it as packet ``k`` if it is IPv4 UDP.

    ``cols`` is the packet table (offset, length, ts, dst ip, dst port, record); returns the next
    ``k`` and ``ERR_SNAPLEN`` for a datagram cut short, else ``OK``.
    """
    kind, off, ln, ip, port = parse_frame(buf, p, end, link)
    if kind == FRAME_UDP:
        cols[0][k], cols[1][k], cols[2][k] = off, ln, ts
        cols[3][k], cols[4][k], cols[5][k] = ip, port, rec
        return k + 1, OK
    if kind == FRAME_CUT:
        return k, ERR_SNAPLEN
    st[ST_NON_UDP] += 1
    if kind == FRAME_FRAGMENT:
        st[ST_FRAGMENTS] += 1
    return k, OK


@numba.njit(cache=True, nogil=True)
def scan_pcap(buf, st, big, nanos, link, max_caplen, cols, skip, sk):
    """Walk classic pcap records from ``st[ST_POS]`` (after the global header).

    Writes UDP packets to the table ``cols`` (see :func:`_take`) and skips to ``sk`` (offset,
    record, status); updates ``st``. Without ``skip`` the walk stops at the first fault; with
    it, a record-level fault is recorded and stepped over and one that loses record sync ends
    the walk. Returns ``(n_packets, n_skipped, status, fault_pos)``; ``FULL``: call again with
    fresh tables.
    """
    n = buf.shape[0]
    pos, rec = st[ST_POS], st[ST_REC]
    k = ns = 0
    status, fpos = OK, 0
    while pos < n:
        if k >= cols[0].shape[0] or ns >= sk[0].shape[0]:
            status = FULL
            break
        why = OK
        end = pos + PCAP_RECORD_HEADER_LENGTH
        if end > n:
            why = ERR_TRUNCATED
        else:
            incl = np.int64(_u32(buf, pos + 8, big))
            end += incl
            if incl > max_caplen:
                why = ERR_CAPLEN
            elif end > n:
                why = ERR_TRUNCATED
            else:
                st[ST_PACKETS] += 1
                frac = np.uint64(_u32(buf, pos + 4, big))
                ts = np.uint64(_u32(buf, pos, big)) * _NS + (frac if nanos else frac * _US)
                p = pos + PCAP_RECORD_HEADER_LENGTH
                k, why = _take(buf, p, end, link, ts, rec, k, st, cols)
        if why != OK:
            if not skip:
                status, fpos = why, pos
                break
            sk[0][ns], sk[1][ns], sk[2][ns] = pos, rec, why
            ns += 1
            if why != ERR_SNAPLEN:
                pos = n
                break
        pos = end
        rec += 1
    st[ST_POS], st[ST_REC] = pos, rec
    return k, ns, status, fpos


@numba.njit(cache=True, nogil=True)
def _read_idb(buf, pos, blen, big, if_link, if_res, if_off, nif):
    """Register the interface described at ``pos``; returns a status code."""
    if blen < 20 or nif >= if_link.shape[0]:
        return ERR_BLOCK if blen < 20 else ERR_INTERFACE
    res = DEFAULT_TSRESOL
    offs = 0
    o = pos + 16
    oend = pos + blen - 4
    status = OK
    while o + 4 <= oend:
        code = _u16(buf, o, big)
        olen = np.int64(_u16(buf, o + 2, big))
        if code == OPT_ENDOFOPT:
            break
        if o + 4 + olen > oend:
            status = ERR_BLOCK
            break
        if code == OPT_IF_TSRESOL and olen >= 1:
            res = np.int64(buf[o + 4])
            if (res & 0x80) != 0 and (res & 0x7F) > 63 or (res & 0x80) == 0 and res > 19:
                status = ERR_TSRESOL
                res = TSRESOL_UNKNOWN
        elif code == OPT_IF_TSOFFSET and olen >= 8:
            offs = np.int64(_u64(buf, o + 4, big))
        o += 4 + ((olen + 3) & ~3)
    if_link[nif] = _u16(buf, pos + 8, big)
    if_res[nif] = res
    if_off[nif] = offs
    return status


@numba.njit(cache=True, nogil=True)
def scan_pcapng(buf, st, if_link, if_res, if_off, cols, skip, sk):
    """Walk pcapng blocks from ``st[ST_POS]``; same contract as :func:`scan_pcap`.

    The record index is the block index (the first section header is block 0). Interfaces live
    in ``if_*`` (per section; ``st[ST_NIF]`` of them) and the byte order in ``st[ST_BIG]``.
    """
    n = buf.shape[0]
    pos, rec, big, nif = st[ST_POS], st[ST_REC], st[ST_BIG], st[ST_NIF]
    k = ns = 0
    status, fpos = OK, 0
    while pos < n:
        if k >= cols[0].shape[0] or ns >= sk[0].shape[0]:
            status = FULL
            break
        why = OK
        blen = 0
        if pos + PCAPNG_MIN_BLOCK > n:
            why = ERR_TRUNCATED
        else:
            btype = _u32(buf, pos, big)
            if btype == PCAPNG_SHB:
                magic = le32(buf, pos + 8)
                if magic == PCAPNG_BYTE_ORDER_MAGIC:
                    big = 0
                elif magic == 0x4D3C2B1A:
                    big = 1
                else:
                    why = ERR_MAGIC
                nif = 0
            blen = np.int64(_u32(buf, pos + 4, big))
            if why != OK:
                pass
            elif blen < PCAPNG_MIN_BLOCK or blen % 4 != 0:
                why = ERR_BLOCK
            elif pos + blen > n:
                why = ERR_TRUNCATED
            elif _u32(buf, pos + blen - 4, big) != blen:
                why = ERR_BLOCK
            elif btype == PCAPNG_IDB:
                why = _read_idb(buf, pos, blen, big, if_link, if_res, if_off, nif)
                if why == OK or why == ERR_TSRESOL:
                    nif += 1
            elif btype == PCAPNG_EPB or btype == PCAPNG_PB or btype == PCAPNG_SPB:
                st[ST_PACKETS] += 1
                if btype == PCAPNG_SPB:
                    ifid, data = 0, pos + 12
                    caplen = min(np.int64(_u32(buf, pos + 8, big)), blen - 16)
                else:
                    ifid = np.int64(_u32(buf, pos + 8, big) if btype == PCAPNG_EPB
                                    else _u16(buf, pos + 8, big))
                    data = pos + 28
                    caplen = np.int64(_u32(buf, pos + 20, big))
                if data + caplen + 4 > pos + blen:
                    why = ERR_CAPLEN
                elif ifid >= nif:
                    why = ERR_INTERFACE
                else:
                    ts = _UNDEF_TS
                    if btype != PCAPNG_SPB:
                        t = (np.uint64(_u32(buf, pos + 12, big)) << np.uint64(32)) | np.uint64(
                            _u32(buf, pos + 16, big))
                        ts = ticks_to_ns(t, if_res[ifid], if_off[ifid])
                    k, why = _take(buf, data, data + caplen, if_link[ifid], ts, rec, k, st, cols)
        if why != OK:
            if not skip:
                status, fpos = why, pos
                break
            sk[0][ns], sk[1][ns], sk[2][ns] = pos, rec, why
            ns += 1
            if why == ERR_TRUNCATED or why == ERR_MAGIC or why == ERR_BLOCK:
                pos = n
                break
        pos += blen
        rec += 1
    st[ST_POS], st[ST_REC], st[ST_BIG], st[ST_NIF] = pos, rec, big, nif
    return k, ns, status, fpos


# -- Python driver --------------------------------------------------------------------------------

class Channel(NamedTuple):
    """A feed channel: destination IPv4 address, destination UDP port, MoldUDP64 session."""
    ip: str
    port: int
    session: str


@dataclass
class Capture:
    """A capture framed down to ITCH messages.

    ``index`` (:data:`~normalize.itch_decode.MSG_INDEX`, capture order) points into ``buf``.
    ``skipped`` holds ``(byte offset, capture record index, reason)``.
    """
    buf: np.ndarray
    index: np.ndarray
    channels: list[Channel]
    format: str                      # "pcap" or "pcapng"
    n_records: int = 0               # packet records read (pcap records, pcapng packet blocks)
    n_packets: int = 0               # IPv4 UDP datagrams framed as MoldUDP64
    n_non_udp: int = 0               # frames that were not unfragmented IPv4 UDP (fragments too)
    n_fragments: int = 0
    n_heartbeats: int = 0
    end_of_session: bool = False
    eos_sequence: int | None = None
    skipped: list[M.Skip] = field(default_factory=list)

    @property
    def n_messages(self) -> int:
        return int(self.index.shape[0])


def is_capture(first_bytes) -> str | None:
    """``"pcap"``, ``"pcapng"`` or ``None`` from the first (at least 4) bytes of a file."""
    head = bytes(first_bytes[:4])
    if len(head) < 4:
        return None
    if head == PCAPNG_SHB.to_bytes(4, "little"):
        return "pcapng"
    for magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
        if head in (magic.to_bytes(4, "little"), magic.to_bytes(4, "big")):
            return "pcap"
    return None


# a walked capture: packet table columns, scanner state, skips (offset, record, code) and the
# fault that stopped the walk (code, offset, record) or None
_Scan = namedtuple("_Scan", "off length ts ip port rec state skips fault")


def _run_scan(fn, buf, st, head_args, skip) -> _Scan:
    """Call a compiled scanner until the capture is walked, in bounded chunks."""
    parts, skips = [], []
    while True:
        cap = int(min((buf.shape[0] - st[ST_POS]) // _MIN_UDP_RECORD + 1, _CHUNK_PACKETS))
        cols = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.uint64),
                np.empty(cap, np.uint32), np.empty(cap, np.uint16), np.empty(cap, np.int64))
        sk = (np.empty(_SKIP_CHUNK, np.int64), np.empty(_SKIP_CHUNK, np.int64),
              np.empty(_SKIP_CHUNK, np.uint8))
        k, ns, status, fpos = fn(buf, st, *head_args, cols, skip, sk)
        parts.append([c[:k] for c in cols])
        skips += zip(sk[0][:ns].tolist(), sk[1][:ns].tolist(), sk[2][:ns].tolist())
        if status != FULL:
            break
    cols = [np.concatenate([p[j] for p in parts]) for j in range(6)]
    fault = None if status == OK else (int(status), int(fpos), int(st[ST_REC]))
    return _Scan(*cols, st, skips, fault)


def _scan_pcap(buf, path, skip) -> _Scan:
    if buf.shape[0] < PCAP_GLOBAL_HEADER_LENGTH:
        raise TruncatedError(f"pcap global header needs {PCAP_GLOBAL_HEADER_LENGTH} bytes, the "
                             f"capture has {buf.shape[0]}", path=path, offset=0)
    head = buf[:PCAP_GLOBAL_HEADER_LENGTH].tobytes()
    big = head[:4] in (PCAP_MAGIC_US.to_bytes(4, "big"), PCAP_MAGIC_NS.to_bytes(4, "big"))
    order = "big" if big else "little"
    nanos = int.from_bytes(head[:4], order) == PCAP_MAGIC_NS
    major = int.from_bytes(head[4:6], order)
    snaplen = int.from_bytes(head[16:20], order)
    link = int.from_bytes(head[20:24], order) & 0xFFFF     # upper bits: FCS information
    if major != PCAP_VERSION_MAJOR:
        raise DecodeError(f"corrupt pcap global header: version_major {major}, expected "
                          f"{PCAP_VERSION_MAJOR}", path=path, offset=4)
    if link not in LINKTYPES:
        valid = ", ".join(f"{k} ({v})" for k, v in LINKTYPES.items())
        raise DecodeError(f"pcap link type {link} is not supported; use one of {valid}",
                          path=path, offset=20)
    st = np.zeros(N_STATE, np.int64)
    st[ST_POS], st[ST_BIG] = PCAP_GLOBAL_HEADER_LENGTH, big
    max_caplen = max(min(snaplen, 1 << 24), MAX_CAPLEN)
    return _run_scan(scan_pcap, buf, st, (big, nanos, link, max_caplen), skip)


def _scan_pcapng(buf, path, skip) -> _Scan:
    st = np.zeros(N_STATE, np.int64)
    ifs = (np.zeros(MAX_INTERFACES, np.int64), np.zeros(MAX_INTERFACES, np.int64),
           np.zeros(MAX_INTERFACES, np.int64))
    return _run_scan(scan_pcapng, buf, st, ifs, skip)


def _channels(buf, off, length, ip, port, path):
    """Channel number per packet and the channel table, by first appearance (vectorized)."""
    n = off.shape[0]
    if n == 0:
        return np.zeros(0, np.uint16), []
    key = np.zeros((n, 16), np.uint8)
    key[:, 0:4] = ip.astype(">u4").view(np.uint8).reshape(n, 4)
    key[:, 4:6] = port.astype(">u2").view(np.uint8).reshape(n, 2)
    span = off[:, None] + np.arange(M.SESSION_LENGTH)
    ok = (length >= M.SESSION_LENGTH)[:, None]
    key[:, 6:] = np.where(ok, buf[np.where(ok, span, 0)], 0)
    uniq, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    if order.shape[0] > np.iinfo(np.uint16).max + 1:
        raise DecodeError(f"capture has {order.shape[0]} channels; at most 65536 are supported",
                          path=path)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    table = []
    for u in uniq[order]:
        ses = bytes(u[6:]).decode("ascii", "replace").rstrip("\x00 ")
        table.append(Channel(".".join(str(int(b)) for b in u[:4]), int(u[4]) << 8 | int(u[5]), ses))
    return rank[inverse.reshape(-1)].astype(np.uint16), table


def _scan_reason(code: int, fmt: str, buf, pos: int, big: int) -> str:
    """Text for a scanner status at ``buf[pos]``, with the numbers for faults that end the walk."""
    text = CAPTURE_STATUS_TEXT.get(code, f"capture status {code}")
    n, order = buf.shape[0], ("big" if big else "little")

    def u32(p):
        return int.from_bytes(buf[p:p + 4].tobytes(), order)
    if code == ERR_TRUNCATED:
        head = PCAP_RECORD_HEADER_LENGTH if fmt == "pcap" else PCAPNG_MIN_BLOCK
        need = head if n - pos < head else (head + u32(pos + 8) if fmt == "pcap" else u32(pos + 4))
        return f"{text}: {n - pos} bytes remain of the {need} it needs"
    if code == ERR_CAPLEN and fmt == "pcap":
        text = f"{text} {u32(pos + 8)}, more than any snapshot length"
    elif code == ERR_BLOCK:
        text = f"{text} {u32(pos + 4)} (a multiple of 4, at least 12, repeated at the end)"
    elif code != ERR_MAGIC:
        return text
    return f"{text}; record sync is lost, the rest was not read"


def read_capture(data, *, path: str = "<buffer>", errors: str = "raise") -> Capture:
    """Read a pcap or pcapng capture of MoldUDP64 / ITCH 5.0 multicast into a message index.

    ``data`` is bytes, a memoryview or a ``uint8`` array (kept, not copied, as ``Capture.buf``).
    ``errors="raise"`` raises :class:`~tickpipe.errors.DecodeError` (``TruncatedError`` for a
    record past the end) naming ``path``, the byte offset, the capture record (``.index``) and
    the sequence number where known; ``.partial`` holds the :class:`Capture` of everything
    before the fault. ``errors="skip"`` steps over bad records, packets and messages, lists them
    in ``skipped`` and warns with :class:`~tickpipe.errors.DecodeWarning`. Thread-safe.
    """
    skip = M.check_errors(errors)
    buf = M.as_uint8(data)
    fmt = is_capture(buf[:4].tobytes())
    if fmt is None:
        raise DecodeError(f"not a pcap or pcapng capture: first bytes {buf[:4].tobytes().hex()}, "
                          f"expected a pcap magic (a1b2c3d4 or a1b23c4d, either byte order) or a "
                          f"pcapng section header (0a0d0d0a)", path=path, offset=0)
    sc = (_scan_pcap if fmt == "pcap" else _scan_pcapng)(buf, path, skip)
    chan, table = _channels(buf, sc.off, sc.length, sc.ip, sc.port, path)
    fr = M.frame_arrays(buf, sc.off, sc.length, sc.ts, chan, skip)
    big = int(sc.state[ST_BIG])
    skipped = [M.Skip(o, r, _scan_reason(c, fmt, buf, o, big)) for o, r, c in sc.skips]
    skipped += [M.Skip(o, int(sc.rec[pk]), why)
                for o, pk, why in M.skip_reasons(fr, buf, sc.off, sc.length)]
    skipped.sort(key=lambda s: s.offset)
    eos = int(fr.tally[M.T_END_OF_SESSION]) > 0
    st = sc.state
    cap = Capture(buf, fr.index, table, fmt, int(st[ST_PACKETS]), int(sc.off.shape[0]),
                  int(st[ST_NON_UDP]), int(st[ST_FRAGMENTS]), int(fr.tally[M.T_HEARTBEATS]), eos,
                  int(fr.tally[M.T_EOS_SEQUENCE]) if eos else None, skipped)
    if fr.fault is not None:
        code, pos, pk, seq = fr.fault
        rec = int(sc.rec[pk])
        reason = f"capture record {rec}: " + M.describe(code, buf, pos, int(sc.off[pk]),
                                                        int(sc.length[pk]))
        _raise(DecodeError, reason, path, pos, rec, seq, cap)
    if sc.fault is not None:
        code, pos, rec = sc.fault
        cls = TruncatedError if code == ERR_TRUNCATED else DecodeError
        _raise(cls, f"capture record {rec}: " + _scan_reason(code, fmt, buf, pos, big),
               path, pos, rec, None, cap)
    if skipped:
        M.warn_skipped(path, skipped, "records, packets or messages", stacklevel=3)
    return cap


def _raise(cls, reason, path, offset, index, sequence, partial):
    err = cls(reason, path=path, offset=offset, sequence=sequence, partial=partial)
    err.index = index
    raise err


# -- writer ---------------------------------------------------------------------------------------

# One classic pcap record header (little-endian) and the Ethernet / IPv4 / UDP headers in front of
# each MoldUDP64 payload written by write_pcap (network fields big-endian).
PCAP_UDP_RECORD = np.dtype([
    ("ts_sec", "<u4"), ("ts_frac", "<u4"), ("incl_len", "<u4"), ("orig_len", "<u4"),
    ("eth_dst", "u1", (6,)), ("eth_src", "u1", (6,)), ("ethertype", ">u2"),
    ("ip_ver_ihl", "u1"), ("ip_tos", "u1"), ("ip_total_length", ">u2"), ("ip_id", ">u2"),
    ("ip_flags_frag", ">u2"), ("ip_ttl", "u1"), ("ip_protocol", "u1"), ("ip_checksum", ">u2"),
    ("ip_src", ">u4"), ("ip_dst", ">u4"),
    ("udp_src_port", ">u2"), ("udp_dst_port", ">u2"), ("udp_length", ">u2"),
    ("udp_checksum", ">u2"),
])
_FRAME_HEADER = ETH_HEADER + IPV4_MIN_HEADER + UDP_HEADER            # 42
_IP_AT = PCAP_RECORD_HEADER_LENGTH + ETH_HEADER                      # IPv4 header offset: 30
_WRITE_CHUNK = 1 << 16          # packets per vectorized chunk (bounded memory)
_MAX_TS_NS = (1 << 32) * 1_000_000_000 - 1
_MAC_SRC = (0x02, 0, 0, 0, 0, 0x01)
_MAC_UNICAST_DST = (0x02, 0, 0, 0, 0, 0x02)


def _ipv4(addr, name: str) -> tuple[int, int]:
    import socket
    try:
        ip, port = addr
        packed = socket.inet_aton(ip)
    except (TypeError, ValueError, OSError):
        raise ValueError(f"The `{name}` must be an (IPv4 address, port) pair, was {addr!r}.")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"The `{name}` port must be in 0..65535, was {port!r}.")
    return int.from_bytes(packed, "big"), int(port)


def ipv4_checksum(headers: np.ndarray) -> np.ndarray:
    """Internet checksum of each row of ``headers`` (``uint8``, n x 20, checksum field zero)."""
    h = headers.astype(np.uint32)
    s = ((h[:, 0::2] << 8) | h[:, 1::2]).sum(axis=1)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF).astype(np.uint16)


def write_pcap(path_or_file, packets, *, ts_ns=None, src=("10.0.0.1", 40000),
               dst=("233.54.12.111", 26477), nanosecond=True) -> int:
    """Write MoldUDP64 packets as a classic pcap of Ethernet / IPv4 / UDP frames.

    ``packets`` are UDP payloads (bytes each). ``ts_ns`` is the capture time in UTC ns: ``None``
    (all 0), one integer for every packet, or one per packet. ``nanosecond`` picks the
    nanosecond magic (else microseconds, truncated). IPv4 lengths, identification (packet index
    mod 65536) and header checksum are filled in; the UDP checksum is 0 (none, valid for IPv4).
    The Ethernet destination is the group's multicast MAC when ``dst`` is multicast. Headers are
    built with numpy in chunks. Returns the number of bytes written.
    """
    n = len(packets)
    src_ip, src_port = _ipv4(src, "src")
    dst_ip, dst_port = _ipv4(dst, "dst")
    lengths = np.fromiter(map(len, packets), np.int64, n)
    if n and lengths.max() > 0xFFFF - IPV4_MIN_HEADER - UDP_HEADER:
        k = int(np.argmax(lengths))
        raise ValueError(f"The `packets[{k}]` is {int(lengths[k])} bytes; a UDP payload in IPv4 "
                         f"holds at most {0xFFFF - IPV4_MIN_HEADER - UDP_HEADER}.")
    ts = np.zeros(n, np.uint64) if ts_ns is None else np.asarray(ts_ns)
    if ts.ndim == 0:
        ts = np.full(n, ts)
    if ts.shape != (n,):
        raise ValueError(f"The `ts_ns` must be None, one integer or one per packet ({n}), had "
                         f"shape {ts.shape}.")
    if n and (ts.min() < 0 or ts.max() > _MAX_TS_NS):
        raise ValueError(f"The `ts_ns` must be in [0, {_MAX_TS_NS}] (u32 seconds), had "
                         f"[{int(ts.min())}, {int(ts.max())}].")
    ts = ts.astype(np.uint64)
    if dst_ip >> 28 == 0xE:                                    # 224.0.0.0/4: 01:00:5e + 23 bits
        mac_dst = (0x01, 0x00, 0x5E, (dst_ip >> 16) & 0x7F, (dst_ip >> 8) & 0xFF, dst_ip & 0xFF)
    else:
        mac_dst = _MAC_UNICAST_DST
    magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
    out_head = np.array([magic], "<u4").tobytes() + np.array(
        [PCAP_VERSION_MAJOR, 4], "<u2").tobytes() + np.array(
        [0, 0, MAX_CAPLEN, LINKTYPE_ETHERNET], "<u4").tobytes()
    own = not hasattr(path_or_file, "write")
    f = open(path_or_file, "wb") if own else path_or_file
    try:
        f.write(out_head)
        written = len(out_head)
        for c0 in range(0, n, _WRITE_CHUNK):
            c1 = min(c0 + _WRITE_CHUNK, n)
            ln = lengths[c0:c1]
            t = ts[c0:c1]
            h = np.zeros(c1 - c0, PCAP_UDP_RECORD)
            h["ts_sec"] = t // np.uint64(1_000_000_000)
            frac = t % np.uint64(1_000_000_000)
            h["ts_frac"] = frac if nanosecond else frac // np.uint64(1000)
            h["incl_len"] = h["orig_len"] = ln + _FRAME_HEADER
            h["eth_dst"], h["eth_src"], h["ethertype"] = mac_dst, _MAC_SRC, ETHERTYPE_IPV4
            h["ip_ver_ihl"] = 0x45
            h["ip_total_length"] = ln + IPV4_MIN_HEADER + UDP_HEADER
            h["ip_id"] = np.arange(c0, c1) & 0xFFFF
            h["ip_flags_frag"] = 0x4000                           # don't fragment
            h["ip_ttl"], h["ip_protocol"] = 64, IPPROTO_UDP
            h["ip_src"], h["ip_dst"] = src_ip, dst_ip
            h["udp_src_port"], h["udp_dst_port"] = src_port, dst_port
            h["udp_length"] = ln + UDP_HEADER
            raw = h.view(np.uint8).reshape(c1 - c0, PCAP_UDP_RECORD.itemsize)
            h["ip_checksum"] = ipv4_checksum(raw[:, _IP_AT:_IP_AT + IPV4_MIN_HEADER])
            # interleave record headers and payloads: header bytes by index, payloads by mask
            size = PCAP_UDP_RECORD.itemsize
            rec_at = np.arange(c1 - c0) * size + np.concatenate([[0], np.cumsum(ln)[:-1]])
            buf = np.empty(int(ln.sum()) + (c1 - c0) * size, np.uint8)
            at = (rec_at[:, None] + np.arange(size)).reshape(-1)
            buf[at] = raw.reshape(-1)
            body = np.ones(buf.shape[0], bool)
            body[at] = False
            buf[body] = np.frombuffer(b"".join(packets[c0:c1]), np.uint8)
            f.write(buf.data)
            written += buf.shape[0]
    finally:
        if own:
            f.close()
    return written
