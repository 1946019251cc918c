"""pytest-benchmark versions of the GARCH benchmark: ``kernels.garch.garch11`` over many
instruments, and one ``arch`` fit of the same length (the peer fits one series at a time).

Run with ``.venv/bin/python -m pytest bench/test_bench_forecast.py``; the scaled comparison
table is ``bench/forecast.py``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from forecast import simulate  # noqa: E402

pytest.importorskip("pytest_benchmark")
arch = pytest.importorskip("arch")

N_INSTRUMENTS, LENGTH = 200, 2_000


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    return simulate(N_INSTRUMENTS, LENGTH)


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_garch11_fits_every_instrument(benchmark, returns, dist):
    from kernels.garch import garch11
    garch11(returns[:4], dist=dist, device="cpu")
    benchmark.extra_info.update(instruments=N_INSTRUMENTS, length=LENGTH)
    fit = benchmark.pedantic(garch11, args=(returns,), kwargs={"dist": dist, "device": "cpu"},
                             rounds=5, warmup_rounds=1, iterations=1)
    assert fit.column("converged").to_numpy().all()


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_arch_fits_one_instrument(benchmark, returns, dist):
    from arch import arch_model

    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return arch_model(returns[0], mean="Constant", vol="GARCH", p=1, q=1,
                              dist=dist).fit(disp="off")
    benchmark.extra_info.update(instruments=1, length=LENGTH)
    res = benchmark.pedantic(fit, rounds=5, warmup_rounds=1, iterations=1)
    assert np.isfinite(res.loglikelihood)
