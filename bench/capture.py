"""Sustained live-capture benchmark on loopback multicast (issue 3).

The simulator runs in its own process (``tickpipe simulate --input``) and sends a cached
session on lines A and B at a ladder of message rates; this process captures with
``ingest.capture.Capture`` (journal, and optionally normalized Parquet). A rate passes when every
message is delivered with no gap declared and nothing re-requested. The table reports, per rate,
what was delivered, the capture's own rate while the feed flowed, and the journal's write rate
and compression ratio.

    .venv/bin/python bench/capture.py [--size quick|full] [--parquet] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from ingest.capture import Capture  # noqa: E402

SIZES = {"quick": (300_000, [250_000, 1_000_000]),
         "full": (6_000_000, [1_000_000, 1_500_000, 2_000_000, 2_500_000, 3_000_000])}


def session_file(n: int) -> Path:
    from ingest.simulator import generate_session
    path = BENCH_DIR / "out" / f"capture_n{n}_i100_s11.bin"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(generate_session(n, 100, seed=11).to_binaryfile())
        tmp.rename(path)
    return path


def run_rate(path: Path, n: int, rate: float, parquet: bool, rcvbuf: int, port: int) -> dict:
    out = BENCH_DIR / "out" / "capture-run"
    shutil.rmtree(out, ignore_errors=True)
    a, b, rr = f"239.192.9.1:{port}", f"239.192.9.2:{port + 1}", f"127.0.0.1:{port + 2}"
    cap = Capture(a, b, rerequest=rr, out=out, decode_date="2024-03-15" if parquet else None,
                  rcvbuf=rcvbuf)
    sim = subprocess.Popen([sys.executable, "-m", "tickpipe.cli", "simulate", "--input", str(path),
                            "--rate", str(rate), "--line-a", a, "--line-b", b, "--rerequest", rr,
                            "--delay", "0.5", "--linger", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    st = cap.run(timeout=120, idle_timeout=5)
    sim_out = sim.communicate(timeout=60)[0]
    import re
    m = re.search(r"\(([0-9.]+) M msg/s\)", sim_out)
    sent_rate = float(m.group(1)) * 1e6 if m else 0.0
    jbytes = sum(f.stat().st_size for f in (out / n for n in ("journal.bin", "index.bin") if (out / n).exists()))
    raw = st.accepted * 20 + path.stat().st_size  # MoldUDP64 headers + message blocks
    ok = st.end_of_session and not st.gaps_declared and st.recovered_messages == 0 and st.messages == n
    return {"rate": rate, "sent_msgs_per_s": sent_rate, "delivered": st.messages, "of": n, "recovered": st.recovered_messages,
            "lost": st.messages_lost, "eos": st.end_of_session, "zero_loss": ok,
            "capture_msgs_per_s": st.msgs_per_s, "packets_per_s": st.accepted / st.active_seconds if st.active_seconds else 0.0,
            "active_s": st.active_seconds, "journal_bytes": jbytes, "raw_bytes": raw,
            "journal_mb_per_s": raw / 1e6 / st.active_seconds if st.active_seconds else 0.0,
            "compression": raw / jbytes if jbytes else 0.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="quick")
    ap.add_argument("--parquet", action="store_true", help="also decode to normalized Parquet")
    ap.add_argument("--rcvbuf", type=int, default=64 << 20, help="receive buffer per line (bytes)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    n, rates = SIZES[args.size]
    path = session_file(n)
    from normalize.summary import summarize
    n = summarize(path).messages            # the generator's count is approximate
    print(f"tickpipe capture benchmark  {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  {n:,} messages, "
          f"lines A and B on loopback multicast, simulator in its own process, "
          f"receive buffer {args.rcvbuf >> 20} MiB per line, {'journal + Parquet' if args.parquet else 'journal'}")
    rows = []
    for k, rate in enumerate(rates):
        r = run_rate(path, n, rate, args.parquet, args.rcvbuf, 33100 + 10 * k)
        rows.append(r)
        print(f"  {rate / 1e6:4.2f} M msg/s offered: delivered {r['delivered']:,}/{n:,}, "
              f"recovered {r['recovered']:,}, lost {r['lost']:,}, capture {r['capture_msgs_per_s'] / 1e6:.2f} M msg/s "
              f"-> {'zero loss' if r['zero_loss'] else 'LOSS'}", flush=True)
    best = max((r["sent_msgs_per_s"] for r in rows if r["zero_loss"]), default=0.0)
    hdr = ["offered M msg/s", "sent M msg/s", "delivered", "recovered", "lost", "capture M msg/s", "packets/s",
           "journal MB/s", "compression", "zero loss"]
    table = [[f"{r['rate'] / 1e6:.2f}", f"{r['sent_msgs_per_s'] / 1e6:.2f}", f"{r['delivered']:,}", f"{r['recovered']:,}", f"{r['lost']:,}",
              f"{r['capture_msgs_per_s'] / 1e6:.2f}", f"{r['packets_per_s']:,.0f}",
              f"{r['journal_mb_per_s']:.1f}", f"{r['compression']:.2f}x", "yes" if r["zero_loss"] else "no"]
             for r in rows]
    w = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(hdr)]
    print("  ".join(h.rjust(x) for h, x in zip(hdr, w)))
    print("  ".join("-" * x for x in w))
    for t in table:
        print("  ".join(c.rjust(x) for c, x in zip(t, w)))
    print(f"highest rate sent with zero loss after arbitration: {best / 1e6:.2f} M msg/s (target 2.00)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"size": args.size, "messages": n, "rows": rows,
                                         "best_zero_loss_rate": best}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
