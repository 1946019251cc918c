"""Run under NUMBA_ENABLE_CUDASIM=1 by test_book_gpu.py: GPU book vs CPU book, row for row."""

import sys

import pyarrow as pa

import normalize
from ingest.simulator import generate_session
from kernels.book import BookBuilder, book_report, reconstruct

s = generate_session(int(sys.argv[1]), int(sys.argv[2]), seed=int(sys.argv[3]))
mbo = normalize.read_itch(s.to_binaryfile(), date=s.date, resolve=False)["mbo"]
# every seventh event an hour late: the late-event counts must agree too
ts = mbo.column("ts_event").cast(pa.int64()).to_numpy().copy()
ts[5::7] -= 3_600 * 10**9
k = mbo.schema.get_field_index("ts_event")
mbo = mbo.set_column(k, mbo.schema.field(k), pa.array(ts).cast(mbo.schema.field(k).type))
b = BookBuilder(levels=3)
cpu = b.apply(mbo)
gpu = reconstruct(mbo, levels=3, device="gpu")
rep = book_report(gpu)
for f in ("events", "unknown", "applied_unknown", "crossed", "inconsistent", "late"):
    if getattr(rep, f) != getattr(b.report, f):
        print(f"MISMATCH report {f}: gpu {getattr(rep, f)} cpu {getattr(b.report, f)}")
        sys.exit(1)
if b.report.late == 0:
    print("MISMATCH: no late events to compare")
    sys.exit(1)
assert gpu.num_rows == cpu.num_rows
for name in cpu.column_names:
    if not gpu.column(name).equals(cpu.column(name)):
        print(f"MISMATCH {name}")
        sys.exit(1)
print("AGREE", cpu.num_rows)
