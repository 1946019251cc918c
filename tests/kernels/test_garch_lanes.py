"""The CPU's side-by-side GARCH fits (kernels.garch_lanes) against one fit at a time.

``garch11(device="cpu")`` fits up to 16 instruments of equal length together in SIMD lanes;
the one-instrument fit (``kernels.garch._fit_one``, what each GPU thread runs) is the
reference, and the two must agree bit for bit on every column: same arithmetic in the same
order, same steps. The series are chosen to reach every branch of the fit: both variance
bounds, the ``alpha + beta = 1`` constraint, failed line searches, constant and short series
inside a block, blocks of one to sixteen lanes and lengths that are not multiples of the
products' log interval.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels import garch as G
from kernels import garch_lanes as GL


def simulate(n_inst, length, seed, nu=None):
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.02, 0.25, n_inst)
    beta = rng.uniform(0.5, 0.97, n_inst) * (1 - alpha)
    omega = rng.uniform(0.01, 0.5, n_inst)
    h = omega / (1 - alpha - beta)
    r = np.empty((n_inst, length))
    for t in range(length):
        z = rng.standard_normal(n_inst) if nu is None else (
            rng.standard_t(nu, n_inst) / np.sqrt(nu / (nu - 2)))
        e = np.sqrt(h) * z
        r[:, t] = rng.normal(0, 0.05) + e
        h = omega + alpha * e * e + beta * h
    return r


def one_at_a_time(r, dist):
    lo, n, status = G.series_extent(r)
    out = np.empty((r.shape[0], G.N_OUT))
    G._fit_cpu(r, lo, n, status, G.DISTS.index(dist), np.zeros((r.shape[0], G.N_WORK)), out)
    return G._garch_table(np.arange(r.shape[0], dtype=np.uint32), out, dist)


def assert_same(lanes, ref):
    assert lanes.column_names == ref.column_names
    for c in lanes.column_names:
        a = lanes.column(c).to_numpy(zero_copy_only=False)
        b = ref.column(c).to_numpy(zero_copy_only=False)
        same = np.array_equal(a, b, equal_nan=True) if a.dtype.kind == "f" else np.array_equal(a, b)
        assert same, (c, np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
                      if a.dtype.kind == "f" else np.flatnonzero(a != b))


def awkward_market(dist):
    """45 series of 3 lengths (blocks of 16, 16, 3, 7 and 3 lanes), with outliers (the
    variance's upper bound), near-constant stretches (the lower bound), near-integrated and
    white-noise series (the constraint and alpha's bound), a constant and a short one."""
    rng = np.random.default_rng(5)
    nu = 5.0 if dist == "t" else None
    a = simulate(35, 1000, 1, nu)
    a[0, 500] = 80.0
    a[1, 200:260] = 1e-7
    a[2] = rng.standard_normal(1000)
    a[3] = 0.0 * a[3] + 0.5                      # constant: status, its lane never used
    c = np.zeros(1000)
    h = 1.0
    for t in range(1000):                        # IGARCH: alpha + beta = 1
        c[t] = np.sqrt(h) * rng.standard_normal()
        h = 0.01 + 0.2 * c[t] ** 2 + 0.8 * h
    a[4] = c
    b = simulate(7, 777, 2, nu)                  # 777: not a multiple of 64
    d = simulate(3, 130, 3, nu)
    r = np.full((45, 1000), np.nan)
    r[:35] = a
    r[35:42, 100:877] = b                        # leading NaN: the series starts later
    r[42:45, :130] = d
    r[44, 15:] = np.nan                          # too short
    return r


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_side_by_side_fits_equal_one_at_a_time_bit_for_bit(dist):
    r = awkward_market(dist)
    lanes = G.garch11(r, dist=dist, device="cpu")
    ref = one_at_a_time(r, dist)
    assert_same(lanes, ref)
    status = lanes.column("status").to_numpy()
    assert status[3] == G.CONSTANT and status[44] == G.TOO_SHORT
    ok = status == G.OK
    assert lanes.column("converged").to_numpy()[ok].mean() > 0.9
    ab = (lanes.column("alpha").to_numpy() + lanes.column("beta").to_numpy())[ok]
    assert np.any(ab > 1 - 1e-9), "the constraint alpha + beta <= 1 was not reached"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lengths=st.lists(st.sampled_from([25, 64, 65, 200]), min_size=1, max_size=40),
       seed=st.integers(0, 2**16), dist=st.sampled_from(["normal", "t"]))
def test_any_mix_of_lengths_fits_as_one_at_a_time(lengths, seed, dist):
    r = np.full((len(lengths), max(lengths)), np.nan)
    for i, n in enumerate(lengths):
        r[i, :n] = simulate(1, n, seed + i, 6.0 if dist == "t" else None)[0]
    assert_same(G.garch11(r, dist=dist, device="cpu"), one_at_a_time(r, dist))


def test_blocks_hold_each_fittable_instrument_once_with_one_length():
    n = np.array([50, 30, 50, 50, 0, 30] + [50] * 20 + [70])
    status = np.where(n == 0, G.ALL_NAN, G.OK)
    order, starts = GL.blocks(n, status)
    assert sorted(order.tolist()) == [i for i in range(n.size) if status[i] == G.OK]
    sizes = np.diff(starts)
    assert sizes.max() <= GL.LANES and sizes.min() >= 1 and starts[-1] == order.size
    for b in range(sizes.size):
        assert np.unique(n[order[starts[b]:starts[b + 1]]]).size == 1
    order, starts = GL.blocks(n, np.full(n.size, G.ALL_NAN))
    assert order.size == 0 and starts.tolist() == [0]


@pytest.mark.parametrize("want,dist", [(0, 0), (1, 0), (0, 1), (1, 1), (3, 0)])
def test_each_kind_of_pass_equals_the_one_instrument_pass_across_both_bounds(want, dist):
    """Sixteen lanes at different parameters, some pushing the variance under its lower bound
    (omega at its floor, no persistence) or over a low upper bound (the bound constants are
    the pass's inputs), the others inside: every lane's likelihood, derivatives, kurtosis and
    forecast equal kernels.garch._pass's on the same series."""
    L, n = GL.LANES, 300
    rng = np.random.default_rng(11)
    r = rng.standard_normal((L, n)) * np.linspace(0.2, 3.0, n)
    bc, vfloor, ucap_lo, ucap_hi = 1.0, 1e-8, 4.0, 6.0
    params = [(0.0, 1e-8, 0.0, 0.3, 6.0), (0.1, 9.0, 0.5, 0.5, 4.0), (-0.05, 0.2, 0.1, 0.8, 9.0),
              (0.0, 1e-8, 0.02, 0.0, 30.0)]
    work = np.zeros((L, G.N_WORK))
    xb = np.empty((3, n * L))
    par = np.zeros(GL.N_PAR * L)
    for j in range(L):
        work[j, G.W_C:G.W_C + 6] = (0.0, 1.0, bc, vfloor, ucap_lo, ucap_hi)
        GL._load_lane(r, j, 0, n, j, work, xb[0], xb[1], xb[2], par)
        for c, v in enumerate(params[j % len(params)]):
            par[c * L + j] = v
    assert (xb[1] > 1e-6).any() and (xb[2] == ucap_hi).all()
    st = np.zeros(GL.N_ST * L)
    res = np.zeros(L)
    GL._lanes_pass(xb[0], xb[1], xb[2], L, n, want, dist, par, st, res)
    GL._lanes_store(L, n, want, dist, par, st, np.arange(L), work)
    ref = np.zeros((L, G.N_WORK))
    held = 0
    for j in range(L):
        p = params[j % len(params)]
        ll = G._pass(r, j, 0, n, 0.0, 1.0, bc, vfloor, ucap_lo, ucap_hi, *p, dist, want, ref)
        assert res[j] == ll, (j, res[j], ll)
        assert work[j, G.W_F] == ref[j, G.W_F]
        if want == 1:
            assert np.array_equal(work[j, G.W_G:G.W_G + 30], ref[j, G.W_G:G.W_G + 30]), j
        if want == 3:
            assert work[j, G.W_D] == ref[j, G.W_D]
        held += np.isfinite(ll)
    assert held == L
