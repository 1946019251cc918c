"""Table-for-table agreement of a GPU path with the CPU, for the child scripts that run under
the CUDA simulator (features_gpu_child.py, forecast_gpu_child.py): ``AGREE <case> <rows>`` on
success, ``MISMATCH ...`` and exit 1 at the first difference."""

import sys

import numpy as np
import pyarrow as pa


def fail(msg: str) -> None:
    print(f"MISMATCH {msg}")
    sys.exit(1)


def same_floats(case: str, name: str, w: np.ndarray, g: np.ndarray, rtol: float) -> None:
    """NaN in the same places; the other values equal (``rtol`` 0) or within ``rtol``."""
    nan = np.isnan(w)
    if not np.array_equal(nan, np.isnan(g)):
        fail(f"{case}: {name}: NaN in other places")
    if rtol == 0.0:
        ok = np.array_equal(w[~nan], g[~nan])
    else:
        ok = np.allclose(w[~nan], g[~nan], rtol=rtol, atol=0.0)
    if not ok:
        k = int(np.flatnonzero(w[~nan] != g[~nan])[0])
        fail(f"{case}: {name}: {g[~nan][k]!r} != {w[~nan][k]!r}")


def same_tables(case: str, want: pa.Table, got: pa.Table, *, rtol: float = 0.0) -> None:
    """Same schema (with metadata) and rows; non-float columns equal, floats by
    :func:`same_floats`."""
    if not got.schema.equals(want.schema, check_metadata=True):
        fail(f"{case}: schema {got.schema} != {want.schema}")
    if got.num_rows != want.num_rows:
        fail(f"{case}: {got.num_rows} rows, the CPU has {want.num_rows}")
    for name in want.column_names:
        w = want.column(name)
        g = got.column(name)
        if pa.types.is_floating(w.type):
            same_floats(case, name, w.to_numpy(), g.to_numpy(), rtol)
        elif not g.equals(w):
            fail(f"{case}: {name}")
    print(f"AGREE {case} {want.num_rows}")
