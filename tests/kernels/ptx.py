"""For the tests that compile CUDA kernels to PTX without a GPU: skip when this machine has no
CUDA compiler (NVVM), fail on anything else."""

import contextlib

import pytest


@contextlib.contextmanager
def skip_without_cuda_compiler():
    try:
        yield
    except Exception as e:                                        # no NVVM on this machine
        if "NVVM" in str(e) or "libnvvm" in str(e).lower() or "CUDA" in type(e).__name__:
            pytest.skip(f"no CUDA compiler here: {e}")
        raise
