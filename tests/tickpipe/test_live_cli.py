"""tickpipe simulate and tickpipe capture as separate processes, as an operator runs them."""

import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

import ingest
import normalize
from ingest.simulator import generate_session

A, B, RR = "239.78.0.1:34101", "239.78.0.2:34102", "127.0.0.1:34103"


def test_simulate_and_capture_processes_deliver_the_session_with_journal_and_parquet(tmp_path):
    out = tmp_path / "cap"
    cap = subprocess.Popen([sys.executable, "-m", "tickpipe.cli", "capture", "--line-a", A, "--line-b", B,
                            "--rerequest", RR, "--out", str(out), "--idle-timeout", "10"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    sim = subprocess.run([sys.executable, "-m", "tickpipe.cli", "simulate", "--line-a", A, "--line-b", B,
                          "--rerequest", RR, "--messages", "50000", "--instruments", "20", "--seed", "4",
                          "--rate", "500000", "--loss-a", "0.02", "--loss-b", "0.02", "--lose-both", "2",
                          "--delay", "0.2", "--linger", "2"], capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    stdout, stderr = cap.communicate(timeout=120)
    assert cap.returncode == 0, stderr
    assert "declared lost 0 messages" in stdout and "end of session seen" in stdout
    truth = normalize.read_itch(generate_session(50000, 20, seed=4).to_binaryfile(), date="2024-03-15")
    got = pq.read_table(out / "mbo.parquet")
    for c in ("sequence", "order_id", "price", "size", "action"):
        assert got.column(c).equals(truth["mbo"].column(c)), c
    assert ingest.verify(out).ok and ingest.read_gaps(out) == []
    assert sum(1 for _ in ingest.read_journal(out)) > 0
    v = subprocess.run([sys.executable, "-m", "tickpipe.cli", "journal", "verify", str(out)],
                       capture_output=True, text=True)
    assert v.returncode == 0 and "OK" in v.stdout


def test_capture_stops_cleanly_on_sigint_and_keeps_what_it_journaled(tmp_path):
    out = tmp_path / "cap"
    cap = subprocess.Popen([sys.executable, "-m", "tickpipe.cli", "capture", "--line-a", "239.78.0.3:34111",
                            "--line-b", "239.78.0.4:34112", "--rerequest", "", "--out", str(out)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    cap.send_signal(signal.SIGINT)
    stdout, stderr = cap.communicate(timeout=30)
    assert "interrupted" in stderr and "end of session NOT seen" in stdout
    assert ingest.verify(out).ok
