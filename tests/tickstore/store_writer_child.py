"""A tick store writer for the crash and concurrency tests: appends 500-row batches numbered
from where the store is, and after each append returns writes the batch's number to the log
(so the log lists only batches whose commit finished). With ``compact_every`` > 0 it compacts
the store after every that many appends. Killed by the test at a random moment, or at its end."""

import sys

import numpy as np
import pyarrow as pa

sys.path.insert(0, ".")
from tests.tickstore.test_store import mbo  # noqa: E402
from tickstore.store import TickStore  # noqa: E402

root, log, round_ = sys.argv[1], sys.argv[2], int(sys.argv[3])
compact_every = int(sys.argv[4]) if len(sys.argv) > 4 else 0
with TickStore(root, slot="4h") as s:
    seq = s.read("mbo", columns=["sequence"]).column("sequence").to_numpy()
    b = int(seq.max() // 10**6) + 1 if seq.size else 1
    k = 0
    while True:
        t = mbo(500, seed=b, days=2)
        t = t.set_column(t.schema.get_field_index("sequence"), "sequence",
                         pa.array(b * 10**6 + np.arange(500, dtype=np.uint64)))
        s.append("mbo", t)
        with open(log, "a") as f:
            f.write(f"{b}\n")
        b += 1
        k += 1
        if compact_every and k % compact_every == 0:
            s.compact("mbo")
