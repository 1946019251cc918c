"""EWMA and GARCH(1,1) volatility for many instruments at once, on the CPU and the GPU.

:func:`garch11` fits, per instrument, the constant-mean GARCH(1,1) model of the ``arch``
package, ``arch_model(r, mean="Constant", vol="GARCH", p=1, q=1, dist=...)``, by maximum
likelihood with arch's constraints and variance initialisation:

* ``r_t = mu + e_t``, ``h_t = omega + alpha e_{t-1}^2 + beta h_{t-1}``; ``e_t / sqrt(h_t)``
  standard normal, or standardized Student-t with ``nu`` degrees of freedom;
* ``h_0 = omega + alpha b + beta b`` where the backcast ``b`` is the 0.94-weighted mean of the
  first ``min(75, n)`` squared residuals about the sample mean (weights ``0.94**k``, summing to
  one) -- arch's ``GARCH.backcast``;
* every ``h_t`` is kept within arch's ``variance_bounds`` (from a 0.94 EWMA of those residuals:
  at least ``max(ewma / 1e6, var / 1e8)``; above ``u = clip(ewma * 1e6, 1 + max e^2,
  1e7 (1 + max e^2))`` it becomes ``u + log(h / u)``);
* bounds ``omega`` in ``[1e-8 v, 10 v]`` (``v`` the residuals' mean square), ``alpha, beta`` in
  ``[0, 1]``, ``nu`` in ``[2.05, 500]``; and ``alpha + beta <= 1``;
* starting values as arch's: the sample mean, the best of arch's grid of (alpha, alpha + beta)
  by Gaussian likelihood with ``omega = (1 - alpha - beta) v``, and for ``nu`` the kurtosis
  estimate ``max((4k - 6) / (k - 3) if k > 3.75 else 12, 4)`` of the standardized residuals.

arch then runs SLSQP; this module runs a projected Newton method with the exact Hessian (the
likelihood's first and second derivatives carried through the variance recursion), bounds and
the ``alpha + beta`` constraint handled by an active set, and an Armijo line search, to a
Newton decrement of 1e-10. The fit works on the returns centred on their mean and scaled to
unit variance (exactly the same problem: parameters and likelihood are mapped back), so the
same tolerances serve returns in percent and in decimals.

The per-instrument fit (:func:`_fit_one`) is a sequence of likelihood passes (:func:`_pass`),
each asked for by one state machine (:func:`_advance`). CUDA runs it one thread per instrument
(:mod:`kernels.garch_gpu`); the CPU runs sixteen fits side by side in SIMD lanes, sharing
passes (:mod:`kernels.garch_lanes`), with the same arithmetic and the same steps, so its fits
equal :func:`_fit_one`'s bit for bit (:func:`_fit_cpu`, one instrument per ``prange``
iteration, is the reference the tests compare them with).

:func:`ewma` is RiskMetrics' exponentially weighted variance, ``h_t = (1 - lam) e_{t-1}^2 +
lam h_{t-1}`` with ``h_0`` the backcast above (arch's ``EWMAVariance``), and its one-step
forecast.

Inputs: a 2-D float array (instruments x time; NaN before an instrument's first and after its
last return), or a table of ``(instrument_id, return)`` rows in time order within each
instrument. A series that cannot be fitted gets a status (:data:`STATUS`) and NaN parameters;
the other instruments are fitted as usual.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pyarrow as pa

from kernels.features import _check_device, _use_gpu

DISTS = ("normal", "t")
MIN_OBS = 20                      # shortest series fitted
MAX_ITER = 200

OK, TOO_SHORT, ALL_NAN, CONSTANT, NON_FINITE = 0, 1, 2, 3, 4
#: Per-instrument status codes of :func:`garch11` and :func:`ewma`.
STATUS = {OK: "ok", TOO_SHORT: f"fewer than {MIN_OBS} returns", ALL_NAN: "no returns",
          CONSTANT: "constant returns (zero variance)",
          NON_FINITE: "a non-finite value or a gap (NaN) inside the series"}

# columns of the per-instrument output row (float64)
O_MU, O_OMEGA, O_ALPHA, O_BETA, O_NU, O_LL, O_CONV, O_ITER, O_FCST, O_STATUS = range(10)
N_OUT = 10
# the work row: parameters, gradient, Hessian, direction, trial point, free-direction basis,
# the forecast, the fit's constants (C_*) and its state (S_*, :func:`_advance`)
W_P, W_G, W_H, W_D, W_Q, W_Z, W_A, W_L, W_Y, W_B, W_FIX = 0, 5, 10, 35, 40, 45, 70, 95, 120, 125, 130
W_F = 135
W_C = 136
C_RBAR, C_S, C_BC, C_VFLOOR, C_UCAP_LO, C_UCAP_HI = range(6)
W_S = 142
S_STAGE, S_WANT, S_IT, S_T, S_DEC, S_LL, S_FULL, S_FINAL, S_LS, S_CONV = range(10)
N_WORK = 152
# the fit's stages: the pass it waits for (kurtosis, first, line-search trial, derivatives at
# an accepted point, forecast at the point kept)
ST_KURT, ST_INIT, ST_LS, ST_REFRESH, ST_FORECAST = range(5)
K_MAX = 5
LO = (-math.inf, 1e-8, 0.0, 0.0, 2.05)     # scaled units: the residuals' mean square is 1
HI = (math.inf, 10.0, 1.0, 1.0, 500.0)
_ALPHAS = (0.01, 0.05, 0.1, 0.2)           # arch's starting grid
_PERSIST = (0.5, 0.7, 0.9, 0.98)
_LOG2PI = math.log(2.0 * math.pi)


# -- small helpers ------------------------------------------------------------------------------

@numba.njit(inline="always")
def _mn(a, b):
    """``min(a, b)`` written out: numba-cuda compiles the builtin through an overload that needs
    a device context, so the device build could not be checked on a machine without a GPU."""
    return b if b < a else a


@numba.njit(inline="always")
def _mx(a, b):
    """``max(a, b)``, as :func:`_mn`."""
    return b if b > a else a


@numba.njit(inline="always")
def _flush(p, k):
    """Whether a running product of variances (or of Student-t terms, each at least 1) is
    turned into a log and restarted at step ``k``: every 64 steps, or sooner when it leaves
    [1e-100, 1e100] (a variance is at least 1e-8, so the next product cannot underflow). One
    log call for many returns: the logs are most of a pass's cost otherwise."""
    return (k & 63) == 63 or p > 1e100 or p < 1e-100


@numba.njit(inline="always")
def _var_bounds(vb, vfloor, ucap_lo, ucap_hi):
    """arch's variance bounds at a step from its EWMA ``vb``: ``(lower, upper)``."""
    lower = vb * 1e-6
    if lower < vfloor:
        lower = vfloor
    upper = vb * 1e6
    if upper < ucap_lo:
        upper = ucap_lo
    if upper > ucap_hi:
        upper = ucap_hi
    return lower, upper


@numba.njit(inline="always")
def _log_product(acc, p, now):
    """``(acc + log p, 1)`` when ``now``, else ``(acc, p)``: a running product's log."""
    if now:
        return acc + math.log(p), 1.0
    return acc, p


@numba.njit(inline="always")
def _normal_terms(u, ih):
    """The normal log-density's derivatives in ``h`` and ``u = e^2`` at ``1 / h = ih``:
    ``(L_h, L_hh, L_u, L_uu, L_hu)``."""
    return (-0.5 * ih + 0.5 * u * ih * ih, 0.5 * ih * ih - u * ih * ih * ih, -0.5 * ih, 0.0,
            0.5 * ih * ih)


@numba.njit(inline="always")
def _t_terms(q, zz, ih, a, inm2, inu1):
    """The standardized Student-t log-density's derivatives in ``h``, ``u`` and ``nu`` (``q =
    u / (h (nu - 2))``, ``zz = 1 + q``, ``a = (nu + 1) / 2``, ``inm2 = 1 / (nu - 2)``, ``inu1 = 1
    / (nu + 1)``): ``(L_h, L_hh, L_u, L_uu, L_hu, L_n, L_nn, L_nh, L_nu)``; ``L_n`` leaves out
    the ``-log(z) / 2`` of every return, added once per pass."""
    iz = 1.0 / zz
    Lh = -0.5 * ih + a * q * ih * iz
    Lhh = 0.5 * ih * ih - a * q * (zz + 1.0) * ih * ih * iz * iz
    Lu = -a * iz * ih * inm2
    Luu = a * ih * ih * iz * iz * (inm2 * inm2)
    Lhu = a * ih * ih * iz * iz * inm2
    Ln = a * q * inm2 * iz
    Lnn = 0.5 * q * inm2 * iz + a * q * inm2 * iz * (inu1 - 2.0 * inm2 + q * inm2 * iz)
    Lnh = 0.5 * q * ih * iz - a * q * inm2 * ih * iz * iz
    Lnu = -0.5 * ih * inm2 * iz + a * inm2 * ih * inm2 * iz * iz
    return Lh, Lhh, Lu, Luu, Lhu, Ln, Lnn, Lnh, Lnu


# -- special functions --------------------------------------------------------------------------

@numba.njit(cache=True)
def _psi(x):
    """Digamma, x > 0: recurrence up to 10, then the asymptotic series (error < 1e-13)."""
    acc = 0.0
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    s = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f * (1.0 / 132)))))
    return acc + math.log(x) - 0.5 / x - s


@numba.njit(cache=True)
def _psi1(x):
    """Trigamma, x > 0: recurrence up to 10, then the asymptotic series (error < 1e-12)."""
    acc = 0.0
    while x < 10.0:
        acc += 1.0 / (x * x)
        x += 1.0
    f = 1.0 / (x * x)
    s = 1.0 / x + 0.5 * f + (1.0 / x) * f * (
        1.0 / 6 - f * (1.0 / 30 - f * (1.0 / 42 - f * (1.0 / 30 - f * (5.0 / 66)))))
    return acc + s


# -- the likelihood and its derivatives ---------------------------------------------------------

@numba.njit(cache=True)
def _pass(r, i, lo, n, rbar, s, bc, vfloor, ucap_lo, ucap_hi, mu, om, al, be, nu, dist, want,
          work):
    """Log-likelihood (scaled units) of instrument ``i``'s returns ``r[i, lo:lo+n]`` at
    (mu, omega, alpha, beta, nu); ``x_t = (r_t - rbar) s`` is the centred, scaled series.

    Every pass writes the variance forecast for time ``n`` to ``work[i, W_F]``. ``want`` 1: also
    the gradient and Hessian in ``(mu, omega, alpha, beta[, nu])`` into the work row (``W_G``,
    ``W_H``); 3: the kurtosis of the standardized residuals into ``work[i, W_D]``."""
    t_dist = dist == 1
    if t_dist:
        nm2 = nu - 2.0
        a = 0.5 * (nu + 1.0)
        c = math.lgamma(a) - math.lgamma(0.5 * nu) - 0.5 * math.log(math.pi * nm2)
        inm2 = 1.0 / nm2
        inu1 = 1.0 / (nu + 1.0)
    else:
        nm2 = 1.0
        a = 0.0
        c = -0.5 * _LOG2PI
        inm2 = inu1 = 1.0
    # h and its derivatives in (mu, omega, alpha, beta): h_i, h_ij
    # the recursion starts from the backcast, h_{-1} = u_{-1} = b (so h_0 = omega + alpha b +
    # beta b, arch's order), which does not move with the parameters (nor with mu: the
    # derivatives of u_{-1}, ue and uee, are 0; afterwards -2 e_{t-1} and 2)
    h = bc
    u_prev = bc
    ue = 0.0
    uee = 0.0
    h0 = h1 = h2 = h3 = 0.0
    h00 = h02 = h03 = h13 = h23 = h33 = 0.0
    g0 = g1 = g2 = g3 = g4 = 0.0
    H00 = H01 = H02 = H03 = H04 = H11 = H12 = H13 = H14 = 0.0
    H22 = H23 = H24 = H33 = H34 = H44 = 0.0
    vb = bc                                   # arch's EWMA variance bound
    z1 = z2 = z3 = z4 = 0.0
    e = 0.0
    x_prev0 = 0.0
    ph = pz = 1.0
    slh = slz = su = 0.0
    for k in range(n):
        x = (r[i, lo + k] - rbar) * s
        if want == 1:
            # second derivatives first (they use the previous first derivatives); those in
            # (omega, omega), (omega, alpha), (alpha, alpha), (mu, omega) stay zero
            h00 = be * h00 + al * uee
            h02 = be * h02 + ue
            h03 = be * h03 + h0
            h13 = be * h13 + h1
            h23 = be * h23 + h2
            h33 = be * h33 + 2.0 * h3
            h0 = al * ue + be * h0
            h1 = 1.0 + be * h1
            h2 = u_prev + be * h2
            h3 = h + be * h3
        h = om + al * u_prev + be * h
        if k > 0:
            vb = 0.06 * (x_prev0 * x_prev0) + 0.94 * vb
        lower, upper = _var_bounds(vb, vfloor, ucap_lo, ucap_hi)
        if h < lower:
            h = lower
            h0 = h1 = h2 = h3 = 0.0
            h00 = h02 = h03 = h13 = h23 = h33 = 0.0
        elif h > upper:
            f = 1.0 / h
            h = upper + math.log(h / upper)
            h0 *= f
            h1 *= f
            h2 *= f
            h3 *= f
        e = x - mu
        u = e * e
        # the logs of h and z summed as logs of products (:func:`_flush`)
        ph *= h
        if t_dist:
            q = u / (h * nm2)
            zz = 1.0 + q
            pz *= zz
        else:
            su += u / h
        if _flush(ph, k):
            slh += math.log(ph)
            ph = 1.0
        if t_dist and _flush(pz, k):
            slz += math.log(pz)
            pz = 1.0
        if want == 1:
            ih = 1.0 / h
            if t_dist:
                Lh, Lhh, Lu, Luu, Lhu, Ln, Lnn, Lnh, Lnu = _t_terms(q, zz, ih, a, inm2, inu1)
            else:
                Lh, Lhh, Lu, Luu, Lhu = _normal_terms(u, ih)
                Ln = Lnn = Lnh = Lnu = 0.0
            u0 = -2.0 * e                      # d u_t / d mu
            g0 += Lh * h0 + Lu * u0
            g1 += Lh * h1
            g2 += Lh * h2
            g3 += Lh * h3
            H00 += Lhh * h0 * h0 + Lh * h00 + 2.0 * Lhu * h0 * u0 + Luu * u0 * u0 + 2.0 * Lu
            H01 += Lhh * h0 * h1 + Lhu * h1 * u0
            H02 += Lhh * h0 * h2 + Lh * h02 + Lhu * h2 * u0
            H03 += Lhh * h0 * h3 + Lh * h03 + Lhu * h3 * u0
            H11 += Lhh * h1 * h1
            H12 += Lhh * h1 * h2
            H13 += Lhh * h1 * h3 + Lh * h13
            H22 += Lhh * h2 * h2
            H23 += Lhh * h2 * h3 + Lh * h23
            H33 += Lhh * h3 * h3 + Lh * h33
            if t_dist:
                g4 += Ln
                H44 += Lnn
                H04 += Lnh * h0 + Lnu * u0
                H14 += Lnh * h1
                H24 += Lnh * h2
                H34 += Lnh * h3
        elif want == 3:
            zs = e / math.sqrt(h)
            z1 += zs
            z2 += zs * zs
            z3 += zs * zs * zs
            z4 += zs * zs * zs * zs
        u_prev = u
        ue = -2.0 * e
        uee = 2.0
        x_prev0 = x
    slh += math.log(ph)
    if t_dist:
        slz += math.log(pz)
        ll = n * c - 0.5 * slh - a * slz
    else:
        ll = n * c - 0.5 * (slh + su)
    if want == 1:
        if t_dist:
            g4 += -0.5 * slz
            g4 += n * (0.5 * _psi(a) - 0.5 * _psi(0.5 * nu) - 0.5 / nm2)
            H44 += n * (0.25 * _psi1(a) - 0.25 * _psi1(0.5 * nu) + 0.5 / (nm2 * nm2))
        row = (g0, g1, g2, g3, g4)
        for j in range(5):
            work[i, W_G + j] = row[j]
        hs = (H00, H01, H02, H03, H04, H01, H11, H12, H13, H14, H02, H12, H22, H23, H24,
              H03, H13, H23, H33, H34, H04, H14, H24, H34, H44)
        for j in range(25):
            work[i, W_H + j] = hs[j]
    elif want == 3:
        m1 = z1 / n
        m2 = z2 / n - m1 * m1
        m4 = z4 / n - 4.0 * m1 * z3 / n + 6.0 * m1 * m1 * z2 / n - 3.0 * m1 ** 4
        work[i, W_D] = m4 / (m2 * m2) if m2 > 0 else 3.0
    work[i, W_F] = om + al * u_prev + be * h
    return ll


# -- one instrument's fit -----------------------------------------------------------------------

@numba.njit(cache=True)
def _solve(work, i, m, lam):
    """Solve ``(A + lam I) y = b`` (``A`` at ``W_A``, ``m x m``, symmetric; ``b`` at ``W_Y``)
    by Cholesky, in place (``y`` into ``W_Y``). False when not positive definite."""
    for r_ in range(m):
        for c_ in range(r_ + 1):
            v = work[i, W_A + r_ * K_MAX + c_] + (lam if r_ == c_ else 0.0)
            for k in range(c_):
                v -= work[i, W_L + r_ * K_MAX + k] * work[i, W_L + c_ * K_MAX + k]
            if r_ == c_:
                if not v > 0.0:
                    return False
                work[i, W_L + r_ * K_MAX + r_] = math.sqrt(v)
            else:
                work[i, W_L + r_ * K_MAX + c_] = v / work[i, W_L + c_ * K_MAX + c_]
    for r_ in range(m):                       # L z = b
        v = work[i, W_Y + r_]
        for k in range(r_):
            v -= work[i, W_L + r_ * K_MAX + k] * work[i, W_Y + k]
        work[i, W_Y + r_] = v / work[i, W_L + r_ * K_MAX + r_]
    for r_ in range(m - 1, -1, -1):           # L' y = z
        v = work[i, W_Y + r_]
        for k in range(r_ + 1, m):
            v -= work[i, W_L + k * K_MAX + r_] * work[i, W_Y + k]
        work[i, W_Y + r_] = v / work[i, W_L + r_ * K_MAX + r_]
    return True


@numba.njit(cache=True)
def _direction(work, i, K, lin_tol):
    """The projected Newton direction at the parameters ``W_P`` (gradient ``W_G``, Hessian
    ``W_H``) into ``W_D``; returns the Newton decrement ``g . d`` (0 when no free direction).

    A parameter at a bound whose gradient or direction points out of the box is held; at
    ``alpha + beta = 1`` a direction that would raise the sum moves along the constraint
    (``d_alpha = -d_beta``) instead. The reduced Newton system gets ``lam I`` added until it is
    positive definite (far from the optimum the likelihood need not be concave)."""
    for j in range(K_MAX):
        work[i, W_FIX + j] = 0.0
    for j in range(K):
        p = work[i, W_P + j]
        g = work[i, W_G + j]
        if (p <= LO[j] and g < 0.0) or (p >= HI[j] and g > 0.0):
            work[i, W_FIX + j] = 1.0
    at_lin = work[i, W_P + 2] + work[i, W_P + 3] >= 1.0 - lin_tol
    lin = at_lin and work[i, W_G + 2] + work[i, W_G + 3] > 0.0
    dec = 0.0
    for _ in range(2 * K + 2):
        if lin and (work[i, W_FIX + 2] != 0.0 or work[i, W_FIX + 3] != 0.0):
            work[i, W_FIX + 2] = 1.0          # on the constraint with one of the two held:
            work[i, W_FIX + 3] = 1.0          # both held
        # the free-direction basis Z (K x m, column-major at W_Z)
        m = 0
        for j in range(K):
            if work[i, W_FIX + j] != 0.0 or (lin and j == 3):
                continue
            for r_ in range(K):
                work[i, W_Z + m * K_MAX + r_] = 0.0
            work[i, W_Z + m * K_MAX + j] = 1.0
            if lin and j == 2:
                work[i, W_Z + m * K_MAX + 3] = -1.0
            m += 1
        if m == 0:
            for j in range(K):
                work[i, W_D + j] = 0.0
            return 0.0
        # A = Z' (-H) Z, b = Z' g
        for a_ in range(m):
            bsum = 0.0
            for r_ in range(K):
                bsum += work[i, W_Z + a_ * K_MAX + r_] * work[i, W_G + r_]
            work[i, W_Y + a_] = bsum
            for b_ in range(m):
                v = 0.0
                for r_ in range(K):
                    za = work[i, W_Z + a_ * K_MAX + r_]
                    if za == 0.0:
                        continue
                    for c_ in range(K):
                        v -= za * work[i, W_H + r_ * K_MAX + c_] * work[i, W_Z + b_ * K_MAX + c_]
                work[i, W_A + a_ * K_MAX + b_] = v
        for a_ in range(m):
            work[i, W_B + a_] = work[i, W_Y + a_]
        scale = 0.0
        for a_ in range(m):
            scale = _mx(scale, abs(work[i, W_A + a_ * K_MAX + a_]))
        lam = 0.0
        ok = _solve(work, i, m, lam)
        lam = 1e-10 * (1.0 + scale)
        while not ok and lam < 1e30:
            for a_ in range(m):
                work[i, W_Y + a_] = work[i, W_B + a_]
            ok = _solve(work, i, m, lam)
            lam *= 10.0
        dec = 0.0
        for a_ in range(m):
            dec += work[i, W_B + a_] * work[i, W_Y + a_]
        for r_ in range(K):
            v = 0.0
            for a_ in range(m):
                v += work[i, W_Z + a_ * K_MAX + r_] * work[i, W_Y + a_]
            work[i, W_D + r_] = v
        # a parameter at a bound that the direction would push out: hold it and solve again
        again = False
        for j in range(K):
            if work[i, W_FIX + j] != 0.0:
                continue
            p = work[i, W_P + j]
            d = work[i, W_D + j]
            if (p <= LO[j] and d < 0.0) or (p >= HI[j] and d > 0.0):
                work[i, W_FIX + j] = 1.0
                again = True
        if not lin and at_lin and work[i, W_D + 2] + work[i, W_D + 3] > 0.0:
            lin = True
            again = True
        if not again:
            break
    return dec


@numba.njit(inline="always")
def _backcast(r, i, lo, n, rbar, s):
    """arch's backcast: the 0.94-weighted mean (weights ``0.94**k``, summing to one) of the
    first ``min(75, n)`` squares of ``(r - rbar) * s``."""
    wsum = 0.0
    bc = 0.0
    wk = 1.0
    for k in range(_mn(75, n)):
        e = (r[i, lo + k] - rbar) * s
        bc += wk * e * e
        wsum += wk
        wk *= 0.94
    return bc / wsum


@numba.njit(inline="always")
def _bound(h, lower, upper):
    """arch's ``bounds_check``: ``h`` kept within the variance bounds."""
    if h < lower:
        return lower
    if h > upper:
        return upper + math.log(h / upper)
    return h


@numba.njit(cache=True)
def _grid(r, i, lo, n, rbar, s, bc, vfloor, ucap_lo, ucap_hi):
    """arch's starting grid: the index (alpha-major) of the best of the 16 (alpha, alpha +
    beta) pairs by Gaussian likelihood at the sample mean, ``omega = 1 - (alpha + beta)``.

    One pass per alpha, its four persistences side by side (they share the returns and the
    variance bounds, and one division gives their four ``1 / h``)."""
    best = 0
    bll = -math.inf
    p0, p1, p2, p3 = _PERSIST
    for ga in range(4):
        al = _ALPHAS[ga]
        h0 = h1 = h2 = h3 = bc                   # h_{-1} = u_{-1} = b, as in _pass
        q0 = q1 = q2 = q3 = 1.0                  # products of h (:func:`_flush`)
        s0 = s1 = s2 = s3 = 0.0                  # sums of u / h
        l0 = l1 = l2 = l3 = 0.0                  # sums of log h
        vb = bc
        u_prev = bc
        for k in range(n):
            x = (r[i, lo + k] - rbar) * s
            if k > 0:
                vb = 0.06 * u_prev + 0.94 * vb
            h0 = (1.0 - p0) + al * u_prev + (p0 - al) * h0
            h1 = (1.0 - p1) + al * u_prev + (p1 - al) * h1
            h2 = (1.0 - p2) + al * u_prev + (p2 - al) * h2
            h3 = (1.0 - p3) + al * u_prev + (p3 - al) * h3
            lower, upper = _var_bounds(vb, vfloor, ucap_lo, ucap_hi)
            h0 = _bound(h0, lower, upper)
            h1 = _bound(h1, lower, upper)
            h2 = _bound(h2, lower, upper)
            h3 = _bound(h3, lower, upper)
            u = x * x
            m01 = h0 * h1                        # h within [1e-8, 1e11]: no overflow
            m23 = h2 * h3
            inv = u / (m01 * m23)
            s0 += h1 * m23 * inv
            s1 += h0 * m23 * inv
            s2 += h3 * m01 * inv
            s3 += h2 * m01 * inv
            q0 *= h0
            q1 *= h1
            q2 *= h2
            q3 *= h3
            u_prev = u
            last = k == n - 1
            l0, q0 = _log_product(l0, q0, last or _flush(q0, k))
            l1, q1 = _log_product(l1, q1, last or _flush(q1, k))
            l2, q2 = _log_product(l2, q2, last or _flush(q2, k))
            l3, q3 = _log_product(l3, q3, last or _flush(q3, k))
        lls = (l0 + s0, l1 + s1, l2 + s2, l3 + s3)
        for j in range(4):
            ll = -0.5 * (n * _LOG2PI + lls[j])
            if ll > bll:
                bll = ll
                best = 4 * ga + j
    return best


@numba.njit(cache=True)
def _setup(r, i, lo, n, work):
    """The fit's constants into the work row (``W_C``): the sample mean, the scale (one over
    the residuals' root mean square), arch's backcast and variance-bound constants in scaled
    units. False for a constant series."""
    tot = 0.0
    for k in range(n):
        tot += r[i, lo + k]
    rbar = tot / n
    ss = 0.0
    emax = 0.0
    for k in range(n):
        e = r[i, lo + k] - rbar
        ss += e * e
        emax = _mx(emax, e * e)
    var = ss / n
    if not var > 0.0:
        return False
    s = 1.0 / math.sqrt(var)
    work[i, W_C + C_RBAR] = rbar
    work[i, W_C + C_S] = s
    work[i, W_C + C_BC] = _backcast(r, i, lo, n, rbar, s)
    work[i, W_C + C_VFLOOR] = 1e-8
    work[i, W_C + C_UCAP_LO] = (1.0 + emax) * s * s
    work[i, W_C + C_UCAP_HI] = 1e7 * (1.0 + emax) * s * s
    return True


@numba.njit(inline="always")
def _request(work, i, want):
    """Ask for a pass of kind ``want`` at the parameters ``W_P`` (copied to ``W_Q``)."""
    for j in range(K_MAX):
        work[i, W_Q + j] = work[i, W_P + j]
    work[i, W_S + S_WANT] = want


@numba.njit(cache=True)
def _start(work, i, best, dist):
    """Start from arch's grid point ``best`` (:func:`_grid`): ask for the first pass (for
    Student-t errors, first the kurtosis pass that gives nu's start). Returns the number of
    parameters."""
    a0 = _ALPHAS[best // 4]
    b0 = _PERSIST[best % 4] - a0
    o0 = 1.0 - _PERSIST[best % 4]
    work[i, W_P + 0] = 0.0
    work[i, W_P + 1] = o0
    work[i, W_P + 2] = a0
    work[i, W_P + 3] = b0
    work[i, W_P + 4] = 0.0
    work[i, W_S + S_IT] = 0.0
    work[i, W_S + S_CONV] = 0.0
    if dist == 1:
        _request(work, i, 3)
        work[i, W_S + S_STAGE] = ST_KURT
        return 5
    _request(work, i, 1)
    work[i, W_S + S_STAGE] = ST_INIT
    return 4


@numba.njit(cache=True)
def _trial(work, i, K):
    """The trial point ``W_P + t W_D`` (``t`` at ``S_T``) projected on the box and under
    ``alpha + beta = 1``, into ``W_Q``."""
    t = work[i, W_S + S_T]
    for j in range(K_MAX):
        p = work[i, W_P + j]
        d = work[i, W_D + j]
        q = p + t * d
        if j < K:
            q = _mn(_mx(q, LO[j]), HI[j])
            # a step as long as the one to a bound (the first trial's, :func:`_newton`) lands
            # on it exactly: a parameter left a rounding error inside its bound is not held
            # there, and the next directions would jam against it
            if d < 0.0 and LO[j] > -math.inf and t >= (p - LO[j]) / -d:
                q = LO[j]
            elif d > 0.0 and HI[j] < math.inf and t >= (HI[j] - p) / d:
                q = HI[j]
        work[i, W_Q + j] = q
    dl = work[i, W_D + 2] + work[i, W_D + 3]
    on_lin = dl > 0.0 and t >= _mx(0.0, 1.0 - work[i, W_P + 2] - work[i, W_P + 3]) / dl
    if on_lin or work[i, W_Q + 2] + work[i, W_Q + 3] > 1.0:
        work[i, W_Q + 3] = 1.0 - work[i, W_Q + 2]


@numba.njit(cache=True)
def _newton(work, i, K):
    """A Newton iteration at ``W_P`` (derivatives there in the work row): the direction and the
    first trial of its line search; True when the fit stops instead (converged: a Newton
    decrement under 1e-9; or ``MAX_ITER`` iterations)."""
    if work[i, W_S + S_IT] >= MAX_ITER:
        return True
    dec = _direction(work, i, K, 1e-12)
    if dec < 1e-9:
        work[i, W_S + S_CONV] = 1.0
        return True
    work[i, W_S + S_IT] += 1.0
    # the longest step inside the box and under alpha + beta = 1
    tmax = 1.0
    for j in range(K):
        d = work[i, W_D + j]
        p = work[i, W_P + j]
        if d < 0.0 and LO[j] > -math.inf:
            tmax = _mn(tmax, (p - LO[j]) / -d)
        elif d > 0.0 and HI[j] < math.inf:
            tmax = _mn(tmax, (HI[j] - p) / d)
    dl = work[i, W_D + 2] + work[i, W_D + 3]
    if dl > 0.0:
        tmax = _mn(tmax, _mx(0.0, 1.0 - work[i, W_P + 2] - work[i, W_P + 3]) / dl)
    # close to the optimum (Newton's decrement under 1e-6, so the step lands within about its
    # square): the step is taken with a value-only pass and the fit stops
    final = dec < 1e-6
    work[i, W_S + S_T] = tmax
    work[i, W_S + S_DEC] = dec
    work[i, W_S + S_FINAL] = 1.0 if final else 0.0
    work[i, W_S + S_FULL] = 0.0 if final else 1.0
    work[i, W_S + S_LS] = 0.0
    _trial(work, i, K)
    work[i, W_S + S_WANT] = 0.0 if final else 1.0
    work[i, W_S + S_STAGE] = ST_LS
    return False


@numba.njit(cache=True)
def _advance(work, i, K, lq, derivs):
    """Take the result of the pass asked for (log-likelihood ``lq`` at ``W_Q``; ``derivs``:
    its derivatives are in the work row) and ask for the next one (kind at ``S_WANT``, point
    at ``W_Q``); True when the fit is done.

    The fit, one pass at a time: the first pass at the grid start, then Newton iterations
    (:func:`_newton`), each with an Armijo line search halving the step (up to 60 trials; the
    first trial with derivatives unless it is the final step); after a trial accepted without
    derivatives, a pass for them at the new point. The CPU runs many fits side by side
    (:mod:`kernels.garch_lanes`) and the GPU one per thread, both through this function, so
    they take the same steps."""
    stage = work[i, W_S + S_STAGE]
    if stage == ST_KURT:
        kk = work[i, W_D]
        nu0 = (4.0 * kk - 6.0) / (kk - 3.0) if kk > 3.75 else 12.0
        nu0 = _mx(nu0, 4.0)
        work[i, W_P + 4] = _mn(nu0, HI[4])
        _request(work, i, 1)
        work[i, W_S + S_STAGE] = ST_INIT
        return False
    if stage == ST_INIT or stage == ST_REFRESH:
        work[i, W_S + S_LL] = lq
        return _newton(work, i, K)
    if stage == ST_LS:
        t = work[i, W_S + S_T]
        if lq >= work[i, W_S + S_LL] + 1e-4 * t * work[i, W_S + S_DEC]:
            for j in range(K_MAX):
                work[i, W_P + j] = work[i, W_Q + j]
            if work[i, W_S + S_FINAL] != 0.0:
                work[i, W_S + S_LL] = lq
                work[i, W_S + S_CONV] = 1.0
                return True
            if not derivs:
                _request(work, i, 1)
                work[i, W_S + S_STAGE] = ST_REFRESH
                return False
            work[i, W_S + S_LL] = lq
            return _newton(work, i, K)
        work[i, W_S + S_FULL] = 0.0
        work[i, W_S + S_T] = 0.5 * t
        work[i, W_S + S_LS] += 1.0
        if work[i, W_S + S_LS] >= 60.0:
            # no ascent along the direction: at the optimum up to rounding, or the search
            # failed; one more pass for the forecast at the point kept
            work[i, W_S + S_CONV] = work[i, W_S + S_FINAL]
            _request(work, i, 0)
            work[i, W_S + S_STAGE] = ST_FORECAST
            return False
        _trial(work, i, K)
        work[i, W_S + S_WANT] = 0.0
        return False
    return True                               # ST_FORECAST


@numba.njit(cache=True)
def _finish(work, i, n, dist, out):
    """Instrument ``i``'s output row from its work row, in the returns' units."""
    s = work[i, W_C + C_S]
    out[i, O_MU] = work[i, W_C + C_RBAR] + work[i, W_P + 0] / s
    out[i, O_OMEGA] = work[i, W_P + 1] / (s * s)
    out[i, O_ALPHA] = work[i, W_P + 2]
    out[i, O_BETA] = work[i, W_P + 3]
    out[i, O_NU] = work[i, W_P + 4] if dist == 1 else math.nan
    out[i, O_LL] = work[i, W_S + S_LL] + n * math.log(s)
    out[i, O_CONV] = work[i, W_S + S_CONV]
    out[i, O_ITER] = work[i, W_S + S_IT]
    out[i, O_FCST] = work[i, W_F] / (s * s)


@numba.njit(cache=True)
def _fit_one(r, i, lo, n, status, dist, work, out):
    """Fit instrument ``i`` (returns ``r[i, lo:lo+n]``) and write its row of ``out``: the
    constants, arch's grid start, then one likelihood pass after another as :func:`_advance`
    asks (one call site, so the device build inlines the pass once)."""
    for j in range(N_OUT):
        out[i, j] = math.nan
    out[i, O_STATUS] = status
    if status != OK:
        return
    if not _setup(r, i, lo, n, work):
        out[i, O_STATUS] = CONSTANT
        return
    c = W_C
    best = _grid(r, i, lo, n, work[i, c + C_RBAR], work[i, c + C_S], work[i, c + C_BC],
                 work[i, c + C_VFLOOR], work[i, c + C_UCAP_LO], work[i, c + C_UCAP_HI])
    K = _start(work, i, best, dist)
    _run(r, i, lo, n, dist, K, work)
    _finish(work, i, n, dist, out)


@numba.njit(cache=True)
def _run(r, i, lo, n, dist, K, work):
    """Instrument ``i``'s fit from its state in the work row to the end: the pass asked for,
    then :func:`_advance`, until it is done."""
    rbar = work[i, W_C + C_RBAR]
    s = work[i, W_C + C_S]
    bc = work[i, W_C + C_BC]
    vfloor = work[i, W_C + C_VFLOOR]
    ucap_lo = work[i, W_C + C_UCAP_LO]
    ucap_hi = work[i, W_C + C_UCAP_HI]
    done = False
    while not done:
        want = int(work[i, W_S + S_WANT])
        lq = _pass(r, i, lo, n, rbar, s, bc, vfloor, ucap_lo, ucap_hi, work[i, W_Q + 0],
                   work[i, W_Q + 1], work[i, W_Q + 2], work[i, W_Q + 3], work[i, W_Q + 4],
                   dist if want != 3 else 0, want, work)
        done = _advance(work, i, K, lq, want == 1)


@numba.njit(cache=True)
def _fit_rows(r, rows, lo, n, status, dist, work, out):
    for i in rows:
        _fit_one(r, i, lo[i], n[i], status[i], dist, work, out)


@numba.njit(cache=True, parallel=True)
def _fit_cpu(r, lo, n, status, dist, work, out):
    for i in numba.prange(r.shape[0]):
        _fit_one(r, i, lo[i], n[i], status[i], dist, work, out)


# -- EWMA ---------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _ewma_one(r, i, lo, n, status, lam, h_out, out):
    """RiskMetrics variance of instrument ``i``: ``h_out[i, lo + k]`` for each return, and the
    one-step forecast into ``out[i, 0]`` (``out[i, 1]``: status)."""
    out[i, 0] = math.nan
    out[i, 1] = status
    if status != OK:
        return
    h = _backcast(r, i, lo, n, 0.0, 1.0)
    e_prev = 0.0
    for k in range(n):
        if k > 0:
            h = (1.0 - lam) * e_prev * e_prev + lam * h
        if h_out.shape[0] > 0:
            h_out[i, lo + k] = h
        e_prev = r[i, lo + k]
    out[i, 0] = (1.0 - lam) * e_prev * e_prev + lam * h


@numba.njit(cache=True, parallel=True)
def _ewma_cpu(r, lo, n, status, lam, h_out, out):
    for i in numba.prange(r.shape[0]):
        _ewma_one(r, i, lo[i], n[i], status[i], lam, h_out, out)


# -- inputs and outputs -------------------------------------------------------------------------

def as_matrix(returns, column: str = "return") -> tuple[np.ndarray, np.ndarray]:
    """``(instrument_ids, r)``: a 2-D float64 array (instruments x time) as given (ids
    0..n-1), or a table of ``(instrument_id, <column>)`` rows in time order within each
    instrument, one row per instrument (by id), NaN after its last return."""
    if isinstance(returns, (pa.Table, pa.RecordBatch)):
        for c in ("instrument_id", column):
            if c not in returns.column_names:
                raise ValueError(f"The returns table has no `{c}` column (columns: "
                                 f"{', '.join(returns.column_names)}).")
        inst = np.asarray(returns.column("instrument_id").to_numpy(zero_copy_only=False))
        val = np.asarray(pa.compute.cast(returns.column(column), pa.float64()).to_numpy(
            zero_copy_only=False), np.float64)
        ids, counts = np.unique(inst, return_counts=True)
        order = np.argsort(inst, kind="stable")
        grp = np.repeat(np.arange(ids.size), counts)
        pos = np.arange(inst.size) - np.repeat(np.cumsum(counts) - counts, counts)
        r = np.full((ids.size, int(counts.max()) if ids.size else 0), np.nan)
        r[grp, pos] = val[order]
        return ids.astype(np.uint32), r
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim == 1:
        r = r[None, :]
    if r.ndim != 2:
        raise ValueError(f"The returns must be a 2-D array (instruments x time) or a table, "
                         f"was an array of shape {r.shape}.")
    return np.arange(r.shape[0], dtype=np.uint32), np.ascontiguousarray(r)


def series_extent(r: np.ndarray, min_obs: int = MIN_OBS):
    """Per row of ``r``: the first return, the number of returns and the :data:`STATUS` code
    (NaN allowed only before the first and after the last return)."""
    nan = np.isnan(r)
    has = ~nan
    any_ = has.any(axis=1)
    t = r.shape[1]
    first = np.where(any_, has.argmax(axis=1), 0)
    last = np.where(any_, t - 1 - has[:, ::-1].argmax(axis=1), -1)
    n = (last - first + 1).astype(np.int64)
    inside = has.sum(axis=1)
    status = np.full(r.shape[0], OK, np.int64)
    status[n < min_obs] = TOO_SHORT
    status[(inside != n) | (np.isinf(r).any(axis=1))] = NON_FINITE
    status[~any_] = ALL_NAN
    return first.astype(np.int64), np.maximum(n, 0), status


def garch11(returns, *, dist: str = "normal", device: str = "auto",
            column: str = "return") -> pa.Table:
    """GARCH(1,1) with a constant mean, fitted per instrument as ``arch`` does (module
    docstring). ``returns``: 2-D array (instruments x time, NaN padded) or a table of
    ``(instrument_id, return)``; ``dist``: "normal" or "t" (standardized Student-t); ``device``:
    "cpu", "gpu" or "auto" (the GPU when there is one and the array holds at least
    ``kernels.book.GPU_MIN_EVENTS`` cells; as :func:`kernels.features.compute`).

    One row per instrument: instrument_id, mu, omega, alpha, beta, nu (t only), loglik,
    converged, iterations, variance_forecast (the one-step forecast after the last return),
    status (:data:`STATUS`; NaN parameters unless 0)."""
    if dist not in DISTS:
        raise ValueError(f"The `dist` must be one of {', '.join(DISTS)}, was {dist!r}.")
    _check_device(device)
    ids, r = as_matrix(returns, column)
    lo, n, status = series_extent(r)
    out = np.empty((r.shape[0], N_OUT))
    d = DISTS.index(dist)
    if _use_gpu(device, r.size):
        from kernels.garch_gpu import fit_gpu
        out = fit_gpu(r, lo, n, status, d)
    elif r.shape[0]:
        from kernels.garch_lanes import fit_lanes
        fit_lanes(r, lo, n, status, d, np.zeros((r.shape[0], N_WORK)), out)
    return _garch_table(ids, out, dist)


def _garch_table(ids: np.ndarray, out: np.ndarray, dist: str) -> pa.Table:
    cols = {"instrument_id": pa.array(ids, pa.uint32())}
    names = ["mu", "omega", "alpha", "beta"] + (["nu"] if dist == "t" else [])
    for name in names:
        cols[name] = pa.array(out[:, {"mu": O_MU, "omega": O_OMEGA, "alpha": O_ALPHA,
                                      "beta": O_BETA, "nu": O_NU}[name]])
    cols["loglik"] = pa.array(out[:, O_LL])
    cols["converged"] = pa.array(out[:, O_CONV] == 1.0)
    cols["iterations"] = pa.array(np.nan_to_num(out[:, O_ITER]).astype(np.int32))
    cols["variance_forecast"] = pa.array(out[:, O_FCST])
    cols["status"] = pa.array(out[:, O_STATUS].astype(np.uint8))
    return pa.table(cols)


def ewma(returns, *, lam: float = 0.94, device: str = "auto", column: str = "return",
         variances: bool = False):
    """RiskMetrics EWMA variance per instrument (arch's ``EWMAVariance(lam)`` on the returns
    as given, no mean removed): a table of instrument_id, variance_forecast (one step after the
    last return), status; with ``variances=True`` also the 2-D array of ``h_t`` (NaN where
    there is no return)."""
    if not 0.0 < lam < 1.0:
        raise ValueError(f"The `lam` must be strictly between 0 and 1, was {lam!r}.")
    _check_device(device)
    ids, r = as_matrix(returns, column)
    lo, n, status = series_extent(r, min_obs=1)
    out = np.empty((r.shape[0], 2))
    h = np.full(r.shape, np.nan) if variances else np.zeros((0, 0))
    if _use_gpu(device, r.size):
        from kernels.garch_gpu import ewma_gpu
        out, h = ewma_gpu(r, lo, n, status, float(lam), variances)
    elif r.shape[0]:
        _ewma_cpu(r, lo, n, status, float(lam), h, out)
    t = pa.table({"instrument_id": pa.array(ids, pa.uint32()),
                  "variance_forecast": pa.array(out[:, 0]),
                  "status": pa.array(out[:, 1].astype(np.uint8))})
    return (t, h) if variances else t
