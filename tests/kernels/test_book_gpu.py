"""The CUDA book computes the same function as the CPU book (CUDA simulator in CI)."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from ptx import skip_without_cuda_compiler

CHILD = Path(__file__).with_name("gpu_agreement_child.py")


@pytest.mark.parametrize(("messages", "instruments", "seed"), [(1_500, 3, 1), (3_000, 12, 2)])
def test_gpu_book_equals_cpu_book_row_for_row_under_the_cuda_simulator(messages, instruments, seed):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, str(CHILD), str(messages), str(instruments), str(seed)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "AGREE" in r.stdout, r.stdout + r.stderr


def test_the_gpu_book_kernel_compiles_to_ptx_for_hopper():
    if os.environ.get("NUMBA_ENABLE_CUDASIM"):
        pytest.skip("the CUDA simulator compiles nothing")
    from numba import cuda
    from kernels.book_gpu import _book_kernel
    a1 = lambda dt: numba.typeof(np.zeros(1, dt))               # noqa: E731
    a2 = lambda dt: numba.typeof(np.zeros((1, 2), dt))          # noqa: E731
    a3 = lambda dt: numba.typeof(np.zeros((1, 2, 1), dt))       # noqa: E731
    sig = (a1(np.int64), a1(np.int64), a1(np.uint8), a1(np.uint64), a1(np.uint64), a1(np.int64),
           a1(np.uint64), a1(np.uint8), a1(np.int64), a1(np.uint64), a1(np.int64), a1(np.uint64), a1(np.uint8),
           a1(np.int64), a1(np.int64), a1(np.int64), a2(np.int64),
           a1(np.int64), a2(np.int64), a3(np.int64), a3(np.uint64), a3(np.uint32), a2(np.int64))
    with skip_without_cuda_compiler():
        ptx, _ = cuda.compile_ptx(_book_kernel.py_func, sig, cc=(9, 0))
    assert ".entry" in ptx and "sm_90" in ptx
