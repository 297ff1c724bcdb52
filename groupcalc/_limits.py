"""One-sided limits and analyticity at a point, for the break points of the normal form.

Continuity and analyticity are judged from limits, not from the syntactic form of the
pieces: ``x*sin(log(x))`` evaluates to ``nan`` at 0 by substitution, but tends to 0; and
``sin(x)/x`` is analytic at 0 once its value there is the limit 1.

* :func:`side_limit` is the limit of an expression at ``t`` from one side (``None`` when
  there is no finite limit, e.g. ``cos(log(x))`` at 0, which oscillates);
* :func:`analytic_at` decides, by a sufficient criterion that is exact, whether an
  expression that cannot be evaluated at ``t`` (0/0) extends analytically across ``t``:
  write it as N/D with N and D analytic at t (their derivatives evaluate to finite numbers);
  if D has a zero of finite order k at t and N vanishes there to order at least k, then
  N/D = (N/(x-t)^k) / (D/(x-t)^k) is a quotient of analytic functions with a non-zero
  denominator.
"""

from __future__ import annotations

import sympy

from activations import x

from ._budget import charge
from ._pieces import Oracle, Undecided

#: Highest vanishing order looked for in :func:`analytic_at`.
MAX_ORDER = 6


def _finite(v) -> bool:
    return (v is not None and not v.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo, sympy.AccumBounds)
            and x not in v.free_symbols)


def plain_value(e, t):
    """``e`` at ``x = t`` by substitution, or None when that gives no finite number."""
    try:
        v = e.subs(x, t)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return v if _finite(v) else None


def side_limit(e, t, direction: str):
    """lim e(x) as x -> t from ``direction`` ('+' or '-'); None when there is no finite limit.

    A finite value by substitution is the limit (the pieces are built from functions that
    are continuous wherever they evaluate to a finite real number). Otherwise sympy's
    ``limit`` (Gruntz) decides; an ``AccumBounds`` or infinite answer means no finite limit.
    Raises :class:`Undecided` when sympy cannot decide.
    """
    v = plain_value(e, t)
    if v is not None:
        return v
    charge(20)
    try:
        lim = sympy.limit(e, x, t, direction)
    except (NotImplementedError, ValueError, TypeError, RecursionError) as err:
        raise Undecided(f"cannot find the limit of {e} at x = {t}{direction}: {type(err).__name__}") from None
    if isinstance(lim, sympy.Limit):
        raise Undecided(f"cannot find the limit of {e} at x = {t}{direction}")
    if lim.has(sympy.AccumBounds, sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return None
    return lim


def analytic_at(e, t, oracle: Oracle):
    """The value at ``t`` of the analytic extension of ``e`` across ``t``, or None.

    Exact sufficient criterion (module docstring): N/D with D of finite order k at t and N of
    order >= k; returns N^(k)(t) / D^(k)(t). Returns ``plain_value`` when ``e`` evaluates
    finitely at t (then e is analytic there, as for every piece), and None when the
    criterion does not apply (``x*log(x**2)``, ``x*sin(1/x)``, ``exp(-1/x**2)`` at 0).
    """
    v = plain_value(e, t)
    if v is not None:
        return v
    num, den = sympy.fraction(sympy.together(e))
    dn, dd = num, den
    for k in range(MAX_ORDER + 1):
        charge()
        vn, vd = plain_value(dn, t), plain_value(dd, t)
        if vn is None or vd is None:
            return None
        if not oracle.is_zero(vd):  # (at k = 0: together() already cancelled the common factor)
            return sympy.simplify(vn / vd)
        if not oracle.is_zero(vn):
            return None  # D vanishes to a higher order than N: a pole
        dn, dd = sympy.diff(dn, x), sympy.diff(dd, x)
    return None


def taylor_coefficients(e, order: int, oracle: Oracle):
    """Taylor coefficients c_0..c_order at 0 of ``e``, or None when ``e`` is not analytic at 0.

    By derivatives when ``e`` evaluates at 0; at a removable point (:func:`analytic_at`) by
    sympy's series of the analytic extension.
    """
    if plain_value(e, 0) is None:
        if analytic_at(e, sympy.Integer(0), oracle) is None:
            return None
        charge(20)
        ser = sympy.series(e, x, 0, order + 1).removeO()
        poly = sympy.Poly(ser, x) if ser.is_polynomial(x) else None
        if poly is None:
            return None
        return [poly.coeff_monomial(x**k) for k in range(order + 1)]
    coeffs, dk = [], e
    for k in range(order + 1):
        if k:
            dk = sympy.diff(dk, x)
        ck = plain_value(dk, 0)
        if ck is None:  # a derivative blows up at 0: not analytic there
            return None
        coeffs.append(ck / sympy.factorial(k))
    return coeffs
