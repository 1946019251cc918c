"""Run under NUMBA_ENABLE_CUDASIM=1 by test_book_gpu.py: GPU book vs CPU book, row for row."""

import sys

import pyarrow as pa

import normalize
from ingest.simulator import generate_session
from kernels.book import BookBuilder, reconstruct

s = generate_session(int(sys.argv[1]), int(sys.argv[2]), seed=int(sys.argv[3]))
mbo = normalize.read_itch(s.to_binaryfile(), date=s.date, resolve=False)["mbo"]
cpu = BookBuilder(levels=3).apply(mbo)
gpu = reconstruct(mbo, levels=3, device="gpu")
assert gpu.num_rows == cpu.num_rows
for name in cpu.column_names:
    if not gpu.column(name).equals(cpu.column(name)):
        print(f"MISMATCH {name}")
        sys.exit(1)
print("AGREE", cpu.num_rows)
