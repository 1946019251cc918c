"""bench/gpu.py runs end to end under Numba's CUDA simulator (small input) and keeps
bench/RESULTS.md's other sections when it writes its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402


def test_bench_gpu_runs_under_the_simulator_and_checks_the_gpu_against_the_cpu():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--events", "2000",
                           "--instruments", "4", "--repeats", "1", "--no-results",
                           "--garch-instruments", "3", "--garch-length", "60"],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "CUDA simulator" in out
    assert "GPU book equals it" in out and "GPU bars equal them" in out
    assert "GPU fits equal them" in out
    assert "CHECK FAILED" not in out


def test_bench_gpu_without_a_device_says_so_and_exits_0():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--events", "100"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout


def test_results_section_replaces_the_previous_one_and_keeps_the_rest(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks: results\n\nintro\n\n## Decode\n\ndecode table\n")
    gpu.write_results(gpu.SECTION + " — first\n\nold figures\n", path)
    gpu.write_results(gpu.SECTION + " — second\n\nnew figures\n", path)
    text = path.read_text()
    assert text.count(gpu.SECTION) == 1 and "new figures" in text and "old figures" not in text
    assert text.index(gpu.SECTION) < text.index("## Decode") and "decode table" in text
