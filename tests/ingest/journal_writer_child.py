"""Writer processes for the journal crash test: each appends to a journal until it is killed.

Usage: ``python journal_writer_child.py JOURNAL_DIR PACKETS_FILE``

The process started by the test imports the journal once and loads the packets, then serves:
for each line ``SEED`` on stdin it forks a writer, prints ``child <pid>``, waits for that writer
to die and prints ``dead <signal number>``. (Forking spares each writer the half second of
importing numba, so the test can kill many.) The test sends ``SIGKILL`` to the writer, never to
this server.

A writer reopens the journal, prints ``ready <next_seq> <cut offset or -1>`` (where its reopen
cut a torn tail) and resumes at the first packet at or past ``JournalWriter.next_seq``. Packets
whose index is ``SKIP - 1`` modulo ``SKIP`` are declared as gaps instead; it flushes only right
after a packet, so a gap and the packet after it land in the same block. After every
``flush()`` returns it prints ``<block number> <sha-256 hex>``: the blocks reported written.
``PACKETS_FILE`` holds MoldUDP64 packets as ``[u16 big-endian length][packet]``, in sequence
order.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ingest.journal import JournalWriter  # noqa: E402
from ingest.moldudp64 import message_count, sequence  # noqa: E402

SKIP = 37


def load_packets(path) -> list[bytes]:
    buf = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(buf):
        (n,) = struct.unpack_from(">H", buf, pos)
        out.append(buf[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out


def say(line: str) -> None:
    """One ``write`` per line: lines from the server and its writer share the pipe."""
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def write(directory: str, packets: list[bytes], seqs: list[int], seed: int) -> None:
    rng = random.Random(seed)
    w = JournalWriter(directory, block_bytes=1 << 24)
    nxt = w.next_seq
    cut = w.recovered.offset if w.recovered is not None else -1
    i = next((k for k, s in enumerate(seqs) if s >= nxt), len(packets))
    say(f"ready {nxt} {cut}")
    while i < len(packets):
        batch = rng.choice((1, 2, 5, 20, 100))     # packets per block: small and large writes
        k, last_was_packet = 0, False
        while k < batch and i < len(packets):
            if i % SKIP == SKIP - 1:
                w.append_gap(seqs[i], message_count(packets[i]), time.time_ns())
                last_was_packet = False
            else:
                w.append(seqs[i], time.time_ns(), packets[i])
                k, last_was_packet = k + 1, True
            i += 1
        if last_was_packet:                         # flush only right after a packet
            block = w.flush()
            say(f"{block} {w.head[1]}")
            time.sleep(rng.uniform(0.0, 0.001))     # waiting for the next packets
    say("exhausted")
    time.sleep(60)


def serve(directory: str, packets_file: str) -> None:
    packets = load_packets(packets_file)
    seqs = [sequence(p) for p in packets]
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                write(directory, packets, seqs, int(line))
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        say(f"child {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"dead {os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    serve(sys.argv[1], sys.argv[2])
