"""Shared pieces of the benchmarks: sizes, the cached input session, timing and machine info.

The input is a generated ITCH 5.0 session (``ingest.simulator.generate_session``) written as a
NASDAQ BinaryFILE (``u16`` big-endian length, then the message). It is cached under
``bench/out/`` keyed by message count, instrument count and seed, and regenerated when missing.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

BENCH_DIR = REPO / "bench"
OUT_DIR = BENCH_DIR / "out"
SESSION_DATE = "2024-03-15"     # the generator's default date; the decoder needs one for buffers
MB = 1_000_000                  # MB/s in the table are decimal megabytes per second


@dataclass(frozen=True)
class Size:
    """One benchmark size: the generated session and how much of it the slow parsers see."""

    name: str
    n_messages: int
    n_instruments: int
    itchfeed_messages: int      # pure-Python itchfeed parses only this prefix
    repeats: int                # timed runs per benchmark (the table shows the median)


SIZES = {
    "quick": Size("quick", 300_000, 200, 30_000, 5),
    "full": Size("full", 5_000_000, 1000, 200_000, 5),
}


# ---------------------------------------------------------------------------------------------
# input

def session_path(n_messages: int, n_instruments: int, seed: int, out_dir: Path = OUT_DIR) -> Path:
    return out_dir / f"itch50_n{n_messages}_i{n_instruments}_s{seed}.bin"


def session_bytes(n_messages: int, n_instruments: int, seed: int = 7,
                  out_dir: Path = OUT_DIR) -> tuple[bytes, Path, bool]:
    """The BinaryFILE bytes of a generated session, from the cache when present.

    Returns ``(data, path, generated)``. The cache file is written atomically (temporary name,
    then rename), so an interrupted run never leaves a truncated input behind.
    """
    path = session_path(n_messages, n_instruments, seed, out_dir)
    if path.exists():
        return path.read_bytes(), path, False
    from ingest.simulator import generate_session
    data = generate_session(n_messages, n_instruments, seed=seed, date=SESSION_DATE).to_binaryfile()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data, path, True


def itchcpp_books(data: bytes, n_instruments: int):
    """itchcpp's ``BookManager`` over a generated session's bytes, every symbol tracked: the peer
    of tickpipe's book (``bench/run.py`` row ``itchcpp_book``, ``bench/test_bench_decode.py``)."""
    from itchcpp.book import BookManager
    from ingest.simulator import _symbols
    bm = BookManager()
    for sym in _symbols(n_instruments):
        bm.track_symbol(sym)
    bm.process_stream(data)
    return bm


def message_ends(data: bytes) -> np.ndarray:
    """Byte offset just past each message of a BinaryFILE buffer (framed by tickpipe, checked)."""
    from normalize import itch_decode as D
    from normalize.itch_spec import MESSAGE_LENGTH
    buf = np.frombuffer(data, np.uint8)
    cap = buf.shape[0] // 3 + 1                 # the shortest unit is 2 + 1 bytes
    offsets = np.empty(cap, np.int64)
    types = np.empty(cap, np.uint8)
    counts = np.zeros(256, np.int64)
    n, pos, status, fault, _ = D.frame_binaryfile(
        buf, 0, buf.shape[0], MESSAGE_LENGTH, offsets, types, counts, False,
        np.empty(1, np.int64), np.empty(1, np.uint8), np.empty(0, np.int64))
    if status != D.OK or pos != buf.shape[0]:
        raise RuntimeError(f"the benchmark input does not frame cleanly: status {status} at byte {fault}")
    lengths = (buf[offsets[:n] - 2].astype(np.int64) << 8) | buf[offsets[:n] - 1]
    return offsets[:n] + lengths


# ---------------------------------------------------------------------------------------------
# timing

@dataclass
class Timing:
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


def measure(fn, repeats: int, warmup: int = 1) -> tuple[Timing, object]:
    """Run ``fn`` ``warmup`` times untimed (numba loads or compiles there), then ``repeats`` timed.

    Returns the timings and the result of the last call (for checking what was produced).
    """
    result = None
    for _ in range(warmup):
        result = fn()
    t = Timing()
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        t.times.append(time.perf_counter() - t0)
    return t, result


# ---------------------------------------------------------------------------------------------
# machine

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": round(mem_kb / 2**20, 1),
        "load_avg": [round(x, 2) for x in load],
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": _version("numba"),
        "pyarrow": _version("pyarrow"),
        "itchcpp": _version("itchcpp"),
        "itchfeed": _version("itchfeed"),
        "git": commit + (" (working tree modified)" if dirty else ""),
    }
