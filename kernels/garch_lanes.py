"""GARCH(1,1) fits on the CPU, many instruments side by side in SIMD lanes.

A likelihood pass is a recursion in time (each variance needs the one before), so one fit's
pass cannot use the CPU's vector units; sixteen fits can. :func:`_fit_block` takes up to
:data:`LANES` instruments with series of the same length, stores their centred, scaled returns
time-major (``x[k * LANES + j]`` for lane ``j``), and runs every pass for all of them at once:
at each time step the lanes' updates are one loop over ``j`` that LLVM turns into AVX-512 (or
AVX2) instructions, with each lane's state in a row of one scratch array.

The fits stay those of :func:`kernels.garch._fit_one`, bit for bit: each lane does the same
operations in the same order as the one-instrument pass (:func:`kernels.garch._pass`,
:func:`kernels.garch._grid`), and the steps of each fit are taken by the same
:func:`kernels.garch._advance`. A round's pass computes derivatives when any lane asks for them;
a lane that asked for a value only gets them too (the same numbers a separate pass would give),
which can spare it the pass for them after an accepted step. A lane whose fit is done is
replaced by the block's last live lane, so a round costs as many vector steps as there are
live lanes.

The variance bound's log (``u + log(h / u)`` above the upper bound) is a call the vector loop
cannot hold: the loop flags the step and a scalar loop applies it to the lanes over the bound.
The lower bound is at most the upper (both follow from arch's bounds), so a variance raised to
the lower bound never reaches the upper one, as in the one-instrument code.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from kernels import garch as G
from kernels.garch import (_ALPHAS, _LOG2PI, _PERSIST, _advance, _finish, _flush,
                           _normal_terms, _psi, _psi1, _setup, _start, _t_terms, _var_bounds)

LANES = 16
L = LANES
SCALAR_BELOW = 4                # fits left in a block that finish one at a time (kernels.garch)
# the lanes' parameters and constants (rows of ``par``)
P_MU, P_OM, P_AL, P_BE, P_NU, P_BC, P_VFLOOR, P_UCAP_LO, P_UCAP_HI = range(9)
P_NM2, P_A, P_C, P_INM2, P_INU1 = range(9, 14)
N_PAR = 14
# the pass's state per lane (rows of ``st``): the variance and its derivatives, the previous
# squared residual and its derivatives in mu, whether the lower bound held the variance, the
# running products and sums of logs, the sum of u / h, the gradient, the Hessian (upper
# triangle, row-major) and the kurtosis moments
V_H, V_H0, V_H1, V_H2, V_H3, V_H00, V_H02, V_H03, V_H13, V_H23, V_H33 = range(11)
V_U, V_UE, V_UEE, V_LOW, V_PH, V_PZ, V_SLH, V_SLZ, V_SU, V_F = range(11, 21)
V_G = 21                                        # g0..g4
V_HS = 26                                       # H00 H01 H02 H03 H04 H11 H12 H13 H14 H22 ...
V_Z = 41                                        # z1..z4
N_ST = 45
# the grid's state per lane: four variances, products, sums of u / h, sums of logs, and u
GR_H, GR_Q, GR_S, GR_L, GR_U = 0, 4, 8, 12, 16
N_GR = 17


@numba.njit(cache=True, error_model="numpy")
def _lanes_pass(x, blo, bhi, m, n, want, dist, par, st, res):
    """Log-likelihood of lanes ``0..m-1`` at their parameters (``par``), as
    :func:`kernels.garch._pass` computes it for one instrument, into ``res[j]``; the gradient
    and Hessian (``want`` 1) or kurtosis moments (``want`` 3) and the variance forecast stay
    in ``st`` (:func:`_lanes_store` puts them in the work rows). ``blo``, ``bhi``: the
    variance bounds at each step (they do not depend on the parameters).

    Each time step is a few loops over the lanes, each without branches (the kind of pass and
    the distribution choose the loops, not code inside them), so that every one of them is a
    vector loop; they run over all :data:`LANES` lanes, a constant count LLVM vectorizes
    whole, with lanes past ``m`` computing on a copy of live data (:func:`_fit_block`) and
    ignored."""
    t_dist = dist == 1
    full = want == 1
    for j in range(L):
        if t_dist:
            nu = par[P_NU * L + j]
            nm2 = nu - 2.0
            a = 0.5 * (nu + 1.0)
            par[P_NM2 * L + j] = nm2
            par[P_A * L + j] = a
            par[P_C * L + j] = (math.lgamma(a) - math.lgamma(0.5 * nu)
                                - 0.5 * math.log(math.pi * nm2))
            par[P_INM2 * L + j] = 1.0 / nm2
            par[P_INU1 * L + j] = 1.0 / (nu + 1.0)
        else:
            par[P_NM2 * L + j] = 1.0
            par[P_A * L + j] = 0.0
            par[P_C * L + j] = -0.5 * _LOG2PI
            par[P_INM2 * L + j] = 1.0
            par[P_INU1 * L + j] = 1.0
    for j in range(L):
        for v in range(N_ST):
            st[v * L + j] = 0.0
        bc = par[P_BC * L + j]
        st[V_H * L + j] = bc                   # h_{-1} = u_{-1} = b (kernels.garch._pass)
        st[V_U * L + j] = bc
        st[V_PH * L + j] = 1.0
        st[V_PZ * L + j] = 1.0
    for k in range(n):
        o = k * L
        if full:
            # the derivatives' recursions (second derivatives first: they use the previous
            # first derivatives)
            for j in range(L):
                al = par[P_AL * L + j]
                be = par[P_BE * L + j]
                ue = st[V_UE * L + j]
                low = st[V_LOW * L + j] != 0.0
                h0 = _held(st, V_H0, j, low)
                h1 = _held(st, V_H1, j, low)
                h2 = _held(st, V_H2, j, low)
                h3 = _held(st, V_H3, j, low)
                st[V_H00 * L + j] = be * _held(st, V_H00, j, low) + al * st[V_UEE * L + j]
                st[V_H02 * L + j] = be * _held(st, V_H02, j, low) + ue
                st[V_H03 * L + j] = be * _held(st, V_H03, j, low) + h0
                st[V_H13 * L + j] = be * _held(st, V_H13, j, low) + h1
                st[V_H23 * L + j] = be * _held(st, V_H23, j, low) + h2
                st[V_H33 * L + j] = be * _held(st, V_H33, j, low) + 2.0 * h3
                st[V_H0 * L + j] = al * ue + be * h0
                st[V_H1 * L + j] = 1.0 + be * h1
                st[V_H2 * L + j] = st[V_U * L + j] + be * h2
                st[V_H3 * L + j] = st[V_H * L + j] + be * h3
        # the variance, held at the lower bound
        over = False
        for j in range(L):
            h = (par[P_OM * L + j] + par[P_AL * L + j] * st[V_U * L + j]
                 + par[P_BE * L + j] * st[V_H * L + j])
            lower = blo[o + j]
            low = h < lower
            h = lower if low else h
            over |= h > bhi[o + j]
            st[V_H * L + j] = h
            st[V_LOW * L + j] = 1.0 if low else 0.0
        if over:                                # above the upper bound: u + log(h / u)
            for j in range(m):
                h = st[V_H * L + j]
                upper = bhi[o + j]
                if h > upper:
                    f = 1.0 / h
                    st[V_H * L + j] = upper + math.log(h / upper)
                    st[V_H0 * L + j] *= f
                    st[V_H1 * L + j] *= f
                    st[V_H2 * L + j] *= f
                    st[V_H3 * L + j] *= f
        # the likelihood's terms
        logs = False
        if t_dist:
            for j in range(L):
                h = st[V_H * L + j]
                e = x[o + j] - par[P_MU * L + j]
                u = e * e
                q = u / (h * par[P_NM2 * L + j])
                ph = st[V_PH * L + j] * h
                pz = st[V_PZ * L + j] * (1.0 + q)
                st[V_PH * L + j] = ph
                st[V_PZ * L + j] = pz
                logs |= _flush(ph, k) | _flush(pz, k)
        else:
            for j in range(L):
                h = st[V_H * L + j]
                e = x[o + j] - par[P_MU * L + j]
                u = e * e
                ph = st[V_PH * L + j] * h
                st[V_PH * L + j] = ph
                st[V_SU * L + j] += u / h
                logs |= _flush(ph, k)
        if full and t_dist:
            _full_t(x, o, m, par, st)
        elif full:
            _full_normal(x, o, m, par, st)
        elif want == 3:
            for j in range(L):
                e = x[o + j] - par[P_MU * L + j]
                zs = e / math.sqrt(st[V_H * L + j])
                z = V_Z * L + j
                st[z] += zs
                st[z + L] += zs * zs
                st[z + 2 * L] += zs * zs * zs
                st[z + 3 * L] += zs * zs * zs * zs
        for j in range(L):                      # u_{t-1} and its derivatives for the next step
            e = x[o + j] - par[P_MU * L + j]
            st[V_U * L + j] = e * e
            st[V_UE * L + j] = -2.0 * e
            st[V_UEE * L + j] = 2.0
        if logs:                                # the products' logs, lane by lane (_flush)
            for j in range(m):
                if _flush(st[V_PH * L + j], k):
                    st[V_SLH * L + j] += math.log(st[V_PH * L + j])
                    st[V_PH * L + j] = 1.0
                if t_dist and _flush(st[V_PZ * L + j], k):
                    st[V_SLZ * L + j] += math.log(st[V_PZ * L + j])
                    st[V_PZ * L + j] = 1.0
    for j in range(m):
        slh = st[V_SLH * L + j] + math.log(st[V_PH * L + j])
        if t_dist:
            slz = st[V_SLZ * L + j] + math.log(st[V_PZ * L + j])
            st[V_SLZ * L + j] = slz
            res[j] = n * par[P_C * L + j] - 0.5 * slh - par[P_A * L + j] * slz
        else:
            res[j] = n * par[P_C * L + j] - 0.5 * (slh + st[V_SU * L + j])
        st[V_F * L + j] = (par[P_OM * L + j] + par[P_AL * L + j] * st[V_U * L + j]
                           + par[P_BE * L + j] * st[V_H * L + j])


@numba.njit(inline="always")
def _held(st, v, j, low):
    """Lane ``j``'s derivative ``v``: 0 where the lower bound held the variance (the stored
    value is then stale; every reader goes through here instead of a loop zeroing it)."""
    return 0.0 if low else st[v * L + j]


@numba.njit(inline="always")
def _held_h(st, j, low):
    """Lane ``j``'s first derivatives of the variance in (mu, omega, alpha, beta)."""
    return (_held(st, V_H0, j, low), _held(st, V_H1, j, low), _held(st, V_H2, j, low),
            _held(st, V_H3, j, low))


@numba.njit(inline="always")
def _accumulate(st, j, low, h0, h1, h2, h3, u0, Lh, Lhh, Lu, Luu, Lhu):
    """One step's terms of lane ``j``'s gradient and Hessian in (mu, omega, alpha, beta), from
    the log-density's derivatives in ``h`` and ``u`` (kernels.garch._pass)."""
    g = V_G * L + j
    st[g] += Lh * h0 + Lu * u0
    st[g + L] += Lh * h1
    st[g + 2 * L] += Lh * h2
    st[g + 3 * L] += Lh * h3
    b = V_HS * L + j
    st[b] += (Lhh * h0 * h0 + Lh * _held(st, V_H00, j, low) + 2.0 * Lhu * h0 * u0
              + Luu * u0 * u0 + 2.0 * Lu)
    st[b + L] += Lhh * h0 * h1 + Lhu * h1 * u0
    st[b + 2 * L] += Lhh * h0 * h2 + Lh * _held(st, V_H02, j, low) + Lhu * h2 * u0
    st[b + 3 * L] += Lhh * h0 * h3 + Lh * _held(st, V_H03, j, low) + Lhu * h3 * u0
    st[b + 5 * L] += Lhh * h1 * h1
    st[b + 6 * L] += Lhh * h1 * h2
    st[b + 7 * L] += Lhh * h1 * h3 + Lh * _held(st, V_H13, j, low)
    st[b + 9 * L] += Lhh * h2 * h2
    st[b + 10 * L] += Lhh * h2 * h3 + Lh * _held(st, V_H23, j, low)
    st[b + 12 * L] += Lhh * h3 * h3 + Lh * _held(st, V_H33, j, low)


@numba.njit(inline="always")
def _full_normal(x, o, m, par, st):
    """The gradient and Hessian terms of one step, normal errors (kernels.garch._pass)."""
    for j in range(L):
        h = st[V_H * L + j]
        e = x[o + j] - par[P_MU * L + j]
        u = e * e
        low = st[V_LOW * L + j] != 0.0
        h0, h1, h2, h3 = _held_h(st, j, low)
        Lh, Lhh, Lu, Luu, Lhu = _normal_terms(u, 1.0 / h)
        u0 = -2.0 * e
        _accumulate(st, j, low, h0, h1, h2, h3, u0, Lh, Lhh, Lu, Luu, Lhu)


@numba.njit(inline="always")
def _full_t(x, o, m, par, st):
    """The gradient and Hessian terms of one step, Student-t errors (kernels.garch._pass)."""
    for j in range(L):
        h = st[V_H * L + j]
        e = x[o + j] - par[P_MU * L + j]
        u = e * e
        nm2 = par[P_NM2 * L + j]
        a = par[P_A * L + j]
        inm2 = par[P_INM2 * L + j]
        q = u / (h * nm2)
        zz = 1.0 + q
        low = st[V_LOW * L + j] != 0.0
        h0, h1, h2, h3 = _held_h(st, j, low)
        Lh, Lhh, Lu, Luu, Lhu, Ln, Lnn, Lnh, Lnu = _t_terms(q, zz, 1.0 / h, a, inm2,
                                                          par[P_INU1 * L + j])
        u0 = -2.0 * e
        _accumulate(st, j, low, h0, h1, h2, h3, u0, Lh, Lhh, Lu, Luu, Lhu)
        g = V_G * L + j
        b = V_HS * L + j
        st[g + 4 * L] += Ln
        st[b + 14 * L] += Lnn
        st[b + 4 * L] += Lnh * h0 + Lnu * u0
        st[b + 8 * L] += Lnh * h1
        st[b + 11 * L] += Lnh * h2
        st[b + 13 * L] += Lnh * h3


@numba.njit(cache=True)
def _lanes_store(m, n, want, dist, par, st, inst, work):
    """Copy the pass's results for lanes ``0..m-1`` into their instruments' work rows, where
    :func:`kernels.garch._pass` writes them."""
    for j in range(m):
        i = inst[j]
        work[i, G.W_F] = st[V_F * L + j]
        if want == 1:
            g4 = st[(V_G + 4) * L + j]
            h44 = st[(V_HS + 14) * L + j]
            if dist == 1:
                nu = par[P_NU * L + j]
                nm2 = par[P_NM2 * L + j]
                a = par[P_A * L + j]
                g4 += -0.5 * st[V_SLZ * L + j]
                g4 += n * (0.5 * _psi(a) - 0.5 * _psi(0.5 * nu) - 0.5 / nm2)
                h44 += n * (0.25 * _psi1(a) - 0.25 * _psi1(0.5 * nu) + 0.5 / (nm2 * nm2))
            for c in range(4):
                work[i, G.W_G + c] = st[(V_G + c) * L + j]
            work[i, G.W_G + 4] = g4
            # the upper triangle (row-major) to the full symmetric 5 x 5
            t = 0
            for r_ in range(5):
                for c in range(r_, 5):
                    v = h44 if t == 14 else st[(V_HS + t) * L + j]
                    work[i, G.W_H + r_ * 5 + c] = v
                    work[i, G.W_H + c * 5 + r_] = v
                    t += 1
        elif want == 3:
            z1 = st[V_Z * L + j]
            z2 = st[(V_Z + 1) * L + j]
            z3 = st[(V_Z + 2) * L + j]
            z4 = st[(V_Z + 3) * L + j]
            m1 = z1 / n
            m2 = z2 / n - m1 * m1
            m4 = z4 / n - 4.0 * m1 * z3 / n + 6.0 * m1 * m1 * z2 / n - 3.0 * m1 ** 4
            work[i, G.W_D] = m4 / (m2 * m2) if m2 > 0 else 3.0


@numba.njit(cache=True, error_model="numpy")
def _lanes_grid(x, blo, bhi, m, n, par, gr, best):
    """arch's starting grid for lanes ``0..m-1`` (:func:`kernels.garch._grid`, lane by lane):
    the index of the best (alpha, alpha + beta) pair into ``best[j]``."""
    bll = np.full(m, -math.inf)
    for j in range(m):
        best[j] = 0
    p0, p1, p2, p3 = _PERSIST
    for ga in range(4):
        al = _ALPHAS[ga]
        for j in range(L):
            bc = par[P_BC * L + j]
            for c in range(4):
                gr[(GR_H + c) * L + j] = bc
                gr[(GR_Q + c) * L + j] = 1.0
                gr[(GR_S + c) * L + j] = 0.0
                gr[(GR_L + c) * L + j] = 0.0
            gr[GR_U * L + j] = bc
        for k in range(n):
            o = k * L
            over = False
            for j in range(L):
                u_prev = gr[GR_U * L + j]
                h0 = (1.0 - p0) + al * u_prev + (p0 - al) * gr[GR_H * L + j]
                h1 = (1.0 - p1) + al * u_prev + (p1 - al) * gr[(GR_H + 1) * L + j]
                h2 = (1.0 - p2) + al * u_prev + (p2 - al) * gr[(GR_H + 2) * L + j]
                h3 = (1.0 - p3) + al * u_prev + (p3 - al) * gr[(GR_H + 3) * L + j]
                lower = blo[o + j]
                upper = bhi[o + j]
                h0 = lower if h0 < lower else h0
                h1 = lower if h1 < lower else h1
                h2 = lower if h2 < lower else h2
                h3 = lower if h3 < lower else h3
                over |= (h0 > upper) | (h1 > upper) | (h2 > upper) | (h3 > upper)
                gr[GR_H * L + j] = h0
                gr[(GR_H + 1) * L + j] = h1
                gr[(GR_H + 2) * L + j] = h2
                gr[(GR_H + 3) * L + j] = h3
            if over:
                for j in range(m):
                    upper = bhi[o + j]
                    for c in range(4):
                        h = gr[(GR_H + c) * L + j]
                        if h > upper:
                            gr[(GR_H + c) * L + j] = upper + math.log(h / upper)
            logs = False
            for j in range(L):
                xk = x[o + j]
                h0 = gr[GR_H * L + j]
                h1 = gr[(GR_H + 1) * L + j]
                h2 = gr[(GR_H + 2) * L + j]
                h3 = gr[(GR_H + 3) * L + j]
                u = xk * xk
                m01 = h0 * h1
                m23 = h2 * h3
                inv = u / (m01 * m23)
                gr[GR_S * L + j] += h1 * m23 * inv
                gr[(GR_S + 1) * L + j] += h0 * m23 * inv
                gr[(GR_S + 2) * L + j] += h3 * m01 * inv
                gr[(GR_S + 3) * L + j] += h2 * m01 * inv
                q0 = gr[GR_Q * L + j] * h0
                q1 = gr[(GR_Q + 1) * L + j] * h1
                q2 = gr[(GR_Q + 2) * L + j] * h2
                q3 = gr[(GR_Q + 3) * L + j] * h3
                gr[GR_Q * L + j] = q0
                gr[(GR_Q + 1) * L + j] = q1
                gr[(GR_Q + 2) * L + j] = q2
                gr[(GR_Q + 3) * L + j] = q3
                logs |= _flush(q0, k) | _flush(q1, k) | _flush(q2, k) | _flush(q3, k)
                gr[GR_U * L + j] = u
            last = k == n - 1
            if logs or last:                    # the products' logs (_flush)
                for j in range(m):
                    for c in range(4):
                        q = gr[(GR_Q + c) * L + j]
                        if last or _flush(q, k):
                            gr[(GR_L + c) * L + j] += math.log(q)
                            gr[(GR_Q + c) * L + j] = 1.0
        for j in range(m):
            for c in range(4):
                ll = -0.5 * (n * _LOG2PI + (gr[(GR_L + c) * L + j] + gr[(GR_S + c) * L + j]))
                if ll > bll[j]:
                    bll[j] = ll
                    best[j] = 4 * ga + c


@numba.njit(inline="always")
def _load_lane(r, i, lo, n, j, work, x, blo, bhi, par):
    """Instrument ``i``'s scaled returns, variance bounds and constants into lane ``j`` (the
    bounds as :func:`kernels.garch._pass` computes them at each step)."""
    rbar = work[i, G.W_C + G.C_RBAR]
    s = work[i, G.W_C + G.C_S]
    bc = work[i, G.W_C + G.C_BC]
    vfloor = work[i, G.W_C + G.C_VFLOOR]
    ucap_lo = work[i, G.W_C + G.C_UCAP_LO]
    ucap_hi = work[i, G.W_C + G.C_UCAP_HI]
    vb = bc
    x_prev0 = 0.0
    for k in range(n):
        xk = (r[i, lo + k] - rbar) * s
        x[k * L + j] = xk
        if k > 0:
            vb = 0.06 * (x_prev0 * x_prev0) + 0.94 * vb
        lower, upper = _var_bounds(vb, vfloor, ucap_lo, ucap_hi)
        blo[k * L + j] = lower
        bhi[k * L + j] = upper
        x_prev0 = xk
    par[P_BC * L + j] = bc
    par[P_VFLOOR * L + j] = vfloor
    par[P_UCAP_LO * L + j] = ucap_lo
    par[P_UCAP_HI * L + j] = ucap_hi


@numba.njit(inline="always")
def _copy_lane(src, dst, n, x, blo, bhi, par):
    """Lane ``src``'s returns, bounds and constants into lane ``dst``."""
    for k in range(n):
        x[k * L + dst] = x[k * L + src]
        blo[k * L + dst] = blo[k * L + src]
        bhi[k * L + dst] = bhi[k * L + src]
    for v in range(N_PAR):
        par[v * L + dst] = par[v * L + src]


@numba.njit(cache=True)
def _fit_block(r, members, lo, n, dist, work, out, xb, par, st, gr, res, inst, best):
    """Fit the instruments ``members`` (at most :data:`LANES`, series of length ``n``, status
    ok) side by side; their output rows as :func:`kernels.garch._fit_one` writes them. The
    rest are scratch arrays (:func:`_fit_blocks`; ``xb``: the lanes' returns and variance
    bounds)."""
    x = xb[0]
    blo = xb[1]
    bhi = xb[2]
    m = 0
    for i in members:
        for c in range(G.N_OUT):
            out[i, c] = math.nan
        out[i, G.O_STATUS] = G.OK
        if not _setup(r, i, lo[i], n, work):
            out[i, G.O_STATUS] = G.CONSTANT
            continue
        _load_lane(r, i, lo[i], n, m, work, x, blo, bhi, par)
        inst[m] = i
        m += 1
    if m == 0:
        return
    for j in range(m, L):                       # idle lanes: a copy of lane 0
        _copy_lane(0, j, n, x, blo, bhi, par)
    _lanes_grid(x, blo, bhi, m, n, par, gr, best)
    K = 4
    for j in range(m):
        K = _start(work, inst[j], best[j], dist)
    while m > 0:
        if m <= SCALAR_BELOW:
            # a few fits left (a slow one holding its block): one at a time, from where they
            # are, costs less than a pass over all the lanes
            for j in range(m):
                G._run(r, inst[j], lo[inst[j]], n, dist, K, work)
                _finish(work, inst[j], n, dist, out)
            return
        want = 0
        for j in range(m):
            w = int(work[inst[j], G.W_S + G.S_WANT])
            want = w if w > want else want
        for j in range(L):
            i = inst[j] if j < m else inst[0]
            for c in range(5):
                par[c * L + j] = work[i, G.W_Q + c]
        d = dist if want != 3 else 0
        _lanes_pass(x, blo, bhi, m, n, want, d, par, st, res)
        _lanes_store(m, n, want, d, par, st, inst, work)
        j = 0
        while j < m:
            i = inst[j]
            if _advance(work, i, K, res[j], want == 1):
                _finish(work, i, n, dist, out)
                m -= 1
                if j < m:                       # the last live lane takes its place
                    _copy_lane(m, j, n, x, blo, bhi, par)
                    inst[j] = inst[m]
                    res[j] = res[m]
                    continue
            j += 1


@numba.njit(cache=True, parallel=True)
def _fit_blocks(r, order, starts, lo, n, dist, work, out, x, par, st, gr, res, inst, best):
    """The blocks in ``x.shape[0]`` runs spread over the threads; run ``c`` uses row ``c`` of
    each scratch array (made once by the caller: allocating a block's returns in the loop
    costs an ``mmap`` and ``munmap`` each time, and numba hoists such allocations out of the
    loop, where the threads would share them)."""
    nb = starts.size - 1
    chunks = x.shape[0]
    for c in numba.prange(chunks):
        for b in range(c * nb // chunks, (c + 1) * nb // chunks):
            members = order[starts[b]:starts[b + 1]]
            _fit_block(r, members, lo, n[members[0]], dist, work, out, x[c], par[c], st[c],
                       gr[c], res[c], inst[c], best[c])


def blocks(n: np.ndarray, status: np.ndarray):
    """The instruments with status ok, ordered by series length, and the starts of blocks of
    at most :data:`LANES` with one length each: ``(order, starts)``."""
    ok = np.flatnonzero(status == G.OK)
    order = ok[np.argsort(n[ok], kind="stable")]
    if order.size == 0:
        return order.astype(np.int64), np.zeros(1, np.int64)
    lengths = n[order]
    run = np.flatnonzero(np.diff(lengths)) + 1
    run_starts = np.concatenate(([0], run))
    run_ends = np.concatenate((run, [order.size]))
    starts = [np.arange(s, e, LANES) for s, e in zip(run_starts, run_ends)]
    return order.astype(np.int64), np.concatenate(starts + [[order.size]]).astype(np.int64)


def fit_lanes(r, lo, n, status, dist: int, work, out) -> None:
    """:func:`kernels.garch.garch11`'s fits on the CPU: instruments whose status is not ok get
    their row from :func:`kernels.garch._fit_one` (NaN and the status), the others are fitted
    in blocks of :data:`LANES`, the blocks spread over the cores."""
    bad = np.flatnonzero(status != G.OK)
    if bad.size:
        G._fit_rows(r, bad.astype(np.int64), lo, n, status, dist, work, out)
    order, starts = blocks(n, status)
    if order.size:
        c = min(starts.size - 1, 8 * numba.get_num_threads())
        x = np.empty((c, 3, int(n[order].max()) * L))
        _fit_blocks(r, order, starts, lo, n, dist, work, out, x, np.zeros((c, N_PAR * L)),
                    np.zeros((c, N_ST * L)), np.zeros((c, N_GR * L)), np.zeros((c, L)),
                    np.zeros((c, L), np.int64), np.zeros((c, L), np.int64))
