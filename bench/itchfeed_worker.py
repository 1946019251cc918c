"""Times the pure-Python itchfeed parser; run by ``bench/run.py`` in a fresh process.

``itchfeed`` switches to the ``itchcpp`` backend at import unless ``ITCH_NO_CPP`` is set, so
this process sets it before importing ``itch`` and checks that the pure-Python parser is the one
in use. Usage::

    python bench/itchfeed_worker.py PATH NBYTES REPEATS

parses the first ``NBYTES`` of the BinaryFILE at ``PATH`` (a whole number of messages) and
prints one JSON object: ``{"messages": ..., "bytes": ..., "times": [...]}``.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

os.environ["ITCH_NO_CPP"] = "1"

import itch  # noqa: E402
from itch.parser import MessageParser  # noqa: E402


def main(argv: list[str]) -> int:
    path, nbytes, repeats = argv[0], int(argv[1]), int(argv[2])
    if itch.USING_CPP_BACKEND or MessageParser.__module__ != "itch.parser":
        print(json.dumps({"error": f"itchfeed did not use its pure-Python parser "
                                   f"({MessageParser.__module__})"}))
        return 1
    with open(path, "rb") as f:
        data = f.read(nbytes)
    n = sum(1 for _ in MessageParser().parse_stream(data))     # warm-up and count
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        collections.deque(MessageParser().parse_stream(data), maxlen=0)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"messages": n, "bytes": len(data), "times": times,
                      "version": getattr(itch, "__version__", "unknown")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
