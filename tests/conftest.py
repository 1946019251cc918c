"""Shared test setup.

``itchfeed`` (module ``itch``) is the independent reference parser in the agreement tests. Its
optional C++ backend (``itchcpp``) is chosen at import time unless ``ITCH_NO_CPP`` is set, so the
variable is set here, before any test module imports ``itch``, to exercise the pure-Python reader.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("ITCH_NO_CPP", "1")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:          # `import strategies` from any test folder
    sys.path.insert(0, str(TESTS))
# tests/normalize and tests/ingest have no __init__.py, so with tests/ on sys.path (pytest puts
# it there for this conftest) a bare `pytest` run would import them as namespace packages
# named `normalize` and `ingest`. The project root first makes the real packages win.
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
