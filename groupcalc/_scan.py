"""The last resort for S ∩ (0, oo): a numeric scan, trusted only through exact identities.

Used when sigma has no analytic side at 0, is not homogeneous and has no log-periodic form
(:mod:`._logperiodic`). The scan looks for a > 1 with sigma(a x) / sigma(x) constant at sample
points; a candidate counts only when an exact number for it (:func:`_exact_candidates`) passes
the symbolic identity sigma(g x) = b sigma(x). The minimality of such a generator is numeric
(the case is then ``verified-numerically``); a numeric candidate that no exact number explains
leaves the positive part open (``unknown``), never a guessed constant.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from activations import lambdify_numpy, x

from ._pieces import Oracle, Undecided
from ._result import Scalings, a


def _fmt(e):
    return sympy.sstr(e)


#: Range of log(a) covered by the numeric scan of the last resort (a up to e^40 ~ 2.4e17).
SCAN_LOG_MAX = 40.0
#: Grid points of the scan.
SCAN_POINTS = 40000


def _exact_candidates(value: float):
    """Exact numbers close to ``value`` > 1 that a generator is likely to be: e^(q pi),
    2^q, e^q and q, sqrt(q) for small rationals q, and sympy's guess. Only the exact identity
    check decides; these are guesses."""
    from fractions import Fraction

    out = []
    lv = math.log(value)
    for base, log_base in ((sympy.exp(sympy.pi), math.pi), (sympy.Integer(2), math.log(2)), (sympy.E, 1.0),
                           (sympy.Integer(3), math.log(3)), (sympy.Integer(10), math.log(10))):
        q = Fraction(lv / log_base).limit_denominator(24)
        if q > 0 and abs(float(q) * log_base - lv) < 1e-6 * max(1.0, lv):  # the scan locates a to ~1e-8
            out.append(sympy.simplify(base ** sympy.Rational(q.numerator, q.denominator)))
    for power in (1, 2):
        q = Fraction(value**power).limit_denominator(1000)
        if abs(float(q) ** (1 / power) - value) < 1e-6 * value:
            out.append(sympy.sqrt(sympy.Rational(q.numerator, q.denominator)) if power == 2 else sympy.Rational(q.numerator, q.denominator))
    out.append(sympy.nsimplify(value, [sympy.E, sympy.pi], tolerance=1e-7))
    return [g for g in dict.fromkeys(out) if g.is_number and g > 1]


def numeric_positive(expr, oracle: Oracle, out):
    """Last resort: scan log(a) in (0, SCAN_LOG_MAX] for a with sigma(a x) / sigma(x) constant;
    a candidate counts only when an exact number is found for it and the identity
    sigma(g x) = b sigma(x) is checked for that number."""
    from scipy.optimize import minimize_scalar  # (scipy is slow to import: only when needed)

    from ._engine import _identity_holds  # (the engine imports this module)

    f = lambdify_numpy(oracle.at_reference(expr))
    xs = np.array([0.37, 1.13, 2.71, -0.83, 3.9, 0.061, -2.2])
    with np.errstate(all="ignore"):
        s = f(xs)
        ok = np.abs(s) > 1e-9
        xs, s = xs[ok], s[ok]

        def spread(log_a):  # relative spread of sigma(a x) / sigma(x) over the sample points
            r = f(np.exp(log_a) * xs) / s
            return float((np.max(r) - np.min(r)) / (1 + np.max(np.abs(r))))

        logs = np.linspace(np.log(1.0005), SCAN_LOG_MAX, SCAN_POINTS)
        r = f(np.exp(logs)[:, None] * xs[None, :]) / s[None, :]
        vals = (np.max(r, axis=1) - np.min(r, axis=1)) / (1 + np.max(np.abs(r), axis=1))
        vals = np.where(np.isfinite(vals), vals, np.inf)
        inner = vals[1:-1]
        minima = 1 + np.nonzero((inner <= vals[:-2]) & (inner <= vals[2:]) & (inner < 1e-2))[0]
        cand = []
        for i in minima[:50]:
            res = minimize_scalar(spread, bounds=(logs[i - 1], logs[i + 1]), method="bounded", options={"xatol": 1e-13})
            if res.fun < 1e-6:  # the symbolic check below decides
                cand.append(float(np.exp(res.x)))
    unproved = []
    for g_num in cand:
        found = False
        for g in _exact_candidates(g_num):
            try:
                x0 = sympy.Rational(113, 100)
                ratio = oracle.value(expr.subs(x, g * x0) / expr.subs(x, x0), 30)
                mu = sympy.Rational(str(round(math.log(abs(float(ratio))) / math.log(float(g)) * 24))) / 24
                b0 = sympy.sign(ratio) * g**mu
                if abs(float(b0) - float(ratio)) > 1e-12 * abs(float(ratio)):
                    b0 = sympy.nsimplify(ratio, [sympy.E, sympy.pi], tolerance=1e-20)
                if not _identity_holds(expr.subs(x, g * x) - b0 * expr, oracle):
                    continue
            except (Undecided, ValueError, TypeError, ZeroDivisionError):
                continue
            found = True
            out.numeric.append(f"generator {g} found by a numeric scan of log a in (0, {SCAN_LOG_MAX:g}]; minimality checked numerically")
            out.step(f"Positive scalings: no analytic side at 0 and no log-periodic form; a numeric scan of sigma(a x)/sigma(x) "
                     f"over log a in (0, {SCAN_LOG_MAX:g}] finds a = {g_num:.12g} first, identified as {_fmt(g)}, and "
                     f"sigma({_fmt(g)} x) = ({_fmt(b0)}) sigma(x) is checked as an identity. S ∩ (0, oo) = {{{_fmt(g)}^k}} "
                     "(minimality of the generator only numerically).")
            if b0 > 0:
                phi = a**mu if b0 == g**mu else b0 ** (sympy.log(a) / sympy.log(g))
            else:  # phi(g^k) = b0^k = (-1)^k |b0|^k, written real-valued on S
                phi = sympy.cos(sympy.pi * sympy.log(a) / sympy.log(g)) * (-b0) ** (sympy.log(a) / sympy.log(g))
                if -b0 == g**mu:
                    phi = sympy.cos(sympy.pi * sympy.log(a) / sympy.log(g)) * a**mu
            out.scalings = Scalings("discrete", g, None, phi)
            return
        if not found:
            unproved.append(g_num)
    out.scalings = Scalings("trivial", None, None, a)
    if unproved:
        out.open_steps.append(f"a numeric scan finds a ≈ {unproved[0]:.12g} with sigma(a x) ≈ b sigma(x), not identified exactly")
        out.step(f"Positive scalings: a numeric scan finds a ≈ {unproved[0]:.12g} with sigma(a x)/sigma(x) constant to 1e-6 at the "
                 "sample points, but no exact number for it passes the symbolic identity check. Established: S ∩ (0, oo) ⊇ {1}; "
                 "the positive part is unknown.")
        return
    out.numeric.append(f"no positive scaling other than 1 found by a numeric scan of log a in (0, {SCAN_LOG_MAX:g}]")
    out.step(f"Positive scalings: no analytic side at 0, no homogeneity and no log-periodic form; a numeric scan of log a in "
             f"(0, {SCAN_LOG_MAX:g}] finds no scaling other than 1. S ∩ (0, oo) = {{1}} (established numerically only).")
