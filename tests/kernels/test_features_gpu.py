"""Bar and per-event features on the GPU path give the CPU's table (CUDA simulator in CI);
device selection."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pytest
from ptx import skip_without_cuda_compiler

import normalize
from kernels import book as B
from kernels import features as F
from normalize import records as R

CHILD = Path(__file__).with_name("features_gpu_child.py")


@pytest.fixture(scope="module")
def small():
    from ingest.simulator import generate_session
    s = generate_session(1_500, 4, seed=2)
    mbo = normalize.read_itch(s.to_binaryfile(), date=s.date)["mbo"]
    return mbo, B.reconstruct(mbo, levels=5, device="cpu")


def _child_agrees(case: str, agreements: int) -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, str(CHILD), case], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    if "SKIP" in r.stdout:
        pytest.skip(r.stdout.strip())
    assert r.stdout.count("AGREE") == agreements, r.stdout + r.stderr


@pytest.mark.parametrize(("case", "agreements"), [("itch", 4), ("lobster", 3)])
def test_gpu_bars_equal_cpu_bars_under_the_cuda_simulator(case, agreements):
    _child_agrees(case, agreements)


def test_gpu_per_event_equals_cpu_per_event_under_the_cuda_simulator():
    _child_agrees("per_event", 4)


def test_the_gpu_bar_kernels_compile_to_ptx_for_hopper():
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("the CUDA simulator compiles nothing")
    from numba import cuda
    from kernels.features_gpu import _bars_kernel, _compact_kernel
    a1 = lambda dt: numba.typeof(np.zeros(1, dt))               # noqa: E731
    a2 = lambda dt: numba.typeof(np.zeros((1, 2), dt))          # noqa: E731
    i64, f64 = np.int64, np.float64
    bars_sig = (a1(i64), a1(i64), a1(i64), a1(f64), a1(np.bool_), a1(f64), a1(f64), a1(f64),
                numba.int64, numba.int64, numba.int64, a1(f64),
                a1(i64), a1(i64), a1(i64), a2(f64), a2(i64), a1(i64))
    compact_sig = (a1(i64), a1(i64), a1(i64), a1(i64), a1(i64), a2(f64), a2(i64),
                   a1(i64), a1(i64), a1(i64), a2(f64), a2(i64))
    with skip_without_cuda_compiler():
        bars, _ = cuda.compile_ptx(_bars_kernel.py_func, bars_sig, cc=(9, 0))
        compact, _ = cuda.compile_ptx(_compact_kernel.py_func, compact_sig, cc=(9, 0))
    for ptx in (bars, compact):
        assert ".entry" in ptx and "sm_90" in ptx
    # products feeding sums are rounded on their own (never fused into an FMA, as on the CPU)
    assert "mul.rn.f64" in bars


def test_the_gpu_per_event_kernel_compiles_to_ptx_for_hopper():
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("the CUDA simulator compiles nothing")
    from numba import cuda
    from kernels.features_gpu import _per_event_kernel
    a1 = lambda dt: numba.typeof(np.zeros(1, dt))               # noqa: E731
    a2 = lambda dt: numba.typeof(np.zeros((1, 2), dt))          # noqa: E731
    with skip_without_cuda_compiler():
        ptxs = [cuda.compile_ptx(_per_event_kernel.py_func,
                                 (a1(np.int64), a2(np.int64), a2(szt), a2(np.int64), a2(szt),
                                  *[a1(np.float64)] * 6), cc=(9, 0))[0]
                for szt in (np.uint64, np.float64)]             # the book's sizes, or float64
    for ptx in ptxs:
        assert ".entry" in ptx and "sm_90" in ptx
        # the microprice's products are rounded on their own, nothing is fused (as on the CPU)
        assert "mul.rn.f64" in ptx and "fma" not in ptx
        assert "div.rn.f64" in ptx                              # IEEE division


def test_gpu_without_a_cuda_device_raises_a_clear_runtime_error(small, monkeypatch):
    mbo, book = small
    monkeypatch.setattr(B, "_cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="device='gpu'.*no CUDA device"):
        F.compute(mbo, book=book, device="gpu")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        F.compute(mbo, device="gpu")                            # before building a book


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Same schema (metadata included) and values, NaN equal to NaN."""
    return a.schema.equals(b.schema, check_metadata=True) and a.to_pandas().equals(b.to_pandas())


def test_auto_without_a_cuda_device_runs_on_the_cpu_even_for_large_inputs(small, monkeypatch):
    mbo, book = small
    want = F.compute(mbo, book=book, bar="1min", device="cpu")
    monkeypatch.setattr(B, "_cuda_available", lambda: False)
    assert _same(F.compute(mbo, book=book, bar="1min", device="auto"), want)
    monkeypatch.setattr(B, "GPU_MIN_EVENTS", 1)                 # "large": it looks for a device
    assert _same(F.compute(mbo, bar="1min"), want)


def test_per_event_gpu_without_a_cuda_device_raises_and_auto_runs_on_the_cpu(small, monkeypatch):
    _, book = small
    want = F.per_event(book, device="cpu")
    monkeypatch.setattr(B, "_cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="device='gpu'.*no CUDA device"):
        F.per_event(book, device="gpu")
    assert _same(F.per_event(book), want)                       # "auto" is the default
    monkeypatch.setattr(B, "GPU_MIN_EVENTS", 1)                 # "large": it looks for a device
    assert _same(F.per_event(book, device="auto"), want)


@pytest.mark.parametrize("device", ["tpu", "GPU", "", None, 0])
def test_per_event_with_a_bad_device_raises_value_error_naming_device(small, device):
    with pytest.raises(ValueError, match="`device`.*'auto', 'cpu', 'gpu'"):
        F.per_event(small[1], device=device)


def test_per_event_of_no_rows_is_empty_on_either_device(monkeypatch):
    book = B.reconstruct(R.arrow_schema("mbo").empty_table(), levels=5, device="cpu")
    want = F.per_event(book, device="cpu")
    monkeypatch.setattr(B, "_cuda_available", lambda: True)     # nothing is sent to a device
    assert want.num_rows == 0 and _same(F.per_event(book, device="gpu"), want)
    assert want.column_names == ["instrument_id", "ts_event", *F.PER_EVENT_COLUMNS]


def test_auto_takes_the_gpu_only_when_there_is_one_and_the_input_is_large(monkeypatch):
    monkeypatch.setattr(B, "_cuda_available", lambda: True)
    assert F._use_gpu("auto", B.GPU_MIN_EVENTS)
    assert not F._use_gpu("auto", B.GPU_MIN_EVENTS - 1)
    assert F._use_gpu("gpu", 10)
    assert not F._use_gpu("cpu", B.GPU_MIN_EVENTS)
    monkeypatch.setattr(B, "_cuda_available", lambda: False)
    assert not F._use_gpu("auto", B.GPU_MIN_EVENTS)


@pytest.mark.parametrize("device", ["tpu", "GPU", "", None, 0])
def test_a_bad_device_raises_value_error_naming_device(small, device):
    mbo, book = small
    with pytest.raises(ValueError, match="`device`.*'auto', 'cpu', 'gpu'"):
        F.compute(mbo, book=book, device=device)


def test_no_events_give_no_bars_on_either_device(monkeypatch):
    empty = R.arrow_schema("mbo").empty_table()
    book = B.reconstruct(empty, levels=5, device="cpu")
    want = F.compute(empty, book=book, device="cpu")
    monkeypatch.setattr(B, "_cuda_available", lambda: True)     # nothing is sent to a device
    got = F.compute(empty, book=book, device="gpu")
    assert want.num_rows == 0 and _same(got, want)
    assert want.column_names == ["instrument_id", "bar_start", "bar_end", *F.BAR_COLUMNS]
